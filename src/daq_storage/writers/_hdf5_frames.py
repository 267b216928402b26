"""An HDF5 frame stream's datasets and the frames on their way to them.

As for tables (see :mod:`daq_storage.writers._hdf5_tables`), no chunk is ever rewritten
elsewhere: whole chunks are stored once (compressed on a thread pool by direct chunk
writes, or by HDF5's pipeline for lz4 and lzf); the frames of a chunk a flush finds
part-filled are stored uncompressed at the chunk's full size, rewritten in place by
later flushes, and the chunk stays uncompressed when it fills.
With the default one frame per chunk every chunk is whole.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from daq_storage.schema import FrameBlock, join_frames, time_attrs
from daq_storage.writers._chunks import ChunkEncode, FrameIds, run_parallel
from daq_storage.writers._hdf5_tables import write_raw_chunk

__all__ = ["FrameStream"]


class FrameStream:
    """A frame stream's datasets (handles kept: a dropped handle flushes HDF5's chunk
    cache in its destructor, where write errors would go unreported), the frames short
    of a whole chunk, and the ids on their way to their datasets."""

    def __init__(self, frames: h5py.Dataset, timestamps: h5py.Dataset,
                 numbers: h5py.Dataset) -> None:  # fmt: skip
        self.frames = frames
        self.timestamps = timestamps
        self.numbers = numbers
        self.per_chunk = int(frames.chunks[0])
        self.filtered = frames.id.get_create_plist().get_nfilters() > 0
        self.base = 0  # frames in whole chunks
        #: the frames after ``base`` (fewer than a chunk), kept to store their chunk whole
        self.partial: FrameBlock | None = None
        self.raw = 0  # frames of the open chunk stored (uncompressed) by a flush
        #: ids of stored frames not yet in their datasets (written a chunk at a time, and
        #: at every flush: a small h5py write costs as much as compressing a frame)
        self.ids = FrameIds(0)
        self._queued = 0  # frames whose ids are queued or written

    @classmethod
    def create(cls, group: h5py.Group, block: FrameBlock, per_chunk: int,
               filters: dict[str, Any]) -> FrameStream:  # fmt: skip
        """The datasets of a new frame stream in ``group``, for frames like ``block``'s:
        ``frames`` (``per_chunk`` frames a chunk, compressed by ``filters``),
        ``timestamp_ns`` (with its CF attributes) and ``frame_number``."""
        shape = block.frames.shape[1:]
        frames = group.create_dataset(
            "frames", shape=(0, *shape), maxshape=(None, *shape), dtype=block.frames.dtype,
            chunks=(per_chunk, *shape), **filters,
        )  # fmt: skip
        frames.attrs["dim_names"] = ",".join(["frame", "y", "x"][: 1 + len(shape)])
        stamps, numbers = (
            group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.uint64,
                                 chunks=(4096,))
            for name in ("timestamp_ns", "frame_number")
        )  # fmt: skip
        stamps.attrs.update(time_attrs("ns"))
        return cls(frames, stamps, numbers)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def add(self, block: FrameBlock, encode: ChunkEncode | None,
            pool: Callable[[], Executor]) -> None:  # fmt: skip
        """Append frames: the chunks they complete are stored at once (compressed by
        ``encode`` on the pool, or by HDF5's pipeline when ``encode`` is ``None`` and the
        dataset has filters); the rest waits, copied (the caller may reuse its arrays).

        If storing fails (a full disk), the dataset keeps only the frames stored before
        the first chunk that failed, so no frame reads back as fill values.
        """
        if self.partial is not None:
            block = join_frames([self.partial, block])
            self.partial = None
        whole = len(block) // self.per_chunk * self.per_chunk
        rest = block.part(whole, len(block))
        if whole:
            self._store(block.part(0, whole), encode, pool)
        if len(rest):
            self.partial = rest.copy()

    def flush(self) -> None:
        """Store the frames short of a chunk (uncompressed, in place), then every id."""
        held = 0 if self.partial is None else len(self.partial)
        if held > self.raw:
            assert self.partial is not None
            chunk = np.zeros((self.per_chunk, *self.frames.shape[1:]), self.frames.dtype)
            chunk[:held] = self.partial.frames
            before = len(self)
            if before < self.base + held:
                self.frames.resize(self.base + held, axis=0)
            try:
                write_raw_chunk(self.frames, self.base, chunk, self.filtered)
            except BaseException:
                with contextlib.suppress(Exception):  # the write's own error is reported
                    self.frames.resize(before, axis=0)
                raise
            self.raw = held
            self._queue_ids(self.partial, self.base)
        self.write_ids()

    def write_ids(self) -> None:
        """Write the queued ids (the id datasets then match the stored frames)."""
        pending = self.ids.pending()
        if pending is None:
            return
        start, stamps, numbers = pending
        end = start + len(stamps)
        try:
            for dataset, values in ((self.timestamps, stamps), (self.numbers, numbers)):
                dataset.resize(end, axis=0)
                dataset[start:end] = values
        except BaseException:
            for dataset in (self.timestamps, self.numbers):
                with contextlib.suppress(Exception):  # no id reads back as 0
                    dataset.resize(start, axis=0)
            raise
        self.ids.written()

    # ------------------------------------------------------------------ internals
    @property
    def _zeros(self) -> tuple[int, ...]:
        return (0,) * (len(self.frames.shape) - 1)

    def _queue_ids(self, block: FrameBlock, start: int) -> None:
        """Queue the ids of ``block`` (frames ``start`` on) not queued before."""
        skip = self._queued - start
        if skip >= len(block):
            return
        self.ids.add(block.part(max(0, skip), len(block)))
        self._queued = start + len(block)
        if len(self.ids) >= self.timestamps.chunks[0]:
            self.write_ids()

    def _store(self, block: FrameBlock, encode: ChunkEncode | None,
               pool: Callable[[], Executor]) -> None:  # fmt: skip
        """Whole chunks from ``base``: direct chunk writes (the first uncompressed if a
        flush stored it so), or HDF5's pipeline; pool workers make and store chunks in
        parallel (h5py serialises the writes; compression runs without the GIL)."""
        start, per_chunk = self.base, self.per_chunk
        chunks = [block.frames[i : i + per_chunk] for i in range(0, len(block), per_chunk)]
        jobs: list[Callable[[], None]] = []
        direct = encode is not None or not self.filtered
        for index, chunk in enumerate(chunks):
            offset = (start + index * per_chunk, *self._zeros)
            if index == 0 and self.raw:  # stored uncompressed by a flush: stays so
                jobs.append(functools.partial(write_raw_chunk, self.frames, start, chunk,
                                              self.filtered))  # fmt: skip
            elif direct:
                jobs.append(functools.partial(self._write, offset, encode or _raw, chunk))
        failed: list[int] = []

        def job(index: int) -> None:
            try:
                jobs[index]()
            except BaseException:
                failed.append(index)
                raise

        before = len(self)
        self.frames.resize(start + len(block), axis=0)
        try:
            runs = [functools.partial(job, i) for i in range(len(jobs))]
            if len(runs) > 1 and encode is not None:
                run_parallel(pool(), runs)
            else:
                for one in runs:
                    one()
            if not direct:  # lz4, lzf: HDF5 compresses the chunks not stored above
                first = len(jobs) * per_chunk
                self.frames[start + first : start + len(block)] = block.frames[first:]
        except BaseException:
            stored = min(failed, default=len(jobs)) * per_chunk
            with contextlib.suppress(Exception):  # the write's own error is the one to report
                self.frames.resize(max(start + stored, before), axis=0)
            if stored:
                self._queue_ids(block.part(0, stored), start)
            raise
        self.base = start + len(block)
        self.raw = 0
        self._queue_ids(block, start)

    def _write(self, offset: tuple[int, ...], encode: ChunkEncode, chunk: npt.NDArray[Any]) -> None:
        self.frames.id.write_direct_chunk(offset, encode(chunk))


def _raw(chunk: npt.NDArray[Any]) -> Any:
    """A chunk's own bytes (uncompressed)."""
    return np.ascontiguousarray(chunk)
