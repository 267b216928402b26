"""Whole chunks compressed on a thread pool, for writers that store chunks directly.

HDF5's filter pipeline and zarr-python compress one chunk at a time on the calling
thread. Blosc, zlib and zstd release the GIL while they work, so the writers here
compress every whole chunk of a call in parallel (the areaDetector and acquire-zarr
approach) and store chunks while others are being compressed. The caller's arrays are
no longer referenced once the call returns.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["ChunkEncode", "blosc_encoder", "deflate_encoder", "run_parallel", "zstd_encoder"]

T = TypeVar("T")

#: Compresses one C-contiguous chunk into the bytes a reader's filter decodes.
ChunkEncode = Callable[[npt.NDArray[Any]], bytes]


def blosc_encoder(cname: str, level: int) -> ChunkEncode:
    """Blosc 1 frames with byte shuffle: HDF5 filter 32001, Zarr's ``blosc`` codec."""
    import numcodecs
    import numcodecs.blosc

    # Contextual (non-global) blosc: thread-safe and without the GIL.
    numcodecs.blosc.use_threads = False
    codec = numcodecs.Blosc(cname=cname, clevel=level, shuffle=numcodecs.Blosc.SHUFFLE)

    def encode(chunk: npt.NDArray[Any]) -> bytes:
        return bytes(codec.encode(chunk))

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


def run_parallel(
    pool: ThreadPoolExecutor,
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
