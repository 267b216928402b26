"""Whole chunks compressed on a thread pool, for writers that store chunks directly.

HDF5's filter pipeline and zarr-python compress one chunk at a time on the calling
thread. Blosc, zlib and zstd release the GIL while they work, so the writers here
compress every whole chunk of a call in parallel (the areaDetector and acquire-zarr
approach) and store chunks while others are being compressed. The caller's arrays are
no longer referenced once the call returns.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, wait
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from daq_storage.schema import FrameBlock

__all__ = [
    "ChunkBatch",
    "ChunkEncode",
    "FrameIds",
    "blosc_encoder",
    "deflate_encoder",
    "lz4_encoder",
    "run_parallel",
    "split_frames",
    "zstd_encoder",
]

T = TypeVar("T")

#: Compresses one C-contiguous chunk into the bytes a reader's filter decodes.
ChunkEncode = Callable[[npt.NDArray[Any]], bytes]


def blosc_encoder(cname: str, level: int, shuffle: bool = True) -> ChunkEncode:
    """Blosc 1 frames (byte shuffle unless ``shuffle`` is false): HDF5 filter 32001, Zarr's
    ``blosc`` codec.

    No library setting is changed (numcodecs' ``use_threads`` keeps its default, which
    Zarr's blosc codec reads too): called from a pool thread, numcodecs compresses with
    a context of the call's own (thread-safe, without the GIL, so the workers run in
    parallel); called from the main thread, with blosc's global context (behind its
    lock, split over blosc's own threads).
    """
    import numcodecs.blosc

    name, mode = cname.encode(), numcodecs.blosc.SHUFFLE if shuffle else numcodecs.blosc.NOSHUFFLE

    def encode(chunk: npt.NDArray[Any]) -> bytes:
        return bytes(numcodecs.blosc.compress(chunk, name, level, mode))

    return encode


def _shuffled(chunk: npt.NDArray[Any]) -> bytes:
    """HDF5's shuffle filter: byte 0 of every element, then byte 1, and so on."""
    size = chunk.dtype.itemsize
    if size == 1:
        return chunk.tobytes()
    return chunk.view(np.uint8).reshape(-1, size).T.tobytes()


def deflate_encoder(level: int, shuffle: bool) -> ChunkEncode:
    """HDF5's deflate filter (a zlib stream), after HDF5's shuffle filter if ``shuffle``."""

    def encode(chunk: npt.NDArray[Any]) -> bytes:
        return zlib.compress(_shuffled(chunk) if shuffle else chunk.data, level)

    return encode


def zstd_encoder(level: int, shuffle: bool) -> ChunkEncode:
    """HDF5's zstd filter 32015 (one zstd frame), after HDF5's shuffle filter if ``shuffle``."""
    import numcodecs

    codec = numcodecs.Zstd(level=level)

    def encode(chunk: npt.NDArray[Any]) -> bytes:
        return bytes(codec.encode(_shuffled(chunk) if shuffle else chunk))

    return encode


def lz4_encoder(shuffle: bool) -> ChunkEncode:
    """hdf5plugin's LZ4 filter 32004 with its default block size (one block up to 1 GiB):
    the chunk's size (8 bytes) and block size (4 bytes), then the block's compressed size
    (4 bytes) and bytes, or the block as it is when LZ4 would not shrink it; all sizes
    big-endian. After HDF5's shuffle filter if ``shuffle``."""
    import numcodecs

    codec = numcodecs.LZ4(acceleration=1)  # LZ4_compress_default, as the filter uses

    def encode(chunk: npt.NDArray[Any]) -> bytes:
        data = _shuffled(chunk) if shuffle else chunk.tobytes()
        size = len(data)
        if size > _LZ4_BLOCK:
            raise ValueError(f"an LZ4 chunk holds at most {_LZ4_BLOCK} bytes, got {size}")
        block = bytes(codec.encode(data))[4:]  # numcodecs' own 4-byte size prefix dropped
        if len(block) >= size:
            return struct.pack(">qii", size, size, size) + data
        return struct.pack(">qii", size, size, len(block)) + block

    return encode


