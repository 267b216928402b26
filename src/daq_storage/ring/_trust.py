"""What a ring path names and who made it (docs/ring-format.md, *Trust*).

A ring normally lives in a world-writable directory (/dev/shm) at a predictable path, so
anyone on the machine may have put something there first. A ring is trusted when the
path names a regular file (not a symbolic link) owned by this user or by root that
neither group nor others may write; anything else is refused unless the caller passes
``trust_foreign=True`` (a ring shared on purpose between accounts). Whatever the trust,
the path must name a regular file: a FIFO, directory or device is never opened for
reading, so nothing at the path can make ``open`` wait.
"""

from __future__ import annotations

import errno
import os
import stat

from daq_storage.errors import (
    InvalidName,
    RingCorrupt,
    RingNotFound,
    RingNotTrusted,
    StorageIOError,
    describe_value,
)

__all__ = ["check_owner", "describe_file", "open_ring_file", "ring_path"]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)
_OPT_IN = (
    "pass trust_foreign=True only if the ring is shared on purpose (see the trust model "
    "in docs/ring-format.md)"
)


def ring_path(path: object) -> str:
    """``path`` as a string, or :class:`InvalidName` for what cannot name a file."""
    try:
        where: str | bytes = os.fspath(path)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidName(
            f"a ring path must be a str or os.PathLike, got {describe_value(path)}"
        ) from None
    if isinstance(where, bytes):
        where = os.fsdecode(where)
    if not where or "\x00" in where:
        raise InvalidName(f"ring path {describe_value(where)} is empty or contains NUL")
    return where


def describe_file(st: os.stat_result) -> str:
    """``"a FIFO"``, ``"a directory"``, ...; ``"a regular file"`` otherwise."""
    for test, name in _KINDS:
        if test(st.st_mode):
            return name
    return "a regular file"


def check_owner(path: str, st: os.stat_result) -> None:
    """Refuse a file that someone other than this user (or root) made or may change.

    Raises:
        RingNotTrusted: naming the owner or the permission that lets others write it.
    """
    uid = os.geteuid()
    if st.st_uid not in (uid, 0):
        raise RingNotTrusted(
            f"ring {path} belongs to uid {st.st_uid}, not to this user (uid {uid}) or "
            f"root: another user may have made it to read or feed this acquisition. Use a "
            f"ring path of your own (e.g. in a directory only you can write), or {_OPT_IN}"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RingNotTrusted(
            f"ring {path} has mode {stat.S_IMODE(st.st_mode):04o}: "
            f"{'others' if st.st_mode & stat.S_IWOTH else 'its group'} may write it, so its "
            f"content cannot be trusted. Re-create it with the default mode 0600, or {_OPT_IN}"
        )


def _not_a_ring(path: str, st: os.stat_result) -> RingCorrupt:
    return RingCorrupt(f"{path} is {describe_file(st)}, not a ring file")


def _refusal(path: str, exc: OSError, trust_foreign: bool) -> Exception:
    """The error for an ``open`` of ``path`` that failed with ``exc``."""
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode) and not trust_foreign:
        return RingNotTrusted(
            f"ring {path} is a symbolic link; rings are opened without following links "
            f"(open the file it names), or {_OPT_IN}"
        )
    if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
        return _not_a_ring(path, st)
    detail = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM) and st is not None:
        detail += f" (owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})"
    return StorageIOError(exc.errno or errno.EIO, f"cannot open ring {path}: {detail}", path)


def open_ring_file(path: str, *, writable: bool, trust_foreign: bool) -> int:
    """Open the ring file at ``path`` after checking what it is and who made it.

    Never waits: a FIFO is refused before it is opened, and opened non-blocking if it
    appears in between.

    Raises:
        RingNotFound: nothing at ``path`` (a ``FileNotFoundError``).
        RingCorrupt: ``path`` names a directory, FIFO, socket or device.
        RingNotTrusted: see :func:`check_owner`; or ``path`` is a symbolic link.
        StorageIOError: any other reason the file cannot be opened (permissions, ...).
    """
    try:
        st = os.stat(path) if trust_foreign else os.lstat(path)
    except FileNotFoundError:
        raise RingNotFound(f"no ring buffer at {path}") from None
    except OSError as exc:
        raise _refusal(path, exc, trust_foreign) from None
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISLNK(st.st_mode):
            raise _refusal(path, OSError(errno.ELOOP, "symbolic link"), trust_foreign)
        raise _not_a_ring(path, st)
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC | os.O_NONBLOCK
    if not trust_foreign:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise RingNotFound(f"no ring buffer at {path}") from None
    except OSError as exc:
        raise _refusal(path, exc, trust_foreign) from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):  # replaced since the check above
            raise _not_a_ring(path, opened)
        if not trust_foreign:
            check_owner(path, opened)
    except BaseException:
        os.close(fd)
        raise
    return fd
