"""HDF5 after a write that failed half-way: another process filled the disk after the
writer's up-front check; the file stays as the last flush left it and the writer refuses
every further call, even once the space is back (a real, filling tmpfs)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.errors import StorageIOError, WriterClosedError
from daq_storage.writers import Hdf5Writer

_PIXELS = np.arange(48 * 64, dtype=np.uint64).reshape(48, 64)


def _frames(start: int, count: int) -> np.ndarray:
    ids = np.arange(start, start + count, dtype=np.uint64)
    return ((ids[:, None, None] * 7 + _PIXELS) % 65521).astype(np.uint16)


def _fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` with a file of another writer's."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        for size in (1 << 20, 1 << 12, 1):
            block = bytes(size)
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EFBIG):
                    raise
    finally:
        os.close(fd)
    return filler


def _until_it_fails(call: Callable[[], None]) -> StorageIOError:
    """Call until a write fails half-way (the writer's up-front check, made once per MiB,
    refuses some calls first, changing nothing); that failure."""
    for _ in range(20):
        try:
            call()
        except StorageIOError as exc:
            if "free on the disk" not in str(exc):  # not the up-front refusal
                return exc
    pytest.fail("no write failed half-way: every call was refused up front")


def test_frames_after_a_write_failed_half_way(mount_tmpfs: Callable[[str], Path]):
    disk = mount_tmpfs("12m")
    path = disk / "run.h5"
    writer = Hdf5Writer(path, compression="none")
    written = 0

    def write() -> None:
        nonlocal written
        block = _frames(written, 100)  # 600 KB
        ids = np.arange(written, written + 100, dtype=np.uint64)
        written += 100  # counted as sent; only flushed ones must come back
        writer.write_frames("cam", block, frame_numbers=ids, timestamps_ns=ids + 1)

    for _ in range(4):
        write()
    writer.flush()
    flushed = written
    filler = _fill(disk)

    def write_and_flush() -> None:
        write()
        writer.flush()

    failure = _until_it_fails(write_and_flush)
    assert failure.filename == str(path)
    assert failure.errno == errno.ENOSPC, failure  # HDF5's later errors do not hide it
    filler.unlink()  # the space is back: nothing more is written all the same
    with pytest.raises(WriterClosedError, match=r"failed .* start a new file"):
        write()
    with pytest.raises(WriterClosedError, match="failed"):
        writer.flush()
    writer.close()
    with h5py.File(path, "r") as f:
        frames, numbers = f["cam/frames"][()], f["cam/frame_number"][()]
        stamps = f["cam/timestamp_ns"][()]
    assert len(frames) == len(numbers) == len(stamps) == flushed
    np.testing.assert_array_equal(frames, _frames(0, flushed))
    np.testing.assert_array_equal(numbers, np.arange(flushed))
    np.testing.assert_array_equal(stamps, np.arange(flushed) + 1)


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_tables_after_a_write_failed_half_way(mount_tmpfs: Callable[[str], Path],
                                              compression: str):  # fmt: skip
    disk = mount_tmpfs("8m")
    path = disk / "run.h5"
    writer = Hdf5Writer(path, compression=compression, chunk_size=20_000)
    rows = 0

    def write() -> None:
        nonlocal rows
        # a chunk a call: stored at once, and under the writer's once-a-MiB room check
        seq = np.arange(rows, rows + 20_000)
        rows += len(seq)
        writer.write_batch("s", pa.record_batch({"seq": seq, "label": seq.astype(str)}))
        writer.flush()

    write()
    flushed = rows
    filler = _fill(disk)
    failure = _until_it_fails(write)
    assert failure.filename == str(path)
    assert failure.errno == errno.ENOSPC, failure
    filler.unlink()
    with pytest.raises(WriterClosedError, match="failed"):
        write()
    writer.close()
    with h5py.File(path, "r") as f:
        seq, label = f["s/seq"][()], f["s/label"][()]
    assert len(seq) >= flushed
    assert len(label) >= flushed
    np.testing.assert_array_equal(seq, np.arange(len(seq)))
    assert [v.decode() for v in label] == [str(i) for i in range(len(label))]
