"""Each writer through the conformance suite (:mod:`daq_storage.testing`): tables,
frames and metadata read back by :func:`daq_storage.read.open_run` (the suite's default
reader, itself checked against each format's library in tests/read); column
attributes and decoded times read here with the library a scientist uses (h5py,
pyarrow, polars, pandas, xarray, zarr)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xarray as xr
import zarr

from daq_storage.errors import StorageIOError
from daq_storage.writers import Writer, open_writer
from tests.writers.conformance import PER_STREAM, WriterConformance, read_stream, stream_files


def _attribute(value: Any) -> Any:
    """An HDF5 or Zarr attribute as Python (numbers and text as they are)."""
    return value.item() if isinstance(value, np.generic) else value


def _cf_decoded(values: np.ndarray, attrs: Any) -> np.ndarray:
    """Integers decoded by their CF attributes (units, calendar), as xarray does."""
    variable = xr.Variable(("row",), values, {k: _attribute(v) for k, v in attrs.items()})
    return np.asarray(xr.decode_cf(xr.Dataset({"v": variable}))["v"].values)


def _field_attributes(schema: pa.Schema, column: str) -> dict[str, Any]:
    metadata = schema.field(column).metadata or {}
    return {k.decode(): v.decode() for k, v in metadata.items()}


class TestHdf5(WriterConformance):
    writer_name = "hdf5"
    target = "run.h5"

    def read_column_attributes(self, path: Path, stream: str, column: str) -> dict[str, Any]:
        with h5py.File(path, "r") as f:
            return {k: _attribute(v) for k, v in f[stream][column].attrs.items()}

    def read_times(self, path: Path, stream: str, column: str) -> np.ndarray:
        with h5py.File(path, "r") as f:
            dataset = f[stream][column]
            assert dataset.attrs["arrow_type"] == "timestamp[ns, tz=UTC]"
            return _cf_decoded(dataset[()], dataset.attrs)

    def read_frame_times(self, path: Path, stream: str) -> np.ndarray:
        with h5py.File(path, "r") as f:
            dataset = f[stream]["timestamp_ns"]
            return _cf_decoded(dataset[()], dataset.attrs)


class TestHdf5Blosc(TestHdf5):
    options: ClassVar[dict[str, Any]] = {"compression": "blosc-lz4", "frames_per_chunk": 2}


class TestArrow(WriterConformance):
    writer_name = "arrow"
    target = "run_arrow"

    typed_attributes = False  # Arrow field metadata is text

    def read_column_attributes(self, path: Path, stream: str, column: str) -> dict[str, Any]:
        with pa.OSFile(str(path / f"{stream}.arrows")) as source:
            return _field_attributes(pa.ipc.open_stream(source).schema, column)

    def read_times(self, path: Path, stream: str, column: str) -> np.ndarray:
        series = pl.read_ipc_stream(path / f"{stream}.arrows")[column]
        assert series.dtype == pl.Datetime("ns", "UTC")
        return series.to_numpy()

    def read_frame_times(self, path: Path, stream: str) -> np.ndarray:
        return self.read_times(path, stream, "timestamp_ns")


class TestParquet(WriterConformance):
    writer_name = "parquet"
    target = "run_parquet"
    typed_attributes = False  # Parquet key-value metadata is text

    def read_column_attributes(self, path: Path, stream: str, column: str) -> dict[str, Any]:
        return _field_attributes(pq.read_schema(path / f"{stream}.parquet"), column)

    def read_times(self, path: Path, stream: str, column: str) -> np.ndarray:
        series = pd.read_parquet(path / f"{stream}.parquet", columns=[column])[column]
        assert str(series.dtype) == "datetime64[ns, UTC]"
        return np.asarray(series.dt.tz_convert(None).to_numpy())

    def read_frame_times(self, path: Path, stream: str) -> np.ndarray:
        return self.read_times(path, stream, "timestamp_ns")


class TestCsv(WriterConformance):
    writer_name = "csv"
    target = "run_csv"
    text_prefix = "s"

    def read_column_attributes(self, path: Path, stream: str, column: str) -> dict[str, Any]:
        document = json.loads((path / "metadata.json").read_text())
        described: dict[str, Any] = document["columns"][stream].get(column, {})
        return described

    def read_times(self, path: Path, stream: str, column: str) -> np.ndarray:
        series = pd.read_csv(path / f"{stream}.csv", parse_dates=[column])[column]
        assert str(series.dtype).startswith("datetime64[")
        assert str(series.dt.tz) == "UTC"
        return np.asarray(series.dt.tz_convert(None).to_numpy(), "datetime64[ns]")


class TestZarr(WriterConformance):
    writer_name = "zarr"
    target = "run.zarr"
    options: ClassVar[dict[str, Any]] = {"frames_per_chunk": 2, "shard_frames": 4}
    file_size_limit_applies = False

    def read_column_attributes(self, path: Path, stream: str, column: str) -> dict[str, Any]:
        return dict(zarr.open_array(path / stream / column, mode="r").attrs)

    def read_times(self, path: Path, stream: str, column: str) -> np.ndarray:
        dataset = xr.open_zarr(path, group=stream)
        assert column in dataset.coords  # a coordinate of "row"
        return np.asarray(dataset[column].values)

    def read_frame_times(self, path: Path, stream: str) -> np.ndarray:
        dataset = xr.open_zarr(path, group=stream)
        assert set(dataset["frames"].coords) == {"timestamp_ns", "frame_number"}
        return np.asarray(dataset["timestamp_ns"].values)


@pytest.mark.parametrize("name", ["arrow", "parquet", "tiff"])
def test_metadata_of_a_run_with_no_stream_is_kept(tmp_path: Path, name: str):
    """A per-stream format keeps run metadata in each stream file's header; with no
    stream file there, it goes to metadata.json rather than nowhere."""
    with open_writer(name, tmp_path / "run") as writer:
        writer.set_metadata("experiment", "dark frames")
        writer.set_metadata("exposure_ms", 10, stream="camera_1")
    document = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert document == {
        "file": {"experiment": "dark frames"},
        "streams": {"camera_1": {"exposure_ms": 10}},
    }
    assert writer.stats.files == (tmp_path / "run" / "metadata.json",)


# ---------------------------------------------------------------------- per-stream formats
def write_values(writer: Writer, stream: str, values: np.ndarray) -> None:
    """``values`` as column ``v`` (frames: one 8x10 float64 frame per value, filled)."""
    if writer.supports_tables:
        writer.write_batch(stream, pa.record_batch({"v": values}))
    else:
        writer.write_frames(stream, np.repeat(values, 80).reshape(-1, 8, 10))


@pytest.mark.parametrize("name", PER_STREAM)
def test_a_second_writer_on_a_live_output_is_refused(tmp_path: Path, name: str):
    """Two writers never share a directory: one in this process or in another is
    refused (EBUSY, naming the holder's pid) while the first is open; once it is closed
    the directory takes new streams again (and never overwrites the old ones)."""
    target = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        from daq_storage.errors import StorageIOError
        from daq_storage.writers import open_writer
        try:
            open_writer({name!r}, {str(target)!r})
        except StorageIOError as exc:
            print(exc.errno, exc)
        """
    )
    with open_writer(name, target) as first:
        write_values(first, "s", np.arange(3.0))
        busy = rf"being written by another writer \(this process, pid {os.getpid()}\)"
        with pytest.raises(StorageIOError, match=busy) as info:
            open_writer(name, target)
        assert info.value.errno == errno.EBUSY
        other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=120, check=True)  # fmt: skip
        assert other.stdout.startswith(f"{errno.EBUSY} "), other.stdout + other.stderr
        assert f"(pid {os.getpid()})" in other.stdout
        write_values(first, "s", np.arange(3.0, 5.0))
    with open_writer(name, target) as second:
        with pytest.raises(StorageIOError, match="already exists"):
            write_values(second, "s", np.arange(9.0, 10.0))
        write_values(second, "t", np.arange(7.0, 8.0))
    assert read_stream(name, target, "s") == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert read_stream(name, target, "t") == [7.0]


