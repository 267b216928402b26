"""Zarr V3 (zarr-python 3): one store, a group per stream, named dimensions for xarray.

```
run.zarr/                attrs: <set_metadata values>
├── <table stream>/      attrs: the schema metadata of its first batch, metadata_changes,
│   │                    instrument_id, rows, <set_metadata values>
│   ├── <column>         (row, ...) one array per column (struct fields as parent.child);
│   │                    attrs: arrow_type, the field's metadata (units, scale_factor, ...),
│   │                    original_name when the column's name was not a safe file name
│   └── <column>.valid   bool, only for columns that have had nulls or gaps
└── <frame stream>/      attrs: instrument_id, <set_metadata values>
    ├── frames           (frame, y, x); coordinates: timestamp_ns, frame_number
    ├── timestamp_ns     (frame,) uint64 nanoseconds since the epoch (CF units, calendar)
    └── frame_number     (frame,) uint64
```

``xr.open_zarr(store, group=<stream>)`` reads each group through its consolidated
metadata, variables in the order of the stream's columns; timestamp columns (and frames'
``timestamp_ns``) decode to dates and are coordinates of ``row`` (``frame``).

A :meth:`~ZarrWriter.flush` publishes each stream whole, after its data, with one rename
(see ``_zarr_metadata``); a stream uses only its own folders, so one that fails costs the
others nothing. After a close or a kill, every way of opening shows each stream as of its
last flush. Live readers should use consolidated metadata (the default of ``xr.open_zarr``
and ``zarr.open_group``: one file per group). A reader with ``consolidated=False`` reads
each array's ``zarr.json`` in turn, and a flush between two reads shows it two lengths
(``conflicting sizes for dimension``); no writer can prevent that (N files read at N
instants; Zarr has no lock or snapshot), so such a reader should retry.
"""

from __future__ import annotations

import errno
import functools
import json
import operator
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import zarr
import zarr.codecs
import zarr.storage

from daq_storage.errors import ConfigError, InvalidName, SchemaMismatch, UnsupportedData
from daq_storage.schema import (
    METADATA_CHANGES,
    FrameBlock,
    flatten_batch,
    join_frames,
)
from daq_storage.writers._base import Writer, finish_all, json_value
from daq_storage.writers._chunks import (
    ChunkEncode,
    blosc_encoder,
    split_frames,
)
from daq_storage.writers._zarr_limits import (
    Origins,
    check_buffer,
    out_of_memory,
    zarr_errors,
)
from daq_storage.writers._zarr_metadata import StreamGroup, create_store, write_root
from daq_storage.writers._zarr_streams import (
    COMPRESSIONS,
    ID_CHUNK,
    ColumnNames,
    FrameArrays,
    TableArrays,
    compressors,
    grid,
    new_array,
    rows_of,
    storage_kind,
)

__all__ = ["ZarrWriter"]

_TABLE_CHUNK_ROWS = 65536
_BLOCK = 4096  # the least a file takes on disk


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key or "\x00" in key:
        raise InvalidName(f"zarr: metadata key {key!r} must be a non-empty string without NUL")
    return key


