"""OS and CPU helpers: fences and open-file-description locks."""

from __future__ import annotations

import os
from pathlib import Path

from daq_storage.ring._platform import load_fence, lock_byte, lock_holder_alive, unlock_byte


def test_weakly_ordered_fence_path_loads_and_runs():
    fence = load_fence(True)  # what an aarch64 machine uses
    for _ in range(3):
        fence()
    load_fence(False)()


def test_ofd_locks_conflict_between_opens_not_within_one(tmp_path: Path):
    path = tmp_path / "lockfile"
    path.write_bytes(bytes(16))
    first = os.open(path, os.O_RDWR)
    second = os.open(path, os.O_RDWR)
    try:
        assert lock_byte(first, 3)
        assert lock_byte(first, 3)  # re-locking one's own byte is fine
        assert not lock_byte(second, 3)  # another open of the same file is refused
        assert lock_holder_alive(second, 3)
        assert not lock_holder_alive(first, 3)  # one's own lock does not count
        assert lock_byte(second, 4)
        unlock_byte(first, 3)
        assert not lock_holder_alive(second, 3)
        assert lock_byte(second, 3)
    finally:
        os.close(first)
        os.close(second)
