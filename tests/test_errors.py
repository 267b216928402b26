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
        (errors.WriterBusy, RuntimeError),
        (errors.FormatError, RuntimeError),
        (errors.UnknownStream, KeyError),
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
        assert name in daq_storage.__all__


def test_every_leaf_is_covered_above():
    """A new error class must say which builtin it also is (the parametrised test)."""
    leaves = {getattr(errors, name) for name in errors.__all__} - {
        errors.DaqStorageError,
        errors.RingError,
    }
    for leaf in leaves:
        assert leaf.__mro__[1:] != (errors.DaqStorageError, Exception, BaseException), leaf


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (5, "5"),
        ("x" * 200, "'" + "x" * 76 + "..."),
        (10**5000, "an integer of 16610 bits"),  # str() refuses ints this long
        (_Unprintable(), "a _Unprintable"),
        (float("nan"), "nan"),
    ],
    ids=["int", "long str", "huge int", "bad repr", "nan"],
)
def test_describe_value_is_short_and_never_fails(value: object, shown: str):
    assert errors.describe_value(value) == shown
