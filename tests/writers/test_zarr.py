"""Zarr V3: the seeds' builder, table columns with nulls and gaps, buffered chunks, shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr
import zarr

from daq_storage.errors import ConfigError, SchemaMismatch, StorageIOError, UnsupportedData
from daq_storage.sim import SimulatedCamera, SimulatedDaqCard, SimulatedPowerMeter
from daq_storage.testing import fill_disk
from daq_storage.writers import StreamPart, ZarrWriter
from tests.writers.conformance import write_in_odd_calls


def test_zarr_4d_nested_scan_shows_dimension_names_in_xarray(tmp_path: Path):
    """The seeds' example: wavelength x position x y x x, written chunk by chunk."""
    path = tmp_path / "scan.zarr"
    camera = SimulatedCamera((32, 32), seed=0, start_ns=0)
    with ZarrWriter(path) as writer:
        writer.create_array(
            "camera_frames", shape=[10, 5, 32, 32], chunks=[10, 1, 32, 32], shards=[10, 5, 32, 32],
            dimension_names=["wavelength", "position", "y", "x"], dtype=np.uint16,
            attributes={"wavelength_nm": list(range(700, 1000, 30))},
        )  # fmt: skip
        expected = np.zeros((10, 5, 32, 32), np.uint16)
        for position in range(5):
            block = camera.frames(10).frames[:, None]  # every wavelength at one position
            writer.write_chunk("camera_frames", [0, position, 0, 0], block)
            expected[:, position : position + 1] = block
        with pytest.raises(SchemaMismatch, match="does not fit"):
            writer.write_chunk("camera_frames", [0, 5, 0, 0], block)
    dataset = xr.open_zarr(path, consolidated=False)
    assert dataset["camera_frames"].dims == ("wavelength", "position", "y", "x")
    assert zarr.open_array(path / "camera_frames", mode="r").shards == (10, 5, 32, 32)
    np.testing.assert_array_equal(dataset["camera_frames"].values, expected)
    wavelengths = zarr.open_array(path / "camera_frames", mode="r").attrs["wavelength_nm"]
    assert isinstance(wavelengths, list)
    assert wavelengths[0] == 700


def test_zarr_sharded_frames_are_compressed_and_complete(tmp_path: Path):
    frames = SimulatedCamera(seed=0, start_ns=0).frames(10).frames
    path = tmp_path / "frames.zarr"
    with ZarrWriter(path, compression="blosc-lz4", shard_frames=4) as writer:
        for i in range(0, 10, 3):  # appends that do not line up with shards
            writer.write_frames("camera_1", frames[i : i + 3])
    array = zarr.open_array(path / "camera_1" / "frames", mode="r")
    assert array.shards == (4, 480, 640)
    np.testing.assert_array_equal(array[:], frames)
    size = sum(p.stat().st_size for p in (path / "camera_1" / "frames").rglob("*") if p.is_file())
    assert size < 0.9 * frames.nbytes


def test_zarr_bad_input(tmp_path: Path):
    with pytest.raises(ConfigError, match="shard_frames"):
        ZarrWriter(tmp_path / "a.zarr", frames_per_chunk=3, shard_frames=4)
    with pytest.raises(ConfigError, match="compression"):
        ZarrWriter(tmp_path / "b.zarr", compression="rar")
    with ZarrWriter(tmp_path / "c.zarr") as writer:
        writer.write_batch("s", pa.record_batch({"v": pa.array([1, 2], pa.int32())}))
        with pytest.raises(UnsupportedData, match="variable-length"):
            writer.check_batch("t", pa.record_batch({"xs": [[1.0, 2.0]]}))
        with pytest.raises(UnsupportedData, match="variable-length"):
            writer.write_batch("t", pa.record_batch({"xs": [[1.0, 2.0]]}))
        assert writer.streams == ["s"]
    (tmp_path / "d.zarr").mkdir()
    (tmp_path / "d.zarr" / "keep").write_text("x")
    with pytest.raises(StorageIOError, match="never overwritten"):
        ZarrWriter(tmp_path / "d.zarr")
    (tmp_path / "file").write_text("x")  # a directory that cannot be made, even by root
    with pytest.raises(StorageIOError, match="cannot create Zarr store") as info:
        ZarrWriter(tmp_path / "file" / "e.zarr")
    assert info.value.filename == str(tmp_path / "file" / "e.zarr")


def _column(path: Path, stream: str, name: str) -> np.ndarray:
    return np.asarray(zarr.open_array(path / stream / name, mode="r")[:])


