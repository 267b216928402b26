"""Recycled blocks of frames: the Recorder copies each frame once, into its stream's
group, and every format of the stream writes the same group."""

from __future__ import annotations

import sys
import threading
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FrameGroup", "GroupPool"]

POOL_KEEP = 8  # free groups kept per stream (the rest are left to the allocator)


class FrameGroup:
    """A preallocated ``(capacity, *frame_shape)`` block of one stream's frames: filled
    by the loop, written by every sink of the stream, then back to its pool."""

    __slots__ = ("_left", "_lock", "_pool", "frames")

    def __init__(self, frames: npt.NDArray[Any], pool: GroupPool) -> None:
        self.frames = frames
        self._pool = pool
        self._left = 0
        self._lock = threading.Lock()

    def hand_out(self, sinks: int) -> None:
        self._left = sinks

    def release(self) -> None:
        """One sink is done with the group (written, refused or failed)."""
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._pool.put_back(self)


class GroupPool:
    """The free groups of one stream (a frame spec and a capacity)."""

    def __init__(self, dtype: np.dtype[Any], shape: tuple[int, ...], capacity: int) -> None:
        self.dtype, self.shape, self.capacity = dtype, shape, capacity
        self._free: deque[FrameGroup] = deque()  # appended by sink threads, taken by the loop
        self.allocated = 0
        self.reused = 0

    def take(self) -> FrameGroup:
        while self._free:
            group = self._free.pop()
            # Only the group refers to its array (plus getrefcount's argument): no writer
            # kept a view of it (Parquet buffers a row group's batches zero-copy), so its
            # pixels can be overwritten.
            if sys.getrefcount(group.frames) <= 2:
                self.reused += 1
                return group
        self.allocated += 1
        return FrameGroup(np.empty((self.capacity, *self.shape), self.dtype), self)

    def put_back(self, group: FrameGroup) -> None:
        if len(self._free) < POOL_KEEP:
            self._free.append(group)
