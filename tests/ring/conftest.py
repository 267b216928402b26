"""Fixtures for ring tests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
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
