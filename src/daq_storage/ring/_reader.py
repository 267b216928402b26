"""Readers of the ring: :class:`RingReader`, which returns :class:`Record` objects."""

from __future__ import annotations

import math
import os
import time
import zlib
from collections.abc import Iterator
from numbers import Real
from typing import Any, Literal

from daq_storage.errors import ConfigError, InvalidName, RingBusy, RingCorrupt, describe_value
from daq_storage.ring import _format as f
from daq_storage.ring._args import flag
from daq_storage.ring._attach import READER_BYTE, WRITER_BYTE
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
from daq_storage.ring._stats import RingStats, ring_stats

__all__ = ["Record", "RingReader"]

Start = Literal["oldest", "latest"]
_UNKNOWN = -1  # next_seq of a reader that started where no record told it


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _wait(timeout: object) -> float | None:
    """``timeout`` as seconds to wait (>= 0; a negative one means don't wait), ``None``
    for forever."""
    if timeout is None:
        return None
    if not isinstance(timeout, bool) and isinstance(timeout, Real):
        try:
            seconds = float(timeout)
        except OverflowError:  # an int beyond float's range
            seconds = math.inf if timeout > 0 else 0.0  # type: ignore[operator]
        if not math.isnan(seconds):
            return max(0.0, seconds)
    raise ConfigError(f"timeout must be a number of seconds or None, got {describe_value(timeout)}")


