"""One ``DoGet`` subscriber: an anonymous reader of the ring following one stream.

An anonymous reader is never waited for by the ring's writer (not even in ``block``
mode), so a subscriber whose client stops reading cannot slow the writer: gRPC's flow
control stops this reader, the writer laps it, and the reader skips ahead to the oldest
record still intact, counting exactly the records it missed (the ring's sequence
numbers have no gaps). The count travels in the next batch's app metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from daq_storage.errors import ServiceError
from daq_storage.flight._batches import record_schema, records_batch
from daq_storage.flight._ticket import BatchInfo, Ticket
from daq_storage.ring import Record, RingReader

__all__ = ["BATCH_BYTES", "POLL_S", "Subscriber"]

#: A batch holds at most about this many payload bytes (one record at least).
BATCH_BYTES = 8 << 20
#: How often a waiting subscriber looks at its client's cancellation and the service's stop.
POLL_S = 0.05

Pair = tuple[pa.RecordBatch, bytes]


class Subscriber:
    """Reads ``ticket``'s stream from the ring at ``path`` and yields it as
    ``(batch, app_metadata)`` pairs until ``stopped()`` says so.

    Raises (on construction):
        ServiceError: the ring holds no record of the stream.
        RingNotFound, RingCorrupt, ...: as :meth:`RingReader.open`.
    """

    def __init__(self, path: Path, ticket: Ticket, stopped: Callable[[], bool]) -> None:
        self.ticket = ticket
        self._stopped = stopped
        self._reader = RingReader.open(path, start=ticket.start)
        self.delivered = 0  # records sent
        self.lost_total = 0
        self._lost_seen = 0  # the reader's lost count already reported
        self._gap = 0  # resuming: records after ``after_seq`` gone before we started
        start_seq = self._reader.next_seq
        if ticket.after_seq is not None and start_seq is not None:
            self._gap = max(0, start_seq - ticket.after_seq - 1)
        self._record_bytes = 1 << 16  # the stream's record size, learnt as records come
        self._leftover: list[Record] = []
        self._after = -1 if ticket.after_seq is None else ticket.after_seq
        self._sent_through = self._after  # the seq of the last record sent (-1: none)
        try:
            first = self._first_record()
            reference = first if first is not None else self._latest()
        except BaseException:
            self._reader.close()
            raise
        self._pending: list[Record] = [first] if first is not None else []
        self.kind = reference.kind
        self.schema = record_schema(reference)
        self._spec = self._spec_of(reference)

    def _matches(self, record: Record) -> bool:
        return record.seq > self._after and record.stream == self.ticket.stream

    def _first_record(self) -> Record | None:
        """The first record to send if the ring holds one now (read without waiting):
        its schema is the subscription's, even when newer records have another.

        From the latest: the stream's newest record, though the reader starts at the
        ring's newest (which may be another stream's); nothing of the stream lies between.
        """
        if self.ticket.start == "latest":
            latest = self._reader.read_latest(self.ticket.stream)
            if latest is not None:
                self._after = max(self._after, latest.seq)  # the reader may meet it again
                return latest
        while records := self._reader.read_many(self._max_records(), timeout=0.0):
            for i, record in enumerate(records):
                if self._matches(record):
                    self._leftover = records[i + 1 :]
                    return record
        return None

    def _latest(self) -> Record:
        latest = self._reader.read_latest(self.ticket.stream)
        if latest is None:
            streams = ", ".join(repr(s) for s in self._reader.streams) or "none yet"
            raise ServiceError(
                f"ring {self._reader.path} holds no record of stream {self.ticket.stream!r} "
                f"(streams: {streams})"
            )
        return latest

    @staticmethod
    def _spec_of(record: Record) -> Any:
        """What must stay equal for records to share the subscription's schema."""
        if record.kind == "arrow":
            return record.aux
        if record.kind == "frame":
            array = record.array()
            return array.dtype.str, array.shape
        return None

    def _same_schema(self, record: Record) -> bool:
        if record.kind != self.kind:
            return False
        spec = self._spec_of(record)
        if spec == self._spec:
            return True
        if record.kind == "arrow" and record.schema.equals(self.schema, check_metadata=True):
            self._spec = spec  # the same schema stored again (by a new writer)
            return True
        return False

    def _max_records(self) -> int:
        return max(1, min(4096, BATCH_BYTES // max(1, self._record_bytes)))

    # ------------------------------------------------------------------ streaming
    def _pair(self, records: list[Record], changed: bool = False) -> Pair:
        if records:
            batch = records_batch(self.schema, self.kind, records)
            self._record_bytes = max(1, len(records[-1].data))
        else:
            batch = pa.RecordBatch.from_arrays([pa.nulls(0, f.type) for f in self.schema],
                                               schema=self.schema)  # fmt: skip
        lost = self._reader.lost - self._lost_seen + self._gap
        self._lost_seen = self._reader.lost
        self._gap = 0
        self.lost_total += lost
        self.delivered += len(records)
        if records:
            first, last = records[0].seq, records[-1].seq
            self._sent_through = last
        else:  # nothing new: the client resumes after the last record it was sent
            first = last = self._sent_through
        return batch, BatchInfo(first, last, lost, self.lost_total, changed).encode()

    def batches(self) -> Iterator[Pair]:
        """The stream as ``(batch, app_metadata)`` pairs; ends when ``stopped()`` (the
        service stops, the client cancels) or after the last batch before the stream's
        schema changes (flagged in its metadata)."""
        try:
            yield from self._follow()
        finally:
            self._reader.close()

    def _follow(self) -> Iterator[Pair]:
        pending = self._pending
        size = sum(len(r.data) for r in pending)
        records = self._leftover
        while not self._stopped():
            for record in records:
                if not self._matches(record):
                    continue
                if not self._same_schema(record):
                    yield self._pair(pending, changed=True)
                    return
                pending.append(record)
                size += len(record.data)
                if size >= BATCH_BYTES:
                    yield self._pair(pending)
                    pending, size = [], 0
            if pending:
                yield self._pair(pending)
                pending, size = [], 0
            records = self._reader.read_many(self._max_records(), timeout=POLL_S)
