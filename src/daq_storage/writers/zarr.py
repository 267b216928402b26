"""Zarr V3 (zarr-python 3): one store, a group per stream, named dimensions for xarray.

```
run.zarr/                attrs: <set_metadata values>
├── <table stream>/      attrs: the schema metadata of its first batch, metadata_changes,
│   │                    instrument_id, rows, <set_metadata values>
│   ├── <column>         (row, ...) one array per column (struct fields as parent.child);
│   │                    attrs: arrow_type, the field's metadata (units, scale_factor, ...)
│   └── <column>.valid   bool, only for columns that have had nulls or gaps
└── <frame stream>/      attrs: instrument_id, <set_metadata values>
    ├── frames           (frame, y, x); coordinates: timestamp_ns, frame_number
    ├── timestamp_ns     (frame,) uint64 nanoseconds since the epoch (CF units, calendar)
    └── frame_number     (frame,) uint64
```

``xr.open_zarr(store, group=<stream>)`` reads each group through its consolidated
metadata (written at every flush and at close), variables in the order of the stream's
columns; timestamp columns (and frames' ``timestamp_ns``) decode to dates and are
coordinates of ``row`` (``frame``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import zarr
import zarr.codecs

from daq_storage.errors import ConfigError, SchemaMismatch, UnsupportedData
from daq_storage.schema import (
    METADATA_CHANGES,
    FrameBlock,
    flatten_batch,
    join_frames,
    time_attrs,
)
from daq_storage.writers._base import Writer, json_value, storage_errors
from daq_storage.writers._chunks import (
    ChunkEncode,
    blosc_encoder,
    run_parallel,
    split_frames,
)
from daq_storage.writers._zarr_metadata import write_group_metadata
from daq_storage.writers._zarr_streams import (
    FrameArrays,
    TableArrays,
    rows_of,
    storage_kind,
)

__all__ = ["ZarrWriter"]

_COMPRESSIONS = ("none", "blosc-lz4", "blosc-zstd", "zstd", "gzip")
_TABLE_CHUNK_ROWS = 65536
_ID_CHUNK = 4096
_BLOCK = 4096  # the least a file takes on disk
_FRAME_ARRAYS = ("frames", "timestamp_ns", "frame_number")
#: The frames' ids are coordinates of the "frame" dimension (CF, as xarray decodes it).
_FRAME_COORDINATES: dict[str, Any] = {"coordinates": "timestamp_ns frame_number"}


def _compressors(compression: str, level: int) -> Any:
    if compression == "none":
        return None
    if compression.startswith("blosc-"):
        cname: Any = compression.removeprefix("blosc-")
        return zarr.codecs.BloscCodec(cname=cname, clevel=level, shuffle="shuffle")
    if compression == "zstd":
        return zarr.codecs.ZstdCodec(level=level)
    return zarr.codecs.GzipCodec(level=level)


class ZarrWriter(Writer):
    """A Zarr V3 directory store.

    Frame streams become ``<stream>/frames`` ``(frame, y, x)`` plus ``timestamp_ns`` and
    ``frame_number`` along ``frame``; table streams become one array per column along
    ``row`` (a ``<column>.valid`` mask beside columns with nulls or gaps). Rows are
    buffered into whole chunks and frames into whole shards (or chunks); with blosc
    and sharding, shards are compressed on a thread pool and written as whole objects,
    as acquire-zarr does. Everything, metadata included, is visible to readers after
    :meth:`flush` (and :meth:`close`), when each group's consolidated metadata is
    written: a reader sees the store as of the last flush. The seeds' builder is here
    too: :meth:`create_array` and :meth:`write_chunk`.

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
    path_suffix: ClassVar[str] = ".zarr"
    removes_unused_output: ClassVar[bool] = True

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
            self._claim_directory(self.path)
            self._root = zarr.open_group(zarr.storage.LocalStore(self.path), mode="a")
        self._add_file(self.path)
        self._tables: dict[str, TableArrays] = {}
        self._frame_streams: dict[str, FrameArrays] = {}
        #: group path ("" for the root) -> attributes written at the next flush: ours,
        #: then set_metadata's
        self._attributes: dict[str, dict[str, Any]] = {}
        self._user_attributes: dict[str, dict[str, Any]] = {"": {}}
        self._order: dict[str, list[str]] = {"": []}  # children in the order they came
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
        self._stored = True
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
            dtype, inner = storage_kind(column)
            if known is not None and (known[0], known[1]) != (dtype, inner):
                raise SchemaMismatch(
                    f"stream {stream!r} column {column.name!r}: stored as "
                    f"{known[2].get('arrow_type', known[0])} {known[1] or ''}, got "
                    f"{column.attrs.get('arrow_type', dtype)} {inner or ''}".rstrip()
                )
        new = [c for c in columns if c.name not in table.kinds]
        for column in new:
            table.kinds[column.name] = (*storage_kind(column), column.attrs)
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
        self._observe_metadata(stream, batch)
        self._stats.batches += 1
        self._stats.rows += batch.num_rows
        self._stats.bytes_written += batch.nbytes

    def _table(self, stream: str) -> TableArrays:
        table = self._tables.get(stream)
        if table is None:
            safe = self._safe_stream(stream)
            with storage_errors(self.path, f"cannot create stream {stream!r}"):
                group = self._root.require_group(safe)
            self._new_group(safe, {"instrument_id": stream, "rows": 0})
            table = self._tables[stream] = TableArrays(group)
        return table

    def _new_group(self, safe: str, attributes: dict[str, Any]) -> None:
        """Note a stream's group: its attributes and its place in the root's order."""
        self._attributes[safe] = attributes
        if safe not in self._order[""]:
            self._order[""].append(safe)

    def _commit_rows(self, stream: str, table: TableArrays, count: int) -> None:
        """Write the first ``count`` pending rows to the arrays (making those of new
        columns, even with no rows: a stream of empty batches has its columns); keep the
        rest pending."""
        if count <= 0 and all(name in table.arrays for name in table.kinds):
            return
        start, end = table.rows, table.rows + count
        created = [name for name in table.kinds if name not in table.arrays]
        had_masks = set(table.masks)
        try:
            for name in created:
                table.arrays[name] = self._column_array(table, name, start)
            merged = table.merged_pending()
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
            [(rest, {n: rows_of(table.kinds[n], v, m, count) for n, (v, m) in merged.items()})]
            if rest
            else []
        )
        table.pending_rows = rest
        table.rows = end
        self._attributes[self._safe_stream(stream)]["rows"] = end

    def _column_array(self, table: TableArrays, name: str, rows: int) -> zarr.Array[Any]:
        dtype, inner, attrs = table.kinds[name]
        chunks = (self.chunk_size or _TABLE_CHUNK_ROWS, *inner)
        # Timestamp columns are coordinates of "row" (CF: named by the other columns).
        times = [
            other
            for other, (_, _, other_attrs) in table.kinds.items()
            if str(other_attrs.get("arrow_type", "")).startswith("timestamp") and " " not in other
        ]
        if times and name not in times:
            attrs = {**attrs, "coordinates": " ".join(times)}
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

    def _mask_array(
        self, table: TableArrays, name: str, rows: int, earlier: bool
    ) -> zarr.Array[Any]:
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
        self._stored = True
        self._stats.frames += len(frames)
        self._stats.bytes_written += frames.nbytes

    def _frames(self, stream: str, block: FrameBlock) -> FrameArrays:
        target = self._frame_streams.get(stream)
        if target is not None:
            return target
        safe = self._safe_stream(stream)
        group = self._root.require_group(safe)
        self._new_group(safe, {"instrument_id": stream})
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
                dimension_names=names, fill_value=0, attributes=_FRAME_COORDINATES,
            )  # fmt: skip
        else:
            frames = group.create_array(
                "frames", shape=(0, *shape), chunks=(per_chunk, *shape),
                shards=None if self.shard_frames is None else (self.shard_frames, *shape),
                dtype=block.frames.dtype, dimension_names=names,
                compressors=self._compressors, fill_value=0, attributes=_FRAME_COORDINATES,
            )  # fmt: skip
        stamps, numbers = (
            group.create_array(name, shape=(0,), chunks=(_ID_CHUNK,), dtype=np.uint64,
                               dimension_names=["frame"])
            for name in ("timestamp_ns", "frame_number")
        )  # fmt: skip
        stamps.attrs.update(time_attrs("ns"))
        folder = self.path / self._safe_stream(stream) / "frames" / "c"
        target = self._frame_streams[stream] = FrameArrays(folder, frames, stamps, numbers)
        return target

    def _write_through_zarr(self, target: FrameArrays, block: FrameBlock) -> None:
        """zarr-python encodes and writes (partial shards, codecs without an encoder here)."""
        self._store_shards(target)
        start, end = target.length, target.length + len(block.frames)
        target.frames.resize((end, *target.frames.shape[1:]))
        target.frames[start:end] = block.frames
        target.length = end
        self._add_ids(target, block)

    def _add_ids(self, target: FrameArrays, block: FrameBlock) -> None:
        target.ids.add(block)
        if len(target.ids) >= _ID_CHUNK:
            self._publish(target)

    def _encode_shards(self, target: FrameArrays, ready: FrameBlock) -> None:
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
    def _store_shards(target: FrameArrays) -> None:
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

    def _publish(self, target: FrameArrays) -> None:
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
        """A Zarr attribute (JSON) of the root group or of the stream's group, written at
        the next :meth:`flush` (or :meth:`close`) with the group's consolidated metadata."""
        self._check_open()
        value = json.loads(json_value(value, what=f"metadata {key!r}"))
        where = ""
        if stream is not None:
            where = self._safe_stream(stream)
            if where not in self._attributes:
                with storage_errors(self.path, f"cannot store metadata {key!r}"):
                    self._root.require_group(where)
                self._new_group(where, {"instrument_id": stream})
        self._user_attributes.setdefault(where, {})[key] = value
        self._stored = True

    def _write_metadata(self) -> None:
        """Every group's attributes and consolidated metadata (see ``_zarr_metadata``)."""
        attributes: dict[str, dict[str, Any]] = {}
        order = dict(self._order)
        for safe, ours in self._attributes.items():
            attributes[safe] = dict(ours)
        for stream, table in self._tables.items():
            safe = self._safe_stream(stream)
            order[safe] = [n for name in table.kinds for n in (name, f"{name}.valid")]
            tracked = self._table_metadata.get(stream)
            if tracked is not None:
                described = dict(tracked.first or {})
                if tracked.changes:
                    described[METADATA_CHANGES] = tracked.changes
                attributes[safe] = {**described, **attributes[safe]}
        for stream in self._frame_streams:
            order[self._safe_stream(stream)] = list(_FRAME_ARRAYS)
        for where, values in self._user_attributes.items():
            attributes[where] = {**attributes.get(where, {}), **values}
        write_group_metadata(self.path, attributes, order)

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
            self._write_metadata()

    def _close(self) -> None:
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None


def _array(group: zarr.Group, name: str) -> zarr.Array[Any]:
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise SchemaMismatch(f"zarr node {name!r} is a group, not an array")
    return node
