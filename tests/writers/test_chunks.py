"""The shared machinery of the chunked frame writers: parallel jobs, frame splitting, ids."""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import numcodecs
import numcodecs.blosc
import numpy as np
import pytest

from daq_storage.schema import FrameBlock
from daq_storage.writers._chunks import FrameIds, blosc_encoder, run_parallel, split_frames


def _block(first: int, count: int) -> FrameBlock:
    ids = np.arange(first, first + count, dtype=np.uint64)
    return FrameBlock(np.zeros((count, 2, 2), np.uint16), ids * 10, ids)


def test_run_parallel_keeps_order_and_lets_the_caller_take_unstarted_jobs():
    held, release = threading.Event(), threading.Event()
    callers: set[str] = set()

    def job(value: int) -> int:
        callers.add(threading.current_thread().name)
        if value == 0:
            held.set()
            release.wait(30)  # holds the only worker: the caller must take the rest
        else:
            release.set()  # the caller took a job: the worker may go on
        return value * value

    def until_held() -> None:
        held.wait(30)

    with ThreadPoolExecutor(1, "worker") as pool:
        results = run_parallel(pool, [functools.partial(job, v) for v in range(5)],
                               meanwhile=until_held)  # fmt: skip
        release.set()
    assert results == [0, 1, 4, 9, 16]
    assert threading.current_thread().name in callers


def test_run_parallel_raises_the_first_failure_after_every_job_finished():
    finished: list[int] = []

    def job(value: int) -> int:
        if value == 1:
            raise ValueError("job 1 failed")
        finished.append(value)
        return value

    with ThreadPoolExecutor(2) as pool, pytest.raises(ValueError, match="job 1 failed"):
        run_parallel(pool, [functools.partial(job, v) for v in range(6)])
    assert sorted(finished) == [0, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("stored", "count", "unit", "parts"),
    [(0, 10, 4, (0, 8, 2)), (3, 10, 4, (1, 8, 1)), (3, 1, 4, (1, 0, 0)), (6, 2, 4, (2, 0, 0)),
     (4, 3, 4, (0, 0, 3)), (0, 5, 1, (0, 5, 0))],
)  # fmt: skip
def test_split_frames(stored: int, count: int, unit: int, parts: tuple[int, int, int]):
    head, whole, rest = split_frames(_block(0, count), stored, unit)
    assert (len(head), len(whole), len(rest)) == parts
    joined = np.concatenate([head.frame_numbers, whole.frame_numbers, rest.frame_numbers])
    assert list(joined) == list(range(count))


def test_frame_ids_retry_at_the_same_place_until_written():
    ids = FrameIds(written=5)
    assert ids.pending() is None
    ids.add(_block(5, 2))
    ids.add(_block(7, 3))
    assert len(ids) == 5
    pending = ids.pending()
    assert pending is not None
    start, stamps, numbers = pending
    assert (start, list(numbers), list(stamps)) == (5, [5, 6, 7, 8, 9], [50, 60, 70, 80, 90])
    again = ids.pending()  # not written yet: the same place again
    assert again is not None
    assert again[0] == 5
    np.testing.assert_array_equal(again[2], numbers)
    ids.written()
    ids.add(_block(10, 1))
    later = ids.pending()
    assert later is not None
    assert later[0] == 10


@pytest.mark.parametrize("shuffle", [True, False])
def test_blosc_chunks_decode_from_any_thread_and_no_setting_changes(shuffle: bool):
    """Chunks compressed on pool threads and on this one decode as they were, and
    numcodecs' process-wide ``use_threads`` (Zarr's codec reads it too) is untouched."""
    before = numcodecs.blosc.use_threads
    encode = blosc_encoder("zstd", 3, shuffle)
    chunks = [np.arange(i, i + 50_000, dtype=np.uint32).reshape(250, 200) for i in range(12)]
    with ThreadPoolExecutor(4) as pool:
        encoded = run_parallel(pool, [functools.partial(encode, chunk) for chunk in chunks])
    encoded.append(encode(chunks[0]))
    decoder = numcodecs.Blosc()
    for chunk, data in zip([*chunks, chunks[0]], encoded, strict=True):
        decoded = np.frombuffer(decoder.decode(data), np.uint32).reshape(chunk.shape)
        np.testing.assert_array_equal(decoded, chunk)
        flags = data[2]  # blosc header: bit 0 = byte shuffle
        assert bool(flags & 1) == shuffle
    assert numcodecs.blosc.use_threads is before


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("kind", ["compressible", "noise", "2-d"])
def test_lz4_chunks_are_the_bytes_hdf5plugin_s_filter_writes(
    tmp_path, shuffle: bool, kind: str
) -> None:
    """Our LZ4 chunks, byte for byte what HDF5 writes through hdf5plugin's LZ4 filter
    (an incompressible chunk kept as it is), and read back by h5py."""
    import h5py
    import hdf5plugin

    from daq_storage.writers._chunks import lz4_encoder

    rng = np.random.default_rng(3)
    chunk = {
        "compressible": (rng.normal(size=4096) * 10).astype(np.int16),
        "noise": rng.integers(0, 2**16, 4096, dtype=np.uint16),
        "2-d": np.arange(6 * 64 * 64, dtype=np.uint16).reshape(6, 64, 64),
    }[kind]
    pipeline = {"chunks": chunk.shape, "shuffle": shuffle, **hdf5plugin.LZ4()}
    with h5py.File(tmp_path / "f.h5", "w") as f:
        made = f.create_dataset("theirs", data=chunk, **pipeline)
        ours = f.create_dataset("ours", shape=chunk.shape, dtype=chunk.dtype, **pipeline)
        ours.id.write_direct_chunk((0,) * chunk.ndim, lz4_encoder(shuffle)(chunk))
        _, theirs = made.id.read_direct_chunk((0,) * chunk.ndim)
        _, mine = ours.id.read_direct_chunk((0,) * chunk.ndim)
    assert mine == theirs
    with h5py.File(tmp_path / "f.h5", "r") as f:
        np.testing.assert_array_equal(f["ours"][()], chunk)
