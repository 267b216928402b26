"""The error hierarchy: one root, leaves that also inherit the natural builtin."""

from __future__ import annotations

import errno

import pytest

import daq_storage
from daq_storage import errors


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (errors.ConfigError, ValueError),
        (errors.InvalidName, ValueError),
        (errors.RingFull, BufferError),
        (errors.RingCorrupt, ValueError),
        (errors.RingBusy, BlockingIOError),
        (errors.RingExists, FileExistsError),
        (errors.RingNotFound, FileNotFoundError),
        (errors.RingNotTrusted, PermissionError),
        (errors.SchemaMismatch, TypeError),
        (errors.UnsupportedData, TypeError),
        (errors.WriterClosedError, RuntimeError),
        (errors.StorageIOError, OSError),
    ],
)
def test_leaf_errors_inherit_root_and_builtin(error: type[Exception], builtin: type[Exception]):
    assert issubclass(error, errors.DaqStorageError)
    assert issubclass(error, builtin)
    with pytest.raises(builtin, match="stream 'x'"):
        raise error("stream 'x' is at fault")


def test_ring_errors_share_a_base():
    ring_errors = (
        errors.RingFull,
        errors.RingCorrupt,
        errors.RingBusy,
        errors.RingExists,
        errors.RingNotFound,
        errors.RingNotTrusted,
    )
    for error in ring_errors:
        assert issubclass(error, errors.RingError)


def test_storage_io_error_keeps_errno_and_filename():
    exc = errors.StorageIOError(errno.ENOSPC, "disk full", "/data/run.h5")
    assert exc.errno == errno.ENOSPC
    assert exc.filename == "/data/run.h5"
    assert "disk full" in str(exc)
    assert "/data/run.h5" in str(exc)


def test_every_error_is_exported_from_the_package():
    for name in errors.__all__:  # errors are importable from the top level too
        assert getattr(daq_storage, name) is getattr(errors, name)