_LZ4_BLOCK = 1 << 30  # the filter's default block size


class ChunkBatch:
    """Whole chunks of several datasets gathered while a batch is planned out, then
    compressed together on a pool (each dataset's chunks alone would keep one core busy
    at a time) and stored; ``undo`` says how to take a dataset back if that fails."""

    def __init__(self, encode: ChunkEncode) -> None:
        self.encode = encode
        self.jobs: list[Callable[[], None]] = []
        self.undo: list[Callable[[], None]] = []

    def run(self, pool: Callable[[], Executor]) -> None:
        """Compress and store every gathered chunk; on a failure, undo and raise."""
        try:
            if len(self.jobs) > 1:
                run_parallel(pool(), self.jobs)
            else:
                for job in self.jobs:
                    job()
        except BaseException:
            for undo in reversed(self.undo):
                undo()
            raise
        finally:
            self.jobs.clear()
            self.undo.clear()


def run_parallel(
    pool: Executor,
    jobs: Sequence[Callable[[], T]],
    meanwhile: Callable[[], None] | None = None,
) -> list[T]:
    """Run ``jobs`` on ``pool`` and return their results in order.

    The calling thread first runs ``meanwhile()`` (typically: store what the previous
    call compressed), then takes over jobs no worker has started, so no core idles
    while the last jobs of a call finish. Every job has finished when this returns, even
    when one raised; the first failure is then raised.
    """
    futures = [pool.submit(job) for job in jobs]
    try:
        if meanwhile is not None:
            meanwhile()
    finally:
        inline: dict[int, T | BaseException] = {}
        for index in reversed(range(len(futures))):
            if futures[index].cancel():
                try:
                    inline[index] = jobs[index]()
                except BaseException as exc:  # re-raised below, after every job is done
                    inline[index] = exc
        wait(futures)
    results: list[T] = []
    for index, future in enumerate(futures):
        if index in inline:
            outcome = inline[index]
            if isinstance(outcome, BaseException):
                raise outcome
            results.append(outcome)
        else:
            results.append(future.result())
    return results


def split_frames(
    block: FrameBlock, stored: int, unit: int
) -> tuple[FrameBlock, FrameBlock, FrameBlock]:
    """``block``, continuing a stream of ``stored`` frames stored in units (chunks or
    shards) of ``unit`` frames, as three parts: the frames that complete a partial unit
    (left by a flush), whole units, and the rest (short of a unit)."""
    head = min((-stored) % unit, len(block))
    whole = head + (len(block) - head) // unit * unit
    return block.part(0, head), block.part(head, whole), block.part(whole, len(block))


class FrameIds:
    """Ids of stored frames on their way to their own arrays, written a batch at a time.

    ``pending()`` gives where the queued ids go; only ``written()`` moves the start on,
    so a write that failed is retried at the same place (the id arrays never drift
    from the frames).
    """

    def __init__(self, written: int) -> None:
        self._written = written
        self._parts: list[tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]] = []
        self._queued = 0

    def __len__(self) -> int:
        return self._queued

    def add(self, block: FrameBlock) -> None:
        """Queue ``block``'s ids (copied: the caller may reuse its arrays)."""
        self._parts.append((block.timestamps_ns.copy(), block.frame_numbers.copy()))
        self._queued += len(block)

    def pending(self) -> tuple[int, npt.NDArray[np.uint64], npt.NDArray[np.uint64]] | None:
        """``(start, timestamps_ns, frame_numbers)`` of the queued ids, or ``None``."""
        if not self._parts:
            return None
        if len(self._parts) > 1:
            self._parts = [(np.concatenate([p[0] for p in self._parts]),
                            np.concatenate([p[1] for p in self._parts]))]  # fmt: skip
        stamps, numbers = self._parts[0]
        return self._written, stamps, numbers

    def written(self) -> None:
        """The pending ids are in their arrays."""
        self._written += self._queued
        self._parts.clear()
        self._queued = 0
