"""Zarr V3 (zarr-python 3): one store, a group per stream, named dimensions for xarray.

```
run.zarr/                attrs: <set_metadata values>
├── <table stream>/      attrs: the schema metadata of its first batch, metadata_changes,
│   │                    instrument_id, rows, <set_metadata values>, parts (once the
│   │                    stream has more than one)
│   ├── <column>         (row, ...) one array per column (struct fields as parent.child);
│   │                    attrs: arrow_type, the field's metadata (units, scale_factor, ...),
│   │                    original_name when the column's name was not a safe file name
│   └── <column>.valid   bool, only for columns that have had nulls or gaps
├── <stream>__part0002/  the table stream's second part (attrs: instrument_id, part_of,
│                        first, rows), laid out as its first group
└── <frame stream>/      attrs: instrument_id, <set_metadata values>
    ├── frames           (frame, y, x); coordinates: timestamp_ns, frame_number
    ├── timestamp_ns     (frame,) uint64 nanoseconds since the epoch (CF units, calendar)
    └── frame_number     (frame,) uint64
```

``xr.open_zarr(store, group=<stream>)`` reads each group through its consolidated
metadata, variables in the order of the stream's columns; timestamp columns (and frames'
``timestamp_ns``) decode to dates and are coordinates of ``row`` (``frame``).

Schema evolution: a new or missing column is taken in place (null rows, ``.valid``
masks); a column that widens or changes type continues the stream in the group
``<stream>__part0002`` (then ``0003``, ...): a Zarr array's dtype is fixed. The first
group's attribute ``parts`` lists every part (``[{"key": "s", "first": 0}, {"key":
"s__part0002", "first": 1200}]``, ``first`` being the stream's row where the part
starts); each later group has ``part_of`` (the stream's name) and ``first``. Parts of
widened numbers join into one dataset (parts of an incompatible change are read one by
one: text and numbers share no dtype)::

    parts = xr.open_zarr(store, group="s").attrs.get("parts", [{"key": "s"}])
    table = xr.concat([xr.open_zarr(store, group=p["key"]) for p in parts], dim="row")

A :meth:`~ZarrWriter.flush` publishes each stream whole, after its data, with one rename
(see ``_zarr_metadata``); a stream uses only its own folders, so one that fails costs the
others nothing. Chunks and shards are written as they fill (memory stays bounded), but
readers see them only from the next flush: it is the one point of visibility. After a
close or a kill, every way of opening shows each stream as of its last flush. Live
readers should use consolidated metadata (the default of ``xr.open_zarr`` and
``zarr.open_group``: one file per group). A reader with ``consolidated=False`` reads each
array's ``zarr.json`` in turn, and a flush between two reads shows it two lengths
(``conflicting sizes for dimension``); no writer can prevent that (N files read at N
instants; Zarr has no lock or snapshot), so such a reader should retry.

The store may be an ``s3://bucket/prefix/run.zarr`` URL: the same writer then writes
through zarr-python's ``ObjectStore`` (obstore), every chunk, shard and document an
object put whole, the documents after the data they cover (see ``_zarr_objects``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, ClassVar

import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import SchemaMismatch
from daq_storage.location import S3Location, S3Options
from daq_storage.schema import FrameBlock, join_frames
from daq_storage.writers._base import StreamDescription, StreamPart, WriterOptions, finish_all
from daq_storage.writers._chunks import ChunkEncode, blosc_encoder, split_frames
from daq_storage.writers._zarr_limits import check_buffer, zarr_errors
from daq_storage.writers._zarr_options import ZarrOptions
from daq_storage.writers._zarr_streams import ID_CHUNK, FrameArrays
from daq_storage.writers._zarr_tables import BLOCK, TABLE_CHUNK_ROWS, ZarrTables

__all__ = ["ZarrOptions", "ZarrWriter"]


def _leaf_types(schema: pa.Schema) -> dict[str, str]:
    """Column (``parent.child`` for struct fields) -> its Arrow type, as text."""
    types: dict[str, str] = {}

    def walk(prefix: str, fields: Any) -> None:
        for field in fields:
            if pa.types.is_struct(field.type):
                walk(f"{prefix}{field.name}.", field.type)
            else:
                types[f"{prefix}{field.name}"] = str(field.type)

    walk("", schema)
    return types


class ZarrWriter(ZarrTables):
    """A Zarr V3 directory store.

    Frame streams become ``<stream>/frames`` ``(frame, y, x)`` plus ``timestamp_ns`` and
    ``frame_number`` along ``frame``; table streams become one array per column along
    ``row`` (a ``<column>.valid`` mask beside columns with nulls or gaps). Rows are
    buffered into whole chunks and frames into whole shards (or chunks); with blosc
    and sharding, shards are compressed on a thread pool and written as whole objects,
    as acquire-zarr does. Everything, metadata included, is visible to readers after
    :meth:`flush` (and :meth:`close`), and a flush that fails for one stream still
    publishes the others; ``flush(durable=True)`` also fsyncs the chunks and shards
    written since the last durable flush, the documents and the folders naming them.
    Live readers: use consolidated metadata, the default; a reader with
    ``consolidated=False`` may see a flush in progress and should retry. A chunk or
    shard that memory could not hold (over a quarter of it) is refused at a stream's
    first write. A widened or changed column type continues a table stream in a new
    part (see the module docstring). The seeds' builder is here too:
    :meth:`create_array` and :meth:`write_chunk` (see :mod:`.zarr_arrays`).

    Args:
        path: the store directory (created; an existing non-empty one is refused), or
            an ``s3://`` URL (the prefix must hold no object).
        compression: ``blosc-lz4`` (default), ``blosc-zstd``, ``zstd``, ``gzip``, ``none``
            (``[storage] compression``).
        compression_level: codec level (blosc and gzip 0-9, zstd 1-22; default 5;
            ``[storage] compression_level``).
        chunk_size: rows per chunk for tables (default 65536; ``[storage] chunk_size``).
        frames_per_chunk: frames per chunk for images (default 1).
        shard_frames: frames per shard, a multiple of ``frames_per_chunk`` (default:
            no sharding, one object per chunk).
        executor: threads that compress blosc shards, shareable between writers
            (default: a pool of the writer's own, ``min(4, os.cpu_count())`` threads).
        storage_options: how to reach an ``s3://bucket/prefix/run.zarr`` URL (an
            :class:`~daq_storage.location.S3Options` or a dict of its fields; unset
            ones come from the ``AWS_*`` variables and profiles). The store is then
            zarr-python's ``ObjectStore``: see ``_zarr_objects`` for what is visible
            when and what protects a key.
    """

    name: ClassVar[str] = "zarr"
    suffixes: ClassVar[tuple[str, ...]] = (".zarr",)
    supports_frames: ClassVar[bool] = True
    supports_tables: ClassVar[bool] = True
    mimetype: ClassVar[str] = "application/x-zarr"
    on_widening: ClassVar[str] = "new_part"
    on_new_columns: ClassVar[str] = "in_place"
    on_incompatible: ClassVar[str] = "new_part"
    Options: ClassVar[type[WriterOptions]] = ZarrOptions
    config_keys: ClassVar[dict[str, str]] = {
        "compression": "compression",
        "compression_level": "compression_level",
        "chunk_size": "chunk_size",
    }
    path_suffix: ClassVar[str] = ".zarr"
    removes_unused_output: ClassVar[bool] = True
    supports_object_storage: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str] | S3Location,
        *,
        compression: str = "blosc-lz4",
        compression_level: int | None = None,
        chunk_size: int | None = None,
        frames_per_chunk: int = 1,
        shard_frames: int | None = None,
        executor: Executor | None = None,
        storage_options: S3Options | Mapping[str, Any] | None = None,
    ) -> None:
        options = self.validate_options(
            compression=compression, compression_level=compression_level,
            chunk_size=chunk_size, frames_per_chunk=frames_per_chunk,
            shard_frames=shard_frames, executor=executor, storage_options=storage_options,
        )  # fmt: skip
        assert isinstance(options, ZarrOptions)
        super().__init__(path, options, storage_options)
        self._encode: ChunkEncode | None = None
        if options.compression.startswith("blosc-") and options.shard_frames is not None:
            cname = options.compression.removeprefix("blosc-")
            self._encode = blosc_encoder(cname, options.level)

    # ------------------------------------------------------------------ frames
    def write_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any] | Sequence[npt.NDArray[Any]],
        *,
        timestamps_ns: npt.ArrayLike | None = None,
        frame_numbers: npt.ArrayLike | None = None,
    ) -> None:
        """Append frames (an array, or a sequence of equally shaped frames) to
        ``<stream>/frames`` and their ids to ``timestamp_ns`` and ``frame_number``, a
        whole shard (or chunk) at a time; the rest waits (copied) for the next call or
        :meth:`flush`. A call that fails stores none of its frames, and the default
        frame numbers go on from the frames stored.

        Raises:
            ConfigError: at a stream's first call, a chunk or shard of its frames would
                not fit in memory (see ``_zarr_limits``).
            StorageIOError: no room for the frames (nothing is written), or a write failed.
        """
        if stream in self._tables:
            raise SchemaMismatch(f"stream {stream!r} holds a table; frames go to another stream")
        with zarr_errors(self._target, f"cannot write frames of stream {stream!r}"):
            block = self._check_frames(stream, frames, timestamps_ns, frame_numbers)
            unit = self.options.shard_frames or self.options.frames_per_chunk
            objects = len(block) // unit + 1
            self._ensure_room(block.frames.nbytes + objects * BLOCK,
                              f"frames of stream {stream!r}", self.path)  # fmt: skip
            self._store_frames(self._frames(stream, block), block, unit)
        self._record_frames(stream, block)  # stored: only now counted
        self._stored = True
        self._stats.frames += len(block)
        self._stats.bytes_written += block.frames.nbytes

    def _store_frames(self, target: FrameArrays, block: FrameBlock, unit: int) -> None:
        """Write ``block``'s whole shards (or chunks); keep the rest, copied, for later."""
        if len(target.ids) >= ID_CHUNK:  # ids go to their chunks: memory stays bounded
            target.write_ids()
        if target.partial is not None:
            block = join_frames([target.partial, block])
        head, whole, rest = split_frames(block, target.length, unit)
        # Frames past target.length are invisible until published, and written
        # again there if this call fails.
        encoded: dict[int, list[bytes]] = {}
        if len(head):  # completes the partial shard a flush wrote
            target.write(target.length, head)
        if len(whole) and self._encode is None:
            target.write(target.length + len(head), whole)
        elif len(whole):
            assert self.options.shard_frames is not None
            assert self._encode is not None
            encoded = target.encode_shards(
                self._pool(), self._encode, target.length + len(head), whole,
                self.options.frames_per_chunk, self.options.shard_frames,
            )  # fmt: skip
        stored = len(head) + len(whole)
        target.encoded.update(encoded)
        if self._store.writes_in_background:  # started now: writes overlap the next call
            target.start_uploads()
        target.ids.add(block.part(0, stored))
        target.length += stored
        target.partial = rest.copy() if len(rest) else None  # the caller may reuse it

    def _check_frame_format(self, stream: str, frames: npt.NDArray[Any]) -> None:
        target = self._frame_streams.get(stream)
        if target is None:
            piece, option, count = (
                ("chunk", "frames_per_chunk", self.options.frames_per_chunk)
                if self.options.shard_frames is None
                else ("shard", "shard_frames", self.options.shard_frames)
            )
            check_buffer(f"stream {stream!r}", piece, count, frames.shape[1:], frames.dtype,
                         option)  # fmt: skip
        elif (target.frames.dtype, target.frames.shape[1:]) != (frames.dtype, frames.shape[1:]):
            # The arrays were made by a first call that failed after making them.
            raise SchemaMismatch(
                f"stream {stream!r} holds frames of dtype {target.frames.dtype} shape "
                f"{target.frames.shape[1:]}; got dtype {frames.dtype} shape {frames.shape[1:]}"
            )

    def _frames(self, stream: str, block: FrameBlock) -> FrameArrays:
        target = self._frame_streams.get(stream)
        if target is not None:
            return target
        group = self._group(stream)
        target = FrameArrays.create(
            self._store, group, block.frames, self.options.frames_per_chunk,
            self.options.shard_frames, self._compressors, own_shards=self._encode is not None,
        )  # fmt: skip
        self._frame_streams[stream] = target
        self._data_groups.add(group.key)
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
        self._publish(stream, target.group.key, target.documents())
        target.published = target.length

    # ------------------------------------------------------------------ progress
    def visible(self, stream: str) -> int:
        """Rows or frames as of the last :meth:`flush` (every part of a table stream):
        what a reader opening the store now finds."""
        self._known_stream(stream)
        if stream in self._tables:
            return self._visible_rows(stream)
        target = self._frame_streams.get(stream)
        return 0 if target is None else target.published

    def describe(self, stream: str) -> StreamDescription:
        """Where ``stream`` lives: for frames the array ``<stream>/frames`` (ids in
        ``timestamp_ns`` and ``frame_number`` beside it; ``chunk_shape`` is the shard
        when sharded, the object a reader fetches whole, else the chunk), for a table
        its group (every part listed), its columns (Arrow types of the current part) and
        ``(rows per chunk,)``."""
        self._known_stream(stream)
        safe = self._safe_stream(stream)
        described = functools.partial(
            StreamDescription, stream=stream, format=self.name, mimetype=self.mimetype,
            path=self._target, visible=self.visible(stream), accepted=self.accepted(stream),
            compression=self.options.codec,
        )  # fmt: skip
        target = self._frame_streams.get(stream)
        if target is not None:
            key = f"{safe}/frames"
            shape = tuple(target.frames.shape[1:])
            unit = self.options.shard_frames or self.options.frames_per_chunk
            return described(
                kind="frames", key=key, dtype=str(target.frames.dtype), shape=shape,
                parts=self._stream_parts(stream, StreamPart(self._target, key, 0)),
                chunk_shape=(unit, *shape),
                extra_keys={"timestamps_ns": f"{safe}/timestamp_ns",
                            "frame_numbers": f"{safe}/frame_number"},
            )  # fmt: skip
        return described(
            kind="table", key=safe, columns=_leaf_types(self._table_schemas[stream]),
            parts=self._stream_parts(stream, StreamPart(self._target, safe, 0)),
            chunk_shape=(self.options.chunk_size or TABLE_CHUNK_ROWS,),
        )  # fmt: skip

    # ------------------------------------------------------------------ lifecycle
    def flush(self, *, durable: bool = False) -> None:
        """Write everything buffered (a partial shard or chunk as it is) and make it
        visible, stream by stream: one stream's failure is raised after the others are
        written and published. ``durable=True`` then fsyncs the objects written since
        the last durable flush, the documents published and the folders naming them."""
        self._check_open()
        steps: list[Callable[[], None]] = []
        for stream in self._tables:
            for table in self._parts_to_flush(stream):
                step = functools.partial(self._flush_table, stream, table)
                steps.append(self._step(stream, step))
        for stream, target in self._frame_streams.items():
            steps.append(self._step(stream, functools.partial(self._flush_frames, stream, target)))
        for key, group_stream in self._group_streams.items():  # groups with metadata only
            if key not in self._data_groups:
                step = functools.partial(self._publish, group_stream, key, {})
                steps.append(self._step(group_stream, step))
        steps.append(self._step(None, self._publish_root))
        if durable:
            steps.append(self._sync)
        finish_all(steps)

    def _step(
        self, stream: str | None, step: Callable[[], None], action: str = "flush"
    ) -> Callable[[], None]:
        what = f"cannot {action} " + ("Zarr store" if stream is None else f"stream {stream!r}")

        def run() -> None:
            with zarr_errors(self._target, what):
                step()

        return run

    def _close(self) -> None:
        try:
            finish_all([self.flush, self._finish_groups])
        finally:
            self._stop_pool()

    def _finish_groups(self) -> None:
        """Every group's documents as plain files: a store closed cleanly has no links."""
        finish_all([self._step(self._group_streams[key], group.finish, "finish")
                    for key, group in self._groups.items()])  # fmt: skip
