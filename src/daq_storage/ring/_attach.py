"""Who is attached to a ring file: the locks of docs/ring-format.md, *Liveness*.

* byte 0, exclusive: the writer;
* byte 1, shared: a reader while it attaches, and an anonymous reader while attached;
* a reader slot's first byte, exclusive: the registered reader owning the slot;
* the whole file, exclusive: a creator replacing the file (held from its check that
  nobody is attached until the old file is unlinked).

A reader or writer that finds the whole-file lock held, or that finds the path naming
another file once its lock is taken, opens the path again: it attaches to the ring that
replaced the one it had opened, never to the orphan.
"""

from __future__ import annotations

import errno
import os
import time

from daq_storage.errors import DaqStorageError, RingBusy, StorageIOError
from daq_storage.ring import _format as f
from daq_storage.ring._platform import conflicting_lock, lock_byte
from daq_storage.ring._trust import open_ring_file

__all__ = ["READER_BYTE", "WRITER_BYTE", "describe_attached", "open_attached", "same_file"]

WRITER_BYTE = 0
READER_BYTE = 1
WHOLE_FILE = (0, 0)  # (start, length) of the replacing creator's lock
_REPLACE_WAIT_S = 5.0  # a replacement holds its lock for a stat and an unlink


def same_file(fd: int, path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _u64_at(fd: int, offset: int) -> int:
    raw = os.pread(fd, 8, offset)
    return int.from_bytes(raw, "little") if len(raw) == 8 else 0


def writer_text(fd: int) -> str:
    """``"a live writer (pid 123)"``, or says the pid is not recorded yet."""
    pid = _u64_at(fd, f.OFF_WRITER_PID)
    return f"a live writer (pid {pid})" if pid else "a live writer (its pid is not recorded yet)"


def open_attached(
    path: str, *, writable: bool, offset: int, shared: bool, trust_foreign: bool = False
) -> int:
    """Open the ring file at ``path`` (checked as in :func:`open_ring_file`) and take the
    lock on byte ``offset`` that says who is attached; returns the locked descriptor.

    Raises:
        RingNotFound: no file at ``path`` (a ``FileNotFoundError``).
        RingNotTrusted, RingCorrupt, StorageIOError: see :func:`open_ring_file`.
        RingBusy: ``offset`` is the writer byte and a live writer holds it, or the file
            is still being replaced after several seconds.
    """
    deadline: float | None = None
    while True:
        fd = open_ring_file(path, writable=writable, trust_foreign=trust_foreign)
        try:
            if lock_byte(fd, offset, shared=shared):
                if same_file(fd, path):
                    return fd
            elif offset == WRITER_BYTE and conflicting_lock(fd, offset) not in (None, WHOLE_FILE):
                raise RingBusy(f"ring {path} already has {writer_text(fd)}")
        except OSError as exc:
            os.close(fd)
            if isinstance(exc, DaqStorageError):
                raise
            raise StorageIOError(
                exc.errno or errno.EIO, f"cannot lock ring {path}: {exc.strerror}", path
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # Replaced under us (or being replaced): the path names, or will name, a new ring.
        os.close(fd)
        now = time.monotonic()
        deadline = now + _REPLACE_WAIT_S if deadline is None else deadline
        if now > deadline:
            raise RingBusy(f"ring {path} is being replaced by another process; try again")
        time.sleep(0.001)


def _consumers(fd: int) -> list[str]:
    """The registered readers whose slot lock is held, from the file's reader slots."""
    identity = os.pread(fd, f.IDENTITY.size, f.OFF_IDENTITY)
    if len(identity) < f.IDENTITY.size or not identity.startswith(f.MAGIC):
        return []
    max_readers = f.IDENTITY.unpack(identity)[5]
    if not 1 <= max_readers <= f.MAX_READERS:
        return []
    if conflicting_lock(fd, f.OFF_READERS, max_readers * f.READER_SLOT_SIZE) is None:
        return []
    found = []
    for i in range(max_readers):
        slot = f.OFF_READERS + i * f.READER_SLOT_SIZE
        if conflicting_lock(fd, slot) is None:
            continue
        raw = os.pread(fd, 64, slot + f.SLOT_NAME).rstrip(b"\x00")
        pid = _u64_at(fd, slot + f.SLOT_PID)
        found.append(f"consumer {raw.decode(errors='replace')!r} (pid {pid})")
    return found


def describe_attached(fd: int) -> str:
    """Who holds locks on the ring file open as ``fd``: ``"a live writer (pid 12) and
    an anonymous reader"``; empty when nobody does."""
    who = []
    if conflicting_lock(fd, WRITER_BYTE) is not None:
        who.append(writer_text(fd))
    who.extend(_consumers(fd))
    if conflicting_lock(fd, READER_BYTE) is not None:
        who.append("an anonymous reader")
    if not who and (held := conflicting_lock(fd, 0, 0)) is not None:
        start, length = held
        who.append(f"a process holding a lock on {length or 'all'} bytes from byte {start}")
    if len(who) > 1:
        return ", ".join(who[:-1]) + " and " + who[-1]
    return "".join(who)
