"""The file an HDF5 writer writes through: HDF5's updates land on disk in an order that
keeps the file readable at every instant.

HDF5 (without SWMR) writes its metadata in place, in address order, when it flushes or
evicts it: an extent before the heap that holds the new rows' text, an index before the
superblock whose end-of-file address covers the chunks it points at. A process killed in
between leaves a file whose datasets fail to read as a whole. Through h5py's file-object
driver, this class keeps HDF5's writes into the part of the file the last flush left
(the *durable* part) in memory until :meth:`commit`; writes past it (new space, which
nothing on disk points at) go to the disk at once. :meth:`commit`, at the end of every
flush, then

1. sets the end-of-file address in the superblock to the file's size
   (:func:`~daq_storage.writers._hdf5_superblock.cover_written`), so every new chunk
   and structure is inside it;
2. writes the held heaps of values (global heap collections, with the text of string
   columns and attributes; fractal heap blocks, with dense attributes): new objects in
   them are not pointed at yet;
3. writes the rest from the end of the file towards its start: structures made later
   (chunk index nodes, uncompressed chunks rewritten in place) before those made
   earlier that point at them (object headers with their extents, the groups' links,
   then the superblock);
4. writes the object headers it is given (the datasets', whose extents change
   together) last, those less than 256 KiB apart in one write: a stream's datasets
   reach their new length at once (nothing points at them that this commit changes).

Each held write is one system call: a kill falls between two of them (the kernel checks
for one only between the pages of a write, a window of nanoseconds, which this order
does not cover). Readers (another process, or another ``h5py.File`` in this one) see
the last flush until the next one is committed.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Collection
from typing import Any

from daq_storage.writers._hdf5_superblock import cover_written

__all__ = ["OrderedFile"]

#: Signatures of HDF5 structures that hold values, which indexes and headers point at.
_VALUE_HEAPS = (b"GCOL", b"FHDB")
#: Held headers at most this far apart are written in one system call (with the bytes
#: between them, as the file holds them).
_HEADER_GAP = 256 << 10


class OrderedFile:
    """A file-like object over ``fd`` for ``h5py``'s ``fileobj`` driver (see the module
    notes). It owns ``fd`` once :meth:`close` is called."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
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
    def commit(self, headers: Collection[int] = ()) -> None:
        """Write the held updates, in the order of the module notes; the held updates of
        the object headers at ``headers`` last."""
        cover_written(self.fd)
        marks = sorted(headers)

        def is_header(at: int, data: bytes) -> bool:
            found = bisect.bisect_left(marks, at)
            return found < len(marks) and marks[found] < at + len(data)

        heaps = [(at, data) for at, data in self._held if data[:4] in _VALUE_HEAPS]
        last = [(at, data) for at, data in self._held if is_header(at, data)]
        rest = [(at, data) for at, data in self._held
                if data[:4] not in _VALUE_HEAPS and not is_header(at, data)]  # fmt: skip
        for at, data in (*heaps, *reversed(rest)):
            self._write_all(memoryview(data), at)
        runs: list[list[int]] = []  # [start, end] of headers written together
        for at, data in last:
            if runs and at - runs[-1][1] <= _HEADER_GAP:
                runs[-1][1] = max(runs[-1][1], at + len(data))
            else:
                runs.append([at, at + len(data)])
        position = self._position
        for start, end in reversed(runs):
            self._position = start
            self._write_all(memoryview(self.read(end - start)), start)
        self._position = position
        self._starts.clear()
        self._held.clear()
        if self._shrink_to is not None:
            os.ftruncate(self.fd, self._shrink_to)
            self._shrink_to = None
        self.durable = os.fstat(self.fd).st_size

    def release(self) -> None:
        """Close the file descriptor (held updates not committed are dropped)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # ------------------------------------------------------------------ internals
    def _write_all(self, view: memoryview, at: int) -> None:
        while len(view):
            written = os.pwrite(self.fd, view, at)
            view, at = view[written:], at + written

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
