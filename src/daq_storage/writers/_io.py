"""File I/O the writers share: positional writes, OS and library errors as
:class:`StorageIOError`, fsync for durable flushes, and running every close step."""

from __future__ import annotations

import errno
import os
import re
import resource
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from daq_storage.errors import (
    FormatError,
    SchemaMismatch,
    StorageIOError,
    UnsupportedData,
    WriterClosedError,
)

__all__ = ["file_size", "finish_all", "fsync_paths", "pwrite_all", "storage_errors"]


def finish_all(steps: Iterable[Callable[[], object]]) -> None:
    """Run every step (closing or flushing one file each) even when one fails, then raise
    the first failure, with each later one attached as a note (``__notes__``) and in
    its ``other_errors`` attribute: one stream's error never costs another stream its
    data, and none is lost from the report."""
    errors: list[Exception] = []
    for step in steps:
        try:
            step()
        except Exception as exc:
            errors.append(exc)
    if not errors:
        return
    first = errors[0]
    if len(errors) > 1:
        first.other_errors = errors[1:]  # type: ignore[attr-defined]
        for other in errors[1:]:
            first.add_note(f"also failed: {type(other).__name__}: {other}")
    raise first


def pwrite_all(fd: int, buffers: Sequence[Any], offset: int) -> int:
    """Write ``buffers`` at ``offset``, however many system calls it takes; returns the
    offset after them."""
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        written = os.pwritev(fd, views, offset)
        if written == 0 and any(view.nbytes for view in views):
            raise OSError(errno.EIO, "the file took no more bytes")
        offset += written
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
    return offset


def fsync_paths(paths: Iterable[Path]) -> None:
    """fsync each file (or directory) in ``paths``, then each one's parent directory
    once, so that the data and the names that reach it survive a power loss."""
    done: set[Path] = set()
    parents: list[Path] = []
    for path in paths:
        if path in done:
            continue
        done.add(path)
        _fsync(path)
        if path.parent not in parents:
            parents.append(path.parent)
    for parent in parents:
        if parent not in done:
            _fsync(parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_ERRNO_IN_MESSAGE = re.compile(r"errno = (\d+)")
# Words of HDF5's messages for a failed system call (without an errno in them).
_IO_WORDS = ("write failed", "read failed", "truncate failed", "No space left", "Input/output")


@contextmanager
def storage_errors(
    path: Path | str, action: str, *, library_errors: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Turn OS errors (disk full, permissions, file-size limit) into :class:`StorageIOError`.

    ``library_errors`` are further exception types a library raises (h5py raises
    ``RuntimeError`` or an ``OSError`` without errno from HDF5): one that reports a
    failed system call becomes a :class:`StorageIOError` with the errno the message
    names (EIO when none); any other is a :class:`FormatError` with the library's
    message.
    """
    try:
        yield
    except (StorageIOError, WriterClosedError, UnsupportedData, SchemaMismatch, FormatError):
        raise
    except OSError as exc:
        if exc.errno is None and library_errors and not _reports_io(str(exc)):
            # h5py raises OSError without an errno for HDF5's own refusals too
            raise FormatError(f"{action} ({path}): {exc}") from exc
        code = exc.errno if exc.errno is not None else _errno_in(str(exc))
        raise StorageIOError(code, f"{action}: {exc.strerror or exc}", str(path)) from exc
    except library_errors as exc:
        message = str(exc)
        if _reports_io(message):
            raise StorageIOError(_errno_in(message), f"{action}: {exc}", str(path)) from exc
        raise FormatError(f"{action} ({path}): {exc}") from exc


def _reports_io(message: str) -> bool:
    """A library's message reports a failed system call."""
    return bool(_ERRNO_IN_MESSAGE.search(message)) or any(word in message for word in _IO_WORDS)


def _errno_in(message: str) -> int:
    found = _ERRNO_IN_MESSAGE.search(message)
    return int(found.group(1)) if found else errno.EIO


def file_size(path: Path) -> int:
    """A regular file's size; 0 for a directory (its writer counts what it writes into
    it) or a file that is gone."""
    try:
        status = os.stat(path)
    except OSError:
        return 0
    return 0 if stat.S_ISDIR(status.st_mode) else status.st_size


def check_room(file: Path, nbytes: int, what: str, *, headroom: int) -> None:
    """Raise :class:`StorageIOError` (``EFBIG``/``ENOSPC``) when the file-size limit or
    the disk leaves less than ``nbytes + headroom`` bytes for ``file``."""
    need = nbytes + headroom
    try:
        status = os.stat(file)
    except OSError:
        size, folder = 0, file.parent
    else:
        size = status.st_size
        folder = file if stat.S_ISDIR(status.st_mode) else file.parent
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and size + need > limit:
        raise StorageIOError(
            errno.EFBIG,
            f"cannot write {what}: the file-size limit ({limit} bytes) leaves no room for "
            f"{nbytes} more bytes; everything written before stays readable",
            str(file),
        )
    try:
        disk = os.statvfs(folder)
    except OSError:
        return  # the write itself will report what is wrong
    free = disk.f_bavail * disk.f_frsize
    if free < need:
        raise StorageIOError(
            errno.ENOSPC,
            f"cannot write {what}: {free} bytes free on the disk, {nbytes} needed "
            f"(+{headroom} headroom); everything written before stays readable",
            str(file),
        )
