"""The I/O helpers every writer shares: closing every file, errors as DaqStorageError,
fsync for durable flushes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from daq_storage.errors import FormatError, StorageIOError
from daq_storage.writers._io import file_size, finish_all, fsync_paths, storage_errors


def test_finish_all_runs_every_step_and_reports_every_failure():
    ran: list[int] = []

    def step(i: int, fail: bool):
        def run() -> None:
            ran.append(i)
            if fail:
                raise StorageIOError(errno.ENOSPC, f"stream {i} failed", f"s{i}")

        return run

    with pytest.raises(StorageIOError, match="stream 0 failed") as caught:
        finish_all([step(0, True), step(1, False), step(2, True), step(3, True)])
    assert ran == [0, 1, 2, 3]
    others = caught.value.other_errors  # type: ignore[attr-defined]
    assert [str(e) for e in others] == [
        "[Errno 28] stream 2 failed: 's2'",
        "[Errno 28] stream 3 failed: 's3'",
    ]
    notes = caught.value.__notes__
    assert len(notes) == 2
    assert "stream 2 failed" in notes[0]
    assert "stream 3 failed" in notes[1]


def test_a_library_error_that_is_not_io_is_a_format_error(tmp_path: Path):
    """h5py raises RuntimeError for a full disk and for an attribute too large alike: only
    the first is a StorageIOError."""
    errors = storage_errors(tmp_path / "a.h5", "store metadata", library_errors=(RuntimeError,))
    with h5py.File(tmp_path / "a.h5", "w") as file, pytest.raises(FormatError) as caught, errors:
        file.attrs.create("big", np.zeros(100_000))  # larger than an object header
    assert not isinstance(caught.value, OSError)
    assert "store metadata" in str(caught.value)


def test_a_library_error_naming_an_errno_is_a_storage_error(tmp_path: Path):
    message = "Can't write data (file write failed: errno = 28, error message = 'No space')"
    errors = storage_errors(tmp_path, "write", library_errors=(RuntimeError,))
    with pytest.raises(StorageIOError) as caught, errors:
        raise RuntimeError(message)
    assert caught.value.errno == errno.ENOSPC
    errors = storage_errors(tmp_path, "write", library_errors=(RuntimeError,))
    with pytest.raises(StorageIOError) as caught, errors:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert caught.value.errno == errno.EDQUOT


def test_fsync_paths_takes_files_and_directories(tmp_path: Path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 10)
    fsync_paths([tmp_path / "d" / "f", tmp_path / "d", tmp_path / "d" / "f"])
    with pytest.raises(FileNotFoundError):
        fsync_paths([tmp_path / "missing"])


def test_file_size_never_walks_a_directory(tmp_path: Path):
    (tmp_path / "f").write_bytes(b"x" * 10)
    assert file_size(tmp_path / "f") == 10
    assert file_size(tmp_path) == 0
    assert file_size(tmp_path / "gone") == 0
    os.mkfifo(tmp_path / "fifo")
    assert file_size(tmp_path / "fifo") == 0