def test_nulls_gaps_and_new_columns_keep_every_array_aligned(tmp_path: Path):
    path = tmp_path / "t.zarr"
    with ZarrWriter(path, chunk_size=3) as writer:
        writer.write_batch("s", pa.record_batch({"a": pa.array([1, 2], pa.int32()),
                                                 "t": ["x", "y"]}))  # fmt: skip
        writer.write_batch("s", pa.record_batch({"a": pa.array([None, 4], pa.int32()),
                                                 "b": [0.5, None]}))  # fmt: skip
        writer.write_batch("s", pa.record_batch({"b": [7.5]}))  # "a" and "t" missing: null
    dataset = xr.open_zarr(path, group="s", consolidated=False)
    names = ("a", "a.valid", "t", "t.valid", "b", "b.valid")
    assert {name: dataset[name].shape for name in dataset.data_vars} == dict.fromkeys(names, (5,))
    assert list(dataset["a"].values) == [1, 2, 0, 4, 0]
    assert list(dataset["a.valid"].values) == [True, True, False, True, False]
    assert list(dataset["t"].values) == ["x", "y", "", "", ""]
    assert list(dataset["t.valid"].values) == [True, True, False, False, False]
    b = dataset["b"].values
    assert np.isnan(b[[0, 1, 3]]).all()
    assert list(b[[2, 4]]) == [0.5, 7.5]
    assert list(dataset["b.valid"].values) == [False, False, True, False, True]
    assert dataset["a"].dims == ("row",)
    assert zarr.open_group(path / "s", mode="r").attrs["rows"] == 5


def test_rows_are_buffered_into_whole_chunks_and_visible_after_flush(tmp_path: Path):
    path = tmp_path / "t.zarr"
    meter = SimulatedPowerMeter(seed=3, start_ns=0)
    batches = [meter.read_batch(700) for _ in range(10)]
    with ZarrWriter(path, chunk_size=1000) as writer:
        for batch in batches[:3]:
            writer.write_batch("pm", batch)
        # 2,100 rows arrived: two whole chunks are written, 100 rows wait; readers see
        # the store as of the last flush (nothing yet).
        assert sorted(p.name for p in (path / "pm" / "value" / "c").iterdir()) == ["0", "1"]
        assert zarr.open_array(path / "pm" / "value", mode="r").shape == (0,)
        writer.flush()
        assert zarr.open_array(path / "pm" / "value", mode="r").shape == (2100,)
        for batch in batches[3:]:  # continues from the partial chunk the flush wrote
            writer.write_batch("pm", batch)
    expected = pa.Table.from_batches(batches)
    np.testing.assert_array_equal(_column(path, "pm", "value"), expected.column("value"))
    np.testing.assert_array_equal(_column(path, "pm", "timestamp_ns"),
                                  expected.column("timestamp_ns").cast(pa.int64()))  # fmt: skip
    assert list(_column(path, "pm", "channel")) == expected.column("channel").to_pylist()
    assert not (path / "pm" / "value.valid").exists()


def test_an_unstorable_type_is_refused_and_changes_nothing(tmp_path: Path):
    """A column Zarr has no rectangular array for is refused by check_batch and
    write_batch alike, before anything is made; a type change is no refusal (it starts a
    new part: see test_zarr_contract)."""
    path = tmp_path / "t.zarr"
    refused = [
        (pa.record_batch({"r": pa.array([[1.0], [2.0, 3.0]])}), r"column 'r'.*variable-length"),
        (pa.record_batch({"d": pa.array([1], pa.decimal128(5, 2))}), r"column 'd'.*decimal"),
        (pa.record_batch({"b": pa.array([b"x"], pa.binary())}), r"column 'b'.*binary"),
        (pa.record_batch({"n": pa.array([{"x": [1]}])}), r"column 'n\.x'.*variable-length"),
    ]
    with ZarrWriter(path) as writer:
        writer.write_batch("s", pa.record_batch({"v": pa.array([1.0, 2.0])}))
        for batch, message in refused:
            for call in (writer.check_batch, writer.write_batch):
                with pytest.raises(UnsupportedData, match=rf"stream 's' {message}"):
                    call("s", batch)
            assert writer.accepted("s") == 2
        writer.write_batch("s", pa.record_batch({"v": pa.array([5.0])}))
        assert writer.describe("s").parts == (StreamPart(path, "s", 0),)
    assert list(_column(tmp_path / "t.zarr", "s", "v")) == [1.0, 2.0, 5.0]
    assert sorted(p.name for p in (path / "s").iterdir()) == ["v", "zarr.json"]


def test_tables_and_frames_do_not_mix_in_one_stream(tmp_path: Path):
    with ZarrWriter(tmp_path / "t.zarr") as writer:
        writer.write_batch("s", pa.record_batch({"v": [1.0]}))
        with pytest.raises(SchemaMismatch, match="holds a table"):
            writer.write_frames("s", np.zeros((1, 2, 2), np.uint16))
        writer.write_frames("c", np.zeros((1, 2, 2), np.uint16))
        with pytest.raises(SchemaMismatch, match="holds frames"):
            writer.write_batch("c", pa.record_batch({"v": [1.0]}))


