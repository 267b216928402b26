"""How big a ring may be where it is created: free space and a sane share of memory.

A ring on a memory-backed filesystem (tmpfs, ramfs: /dev/shm) is held in RAM. Its pages
are charged to the creating process's memory cgroup, so reserving them up front turns
"no room" into an error instead of SIGBUS, but cannot stop a container's OOM killer;
hence the second rule.

The rule (documented in docs/ring-format.md, *Creating a ring*):

* the whole file (header + capacity) must fit the filesystem's free space (``statvfs``);
* on tmpfs / ramfs, without ``force=True``, it may take at most half of the smaller of
  physical memory (``MemTotal``) and the memory cgroup's limit (cgroup v2 ``memory.max``,
  v1 ``memory.limit_in_bytes``, the tightest along the cgroup's path), and no more than
  the memory available now (``MemAvailable``).
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from daq_storage.errors import ConfigError, StorageIOError
from daq_storage.ring import _format as f
from daq_storage.ring._args import geometry
from daq_storage.ring._trust import ring_path

__all__ = ["check_room", "human_size", "max_ring_bytes", "no_room_error"]

MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_ADVICE = "ask for a smaller ring (capacity_bytes, or [ring_buffer] size_mb in the configuration)"


def human_size(n: int) -> str:
    """``n`` bytes in binary units: ``"64.0 MiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover - the loop always returns


