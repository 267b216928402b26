"""What the writers whose files take Arrow record batches (Arrow IPC, Parquet) share:
the schema-evolution flow, frames as a tensor column, visibility, the stream
description and durable flushes."""

from __future__ import annotations

import functools
import json
import os
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.location import S3Location
from daq_storage.schema import FRAME_TIMESTAMP, FrameBlock, conform_batch, frames_to_batch
from daq_storage.writers._base import (
    StreamDescription,
    StreamPart,
    finish_all,
    fsync_paths,
    storage_errors,
)
from daq_storage.writers._object_parts import ObjectParts
from daq_storage.writers._per_stream import FIRST_ROW, PART_OF, PerStreamWriter

__all__ = ["FRAME_COLUMNS", "ArrowBatchWriter", "leaf_columns"]

#: Where a frame stream's data is in its files: column names.
FRAME_COLUMNS = {"frames": "frame", "timestamps_ns": "timestamp_ns",
                 "frame_numbers": "frame_number"}  # fmt: skip


def _part_keys(stream: str, first: int) -> dict[str, str]:
    """A part object's :data:`PART_OF` and :data:`FIRST_ROW` (every part has them)."""
    return {PART_OF: json.dumps(stream), FIRST_ROW: json.dumps(first)}


def leaf_columns(schema: pa.Schema) -> dict[str, str]:
    """Column name (``parent.child`` for struct fields) -> Arrow type, as text."""

    def leaves(fields: Iterable[pa.Field], prefix: str) -> Iterator[tuple[str, str]]:
        for field in fields:
            if pa.types.is_struct(field.type):
                yield from leaves(field.type, f"{prefix}{field.name}.")
            else:
                yield f"{prefix}{field.name}", str(field.type)

    return dict(leaves(schema, ""))


