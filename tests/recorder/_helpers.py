"""What the Recorder's acceptance tests share: a deterministic producer writing into a
real ring, the readers a scientist uses for each format, the loss ledger as each format
stores it, and a wait on the cross-process stats file.

Every frame and row is a function of its index, so what a file holds can be checked
against what was written without keeping copies: frame ``n`` has pixels
``(7 n + k) % 65521``, frame number ``FRAME_BASE + n`` and timestamp ``T0 + n * DT``; row
``i`` holds ``i`` and ``i / 4``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import tifffile
import zarr

from daq_storage.recorder import RecorderStats, read_stats
from daq_storage.ring import RingBuffer
from tests.writers.conformance import stream_files

__all__ = [
    "ALL_FORMATS",
    "CAMERA",
    "FRAME_FORMATS",
    "FRAME_SHAPE",
    "TABLE",
    "TABLE_FORMATS",
    "Frames",
    "Producer",
    "check_frames",
    "check_rows",
    "count_rows",
    "expected_frames",
    "expected_rows",
    "file_metadata",
    "format_outputs",
    "frame_indices",
    "read_frames",
    "read_ledger",
    "read_column",
    "read_rows",
    "ring_at",
    "wait_for_stats",
]

ALL_FORMATS = ("hdf5", "arrow", "parquet", "csv", "zarr", "tiff")
TABLE_FORMATS = ("hdf5", "arrow", "parquet", "csv", "zarr")
FRAME_FORMATS = ("hdf5", "arrow", "parquet", "zarr", "tiff")
PER_STREAM = ("arrow", "parquet", "csv", "tiff")

CAMERA = "camera_1"
TABLE = "power_meter_01"
FRAME_SHAPE = (12, 16)
FRAME_BASE = 1000  # frame numbers are not ring seqs: the files must carry the ring's ids
T0 = 1_700_000_000_000_000_000
DT = 1_000_003


@dataclass
class Frames:
    """Frames read back: pixels ``(n, *FRAME_SHAPE)``, timestamps, frame numbers."""

    pixels: npt.NDArray[Any]
    timestamps_ns: npt.NDArray[np.uint64]
    frame_numbers: npt.NDArray[np.uint64]

    def __len__(self) -> int:
        return len(self.frame_numbers)


def expected_frames(indices: Iterable[int], shape: tuple[int, int] = FRAME_SHAPE) -> Frames:
    """The frames the producer wrote at ``indices``."""
    ids = np.fromiter(indices, dtype=np.int64)
    pixels = np.arange(shape[0] * shape[1], dtype=np.int64).reshape(shape)
    pixels = ((ids[:, None, None] * 7 + pixels) % 65521).astype(np.uint16)
    return Frames(pixels, (T0 + ids * DT).astype(np.uint64), (FRAME_BASE + ids).astype(np.uint64))


def expected_rows(indices: Iterable[int]) -> pa.Table:
    """The rows the producer wrote at ``indices`` (columns ``i``, ``v``)."""
    ids = np.fromiter(indices, dtype=np.int64)
    return pa.table({"i": ids, "v": ids / 4.0})


@contextlib.contextmanager
def ring_at(path: Path, **options: Any) -> Iterator[RingBuffer]:
    """A ring created at ``path`` (``RingBuffer.create`` options), this process its
    writer; afterwards the ring and every Recorder stats file beside it are removed (the
    daemon removes them with its ring; a test must too)."""
    ring = RingBuffer.create(path, **options)
    try:
        yield ring
    finally:
        ring.close()
        ring.unlink()
        for left in path.parent.glob(f"{path.name}.*"):
            left.unlink(missing_ok=True)


@dataclass
class Producer:
    """Writes camera frames and table batches into ``ring`` from this process, logging
    the ring seq of every record (the producer's side of ``written == stored + lost``)."""

    ring: RingBuffer
    rows_per_batch: int = 50
    frame_shape: tuple[int, int] = FRAME_SHAPE
    frames: int = 0  # frames written so far (the next frame's index)
    rows: int = 0
    #: stream -> [(seq, first index, count)] of every record written
    log: dict[str, list[tuple[int, int, int]]] = field(
        default_factory=lambda: {CAMERA: [], TABLE: []}
    )

    @property
    def records(self) -> int:
        return sum(len(entries) for entries in self.log.values())

    def write_frames(self, count: int) -> None:
        block = expected_frames(range(self.frames, self.frames + count), self.frame_shape)
        for k in range(count):
            seq = self.ring.write_frame(
                block.pixels[k],
                stream=CAMERA,
                timestamp_ns=int(block.timestamps_ns[k]),
                frame_number=int(block.frame_numbers[k]),
            )
            self.log[CAMERA].append((seq, self.frames, 1))
            self.frames += 1

    def write_rows(self, batches: int = 1) -> None:
        for _ in range(batches):
            table = expected_rows(range(self.rows, self.rows + self.rows_per_batch))
            seq = self.ring.write_batch(
                table.to_batches()[0], stream=TABLE, timestamp_ns=T0 + self.rows
            )
            self.log[TABLE].append((seq, self.rows, self.rows_per_batch))
            self.rows += self.rows_per_batch

    def write_group(self, frames: int = 4, batches: int = 1) -> None:
        """``frames`` frames and ``batches`` table batches, interleaved."""
        for _ in range(max(frames, batches)):
            if frames:
                self.write_frames(1)
                frames -= 1
            if batches:
                self.write_rows(1)
                batches -= 1

    def seqs(self, stream: str) -> list[int]:
        return [seq for seq, _, _ in self.log[stream]]


def wait_for_stats(
    ring: str | Path,
    consumer: str,
    condition: Callable[[RecorderStats], bool],
    *,
    timeout: float = 60.0,
) -> RecorderStats:
    """Poll the Recorder's stats file (as another process would) until ``condition``
    holds; the condition is the synchronisation, the short pause only spares the CPU."""
    deadline = time.monotonic() + timeout
    last: RecorderStats | None = None
    while True:
        try:
            last = read_stats(ring, consumer)
        except FileNotFoundError:
            last = None
        if last is not None and condition(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"the Recorder's stats never met the condition: {last}")
        time.sleep(0.005)


# ------------------------------------------------------------------------------ reading
def format_outputs(stats: RecorderStats, name: str) -> list[Path]:
    """The outputs format ``name`` made, in the order it made them: the file (HDF5), the
    store (Zarr) or the run directory of per-stream files (``files`` may name the
    directory or the files in it)."""
    outputs: dict[Path, None] = {}
    for text in stats.formats[name].files:
        path = Path(text)
        if name in PER_STREAM and not path.is_dir():
            path = path.parent
        elif name == "hdf5" and path.suffix != ".h5":
            continue  # a journal, if listed, belongs to its file
        outputs[path] = None
    return list(outputs)


def _json(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _hdf5_groups(file: h5py.File, stream: str) -> list[h5py.Group]:
    names = [stream, *sorted(k for k in file if k.startswith(f"{stream}__part"))]
    return [file[n] for n in names if n in file]


def _zarr_groups(root: zarr.Group, stream: str) -> list[zarr.Group]:
    keys = sorted(k for k in root.group_keys() if k == stream or k.startswith(f"{stream}__part"))
    return [root[k] for k in keys]  # type: ignore[misc]


def _zarr_values(group: zarr.Group, name: str) -> npt.NDArray[Any]:
    array = group[name]
    assert isinstance(array, zarr.Array), f"{group.path}/{name} is not an array"
    return np.asarray(array[...])


def read_frames(name: str, output: Path, stream: str = CAMERA) -> Frames:
    """Every frame of ``stream`` in ``output`` (parts included), with the reader a
    scientist uses: h5py, pyarrow, zarr, tifffile."""
    pixels: list[npt.NDArray[Any]] = []
    stamps: list[npt.NDArray[Any]] = []
    numbers: list[npt.NDArray[Any]] = []
    if name == "hdf5":
        with h5py.File(output, "r") as f:
            for g in _hdf5_groups(f, stream):
                pixels.append(g["frames"][()])
                stamps.append(g["timestamp_ns"][()])
                numbers.append(g["frame_number"][()])
    elif name == "zarr":
        root = zarr.open_group(output, mode="r")
        for g in _zarr_groups(root, stream):
            pixels.append(_zarr_values(g, "frames"))
            stamps.append(_zarr_values(g, "timestamp_ns").view(np.int64))
            numbers.append(_zarr_values(g, "frame_number"))
    elif name in ("arrow", "parquet"):
        for path in stream_files(name, output, stream):
            table = pa.ipc.open_stream(path).read_all() if name == "arrow" else pq.read_table(path)
            pixels.append(table.column("frame").combine_chunks().to_numpy_ndarray())
            stamps.append(table.column("timestamp_ns").cast(pa.int64()).to_numpy())
            numbers.append(table.column("frame_number").to_numpy())
    elif name == "tiff":
        for path in stream_files(name, output, stream):
            with tifffile.TiffFile(path) as tif:
                ids = [json.loads(page.description) for page in tif.pages]  # type: ignore[union-attr]
                shape = tif.pages[0].shape
                pixels.append(tif.series[0].asarray().reshape(len(ids), *shape))
            stamps.append(np.array([i["timestamp_ns"] for i in ids], np.uint64))
            numbers.append(np.array([i["frame_number"] for i in ids], np.uint64))
    else:
        raise ValueError(f"{name} holds no frames")
    if not pixels:
        return Frames(np.empty((0, 0, 0), np.uint16), np.empty(0, np.uint64),
                      np.empty(0, np.uint64))  # fmt: skip
    return Frames(
        np.concatenate(pixels),
        np.concatenate(stamps).astype(np.uint64),
        np.concatenate(numbers).astype(np.uint64),
    )


def read_rows(name: str, output: Path, stream: str = TABLE) -> pa.Table:
    """Columns ``i`` and ``v`` of every row of ``stream`` in ``output`` (parts included):
    h5py, zarr, pyarrow / polars as a scientist reads each format."""
    parts: list[pa.Table] = []
    if name == "hdf5":
        with h5py.File(output, "r") as f:
            for g in _hdf5_groups(f, stream):
                parts.append(pa.table({"i": g["i"][()], "v": g["v"][()]}))
    elif name == "zarr":
        root = zarr.open_group(output, mode="r")
        for g in _zarr_groups(root, stream):
            parts.append(pa.table({"i": _zarr_values(g, "i"), "v": _zarr_values(g, "v")}))
    else:
        for path in stream_files(name, output, stream):
            if name == "arrow":
                frame = pl.read_ipc_stream(path)
            elif name == "parquet":
                frame = pl.read_parquet(path)
            elif name == "csv":
                frame = pl.read_csv(path)
            else:
                raise ValueError(f"{name} holds no tables")
            parts.append(frame.select(["i", "v"]).to_arrow())
    if not parts:
        return expected_rows([])
    table = pa.concat_tables(
        [p.cast(pa.schema([("i", pa.int64()), ("v", pa.float64())])) for p in parts]
    )
    return table.combine_chunks()


def read_column(name: str, output: Path, stream: str, column: str) -> list[list[Any]]:
    """Column ``column`` of ``stream``, one list of Python values per part (HDF5 and
    Zarr part groups, per-stream part files), in part order."""
    parts: list[list[Any]] = []
    if name == "hdf5":
        with h5py.File(output, "r") as f:
            for g in _hdf5_groups(f, stream):
                values = g[column][()]
                parts.append([v.decode() if isinstance(v, bytes) else v.item() for v in values])
    elif name == "zarr":
        root = zarr.open_group(output, mode="r")
        parts = [_zarr_values(g, column).tolist() for g in _zarr_groups(root, stream)]
    else:
        for path in stream_files(name, output, stream):
            if name == "arrow":
                frame = pl.read_ipc_stream(path)
            elif name == "parquet":
                frame = pl.read_parquet(path)
            else:
                frame = pl.read_csv(path)
            parts.append(frame[column].to_list())
    return parts


def count_rows(name: str, output: Path, stream: str) -> int:
    """How many rows ``stream`` holds in ``output`` (parts included), whatever its
    columns: h5py, zarr, pyarrow / polars."""
    if name == "hdf5":
        with h5py.File(output, "r") as f:
            return sum(len(next(iter(g.values()))) for g in _hdf5_groups(f, stream))
    if name == "zarr":
        root = zarr.open_group(output, mode="r")
        total = 0
        for g in _zarr_groups(root, stream):
            array = next(iter(g.array_values()))
            total += array.shape[0]
        return total
    total = 0
    for path in stream_files(name, output, stream):
        if name == "arrow":
            total += pa.ipc.open_stream(path).read_all().num_rows
        elif name == "parquet":
            total += pq.read_metadata(path).num_rows
        else:
            total += pl.read_csv(path, infer_schema_length=0).height
    return total


def file_metadata(name: str, output: Path) -> list[dict[str, Any]]:
    """The file-level metadata of ``output``: one dict for a single-file format, one per
    stream file for the formats that keep a directory of per-stream files."""
    if name == "hdf5":
        with h5py.File(output, "r") as f:
            return [{k: _json(v) for k, v in f.attrs.items()}]
    if name == "zarr":
        return [{k: _json(v) for k, v in zarr.open_group(output, mode="r").attrs.items()}]
    if name == "csv":
        document = json.loads((output / "metadata.json").read_text())
        return [{k: _json(v) for k, v in document["file"].items()}]
    found: list[dict[str, Any]] = []
    suffix = {"arrow": ".arrows", "parquet": ".parquet", "tiff": ".tif"}[name]
    for path in sorted(output.glob(f"*{suffix}")):
        if name == "arrow":
            reader = pa.ipc.open_stream(path)
            raw = dict(reader.schema.metadata or {})
            for _, custom in reader.iter_batches_with_custom_metadata():
                raw.update(custom or {})
            found.append({k.decode(): _json(v) for k, v in raw.items()})
        elif name == "parquet":
            raw = pq.read_schema(path).metadata or {}
            found.append({k.decode(): _json(v) for k, v in raw.items()})
        else:  # the first page's metadata, updated by later pages' (set after it)
            merged: dict[str, Any] = {}
            with tifffile.TiffFile(path) as tif:
                for page in tif.pages:
                    description = page.description  # type: ignore[union-attr]
                    merged.update(json.loads(description).get("metadata", {}))
            found.append({k: _json(v) for k, v in merged.items()})
    return found


def read_ledger(name: str, output: Path) -> tuple[list[dict[str, int]], int]:
    """The loss ledger and ``lost_records`` of one output. Every stream file of a
    directory format must carry the same ledger (file-level metadata goes to each)."""
    documents = file_metadata(name, output)
    assert documents, f"{output}: no file to read the loss ledger from"
    ledgers = []
    for document in documents:
        assert "loss_ledger" in document, f"{name} {output}: no loss_ledger in {document}"
        assert "lost_records" in document, f"{name} {output}: no lost_records in {document}"
        ledgers.append((document["loss_ledger"], int(document["lost_records"])))
    assert all(item == ledgers[0] for item in ledgers), f"{output}: ledgers differ: {ledgers}"
    ledger, lost = ledgers[0]
    assert isinstance(ledger, list), ledger
    assert lost == sum(int(gap["count"]) for gap in ledger), (ledger, lost)
    return ledger, lost


def frame_indices(frames: Frames) -> list[int]:
    """The producer's frame indices of frames read back (from their frame numbers)."""
    return [int(n) - FRAME_BASE for n in frames.frame_numbers]


def check_frames(
    frames: Frames, indices: list[int], where: str, shape: tuple[int, int] = FRAME_SHAPE
) -> None:
    """``frames`` are exactly the producer's frames at ``indices``."""
    assert frame_indices(frames) == indices, where
    if not indices:
        return
    expected = expected_frames(indices, shape)
    np.testing.assert_array_equal(frames.pixels, expected.pixels, err_msg=where)
    np.testing.assert_array_equal(frames.timestamps_ns, expected.timestamps_ns, err_msg=where)


def check_rows(rows: pa.Table, indices: list[int], where: str) -> None:
    """``rows`` are exactly the producer's rows at ``indices``."""
    assert rows.column("i").to_pylist() == indices, where
    assert rows.equals(expected_rows(indices)), where