@dataclass(frozen=True, slots=True)
class Filesystem:
    """The filesystem a directory is on, as far as the ring cares."""

    directory: Path
    mount_point: str | None
    fstype: str | None
    free: int | None  # bytes an unprivileged file may still take; None: no limit (ramfs)
    total: int | None

    @property
    def memory_backed(self) -> bool:
        return self.fstype in MEMORY_FILESYSTEMS

    def describe(self) -> str:
        """``"the tmpfs mounted at /dev/shm"`` or ``"the filesystem of <dir>"``."""
        if self.mount_point is None:
            return f"the filesystem of {self.directory}"
        kind = self.fstype if self.memory_backed else f"{self.fstype} filesystem"
        return f"the {kind} mounted at {self.mount_point}"


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mount_of(directory: Path, device: int) -> tuple[str, str] | None:
    """``(mount point, fstype)`` of ``directory`` from /proc/self/mountinfo."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(device)}:{os.minor(device)}"
    real = str(directory.resolve())
    mounts: list[tuple[str, str, str]] = []  # (maj:min, mount point, fstype)
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        mounts.append((fields[2], _unescape(fields[4]), after[0] if after else "?"))
    same_device = [m for m in mounts if m[0] == wanted] or mounts
    best: tuple[str, str] | None = None
    for _dev, point, fstype in same_device:  # later lines mount over earlier ones
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fstype)
    return best


def filesystem_of(directory: Path) -> Filesystem:
    """The filesystem holding ``directory`` (which must exist)."""
    stats = os.statvfs(directory)
    mount = _mount_of(directory, os.stat(directory).st_dev)
    limited = stats.f_blocks > 0  # ramfs reports no size at all
    return Filesystem(
        directory=directory,
        mount_point=mount[0] if mount else None,
        fstype=mount[1] if mount else None,
        free=stats.f_bavail * stats.f_frsize if limited else None,
        total=stats.f_blocks * stats.f_frsize if limited else None,
    )


def _meminfo() -> dict[str, int]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def cgroup_memory_limit(proc_self_cgroup: str, root: Path = _CGROUP_ROOT) -> int | None:
    """The tightest memory limit on the cgroup path described by ``/proc/self/cgroup``
    text, read from the v2 (``memory.max``) or v1 (``memory/…/memory.limit_in_bytes``)
    hierarchy under ``root``; ``None`` when there is none."""
    limits: list[int] = []
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hierarchy, controllers, cgroup_path = parts
        if controllers == "":
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        # A container often sees its own cgroup as the hierarchy's root: walk from the
        # full path up to the root, keeping every limit found (a parent's binds too).
        here = base / cgroup_path.strip("/")
        while True:
            try:
                text = (here / name).read_text().strip()
            except OSError:
                text = ""
            if text.isdigit():
                limits.append(int(text))
            if here == base or base not in here.parents:
                break
            here = here.parent
    return min(limits, default=None)


@dataclass(frozen=True, slots=True)
class Allowance:
    """How large a ring file may be at one place, and why."""

    filesystem: Filesystem
    room: int | None  # free space (plus what replacing a ring frees); None: unlimited
    memory_limit: int | None  # the RAM-share rule; None: not memory-backed
    memory_reason: str


def allowance(directory: Path, reclaimable: int = 0) -> Allowance:
    """The limits at ``directory``; ``reclaimable``: bytes a replaced ring gives back."""
    fs = filesystem_of(directory)
    room = None if fs.free is None else fs.free + reclaimable
    if not fs.memory_backed:
        return Allowance(fs, room, None, "")
    info = _meminfo()
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", info.get("MemFree", 0)) + reclaimable
    try:
        cgroup = cgroup_memory_limit(Path("/proc/self/cgroup").read_text())
    except OSError:
        cgroup = None
    if cgroup is not None and cgroup < total:
        half, half_of = (
            cgroup // 2,
            f"half of this process's memory cgroup limit ({human_size(cgroup)})",
        )
    else:
        half, half_of = total // 2, f"half of physical memory ({human_size(total)})"
    if available < half:
        limit, reason = available, f"the memory available now ({human_size(available)})"
    else:
        limit, reason = half, half_of
    return Allowance(fs, room, limit, reason)


def _refuse(path: Path, code: int, message: str) -> StorageIOError:
    return StorageIOError(code, message, str(path))


def _limits(path: Path, reclaimable: int, directory: Path | None = None) -> Allowance:
    directory = path.parent if directory is None else directory
    try:
        return allowance(directory, reclaimable)
    except OSError as exc:
        raise _refuse(
            path, exc.errno or errno.EIO, f"cannot create ring {path}: {exc.strerror}"
        ) from None


def _no_room(path: Path, file_size: int, fs: Filesystem, room: int) -> StorageIOError:
    where = "the tmpfs" if fs.memory_backed else "it"
    how = " (docker run --shm-size=..., or mount -o remount,size=...)" if fs.memory_backed else ""
    return _refuse(
        path,
        errno.ENOSPC,
        f"cannot create ring {path}: it needs {human_size(file_size)} but {fs.describe()} "
        f"has {human_size(room)} free of {human_size(fs.total or 0)}; {_ADVICE}, or give "
        f"{where} more room{how}",
    )


def no_room_error(path: Path, file_size: int) -> StorageIOError:
    """The ``ENOSPC`` error for a reservation of ``file_size`` bytes that failed."""
    fs = _limits(path, 0).filesystem
    return _no_room(path, file_size, fs, fs.free or 0)


def check_room(path: Path, file_size: int, *, reclaimable: int = 0, force: bool = False) -> None:
    """Refuse a ring file of ``file_size`` bytes at ``path`` that cannot or should not fit.

    Args:
        path: the ring file to be created.
        file_size: header + capacity.
        reclaimable: bytes that replacing an existing ring gives back.
        force: skip the RAM-share rule (the free space still binds).

    Raises:
        StorageIOError: ``ENOSPC`` when the filesystem lacks the room; ``ENOMEM`` when a
            memory-backed one would give the ring more than the RAM share (not with
            ``force``); ``ENOENT`` etc. when the directory cannot be examined.
    """
    limits = _limits(path, reclaimable)
    fs = limits.filesystem
    if limits.room is not None and file_size > limits.room:
        raise _no_room(path, file_size, fs, limits.room)
    if limits.memory_limit is not None and file_size > limits.memory_limit and not force:
        raise _refuse(
            path,
            errno.ENOMEM,
            f"cannot create ring {path}: it needs {human_size(file_size)} but {fs.describe()} "
            f"is held in memory, and a ring there may take at most "
            f"{human_size(limits.memory_limit)} without force=True: {limits.memory_reason}; "
            f"{_ADVICE}, or pass force=True if the machine can spare the memory",
        )


def max_ring_bytes(
    path: str | os.PathLike[str],
    *,
    max_readers: int = 16,
    max_streams: int = 256,
    max_schemas: int = 1024,
    schema_heap_bytes: int = 1 << 20,
) -> int:
    """The largest ``capacity_bytes`` that ``RingBuffer.create`` accepts at ``path``
    without ``force``: the file (header + capacity) fits the free space and, on a
    memory-backed filesystem (tmpfs, /dev/shm), the RAM share (half of the smaller of
    physical memory and the memory cgroup's limit, at most the memory available now).

    Args:
        path: where the ring would be created; an existing directory means a ring in it.
            An existing ring file there counts as freed (``exist_ok=True`` replaces it).
        max_readers, max_streams, max_schemas, schema_heap_bytes: as for ``create``;
            they size the header.

    Returns:
        A multiple of 4096, or 0 when not even the smallest ring (64 KiB) fits.

    Raises:
        StorageIOError: the directory does not exist or cannot be examined.
        ConfigError: a slot count or the heap size is not an integer or out of range.
        InvalidName: ``path`` cannot name a file.
    """
    target = Path(ring_path(path))
    try:
        header = geometry(
            f.MIN_CAPACITY, max_readers, max_streams, max_schemas, schema_heap_bytes
        ).header_size
    except ConfigError as exc:
        raise ConfigError(f"ring {target}: {exc}") from None
    directory, reclaimable = target.parent, 0
    try:
        if target.is_dir():
            directory = target
        elif target.is_file():
            reclaimable = target.stat().st_blocks * 512
    except OSError as exc:
        raise _refuse(
            target, exc.errno or errno.EIO, f"cannot examine {target}: {exc.strerror}"
        ) from None
    limits = _limits(target, reclaimable, directory)
    bounds = [b for b in (limits.room, limits.memory_limit) if b is not None]
    largest = min(bounds, default=1 << 62) - header
    capacity = largest // f.PAGE * f.PAGE
    return capacity if capacity >= f.MIN_CAPACITY else 0