class ZarrWriter(Writer):
    """A Zarr V3 directory store.

    Frame streams become ``<stream>/frames`` ``(frame, y, x)`` plus ``timestamp_ns`` and
    ``frame_number`` along ``frame``; table streams become one array per column along
    ``row`` (a ``<column>.valid`` mask beside columns with nulls or gaps). Rows are
    buffered into whole chunks and frames into whole shards (or chunks); with blosc
    and sharding, shards are compressed on a thread pool and written as whole objects,
    as acquire-zarr does. Everything, metadata included, is visible to readers after
    :meth:`flush` (and :meth:`close`), and a flush that fails for one stream still
    publishes the others. Live readers: use consolidated metadata, the default; a reader
    with ``consolidated=False`` may see a flush in progress and should retry. A chunk or
    shard that memory could not hold (over a quarter of it) is refused at a stream's first
    write. The seeds' builder is here too: :meth:`create_array` and :meth:`write_chunk`.

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
        if compression not in COMPRESSIONS:
            raise ConfigError(f"zarr compression {compression!r} is not one of {COMPRESSIONS}")
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
        self._compressors = compressors(compression, compression_level)
        self._tables: dict[str, TableArrays] = {}
        self._frame_streams: dict[str, FrameArrays] = {}
        self._groups: dict[str, StreamGroup] = {}  # by stream
        #: group path ("" for the root) -> attributes published at the next flush: ours,
        #: then set_metadata's
        self._attributes: dict[str, dict[str, Any]] = {}
        self._user_attributes: dict[str, dict[str, Any]] = {"": {}}
        self._order: list[str] = []  # the root's children in the order they came
        with zarr_errors(self.path, "cannot create Zarr store"):
            self._claim_store()
            self._store = zarr.storage.LocalStore(self.path)
            self._root = zarr.open_group(self._store, mode="r+", use_consolidated=False)
        self._add_file(self.path)
        self._pool: ThreadPoolExecutor | None = None
        self._threads = threads or os.cpu_count() or 1
        self._encode: ChunkEncode | None = None
        if compression.startswith("blosc-") and shard_frames is not None:
            self._encode = blosc_encoder(compression.removeprefix("blosc-"), compression_level)

    def _claim_store(self) -> None:
        """Make the store with its root ``zarr.json`` in a folder beside it, renamed into
        place: no reader finds a store without metadata, and of two writers racing for
        one path the second is refused (a non-empty store is never overwritten)."""
        existed = self.path.is_dir()
        if existed and any(self.path.iterdir()):
            raise FileExistsError(errno.EEXIST, "File exists (a non-empty store is never "
                                  "overwritten)")  # fmt: skip
        self._claim_directory(self.path.parent)
        #: where what is made under a temporary name goes when no stream's own folder
        #: fits: the root's documents, a group before it has an array of its own
        self._scratch = create_store(self.path)
        if not existed:
            self._made_dirs.insert(0, self.path)

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
        path = self._node_path(name)
        for key in attributes or {}:
            _check_key(key)
        if attributes is not None:
            attributes = json.loads(json_value(attributes, what=f"attributes of array {name!r}"))
        sizes = grid(name, shape, chunks, shards)
        self._stored = True
        with zarr_errors(self.path, f"cannot create array {name!r}"):
            try:
                return self._root.create_array(
                    path, shape=sizes[0], chunks=sizes[1], shards=sizes[2], dtype=dtype,
                    dimension_names=None if dimension_names is None else list(dimension_names),
                    compressors=self._compressors if compressors == "default" else compressors,
                    fill_value=fill_value, attributes=attributes or {},
                )  # fmt: skip
            except (ValueError, TypeError) as exc:  # zarr's checks of the arguments
                raise SchemaMismatch(f"zarr: cannot create array {name!r}: {exc}") from None

    def write_chunk(self, name: str, coords: Sequence[int], data: npt.ArrayLike) -> None:
        """Write ``data`` into array ``name`` starting at element ``coords``."""
        self._check_open()
        path = self._node_path(name)
        try:
            array = self._root[path]
            start = [operator.index(c) for c in coords]
            values = np.asarray(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaMismatch(f"zarr: cannot write to array {name!r}: {exc!r}") from None
        if not isinstance(array, zarr.Array):
            raise SchemaMismatch(f"zarr node {name!r} is a group, not an array")
        if len(start) != array.ndim or values.ndim != array.ndim:
            raise SchemaMismatch(
                f"array {name!r} has {array.ndim} dimensions; got coords {start} and "
                f"data of shape {values.shape}"
            )
        region = tuple(slice(c, c + s) for c, s in zip(start, values.shape, strict=True))
        if any(r.start < 0 or r.stop > n for r, n in zip(region, array.shape, strict=True)):
            raise SchemaMismatch(
                f"array {name!r} of shape {array.shape}: data {values.shape} at {start} "
                "does not fit"
            )
        self._ensure_room(values.nbytes, f"array {name!r}", self.path)
        with zarr_errors(self.path, f"cannot write to array {name!r}"):
            try:
                array[region] = values
            except (ValueError, TypeError) as exc:
                raise SchemaMismatch(f"zarr: array {name!r} refused the data: {exc}") from None
        self._stats.bytes_written += values.nbytes

    def _node_path(self, name: str) -> str:
        if not isinstance(name, str):
            raise InvalidName(f"zarr: array name must be a string, got {name!r}")
        return "/".join(self._safe_stream(part) for part in name.split("/"))

    # ------------------------------------------------------------------ groups
    def _group(self, stream: str) -> StreamGroup:
        group = self._groups.get(stream)
        if group is None:
            safe = self._safe_stream(stream)
            group = StreamGroup(self.path / safe)
            with zarr_errors(self.path, f"cannot create stream {stream!r}"):
                group.create({"instrument_id": stream}, self._scratch)
            self._groups[stream] = group
            self._attributes[safe] = {"instrument_id": stream}
            self._order.append(safe)
        return group

    def _publish(self, stream: str, arrays: dict[str, dict[str, Any]]) -> None:
        """Show the group of ``stream`` with ``arrays`` and its attributes as of now."""
        safe = self._safe_stream(stream)
        attributes = dict(self._attributes[safe])
        tracked = self._table_metadata.get(stream)
        if tracked is not None:
            described = dict(tracked.first or {})
            if tracked.changes:
                described[METADATA_CHANGES] = tracked.changes
            attributes = {**described, **attributes}
        attributes.update(self._user_attributes.get(safe, {}))
        self._groups[stream].publish(arrays, attributes, self._scratch)

    def _publish_root(self) -> None:
        groups = {group.folder.name: group for group in self._groups.values()}
        write_root(self.path, self._user_attributes[""], self._order, groups, self._scratch)

    # ------------------------------------------------------------------ tables
    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        """Append ``batch`` to ``stream``'s column arrays (buffered to whole chunks).

        A column absent from a batch is null there; a new column is null for earlier
        rows; nulls are filled (0, NaN, ``""``) and marked in ``<column>.valid``.

        Raises:
            InvalidName: two columns would be stored under one name (duplicates, a
                struct field ``a.b`` beside a column ``a.b``, a column ``x.valid`` beside
                ``x``), or a column name has no usable characters.
            SchemaMismatch: a column changes type; a struct field ``a.b`` and a column
                ``a.b`` come in two batches.
            ConfigError: a new column's chunk would not fit in memory.
        """
        batch = self._check_batch(stream, batch)
        if stream in self._frame_streams:
            raise SchemaMismatch(f"stream {stream!r} holds frames; tables go to another stream")
        try:
            self._write_batch(stream, batch)
        except MemoryError as exc:
            raise out_of_memory(self.path, f"cannot write stream {stream!r}", exc) from exc

    def _write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        columns = flatten_batch(batch, stream=stream)
        known = self._tables.get(stream)
        kinds = {} if known is None else known.kinds
        origins = Origins() if known is None else known.origins
        paths = origins.check(stream, batch.schema, [c.name for c in columns])
        chunk_rows = self.chunk_size or _TABLE_CHUNK_ROWS
        for column in columns:  # check everything before accepting anything
            if column.kind == "vlen":
                raise UnsupportedData(
                    f"zarr: stream {stream!r} column {column.name!r} is a variable-length "
                    "list; zarr arrays are rectangular (use hdf5, arrow or parquet)"
                )
            kind = kinds.get(column.name)
            dtype, inner = storage_kind(column)
            if kind is not None and (kind[0], kind[1]) != (dtype, inner):
                raise SchemaMismatch(
                    f"stream {stream!r} column {column.name!r}: stored as "
                    f"{kind[2].get('arrow_type', kind[0])} {kind[1] or ''}, got "
                    f"{column.attrs.get('arrow_type', dtype)} {inner or ''}".rstrip()
                )
            if kind is None:
                check_buffer(f"stream {stream!r} column {column.name!r}", "chunk",
                             chunk_rows, inner, dtype, "chunk_size")  # fmt: skip
        names = (ColumnNames() if known is None else known.names).claim(
            stream, [c.name for c in columns]
        )
        # Every chunk is a file, and a file takes at least a disk block.
        chunks = len(columns) * (batch.num_rows // chunk_rows + 1)
        self._ensure_room(batch.nbytes + chunks * _BLOCK, f"stream {stream!r}", self.path)
        table = known or self._table(stream)
        new = [c for c in columns if c.name not in table.kinds]
        for column in new:
            table.kinds[column.name] = (*storage_kind(column), column.attrs)
        table.names.add(names)
        table.origins.add([c.name for c in new], paths)
        table.pending.append((batch.num_rows, {c.name: c for c in columns}))
        table.pending_rows += batch.num_rows
        if table.pending_rows >= chunk_rows:
            aligned = table.rows + table.pending_rows
            count = aligned - aligned % chunk_rows - table.rows
            try:
                with zarr_errors(self.path, f"cannot write stream {stream!r}"):
                    self._commit_rows(table, count)
            except BaseException:  # this batch is refused; rows accepted before stay pending
                table.pending.pop()
                table.pending_rows -= batch.num_rows
                for column in new:
                    del table.kinds[column.name]
                table.origins.drop([c.name for c in new])
                table.names.drop(list(names))
                raise
        self._observe_metadata(stream, batch)
        self._stats.batches += 1
        self._stats.rows += batch.num_rows
        self._stats.bytes_written += batch.nbytes

    def _table(self, stream: str) -> TableArrays:
        group = self._group(stream)
        self._attributes[self._safe_stream(stream)]["rows"] = 0
        table = self._tables[stream] = TableArrays(group)
        return table

    def _commit_rows(self, table: TableArrays, count: int) -> None:
        """Write the first ``count`` pending rows to the arrays' chunks (making the arrays
        of new columns, even with no rows: a stream of empty batches has its columns);
        keep the rest pending. Readers see them once :meth:`_flush_table` publishes."""
        if count <= 0 and all(name in table.arrays for name in table.kinds):
            return
        start, end = table.rows, table.rows + count
        created = [name for name in table.kinds if name not in table.arrays]
        had_masks = set(table.masks)
        try:
            for name in created:
                self._column_array(table, name)
            merged = table.merged_pending()
            for name, (values, validity) in merged.items():
                table.arrays[name][start:end] = values[:count]
                if validity is not None:
                    mask = table.masks.get(name)
                    if mask is None:  # first null: every earlier row held a value
                        mask = self._mask_array(table, name, True)
                    mask[start:end] = validity[:count]
        except BaseException:
            # Nothing counts as written: arrays made now go (readers saw them all null),
            # and every row stays pending, written again from the same row.
            for name in set(table.masks) - had_masks:
                table.group.remove_array(f"{table.names[name]}.valid", self._scratch)
                del table.masks[name]
            for name in created:
                if table.arrays.pop(name, None) is not None:
                    table.group.remove_array(table.names[name], self._scratch)
            raise
        rest = table.pending_rows - count
        table.pending = (
            [(rest, {n: rows_of(table.kinds[n], v, m, count) for n, (v, m) in merged.items()})]
            if rest
            else []
        )
        table.pending_rows = rest
        table.rows = end

    def _column_array(self, table: TableArrays, column: str) -> None:
        """A new column's array, shown at the length readers see (null there)."""
        dtype, inner, attrs = table.kinds[column]
        name = table.names[column]
        if name != column:
            attrs = {**attrs, "original_name": column}
        # Timestamp columns are coordinates of "row" (CF: named by the other columns).
        times = [
            table.names[other]
            for other, (_, _, other_attrs) in table.kinds.items()
            if str(other_attrs.get("arrow_type", "")).startswith("timestamp")
            and " " not in table.names[other]
        ]
        if times and name not in times:
            attrs = {**attrs, "coordinates": " ".join(times)}
        if table.rows:  # a column that appears mid-run: earlier rows are null (mask first)
            self._mask_array(table, column, False)
        table.arrays[column] = new_array(
            self._store, table.group, name, table.published, self._scratch,
            shape=(0, *inner), chunks=(self.chunk_size or _TABLE_CHUNK_ROWS, *inner),
            dtype=str if dtype.kind == "O" else dtype,
            dimension_names=["row", *(f"{name}_{i}" for i in range(len(inner)))],
            compressors=self._compressors, attributes=dict(attrs),
            fill_value="" if dtype.kind == "O" else (np.nan if dtype.kind == "f" else 0),
        )  # fmt: skip

    def _mask_array(self, table: TableArrays, column: str, earlier: bool) -> zarr.Array[Any]:
        """``<name>.valid``: True where the column holds a value; ``earlier`` for the
        rows written before the mask existed."""
        name = table.names[column]
        mask = table.masks[column] = new_array(
            self._store, table.group, f"{name}.valid", table.published, self._scratch,
            shape=(0,), chunks=(self.chunk_size or _TABLE_CHUNK_ROWS,), dtype=bool,
            dimension_names=["row"], compressors=self._compressors, fill_value=earlier,
            attributes={"meaning": f"True where {name} holds a value; False where it is null"},
        )  # fmt: skip
        return mask

    def _flush_table(self, stream: str, table: TableArrays) -> None:
        self._commit_rows(table, table.pending_rows)
        self._attributes[self._safe_stream(stream)]["rows"] = table.rows
        self._publish(stream, table.documents())
        table.published = table.rows

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
        for the next call or :meth:`flush`. A call that fails stores none of its frames.

        Raises:
            ConfigError: at a stream's first call, a chunk or shard of its frames would
                not fit in memory (see ``_zarr_limits``).
        """
        if stream in self._tables:
            raise SchemaMismatch(f"stream {stream!r} holds a table; frames go to another stream")
        with zarr_errors(self.path, f"cannot write frames of stream {stream!r}"):
            block = self._check_frames(stream, frames, timestamps_ns, frame_numbers)
            objects = len(block.frames) // (self.shard_frames or self.frames_per_chunk) + 1
            self._ensure_room(block.frames.nbytes + objects * _BLOCK,
                              f"frames of stream {stream!r}", self.path)  # fmt: skip
            target = self._frames(stream, block)
            if len(target.ids) >= ID_CHUNK:
                target.write_ids()
            if target.partial is not None:
                block = join_frames([target.partial, block])
            unit = self.shard_frames or self.frames_per_chunk
            head, whole, rest = split_frames(block, target.length, unit)
            # Frames past target.length are invisible until published, and written
            # again there if this call fails.
            encoded: list[tuple[int, list[bytes]]] = []
            if len(head):  # completes the partial shard a flush wrote
                target.write(target.length, head)
            if len(whole) and self._encode is None:
                target.write(target.length + len(head), whole)
            elif len(whole):
                assert self.shard_frames is not None
                assert self._encode is not None
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        self._threads, thread_name_prefix="daq_storage_zarr"
                    )
                encoded = target.encode_shards(
                    self._pool, self._encode, target.length + len(head), whole,
                    self.frames_per_chunk, self.shard_frames,
                )  # fmt: skip
            stored = len(head) + len(whole)
            target.encoded.extend(encoded)
            target.ids.add(block.part(0, stored))
            target.length += stored
            target.partial = rest.copy() if len(rest) else None  # the caller may reuse it
        self._stored = True
        self._stats.frames += len(frames)
        self._stats.bytes_written += frames.nbytes

    def _check_frame_format(self, stream: str, frames: npt.NDArray[Any]) -> None:
        if stream not in self._frame_streams:
            piece, option, count = (
                ("chunk", "frames_per_chunk", self.frames_per_chunk)
                if self.shard_frames is None
                else ("shard", "shard_frames", self.shard_frames)
            )
            check_buffer(f"stream {stream!r}", piece, count, frames.shape[1:], frames.dtype,
                         option)  # fmt: skip

    def _frames(self, stream: str, block: FrameBlock) -> FrameArrays:
        target = self._frame_streams.get(stream)
        if target is not None:
            return target
        target = FrameArrays.create(
            self._store, self._group(stream), self._scratch, block.frames,
            self.frames_per_chunk, self.shard_frames, self._compressors,
            own_shards=self._encode is not None,
        )  # fmt: skip
        self._frame_streams[stream] = target
        return target

    def _flush_frames(self, stream: str, target: FrameArrays) -> None:
        """Store every frame (a partial shard or chunk as it is) and its ids; publish."""
        if target.partial is not None:
            partial = target.partial
            target.write(target.length, partial)
            target.ids.add(partial)
            target.length += len(partial)
            target.partial = None
        target.store_shards()
        target.write_ids()
        self._publish(stream, target.documents())

    # ------------------------------------------------------------------ metadata, lifecycle
    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        """A Zarr attribute (JSON) of the root group or of the stream's group, written at
        the next :meth:`flush` (or :meth:`close`) with the group's consolidated metadata."""
        self._check_open()
        _check_key(key)
        value = json.loads(json_value(value, what=f"metadata {key!r}"))
        where = "" if stream is None else self._group(stream).folder.name
        self._user_attributes.setdefault(where, {})[key] = value
        self._stored = True

    def flush(self) -> None:
        """Write everything buffered (a partial shard or chunk as it is) and make it
        visible, stream by stream: one stream's failure is raised after the others are
        written and published."""
        self._check_open()
        steps: list[Callable[[], None]] = []
        for stream, table in self._tables.items():
            steps.append(self._step(stream, functools.partial(self._flush_table, stream, table)))
        for stream, target in self._frame_streams.items():
            steps.append(self._step(stream, functools.partial(self._flush_frames, stream, target)))
        for stream in self._groups:  # groups with metadata only
            if stream not in self._tables and stream not in self._frame_streams:
                steps.append(self._step(stream, functools.partial(self._publish, stream, {})))
        steps.append(self._step(None, self._publish_root))
        finish_all(steps)

    def _step(
        self, stream: str | None, step: Callable[[], None], action: str = "flush"
    ) -> Callable[[], None]:
        what = f"cannot {action} " + ("Zarr store" if stream is None else f"stream {stream!r}")

        def run() -> None:
            with zarr_errors(self.path, what):
                step()

        return run

    def _close(self) -> None:
        try:
            finish_all([self.flush, self._finish_groups])
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    def _finish_groups(self) -> None:
        """Every group's documents as plain files: a store closed cleanly has no links."""
        finish_all([self._step(stream, group.finish, "finish")
                    for stream, group in self._groups.items()])  # fmt: skip
