"""Fixtures for ring tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daq_storage.ring import RingBuffer

SMALL = 64 * 1024  # the smallest ring: wraps after a few records


@pytest.fixture
def ring(shm_path: Path) -> Iterator[RingBuffer]:
    """A fresh 64 KiB ring, unlinked afterwards."""
    writer = RingBuffer.create(shm_path, capacity_bytes=SMALL)
    yield writer
    writer.close()
    writer.unlink()


def payload_for(seq: int, size: int) -> bytes:
    """Bytes derived from the sequence number, so a torn or stale record shows."""
    pattern = seq.to_bytes(8, "little") * (size // 8 + 1)
    return pattern[:size]


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount real tmpfs filesystems of a given size (``"16m"``); skipped where mounting
    is not permitted (the suite runs as root in CI). Unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root")
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(point)]
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def run_python(script: str, *args: str, timeout: float = 120) -> tuple[int, dict[str, Any]]:
    """Run ``script`` with ``args`` in a fresh interpreter; its exit code and the JSON
    object it printed last (``{}`` if none; its stderr's end if it failed without one).
    The child can die by a signal (SIGBUS, the OOM killer) without taking the test run
    with it."""
    command = [sys.executable, "-c", textwrap.dedent(script), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            check=False)  # fmt: skip
    lines = result.stdout.strip().splitlines()
    try:
        printed = json.loads(lines[-1]) if lines else {}
    except ValueError:
        printed = {}
    if result.returncode != 0 and not printed:  # say why, in the assertion message
        printed = {"stderr": result.stderr[-4000:]}
    return result.returncode, printed
