"""Readers of the ring: :class:`RingReader` and the :class:`Record` it returns."""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import RingBusy, RingCorrupt, UnsupportedData
from daq_storage.ring import _format as f
from daq_storage.ring._attach import READER_BYTE, WRITER_BYTE
from daq_storage.ring._mapping import RingFile
from daq_storage.ring._platform import (
    fence,
    lock_byte,
    lock_holder_alive,
    monotonic_ns,
    unlock_byte,
)
from daq_storage.ring._stats import RingStats, ring_stats

__all__ = ["Record", "RingReader"]

Start = Literal["oldest", "latest"]


class Record:
    """One record read from the ring.

    Attributes:
        seq: sequence number (0, 1, 2, ... over the ring's life).
        stream: the stream's name.
        kind: ``"raw"``, ``"frame"`` or ``"arrow"``.
        timestamp_ns: the writer's timestamp (ns since the epoch).
        data: the payload (``bytes``-like, read-only).
        zero_copy: ``data`` views the shared mapping itself rather than a private copy;
            valid until the reader's next read (registered block-mode consumers) or
            until the writer laps it (check with :meth:`RingReader.still_valid`).
    """

    __slots__ = ("_ring", "aux", "data", "kind_code", "position", "seq", "stream_id",
                 "timestamp_ns", "zero_copy")  # fmt: skip

    def __init__(self, ring: RingFile, position: int, kind: int, stream_id: int, seq: int,
                 timestamp_ns: int, aux: int, data: Any, zero_copy: bool) -> None:  # fmt: skip
        self._ring = ring
        self.position = position
        self.kind_code = kind
        self.stream_id = stream_id
        self.seq = seq
        self.timestamp_ns = timestamp_ns
        self.aux = aux
        self.data = data
        self.zero_copy = zero_copy

    @property
    def stream(self) -> str:
        return self._ring.stream_name(self.stream_id)

    @property
    def kind(self) -> str:
        return f.KIND_NAMES.get(self.kind_code, str(self.kind_code))

    def __len__(self) -> int:
        return len(self.data)

    def __bool__(self) -> bool:
        # A zero-length payload is still a record: `if reader.read_next():` must hold.
        return True

    def __repr__(self) -> str:
        return (
            f"Record(seq={self.seq}, stream={self.stream!r}, kind={self.kind!r}, "
            f"timestamp_ns={self.timestamp_ns}, nbytes={len(self.data)})"
        )

    def tobytes(self) -> bytes:
        """The payload as ``bytes``."""
        return bytes(self.data)

    def _frame_header(self) -> tuple[np.dtype[Any], tuple[int, ...], int, bytes, int]:
        if self.kind_code != f.KIND_FRAME:
            raise UnsupportedData(f"record {self.seq} of stream {self.stream!r} is not a frame")
        data = self.data
        where = f"ring {self._ring.path}: frame record {self.seq}"
        if len(data) < f.FRAME_HEADER.size:
            raise RingCorrupt(f"{where} is {len(data)} bytes, shorter than a frame header")
        code, ndim, meta_len, number, *dims = f.FRAME_HEADER.unpack_from(data, 0)
        if ndim > f.FRAME_MAX_DIMS:
            raise RingCorrupt(f"{where} has {ndim} dimensions (max {f.FRAME_MAX_DIMS})")
        try:
            dtype = np.dtype(code.rstrip(b"\x00").decode("ascii"))
        except (TypeError, ValueError, UnicodeDecodeError):
            raise RingCorrupt(f"{where} has invalid dtype {code!r}") from None
        shape = tuple(dims[:ndim])
        offset = f.FRAME_HEADER.size + f.align(meta_len)
        if dtype.hasobject or offset > len(data):
            raise RingCorrupt(f"{where} has an invalid dtype or metadata length {meta_len}")
        # math.prod of Python ints cannot overflow; compare before any allocation.
        if math.prod(shape) * dtype.itemsize != len(data) - offset:
            raise RingCorrupt(
                f"{where}: shape {shape} of {dtype} needs {math.prod(shape) * dtype.itemsize} "
                f"bytes but the record holds {len(data) - offset}"
            )
        meta = bytes(data[f.FRAME_HEADER.size : f.FRAME_HEADER.size + meta_len])
        return dtype, shape, number, meta, offset

    def array(self, *, copy: bool = False) -> npt.NDArray[Any]:
        """The frame as an ndarray: a view of :attr:`data` (no copy) unless ``copy``."""
        dtype, shape, _, _, offset = self._frame_header()
        array = np.frombuffer(self.data, dtype=dtype, offset=offset).reshape(shape)
        return array.copy() if copy else array

    @property
    def frame_number(self) -> int:
        return self._frame_header()[2]

    @property
    def metadata(self) -> dict[str, Any]:
        """The frame's metadata (``{}`` when none was written)."""
        raw = self._frame_header()[3]
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            raise RingCorrupt(f"frame record {self.seq} has invalid metadata JSON") from None
        if not isinstance(value, dict):
            raise RingCorrupt(f"frame record {self.seq} metadata is not a JSON object")
        return value

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of an ``arrow`` record."""
        if self.kind_code != f.KIND_ARROW:
            raise UnsupportedData(f"record {self.seq} of stream {self.stream!r} is not Arrow")
        return self._ring.schema(self.aux)

    def batch(self) -> pa.RecordBatch:
        """The Arrow record batch of an ``arrow`` record (zero-copy over :attr:`data`)."""
        schema = self.schema
        try:
            return pa.ipc.read_record_batch(pa.py_buffer(self.data), schema)
        except (pa.ArrowInvalid, OSError) as exc:
            raise RingCorrupt(f"arrow record {self.seq} is unreadable: {exc}") from None


class RingReader:
    """A reader of a ring. Open with :meth:`open`.

    Anonymous readers (``consumer=None``) map the file read-only and never slow the
    writer. Named consumers take a reader slot: the ring reports their lag and losses,
    and in ``overflow="block"`` mode the writer waits for them. Either kind holds a lock
    while attached, so ``RingBuffer.create(exist_ok=True)`` never replaces the ring
    under it.
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
        cls, path: str | os.PathLike[str], *, start: Start = "oldest", consumer: str | None = None
    ) -> RingReader:
        """Attach to the ring at ``path``.

        Args:
            path: the ring file.
            start: ``"oldest"`` (everything still in the ring) or ``"latest"`` (from the
                newest complete record on).
            consumer: a name to register under (``None``: anonymous).

        Raises:
            FileNotFoundError: no file at ``path``.
            RingCorrupt: the file is not a valid ring (says what is wrong).
            RingBusy: ``consumer`` given and every reader slot is taken.
        """
        if start not in ("oldest", "latest"):
            raise ValueError(f"start must be 'oldest' or 'latest', got {start!r}")
        ring = RingFile.open_existing(
            path, writable=consumer is not None, lock=READER_BYTE, shared=True
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
        for _ in range(1000):
            intent, tail = self._check_consistent()
            if tail == 0:
                return 0, 0
            if start == "latest":
                pos = self._ring.u64(f.OFF_LATEST)
            elif intent <= self.capacity:
                pos = 0
            else:
                pos = self._oldest_checkpoint(intent, tail, 0)
            header = self._header_at(pos)
            if header is not None:
                return pos, header[3]
        raise RingCorrupt(f"ring {self.path}: no valid starting record found")

    def _oldest_checkpoint(self, intent: int, tail: int, floor: int) -> int:
        cap = self.capacity
        valid = []
        for i in range(f.CHECKPOINTS):
            p = self._ring.u64(f.OFF_CHECKPOINTS + 8 * i)
            if floor <= p < tail and intent - p <= cap:
                valid.append(p)
        if not valid:
            return self._ring.u64(f.OFF_LATEST)
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
        if seq < self._next_seq:
            raise RingCorrupt(
                f"ring {self.path}: sequence went backwards ({seq} after {self._next_seq - 1})"
            )
        self.lost += seq - self._next_seq
        self._next_seq = seq + 1
        self.delivered += 1

    def _corrupt(self, pos: int, what: str) -> RingCorrupt:
        return RingCorrupt(f"ring {self.path}: record at position {pos}: {what}")

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
        """
        self._ring.check_open("read_next")
        self._publish()
        record = self._try_read(copy)
        if record is not None or timeout == 0:
            return record
        deadline = None if timeout is None else time.monotonic() + timeout
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
        """
        self._ring.check_open("read_many")
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
        ring = self._ring
        cap = self.capacity
        for _ in range(100):
            if stream is None:
                if ring.u64(f.OFF_TAIL) == 0:
                    return None
                pos = ring.u64(f.OFF_LATEST)
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
    def next_seq(self) -> int:
        """The sequence number this reader expects next."""
        return self._next_seq

    def stats(self) -> RingStats:
        """The ring's counters as seen from this reader."""
        overflow = "block" if self._ring.u64(f.OFF_OVERFLOW) == 1 else "discard_oldest"
        return ring_stats(self._ring, overflow)
