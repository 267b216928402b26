"""What a ring's writers published, derived from the records themselves.

A writer can die at any instruction. It stores ``latest`` before ``tail`` and
``next_seq``, the counters and a stream's latest record after it, so after a crash
``latest`` may name a record that was never published and the words stored after
``tail`` may be one publication behind. Nothing here trusts them: the newest published
record is found by walking from ``latest`` or a checkpoint to ``tail``, and a writer
that re-attaches derives ``next_seq``, ``latest`` and the counters from it
(docs/ring-format.md, *Recovery*).
"""

from __future__ import annotations

from typing import NamedTuple

from daq_storage.errors import RingCorrupt
from daq_storage.ring import _format as f
from daq_storage.ring._mapping import RingFile
from daq_storage.ring._platform import fence

__all__ = ["Newest", "check_positions", "newest_record", "recover"]

# Words a writer adds to: a value this large is not one any writer stored.
_COUNTERS = {
    f.OFF_NEXT_SEQ: "next_seq",
    f.OFF_RECORDS_WRITTEN: "records_written",
    f.OFF_BYTES_WRITTEN: "bytes_written",
    f.OFF_DROPPED: "dropped",
    f.OFF_EVICTIONS: "evictions",
    f.OFF_WRITER_GENERATION: "writer_generation",
}


class Newest(NamedTuple):
    """The newest published record: where it starts, its sequence number and stream."""

    position: int
    seq: int
    stream: int


def check_positions(ring: RingFile, intent: int, tail: int) -> None:
    """Refuse publish words that no writer can have stored.

    Raises:
        RingCorrupt: naming the word.
    """
    cap = ring.capacity
    if intent >= f.POSITION_LIMIT:
        raise RingCorrupt(f"ring {ring.path}: tail_intent {intent} is beyond any position")
    if not tail <= intent <= tail + min(cap, f.MAX_RECORD):
        raise RingCorrupt(f"ring {ring.path}: tail_intent {intent} and tail {tail} disagree")
    room = cap - tail % cap
    if intent > tail and (room < f.RECORD_HEADER_SIZE or intent - tail > room):
        raise RingCorrupt(
            f"ring {ring.path}: the unfinished record from {tail} to {intent} crosses the "
            "end of the data region"
        )


def _walk(ring: RingFile, pos: int, stop: int, tail: int) -> tuple[Newest | None, bool]:
    """The last non-padding record from ``pos`` to ``stop``, and whether every header on
    the way was valid and intact (``pos`` a record boundary, nothing overwritten)."""
    cap = ring.capacity
    buf = ring.buf
    data = ring.data_offset
    last = None
    while pos < stop:
        idx = pos % cap
        room = cap - idx
        if room < f.RECORD_HEADER_SIZE:
            pos += room
            continue
        length, kind, stream, seq, _ts, _aux, _crc = f.RECORD_HEADER.unpack_from(buf, data + idx)
        fence()
        if ring.u64(f.OFF_TAIL_INTENT) - pos > cap:
            return None, False  # overwritten while we looked
        size = f.align(length)
        if not f.RECORD_HEADER_SIZE <= length <= room or kind > f.KIND_ARROW or pos + size > tail:
            return None, False
        if kind != f.KIND_PADDING:
            last = Newest(pos, seq, stream)
        pos += size
    return last, pos == stop


def newest_record(ring: RingFile) -> Newest | None:
    """The newest record published and still intact; ``None`` if there is none.

    Starts from ``latest`` when it lies before ``tail`` (stored before it, it then names
    a published record), else from the newest checkpoint that does, and walks to
    ``tail``; a start that turns out not to be a record boundary is skipped.
    """
    cap = ring.capacity
    tail = ring.u64(f.OFF_TAIL)
    fence()
    intent = ring.u64(f.OFF_TAIL_INTENT)
    if tail == 0 or intent < tail:
        return None
    starts = {ring.u64(f.OFF_LATEST)}
    starts.update(ring.u64(f.OFF_CHECKPOINTS + 8 * i) for i in range(f.CHECKPOINTS))
    if intent <= cap:
        starts.add(0)  # the first lap starts with a record
    stop = tail
    for start in sorted((p for p in starts if p < tail and intent - p <= cap), reverse=True):
        if start >= stop:
            continue
        found, clean = _walk(ring, start, stop, tail)
        if not clean:
            continue
        if found is not None:
            return found
        stop = start  # only padding from here on: the newest record is further back
    return None


def recover(ring: RingFile) -> None:
    """Make a ring's words agree with what is published, whatever instruction its last
    writer died at; called by a writer holding the writer lock, before it writes.

    The record a dead writer left unfinished becomes padding; ``next_seq`` and
    ``records_written`` follow the newest published record; ``latest`` and its stream's
    latest name it. Every store comes before the ``tail`` that publishes the padding,
    so a writer that dies in here leaves a ring the next one recovers the same way.

    Raises:
        RingCorrupt: a word holds a value no writer can have stored.
    """
    intent = ring.u64(f.OFF_TAIL_INTENT)
    tail = ring.u64(f.OFF_TAIL)
    check_positions(ring, intent, tail)
    for offset, name in _COUNTERS.items():
        if ring.u64(offset) >= f.POSITION_LIMIT:
            raise RingCorrupt(f"ring {ring.path}: {name} {ring.u64(offset)} is impossibly large")
    g = ring.geometry
    streams = ring.u64(f.OFF_STREAM_COUNT)
    if streams > g.max_streams or ring.u64(f.OFF_SCHEMA_COUNT) > g.max_schemas:
        raise RingCorrupt(f"ring {ring.path}: more streams or schemas than it has slots")
    if ring.u64(f.OFF_SCHEMA_HEAP_USED) > g.schema_heap_size:
        raise RingCorrupt(f"ring {ring.path}: schema heap use beyond its size")
    newest = newest_record(ring)
    if newest is None:
        # Nothing published is intact: the last publication completed before the dead
        # writer started its unfinished record (or there was none), so next_seq holds.
        next_seq = ring.u64(f.OFF_NEXT_SEQ) if tail else 0
        latest = tail if intent > tail else ring.u64(f.OFF_LATEST)
    else:
        if newest.stream >= streams or newest.seq >= f.POSITION_LIMIT:
            raise RingCorrupt(f"ring {ring.path}: its newest record names stream or seq wrongly")
        next_seq, latest = newest.seq + 1, newest.position
    if intent > tail:
        f.RECORD_HEADER.pack_into(
            ring.buf, ring.data_offset + tail % ring.capacity, intent - tail, f.KIND_PADDING,
            0, 0, 0, 0, 0,
        )  # fmt: skip
        fence()
    ring.set_u64(f.OFF_LATEST, latest)
    ring.set_u64(f.OFF_NEXT_SEQ, next_seq)
    ring.set_u64(f.OFF_RECORDS_WRITTEN, next_seq)  # no gaps: every seq is one record
    if newest is not None:
        ring.set_u64(ring.stream_slot(newest.stream) + f.STREAM_LATEST, newest.position + 1)
    fence()
    ring.set_u64(f.OFF_TAIL, intent)
