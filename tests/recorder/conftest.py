"""Fixtures and read-back helpers for Recorder tests: a ring in /dev/shm written by the
test process, and each format read with the library a scientist would use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
import tifffile
import zarr

from daq_storage.recorder import RecorderStats
from daq_storage.ring import RingBuffer

#: Formats that hold frames / tables (every built-in writer).
FRAME_FORMATS = ("hdf5", "arrow", "parquet", "zarr", "tiff")
TABLE_FORMATS = ("hdf5", "arrow", "parquet", "csv", "zarr")
_STREAM_FILE = {"arrow": ".arrows", "parquet": ".parquet", "csv": ".csv", "tiff": ".tif"}


@pytest.fixture
def ring(shm_path: Path) -> Iterator[RingBuffer]:
    """A 16 MiB ring in /dev/shm written by this process; the ring and every Recorder
    stats file beside it are removed afterwards."""
    writer = RingBuffer.create(shm_path, capacity_bytes=16 << 20)
    yield writer
    writer.close()
    writer.unlink()
    for left in shm_path.parent.glob(f"{shm_path.name}.*"):
        left.unlink()


def write_frames(ring: RingBuffer, stream: str, first: int, count: int,
                 shape: tuple[int, ...] = (8, 12)) -> None:  # fmt: skip
    """Frames whose pixels, timestamp and number derive from their index."""
    for i in range(first, first + count):
        frame = (np.arange(np.prod(shape), dtype=np.uint16).reshape(shape) + i).astype(np.uint16)
        ring.write_frame(frame, stream=stream, frame_number=i, timestamp_ns=1_000_000 + i)


def expected_frames(first: int, count: int, shape: tuple[int, ...] = (8, 12)) -> npt.NDArray[Any]:
    base = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    return np.stack([(base + i).astype(np.uint16) for i in range(first, first + count)])


def table(first: int, rows: int) -> pa.RecordBatch:
    """Rows whose values derive from their index."""
    index = np.arange(first, first + rows)
    return pa.record_batch({"i": pa.array(index, pa.int64()), "v": pa.array(index * 0.5)})


def outputs(stats: RecorderStats, fmt: str) -> list[Path]:
    """The files (HDF5) or directories (Zarr stores, per-stream directories) ``fmt``
    wrote, in order (one per rotation)."""
    files = [Path(f) for f in stats.formats[fmt].files]
    if fmt in ("hdf5",):
        return files
    if fmt == "zarr":
        return [f for f in files if f.suffix == ".zarr"] or sorted({f.parent for f in files})
    return list(dict.fromkeys(f.parent for f in files))


def read_table(fmt: str, root: Path, stream: str) -> pa.Table:
    """``stream`` of one output read back, as an Arrow table of its columns."""
    if fmt == "hdf5":
        with h5py.File(root, "r") as f:
            stored = f[stream]
            return pa.table({name: stored[name][()] for name in stored})
    if fmt == "zarr":
        group: Any = zarr.open_group(root, mode="r")[stream]
        return pa.table({name: np.asarray(group[name][:]) for name in group.array_keys()})
    path = root / f"{stream}{_STREAM_FILE[fmt]}"
    if fmt == "arrow":
        with pa.ipc.open_stream(path) as reader:
            return reader.read_all()
    if fmt == "parquet":
        return pq.read_table(path)
    return pl.read_csv(path).to_arrow()


def read_frames(fmt: str, root: Path, stream: str) -> tuple[npt.NDArray[Any], list[int], list[int]]:
    """``(frames, timestamps_ns, frame_numbers)`` of one output (TIFF: no ids)."""
    if fmt == "hdf5":
        with h5py.File(root, "r") as f:
            h = f[stream]
            return h["frames"][()], h["timestamp_ns"][()].tolist(), h["frame_number"][()].tolist()
    if fmt == "zarr":
        g: Any = zarr.open_group(root, mode="r")[stream]
        return (np.asarray(g["frames"][:]), np.asarray(g["timestamp_ns"][:]).tolist(),
                np.asarray(g["frame_number"][:]).tolist())  # fmt: skip
    if fmt == "tiff":
        return tifffile.imread(root / f"{stream}.tif"), [], []
    t = read_table(fmt, root, stream)
    frames = t["frame"].combine_chunks().to_numpy_ndarray()
    stamps = t["timestamp_ns"].cast(pa.int64()).to_pylist()
    return frames, stamps, t["frame_number"].to_pylist()


def file_metadata(fmt: str, root: Path, stream: str) -> dict[str, Any]:
    """The file-level metadata a scientist reads, JSON values decoded: h5py
    ``f.attrs``, zarr ``group.attrs``, the Arrow/Parquet schema metadata and the
    Arrow stream's batch metadata, CSV's metadata.json, TIFF's first page."""
    found: dict[Any, Any] = {}

    def decoded(value: Any) -> Any:
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value.item() if hasattr(value, "item") else value

    if fmt == "hdf5":
        with h5py.File(root, "r") as f:
            return {k: decoded(v) for k, v in f.attrs.items()}
    if fmt == "zarr":
        return dict(zarr.open_group(root, mode="r").attrs)
    path = root / f"{stream}{_STREAM_FILE[fmt]}"
    if fmt == "arrow":
        with pa.ipc.open_stream(path) as reader:
            found.update(reader.schema.metadata or {})
            while True:
                try:
                    _, custom = reader.read_next_batch_with_custom_metadata()
                except StopIteration:
                    break
                found.update(custom or {})
    elif fmt == "parquet":
        found.update(pq.read_schema(path).metadata or {})
    elif fmt == "csv":
        meta = json.loads((root / "metadata.json").read_text())
        found.update(meta.get("file", {}))
    else:
        with tifffile.TiffFile(path) as tif:  # metadata set late is on a later page
            for page in tif.pages:
                text = getattr(page, "description", "") or "{}"
                found.update(json.loads(text).get("metadata", {}))
    return {(k.decode() if isinstance(k, bytes) else k): decoded(v) for k, v in found.items()}
