"""A ring with a real writer process in it, for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daq_storage.ring import RingBuffer

WRITER = Path(__file__).with_name("_ring_writer.py")


def environ() -> dict[str, str]:
    """The test's environment without ``DAQ_STORAGE_*`` settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DAQ_STORAGE_")}


@pytest.fixture
def live_ring(shm_path: Path) -> Iterator[Path]:
    """A 1 MiB ring (``discard_oldest``) being written by a producer process: camera
    frames on ``camera_1``, power-meter rows on ``power_meter_01``, DAQ samples on
    ``daq_card``."""
    RingBuffer.create(shm_path, capacity_bytes=1 << 20).close()
    producer = subprocess.Popen(
        [sys.executable, str(WRITER), str(shm_path)], env=environ(), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert producer.stdout is not None
        assert producer.stdout.readline().strip() == "ready", "the producer did not start"
        yield shm_path
    finally:
        assert producer.stdin is not None
        producer.stdin.close()
        producer.wait(60)
        assert producer.stdout is not None
        producer.stdout.close()
        shm_path.unlink(missing_ok=True)
