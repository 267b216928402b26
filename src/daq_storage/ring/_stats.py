"""What a ring reports about itself: :class:`RingStats` and :class:`ReaderStats`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daq_storage.ring import _format as f
from daq_storage.ring._mapping import RingFile
from daq_storage.ring._platform import lock_holder_alive

__all__ = ["ReaderStats", "RingStats", "ring_stats"]


@dataclass(frozen=True, slots=True)
class ReaderStats:
    """One registered reader as the ring sees it."""

    slot: int
    name: str
    pid: int
    state: str  # "active" or "evicted"
    lag_bytes: int
    delivered: int
    lost: int
    alive: bool


@dataclass(frozen=True, slots=True)
class RingStats:
    """Counters of a ring (see :meth:`RingBuffer.stats`)."""

    path: Path
    capacity: int
    overflow: str
    written: int  # records
    bytes: int  # payload bytes
    dropped: int  # records refused by block-mode timeouts
    evictions: int
    used_bytes: int  # bytes between the oldest retained position and the tail
    streams: list[str]
    readers: list[ReaderStats]


def ring_stats(ring: RingFile, overflow: str) -> RingStats:
    """Read a ring's counters and reader slots (works from any attached process)."""
    tail = ring.u64(f.OFF_TAIL)
    readers = []
    for i in range(ring.geometry.max_readers):
        slot = f.OFF_READERS + i * f.READER_SLOT_SIZE
        state = ring.u64(slot + f.SLOT_STATE)
        if state not in (f.STATE_ACTIVE, f.STATE_EVICTED):
            continue
        raw_name = bytes(ring.buf[slot + f.SLOT_NAME : slot + f.SLOT_NAME + 64]).rstrip(b"\x00")
        readers.append(
            ReaderStats(
                slot=i,
                name=raw_name.decode(errors="replace"),
                pid=ring.u64(slot + f.SLOT_PID),
                state="active" if state == f.STATE_ACTIVE else "evicted",
                lag_bytes=max(0, tail - ring.u64(slot + f.SLOT_CURSOR)),
                delivered=ring.u64(slot + f.SLOT_DELIVERED),
                lost=ring.u64(slot + f.SLOT_LOST),
                alive=lock_holder_alive(ring.fd, slot),
            )
        )
    return RingStats(
        path=ring.path,
        capacity=ring.capacity,
        overflow=overflow,
        written=ring.u64(f.OFF_RECORDS_WRITTEN),
        bytes=ring.u64(f.OFF_BYTES_WRITTEN),
        dropped=ring.u64(f.OFF_DROPPED),
        evictions=ring.u64(f.OFF_EVICTIONS),
        used_bytes=min(tail, ring.capacity),
        streams=ring.streams,
        readers=readers,
    )
