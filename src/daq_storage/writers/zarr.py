"""Zarr V3 (zarr-python 3): one store, a group per stream, named dimensions for xarray.

```
run.zarr/
├── <table stream>/      attrs: instrument_id, rows
│   ├── <column>         (row, ...) one array per column (struct fields as parent.child)
│   └── <column>.valid   bool, only for columns that have had nulls or gaps
└── <frame stream>/      attrs: instrument_id
    ├── frames           (frame, y, x)
    ├── timestamp_ns     (frame,) uint64
    └── frame_number     (frame,) uint64
```
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import zarr
import zarr.codecs

from daq_storage.errors import ConfigError, SchemaMismatch, UnsupportedData
from daq_storage.schema import Column, FrameBlock, flatten_batch, join_frames
from daq_storage.writers._base import Writer, json_value, storage_errors
from daq_storage.writers._chunks import (
    ChunkEncode,
    FrameIds,
    blosc_encoder,
    run_parallel,
    split_frames,
)

__all__ = ["ZarrWriter"]

_COMPRESSIONS = ("none", "blosc-lz4", "blosc-zstd", "zstd", "gzip")
_TABLE_CHUNK_ROWS = 65536
_ID_CHUNK = 4096
_BLOCK = 4096  # the least a file takes on disk


def _compressors(compression: str, level: int) -> Any:
    if compression == "none":
        return None
    if compression.startswith("blosc-"):
        cname: Any = compression.removeprefix("blosc-")
        return zarr.codecs.BloscCodec(cname=cname, clevel=level, shuffle="shuffle")
    if compression == "zstd":
        return zarr.codecs.ZstdCodec(level=level)
    return zarr.codecs.GzipCodec(level=level)


@dataclass
class _Frames:
    """A frame stream's arrays (handles kept: looking them up costs more than a shard)
    and the frames on their way to them."""

    folder: Path  # the frames array's chunk folder
    frames: zarr.Array[Any]
    timestamps: zarr.Array[Any]
    numbers: zarr.Array[Any]
    length: int = 0  # frames stored in the store, visible or not
    #: frames short of a whole shard (or chunk), copied: the caller may reuse its array
    partial: FrameBlock | None = None
    #: compressed shards waiting for their file write: (shard index, inner chunk bytes)
    encoded: list[tuple[int, list[bytes]]] = field(default_factory=list)
    #: ids of stored frames not yet in the id arrays
    ids: FrameIds = field(default_factory=lambda: FrameIds(0))


@dataclass
class _Table:
    """A table stream's arrays and the rows waiting to fill whole chunks."""

    group: zarr.Group
    arrays: dict[str, zarr.Array[Any]] = field(default_factory=dict)
    masks: dict[str, zarr.Array[Any]] = field(default_factory=dict)
    #: the column's storage dtype and inner shape, fixed by its first batch
    kinds: dict[str, tuple[np.dtype[Any], tuple[int, ...], dict[str, str]]] = field(
        default_factory=dict
    )
    rows: int = 0  # rows in the arrays
    pending: list[tuple[int, dict[str, Column]]] = field(default_factory=list)
    pending_rows: int = 0