@pytest.mark.parametrize("compression", ["blosc-lz4", "blosc-zstd", "zstd", "gzip", "none"])
def test_frames_through_flushes_and_odd_calls(tmp_path: Path, compression: str):
    """Shards written whole on the thread pool (blosc) or by zarr-python (other codecs);
    a flush mid-shard writes a partial shard that later frames continue."""
    block = SimulatedCamera((60, 80), seed=4, start_ns=10).frames(23)
    times = block.timestamps_ns.astype("datetime64[ns]")  # xarray decodes them to dates
    path = tmp_path / "f.zarr"

    def visible(count: int) -> None:
        dataset = xr.open_zarr(path, group="cam", consolidated=False)
        np.testing.assert_array_equal(dataset["frames"].values, block.frames[:count])
        np.testing.assert_array_equal(dataset["timestamp_ns"].values, times[:count])

    with ZarrWriter(path, compression=compression, frames_per_chunk=2, shard_frames=4) as writer:
        write_in_odd_calls(writer, block, visible)
    dataset = xr.open_zarr(path, group="cam", consolidated=False)
    np.testing.assert_array_equal(dataset["frames"].values, block.frames)
    np.testing.assert_array_equal(dataset["timestamp_ns"].values, times)
    np.testing.assert_array_equal(dataset["frame_number"].values, block.frame_numbers)
    array = zarr.open_array(path / "cam" / "frames", mode="r")
    assert (array.chunks, array.shards) == ((2, 60, 80), (4, 60, 80))
    assert not list(path.rglob("*.partial"))
    if compression != "none":
        size = sum(p.stat().st_size for p in (path / "cam" / "frames").rglob("*") if p.is_file())
        assert size < 0.9 * block.frames.nbytes


def test_caller_may_reuse_its_frame_buffer(tmp_path: Path):
    """Frames are compressed (or copied) before write_frames returns."""
    block = SimulatedCamera((32, 32), seed=5, start_ns=0).frames(10)
    buffer = np.empty((5, 32, 32), np.uint16)
    path = tmp_path / "f.zarr"
    with ZarrWriter(path, shard_frames=4) as writer:
        for start in (0, 5):
            buffer[...] = block.frames[start : start + 5]
            writer.write_frames("cam", buffer)
            buffer[...] = 0
    np.testing.assert_array_equal(zarr.open_array(path / "cam" / "frames", mode="r")[:],
                                  block.frames)  # fmt: skip


def test_a_commit_failing_on_a_full_disk_refuses_only_that_batch(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch
):
    """The disk fills between the room check and the write (another process): the batch
    whose commit fails is refused, rows accepted before stay pending and are written once
    there is room, and every column stays aligned."""
    monkeypatch.setattr(ZarrWriter, "_ensure_room", lambda *args: None)
    filler = small_disk / "filler"
    path = small_disk / "t.zarr"
    rng = np.random.default_rng(0)
    first = pa.record_batch({"a": np.arange(600, dtype=np.int64)})
    second = pa.record_batch({"a": np.arange(600, 1200, dtype=np.int64),
                              "b": rng.random(600)})  # fmt: skip
    with ZarrWriter(path, chunk_size=1000, compression="none") as writer:
        writer.write_batch("s", first)  # buffered: less than a chunk
        fill_disk(filler.parent, leave=0)  # another process fills the disk
        with pytest.raises(StorageIOError, match="cannot write stream 's'"):
            writer.write_batch("s", second)  # 1,200 rows: the first chunk is committed
        filler.unlink()
        writer.write_batch("s", pa.record_batch({"a": np.arange(600, 700, dtype=np.int64)}))
    dataset = xr.open_zarr(path, group="s", consolidated=False)
    assert list(dataset.data_vars) == ["a"]  # "b" came only with the refused batch
    np.testing.assert_array_equal(dataset["a"].values, np.arange(700))


def test_xarray_opens_a_stream_without_warnings_in_schema_order_and_in_volts(tmp_path: Path):
    """The plain call works (consolidated metadata, no warning; pytest turns warnings into
    errors); variables come in the stream's column order, not sorted by name."""
    card = SimulatedDaqCard(11, sample_rate=1000.0, seed=0, start_ns=1_700_000_000_000_000_000)
    blocks = [card.read_block(300) for _ in range(3)]
    path = tmp_path / "daq.zarr"
    with ZarrWriter(path, chunk_size=256) as writer:
        for block in blocks:
            writer.write_batch("daq_card", block.to_record_batch())
    dataset = xr.open_zarr(path, group="daq_card")
    assert list(dataset.data_vars) == ["sample_index", *card.channel_names]
    assert dataset.attrs["sample_rate"] == 1000.0
    assert dataset.attrs["start_ns"] == card.start_ns
    counts = np.concatenate([block.samples[:, 10] for block in blocks])
    np.testing.assert_allclose(dataset["ai10"].values, counts * card.volts_per_count)
    assert dataset["ai10"].attrs["units"] == "V"
    assert list(xr.open_zarr(path).attrs) == []  # the root opens too, without a warning


