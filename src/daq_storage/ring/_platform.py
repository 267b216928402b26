"""What the ring needs from the OS and the CPU: memory fences, file locks, clocks.

Memory ordering: the writer stores ``tail_intent``, then the record, then ``tail``;
a reader loads ``tail``, copies, then loads ``tail_intent``. On x86-64 (TSO) ordinary
stores are seen in program order and loads are not reordered with older loads, so
:func:`fence` is a no-op there (the Linux BPF ring buffer relies on the same). Non-temporal
stores are the exception: a ``memcpy`` of a large block may use them, and they are weakly
ordered even on x86-64, so after copying :data:`LARGE_COPY_BYTES` or more the writer calls
:func:`store_fence`, a real fence on every CPU. On weakly ordered CPUs (aarch64, ...) both
are libatomic's ``atomic_thread_fence(memory_order_seq_cst)``, called at the four points
documented in docs/ring-format.md.

Liveness: the writer, each reader and a creator replacing a ring hold open-file-description
locks (``F_OFD_SETLK``) on bytes of the file; the kernel drops them when the process
dies, so a dead writer or reader is detected without trusting PIDs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import time
from collections.abc import Callable

from daq_storage._file_locks import conflicting_lock, lock_byte, lock_holder_alive, unlock_byte

__all__ = [
    "LARGE_COPY_BYTES",
    "NEEDS_FENCE",
    "conflicting_lock",
    "fence",
    "load_fence",
    "lock_byte",
    "lock_holder_alive",
    "monotonic_ns",
    "store_fence",
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
# On x86-64 libatomic's seq_cst fence is ``mfence`` or a ``lock``-prefixed instruction
# (GCC 12 emits ``lock or``); the Intel and AMD manuals both order every earlier store,
# non-temporal ones included, before any later store for either.
store_fence: Callable[[], None] = load_fence(True)
# glibc's memcpy switches to non-temporal stores above a threshold derived from the cache
# size (megabytes on servers, lower with small caches or GLIBC_TUNABLES); copies at least
# this large are followed by store_fence. Smaller ones stay fence-free on x86-64.
LARGE_COPY_BYTES = 256 << 10
monotonic_ns = time.monotonic_ns
