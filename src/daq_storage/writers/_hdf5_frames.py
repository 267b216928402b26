"""An HDF5 frame stream's datasets and the frames on their way to them."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import h5py

from daq_storage.schema import FrameBlock
from daq_storage.writers._chunks import FrameIds, run_parallel

__all__ = ["FrameStream"]


class FrameStream:
    """A frame stream's datasets (handles kept: a dropped handle flushes HDF5's chunk
    cache in its destructor, where write errors would go unreported) and the frames
    short of a whole chunk."""

    def __init__(self, frames: h5py.Dataset, timestamps: h5py.Dataset,
                 numbers: h5py.Dataset) -> None:  # fmt: skip
        self.frames = frames
        self.timestamps = timestamps
        self.numbers = numbers
        self.partial: FrameBlock | None = None
        #: ids of stored frames not yet in their datasets (written a chunk at a time, and
        #: at every flush: a small h5py write costs as much as compressing a frame)
        self.ids = FrameIds(timestamps.shape[0])

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def _queue_ids(self, block: FrameBlock) -> None:
        self.ids.add(block)
        if len(self.ids) >= self.timestamps.chunks[0]:
            self.write_ids()

    def write_ids(self) -> None:
        """Write the queued ids (the id datasets then match the frames)."""
        pending = self.ids.pending()
        if pending is None:
            return
        start, stamps, numbers = pending
        end = start + len(stamps)
        for dataset, values in ((self.timestamps, stamps), (self.numbers, numbers)):
            dataset.resize(end, axis=0)
            dataset[start:end] = values
        self.ids.written()

    def append(self, block: FrameBlock) -> None:
        """Through HDF5's own filter pipeline (partial chunks, lz4 and lzf)."""
        start = len(self)
        self.frames.resize(start + len(block), axis=0)
        self.frames[start:] = block.frames
        self._queue_ids(block)

    def store(self, block: FrameBlock, chunks: Sequence[Callable[[], Any]],
              pool: ThreadPoolExecutor | None = None) -> None:  # fmt: skip
        """Whole chunks by direct chunk writes: ``chunks`` make each chunk's on-disk
        bytes. With a ``pool``, workers make and store chunks in parallel (h5py
        serialises the writes; compression runs without the GIL), and this thread
        joins in.

        If a write fails (a full disk), the frame dataset shrinks back to the frames
        before the first chunk that failed, so no frame reads back as fill values.
        """
        start = len(self)
        self.frames.resize(start + len(block), axis=0)
        per_chunk = self.frames.chunks[0]
        zeros = (0,) * (self.frames.ndim - 1)
        write = self.frames.id.write_direct_chunk
        failed: list[int] = []

        def job(index: int) -> None:
            try:
                write((start + index * per_chunk, *zeros), chunks[index]())
            except BaseException:
                failed.append(index)
                raise

        jobs = [functools.partial(job, i) for i in range(len(chunks))]
        try:
            if pool is None:
                for one in jobs:
                    one()
            else:
                run_parallel(pool, jobs)
        except BaseException:
            stored = min(failed, default=0) * per_chunk
            with contextlib.suppress(Exception):  # the write's own error is the one to report
                self.frames.resize(start + stored, axis=0)
            if stored:
                self._queue_ids(block.part(0, stored))
            raise
        self._queue_ids(block)
