"""The file an HDF5 writer writes through: every commit of HDF5's updates is atomic with
respect to a kill of the process.

HDF5 (without SWMR) writes its metadata in place when it flushes or evicts it: object
headers, heaps, chunk indexes, the superblock. A process killed between two of these
writes leaves a file that fails to open or whose datasets disagree in length. Through
h5py's file-object driver, this class keeps HDF5's writes into the part of the file the
last commit left (the *durable* part) in memory until :meth:`commit`; writes past it (new
space, which nothing on disk points at) go to the disk at once. :meth:`commit`, at the
end of every flush, gathers the held writes, the end-of-file address in the superblock
raised to cover everything written (:func:`~daq_storage.writers._hdf5_superblock.
eoa_patch`) and any truncation, writes them to a journal in one system call, applies
them to the file and removes the journal (see :mod:`~daq_storage.writers._hdf5_journal`).
A writer killed inside a commit leaves the journal: ``daq-storage repair`` applies it.
A durable commit also syncs, in order: the new space, the journal, the file, the removal.
Readers (another process, or another ``h5py.File`` in this one) see the last commit
until the next one is applied.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from daq_storage._file_locks import lock_byte
from daq_storage.errors import DaqStorageError, FormatError, StorageIOError
from daq_storage.writers._base import storage_errors
from daq_storage.writers._hdf5_journal import (
    LIVE_BYTE,
    apply_writes,
    fsync_directory,
    remove_journal,
    write_journal,
)
from daq_storage.writers._hdf5_superblock import eoa_patch

__all__ = ["OrderedFile", "failing_step"]

#: Signatures of HDF5 structures that hold values, which indexes and headers point at.
_VALUE_HEAPS = (b"GCOL", b"FHDB")
_SUPERBLOCK_END = 48  # a version 2 or 3 superblock with 8-byte addresses, at 0


def _apply_order(held: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The held writes in the order that leaves the file readable after most kills even
    before ``repair`` applies the journal: the superblock's end-of-file address first
    (it only widens what a reader accepts), heaps of values next (nothing points at
    their new objects yet), then the rest from the end of the file to its start
    (structures made later, such as chunk index nodes, before the older headers that
    point at them)."""
    superblock = [(at, data) for at, data in held if at < _SUPERBLOCK_END]
    later = [(at, data) for at, data in held if at >= _SUPERBLOCK_END]
    heaps = [(at, data) for at, data in later if data[:4] in _VALUE_HEAPS]
    rest = [(at, data) for at, data in later if data[:4] not in _VALUE_HEAPS]
    return [*superblock, *heaps, *reversed(rest)]


