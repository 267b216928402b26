"""What the ring needs from the OS and the CPU: memory fences, file locks, clocks.

Memory ordering: the writer stores ``tail_intent``, then the record, then ``tail``;
a reader loads ``tail``, copies, then loads ``tail_intent``. On x86-64 (TSO) stores are
seen in program order and loads are not reordered with older loads, so no fence is
needed (the Linux BPF ring buffer relies on the same). On weakly ordered CPUs
(aarch64, ...) :func:`fence` is a full sequentially consistent fence from libatomic
(``atomic_thread_fence``), called at the four points documented in docs/ring-format.md.

Liveness: the writer and each registered reader hold an open-file-description lock
(``F_OFD_SETLK``) on one byte of the file; the kernel drops it when the process dies, so
a stale writer lock or a dead consumer is detected without trusting PIDs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import platform
import struct
import time
from collections.abc import Callable

__all__ = [
    "NEEDS_FENCE",
    "fence",
    "load_fence",
    "lock_byte",
    "lock_holder_alive",
    "monotonic_ns",
    "unlock_byte",
]

_TSO_MACHINES = {"x86_64", "amd64", "i386", "i686", "x86"}
NEEDS_FENCE = platform.machine().lower() not in _TSO_MACHINES
_SEQ_CST = 5


def load_fence(needed: bool = NEEDS_FENCE) -> Callable[[], None]:
    """The fence for this CPU: a no-op on TSO machines, libatomic's otherwise."""
    if not needed:
        return lambda: None
    name = ctypes.util.find_library("atomic") or "libatomic.so.1"
    try:
        lib = ctypes.CDLL(name)
        thread_fence = lib.atomic_thread_fence  # C11's function form, exported since GCC 7
    except (OSError, AttributeError):
        # Any call into a C function that takes a lock is a full barrier; a
        # pthread mutex round trip is the portable fallback when libatomic is absent.
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mutex = ctypes.create_string_buffer(64)
        lock, unlock = libc.pthread_mutex_lock, libc.pthread_mutex_unlock

        def mutex_fence() -> None:
            lock(mutex)
            unlock(mutex)

        return mutex_fence
    thread_fence.argtypes = [ctypes.c_int]
    thread_fence.restype = None
    return lambda: thread_fence(_SEQ_CST)


fence: Callable[[], None] = load_fence()
monotonic_ns = time.monotonic_ns

# struct flock on Linux (x86-64 and aarch64): short type, short whence, off_t start,
# off_t len, pid_t pid (+ padding).
_FLOCK = struct.Struct("hhqqi4x")
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)


def lock_byte(fd: int, offset: int) -> bool:
    """Take an exclusive lock on byte ``offset`` of ``fd``; ``False`` if someone holds it."""
    request = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    try:
        fcntl.fcntl(fd, _OFD_SETLK, request)
    except (BlockingIOError, PermissionError):
        return False
    return True


def unlock_byte(fd: int, offset: int) -> None:
    """Release a lock taken with :func:`lock_byte`."""
    fcntl.fcntl(fd, _OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, offset, 1, 0))


def lock_holder_alive(fd: int, offset: int) -> bool:
    """Whether some open file description (another process, or another open of the
    file in this one) holds a lock on byte ``offset``."""
    request = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    answer = fcntl.fcntl(fd, _OFD_GETLK, request)
    return bool(_FLOCK.unpack(answer)[0] != fcntl.F_UNLCK)
