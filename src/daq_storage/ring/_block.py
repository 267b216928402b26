"""Block mode: the writer waits for the slowest registered consumer, evicting dead or
silent ones (docs/ring-format.md, *Writer algorithm*, step 3)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from daq_storage.errors import RingFull
from daq_storage.ring import _format as f
from daq_storage.ring._mapping import RingFile
from daq_storage.ring._platform import fence, lock_holder_alive, monotonic_ns

__all__ = ["wait_for_consumers"]

_EVICTION_CHECK_S = 0.05


def _active_slots(ring: RingFile) -> Iterator[int]:
    for i in range(ring.geometry.max_readers):
        slot = f.OFF_READERS + i * f.READER_SLOT_SIZE
        if ring.u64(slot + f.SLOT_STATE) == f.STATE_ACTIVE:
            yield slot


def _evict_dead(ring: RingFile, heartbeat_timeout: float) -> None:
    now = monotonic_ns()
    limit = int(heartbeat_timeout * 1e9)
    for slot in _active_slots(ring):
        dead = not lock_holder_alive(ring.fd, slot)
        stale = now - ring.u64(slot + f.SLOT_HEARTBEAT) > limit
        if dead or stale:
            ring.set_u64(slot + f.SLOT_STATE, f.STATE_EVICTED)
            ring.set_u64(f.OFF_EVICTIONS, ring.u64(f.OFF_EVICTIONS) + 1)


def wait_for_consumers(
    ring: RingFile, end: int, tail: int, block_timeout: float, heartbeat_timeout: float
) -> int:
    """Wait until every active consumer's cursor is within a lap of ``end``; returns the
    slowest cursor (``tail`` when there is none).

    Raises:
        RingFull: still no room after ``block_timeout`` seconds (counted as dropped).
    """
    cap = ring.capacity
    deadline = time.monotonic() + block_timeout
    next_check = 0.0
    sleep = 0.0
    while True:
        fence()
        slowest = min((ring.u64(slot + f.SLOT_CURSOR) for slot in _active_slots(ring)),
                      default=tail)  # fmt: skip
        if end - slowest <= cap:
            return slowest
        now = time.monotonic()
        if now >= next_check:
            _evict_dead(ring, heartbeat_timeout)
            next_check = now + _EVICTION_CHECK_S
            continue
        if now >= deadline:
            ring.set_u64(f.OFF_DROPPED, ring.u64(f.OFF_DROPPED) + 1)
            raise RingFull(
                f"ring {ring.path}: no room for {end - tail} bytes after {block_timeout} s; "
                f"the slowest consumer is {end - cap - slowest} bytes behind (record dropped)"
            )
        time.sleep(sleep)
        sleep = min(0.001, sleep + 0.00005)
