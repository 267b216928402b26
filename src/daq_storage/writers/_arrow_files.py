"""Arrow IPC files appended so that no reader ever sees half a batch, and their repair.

A stream file always ends with the end-of-stream marker (``EOS``: ``0xFFFFFFFF``, then a
zero length) right after its last complete message. Appending messages (a batch, with
any dictionary messages pyarrow emits before it) takes two writes:

1. everything but the first message's length, then a new ``EOS``, goes *after* the
   current ``EOS`` (readers stop at that marker and never look further);
2. one aligned 4-byte write puts the first message's length over the zero of the old
   ``EOS``: the messages become visible all at once.

A process killed at any point leaves a file that ``pyarrow.ipc.open_stream(...).read_all()``
and ``polars.read_ipc_stream`` read completely, up to the last message published
(possibly followed by bytes after the ``EOS`` that no reader looks at). A file written
otherwise (a torn tail left by another writer, or by a copy) is cut back to its last
complete message by :func:`repair_arrow`, which also gives a file-format file
(``.arrow``) killed before its footer was written a footer again.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from daq_storage.errors import StorageIOError
from daq_storage.writers._base import pwrite_all, storage_errors
from daq_storage.writers._guards import directory_held

__all__ = [
    "EOS",
    "FILE_MAGIC",
    "MessageSink",
    "publish",
    "rebuild_file_format",
    "repair_arrow",
    "replay_writer",
]

EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
_CONTINUATION = b"\xff\xff\xff\xff"
FILE_MAGIC = b"ARROW1\x00\x00"  # the file format's leading magic and padding


class MessageSink:
    """What pyarrow's IPC writer writes to (through ``pa.PythonFile``): kept in memory
    until :func:`publish` puts it into the file.

    ``header`` is what the file already holds (file magic, schema message): the writer
    emits the same bytes first, and they are checked and dropped.
    """

    closed = False

    def __init__(self, header: bytes) -> None:
        self.parts: list[memoryview] = []
        self.position = 0
        self._header = header
        self._unchecked = len(header)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self._unchecked:
            taken = min(self._unchecked, view.nbytes)
            start = len(self._header) - self._unchecked
            if view[:taken] != self._header[start : start + taken]:
                raise OSError(errno.EIO, "pyarrow's IPC writer did not start with the schema")
            self._unchecked -= taken
            self.position += taken
            view = view[taken:]
        if view.nbytes:
            self.parts.append(view)  # the view keeps pyarrow's buffer alive: no copy
            self.position += view.nbytes
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        return

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[memoryview]:
        parts, self.parts = self.parts, []
        return parts


class _ReplaySink(MessageSink):
    """A :class:`MessageSink` whose first ``end`` bytes are compared with the file's
    (``fd``) and dropped: what a writer rebuilt from the file writes again."""

    def __init__(self, fd: int, end: int) -> None:
        super().__init__(b"")
        self._fd, self._end = fd, end
        self.matches = True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self.position < self._end:
            count = min(self._end - self.position, view.nbytes)
            if os.pread(self._fd, count, self.position) != view[:count]:
                self.matches = False
            self.position += count
            view = view[count:]
        if view.nbytes:
            super().write(view)
        return len(data)


def replay_writer(
    path: Path, fd: int, end: int, *, file_format: bool, options: pa.ipc.IpcWriteOptions
) -> tuple[Any, MessageSink] | None:
    """A new pyarrow IPC writer in the state of one that wrote ``path`` up to ``end``
    (where its end-of-stream marker starts), and its sink; ``None`` when writing the
    file's batches again does not give the file's bytes (the file then cannot be
    continued). After a write the disk refused, the old writer believes the lost
    batch (or dictionary, or footer entry) is in the file: this one does not."""
    skip = len(FILE_MAGIC) if file_format else 0
    sink = _ReplaySink(fd, end)
    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_stream(pa.BufferReader(source.read_buffer(end)[skip:]))
            target = pa.PythonFile(sink, mode="w")
            new = pa.ipc.new_file if file_format else pa.ipc.new_stream
            writer: Any = new(target, reader.schema, options=options)
            for batch, custom in reader.iter_batches_with_custom_metadata():
                writer.write_batch(batch, custom_metadata=custom)
                if not sink.matches:
                    return None
    except (pa.ArrowException, OSError):
        return None
    if not sink.matches or sink.position != end or sink.take():
        return None
    return writer, sink


def publish(fd: int, parts: Sequence[memoryview], at: int) -> int:
    """Put IPC messages (``parts``, starting with a message) at ``at``, where the file has
    its ``EOS``, visible all at once (see the module docstring); the new end (where the new
    ``EOS`` starts)."""
    head = b"".join(bytes(p) for p in _first(parts, 8))
    if head[:4] != _CONTINUATION or len(head) != 8:
        raise OSError(errno.EIO, "pyarrow's IPC writer wrote something other than a message")
    rest = _after(parts, 8)
    end = at + 8 + sum(p.nbytes for p in rest)
    pwrite_all(fd, [*rest, EOS], at + 8)
    pwrite_all(fd, [head[4:]], at + 4)  # the messages appear: one aligned 4-byte store
    return end


def _first(parts: Sequence[memoryview], count: int) -> list[memoryview]:
    out = []
    for part in parts:
        if count <= 0:
            break
        out.append(part[:count])
        count -= min(count, part.nbytes)
    return out


def _after(parts: Sequence[memoryview], count: int) -> list[memoryview]:
    out = []
    for part in parts:
        if count >= part.nbytes:
            count -= part.nbytes
            continue
        out.append(part[count:])
        count = 0
    return out


# ---------------------------------------------------------------------- reading back
def _complete_messages(source: pa.NativeFile) -> tuple[int, bool]:
    """Where the last complete message ends, reading from the source's position, and
    whether an ``EOS`` follows it."""
    reader = pa.ipc.MessageReader.open_stream(source)
    good = source.tell()
    while True:
        try:
            reader.read_next_message()
        except StopIteration:
            return good, source.tell() > good  # EOF exactly at good, or an EOS read
        except (pa.ArrowInvalid, OSError):
            return good, False
        good = source.tell()


def repair_arrow(path: str | os.PathLike[str]) -> str | None:
    """Make an Arrow IPC file that a killed writer (or an interrupted copy) left behind
    readable again; what was done, or ``None`` when it needed nothing.

    A stream file (``.arrows``) is cut back to its last complete message and ends with
    an end-of-stream marker: every complete batch is kept. A file-format file
    (``.arrow``) without a valid footer is rewritten from its complete batches with a
    footer. An empty file (killed right after it was created) is removed.

    Raises:
        StorageIOError: ``EBUSY`` when a writer has the file's directory open;
            ``EINVAL`` when the file holds no complete schema (nothing to recover).
    """
    path = Path(path)
    with (
        directory_held(path.parent, f"repair {path.name}: a writer has it open"),
        storage_errors(path, "cannot repair Arrow IPC file"),
    ):
        return _repair(path)


def _repair(path: Path) -> str | None:
    size = path.stat().st_size
    if size == 0:
        path.unlink()
        return "removed: its writer was killed right after creating it (it held nothing)"
    with pa.OSFile(str(path)) as source:
        file_format = source.read(len(FILE_MAGIC)) == FILE_MAGIC
        if file_format:
            try:
                pa.ipc.open_file(source)
            except (pa.ArrowInvalid, OSError):
                pass
            else:
                return None
            source.seek(len(FILE_MAGIC))
        else:
            source.seek(0)
        start = source.tell()
        good, closed = _complete_messages(source)
    if good == start:
        raise StorageIOError(
            errno.EINVAL,
            f"cannot repair {path.name}: it holds no complete Arrow IPC schema",
            str(path),
        )
    if file_format:
        try:
            batches = rebuild_file_format(path, good)
        except pa.ArrowException as exc:
            raise StorageIOError(errno.EINVAL, f"cannot rebuild {path.name} from its complete "
                                 f"batches: {exc}", str(path)) from exc  # fmt: skip
        return f"rewritten with a footer: {batches} complete batches kept"
    end = good + len(EOS) if closed else good
    if end == size:
        return None
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, good)
        pwrite_all(fd, [EOS], good)
    finally:
        os.close(fd)
    return f"cut back to its last complete message: {size - good} bytes dropped"


def rebuild_file_format(path: Path, good: int) -> int:
    """Rewrite a file-format file whose footer is missing from its messages up to ``good``
    (a complete file, swapped in by rename); the number of batches kept."""
    temporary = path.with_name(f".{path.name}.rebuilding")
    with pa.memory_map(str(path)) as source:
        stream = pa.BufferReader(source.read_buffer(good)[len(FILE_MAGIC) :])
        reader = pa.ipc.open_stream(stream)
        options = pa.ipc.IpcWriteOptions(emit_dictionary_deltas=True)
        count = 0
        try:
            with pa.ipc.new_file(str(temporary), reader.schema, options=options) as writer:
                for batch, custom in reader.iter_batches_with_custom_metadata():
                    writer.write_batch(batch, custom_metadata=custom)
                    count += 1
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    os.replace(temporary, path)
    return count
