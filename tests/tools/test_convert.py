"""convert_run: every pair of formats that makes sense, read back with the target's own
library; metadata, ids and the loss ledger carried over; refusals that write nothing; a
run larger than the converting process may map."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tifffile
import zarr

from daq_storage.errors import ConfigError, StorageIOError, UnknownStream, UnsupportedData
from daq_storage.read import open_run
from daq_storage.tools import convert_run
from daq_storage.writers import open_writer
from tests.tools.conftest import GAPS, START_NS, write_lossy_versions

TABLE_PAIRS = [
    ("hdf5", "parquet"),
    ("hdf5", "arrow"),
    ("hdf5", "csv"),
    ("hdf5", "zarr"),
    ("parquet", "hdf5"),
    ("arrow", "hdf5"),
    ("csv", "hdf5"),
    ("zarr", "hdf5"),
    ("parquet", "csv"),
    ("csv", "parquet"),
]
FRAME_PAIRS = [
    ("hdf5", "zarr"),
    ("zarr", "hdf5"),
    ("hdf5", "tiff"),
    ("tiff", "zarr"),
    ("zarr", "tiff"),
    ("hdf5", "arrow"),
    ("parquet", "hdf5"),
    ("arrow", "zarr"),
    ("tiff", "parquet"),
]
OUT = {"hdf5": "out.h5", "zarr": "out.zarr"}


def _target(tmp_path: Path, name: str) -> Path:
    return tmp_path / OUT.get(name, f"out_{name}")


# --- what the target's own library reads ---------------------------------------------
def _column(target: Path, name: str, stream: str, column: str) -> npt.NDArray[Any]:
    if name == "hdf5":
        with h5py.File(target, "r") as f:
            return f[f"{stream}/{column}"][()]  # type: ignore[no-any-return]
    if name == "zarr":
        group: Any = zarr.open_group(str(target), mode="r")
        return np.asarray(group[stream][column][:])
    if name == "parquet":
        table = pq.read_table(target / f"{stream}.parquet")
    elif name == "arrow":
        with pa.memory_map(str(target / f"{stream}.arrows")) as source:
            table = pa.ipc.open_stream(source).read_all()
    else:
        frame = pl.read_csv(target / f"{stream}.csv")
        values = frame[column]
        if column == "timestamp_ns":  # CSV holds ISO 8601 text
            values = values.str.to_datetime(time_unit="ns").dt.epoch("ns")
        return values.to_numpy()
    if column == "frames":
        return np.asarray(table.column("frame").combine_chunks().to_numpy_ndarray())
    values = table.column(column)
    if pa.types.is_timestamp(values.type):
        values = values.cast(pa.int64())
    return np.asarray(values.to_numpy())


def _pixels(target: Path, name: str) -> npt.NDArray[Any]:
    if name == "tiff":
        return np.asarray(tifffile.imread(target / "camera.tif"))
    return _column(target, name, "camera", "frames")


# --- tables ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "target"), TABLE_PAIRS, ids=[f"{a}-{b}" for a, b in TABLE_PAIRS]
)
def test_tables_convert_with_values_metadata_and_units(
    tmp_path: Path, every_format: dict[str, Path], source: str, target: str
):
    out = _target(tmp_path, target)
    result = convert_run(every_format[source], out, format=target, streams=["power", "rich"])
    assert [(s.stream, s.rows) for s in result.streams] == [("power", 2400), ("rich", 12)]
    with open_run(every_format[source]) as run:
        power = run.table("power")
        rich = run.table("rich")
    values = _column(out, target, "power", "value")
    np.testing.assert_array_equal(values, power.column("value").to_numpy())
    stamps = _column(out, target, "power", "timestamp_ns")
    np.testing.assert_array_equal(
        stamps.astype(np.int64), power.column("timestamp_ns").cast(pa.int64()).to_numpy()
    )
    with open_run(out) as back:
        assert back.metadata["experiment"] == "readback"
        assert back.metadata["converted_from"] == {
            "name": every_format[source].name,
            "format": source,
        }
        info = back.stream("power")
        assert info.metadata["wavelength_nm"] == 633.0
        assert info.schema.field("value").metadata[b"units"] == b"W"
        got = back.table("rich")
        assert got.column("label").to_pylist() == rich.column("label").to_pylist()
        assert got.column("count").to_pylist() == rich.column("count").to_pylist()
        assert got.column("ok").to_pylist() == rich.column("ok").to_pylist()
        channel = back.table("power", ["channel"]).column("channel").to_pylist()
        assert channel == power.column("channel").to_pylist()
    if target == "hdf5":  # the run's metadata on the file, the stream's on its group
        with h5py.File(out, "r") as f:
            assert f.attrs["experiment"] == "readback"
            assert f["power"].attrs["wavelength_nm"] == 633.0
            assert "experiment" not in f["power"].attrs


# --- frames ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "target"), FRAME_PAIRS, ids=[f"{a}-{b}" for a, b in FRAME_PAIRS]
)
def test_frames_convert_with_timestamps_and_frame_numbers(
    tmp_path: Path, every_format: dict[str, Path], source: str, target: str
):
    out = _target(tmp_path, target)
    result = convert_run(every_format[source], out, format=target, streams=["camera"])
    assert result.frames == 12
    with open_run(every_format[source]) as run:
        frames = run.frames("camera")
        expected = np.asarray(frames)
        stamps, numbers = frames.timestamps_ns, frames.frame_numbers
    np.testing.assert_array_equal(_pixels(out, target), expected)
    if target == "tiff":  # tifffile has no notion of ids: the project's reader
        with open_run(out) as back:
            got_stamps = back.frames("camera").timestamps_ns
            got_numbers = back.frames("camera").frame_numbers
    elif target in ("hdf5", "zarr"):
        got_stamps = _column(out, target, "camera", "timestamp_ns")
        got_numbers = _column(out, target, "camera", "frame_number")
    else:
        got_stamps = _column(out, target, "camera", "timestamp_ns")
        got_numbers = _column(out, target, "camera", "frame_number")
    np.testing.assert_array_equal(np.asarray(got_stamps, np.uint64), stamps)
    np.testing.assert_array_equal(np.asarray(got_numbers, np.uint64), numbers)


def test_small_chunks_give_the_same_run_and_progress_counts_up(
    tmp_path: Path, every_format: dict[str, Path]
):
    seen: list[tuple[int, int, str]] = []
    out = tmp_path / "out.zarr"
    result = convert_run(
        every_format["hdf5"],
        out,
        chunk_bytes=1000,
        progress=lambda done, total, stream: seen.append((done, total, stream)),
    )
    assert (result.rows, result.frames) == (2412, 12)
    dones = [d for d, _, _ in seen]
    assert dones == sorted(dones)
    assert dones[-1] == seen[-1][1] == 2424
    assert len(seen) > 12  # one step per chunk: frames one by one, rows in small batches
    with open_run(every_format["hdf5"]) as run, open_run(out) as back:
        assert back.table("power").equals(run.table("power").cast(back.table("power").schema))
        np.testing.assert_array_equal(
            np.asarray(back.frames("camera")), np.asarray(run.frames("camera"))
        )


# --- the loss ledger --------------------------------------------------------------------
@pytest.mark.parametrize("target", ["hdf5", "parquet", "zarr"])
def test_the_loss_ledger_of_every_version_is_carried_over(tmp_path: Path, target: str):
    runs = tmp_path / "runs"
    runs.mkdir()
    write_lossy_versions(runs, "hdf5")
    out = _target(tmp_path, target)
    result = convert_run(runs, out, format=target)
    assert result.lost_records == 13
    assert [s.rows for s in result.streams if s.stream == "power"] == [100]
    lost: Any
    if target == "hdf5":
        with h5py.File(out, "r") as f:
            ledger = json.loads(f.attrs["loss_ledger"])
            lost = int(f.attrs["lost_records"])
    elif target == "zarr":
        attrs: Any = zarr.open_group(str(out), mode="r").attrs
        ledger, lost = attrs["loss_ledger"], attrs["lost_records"]
    else:
        metadata = pq.read_schema(out / "power.parquet").metadata
        ledger = json.loads(metadata[b"loss_ledger"])
        lost = json.loads(metadata[b"lost_records"])
    assert ledger == GAPS
    assert lost == 13
    with open_run(out) as back:
        assert back.lost_records == 13


# --- refusals: nothing written -----------------------------------------------------------
def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize(
    ("target", "stream", "words"),
    [
        ("csv", "camera", "stream 'camera' .* to csv: it holds frames .* csv holds tables only"),
        ("tiff", "power", "stream 'power' .* to tiff: it holds a table .* tiff holds frames only"),
    ],
)
def test_impossible_conversions_are_refused_before_anything_is_written(
    tmp_path: Path, every_format: dict[str, Path], target: str, stream: str, words: str
):
    with pytest.raises(UnsupportedData, match=words):
        convert_run(every_format["hdf5"], tmp_path / "out", format=target)
    assert _leftovers(tmp_path) == []


def test_a_column_the_target_cannot_hold_is_refused_before_any_row(tmp_path: Path):
    source = tmp_path / "lists.h5"
    with open_writer("hdf5", source) as writer:
        writer.write_batch("counts", pa.record_batch({"v": [1.0, 2.0]}))
        writer.write_batch(
            "spectra", pa.record_batch({"bins": pa.array([[1, 2], [3]], pa.list_(pa.int64()))})
        )
    with pytest.raises(UnsupportedData, match=r"column 'bins'.*stream 'spectra'"):
        convert_run(source, tmp_path / "out", format="csv")
    assert _leftovers(tmp_path) == ["lists.h5"]


def test_a_failure_midway_leaves_no_output(tmp_path: Path):
    source = tmp_path / "lines.h5"
    with open_writer("hdf5", source) as writer:  # 1-D frames (spectra): no TIFF pages
        writer.write_batch("meter", pa.record_batch({"v": [1.0]}))
        writer.write_frames("spectra", np.ones((3, 8), np.uint16))
    with pytest.raises(UnsupportedData, match="spectra"):
        convert_run(source, tmp_path / "out", format="tiff", streams=["spectra"])
    assert _leftovers(tmp_path) == ["lines.h5"]
    with pytest.raises(ConfigError, match="compression"):
        convert_run(source, tmp_path / "out.h5", options={"compression": "nope"})
    assert _leftovers(tmp_path) == ["lines.h5"]


def test_an_existing_output_is_never_replaced(tmp_path: Path, every_format: dict[str, Path]):
    out = tmp_path / "out.zarr"
    out.mkdir()
    with pytest.raises(StorageIOError, match="exists"):
        convert_run(every_format["hdf5"], out)
    assert list(out.iterdir()) == []
    existing = tmp_path / "out.h5"
    existing.write_bytes(b"mine")
    with pytest.raises(StorageIOError, match="never replaces"):
        convert_run(every_format["zarr"], existing)
    assert existing.read_bytes() == b"mine"


def test_stream_choice_and_its_errors(tmp_path: Path, every_format: dict[str, Path]):
    with pytest.raises(UnknownStream, match="no stream 'nope'"):
        convert_run(every_format["hdf5"], tmp_path / "a.h5", streams=["nope"])
    with pytest.raises(ConfigError, match="cannot tell the format"):
        convert_run(every_format["hdf5"], tmp_path / "a")
    with pytest.raises(ConfigError, match="unknown writer"):
        convert_run(every_format["hdf5"], tmp_path / "a", format="xlsx")
    with pytest.raises(StorageIOError, match="does not exist"):
        convert_run(every_format["hdf5"], tmp_path / "no" / "a.h5")
    result = convert_run(every_format["hdf5"], tmp_path / "b.h5", streams=["rich", "rich"])
    assert [s.stream for s in result.streams] == ["rich"]
    with open_run(tmp_path / "b.h5") as back:
        assert list(back.streams) == ["rich"]
    assert _leftovers(tmp_path) == ["b.h5"]


# --- bounded memory -----------------------------------------------------------------------
_CHILD = textwrap.dedent("""
    import resource, sys
    import h5py, numpy, pyarrow, zarr  # what the conversion maps before it starts
    from daq_storage.tools import convert_run

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    limit = status("VmSize:") + int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        numpy.empty(int(sys.argv[4]), numpy.uint8).fill(1)  # the limit holds
    except MemoryError:
        pass
    else:
        sys.exit("a file-sized allocation did not fail under the limit")
    result = convert_run(sys.argv[1], sys.argv[2])
    print(limit, status("VmPeak:"), status("VmHWM:"), result.frames, result.rows)