class ZarrWriter(Writer):
    """A Zarr V3 directory store.

    Frame streams become ``<stream>/frames`` ``(frame, y, x)`` plus ``timestamp_ns`` and
    ``frame_number`` along ``frame``; table streams become one array per column along
    ``row`` (a ``<column>.valid`` mask beside columns with nulls or gaps). Rows are
    buffered into whole chunks and frames into whole shards (or chunks); with blosc
    and sharding, shards are compressed on a thread pool and written as whole objects,
    as acquire-zarr does. Everything is visible to readers after :meth:`flush` (and
    :meth:`close`). The seeds' builder is here too: :meth:`create_array` and
    :meth:`write_chunk`.

    Args:
        path: the store directory (created; an existing non-empty one is refused).
        compression: ``blosc-lz4`` (default), ``blosc-zstd``, ``zstd``, ``gzip``, ``none``.
        compression_level: codec level.
        chunk_size: rows per chunk for tables (default 65536).
        frames_per_chunk: frames per chunk for images (default 1).
        shard_frames: frames per shard, a multiple of ``frames_per_chunk`` (default:
            no sharding, one object per chunk).
        threads: compression threads for sharded blosc frames (default: CPU count).
    """

    name: ClassVar[str] = "zarr"
    suffixes: ClassVar[tuple[str, ...]] = (".zarr",)
    supports_frames: ClassVar[bool] = True
    supports_tables: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compression: str = "blosc-lz4",
        compression_level: int = 5,
        chunk_size: int | None = None,
        frames_per_chunk: int = 1,
        shard_frames: int | None = None,
        threads: int | None = None,
    ) -> None:
        if compression not in _COMPRESSIONS:
            raise ConfigError(f"zarr compression {compression!r} is not one of {_COMPRESSIONS}")
        if chunk_size is not None and chunk_size < 1:
            raise ConfigError(f"zarr chunk_size must be >= 1, got {chunk_size}")
        if frames_per_chunk < 1:
            raise ConfigError(f"zarr frames_per_chunk must be >= 1, got {frames_per_chunk}")
        if shard_frames is not None and (shard_frames < 1 or shard_frames % frames_per_chunk):
            raise ConfigError(
                f"zarr shard_frames ({shard_frames}) must be a positive multiple of "
                f"frames_per_chunk ({frames_per_chunk})"
            )
        super().__init__(path)
        self.compression = compression
        self.compression_level = compression_level
        self.chunk_size = chunk_size
        self.frames_per_chunk = frames_per_chunk
        self.shard_frames = shard_frames
        self._compressors = _compressors(compression, compression_level)
        with storage_errors(self.path, "cannot create Zarr store"):
            if self.path.exists() and any(self.path.iterdir()):
                raise FileExistsError(17, "File exists (a non-empty store is never overwritten)")
            self._root = zarr.open_group(zarr.storage.LocalStore(self.path), mode="a")
        self._add_file(self.path)
        self._tables: dict[str, _Table] = {}
        self._frame_streams: dict[str, _Frames] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._threads = threads or os.cpu_count() or 1
        self._encode: ChunkEncode | None = None
        if compression.startswith("blosc-") and shard_frames is not None:
            self._encode = blosc_encoder(compression.removeprefix("blosc-"), compression_level)

    # ------------------------------------------------------------------ seeds' builder
    def create_array(
        self,
        name: str,
        shape: Sequence[int],
        chunks: Sequence[int],
        *,
        shards: Sequence[int] | None = None,
        dimension_names: Sequence[str] | None = None,
        dtype: npt.DTypeLike = np.uint16,
        compressors: Any = "default",
        fill_value: Any = 0,
        attributes: dict[str, Any] | None = None,
    ) -> zarr.Array[Any]:
        """Create an N-d array (e.g. wavelength, position, y, x) for :meth:`write_chunk`."""
        self._check_open()
        parts = [self._safe_stream(p) for p in name.split("/")]
        with storage_errors(self.path, f"cannot create array {name!r}"):
            return self._root.create_array(
                "/".join(parts), shape=tuple(shape), chunks=tuple(chunks),
                shards=None if shards is None else tuple(shards), dtype=dtype,
                dimension_names=None if dimension_names is None else list(dimension_names),
                compressors=self._compressors if compressors == "default" else compressors,
                fill_value=fill_value, attributes=attributes or {},
            )  # fmt: skip

    def write_chunk(self, name: str, coords: Sequence[int], data: npt.ArrayLike) -> None:
        """Write ``data`` into array ``name`` starting at element ``coords``."""
        self._check_open()
        array = _array(self._root, "/".join(self._safe_stream(p) for p in name.split("/")))
        values = np.asarray(data)
        if len(coords) != array.ndim or values.ndim != array.ndim:
            raise SchemaMismatch(
                f"array {name!r} has {array.ndim} dimensions; got coords {list(coords)} and "
                f"data of shape {values.shape}"
            )
        region = tuple(slice(c, c + s) for c, s in zip(coords, values.shape, strict=True))
        if any(r.start < 0 or r.stop > n for r, n in zip(region, array.shape, strict=True)):
            raise SchemaMismatch(
                f"array {name!r} of shape {array.shape}: data {values.shape} at {list(coords)} "
                "does not fit"
            )
        self._ensure_room(values.nbytes, f"array {name!r}", self.path)
        with storage_errors(self.path, f"cannot write to array {name!r}"):
            array[region] = values
        self._stats.bytes_written += values.nbytes

    # ------------------------------------------------------------------ tables
    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        """Append ``batch`` to ``stream``'s column arrays (buffered to whole chunks).

        A column absent from a batch is null there; a new column is null for earlier
        rows; nulls are filled (0, NaN, ``""``) and marked in ``<column>.valid``.
        """
        batch = self._check_batch(stream, batch)
        if stream in self._frame_streams:
            raise SchemaMismatch(f"stream {stream!r} holds frames; tables go to another stream")
        columns = flatten_batch(batch, stream=stream)
        # Every chunk is a file, and a file takes at least a disk block.
        chunks = len(columns) * (batch.num_rows // (self.chunk_size or _TABLE_CHUNK_ROWS) + 1)
        self._ensure_room(batch.nbytes + chunks * _BLOCK, f"stream {stream!r}", self.path)
        table = self._table(stream)
        for column in columns:  # check everything before accepting anything
            if column.kind == "vlen":
                raise UnsupportedData(
                    f"zarr: stream {stream!r} column {column.name!r} is a variable-length "
                    "list; zarr arrays are rectangular (use hdf5, arrow or parquet)"
                )
            known = table.kinds.get(column.name)
            dtype, inner = _storage_kind(column)
            if known is not None and (known[0], known[1]) != (dtype, inner):
                raise SchemaMismatch(
                    f"stream {stream!r} column {column.name!r}: stored as "
                    f"{known[2].get('arrow_type', known[0])} {known[1] or ''}, got "
                    f"{column.attrs.get('arrow_type', dtype)} {inner or ''}".rstrip()
                )
        new = [c for c in columns if c.name not in table.kinds]
        for column in new:
            table.kinds[column.name] = (*_storage_kind(column), column.attrs)
        table.pending.append((batch.num_rows, {c.name: c for c in columns}))
        table.pending_rows += batch.num_rows
        chunk_rows = self.chunk_size or _TABLE_CHUNK_ROWS
        if table.pending_rows >= chunk_rows:
            aligned = table.rows + table.pending_rows
            count = aligned - aligned % chunk_rows - table.rows
            try:
                with storage_errors(self.path, f"cannot write stream {stream!r}"):
                    self._commit_rows(stream, table, count)
            except BaseException:  # this batch is refused; rows accepted before stay pending
                table.pending.pop()
                table.pending_rows -= batch.num_rows
                for column in new:
                    del table.kinds[column.name]
                raise
        self._stats.batches += 1
        self._stats.rows += batch.num_rows
        self._stats.bytes_written += batch.nbytes

    def _table(self, stream: str) -> _Table:
        table = self._tables.get(stream)
        if table is None:
            with storage_errors(self.path, f"cannot create stream {stream!r}"):
                group = self._root.require_group(self._safe_stream(stream))
                group.attrs.update({"instrument_id": stream, "rows": 0})
            table = self._tables[stream] = _Table(group)
        return table

    def _commit_rows(self, stream: str, table: _Table, count: int) -> None:
        """Write the first ``count`` pending rows to the arrays; keep the rest pending."""
        if count <= 0:
            return
        start, end = table.rows, table.rows + count
        created = [name for name in table.kinds if name not in table.arrays]
        had_masks = set(table.masks)
        try:
            for name in created:
                table.arrays[name] = self._column_array(table, name, start)
            merged = self._merged_pending(table)
            for name, (values, validity) in merged.items():
                array = table.arrays[name]
                array.resize((end, *array.shape[1:]))
                array[start:end] = values[:count]
                if validity is not None:
                    mask = table.masks.get(name)
                    if mask is None:  # first null: every earlier row held a value
                        mask = table.masks[name] = self._mask_array(table, name, start, True)
                    mask.resize((end,))
                    mask[start:end] = validity[:count]
            table.group.attrs["rows"] = end
        except BaseException:
            # Nothing counts as written: arrays made now go, the rest are cut back at the
            # next commit (which writes from the same row), and every row stays pending.
            with contextlib.suppress(Exception):
                for name in [*created, *(f"{n}.valid" for n in set(table.masks) - had_masks)]:
                    if name in table.group:
                        del table.group[name]
            for name in created:
                table.arrays.pop(name, None)
            for name in set(table.masks) - had_masks:
                del table.masks[name]
            raise
        rest = table.pending_rows - count
        table.pending = (
            [(rest, {n: _rows_of(table.kinds[n], v, m, count) for n, (v, m) in merged.items()})]
            if rest
            else []
        )
        table.pending_rows = rest
        table.rows = end

    @staticmethod
    def _merged_pending(
        table: _Table,
    ) -> dict[str, tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]]:
        """Every column's pending rows as one array (missing columns filled) and its
        validity (``None`` when the column has no nulls, gaps or mask)."""
        merged: dict[str, tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]] = {}
        for name, (dtype, inner, _) in table.kinds.items():
            parts: list[npt.NDArray[Any]] = []
            valid: list[npt.NDArray[np.bool_]] = []
            gaps = False
            for rows, columns in table.pending:
                column = columns.get(name)
                if column is None:
                    parts.append(_filled(rows, dtype, inner))
                    valid.append(np.zeros(rows, bool))
                    gaps = True
                else:
                    parts.append(column.values.astype(dtype, copy=False))
                    valid.append(np.ones(rows, bool) if column.valid is None else column.valid)
                    gaps = gaps or column.valid is not None
            merged[name] = (
                np.concatenate(parts) if len(parts) > 1 else parts[0],
                np.concatenate(valid) if gaps or name in table.masks else None,
            )
        return merged

    def _column_array(self, table: _Table, name: str, rows: int) -> zarr.Array[Any]:
        dtype, inner, attrs = table.kinds[name]
        chunks = (self.chunk_size or _TABLE_CHUNK_ROWS, *inner)
        array = table.group.create_array(
            name, shape=(rows, *inner), chunks=chunks,
            dtype=str if dtype.kind == "O" else dtype,
            dimension_names=["row", *(f"{name}_{i}" for i in range(len(inner)))],
            compressors=self._compressors, attributes=dict(attrs),
            fill_value="" if dtype.kind == "O" else (np.nan if dtype.kind == "f" else 0),
        )  # fmt: skip
        if rows:  # a column that appears mid-run: earlier rows are null
            table.masks[name] = self._mask_array(table, name, rows, False)
        return array

    def _mask_array(self, table: _Table, name: str, rows: int, earlier: bool) -> zarr.Array[Any]:
        """``<name>.valid``: True where the column holds a value; ``earlier`` for the
        ``rows`` rows written before the mask existed."""
        return table.group.create_array(
            f"{name}.valid", shape=(rows,), chunks=(self.chunk_size or _TABLE_CHUNK_ROWS,),
            dtype=bool, dimension_names=["row"], compressors=self._compressors,
            fill_value=earlier, attributes={
                "meaning": f"True where {name} holds a value; False where it is null"},
        )  # fmt: skip

    # ------------------------------------------------------------------ frames
    def write_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any],
        *,
        timestamps_ns: npt.ArrayLike | None = None,
        frame_numbers: npt.ArrayLike | None = None,
    ) -> None:
        """Append frames to ``<stream>/frames`` and their ids to ``timestamp_ns`` and
        ``frame_number``, a whole shard (or chunk) at a time; the rest waits (copied)
        for the next call or :meth:`flush`."""
        if stream in self._tables:
            raise SchemaMismatch(f"stream {stream!r} holds a table; frames go to another stream")
        block = self._check_frames(stream, frames, timestamps_ns, frame_numbers)
        objects = len(block.frames) // (self.shard_frames or self.frames_per_chunk) + 1
        self._ensure_room(block.frames.nbytes + objects * _BLOCK,
                          f"frames of stream {stream!r}", self.path)  # fmt: skip
        with storage_errors(self.path, f"cannot write frames of stream {stream!r}"):
            target = self._frames(stream, block)
            if target.partial is not None:
                block = join_frames([target.partial, block])
                target.partial = None
            unit = self.shard_frames or self.frames_per_chunk
            head, whole, rest = split_frames(block, target.length, unit)
            if len(head):  # completes the partial shard a flush wrote
                self._write_through_zarr(target, head)
            if len(whole):
                if self._encode is None:
                    self._write_through_zarr(target, whole)
                else:
                    self._encode_shards(target, whole)
            if len(rest):  # copied: the caller may reuse its array
                target.partial = rest.copy()
        self._stats.frames += len(frames)
        self._stats.bytes_written += frames.nbytes

    def _frames(self, stream: str, block: FrameBlock) -> _Frames:
        target = self._frame_streams.get(stream)
        if target is not None:
            return target
        group = self._root.require_group(self._safe_stream(stream))
        group.attrs["instrument_id"] = stream
        shape = block.frames.shape[1:]
        per_chunk = self.frames_per_chunk
        names = (["frame", "y", "x"] if len(shape) == 2
                 else ["frame", *(f"dim_{i}" for i in range(1, 1 + len(shape)))])  # fmt: skip
        if self._encode is not None:
            # Our own shard objects: the inner chunks' codecs and a plain (crc-free) index.
            assert self.shard_frames is not None
            serializer = zarr.codecs.ShardingCodec(
                chunk_shape=(per_chunk, *shape),
                codecs=[zarr.codecs.BytesCodec(), self._compressors],
                index_codecs=[zarr.codecs.BytesCodec()],
            )
            frames = group.create_array(
                "frames", shape=(0, *shape), chunks=(self.shard_frames, *shape),
                serializer=serializer, compressors=None, dtype=block.frames.dtype,
                dimension_names=names, fill_value=0,
            )  # fmt: skip
        else:
            frames = group.create_array(
                "frames", shape=(0, *shape), chunks=(per_chunk, *shape),
                shards=None if self.shard_frames is None else (self.shard_frames, *shape),
                dtype=block.frames.dtype, dimension_names=names,
                compressors=self._compressors, fill_value=0,
            )  # fmt: skip
        stamps, numbers = (
            group.create_array(name, shape=(0,), chunks=(_ID_CHUNK,), dtype=np.uint64,
                               dimension_names=["frame"])
            for name in ("timestamp_ns", "frame_number")
        )  # fmt: skip
        stamps.attrs["unit"] = "ns"
        folder = self.path / self._safe_stream(stream) / "frames" / "c"
        target = self._frame_streams[stream] = _Frames(folder, frames, stamps, numbers)
        return target

    def _write_through_zarr(self, target: _Frames, block: FrameBlock) -> None:
        """zarr-python encodes and writes (partial shards, codecs without an encoder here)."""
        self._store_shards(target)
        start, end = target.length, target.length + len(block.frames)
        target.frames.resize((end, *target.frames.shape[1:]))
        target.frames[start:end] = block.frames
        target.length = end
        self._add_ids(target, block)

    def _add_ids(self, target: _Frames, block: FrameBlock) -> None:
        target.ids.add(block)
        if len(target.ids) >= _ID_CHUNK:
            self._publish(target)

    def _encode_shards(self, target: _Frames, ready: FrameBlock) -> None:
        """Compress the shards' inner chunks on the pool while the previous call's shards
        are written; keep this call's for the next call (or flush)."""
        assert self.shard_frames is not None
        assert self._encode is not None
        per_chunk = self.frames_per_chunk
        count = len(ready.frames)
        inner = [ready.frames[i : i + per_chunk] for i in range(0, count, per_chunk)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="daq_storage_zarr")
        encode = self._encode
        encoded = run_parallel(self._pool, [functools.partial(encode, c) for c in inner],
                               meanwhile=lambda: self._store_shards(target))  # fmt: skip
        per_shard = self.shard_frames // per_chunk
        first_shard = target.length // self.shard_frames
        for k in range(count // self.shard_frames):
            target.encoded.append((first_shard + k, encoded[k * per_shard : (k + 1) * per_shard]))
        target.length += count
        self._add_ids(target, ready)

    @staticmethod
    def _store_shards(target: _Frames) -> None:
        """Write the compressed shards as whole objects (temporary name, then renamed:
        readers never see half a shard)."""
        trailing = "/".join(["0"] * (target.frames.ndim - 1))
        while target.encoded:
            shard, parts = target.encoded[0]
            sizes = [len(p) for p in parts]
            offsets = np.cumsum([0, *sizes[:-1]], dtype=np.uint64)
            index = np.column_stack([offsets, sizes]).astype("<u8")
            key = target.folder / str(shard) / trailing
            key.parent.mkdir(parents=True, exist_ok=True)
            temporary = key.with_name(key.name + ".partial")
            with temporary.open("wb") as handle:
                handle.writelines([*parts, index.tobytes()])
            temporary.replace(key)
            target.encoded.pop(0)

    def _publish(self, target: _Frames) -> None:
        """Make every stored frame visible: shard objects, the array's shape, the ids."""
        self._store_shards(target)
        if target.frames.shape[0] < target.length:
            target.frames.resize((target.length, *target.frames.shape[1:]))
        pending = target.ids.pending()
        if pending is not None:
            start, stamps, numbers = pending
            end = start + len(stamps)
            for array, values in ((target.timestamps, stamps), (target.numbers, numbers)):
                array.resize((end,))
                array[start:end] = values
            target.ids.written()

    # ------------------------------------------------------------------ metadata, lifecycle
    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        """A Zarr attribute (JSON) of the root group or of the stream's group."""
        self._check_open()
        text = json_value(value, what=f"metadata {key!r}")
        with storage_errors(self.path, f"cannot store metadata {key!r}"):
            target = (
                self._root
                if stream is None
                else self._root.require_group(self._safe_stream(stream))
            )
            target.attrs[key] = json.loads(text)

    def flush(self) -> None:
        """Write everything buffered (a partial shard or chunk as it is) and make it visible."""
        self._check_open()
        with storage_errors(self.path, "cannot flush Zarr store"):
            for stream, table in self._tables.items():
                self._commit_rows(stream, table, table.pending_rows)
            for target in self._frame_streams.values():
                if target.partial is not None:
                    partial, target.partial = target.partial, None
                    self._write_through_zarr(target, partial)
                self._publish(target)

    def _close(self) -> None:
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None


def _storage_kind(column: Column) -> tuple[np.dtype[Any], tuple[int, ...]]:
    dtype = np.dtype(object) if column.kind == "string" else column.values.dtype
    return dtype, tuple(column.values.shape[1:])


def _filled(rows: int, dtype: np.dtype[Any], inner: tuple[int, ...]) -> npt.NDArray[Any]:
    if dtype.kind == "O":
        return np.full((rows, *inner), "", dtype=object)
    return np.full((rows, *inner), np.nan if dtype.kind == "f" else 0, dtype=dtype)


def _rows_of(
    kind: tuple[np.dtype[Any], tuple[int, ...], dict[str, str]],
    values: npt.NDArray[Any],
    valid: npt.NDArray[np.bool_] | None,
    start: int,
) -> Column:
    """Rows ``start:`` of a merged column, as a pending column."""
    dtype = kind[0]
    return Column("", values[start:], None if valid is None else valid[start:],
                  "string" if dtype.kind == "O" else "fixed", kind[2])  # fmt: skip


def _array(group: zarr.Group, name: str) -> zarr.Array[Any]:
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise SchemaMismatch(f"zarr node {name!r} is a group, not an array")
    return node
