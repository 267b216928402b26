"""Arrow IPC: one streaming-format file per stream (``.arrows``), file format optional.

pyarrow's IPC writer writes into memory (:class:`MessageSink`); each call's messages
then go into the file at once, behind its end-of-stream marker (see ``_arrow_files``),
so a reader or a killed writer never meets half a batch, and a write the disk refuses
changes nothing a reader sees.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import model_validator

from daq_storage.errors import StorageIOError, UnsupportedData
from daq_storage.location import S3Location, S3Options, parse_location
from daq_storage.writers._arrow_batches import ArrowBatchWriter
from daq_storage.writers._arrow_files import (
    EOS,
    FILE_MAGIC,
    MessageSink,
    publish,
    rebuild_file_format,
    repair_arrow,
    replay_writer,
)
from daq_storage.writers._base import WriterOptions, finish_all, pwrite_all, storage_errors

__all__ = ["ArrowWriter", "repair_arrow"]


@dataclass
class _Open:
    stream: str
    path: Path
    fd: int
    sink: MessageSink  # what pyarrow's writer writes to, in memory
    writer: pa.ipc.RecordBatchStreamWriter | pa.ipc.RecordBatchFileWriter
    schema: pa.Schema
    metadata: dict[str, str]  # what the file holds: header schema, then batches' custom metadata
    end: int  # where the file's end-of-stream marker starts: everything before is complete
    header_end: int  # where the header (magic, schema) ends: no batch before it
    first: int  # the stream's row (frame) index of the file's first row
    rows: int = 0  # rows (frames) in the file
    #: After a write the disk refused, pyarrow's writer may believe a dictionary (or, in
    #: the file format, a footer entry) is in the file that is not: a writer rebuilt from
    #: the file takes its place (see ``replay_writer``). Where that fails, the stream
    #: continues in a new part once this file is completed as it is.
    retired: bool = False
    completed: bool = False  # the file's end (marker or footer) is written


class _Refused(UnsupportedData):
    """pyarrow's IPC writer refused a batch (nothing reached the file)."""

    def __init__(self, message: str, *, replaced_dictionary: bool) -> None:
        super().__init__(message)
        self.replaced_dictionary = replaced_dictionary


def _has_dictionaries(schema: pa.Schema) -> bool:
    def nested(kind: pa.DataType) -> bool:
        if pa.types.is_dictionary(kind):
            return True
        return any(nested(kind.field(i).type) for i in range(kind.num_fields))

    return any(nested(field.type) for field in schema)


class _Options(WriterOptions):
    ipc_format: Literal["stream", "file"] | None = None
    compression: Literal["lz4", "zstd", "none"] | None = None
    compression_level: int | None = None
    storage_options: S3Options | dict[str, Any] | None = None

    @model_validator(mode="after")
    def _level_fits_codec(self) -> _Options:
        level, codec = self.compression_level, self.compression
        if level is None:
            return self
        if codec in (None, "none"):
            raise ValueError(
                f"compression_level {level} needs a compression ('lz4' or 'zstd'), got {codec!r}"
            )
        low = pa.Codec.minimum_compression_level(codec)
        high = pa.Codec.maximum_compression_level(codec)
        if not low <= level <= high:
            raise ValueError(f"compression_level for {codec!r} must be {low}..{high}, got {level}")
        return self


