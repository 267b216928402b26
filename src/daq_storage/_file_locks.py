"""Open-file-description locks on byte ranges of a file (``F_OFD_SETLK``): held per open
file, not per process, and dropped by the kernel when the holder dies, so a dead
writer or reader is detected without trusting PIDs. Used by the ring (writer, readers,
creator) and by the HDF5 writer (a live writer's mark that ``repair`` respects).
"""

from __future__ import annotations

import fcntl
import os
import struct

__all__ = ["conflicting_lock", "lock_byte", "lock_holder_alive", "unlock_byte"]

# struct flock on Linux (x86-64 and aarch64): short type, short whence, off_t start,
# off_t len, pid_t pid (+ padding).
_FLOCK = struct.Struct("hhqqi4x")
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)


def lock_byte(fd: int, offset: int, length: int = 1, *, shared: bool = False) -> bool:
    """Lock ``length`` bytes of ``fd`` from ``offset`` (0: to the end of the file and
    beyond), exclusively or ``shared``; ``False`` if a conflicting lock is held."""
    kind = fcntl.F_RDLCK if shared else fcntl.F_WRLCK
    try:
        fcntl.fcntl(fd, _OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, offset, length, 0))
    except (BlockingIOError, PermissionError):
        return False
    return True


def unlock_byte(fd: int, offset: int, length: int = 1) -> None:
    """Release a lock taken with :func:`lock_byte`."""
    fcntl.fcntl(fd, _OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, offset, length, 0))


def conflicting_lock(fd: int, offset: int, length: int = 1) -> tuple[int, int] | None:
    """``(start, length)`` of a lock another open file description holds on any of these
    bytes (length 0: to the end of the file), or ``None``. Shared locks count."""
    request = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, length, 0)
    kind, _whence, start, held_length, _pid = _FLOCK.unpack(fcntl.fcntl(fd, _OFD_GETLK, request))
    return None if kind == fcntl.F_UNLCK else (start, held_length)


def lock_holder_alive(fd: int, offset: int) -> bool:
    """Whether some open file description (another process, or another open of the
    file in this one) holds a lock on byte ``offset``."""
    return conflicting_lock(fd, offset) is not None
