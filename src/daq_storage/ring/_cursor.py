"""The mechanism under :class:`~daq_storage.ring.RingReader`: its position in the ring,
its consumer slot, and copying records out of the shared mapping safely against a
writer that may lap it."""

from __future__ import annotations

import os
import zlib
from typing import Any, Literal

from daq_storage.errors import RingBusy, RingCorrupt
from daq_storage.ring import _format as f
from daq_storage.ring._attach import READER_BYTE
from daq_storage.ring._mapping import RingFile
from daq_storage.ring._platform import (
    fence,
    lock_byte,
    lock_holder_alive,
    monotonic_ns,
    unlock_byte,
)
from daq_storage.ring._record import Record
from daq_storage.ring._recover import Newest, newest_record

__all__ = ["ReaderCursor", "Start"]

Start = Literal["oldest", "latest"]
UNKNOWN_SEQ = -1  # next_seq of a reader that started where no record told it


class ReaderCursor:
    """A reader's position and slot in a ring and the reads that move them; the public
    API is :class:`~daq_storage.ring.RingReader`."""

    def __init__(self, ring: RingFile, start: Start, consumer: str | None) -> None:
        self._ring = ring
        self.path = ring.path
        self.consumer = consumer
        self.capacity = ring.capacity
        self._buf = ring.buf
        self._data = ring.data_offset
        self._crc = bool(ring.flags & f.FLAG_CRC)
        self.delivered = 0
        self.lost = 0
        self.retries = 0  # records copied, then found overwritten (race paths taken)
        self.laps = 0
        self.evicted = False
        self._slot: int | None = None
        self._pos, self._next_seq = self._start_position(start)
        if consumer is not None:
            self._register(consumer)
            # The slot's lock now says a reader is attached; the shared lock stays the
            # sign of anonymous readers only.
            unlock_byte(ring.fd, READER_BYTE)

    # ------------------------------------------------------------------ positions
    def _check_consistent(self) -> tuple[int, int]:
        """``(tail_intent, tail)``, read in the order that makes ``intent >= tail``."""
        for _ in range(100):
            tail = self._ring.u64(f.OFF_TAIL)
            fence()
            intent = self._ring.u64(f.OFF_TAIL_INTENT)
            if intent >= tail:
                return intent, tail
        raise RingCorrupt(
            f"ring {self.path}: tail_intent {intent} is behind tail {tail} (never valid)"
        )

    def _start_position(self, start: Start) -> tuple[int, int]:
        """Where this reader starts and the sequence number it expects there
        (``UNKNOWN_SEQ`` when only padding is left before the tail)."""
        for _ in range(1000):
            intent, tail = self._check_consistent()
            if intent >= f.POSITION_LIMIT or intent - tail > self.capacity:
                raise RingCorrupt(
                    f"ring {self.path}: tail_intent {intent} and tail {tail} disagree"
                )
            if tail == 0:
                return 0, 0
            if start == "latest":
                newest = self._newest()
                return (tail, UNKNOWN_SEQ) if newest is None else (newest.position, newest.seq)
            pos = 0 if intent <= self.capacity else self._oldest_checkpoint(intent, tail, 0)
            while pos < tail:  # skip padding: the first record tells the sequence number
                header = self._header_at(pos)
                if header is None:
                    break  # overwritten meanwhile: look again
                length, kind = header[0], header[1]
                room = self.capacity - pos % self.capacity
                if kind != f.KIND_PADDING or not f.RECORD_HEADER_SIZE <= length <= room:
                    return pos, header[3]  # a damaged header is reported by the first read
                pos += f.align(length)
            else:
                return pos, UNKNOWN_SEQ
        raise RingCorrupt(f"ring {self.path}: no valid starting record found")

    def _newest(self) -> Newest | None:
        """The newest published record still intact (``latest``, checked; else found
        by :func:`newest_record`)."""
        ring = self._ring
        tail = ring.u64(f.OFF_TAIL)
        fence()
        pos = ring.u64(f.OFF_LATEST)
        if pos < tail:  # stored before tail: names a published record
            header = self._header_at(pos)
            if header is not None:
                length, kind, sid, seq = header[:4]
                room = self.capacity - pos % self.capacity
                if f.RECORD_HEADER_SIZE <= length <= room and kind in f.KIND_NAMES:
                    return Newest(pos, seq, sid)
        return newest_record(ring)

    def _oldest_checkpoint(self, intent: int, tail: int, floor: int) -> int:
        cap = self.capacity
        valid = []
        for i in range(f.CHECKPOINTS):
            p = self._ring.u64(f.OFF_CHECKPOINTS + 8 * i)
            if floor <= p < tail and intent - p <= cap:
                valid.append(p)
        if not valid:
            newest = self._newest()
            return tail if newest is None else newest.position
        # Prefer a record with some margin before the writer reaches it again.
        safe = [p for p in valid if intent - p <= cap - cap // 8]
        return min(safe or valid)

    def _header_at(self, pos: int) -> tuple[int, int, int, int, int, int, int] | None:
        """The validated header of the record at ``pos`` (skipping padding), or None if
        it was overwritten while being read."""
        cap = self.capacity
        idx = pos % cap
        if cap - idx < f.RECORD_HEADER_SIZE:
            return None
        header: tuple[int, int, int, int, int, int, int] = f.RECORD_HEADER.unpack_from(
            self._buf, self._data + idx
        )
        fence()
        if self._ring.u64(f.OFF_TAIL_INTENT) - pos > cap:
            return None
        return header

    def _register(self, consumer: str) -> None:
        name = consumer.encode()[:64]
        for i in range(self._ring.geometry.max_readers):
            slot = f.OFF_READERS + i * f.READER_SLOT_SIZE
            if self._ring.u64(slot + f.SLOT_STATE) == f.STATE_ACTIVE and lock_holder_alive(
                self._ring.fd, slot
            ):
                continue
            if not lock_byte(self._ring.fd, slot):
                continue
            buf = self._buf
            buf[slot + f.SLOT_NAME : slot + f.SLOT_NAME + 64] = name.ljust(64, b"\x00")
            self._ring.set_u64(slot + f.SLOT_PID, os.getpid())
            for field, value in ((f.SLOT_CURSOR, self._pos), (f.SLOT_HEARTBEAT, monotonic_ns()),
                                 (f.SLOT_DELIVERED, 0), (f.SLOT_LOST, 0)):  # fmt: skip
                self._ring.set_u64(slot + field, value)
            fence()
            self._ring.set_u64(slot + f.SLOT_STATE, f.STATE_ACTIVE)
            self._slot = slot
            return
        raise RingBusy(
            f"ring {self.path} has no free reader slot for consumer {consumer!r} "
            f"(max_readers={self._ring.geometry.max_readers})"
        )

    def _publish(self) -> None:
        """Release everything before the current position and mark this reader alive."""
        slot = self._slot
        if slot is None:
            return
        words = self._ring.words
        base = slot >> 3
        if not self.evicted and words.item(base + (f.SLOT_STATE >> 3)) == f.STATE_EVICTED:
            self.evicted = True
        words[base + (f.SLOT_CURSOR >> 3)] = self._pos
        words[base + (f.SLOT_HEARTBEAT >> 3)] = monotonic_ns()
        words[base + (f.SLOT_DELIVERED >> 3)] = self.delivered
        words[base + (f.SLOT_LOST >> 3)] = self.lost

    def _lapped(self) -> None:
        self.laps += 1
        intent, tail = self._check_consistent()
        self._pos = self._oldest_checkpoint(intent, tail, self._pos)

    def _account(self, seq: int) -> None:
        expected = self._next_seq
        if seq != expected:
            if seq < expected:
                raise RingCorrupt(
                    f"ring {self.path}: sequence went backwards ({seq} after {expected - 1})"
                )
            if expected != UNKNOWN_SEQ:
                self.lost += seq - expected
        self._next_seq = seq + 1
        self.delivered += 1

    def _corrupt(self, pos: int, what: str) -> RingCorrupt:
        return RingCorrupt(f"ring {self.path}: record at position {pos}: {what}")

    def _try_read(self, copy: bool) -> Record | None:
        """One attempt at the next record; None when nothing is published yet."""
        buf = self._buf
        cap = self.capacity
        data = self._data
        word = self._ring.words.item
        w_tail, w_intent = f.OFF_TAIL >> 3, f.OFF_TAIL_INTENT >> 3
        while True:
            pos = self._pos
            tail = word(w_tail)
            if pos >= tail:
                if pos > tail and pos - tail > cap:
                    raise self._corrupt(pos, f"reader is ahead of the tail {tail}")
                return None
            fence()
            idx = pos % cap
            room = cap - idx
            if room < f.RECORD_HEADER_SIZE:  # implicit padding at the wrap
                self._pos = pos + room
                continue
            at = data + idx
            length, kind, sid, seq, ts, aux, crc = f.RECORD_HEADER.unpack_from(buf, at)
            fence()
            if word(w_intent) - pos > cap:
                self.retries += 1
                self._lapped()
                continue
            if not f.RECORD_HEADER_SIZE <= length <= room:
                raise self._corrupt(pos, f"length {length} outside {f.RECORD_HEADER_SIZE}..{room}")
            size = (length + 7) & ~7
            if pos + size > tail:
                raise self._corrupt(pos, f"extends past the published tail {tail}")
            if kind == f.KIND_PADDING:
                self._pos = pos + size
                continue
            if kind not in f.KIND_NAMES:
                raise self._corrupt(pos, f"unknown kind {kind}")
            if copy:
                payload: Any = bytes(buf[at + f.RECORD_HEADER_SIZE : at + length])
            else:
                payload = buf[at + f.RECORD_HEADER_SIZE : at + length].toreadonly()
            fence()
            if word(w_intent) - pos > cap:
                self.retries += 1
                self._lapped()
                continue
            if self._crc and crc and zlib.crc32(payload) != crc:
                raise self._corrupt(pos, f"payload CRC mismatch (record seq {seq})")
            self._account(seq)
            self._pos = pos + size
            return Record(self._ring, pos, kind, sid, seq, ts, aux, payload, not copy)

    def _read_views(self, max_records: int, min_view: int) -> list[Record]:
        """One non-waiting round of :meth:`read_many_views`."""
        out: list[Record] = []
        buf = self._buf
        cap = self.capacity
        ring = self._ring
        data = self._data
        hsize = f.RECORD_HEADER_SIZE
        unpack = f.RECORD_HEADER.unpack_from
        while len(out) < max_records:
            pos = self._pos
            tail = ring.u64(f.OFF_TAIL)
            if pos >= tail:
                break
            fence()
            idx = pos % cap
            span = min(tail - pos, cap - idx, 1 << 20)
            # The run of small records ahead, from their headers in place (checked
            # against a lap below before anything is trusted), so that only they are copied.
            end = 0
            large = False
            while end + hsize <= span:
                length, kind = unpack(buf, data + idx + end)[:2]
                size = (length + 7) & ~7
                if length < hsize or size > span - end:
                    break
                if kind == f.KIND_FRAME and length - hsize >= min_view:
                    large = end == 0
                    break
                end += size
            fence()
            if ring.u64(f.OFF_TAIL_INTENT) - pos > cap:
                self.retries += 1
                self._lapped()
                continue
            if end == 0:  # a large frame (a view), a wrap, or a record past the span
                record = self._try_read(not large)
                if record is None:
                    break
                out.append(record)
                continue
            chunk = bytes(buf[data + idx : data + idx + end])
            fence()
            if ring.u64(f.OFF_TAIL_INTENT) - pos > cap:
                self.retries += 1
                self._lapped()
                continue
            offset = self._parse_chunk(chunk, pos, cap - idx, max_records, out)
            if offset == 0:  # the headers scanned in place said these records fit
                raise self._corrupt(pos, "record length changed under an unlapped read")
            self._pos = pos + offset
        return out

    def _parse_chunk(
        self, chunk: bytes, pos: int, room: int, max_records: int, out: list[Record]
    ) -> int:
        """Append the records of ``chunk`` (a copy of the ring from ``pos``, ``room``
        bytes before the end of the data area) to ``out``, up to ``max_records`` in all;
        the bytes taken (a record cut off at the chunk's end is left for the next read)."""
        view = memoryview(chunk)
        offset = 0
        hsize = f.RECORD_HEADER_SIZE
        unpack = f.RECORD_HEADER.unpack_from
        ring = self._ring
        while offset + hsize <= len(chunk) and len(out) < max_records:
            length, kind, sid, seq, ts, aux, crc = unpack(chunk, offset)
            size = (length + 7) & ~7
            if length < hsize or offset + length > room:
                raise self._corrupt(pos + offset, f"length {length} out of bounds")
            if offset + size > len(chunk):
                break  # a record larger than this chunk: the next round reads it whole
            if kind != f.KIND_PADDING:
                if kind not in f.KIND_NAMES:
                    raise self._corrupt(pos + offset, f"unknown kind {kind}")
                payload = view[offset + hsize : offset + length]
                if self._crc and crc and zlib.crc32(payload) != crc:
                    raise self._corrupt(pos + offset, f"payload CRC mismatch (seq {seq})")
                self._account(seq)
                out.append(Record(ring, pos + offset, kind, sid, seq, ts, aux, payload, False))
            offset += size
        return offset