""")


@pytest.mark.slow
def test_a_run_larger_than_the_process_may_map_converts(tmp_path: Path):
    """The source is larger than the address space the converting process may use in
    all (RLIMIT_AS: its libraries as loaded, plus 192 MB)."""
    frames, shape, rows = 1200, (512, 512), 1_000_000
    source = tmp_path / "big.h5"
    with open_writer("hdf5", source, compression="none") as writer:
        for first in range(0, frames, 100):
            index = np.arange(first, first + 100, dtype=np.uint16)
            block = index[:, None, None] + np.arange(shape[0] * shape[1], dtype=np.uint16).reshape(
                1, *shape
            )
            stamps = START_NS + index.astype(np.uint64) * 1000
            writer.write_frames(
                "camera", block, timestamps_ns=stamps, frame_numbers=index.astype(np.uint64) + 7
            )
        writer.write_batch(
            "power",
            pa.record_batch(
                {
                    "timestamp_ns": pa.array(START_NS + np.arange(rows), pa.timestamp("ns", "UTC")),
                    "value": np.arange(rows) * 0.5,
                }
            ),
        )
    size = source.stat().st_size
    out = tmp_path / "big.zarr"
    # Few threads (each maps its stack and malloc arena): a process meant to run in
    # little memory; pyarrow's allocator from the system's malloc (its own reserves
    # address space ahead).
    environ = {
        **os.environ,
        "MALLOC_ARENA_MAX": "1",
        "ARROW_DEFAULT_MEMORY_POOL": "system",
        "ZARR_THREADING__MAX_WORKERS": "1",
        "ZARR_ASYNC__CONCURRENCY": "2",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(source), str(out), str(192 << 20), str(size)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    limit, peak, resident, copied_frames, copied_rows = map(int, done.stdout.split())
    assert size > limit, f"the source ({size} B) must be larger than the limit ({limit} B)"
    assert peak <= limit
    assert (copied_frames, copied_rows) == (frames, rows)
    assert resident < size / 2
    group = zarr.open_group(str(out), mode="r")
    camera = group["camera"]
    for i in (0, 599, 1199):
        expected = (np.uint16(i) + np.arange(shape[0] * shape[1], dtype=np.uint16)).reshape(shape)
        np.testing.assert_array_equal(camera["frames"][i], expected)  # type: ignore[index]
    np.testing.assert_array_equal(camera["frame_number"][:], np.arange(frames) + 7)  # type: ignore[index]
    np.testing.assert_array_equal(
        camera["timestamp_ns"][:],  # type: ignore[index]
        START_NS + np.arange(frames) * 1000,
    )
    np.testing.assert_array_equal(group["power"]["value"][:], np.arange(rows) * 0.5)  # type: ignore[index]


@pytest.mark.parametrize("target", ["hdf5", "arrow", "parquet", "csv", "zarr"])
def test_a_stream_of_no_rows_keeps_its_columns(tmp_path: Path, target: str):
    source = tmp_path / "src"
    with open_writer("arrow", source) as writer:
        writer.write_batch(
            "empty",
            pa.record_batch({"a": pa.array([], pa.int32()), "b": pa.array([], pa.string())}),
        )
        writer.write_batch("full", pa.record_batch({"a": [1]}))
    out = _target(tmp_path, target)
    result = convert_run(source, out, format=target)
    assert [(s.stream, s.rows) for s in result.streams] == [("empty", 0), ("full", 1)]
    with open_run(out) as back:
        assert back.stream("empty").rows == 0
        assert back.stream("empty").columns == ["a", "b"]


def test_a_stream_in_several_parts_continues_as_the_target_evolves(tmp_path: Path):
    source = tmp_path / "src"
    with open_writer("parquet", source) as writer:
        writer.write_batch(
            "s", pa.record_batch({"a": pa.array([1, 2], pa.int32()), "b": ["x", "y"]})
        )
        writer.write_batch("s", pa.record_batch({"a": ["text", "now"], "b": ["z", "w"]}))
        writer.write_batch("s", pa.record_batch({"a": ["more"], "b": ["q"], "c": [1.5]}))
    out = tmp_path / "out.h5"
    assert convert_run(source, out).rows == 5
    with h5py.File(out, "r") as f:  # HDF5: a new part for the new type, a column added in place
        np.testing.assert_array_equal(f["s/a"][()], [1, 2])
        assert sorted(f["s__part0002"]) == ["a", "b", "c", "c.valid"]
        assert f["s__part0002/c"][2] == 1.5
    with open_run(out) as back:
        assert back.table("s", part=1).column("a").to_pylist() == ["text", "now", "more"]


@pytest.mark.parametrize("target", ["hdf5", "arrow", "parquet", "csv", "zarr"])
def test_metadata_changes_are_replayed_at_their_rows(tmp_path: Path, target: str):
    source = tmp_path / "src.h5"
    with open_writer("hdf5", source) as writer:
        writer.write_batch(
            "s", pa.record_batch({"a": [1, 2]}).replace_schema_metadata({"gain": "1"})
        )
        writer.write_batch(
            "s",
            pa.record_batch({"a": [3, 4, 5]}).replace_schema_metadata({"gain": "2", "label": "x"}),
        )
        writer.write_batch(
            "s", pa.record_batch({"a": [6]}).replace_schema_metadata({"gain": "1", "label": "x"})
        )
    changes = [
        {"row": 2, "key": "gain", "value": 2},
        {"row": 2, "key": "label", "value": "x"},
        {"row": 5, "key": "gain", "value": 1},
    ]
    out = _target(tmp_path, target)
    convert_run(source, out, format=target, chunk_bytes=16)  # batches of two rows
    with open_run(out) as back:
        metadata = back.stream("s").metadata
        assert metadata["gain"] == 1
        assert sorted(metadata["metadata_changes"], key=lambda c: (c["row"], c["key"])) == changes
        assert back.table("s").column("a").to_pylist() == [1, 2, 3, 4, 5, 6]
    if target == "hdf5":
        with h5py.File(out, "r") as f:
            assert json.loads(f["s"].attrs["metadata_changes"]) == changes