class OrderedFile:
    """A file-like object over ``fd`` for ``h5py``'s ``fileobj`` driver (see the module
    notes), committing through the journal at ``journal``. It owns ``fd`` once
    :meth:`close` is called, and holds the lock that says its writer is alive."""

    def __init__(self, fd: int, journal: Path) -> None:
        self.fd = fd
        self.journal = journal
        with contextlib.suppress(OSError):  # no locks here (some filesystems): none taken
            lock_byte(fd, LIVE_BYTE)
        self._position = 0
        self.durable = os.fstat(fd).st_size  # bytes the last commit left
        self._starts: list[int] = []  # held writes: sorted, not overlapping
        self._held: list[tuple[int, bytes]] = []  # (start, bytes), in the order of _starts
        self._shrink_to: int | None = None  # a truncation HDF5 asked for, done at commit
        #: the first error of a write or truncation HDF5 asked for: HDF5 goes on calling
        #: this object after it, and h5py may then report another error than this one
        self.failure: OSError | None = None

    # ------------------------------------------------------------------ file protocol
    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._position = offset
        elif whence == os.SEEK_CUR:
            self._position += offset
        else:
            self._position = self._size() + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        start = self._position
        count = os.preadv(self.fd, [view], start)
        view[count:] = bytes(len(view) - count)  # past the end: zeros, as HDF5 expects
        end = start + len(view)
        first = max(0, bisect.bisect_right(self._starts, start) - 1)
        for at, data in self._held[first:]:  # held writes are what HDF5 last wrote there
            if at >= end:
                break
            lo, hi = max(at, start), min(at + len(data), end)
            if lo < hi:
                view[lo - start : hi - start] = data[lo - at : hi - at]
        self._position = end
        return len(view)

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = max(0, self._size() - self._position)
        buffer = bytearray(size)
        self.readinto(buffer)
        return bytes(buffer)

    def write(self, data: Any) -> int:
        try:
            return self._write(data)
        except OSError as exc:
            self.failure = self.failure or exc
            raise

    def _write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        start, end = self._position, self._position + total
        if start < self.durable:  # into what the disk shows: held until commit
            split = min(end, self.durable)
            self._hold(start, bytes(view[: split - start]))
            view, start = view[split - start :], split
        while len(view):  # new space: at once
            written = os.pwrite(self.fd, view, start)
            view, start = view[written:], start + written
        self._position = end
        return total

    def truncate(self, size: int | None = None) -> int:
        size = self._position if size is None else size
        if size >= os.fstat(self.fd).st_size:
            try:  # growing is safe at once (zeros nobody points at)
                os.ftruncate(self.fd, size)
            except OSError as exc:
                self.failure = self.failure or exc
                raise
            self._shrink_to = None
        else:
            self._shrink_to = size
        return size

    def flush(self) -> None:
        return

    def close(self) -> None:
        """Called by h5py when HDF5 closes the file: nothing to do (see :meth:`release`)."""
        return

    # ------------------------------------------------------------------ commits
    def commit(self, durable: bool = False) -> None:
        """Write the held updates to the file through the journal (see the module notes).

        ``durable``: a power loss after this returns loses nothing this commit (or an
        earlier one) made visible: the new space the updates point at is synced first,
        then the journal and its name, then the updated file, then the journal's
        removal; a power loss in between leaves the file as the last durable commit
        left it, or a complete journal that ``daq-storage repair`` applies. A later
        commit that is not durable is not synced: a power loss in the middle of one may
        leave the structures it rewrote in place torn (a process kill never does).

        Raises:
            OSError: the journal could not be written (the file is as the last commit
                left it), or the file could not be updated (the journal stays, for
                ``daq-storage repair``).
        """
        size = os.fstat(self.fd).st_size
        target = size if self._shrink_to is None else self._shrink_to
        patch = eoa_patch(self.read_at(0, 48), size)
        if patch is not None:
            self._hold(*patch)
        if self._held or target != size:
            if durable:
                os.fsync(self.fd)
            write_journal(self.journal, self._held, target, durable=durable)
            apply_writes(self.fd, _apply_order(self._held), target)
            if durable:
                os.fsync(self.fd)
            remove_journal(self.journal)
        elif durable:  # nothing new: what earlier commits wrote is synced all the same
            os.fsync(self.fd)
        if durable:  # the journal's removal (and the file's name)
            fsync_directory(self.journal.parent)
        self._starts.clear()
        self._held.clear()
        self._shrink_to = None
        self.durable = target

    def read_at(self, at: int, count: int) -> bytes:
        """``count`` bytes from ``at``, as HDF5 last wrote them (held writes included)."""
        position = self._position
        self._position = at
        data = self.read(count)
        self._position = position
        return data

    def release(self) -> None:
        """Close the file descriptor (held updates not committed are dropped)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # ------------------------------------------------------------------ internals
    def _size(self) -> int:
        return os.fstat(self.fd).st_size

    def _hold(self, start: int, data: bytes) -> None:
        """Keep ``data`` for ``start``: it replaces what is held there."""
        end = start + len(data)
        first = max(0, bisect.bisect_right(self._starts, start) - 1)
        last = bisect.bisect_left(self._starts, end)
        kept: list[tuple[int, bytes]] = []
        for at, old in self._held[first:last]:
            if at + len(old) <= start or at >= end:
                kept.append((at, old))
                continue
            if at < start:  # the part before the new write stays
                kept.append((at, old[: start - at]))
            if at + len(old) > end:  # and the part after it
                kept.append((end, old[end - at :]))
        kept.append((start, data))
        kept.sort(key=lambda item: item[0])
        self._held[first:last] = kept
        self._starts[first:last] = [at for at, _ in kept]


@contextlib.contextmanager
def failing_step(path: Path, action: str, ordered: OrderedFile | None,
                 failed: Callable[[str], None],
                 library_errors: tuple[type[Exception], ...]) -> Iterator[None]:  # fmt: skip
    """``storage_errors`` for a step that changes the file: a failure in it (after the
    checks, so the file may be half-changed) is reported to ``failed`` (the writer then
    refuses any further write, so nothing is written on top of a state the file does not
    have); the error is the first one of ``ordered``'s writes, if one failed."""
    try:
        with storage_errors(path, action, library_errors=library_errors):
            try:
                yield
            except Exception as exc:
                # HDF5 goes on after a failed write of the file, and h5py may then
                # report another error (errno 5, or a SystemError): the first one
                failure = ordered.failure if ordered is not None else None
                if failure is None:
                    raise
                raise OSError(failure.errno, failure.strerror) from exc
    except StorageIOError as exc:
        failed(f"{action}: {exc.strerror}")
        raise
    except FormatError as exc:  # HDF5 refused a step half-way
        failed(f"{action}: {exc}")
        raise
    except DaqStorageError:  # refused by a check, before anything changed
        raise
    except Exception as exc:
        message = f"{action}: {type(exc).__name__}: {exc}"
        failed(message)
        raise StorageIOError(errno.EIO, message, str(path)) from exc
