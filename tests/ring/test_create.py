"""Creating rings: room reserved before anything is touched, a sane share of memory,
errors that say what to do, and nothing left behind."""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from daq_storage.errors import (
    ConfigError,
    DaqStorageError,
    RingBusy,
    RingExists,
    StorageIOError,
)
from daq_storage.ring import RingBuffer, RingReader, _create
from daq_storage.ring import _format as f
from daq_storage.ring._space import cgroup_memory_limit, human_size
from tests.ring._workers import run_child
from tests.ring.conftest import SMALL

MiB = 1 << 20
HEADER = f.check_geometry(SMALL, 16, 256, 1024, 1 << 20).header_size  # create's defaults


def test_ring_larger_than_its_tmpfs_is_an_error_not_a_signal(mount_tmpfs):
    tmpfs = mount_tmpfs("16m")
    code, outcome = run_child("create_once", str(tmpfs / "ring"), str(64 * MiB))
    assert code == 0, f"the creating process died (exit {code}): {outcome}"
    assert outcome["errno"] == errno.ENOSPC
    message = outcome["message"]
    assert f"the tmpfs mounted at {tmpfs} has 16.0 MiB free of 16.0 MiB" in message
    assert f"needs {human_size(64 * MiB + HEADER)}" in message
    assert "capacity_bytes" in message
    assert "size_mb" in message
    assert outcome["left"] == []


def test_reservation_that_fails_after_the_room_check_is_enospc_and_leaves_nothing(mount_tmpfs):
    # The old ring's pages stay allocated while a (lockless) process maps it, so the room
    # counted for replacing it is not there when the new file is reserved.
    tmpfs = mount_tmpfs("16m")
    code, outcome = run_child("replace_while_mapped", str(tmpfs / "ring"), str(10 * MiB))
    assert code == 0, f"the creating process died (exit {code}): {outcome}"
    assert outcome["errno"] == errno.ENOSPC
    assert f"the tmpfs mounted at {tmpfs} has" in outcome["message"]
    assert outcome["left"] == []


def test_second_ring_that_does_not_fit_is_refused_and_the_first_is_intact(mount_tmpfs):
    tmpfs = mount_tmpfs("16m")
    first, second = tmpfs / "first", tmpfs / "second"
    code, outcome = run_child("second_ring", str(first), str(second), str(10 * MiB))
    assert code == 0, f"the creating process died (exit {code}): {outcome}"
    assert outcome["errno"] == errno.ENOSPC
    assert str(second) in outcome["message"]
    assert outcome["left"] == ["first"]
    assert outcome["first_ring"] == ["kept"]


