"""Creating a ring file: room checked and reserved first, never visible half-made,
never replacing a ring somebody is attached to."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from daq_storage.errors import RingBusy, RingExists, RingNotTrusted, StorageIOError
from daq_storage.ring import _format as f
from daq_storage.ring._attach import WHOLE_FILE, WRITER_BYTE, describe_attached, same_file
from daq_storage.ring._mapping import RingFile, prefault
from daq_storage.ring._platform import conflicting_lock, lock_byte
from daq_storage.ring._space import check_room, no_room_error
from daq_storage.ring._trust import describe_file

__all__ = ["create_ring"]

# A file opened with O_TMPFILE has no name until it is linked: a creator killed before
# that leaves nothing behind. Filesystems without it get a named temporary file.
_UNNAMED_FILES = hasattr(os, "O_TMPFILE")
_ATTEMPTS = 50  # rounds lost to other processes creating or replacing the same path
_RETRY_S = 0.002


class _Closeable(Protocol):
    def close(self) -> None: ...


W = TypeVar("W", bound=_Closeable)


def _os_error(path: Path, exc: OSError, doing: str) -> StorageIOError:
    message = f"cannot create ring {path}: {doing} failed: {exc.strerror}"
    return StorageIOError(exc.errno or errno.EIO, message, str(path))


def _exists(path: Path) -> RingExists:
    return RingExists(
        f"ring {path} already exists; pass exist_ok=True to replace it (refused while a "
        "writer or reader is attached), or use RingBuffer.open(path) to attach to it as "
        "its writer"
    )


def _make_way(path: Path, file_size: int, *, exist_ok: bool, force: bool) -> bool:
    """Check the room for a new ring at ``path``; with ``exist_ok``, unlink an existing
    ring nobody is attached to. ``False``: another creator is replacing it, try again.

    Raises:
        RingExists: a file exists at ``path`` and ``exist_ok`` is false, or it is not a ring.
        RingNotTrusted: ``exist_ok`` and the file at ``path`` belongs to another user.
        RingBusy: a live writer or reader is attached to the existing ring.
        StorageIOError: no room (see ``check_room``), or the old file cannot be removed.
    """
    try:
        named = os.lstat(path)
    except FileNotFoundError:
        check_room(path, file_size, force=force)
        return True
    except OSError as exc:
        raise _os_error(path, exc, "examining the existing file") from None
    if not exist_ok:
        raise _exists(path)
    if named.st_uid != os.geteuid():
        raise RingNotTrusted(
            f"{path} exists and belongs to uid {named.st_uid}, not to this user: another user "
            "may have made it to read or feed this acquisition, so it is neither used nor "
            "replaced. Create the ring at a path of your own (e.g. in a directory only you "
            "can write), or have that file removed"
        )
    if not stat.S_ISREG(named.st_mode):
        raise RingExists(
            f"{path} exists and is {describe_file(named)}, not a ring file; refusing to "
            "replace it: remove it or choose another path"
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False  # removed meanwhile: look again
    except OSError as exc:
        raise _os_error(path, exc, "opening the existing file to replace it") from None
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
            return False  # replaced meanwhile: look again
        if os.pread(fd, len(f.MAGIC), 0) != f.MAGIC:
            raise RingExists(
                f"{path} exists and is not a ring buffer (no {f.MAGIC!r} magic); "
                "refusing to replace it: remove it or choose another path"
            )
        # One exclusive lock on the whole file succeeds only if nobody holds any lock on
        # it: no writer, no reader of either kind. Held until the unlink, it also keeps
        # anyone from attaching in between (they re-open the path instead).
        if not lock_byte(fd, 0, 0):
            if conflicting_lock(fd, 0, 0) in (None, WHOLE_FILE):
                return False
            raise RingBusy(
                f"ring {path} is in use by {describe_attached(fd)}; it cannot be replaced "
                "while they are attached (stop them, or create the ring at another path)"
            )
        if not same_file(fd, path):
            return False
        check_room(path, file_size, reclaimable=os.fstat(fd).st_blocks * 512, force=force)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _os_error(path, exc, "removing the ring it replaces") from None
        return True
    finally:
        os.close(fd)


def _new_file(path: Path, mode: int) -> tuple[int, Path | None]:
    """A new empty file in ``path``'s directory: ``(fd, None)`` when unnamed, else
    ``(fd, temporary name)``."""
    if _UNNAMED_FILES and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(path.parent, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, mode), None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    temp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.creating")
    return os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode), temp


def _build(fd: int, path: Path, geometry: f.Geometry, *, crc: bool, mode: int) -> RingFile:
    """Reserve, map, pre-fault and stamp the identity of the new file open as ``fd``."""
    size = geometry.file_size
    os.fchmod(fd, mode)  # the umask must not widen or narrow what was asked
    lock_byte(fd, WRITER_BYTE)  # held by the time the file gets its name
    try:
        # Every page exists before anything touches the mapping: a shortage is ENOSPC
        # here, never SIGBUS at the first write.
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_room_error(path, size) from None
        raise _os_error(path, exc, f"reserving {size} bytes") from None
    try:
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED)
    except OSError as exc:
        raise _os_error(path, exc, "mapping the file") from None
    try:
        try:
            prefault(mm, 0, size)
        except OSError as exc:
            raise _os_error(path, exc, "pre-faulting the mapping") from None
        f.IDENTITY.pack_into(
            mm, f.OFF_IDENTITY, f.MAGIC, f.VERSION, f.ENDIAN_MARK, geometry.header_size,
            geometry.capacity, geometry.max_readers, geometry.max_streams,
            geometry.max_schemas, f.FLAG_CRC if crc else 0, geometry.schema_heap_size,
            time.time_ns(),
        )  # fmt: skip
        return RingFile(path, fd, mm)
    except BaseException:
        mm.close()
        raise


def _link(fd: int, temp: Path | None, path: Path) -> bool:
    """Give the finished file its name; ``False`` if another file took it meanwhile."""
    try:
        if temp is not None:
            os.link(temp, path)
        else:
            # linkat(AT_SYMLINK_FOLLOW) through /proc names an O_TMPFILE file; os.link
            # calls plain link() (which links the /proc symlink itself) unless a
            # directory descriptor is given.
            proc_fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.link(str(fd), path, src_dir_fd=proc_fds, follow_symlinks=True)
            finally:
                os.close(proc_fds)
    except FileExistsError:  # link() never replaces an existing name
        return False
    except OSError as exc:
        raise _os_error(path, exc, "naming the new file") from None
    if temp is not None:
        with contextlib.suppress(OSError):  # a second name of the ring: harmless
            os.unlink(temp)
    return True


def create_ring(
    path: Path,
    geometry: f.Geometry,
    attach: Callable[[RingFile], W],
    *,
    crc: bool,
    mode: int,
    exist_ok: bool,
    force: bool,
) -> W:
    """Create a ring file at ``path`` and return ``attach(ring)``, its writer.

    The file is reserved in full (``posix_fallocate``) before it is mapped, and gets its
    name only once complete and attached, so a reader never sees it half-made. Nothing
    is left behind on failure.
    """
    for _ in range(_ATTEMPTS):
        if not _make_way(path, geometry.file_size, exist_ok=exist_ok, force=force):
            time.sleep(_RETRY_S)
            continue
        try:
            fd, temp = _new_file(path, mode)
        except OSError as exc:
            raise _os_error(path, exc, "creating the file") from None
        ring: RingFile | None = None
        writer: W | None = None
        try:
            ring = _build(fd, path, geometry, crc=crc, mode=mode)
            writer = attach(ring)
            if _link(fd, temp, path):
                return writer
        except BaseException:
            _discard(fd, temp, ring, writer)
            raise
        _discard(fd, temp, ring, writer)
        if not exist_ok:
            raise _exists(path)
    raise RingBusy(f"ring {path} kept being created or replaced by other processes; try again")


def _discard(fd: int, temp: Path | None, ring: RingFile | None, writer: _Closeable | None) -> None:
    if writer is not None:
        writer.close()
    elif ring is not None:
        ring.close()
    else:
        os.close(fd)
    if temp is not None:
        temp.unlink(missing_ok=True)