class ArrowBatchWriter(PerStreamWriter):
    """A per-stream writer whose files take Arrow record batches (Arrow IPC, Parquet).

    Every kind of schema change continues the stream in a new part file (the first
    part's schema is fixed once written); a change that is none (narrower values, column
    order, ``string``/``large_string``) is cast to the part's schema. Frames arrive as a
    ``fixed_shape_tensor`` column ``frame`` beside ``timestamp_ns`` and ``frame_number``.
    """

    on_widening: ClassVar[str] = "new_part"
    on_new_columns: ClassVar[str] = "new_part"
    on_incompatible: ClassVar[str] = "new_part"

    _open: dict[str, Any]  # stream -> its open file (format-specific)

    def __init__(self, path: str | os.PathLike[str] | S3Location) -> None:
        super().__init__(path)
        #: Files completed since the last durable flush (their data is not fsynced).
        self._unsynced: list[Path] = []
        #: Files were created or removed in the directory since the last durable flush.
        self._names_changed = False
        #: On an object store: the streams' part objects (``_open`` then stays empty).
        self._remote: ObjectParts | None = None
        if self.location is not None:
            self._remote = ObjectParts(self.location, self._suffix, self._encode_part,
                                       _part_keys)  # fmt: skip

    # ------------------------------------------------------------------ object stores
    def _encode_part(
        self, stream: str, schema: pa.Schema, batches: Sequence[pa.RecordBatch]
    ) -> pa.Buffer:
        """One part object: a complete file of the format holding ``batches``."""
        raise NotImplementedError(f"{self.name} writer cannot write to an object store")

    def _part_limits(self) -> tuple[int, int]:
        """Pending rows and bytes of a stream that make a write upload them as a part
        (bounding the memory they take between flushes)."""
        return (1 << 62, 64 << 20)

    def _store(self, stream: str, batch: pa.RecordBatch, *, new_part: bool) -> None:
        """Take ``batch``: into the stream's file, or pending for its next part object."""
        remote = self._remote
        if remote is None:
            self._write(stream, batch, new_part=new_part)
            return
        remote.add(stream, self._safe_stream(stream), batch)
        rows, nbytes = self._part_limits()
        if remote.pending_rows(stream) >= rows or remote.pending_bytes(stream) >= nbytes:
            try:
                remote.publish(stream, functools.partial(self._metadata_for, stream))
            except BaseException:  # the call is refused: its rows leave the buffer
                remote.take_back(stream)  # (a failed upload leaves its run pending, this last)
                raise
        self._stats.bytes_written += batch.nbytes
        self._stats.directory_bytes = remote.bytes_uploaded

    def _flush_remote(self, remote: ObjectParts) -> None:
        """Upload every stream's pending rows (and metadata changed since its last part);
        one stream's failure stops no other."""

        def one(stream: str) -> None:
            metadata = functools.partial(self._metadata_for, stream)
            remote.publish(stream, metadata)
            schema = self._table_schemas.get(stream)
            if schema is None:  # a frame stream: the schema of its batches
                dtype, shape = self._frame_specs[stream]
                schema = frames_to_batch(FrameBlock(
                    np.zeros((0, *shape), dtype), np.zeros(0, np.uint64),
                    np.zeros(0, np.uint64))).schema  # fmt: skip
            remote.publish_metadata(stream, schema, metadata)

        try:
            finish_all(functools.partial(one, stream) for stream in remote)
        finally:
            self._stats.directory_bytes = remote.bytes_uploaded

    # ------------------------------------------------------------------ the format
    @abstractmethod
    def _write(self, stream: str, batch: pa.RecordBatch, *, new_part: bool) -> None:
        """Append ``batch`` to the stream's current file, or to a new part."""

    @abstractmethod
    def _finish(self, opened: Any) -> None:
        """Complete and close one stream's open file."""

    @abstractmethod
    def _unseen(self, stream: str) -> int:
        """Rows (frames) of ``stream`` taken that a reader opening its files now may not
        see."""

    @abstractmethod
    def _open_fds(self) -> list[int]:
        """File descriptors of the open files that a durable flush fsyncs."""

    @property
    @abstractmethod
    def _compression(self) -> str | None:
        """The codec of the files (``StreamDescription.compression``)."""

    @property
    def _mimetype(self) -> str:
        return self.mimetype

    def _chunk_shape(self, stream: str, frames: bool) -> tuple[int, ...]:
        """Rows (frames) per chunk, where the format has a fixed one."""
        return ()

    # ------------------------------------------------------------------ public API
    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        """Append a table to ``stream`` (see :meth:`Writer.write_batch`); a schema change
        continues the stream in a new part file (see the class docstring)."""
        batch = self._check_batch(stream, batch)
        _, action = self._plan_change(stream, batch.schema)
        batch, action = self._conformed(stream, batch, action)
        self._store(stream, batch, new_part=action == "new_part")
        self._observe_metadata(stream, batch)
        if action == "new_part":  # the part's schema, as written (nullability included)
            self._table_schemas[stream] = batch.schema.remove_metadata()
        self._stats.batches += 1  # write_batch calls only, as in every format
        self._stats.rows += batch.num_rows

    def write_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any] | Sequence[npt.NDArray[Any]],
        *,
        timestamps_ns: npt.ArrayLike | None = None,
        frame_numbers: npt.ArrayLike | None = None,
    ) -> None:
        block = self._check_frames(stream, frames, timestamps_ns, frame_numbers)
        self._store(stream, frames_to_batch(block), new_part=False)
        self._record_frames(stream, block)  # only once stored: a refused call changes nothing
        self._stored = True
        self._stats.frames += len(block)

    def visible(self, stream: str) -> int:
        self._known_stream(stream)
        if self._remote is not None:
            return self.accepted(stream) - self._remote.pending_rows(stream)
        return self.accepted(stream) - self._unseen(stream)

    def describe(self, stream: str) -> StreamDescription:
        """The stream's first file (``key`` is ``""``: the file is the part), its parts,
        and its columns; a frame stream's dtype and frame shape, and in
        ``extra_keys`` the columns holding frames, timestamps and frame numbers."""
        self._known_stream(stream)
        first: Path | S3Location
        if self._remote is not None:  # the stream's prefix: a dataset of part objects
            first = self._remote.location.child(self._safe_names[stream])
        else:
            first = self._part_path(stream, 0)
        frames = stream not in self._table_metadata
        if frames:
            dtype, shape = self._frame_specs[stream]
            columns = {"timestamp_ns": str(FRAME_TIMESTAMP), "frame_number": "uint64",
                       "frame": f"fixed_shape_tensor[{dtype}]{list(shape)}"}  # fmt: skip
        else:
            columns = leaf_columns(self._table_schemas[stream])
        return StreamDescription(
            stream=stream,
            kind="frames" if frames else "table",
            format=self.name,
            mimetype=self._mimetype,
            path=first,
            key="",
            parts=self._stream_parts(stream, StreamPart(first, "", 0)),
            visible=self.visible(stream),
            accepted=self.accepted(stream),
            dtype=str(dtype) if frames else None,
            shape=tuple(shape) if frames else (),
            chunk_shape=self._chunk_shape(stream, frames),
            compression=self._compression,
            columns=columns,
            extra_keys=FRAME_COLUMNS if frames else {},
        )

    # ------------------------------------------------------------------ helpers
    def _conformed(
        self, stream: str, batch: pa.RecordBatch, action: str
    ) -> tuple[pa.RecordBatch, str]:
        """``batch`` as the stream's current part stores it, and what to do with it.

        A batch that changes nothing but column order, narrower types or
        ``string``/``large_string`` is cast to the part's schema. One holding nulls in a
        column the part declares non-nullable cannot go into it (Parquet refuses such a
        row group; an Arrow reader would trust the declaration): it starts a new part
        whose columns allow them.
        """
        current = self._table_schemas.get(stream)
        if action != "same" or current is None or current.equals(batch.schema):
            return batch, action
        batch = conform_batch(batch, current)
        schema = batch.schema
        for i, field in enumerate(schema):
            if not field.nullable and batch.column(i).null_count:
                schema = schema.set(i, field.with_nullable(True))
        if schema.equals(batch.schema):
            return batch, "same"
        return pa.RecordBatch.from_arrays(batch.columns, schema=schema), "new_part"

    def _stream_path(self, stream: str, *, new_part: bool = False) -> Path:
        path = super()._stream_path(stream, new_part=new_part)
        self._names_changed = True
        return path

    def _completed(self, path: Path) -> None:
        """``path`` was completed and closed: a durable flush fsyncs it."""
        self._unsynced.append(path)
        self._names_changed = True  # (Parquet removes its recovery file)

    def _sync(self) -> None:
        """fsync the open files, those completed since the last durable flush, and the
        directory (and its parent) when files were created or removed in it."""
        with storage_errors(self.path, "cannot make the flushed files durable (fsync)"):
            for fd in self._open_fds():
                os.fsync(fd)
            paths = [p for p in self._unsynced if p.exists()]
            if self._names_changed:
                paths.append(self.path)  # its entries; fsync_paths adds its parent's
            fsync_paths(paths)
        self._unsynced.clear()
        self._names_changed = False

    def _close(self) -> None:
        if self._remote is not None:
            self._flush_remote(self._remote)
            return
        try:
            finish_all(functools.partial(self._finish, opened) for opened in self._open.values())
        finally:
            self._open.clear()