@pytest.mark.parametrize("force", [False, True])
def test_huge_ring_on_dev_shm_is_refused_at_once(shm_path: Path, force: bool):
    if shutil.disk_usage(shm_path.parent).free >= 1 << 40:
        pytest.skip("this tmpfs has room for 1 TiB")
    code, outcome = run_child("create_once", str(shm_path), str(1 << 40), "force" if force else "")
    assert code == 0, f"the creating process died (exit {code}): {outcome}"
    # ENOSPC (no room) or ENOMEM (the RAM share); force never gets past missing room.
    assert outcome["errno"] in ((errno.ENOSPC,) if force else (errno.ENOSPC, errno.ENOMEM))
    assert "1.0 TiB" in outcome["message"]
    assert outcome["shmem_growth_kb"] == 0
    assert shm_path.name not in outcome["left"]
    assert not shm_path.exists()


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def test_ring_beyond_the_memory_share_needs_force(mount_tmpfs):
    from daq_storage.ring import max_ring_bytes

    memory = _mem_total()
    tmpfs = mount_tmpfs(str(2 * memory))  # room is not the limit here: memory is
    limit = max_ring_bytes(tmpfs)
    assert 0 < limit <= memory // 2
    code, outcome = run_child("create_once", str(tmpfs / "ring"), str(limit + limit // 4))
    assert code == 0, f"the creating process died (exit {code}): {outcome}"
    assert outcome["errno"] == errno.ENOMEM
    message = outcome["message"]
    assert f"the tmpfs mounted at {tmpfs} is held in memory" in message
    assert "force=True" in message
    assert "half of" in message or "available" in message
    assert outcome["left"] == []
    # force=True goes past the memory share (to the next check: no room for 3x memory).
    code, outcome = run_child("create_once", str(tmpfs / "ring"), str(3 * memory), "force")
    assert (code, outcome["errno"], outcome["left"]) == (0, errno.ENOSPC, [])


def test_max_ring_bytes_is_the_largest_ring_create_accepts(mount_tmpfs):
    from daq_storage.ring import max_ring_bytes

    tmpfs = mount_tmpfs("16m")
    capacity = max_ring_bytes(tmpfs)
    assert capacity == (16 * MiB - HEADER) // f.PAGE * f.PAGE
    with pytest.raises(StorageIOError) as refused:
        RingBuffer.create(tmpfs / "ring", capacity_bytes=capacity + f.PAGE)
    assert refused.value.errno == errno.ENOSPC
    with RingBuffer.create(tmpfs / "ring", capacity_bytes=capacity) as ring:
        ring.write(b"fits", stream="s")
    assert max_ring_bytes(tmpfs / "ring") == capacity  # a ring that would be replaced is room
    assert max_ring_bytes(tmpfs / "other") == 0  # beside it, not even the smallest ring fits
    assert max_ring_bytes(mount_tmpfs("64k")) == 0


def test_create_errors_name_the_path(tmp_path: Path):
    missing = tmp_path / "no_such_dir" / "ring"
    with pytest.raises(StorageIOError, match=str(missing)) as info:
        RingBuffer.create(missing, capacity_bytes=SMALL)
    assert info.value.errno == errno.ENOENT
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(StorageIOError, match="cannot create ring") as info:
        RingBuffer.create(not_a_dir / "ring", capacity_bytes=SMALL)
    assert info.value.errno == errno.ENOTDIR
    with pytest.raises(ConfigError, match="max_readers"):
        RingBuffer.create(tmp_path / "ring", capacity_bytes=SMALL, max_readers=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_create_on_an_existing_ring_says_how_to_replace_or_reattach(ring: RingBuffer):
    ring.write(b"first", stream="s")
    ring.close()
    with pytest.raises(RingExists) as info:
        RingBuffer.create(ring.path, capacity_bytes=SMALL)
    assert isinstance(info.value, FileExistsError)
    assert isinstance(info.value, DaqStorageError)
    message = str(info.value)
    assert str(ring.path) in message
    assert "exist_ok=True" in message
    assert "RingBuffer.open" in message
    with RingReader.open(ring.path) as reader:  # untouched
        assert [r.tobytes() for r in reader.read_many()] == [b"first"]


def test_exist_ok_never_replaces_a_file_that_is_not_a_ring(tmp_path: Path):
    precious = tmp_path / "results.csv"
    precious.write_text("a,b\n1,2\n")
    with pytest.raises(RingExists, match="is not a ring buffer"):
        RingBuffer.create(precious, capacity_bytes=SMALL, exist_ok=True)
    assert precious.read_text() == "a,b\n1,2\n"


def test_exist_ok_replaces_a_ring_nobody_is_attached_to(ring: RingBuffer):
    ring.write(b"old", stream="s")
    ring.close()
    with RingBuffer.create(ring.path, capacity_bytes=2 * SMALL, exist_ok=True) as new:
        assert new.capacity == 2 * SMALL
        with RingReader.open(ring.path) as reader:
            assert reader.read_next() is None


def test_busy_writer_message_never_says_pid_0(ring: RingBuffer):
    ring._ring.set_u64(f.OFF_WRITER_PID, 0)  # a writer that has not recorded its pid yet
    with pytest.raises(RingBusy) as info:
        RingBuffer.open(ring.path)
    assert "pid 0" not in str(info.value)
    assert "pid is not recorded yet" in str(info.value)
    with pytest.raises(RingBusy) as info:
        RingBuffer.create(ring.path, capacity_bytes=SMALL, exist_ok=True)
    assert "pid 0" not in str(info.value)
    assert "a live writer (its pid is not recorded yet)" in str(info.value)


def test_named_temporary_file_where_unnamed_files_are_unsupported(
    shm_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(_create, "_UNNAMED_FILES", False)
    with RingBuffer.create(shm_path, capacity_bytes=SMALL) as ring:
        ring.write(b"x", stream="s")
    siblings = [p.name for p in shm_path.parent.iterdir() if p.name.startswith(shm_path.name)]
    assert siblings == [shm_path.name]
    shm_path.unlink()


@dataclass(frozen=True)
class _RingSection:
    """What from_config reads (duck-typed: the library does not import the config)."""

    path: Path | None
    capacity_bytes: int = SMALL
    overflow: str = "block"
    block_timeout_secs: float = 0.5
    max_readers: int = 3


def test_from_config_takes_an_explicit_path_or_refuses_none(shm_path: Path, tmp_path: Path):
    with RingBuffer.from_config(_RingSection(tmp_path / "unused"), path=shm_path) as ring:
        assert (ring.path, ring.overflow, ring.block_timeout) == (shm_path, "block", 0.5)
        assert ring._ring.geometry.max_readers == 3
    assert not (tmp_path / "unused").exists()
    with RingBuffer.from_config(_RingSection(shm_path), exist_ok=True) as ring:
        assert ring.path == shm_path
    shm_path.unlink()
    with pytest.raises(ConfigError, match="no path"):
        RingBuffer.from_config(_RingSection(None))


def test_cgroup_memory_limit_is_the_tightest_on_the_path(tmp_path: Path):
    v2 = tmp_path / "v2"
    (v2 / "lab" / "daq").mkdir(parents=True)
    (v2 / "lab" / "memory.max").write_text(f"{512 * MiB}\n")
    (v2 / "lab" / "daq" / "memory.max").write_text("max\n")
    assert cgroup_memory_limit("0::/lab/daq\n", v2) == 512 * MiB
    assert cgroup_memory_limit("0::/\n", v2) is None
    v1 = tmp_path / "v1"
    (v1 / "memory" / "job").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text(f"{1 << 62}\n")
    (v1 / "memory" / "job" / "memory.limit_in_bytes").write_text(f"{256 * MiB}\n")
    cgroups = "5:cpu,cpuacct:/job\n4:memory:/job\n0::/\n"
    assert cgroup_memory_limit(cgroups, v1) == 256 * MiB
    # A container that sees its own cgroup as the root: the path is not there.
    assert cgroup_memory_limit("4:memory:/elsewhere/job\n", v1) == 1 << 62
