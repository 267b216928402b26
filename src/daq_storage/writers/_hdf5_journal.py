"""The commit journal of an HDF5 file: every in-place update of a commit, written to a
journal beside the file before any of them reaches the file.

A commit rewrites structures in place (object headers, heaps, indexes, the superblock);
ordering cannot make several such writes atomic. :func:`write_journal` writes them all,
with the file's size after the commit, to ``<file>.journal`` in one ``writev`` (a header
with a magic, a version, the size and the count; the writes; a CRC-32 of everything
before it), then the commit applies them to the file and :func:`remove_journal` removes
it. A kill before the journal is complete leaves a journal whose checksum fails (the file
was not touched by that commit); a kill after it leaves a journal that
:func:`repair_journal` applies again (applying twice changes nothing). Nothing is synced
but for a durable commit (``flush(durable=True)``: see
:meth:`~daq_storage.writers._hdf5_file.OrderedFile.commit`), whose journal is on the disk
before the file is touched.

The writer holds an open-file-description lock on a byte of the file far past its end
(:data:`LIVE_BYTE`; HDF5's readers use ``flock``, which it does not conflict with) while
it is open: :func:`repair_journal` leaves alone a file whose writer is alive.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from daq_storage._file_locks import lock_byte
from daq_storage.errors import StorageIOError

__all__ = ["LIVE_BYTE", "fsync_directory", "journal_path", "remove_journal", "repair_journal",
           "write_journal"]  # fmt: skip

_MAGIC = b"DAQH5JNL"
_VERSION = 1
_HEADER = struct.Struct("<8sIQQ")  # magic, version, file size after the commit, count
_ENTRY = struct.Struct("<QQ")  # offset, length
_CRC = struct.Struct("<I")
#: The byte a live writer locks (see the module notes): past any file's end.
LIVE_BYTE = 1 << 62


def journal_path(path: str | os.PathLike[str]) -> Path:
    """Where the journal of the HDF5 file at ``path`` is."""
    path = Path(path)
    return path.with_name(path.name + ".journal")


def write_journal(journal: Path, writes: Sequence[tuple[int, bytes]], size: int, *,
                  durable: bool = False) -> None:  # fmt: skip
    """Write ``writes`` ((offset, bytes) each) and the file ``size`` to a new ``journal``;
    ``durable``: synced, its name too, before this returns.

    Raises:
        OSError: the journal could not be written whole (it is removed: the file is as
            the last commit left it), or it exists (a stale journal is never replaced).
    """
    parts: list[bytes] = [_HEADER.pack(_MAGIC, _VERSION, size, len(writes))]
    for at, data in writes:
        parts += (_ENTRY.pack(at, len(data)), data)
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    parts.append(_CRC.pack(crc))
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        total, done = sum(map(len, parts)), os.writev(fd, parts)
        if done < total:  # a short writev (a signal, a huge commit): write what is left
            rest = memoryview(b"".join(parts))[done:]
            while len(rest):
                rest = rest[os.write(fd, rest) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        remove_journal(journal)
        raise
    os.close(fd)
    if durable:
        fsync_directory(journal.parent)


def fsync_directory(folder: Path) -> None:
    """Sync ``folder``'s entries (a file made or removed in it) to the disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def apply_writes(fd: int, writes: Sequence[tuple[int, bytes]], size: int) -> None:
    """Write ``writes`` to the file open as ``fd`` and set its size to ``size``."""
    for at, data in writes:
        view = memoryview(data)
        while len(view):
            written = os.pwrite(fd, view, at)
            view, at = view[written:], at + written
    if os.fstat(fd).st_size != size:
        os.ftruncate(fd, size)


def remove_journal(journal: Path) -> None:
    """Remove ``journal`` (gone already: nothing to do)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(journal)


def read_journal(journal: Path) -> tuple[list[tuple[int, bytes]], int] | None:
    """The writes and file size of a complete ``journal``; ``None`` for a torn one."""
    data = journal.read_bytes()
    if len(data) < _HEADER.size + _CRC.size:
        return None
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(memoryview(data)[: -_CRC.size]) != crc:
        return None
    magic, version, size, count = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _VERSION:
        return None
    writes, at = [], _HEADER.size
    for _ in range(count):
        offset, length = _ENTRY.unpack_from(data, at)
        at += _ENTRY.size
        writes.append((offset, data[at : at + length]))
        at += length
    return writes, size


def repair_journal(path: str | os.PathLike[str]) -> str | None:
    """Finish the commit a killed writer left in the journal of the HDF5 file at
    ``path``: what was done, or ``None`` when there is no journal.

    Raises:
        StorageIOError: ``EBUSY`` when a live writer has the file open.
    """
    path = Path(path)
    journal = journal_path(path)
    if not journal.exists():
        return None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        remove_journal(journal)
        return f"removed {journal.name}: the file it was for is gone"
    try:
        if not lock_byte(fd, LIVE_BYTE):
            raise StorageIOError(errno.EBUSY, f"cannot repair {path.name}: a writer has it "
                                 "open (it commits this journal itself)", str(path))  # fmt: skip
        found = read_journal(journal)
        if found is None:
            remove_journal(journal)
            return f"removed a torn {journal.name}: the commit it began never reached the file"
        writes, size = found
        apply_writes(fd, writes, size)
    finally:
        os.close(fd)
    remove_journal(journal)
    return f"applied {journal.name}: the commit its writer was killed in ({len(writes)} writes)"