def _lengths_seen(path: Path, stream: str) -> set[tuple[str, int]]:
    """The length of every variable of ``stream`` by every reader: xarray through the
    consolidated metadata and without it, zarr-python through the root's consolidated
    metadata, by listing the group, and array by array."""
    seen: set[tuple[str, int]] = set()
    for consolidated in (None, False):
        dataset = xr.open_zarr(path, group=stream, consolidated=consolidated)
        seen |= {(str(name), dataset[name].shape[0]) for name in dataset.variables
                 if dataset[name].ndim}  # fmt: skip
    listed: Any = zarr.open_group(path, mode="r", use_consolidated=False)[stream]
    through_root: Any = zarr.open_group(path, mode="r")[stream]
    for group in (through_root, listed):
        seen |= {(name, array.shape[0]) for name, array in group.arrays()}
    for name in listed.array_keys():
        seen.add((name, zarr.open_array(path / stream / name, mode="r").shape[0]))
    return seen


@pytest.mark.parametrize("shard_frames", [None, 2])
def test_every_reader_sees_the_last_flush_until_the_next(tmp_path: Path, shard_frames: int | None):
    """Chunks and shards are written between flushes, and columns appear; whichever way a
    reader opens the store, it sees it as of the last flush: every variable of a stream
    at one length, every value one that was written (no fill value as data)."""
    meter = SimulatedPowerMeter(seed=1, start_ns=0)
    batches = [meter.read_batch(250) for _ in range(4)]
    block = SimulatedCamera((8, 8), seed=1, start_ns=0).frames(9)
    path = tmp_path / "grow.zarr"

    def seen(rows: int, frames: int, extra: tuple[str, ...] = ()) -> None:
        names = {"value", "timestamp_ns", "channel", "unit", *extra}
        assert _lengths_seen(path, "pm") == {(name, rows) for name in names}
        table = xr.open_zarr(path, group="pm", consolidated=False)
        np.testing.assert_array_equal(table["value"].values,
                                      pa.Table.from_batches(batches)["value"][:rows])  # fmt: skip
        names = {"frames", "timestamp_ns", "frame_number"}
        assert _lengths_seen(path, "cam") == {(name, frames) for name in names}
        cam = xr.open_zarr(path, group="cam", consolidated=False)
        np.testing.assert_array_equal(cam["frames"].values, block.frames[:frames])
        np.testing.assert_array_equal(cam["frame_number"].values, block.frame_numbers[:frames])

    with ZarrWriter(path, chunk_size=100, shard_frames=shard_frames) as writer:
        writer.write_batch("pm", batches[0])
        writer.write_frames("cam", block.frames[:3], timestamps_ns=block.timestamps_ns[:3])
        writer.flush()
        seen(250, 3)
        for batch in batches[1:]:  # whole chunks are written, a column appears
            writer.write_batch("pm", batch.append_column("late", pa.array([1.5] * 250)))
        writer.write_frames("cam", block.frames[3:], timestamps_ns=block.timestamps_ns[3:])
        assert len(list((path / "pm" / "value" / "c").iterdir())) == 10
        seen(250, 3, ("late", "late.valid"))  # the new column: null for the 250 rows
        late = xr.open_zarr(path, group="pm", consolidated=False)
        assert not late["late.valid"].values.any()
        writer.flush()
        seen(1000, 9, ("late", "late.valid"))
    seen(1000, 9, ("late", "late.valid"))
    assert not [p for p in path.rglob("*") if p.is_symlink() or p.name.startswith(".")]


def test_user_metadata_and_the_stream_metadata_are_attributes(tmp_path: Path):
    path = tmp_path / "m.zarr"
    card = SimulatedDaqCard(1, sample_rate=500.0, seed=0, start_ns=7)
    with ZarrWriter(path) as writer:
        writer.set_metadata("sample_rate", "set by the user wins", stream="daq")
        writer.write_batch("daq", card.read_block(10).to_record_batch())
        writer.set_metadata("operator", "ada")
    attributes = xr.open_zarr(path, group="daq").attrs
    assert attributes["sample_rate"] == "set by the user wins"
    assert (attributes["start_ns"], attributes["instrument_id"], attributes["rows"]) == (
        7,
        "daq",
        10,
    )
    assert xr.open_zarr(path).attrs["operator"] == "ada"
