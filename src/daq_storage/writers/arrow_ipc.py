"""Arrow IPC: one streaming-format file per stream (``.arrows``), file format optional.

pyarrow's IPC writer writes into memory (:class:`MessageSink`); each call's messages
then go into the file at once, behind its end-of-stream marker (see ``_arrow_files``),
so a reader or a killed writer never meets half a batch, and a write the disk refuses
changes nothing a reader sees.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa

from daq_storage.errors import ConfigError, StorageIOError, UnsupportedData
from daq_storage.writers._arrow_files import (
    EOS,
    FILE_MAGIC,
    MessageSink,
    publish,
    rebuild_file_format,
    repair_arrow,
    replay_writer,
)
from daq_storage.writers._base import pwrite_all, storage_errors
from daq_storage.writers._per_stream import ArrowBatchWriter

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
    #: After a write the disk refused, pyarrow's writer may believe a dictionary (or, in
    #: the file format, a footer entry) is in the file that is not: a writer rebuilt from
    #: the file takes its place (see ``replay_writer``). Where that fails, the stream
    #: continues in a new part once this file is completed as it is.
    retired: bool = False
    completed: bool = False  # the file's end (marker or footer) is written


def _has_dictionaries(schema: pa.Schema) -> bool:
    def nested(kind: pa.DataType) -> bool:
        if pa.types.is_dictionary(kind):
            return True
        return any(nested(kind.field(i).type) for i in range(kind.num_fields))

    return any(nested(field.type) for field in schema)


class ArrowWriter(ArrowBatchWriter):
    """Arrow IPC files, one per stream, in the directory ``path``.

    The streaming format (default, ``<stream>.arrows``) is appended batch by batch, each
    ``write_batch`` / ``write_frames`` call made visible to readers at once: at every
    instant, also after the process is killed, ``pyarrow.ipc.open_stream(f).read_all()``
    and ``polars.read_ipc_stream(f)`` read every batch written so far, and never part of
    one. ``ipc_format="file"`` writes the random-access file format (``<stream>.arrow``,
    readable after :meth:`close`, or after :func:`repair_arrow` once killed). A schema
    change continues the stream in ``<stream>__part0001.arrows`` and so on. Frames are
    stored as a ``fixed_shape_tensor`` column ``frame`` beside ``timestamp_ns`` and
    ``frame_number``.

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

    Args:
        path: output directory.
        ipc_format: ``"stream"`` (``.arrows``) or ``"file"`` (``.arrow``).
        compression: ``None``, ``"lz4"`` or ``"zstd"`` IPC buffer compression.
    """

    name: ClassVar[str] = "arrow"
    suffixes: ClassVar[tuple[str, ...]] = (".arrows", ".arrow")
    supports_frames: ClassVar[bool] = True
    supports_tables: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ipc_format: Literal["stream", "file"] = "stream",
        compression: Literal["lz4", "zstd"] | None = None,
    ) -> None:
        if ipc_format not in ("stream", "file"):
            raise ConfigError(f"arrow ipc_format must be 'stream' or 'file', got {ipc_format!r}")
        if compression not in (None, "none", "lz4", "zstd"):
            raise ConfigError(
                f"arrow compression must be None, 'lz4' or 'zstd', got {compression!r}"
            )
        super().__init__(path)
        self.ipc_format = ipc_format
        self._suffix = ".arrows" if ipc_format == "stream" else ".arrow"
        self._options = pa.ipc.IpcWriteOptions(
            compression=None if compression in (None, "none") else compression
        )
        self._open: dict[str, _Open] = {}

    def _file_for(self, stream: str, schema: pa.Schema) -> _Open:
        current = self._open.get(stream)
        if current is not None:  # schema changed (or the file retired): the next part
            if current.retired:  # completed first: until then, no new part is started
                self._complete(current)
            del self._open[stream]
            self._finish(current)
        metadata = self._metadata_for(stream, schema)
        full = schema.with_metadata(metadata)
        header = (FILE_MAGIC if self.ipc_format == "file" else b"") + full.serialize().to_pybytes()
        self._ensure_room(len(header), f"stream {stream!r}", self.path)
        path = self._stream_path(stream, new_part=stream in self._parts)
        fd = self._create_file(stream, path)
        try:
            with storage_errors(path, "cannot create Arrow IPC file"):
                pwrite_all(fd, [header, EOS], 0)  # readable (no batches) from the start
                sink = MessageSink(header)
                target = pa.PythonFile(sink, mode="w")
                if self.ipc_format == "stream":
                    writer: Any = pa.ipc.new_stream(target, full, options=self._options)
                else:
                    writer = pa.ipc.new_file(target, full, options=self._options)
        except BaseException:
            self._abandon_file(stream, path, fd)
            raise
        opened = _Open(stream, path, fd, sink, writer, schema, dict(metadata), len(header),
                       retired=False)  # fmt: skip
        self._open[stream] = opened
        return opened

    def _write(self, stream: str, batch: pa.RecordBatch) -> None:
        target = self._open.get(stream)
        nbytes = batch.nbytes
        fresh = target is None or target.retired or not target.schema.equals(batch.schema)
        if fresh:
            self._ensure_room(nbytes, f"stream {stream!r}", self.path)
            target = self._file_for(stream, batch.schema)
        assert target is not None
        try:
            self._ensure_room(nbytes, f"stream {stream!r}", target.path)
            self._append(target, lambda: target.writer.write_batch(batch), "a batch")
        except BaseException:
            if fresh and target.end == self._header_end(target):
                self._drop_empty(target)  # no part file without a batch
            raise
        self._stats.bytes_written += nbytes

    def _header_end(self, opened: _Open) -> int:
        schema = opened.schema.with_metadata(opened.metadata)
        return (len(FILE_MAGIC) if self.ipc_format == "file" else 0) + len(schema.serialize())

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
            raise UnsupportedData(
                f"stream {target.stream!r}: Arrow IPC cannot store {what}: {exc}"
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
                                options=self._options)  # fmt: skip
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

    def flush(self) -> None:
        """Write metadata set or changed since; every batch is already in its file (in
        the operating system's hands: nothing is fsynced)."""
        self._check_open()
        for opened in self._open.values():
            if not opened.retired:
                self._write_late_metadata(opened)

    def _finish(self, opened: _Open) -> None:
        try:
            if not opened.retired:
                self._write_late_metadata(opened)
        finally:
            try:
                self._complete(opened)
            finally:
                os.close(opened.fd)

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
                opened.completed = True
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
            opened.completed = True
