"""``RingReader.heartbeat()``: a consumer busy elsewhere stays alive for a block-mode
writer, and what it has read is released without another read."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from daq_storage.errors import RingFull, WriterClosedError
from daq_storage.ring import RingBuffer, RingReader
from daq_storage.ring import _format as f
from daq_storage.ring._platform import monotonic_ns


def _slot_word(path: Path, field: int) -> int:
    """A word of the first reader slot, read from the file as another process would."""
    with path.open("rb") as file:
        file.seek(f.OFF_READERS + field)
        return int.from_bytes(file.read(8), "little")


def test_heartbeat_stores_the_heartbeat_and_cursor_without_reading(shm_path: Path) -> None:
    with RingBuffer.create(shm_path, capacity_bytes=1 << 16) as ring:
        reader = RingReader.open(shm_path, consumer="slow")
        try:
            for _i in range(10):
                ring.write(b"x" * 100, stream="s")
            assert len(reader.read_many(100)) == 10
            # A read publishes the cursor of the read before it: the slot still holds
            # the 10 records as unconsumed.
            assert ring.stats().readers[0].lag_bytes > 0
            before = monotonic_ns()
            reader.heartbeat()
            assert ring.stats().readers[0].lag_bytes == 0
            assert _slot_word(shm_path, f.SLOT_HEARTBEAT) >= before
            assert _slot_word(shm_path, f.SLOT_DELIVERED) == 10
            assert reader.read_many(10) == []  # nothing skipped, nothing read twice
        finally:
            reader.close()
        ring.unlink()


def test_anonymous_heartbeat_does_nothing_and_closed_raises(shm_path: Path) -> None:
    with RingBuffer.create(shm_path, capacity_bytes=1 << 16) as ring:
        anonymous = RingReader.open(shm_path)
        anonymous.heartbeat()
        assert ring.stats().readers == []
        anonymous.close()
        with pytest.raises(WriterClosedError):
            anonymous.heartbeat()
        ring.unlink()


def fill(ring: RingBuffer) -> None:
    for _ in range(1000):
        ring.write(b"y" * 1000, stream="s")


@pytest.mark.slow
def test_a_consumer_that_beats_is_not_evicted_one_that_does_not_is(shm_path: Path) -> None:
    # The writer waits 5 s, two and a half heartbeat timeouts, for a consumer beating
    # every 20 ms: only a beater stalled for 2 s at once would be evicted (a shared,
    # loaded machine stalls a thread for hundreds of ms, not seconds).
    ring = RingBuffer.create(shm_path, capacity_bytes=1 << 16, overflow="block",
                             block_timeout=5.0, heartbeat_timeout=2.0)  # fmt: skip
    reader = RingReader.open(shm_path, consumer="busy")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.02):  # the pace of a busy consumer, not synchronisation
            reader.heartbeat()

    beater = threading.Thread(target=beat)
    try:
        beater.start()
        with pytest.raises(RingFull):  # the ring fills; the live consumer is waited for
            fill(ring)
        assert ring.stats().evictions == 0
        stop.set()
        beater.join()
        # Silent now: evicted after heartbeat_timeout, and the write goes through.
        ring.write(b"y" * 1000, stream="s")
        assert ring.stats().evictions == 1
        reader.read_many(1)
        assert reader.evicted
    finally:
        stop.set()
        if beater.is_alive():
            beater.join()
        reader.close()
        ring.close()
        ring.unlink()