class ArrowWriter(ArrowBatchWriter):
    """Arrow IPC files, one per stream, in the directory ``path``.

    The streaming format (default, ``<stream>.arrows``) is appended batch by batch, each
    ``write_batch`` / ``write_frames`` call made visible to readers at once: at every
    instant, also after the process is killed, ``pyarrow.ipc.open_stream(f).read_all()``
    and ``polars.read_ipc_stream(f)`` read every batch written so far, and never part of
    one (:meth:`visible` always equals :meth:`accepted`; :meth:`flush` only writes late
    metadata). ``ipc_format="file"`` writes the random-access file format
    (``<stream>.arrow``), whose footer pyarrow writes once, when the file is completed:
    at :meth:`close`, or when the stream continues in a new part. Until then
    ``pyarrow.ipc.open_file`` and ``polars.read_ipc`` cannot open the file (a killed
    writer's file is completed by :func:`repair_arrow`), so :meth:`visible` counts the
    rows of completed files only, and :meth:`flush` does not change that. Frames are
    stored as a ``fixed_shape_tensor`` column ``frame`` beside ``timestamp_ns`` and
    ``frame_number``.

    Schema evolution: an IPC file's schema is fixed, so every kind of change (a widened
    type, a new or missing column, an incompatible type) continues the stream in a new
    part file, ``<stream>__part0002.arrows``, ``__part0003``, ... (in the file format
    also a batch whose dictionaries replace the file's). Each later part's schema
    metadata records ``daq_storage.part_of`` (the stream's name) and
    ``daq_storage.first_row`` (the stream's index of its first row), JSON text as all
    metadata; :meth:`describe` lists the parts. Each part reads on its own; joined::

        parts = sorted(folder.glob("power__part*.arrows"))
        table = pa.concat_tables([pa.ipc.open_stream(f).read_all()
                                  for f in [folder / "power.arrows", *parts]],
                                 promote_options="permissive")

    A write the disk refuses (disk full, file-size limit) raises ``StorageIOError`` and
    leaves the file as it was before the call; later calls go on in the same file (in a
    new part when the stream has dictionary columns or uses the file format).

    A stream file's schema metadata is the stream's metadata (the schema metadata of
    its first batch, see :meth:`Writer.write_batch`) and what :meth:`set_metadata` set
    before the stream's first write, all as JSON text. An IPC schema cannot change once
    written, and pyarrow writes the file format's footer with that same schema, so a
    value set later goes at once into the file as the ``custom_metadata`` of an empty
    record batch (and into the schema of any later part file); changes of the stream's
    own metadata (``metadata_changes``) go there at :meth:`flush` and :meth:`close`. The
    complete metadata is the schema metadata updated, in order, by each batch's custom
    metadata::

        with pa.ipc.open_stream(path) as reader:
            metadata = dict(reader.schema.metadata or {})
            for _, custom in reader.iter_batches_with_custom_metadata():
                metadata.update(custom or {})

    ``flush(durable=True)`` fsyncs every open file, the files completed since the last
    durable flush, and the directory.

    On an object store (``path`` an ``s3://bucket/prefix`` URL, or an
    :class:`~daq_storage.location.S3Location`), which has no appends, batches are
    buffered and each flush uploads each stream's new rows as one complete IPC file,
    ``<prefix>/<stream>/part-000001.arrow``, ``part-000002``, ... (the file format by
    default there: ``pyarrow.dataset.dataset(..., format="arrow")`` and
    ``polars.scan_ipc(".../*.arrow")`` read a stream's parts as one table); rows are
    also uploaded once 64 MiB are pending, and :meth:`visible` counts uploaded rows.
    Each part's schema metadata holds the stream's metadata as of its upload. See
    ``_object_parts`` for the layout and what a failed upload leaves.

    Args:
        path: output directory, or an ``s3://bucket/prefix`` URL.
        ipc_format: ``"stream"`` (``.arrows``) or ``"file"`` (``.arrow``); default the
            streaming format for a directory, the file format for an object store.
        compression: ``None`` (or ``"none"``), ``"lz4"`` or ``"zstd"`` IPC buffer
            compression (``[storage] compression``).
        compression_level: the codec's level (``lz4`` 1-12, ``zstd`` up to 22), ``None``
            for its default (``[storage] compression_level``).
        storage_options: how to reach an ``s3://`` URL (an
            :class:`~daq_storage.location.S3Options` or a dict of its fields; unset
            fields from the ``AWS_*`` variables and profiles).
    """

    name: ClassVar[str] = "arrow"
    supports_object_storage: ClassVar[bool] = True
    suffixes: ClassVar[tuple[str, ...]] = (".arrows", ".arrow")
    supports_frames: ClassVar[bool] = True
    supports_tables: ClassVar[bool] = True
    mimetype: ClassVar[str] = "application/vnd.apache.arrow.stream"
    on_widening: ClassVar[str] = "new_part"
    on_new_columns: ClassVar[str] = "new_part"
    on_incompatible: ClassVar[str] = "new_part"
    Options: ClassVar[type[WriterOptions]] = _Options
    config_keys: ClassVar[dict[str, str]] = {
        "compression": "compression",
        "compression_level": "compression_level",
    }

    def __init__(
        self,
        path: str | os.PathLike[str] | S3Location,
        *,
        ipc_format: Literal["stream", "file"] | None = None,
        compression: Literal["lz4", "zstd", "none"] | None = None,
        compression_level: int | None = None,
        storage_options: S3Options | Mapping[str, Any] | None = None,
    ) -> None:
        options = self.validate_options(ipc_format=ipc_format, compression=compression,
                                        compression_level=compression_level,
                                        storage_options=storage_options)  # fmt: skip
        assert isinstance(options, _Options)
        location = parse_location(path, storage_options)
        self.ipc_format: Literal["stream", "file"] = options.ipc_format or (
            "stream" if isinstance(location, Path) else "file"
        )
        super().__init__(location)
        self.options = options
        self._suffix = ".arrows" if self.ipc_format == "stream" else ".arrow"
        if self._remote is not None:
            self._remote.suffix = self._suffix
        codec = None if options.compression in (None, "none") else options.compression
        if codec is not None and options.compression_level is not None:
            codec = pa.Codec(codec, compression_level=options.compression_level)
        self._ipc_options = pa.ipc.IpcWriteOptions(compression=codec)
        self._open: dict[str, _Open] = {}
        #: File format: per stream, its rows in files completed one after the other
        #: from its first (what a reader can open).
        self._completed_rows: dict[str, int] = {}

    def _encode_part(
        self, stream: str, schema: pa.Schema, batches: Sequence[pa.RecordBatch]
    ) -> pa.Buffer:
        sink = pa.BufferOutputStream()
        opener = pa.ipc.new_stream if self.ipc_format == "stream" else pa.ipc.new_file
        try:
            with opener(sink, schema, options=self._ipc_options) as writer:
                for batch in batches:
                    writer.write_batch(batch)
        except pa.ArrowException as exc:
            raise UnsupportedData(f"stream {stream!r}: Arrow IPC cannot store it: {exc}") from exc
        return sink.getvalue()

    @property
    def _mimetype(self) -> str:
        if self.ipc_format == "file":
            return "application/vnd.apache.arrow.file"
        return self.mimetype

    @property
    def _compression(self) -> str | None:
        codec = self.options.compression
        return None if codec in (None, "none") else str(codec)

    def _unseen(self, stream: str) -> int:
        if self.ipc_format == "stream":
            return 0  # every batch is published whole as it is written
        return self.accepted(stream) - self._completed_rows.get(stream, 0)

    def _open_fds(self) -> list[int]:
        return [opened.fd for opened in self._open.values()]

    def _file_for(self, stream: str, schema: pa.Schema) -> _Open:
        current = self._open.get(stream)
        if current is not None:  # a new part (or the file retired): this one completed first
            if current.retired:
                self._complete(current)
            del self._open[stream]
            self._finish(current)
        first = self._taken(stream)
        path = self._stream_path(stream, new_part=stream in self._part_index)
        try:
            metadata = {**self._metadata_for(stream, schema), **self._part_keys(stream)}
            full = schema.with_metadata(metadata)
            magic = FILE_MAGIC if self.ipc_format == "file" else b""
            header = magic + full.serialize().to_pybytes()
            self._ensure_room(len(header), f"stream {stream!r}", self.path)
        except BaseException:
            self._forget_file(stream, path)
            raise
        # readable (no batches) from its birth
        fd = self._create_file(stream, path, lambda fd: pwrite_all(fd, [header, EOS], 0))
        try:
            with storage_errors(path, "cannot create Arrow IPC file"):
                sink = MessageSink(header)
                target = pa.PythonFile(sink, mode="w")
                if self.ipc_format == "stream":
                    writer: Any = pa.ipc.new_stream(target, full, options=self._ipc_options)
                else:
                    writer = pa.ipc.new_file(target, full, options=self._ipc_options)
        except BaseException:
            self._abandon_file(stream, path, fd)
            raise
        opened = _Open(stream, path, fd, sink, writer, schema, dict(metadata), len(header),
                       len(header), first)  # fmt: skip
        self._open[stream] = opened
        return opened

    def _write(self, stream: str, batch: pa.RecordBatch, *, new_part: bool) -> None:
        target = self._open.get(stream)
        nbytes = batch.nbytes
        fresh = (new_part or target is None or target.retired
                 or not target.schema.equals(batch.schema))  # fmt: skip
        if fresh:
            self._ensure_room(nbytes, f"stream {stream!r}", self.path)
            target = self._file_for(stream, batch.schema)
        assert target is not None
        try:
            self._ensure_room(nbytes, f"stream {stream!r}", target.path)
            self._append(target, lambda: target.writer.write_batch(batch), "a batch")
        except _Refused as refused:
            if fresh and target.end == target.header_end:
                self._drop_empty(target)  # no part file without a batch
            if refused.replaced_dictionary and not fresh:
                # The file format keeps one dictionary per column: the batch goes on in
                # a new part, as any schema change does.
                self._write(stream, batch, new_part=True)
                return
            raise
        except BaseException:
            if fresh and target.end == target.header_end:
                self._drop_empty(target)
            raise
        target.rows += batch.num_rows
        self._stats.bytes_written += nbytes

    def _drop_empty(self, opened: _Open) -> None:
        """Remove a file started by a write that failed: it holds no batch."""
        del self._open[opened.stream]
        self._abandon_file(opened.stream, opened.path, opened.fd)

    def _append(self, target: _Open, emit: Callable[[], None], what: str) -> None:
        """Let pyarrow's writer ``emit`` messages (into memory), then publish them; on a
        failure the file is left as it was before."""
        try:
            emit()
        except pa.ArrowException as exc:
            if target.sink.take():  # the writer's state may now be ahead of the file
                self._resync(target)
            raise _Refused(
                f"stream {target.stream!r}: Arrow IPC cannot store {what}: {exc}",
                replaced_dictionary="Dictionary replacement" in str(exc),
            ) from None
        parts = target.sink.take()
        if not parts:
            return
        try:
            target.end = publish(target.fd, parts, target.end)
        except OSError as exc:
            self._undo(target)
            code = exc.errno if exc.errno is not None else errno.EIO
            later = (
                "later writes go on in a new part file once it is completed"
                if target.retired
                else "later writes go on in it"
            )
            raise StorageIOError(
                code,
                f"cannot write {what} of stream {target.stream!r}: {exc.strerror or exc}; "
                f"{target.path.name} keeps everything written before it, and {later}",
                str(target.path),
            ) from exc

    def _undo(self, target: _Open) -> None:
        """After a failed write: drop the bytes past the end-of-stream marker (nothing a
        reader sees changed); retire the file where pyarrow's writer state moved on."""
        with contextlib.suppress(OSError):  # past the marker, where no reader looks
            os.ftruncate(target.fd, target.end + len(EOS))
        self._recheck_room()
        if self.ipc_format == "file" or _has_dictionaries(target.schema):
            self._resync(target)

    def _resync(self, target: _Open) -> None:
        """Replace the file's pyarrow writer by one rebuilt from what the file holds, so
        that later writes go on in it; retire the file where that is not possible."""
        rebuilt = replay_writer(target.path, target.fd, target.end,
                                file_format=self.ipc_format == "file",
                                options=self._ipc_options)  # fmt: skip
        if rebuilt is None:
            target.retired = True
        else:
            target.writer, target.sink = rebuilt

    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        """Schema metadata (JSON value) of the stream's file, or of every stream's file
        (``stream=None``). Files already open get it at once as the custom metadata of an
        empty batch (see the class docstring).

        Raises:
            UnsupportedData: the file format cannot take it after the first batch of a
                stream with dictionary columns (its empty batch would replace their
                dictionaries); nothing changes. Set it before the stream's first write,
                or write the streaming format.
        """
        names = list(self._open) if stream is None else [stream]
        if self.ipc_format == "file":
            for name in names:
                opened = self._open.get(name)
                if opened is not None and not opened.retired and _has_dictionaries(opened.schema):
                    raise UnsupportedData(
                        f"stream {name!r}: metadata {key!r} cannot go into {opened.path.name} "
                        "after its first batch: the Arrow IPC file format cannot take it with "
                        "dictionary columns; set it before the first batch, or use "
                        'ipc_format="stream"'
                    )
        super().set_metadata(key, value, stream=stream)
        for name in names:
            opened = self._open.get(name)
            if opened is not None and not opened.retired:
                # (else its next file does not exist yet: the value goes into its header)
                self._write_late_metadata(opened)

    def _write_late_metadata(self, opened: _Open) -> None:
        """Metadata the file does not hold yet, as the custom metadata of an empty batch."""
        late = {
            key: text
            for key, text in self._metadata_for(opened.stream).items()
            if opened.metadata.get(key) != text
        }
        if not late:
            return
        empty = pa.RecordBatch.from_pylist([], schema=opened.schema)
        self._append(opened, lambda: opened.writer.write_batch(empty, custom_metadata=late),
                     f"metadata {sorted(late)}")  # fmt: skip
        opened.metadata.update(late)

    def flush(self, *, durable: bool = False) -> None:
        """Write metadata set or changed since; every batch is already in its file (a
        file-format file becomes readable only when completed: see the class
        docstring). ``durable=True`` then fsyncs the files and the directory."""
        self._check_open()
        if self._remote is not None:  # uploads are durable once confirmed
            self._flush_remote(self._remote)
            return
        steps: list[Callable[[], object]] = [
            functools.partial(self._write_late_metadata, opened)
            for opened in self._open.values()
            if not opened.retired
        ]
        if durable:
            steps.append(self._sync)
        finish_all(steps)

    def _finish(self, opened: _Open) -> None:
        try:
            if not opened.retired:
                self._write_late_metadata(opened)
        finally:
            try:
                self._complete(opened)
            finally:
                os.close(opened.fd)
                self._completed(opened.path)

    def _complete(self, opened: _Open) -> None:
        """The end of the file: the end-of-stream marker (there already), or the file
        format's footer; a retired file-format file is rewritten with a footer.

        Raises:
            StorageIOError: the file could not be completed (the disk is full): it keeps
                every complete batch, and ``daq-storage repair`` completes it.
        """
        if opened.completed:
            return
        repair = (
            "; it keeps every complete batch, and `daq-storage repair` on it completes it"
            if self.ipc_format == "file"
            else ""
        )
        with storage_errors(opened.path, f"cannot complete {opened.path.name}{repair}"):
            if opened.retired:
                os.ftruncate(opened.fd, opened.end + len(EOS))
                if self.ipc_format == "file":
                    self._ensure_room(opened.end, f"the footer of {opened.path.name}",
                                      opened.path)  # fmt: skip
                    rebuild_file_format(opened.path, opened.end)
                self._mark_completed(opened)
                return
            opened.writer.close()
            tail = opened.sink.take()
            try:
                end = pwrite_all(opened.fd, tail, opened.end) if tail else opened.end + len(EOS)
                os.ftruncate(opened.fd, end)
            except OSError:
                # Back to the file's complete batches and their end-of-stream marker; the
                # writer is closed: the file is retired, to be rebuilt with its footer.
                with contextlib.suppress(OSError):
                    os.ftruncate(opened.fd, opened.end + len(EOS))
                    pwrite_all(opened.fd, [EOS], opened.end)
                opened.retired = True
                raise
            self._mark_completed(opened)

    def _mark_completed(self, opened: _Open) -> None:
        opened.completed = True
        if self._completed_rows.get(opened.stream, 0) == opened.first:  # parts before: readable
            self._completed_rows[opened.stream] = opened.first + opened.rows
