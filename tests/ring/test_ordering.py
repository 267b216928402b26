"""Publication order: a copy large enough for non-temporal stores is fenced before the
tail that publishes it, on every CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from daq_storage.ring import RingBuffer, RingReader
from daq_storage.ring._platform import LARGE_COPY_BYTES, store_fence


@pytest.fixture
def counted_store_fences(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of the writer's store fence (the real one still runs)."""
    calls: list[int] = []

    def counting() -> None:
        calls.append(1)
        store_fence()

    monkeypatch.setattr("daq_storage.ring._writer.store_fence", counting)
    return calls


@pytest.fixture
def big_ring(shm_path: Path) -> Iterator[RingBuffer]:
    ring = RingBuffer.create(shm_path, capacity_bytes=32 << 20)  # 512 KiB segments
    yield ring
    ring.close()
    ring.unlink()


def test_large_copies_are_fenced_small_ones_are_not(
    big_ring: RingBuffer, counted_store_fences: list[int]
):
    frame = np.arange(480 * 640, dtype=np.uint16).reshape(480, 640)  # 600 KiB
    big_ring.write_frame(frame, stream="camera")
    assert len(counted_store_fences) == 1
    big_ring.write(bytes(100), stream="raw")
    big_ring.write(bytes(LARGE_COPY_BYTES - 64), stream="raw")  # with its header: below
    assert len(counted_store_fences) == 1
    big_ring.write(bytes(LARGE_COPY_BYTES), stream="raw")
    assert len(counted_store_fences) == 2
    big_ring.write_many(np.zeros((1024, 1024), np.uint8), stream="rows")  # 512 KiB blocks
    assert len(counted_store_fences) > 2
    with RingReader.open(big_ring.path, start="oldest") as reader:
        record = reader.read_next()
        assert record is not None
        np.testing.assert_array_equal(record.array(), frame)