def test_a_writer_in_another_process_holds_the_output(tmp_path: Path):
    """The lock is the kernel's: held by a live process, named by its pid, dropped when
    the process ends."""
    target = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import os, sys
        import pyarrow as pa
        from daq_storage.writers import open_writer
        with open_writer("parquet", {str(target)!r}) as writer:
            writer.write_batch("s", pa.record_batch({{"v": [1.0]}}))
            print("ready", os.getpid(), flush=True)
            sys.stdin.read()  # until the test closes our stdin
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        word, pid = child.stdout.readline().split()
        assert word == "ready"
        with pytest.raises(StorageIOError, match=rf"another writer \(pid {pid}\)"):
            open_writer("parquet", target)
    finally:
        child.stdin.close()
        child.wait(60)
        child.stdout.close()
    assert child.returncode == 0
    with open_writer("parquet", target) as writer:
        writer.write_batch("t", pa.record_batch({"v": [2.0]}))
    assert read_stream("parquet", target, "s") == [1.0]


@pytest.mark.parametrize("name", ["arrow", "parquet"])
def test_part_files_never_collide_with_another_stream(tmp_path: Path, name: str):
    """A schema change continues a stream in ``<stream>__part0002``, ``__part0003``, ...,
    names no stream can have: streams ``pp.part0002`` and ``pp__part0003`` keep files
    of their own (F2), and describe() names the parts."""
    directory = tmp_path / "parts"
    with open_writer(name, directory) as writer:
        writer.write_batch("pp", pa.record_batch({"v": [1.0]}))
        writer.write_batch("pp", pa.record_batch({"v": ["x", "y"]}))  # -> pp__part0002
        writer.write_batch("pp", pa.record_batch({"v": [2.0]}))  # -> pp__part0003
        writer.write_batch("pp.part0002", pa.record_batch({"v": [0.5]}))
        writer.write_batch("pp__part0003", pa.record_batch({"v": [0.25]}))  # -> pp_part0003
        parts = writer.describe("pp").parts
    suffix = ".arrows" if name == "arrow" else ".parquet"
    stems = ["pp", "pp__part0002", "pp__part0003", "pp.part0002", "pp_part0003"]
    assert sorted(p.name for p in directory.iterdir()) == sorted(f"{s}{suffix}" for s in stems)
    files = [f"{stem}{suffix}" for stem in stems[:3]]
    assert [p.name for p in stream_files(name, directory, "pp")] == files
    assert [(part.path.name, part.first) for part in parts] == list(
        zip(files, [0, 1, 3], strict=True)
    )
    assert read_stream(name, directory, "pp.part0002") == [0.5]
    assert read_stream(name, directory, "pp_part0003") == [0.25]


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` as another process would, leaving about ``leave`` bytes free."""
    filler = disk / "filler"

    def write_forever() -> None:
        with filler.open("wb") as file:
            while True:
                file.write(bytes(1 << 16))
                file.flush()

    with pytest.raises(OSError, match="No space left"):
        write_forever()
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


@pytest.mark.parametrize("name", PER_STREAM)
def test_a_disk_filled_by_another_process_never_leaves_garbage(
    mount_tmpfs: Callable[[str], Path], name: str
):
    """Another process fills the disk (not the writer's own up-front check): a write or
    a flush fails half-way, the writer reports it and puts the file back; once space is
    freed it goes on. Every reader reads whole calls in order, each one a flush
    confirmed at least, and exactly as many rows as the writer says it accepted (F8)."""
    disk = mount_tmpfs("16m")
    target = disk / "run"
    writer = open_writer(name, target)
    per_call = 20_000 if writer.supports_tables else 200  # 160 kB a call either way

    def values(i: int) -> np.ndarray:
        return np.arange(i * per_call, (i + 1) * per_call, dtype=np.float64)

    confirmed = []  # calls a flush returned after
    for i in range(2):
        write_values(writer, "s", values(i))
        writer.flush()
        confirmed.append(i)
    filler = fill(disk, leave=48 << 10)
    halfway = None
    for i in range(2, 12):
        try:
            write_values(writer, "s", values(i))
            writer.flush()
        except StorageIOError as exc:
            if "free on the disk" not in str(exc):  # refused half-way, not up front
                halfway = exc
                break
        else:
            confirmed.append(i)
    assert halfway is not None, "no write failed half-way"
    assert halfway.errno == errno.ENOSPC, halfway
    filler.unlink()
    for i in range(20, 24):
        write_values(writer, "s", values(i))
        writer.flush()
        confirmed.append(i)
    accepted = writer.accepted("s")
    assert writer.visible("s") == accepted
    writer.close()
    got = read_stream(name, target, "s")
    assert len(got) == accepted
    calls = [int(got[k]) // per_call for k in range(0, len(got), per_call)]
    assert got == np.concatenate([values(i) for i in calls]).tolist()  # whole calls
    assert calls == sorted(set(calls))  # in order, none twice
    assert set(confirmed) <= set(calls)
