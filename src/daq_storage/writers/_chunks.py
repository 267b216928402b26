"""Whole chunks compressed on a thread pool, for writers that store chunks directly.

HDF5's filter pipeline and zarr-python compress one chunk at a time on the calling
thread. Blosc, zlib and zstd release the GIL while they work, so the writers here
compress every whole chunk of a call in parallel and store the previous call's
chunks while that runs (the areaDetector and acquire-zarr approach). The caller's
arrays are no longer referenced once the call returns.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ChunkEncode", "blosc_encoder", "deflate_encoder", "encode_while", "zstd_encoder"]

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


def encode_while(
    pool: ThreadPoolExecutor,
    encode: ChunkEncode,
    chunks: Sequence[npt.NDArray[Any]],
    meanwhile: Callable[[], None],
) -> list[bytes]:
    """Compress ``chunks`` on ``pool``, run ``meanwhile()`` on this thread, return the bytes.

    ``meanwhile`` typically stores what the previous call compressed, so disk writes and
    compression overlap. Every chunk is finished before this returns, even when
    ``meanwhile`` raises.
    """
    futures = [pool.submit(encode, np.ascontiguousarray(chunk)) for chunk in chunks]
    try:
        meanwhile()
    finally:
        done = [future.exception() is None for future in futures]  # waits for all
    if not all(done):
        for future in futures:
            future.result()  # raises the first failure
    return [future.result() for future in futures]
