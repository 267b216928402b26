"""Fixtures for ring tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
