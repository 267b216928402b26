"""Readers of the ring: :class:`RingReader`, which returns :class:`Record` objects."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from numbers import Real

from daq_storage.errors import ConfigError, InvalidName, describe_value
from daq_storage.ring import _format as f
from daq_storage.ring._args import flag
from daq_storage.ring._attach import READER_BYTE, WRITER_BYTE
from daq_storage.ring._cursor import UNKNOWN_SEQ, ReaderCursor, Start
from daq_storage.ring._mapping import RingFile
from daq_storage.ring._platform import (
    fence,
    lock_holder_alive,
    monotonic_ns,
)
from daq_storage.ring._record import Record
from daq_storage.ring._stats import RingStats, ring_stats

__all__ = ["Record", "RingReader"]


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


class RingReader(ReaderCursor):
    """A reader of a ring. Open with :meth:`open`.

    Anonymous readers (``consumer=None``) map the file read-only and never slow the
    writer. Named consumers take a reader slot: the ring reports their lag and losses,
    and in ``overflow="block"`` mode the writer waits for them. Either kind holds a lock
    while attached, so ``RingBuffer.create(exist_ok=True)`` never replaces the ring
    under it.

    Nothing in the file can crash a reader, make it wait forever or allocate more than a
    record holds: what does not check out raises :class:`~daq_storage.errors.RingCorrupt`.
    """

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
            offset = self._parse_chunk(chunk, pos, cap - idx, max_records, out)
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
        return None if self._next_seq == UNKNOWN_SEQ else self._next_seq

    def stats(self) -> RingStats:
        """The ring's counters as seen from this reader."""
        overflow = "block" if self._ring.u64(f.OFF_OVERFLOW) == 1 else "discard_oldest"
        return ring_stats(self._ring, overflow)