class RingReader:
    """A reader of a ring. Open with :meth:`open`.

    Anonymous readers (``consumer=None``) map the file read-only and never slow the
    writer. Named consumers take a reader slot: the ring reports their lag and losses,
    and in ``overflow="block"`` mode the writer waits for them. Either kind holds a lock
    while attached, so ``RingBuffer.create(exist_ok=True)`` never replaces the ring
    under it.

    Nothing in the file can crash a reader, make it wait forever or allocate more than a
    record holds: what does not check out raises :class:`~daq_storage.errors.RingCorrupt`.
    """

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

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        start: Start = "oldest",
        consumer: str | None = None,
        trust_foreign: bool = False,
    ) -> RingReader:
        """Attach to the ring at ``path``.

        Args:
            path: the ring file.
            start: ``"oldest"`` (everything still in the ring) or ``"latest"`` (from the
                newest complete record on).
            consumer: a name to register under (``None``: anonymous).
            trust_foreign: read a ring made by another user, one that group or others
                may write, or one reached through a symbolic link (a ring shared between
                accounts on purpose). By default only a regular file of this user's or
                root's that nobody else may write is read.

        Raises:
            RingNotFound: no file at ``path`` (a ``FileNotFoundError``).
            RingNotTrusted: see ``trust_foreign`` (a ``PermissionError``).
            RingCorrupt: the file is not a valid ring (says what is wrong), or ``path``
                names a directory, FIFO or device.
            RingBusy: ``consumer`` given and every reader slot is taken.
            StorageIOError: the file cannot be opened or mapped (permissions, ...).
            ConfigError: ``start`` is neither ``"oldest"`` nor ``"latest"``.
            InvalidName: ``consumer`` is not a non-empty, printable string.
        """
        if not isinstance(start, str) or start not in ("oldest", "latest"):
            raise ConfigError(f"start must be 'oldest' or 'latest', got {describe_value(start)}")
        if consumer is not None and (
            not isinstance(consumer, str)
            or not consumer
            or not consumer.isprintable()
            or not _encodable(consumer)
        ):
            raise InvalidName(
                f"consumer {describe_value(consumer)} must be a printable, non-empty string"
            )
        ring = RingFile.open_existing(
            path,
            writable=consumer is not None,
            lock=READER_BYTE,
            shared=True,
            trust_foreign=flag(trust_foreign, "trust_foreign"),
        )
        try:
            return cls(ring, start, consumer)
        except BaseException:
            ring.close()
            raise

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release the reader slot and the mapping."""
        if self._ring.closed:
            return
        if self._slot is not None:
            self._ring.set_u64(self._slot + f.SLOT_STATE, f.STATE_FREE)
        self._ring.close()

    def __enter__(self) -> RingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._ring.closed

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
        (``_UNKNOWN`` when only padding is left before the tail)."""
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
                return (tail, _UNKNOWN) if newest is None else (newest.position, newest.seq)
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
                return pos, _UNKNOWN
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
            if expected != _UNKNOWN:
                self.lost += seq - expected
        self._next_seq = seq + 1
        self.delivered += 1

    def _corrupt(self, pos: int, what: str) -> RingCorrupt:
        return RingCorrupt(f"ring {self.path}: record at position {pos}: {what}")

    def heartbeat(self) -> None:
        """Mark this consumer alive now, without reading: store its slot's heartbeat and
        cursor (and counters) as a read would. A consumer busy elsewhere (waiting on
        its disk) calls it so that a block-mode writer does not evict it as silent.
        Does nothing for an anonymous reader.

        Raises:
            WriterClosedError: after :meth:`close`.
        """
        self._ring.check_open("heartbeat")
        self._publish()

    # ------------------------------------------------------------------ reading
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

    def read_next(self, timeout: float | None = 0.0, *, copy: bool = True) -> Record | None:
        """The next record, or ``None`` if none arrives within ``timeout`` seconds.

        Args:
            timeout: seconds to wait (``0``: don't wait; ``None``: wait forever).
            copy: ``False`` returns a zero-copy view of the shared mapping (see
                :attr:`Record.zero_copy`).

        Raises:
            RingCorrupt: the next record's header is invalid, or its sequence number
                goes backwards.
            ConfigError: ``timeout`` is not a number of seconds (or ``None``), or
                ``copy`` is not a bool.
            WriterClosedError: after :meth:`close`.
        """
        self._ring.check_open("read_next")
        # The default (don't wait, copy) is checked in a few ns; anything else in full.
        if (timeout.__class__ is float or timeout.__class__ is int) and timeout == 0:
            wait: float | None = 0.0
        else:
            wait = _wait(timeout)
        if copy is not True and copy is not False:
            copy = flag(copy, "copy")  # type: ignore[unreachable]
        self._publish()
        record = self._try_read(copy)
        if record is not None or wait == 0.0:
            return record
        deadline = None if wait is None else time.monotonic() + wait
        sleep = 0.0
        while True:
            time.sleep(sleep)
            sleep = min(0.001, sleep + 0.00002)
            record = self._try_read(copy)
            if record is not None:
                return record
            self._publish()
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def read_many(self, max_records: int = 4096, timeout: float | None = 0.0) -> list[Record]:
        """Up to ``max_records`` records (at least one unless ``timeout`` expires).

        Small records are copied in one block and parsed from it, which is several
        times faster than calling :meth:`read_next` for each.

        Raises:
            RingCorrupt, WriterClosedError: as for :meth:`read_next`.
            ConfigError: ``max_records`` is not a positive int, or ``timeout`` is bad.
        """
        self._ring.check_open("read_many")
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
            raise ConfigError(
                f"max_records must be a positive int, got {describe_value(max_records)}"
            )
        first = self.read_next(timeout)
        if first is None:
            return []
        out = [first]
        buf = self._buf
        cap = self.capacity
        ring = self._ring
        while len(out) < max_records:
            pos = self._pos
            tail = ring.u64(f.OFF_TAIL)
            if pos >= tail:
                break
            fence()
            idx = pos % cap
            span = min(tail - pos, cap - idx, 1 << 20)
            if span < f.RECORD_HEADER_SIZE:
                record = self._try_read(True)  # wrap or large record: the careful path
                if record is None:
                    break
                out.append(record)
                continue
            chunk = bytes(buf[self._data + idx : self._data + idx + span])
            fence()
            if ring.u64(f.OFF_TAIL_INTENT) - pos > cap:
                self.retries += 1
                self._lapped()
                continue
            view = memoryview(chunk)
            offset = 0
            unpack = f.RECORD_HEADER.unpack_from
            while offset + f.RECORD_HEADER_SIZE <= span and len(out) < max_records:
                length, kind, sid, seq, ts, aux, crc = unpack(chunk, offset)
                size = (length + 7) & ~7
                if length < f.RECORD_HEADER_SIZE or offset + length > cap - idx:
                    raise self._corrupt(pos + offset, f"length {length} out of bounds")
                if offset + size > span:
                    break  # a record larger than this chunk: the next round reads it whole
                if kind != f.KIND_PADDING:
                    if kind not in f.KIND_NAMES:
                        raise self._corrupt(pos + offset, f"unknown kind {kind}")
                    payload = view[offset + f.RECORD_HEADER_SIZE : offset + length]
                    if self._crc and crc and zlib.crc32(payload) != crc:
                        raise self._corrupt(pos + offset, f"payload CRC mismatch (seq {seq})")
                    self._account(seq)
                    out.append(Record(ring, pos + offset, kind, sid, seq, ts, aux, payload, False))
                offset += size
            if offset == 0:
                record = self._try_read(True)
                if record is None:
                    break
                out.append(record)
                continue
            self._pos = pos + offset
        return out

    def read_many_views(
        self, max_records: int = 4096, timeout: float | None = 0.0, *, min_view_bytes: int = 1 << 16
    ) -> list[Record]:
        """As :meth:`read_many`, but a frame record of at least ``min_view_bytes`` of
        payload is handed out zero-copy (:attr:`Record.zero_copy`, a view of the shared
        mapping) instead of copied; smaller records are copied as by :meth:`read_many`,
        without copying the large frames around them.

        The views stay intact until this reader's next read or :meth:`heartbeat` for a
        registered block-mode consumer (the cursor published is the one from before this
        call; :meth:`keep_alive` does not move it), and until the writer laps them in
        ``discard_oldest`` mode: copy what you need, then check :meth:`still_valid`.

        Raises:
            RingCorrupt, WriterClosedError: as for :meth:`read_next`.
            ConfigError: ``max_records`` is not a positive int, ``min_view_bytes`` not a
                non-negative int, or ``timeout`` is bad.
        """
        self._ring.check_open("read_many_views")
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
            raise ConfigError(
                f"max_records must be a positive int, got {describe_value(max_records)}"
            )
        if (
            isinstance(min_view_bytes, bool)
            or not isinstance(min_view_bytes, int)
            or min_view_bytes < 0
        ):
            raise ConfigError(
                f"min_view_bytes must be a non-negative int, got {describe_value(min_view_bytes)}"
            )
        wait = _wait(timeout)
        self._publish()  # the cursor every view handed out below stays behind
        out = self._read_views(max_records, min_view_bytes)
        if out or wait == 0.0:
            return out
        deadline = None if wait is None else time.monotonic() + wait
        sleep = 0.0
        while True:
            time.sleep(sleep)
            sleep = min(0.001, sleep + 0.00002)
            out = self._read_views(max_records, min_view_bytes)
            if out:
                return out
            self._publish()  # (nothing handed out yet)
            if deadline is not None and time.monotonic() >= deadline:
                return out

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
            view = memoryview(chunk)
            offset = 0
            while offset + hsize <= end and len(out) < max_records:
                length, kind, sid, seq, ts, aux, crc = unpack(chunk, offset)
                size = (length + 7) & ~7
                if length < hsize or offset + size > end:
                    raise self._corrupt(pos + offset, f"length {length} out of bounds")
                if kind != f.KIND_PADDING:
                    if kind not in f.KIND_NAMES:
                        raise self._corrupt(pos + offset, f"unknown kind {kind}")
                    payload = view[offset + hsize : offset + length]
                    if self._crc and crc and zlib.crc32(payload) != crc:
                        raise self._corrupt(pos + offset, f"payload CRC mismatch (seq {seq})")
                    self._account(seq)
                    out.append(Record(ring, pos + offset, kind, sid, seq, ts, aux, payload, False))
                offset += size
            self._pos = pos + offset
        return out

    def keep_alive(self) -> None:
        """Mark this consumer alive now without moving its published cursor (unlike
        :meth:`heartbeat`): the zero-copy records of its last read stay protected from a
        block-mode writer while it is busy elsewhere. Does nothing for an anonymous reader.

        Raises:
            WriterClosedError: after :meth:`close`.
        """
        self._ring.check_open("keep_alive")
        slot = self._slot
        if slot is None:
            return
        words = self._ring.words
        base = slot >> 3
        if not self.evicted and words.item(base + (f.SLOT_STATE >> 3)) == f.STATE_EVICTED:
            self.evicted = True
        words[base + (f.SLOT_HEARTBEAT >> 3)] = monotonic_ns()

    def discard(self, record: Record) -> None:
        """Count a zero-copy ``record`` this reader delivered, found overwritten
        (:meth:`still_valid` False) before its bytes were used, as lost instead: the
        ring's count of this consumer's losses then includes it."""
        if not record.zero_copy:
            raise ConfigError(f"record {record.seq} is a copy: it cannot have been overwritten")
        self.delivered -= 1
        self.lost += 1

    def iter(self, timeout: float | None = None, *, copy: bool = True) -> Iterator[Record]:
        """Yield records as they arrive; stop after ``timeout`` seconds without one
        (``None``: never stop)."""
        while True:
            record = self.read_next(timeout, copy=copy)
            if record is None:
                return
            yield record

    def __iter__(self) -> Iterator[Record]:
        return self.iter(timeout=0.0)

    def read_latest(self, stream: str | None = None) -> Record | None:
        """The newest complete record (of ``stream``, if given), copied; ``None`` if
        there is none yet. Does not move this reader's position; never slows the writer.
        """
        self._ring.check_open("read_latest")
        if stream is not None and not isinstance(stream, str):
            raise InvalidName(f"stream must be a str or None, got {describe_value(stream)}")
        ring = self._ring
        cap = self.capacity
        for _ in range(100):
            if stream is None:
                newest = self._newest()
                if newest is None:
                    return None
                pos = newest.position
            else:
                sid = ring.stream_id(stream)
                if sid is None:
                    return None
                latest = ring.u64(ring.stream_slot(sid) + f.STREAM_LATEST)
                if latest == 0:
                    return None
                pos = latest - 1
            fence()
            idx = pos % cap
            if cap - idx < f.RECORD_HEADER_SIZE:
                continue
            at = self._data + idx
            length, kind, sid_, seq, ts, aux, _crc = f.RECORD_HEADER.unpack_from(self._buf, at)
            if not f.RECORD_HEADER_SIZE <= length <= cap - idx or kind not in f.KIND_NAMES:
                fence()
                if ring.u64(f.OFF_TAIL_INTENT) - pos > cap:
                    continue  # overwritten under us: look again
                raise self._corrupt(pos, f"latest record has length {length} kind {kind}")
            payload = bytes(self._buf[at + f.RECORD_HEADER_SIZE : at + length])
            fence()
            if ring.u64(f.OFF_TAIL_INTENT) - pos > cap:
                self.retries += 1
                continue
            return Record(ring, pos, kind, sid_, seq, ts, aux, payload, False)
        return None

    def still_valid(self, record: Record) -> bool:
        """Whether a zero-copy record's bytes are still intact (not yet overwritten)."""
        fence()
        return self._ring.u64(f.OFF_TAIL_INTENT) - record.position <= self.capacity

    # ------------------------------------------------------------------ info
    @property
    def streams(self) -> list[str]:
        """Stream names declared so far."""
        return self._ring.streams

    @property
    def writer_alive(self) -> bool:
        """Whether a process currently holds the ring's writer lock."""
        return lock_holder_alive(self._ring.fd, WRITER_BYTE)

    @property
    def next_seq(self) -> int | None:
        """The sequence number this reader expects next (``None`` until its first record
        when it started where only padding was left)."""
        return None if self._next_seq == _UNKNOWN else self._next_seq

    def stats(self) -> RingStats:
        """The ring's counters as seen from this reader."""
        overflow = "block" if self._ring.u64(f.OFF_OVERFLOW) == 1 else "discard_oldest"
        return ring_stats(self._ring, overflow)
