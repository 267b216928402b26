"""The stream writer's files read back with h5py, pyarrow and open_run: the layout of
the issue, counts and values, both formats alike, gaps."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the lz4 / zstd filters for reading)
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.read import open_run
from daq_storage.sim import SimulatedDaqCard
from daq_storage.streams import ChannelConfig, Gap, StreamWriter, Timebase

START = 1_700_000_000_123_456_789
CHANNELS = [ChannelConfig(0, "AI0", -10.0, 10.0), ChannelConfig(1, "AI1", -5.0, 5.0),
            ChannelConfig(3, "pd", 0.0, 2.0, "mW")]  # fmt: skip


def _blocks(n_blocks: int = 5, size: int = 3000) -> list[np.ndarray]:
    card = SimulatedDaqCard(3, start_ns=START, seed=3)
    return [card.read_block(size).samples for _ in range(n_blocks)]


def _volts(counts: np.ndarray, channels: list[ChannelConfig] = CHANNELS) -> np.ndarray:
    scale = np.array([c.scale_factor for c in channels])
    offset = np.array([c.add_offset for c in channels])
    return np.asarray(counts * scale + offset)


def test_builder_writes_the_issue_layout(tmp_path: Path):
    blocks = _blocks()
    path = tmp_path / "run.h5"
    writer = (StreamWriter.builder().output_path(path).channels(CHANNELS).sample_rate(100_000.0)
              .chunk_size(4096).compression("lz4").storage_format("hdf5").start_ns(START)
              .build())  # fmt: skip
    with writer:
        for i, block in enumerate(blocks):
            writer.write(block)
            if i == 2:
                writer.flush()
        assert writer.stats.samples == 15_000
    assert writer.stats.samples_flushed == 15_000
    counts = np.concatenate(blocks)
    with h5py.File(path, "r") as f:
        meta = f["metadata"].attrs
        assert (meta["sample_rate"], meta["start_ns"], meta["compression"]) == (1e5, START, "lz4")
        assert meta["start_time"] == "2023-11-14T22:13:20.123456+00:00"
        for channel in CHANNELS:
            attrs = f["channels"][channel.name].attrs
            assert (attrs["index"], attrs["min_value"], attrs["max_value"], attrs["unit"]) == (
                channel.index,
                channel.min_value,
                channel.max_value,
                channel.unit,
            )
            assert f["channels"][channel.name][0] == channel.index
        data = f["data"]
        assert set(data) == {"timestamps", "sample_index", "AI0", "AI1", "pd"}
        np.testing.assert_array_equal(data["sample_index"][()], np.arange(15_000))
        times = data["timestamps"][()]
        assert times[0] == START
        assert np.all(np.diff(times) == 10_000)
        for i, channel in enumerate(CHANNELS):
            dataset = data[channel.name]
            assert dataset.dtype == np.int16
            assert dataset.chunks == (4096,)
            plist = dataset.id.get_create_plist()
            filters = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
            assert 32004 in filters  # HDF5's registered id of the LZ4 filter (hdf5plugin)
            np.testing.assert_array_equal(dataset[()], counts[:, i])
            assert (dataset.attrs["scale_factor"], dataset.attrs["add_offset"],
                    dataset.attrs["units"]) == (channel.scale_factor, channel.add_offset,
                                                channel.unit)  # fmt: skip
    with open_run(path) as run:
        assert list(run.streams) == ["data"]
        info = run.streams["data"]
        assert info.rows == 15_000
        assert info.metadata["gaps"] == []
        assert [c["name"] for c in info.metadata["channels"]] == ["AI0", "AI1", "pd"]
        table = run.table("data")
    assert table.schema.field("AI0").type == pa.float64()
    np.testing.assert_array_equal(np.column_stack([table[c.name].to_numpy() for c in CHANNELS]),
                                  _volts(counts))  # fmt: skip


def test_counts_match_the_formula_at_the_range_ends(tmp_path: Path):
    """-32768 is min_value, 0 the middle, 32767 one step below max_value; float values
    become the nearest count, max_value itself the top code."""
    channel = ChannelConfig(0, "x", -0.1, 10.0)
    with StreamWriter(tmp_path / "r.h5", channels=[channel], sample_rate=10.0,
                      start_ns=0) as writer:  # fmt: skip
        writer.write(np.array([[-32768], [0], [32767]], np.int16))
        writer.write(np.array([[-0.1], [4.95], [10.0], [4.95 + 1.4 * channel.scale_factor]]))
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["data/x"][()].tolist() == [-32768, 0, 32767, -32768, 0, 32767, 1]
    with open_run(tmp_path / "r.h5") as run:
        values = run.table("data")["x"].to_numpy()
    assert values[0] == pytest.approx(-0.1)
    assert values[1] == pytest.approx(4.95)
    assert values[2] == pytest.approx(10.0 - channel.scale_factor)


def test_store_volts_converts_on_write(tmp_path: Path):
    blocks = _blocks(2, 1000)
    with StreamWriter(tmp_path / "v.h5", channels=CHANNELS, sample_rate=1000.0, store="volts",
                      compression=None, start_ns=START) as writer:  # fmt: skip
        writer.write(blocks[0])
        writer.write(_volts(blocks[1]))
    with h5py.File(tmp_path / "v.h5", "r") as f:
        assert f["data/AI1"].dtype == np.float64
        assert "scale_factor" not in f["data/AI1"].attrs
        stored = np.column_stack([f["data"][c.name][()] for c in CHANNELS])
    np.testing.assert_array_equal(stored, _volts(np.concatenate(blocks)))
    with open_run(tmp_path / "v.h5") as run:
        np.testing.assert_array_equal(run.table("data")["pd"].to_numpy(), stored[:, 2])


def test_both_formats_hold_identical_samples(tmp_path: Path):
    blocks = _blocks(4, 20_000)
    with StreamWriter(tmp_path / "data.h5", channels=CHANNELS, sample_rate=100_000.0,
                      compression="lz4", storage_format="both",
                      start_ns=START) as writer:  # fmt: skip
        for i, block in enumerate(blocks):
            writer.write(block, first_sample=i * 25_000)  # 5,000 missing before each next
            writer.flush()
        assert writer.files == (tmp_path / "data.h5", tmp_path / "data")
    gaps = [{"first": 20_000 + i * 25_000, "count": 5_000} for i in range(3)]
    with h5py.File(tmp_path / "data.h5", "r") as f:
        hdf5 = {name: f["data"][name][()] for name in f["data"]}
        assert json.loads(f["data"].attrs["gaps"]) == gaps
    table = pa.ipc.open_stream(tmp_path / "data" / "data.arrows").read_all()
    assert sorted(table.column_names) == sorted(hdf5)
    for name, values in hdf5.items():
        arrow = table[name].to_numpy()
        np.testing.assert_array_equal(arrow.view(np.int64) if name == "timestamps" else arrow,
                                      values)  # fmt: skip
    for where in ("data.h5", "data"):
        with open_run(tmp_path / where) as run:
            assert run.streams["data"].metadata["gaps"] == gaps
            index = run.table("data", ["sample_index"])["sample_index"].to_numpy()
            assert index[19_999:20_001].tolist() == [19_999, 25_000]


def test_gaps_are_recorded_never_papered_over(tmp_path: Path):
    timebase = Timebase(3.0, 7)
    with StreamWriter(tmp_path / "g.h5", channels=CHANNELS[:1], sample_rate=3.0,
                      start_ns=7) as writer:  # fmt: skip
        writer.write(np.zeros((4, 1), np.int16), first_sample=10)  # the file starts at 10
        writer.write(np.ones((2, 1), np.int16))
        writer.write(np.ones((3, 1), np.int16), first_sample=100)
        writer.write(np.ones((1, 1), np.int16), first_sample=103)  # continues: no gap
        writer.write(np.ones((1, 1), np.int16), first_sample=200)
        assert writer.gaps == [Gap(16, 84), Gap(104, 96)]
        assert (writer.stats.gaps, writer.stats.missing_samples) == (2, 180)
    with h5py.File(tmp_path / "g.h5", "r") as f:
        index = f["data/sample_index"][()].tolist()
        times = f["data/timestamps"][()].tolist()
    assert index == [10, 11, 12, 13, 14, 15, 100, 101, 102, 103, 200]
    assert times == [timebase.at(i) for i in index]


def test_a_file_with_no_sample_reads_as_an_empty_stream(tmp_path: Path):
    with StreamWriter(tmp_path / "e.h5", channels=CHANNELS, sample_rate=1.0):
        pass
    with h5py.File(tmp_path / "e.h5", "r") as f:
        assert set(f) == {"metadata", "channels"}
    with open_run(tmp_path / "e.h5") as run:
        assert "data" not in run.streams


def test_arrow_alone_writes_a_directory(tmp_path: Path):
    with StreamWriter(tmp_path / "live", channels=CHANNELS, sample_rate=10.0,
                      storage_format="arrow", compression="zstd") as writer:  # fmt: skip
        writer.write(_blocks(1, 10)[0])
    assert writer.path == tmp_path / "live"
    assert not (tmp_path / "live.h5").exists()
    with open_run(tmp_path / "live") as run:
        assert run.format == "arrow"
        assert run.streams["data"].rows == 10


def test_a_time_range_reads_the_samples_taken_in_it(tmp_path: Path) -> None:
    """open_run's start / stop apply to the ``timestamps`` of the issue's layout:
    [start, stop) at 1 kS/s from sample 0's time picks samples 250..749."""
    from daq_storage.read import open_run
    from daq_storage.streams import ChannelConfig, StreamWriter

    start_ns = 1_700_000_000_000_000_000
    path = tmp_path / "card.h5"
    with StreamWriter(path, channels=[ChannelConfig(0, "AI0", -10.0, 10.0)], sample_rate=1000.0,
                      start_ns=start_ns) as writer:  # fmt: skip
        writer.write(np.arange(1000, dtype=np.int16).reshape(-1, 1))
    with open_run(path) as run:
        got = run.table("data", ["sample_index"], start=start_ns + 250_000_000,
                        stop=start_ns + 750_000_000)  # fmt: skip
        assert got.column("sample_index").to_pylist() == list(range(250, 750))
        assert got.column_names == ["sample_index"]
