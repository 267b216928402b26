"""The drain loop: read the ring, route each record, batch, fan out, flush on cadence.

It runs in the Recorder's process (or thread) and owns the ring reader; each format's
writer lives in its :class:`~daq_storage.recorder._sinks.FormatSink` thread. Every
batch goes to every format of its stream in the same order, so the files hold the same
rows and frames; a batch whose schema differs from the last one accepted for its stream
is first checked by every live format (in their threads, in queue order) and is then
stored by all of them or by none.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import InvalidName, RingBusy, RingCorrupt
from daq_storage.naming import sanitize_name
from daq_storage.recorder._groups import FrameGroup, GroupPool
from daq_storage.recorder._routing import Route, Routing
from daq_storage.recorder._sinks import FormatSink, Reply, SinkSettings
from daq_storage.recorder._stats import LossGap, RecorderStats, StreamStats, write_stats
from daq_storage.ring import Record, RingReader

__all__ = ["Control", "DrainLoop", "LoopSettings"]

log = logging.getLogger("daq_storage.recorder")

_PUBLISH_S = 0.5  # stats are published at least this often
_TURN_S = 0.05  # longest wait for a record before control requests are looked at
_MIN_FRAMES_PER_WRITE = 16
_SIGNAL_GRACE_S = 1.0  # see DrainLoop._last_writes
_MAX_ERRORS = 100  # errors kept in stats (the count beyond is said in the last one)
#: Frames of at least this many bytes are read zero-copy and copied straight into their
#: group; smaller records are copied in blocks by the ring (cheaper per record).
_VIEW_BYTES = 64 << 10


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """Everything the loop needs, validated by the Recorder (picklable for a process)."""

    ring: str
    consumer: str
    start: str
    formats: tuple[str, ...]
    streams: dict[str, tuple[str, ...]]
    sinks: dict[str, SinkSettings]
    flush_interval_s: float
    durable: bool
    batch_rows: int
    batch_bytes: int
    frames_per_write: int | None
    stats_path: Path
    started_ns: int
    #: Stop gracefully once this process's parent is no longer this pid (process mode).
    parent_pid: int | None = None
    #: Process mode: the level of the records forwarded to the parent's loggers.
    log_level: int = logging.WARNING


class Control(Protocol):
    """How the Recorder talks to a running loop (a queue in thread mode, a pipe in
    process mode)."""

    def poll(self) -> list[tuple[bool | None, Callable[[str | None], None]]]:
        """Flush requests that arrived: ``(durable or None for the default, done)``."""

    @property
    def stopping(self) -> bool:
        """A graceful stop was asked for (stop(), a signal, the parent gone)."""

    @property
    def aborting(self) -> bool:
        """Stop draining now (the stop timeout passed): close what is open."""

    @property
    def signalled(self) -> bool:
        """The stop came from SIGINT / SIGTERM (see :meth:`DrainLoop._last_writes`)."""


@dataclass(slots=True)
class _Stream:
    route: Route
    records: int = 0
    frames: int = 0
    rows: int = 0
    bytes_in: int = 0
    refused: int = 0
    unroutable: int = 0
    last_ts: int = 0
    # tables held back for joining
    batches: list[pa.RecordBatch] = field(default_factory=list)
    batch_records: int = 0
    batch_rows: int = 0
    batch_bytes: int = 0
    accepted_schema: pa.Schema | None = None
    # frames held back for grouping, copied into `group` (of `pool`)
    spec: tuple[np.dtype[Any], tuple[int, ...]] | None = None
    pool: GroupPool | None = None
    group: FrameGroup | None = None
    held: int = 0
    stamps: list[int] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    frame_bytes: int = 0

    def stats(self) -> StreamStats:
        r = self.route
        return StreamStats(r.stream, r.kind, self.records, self.frames, self.rows,
                           self.bytes_in, r.formats, self.refused, self.unroutable,
                           self.last_ts)  # fmt: skip


class DrainLoop:
    """Drains one ring into the sinks of its formats (see the module docstring)."""

    def __init__(self, settings: LoopSettings) -> None:
        self.settings = settings
        self.routing = Routing(settings.formats, settings.streams)
        self.reader: RingReader | None = None
        self.sinks: dict[str, FormatSink] = {
            fmt: FormatSink(s, self.routing.writer_class(fmt), self.heartbeat)
            for fmt, s in settings.sinks.items()
        }
        self._streams: dict[int, _Stream] = {}  # by ring stream id
        self._last_seq: int | None = None
        self._last_ts = 0
        self._gaps: list[LossGap] = []
        # The records lost since the last one taken, a gap once a record is taken (or
        # at a flush, a publish, the end): (first seq, last seq, after_ns, before_ns).
        # A ring gap and the zero-copy frames overwritten before their copy next to it
        # are one run of lost sequence numbers: one gap.
        self._loss: tuple[int, int, int, int] | None = None
        self._views_out = False  # zero-copy records of the current read not used yet
        self._errors: list[str] = []
        self._error_count = 0
        self._flushes = 0
        self._unflushed_since: float | None = None
        self._published = 0.0
        # Records' mean size, as last seen; first guessed large (a read of 8 records), so
        # that the first read of big frames is not a quarter of batch_bytes at once.
        self._avg_record = max(1, settings.batch_bytes // 32)
        self.state = "starting"
        self.latest = RecorderStats(settings.ring, settings.consumer, os.getpid(),
                                    started_ns=settings.started_ns)  # fmt: skip

    # ------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Register the consumer on the ring and start the sinks (no file is created
        until a stream's first record arrives)."""
        s = self.settings
        with RingReader.open(s.ring) as peek:  # anonymous: registers nothing
            readers = peek.stats().readers
        holders = [r for r in readers if r.state == "active" and r.alive
                   and _same_file(r.name, s.consumer)]  # fmt: skip
        if holders:  # its stats file is this one's too: two would overwrite each other
            raise RingBusy(
                f"ring {s.ring}: consumer {holders[0].name!r} is already registered by a live "
                f"reader (pid {holders[0].pid}), and its stats file would be this Recorder's "
                f"({s.stats_path.name}); give consumer {s.consumer!r} another name"
            )
        self.reader = RingReader.open(s.ring, start=s.start, consumer=s.consumer)  # type: ignore[arg-type]
        first = self.reader.next_seq
        self._last_seq = None if first is None else first - 1
        for sink in self.sinks.values():
            sink.start()
        self.state = "running"
        self.publish()

    def heartbeat(self) -> None:
        """Keep the consumer's ring heartbeat fresh while waiting on a sink (called about
        every 100 ms then), and the stats too: a slow format shows as a growing lag."""
        if self.reader is not None and not self.reader.closed:
            if self._views_out:  # the cursor must stay behind the views not copied yet
                self.reader.keep_alive()
            else:
                self.reader.heartbeat()
            if time.monotonic() - self._published >= _PUBLISH_S:
                self.publish()

    def run(self, control: Control) -> RecorderStats:
        """Drain until a stop is asked, then finish (drain, flush, close); the final
        stats. A failure of the loop itself ends the run with state ``"failed"``."""
        reader = self.reader
        assert reader is not None
        s = self.settings
        final_state = "stopped"
        try:
            while not control.stopping:
                if s.parent_pid is not None and os.getppid() != s.parent_pid:
                    log.warning("the Recorder's parent process is gone: stopping")
                    break
                for durable, done in control.poll():
                    self._read_up_to_now(control)  # on demand: what the ring holds now too
                    done(self._flush_now(s.durable if durable is None else durable))
                wait = self._wait()
                records = self._read(wait)
                if records:
                    self._take(records)
                self._cadence()
                if time.monotonic() - self._published >= _PUBLISH_S:
                    self.publish()
            self.state = "stopping"
            self.publish()
            if control.signalled:
                self._last_writes(control)
            self._drain(control)
        except Exception as exc:
            final_state = "failed"
            self._error(f"the Recorder failed: {type(exc).__name__}: {exc}")
            log.exception("the Recorder failed")
        final = self._finish(final_state if not control.aborting else "killed")
        for _durable, done in control.poll():  # asked during the stop: the close covered it
            done(None)
        return final

    def _last_writes(self, control: Control) -> None:
        """After a signal, go on reading while the ring's writer is attached, for at most
        _SIGNAL_GRACE_S: Ctrl-C reaches the terminal's whole process group, and the
        instruments write their last records as they stop."""
        reader = self.reader
        assert reader is not None
        deadline = time.monotonic() + _SIGNAL_GRACE_S
        while reader.writer_alive and time.monotonic() < deadline and not control.aborting:
            records = self._read(_TURN_S)
            if records:
                self._take(records)

    def _drain(self, control: Control) -> None:
        self._read_up_to_now(control)

    def _read_up_to_now(self, control: Control) -> None:
        """Read what the ring holds now (not what arrives meanwhile)."""
        reader = self.reader
        assert reader is not None
        target = reader.stats().written
        while not control.aborting:
            seq = reader.next_seq
            if seq is not None and seq >= target:
                break
            records = self._read(0)
            if not records:
                break
            self._take(records)

    def _finish(self, state: str) -> RecorderStats:
        try:
            self._end_loss()
            self._submit_all()
        except Exception as exc:
            self._error(f"writing what was held back: {type(exc).__name__}: {exc}")
        replies = [sink.close() for sink in self.sinks.values()]
        for reply in replies:
            reply.wait(self.heartbeat)
        for sink in self.sinks.values():
            sink.join()
        self.state = state
        final = self.publish()
        if self.reader is not None:
            self.reader.close()
        return final

    # ------------------------------------------------------------ reading
    def _read(self, timeout: float) -> list[Record]:
        """The next records; frames of _VIEW_BYTES or more as zero-copy views, which
        :meth:`_take` copies into their group before anything else reads the ring."""
        assert self.reader is not None
        return self.reader.read_many_views(self._max_records(), timeout=timeout,
                                           min_view_bytes=_VIEW_BYTES)  # fmt: skip

    def frame_groups(self) -> dict[str, tuple[int, int]]:
        """Per frame stream: groups ``(allocated, reused)`` so far."""
        return {st.route.stream: (st.pool.allocated, st.pool.reused)
                for st in self._streams.values() if st.pool is not None}  # fmt: skip

    def _max_records(self) -> int:
        """Records per read: about a quarter of batch_bytes, so a read of large frames
        never holds more than that in memory."""
        return max(1, min(4096, (self.settings.batch_bytes // 4) // max(1, self._avg_record)))

    def _wait(self) -> float:
        wait = _TURN_S
        if self._unflushed_since is not None:
            due = self._unflushed_since + self.settings.flush_interval_s - time.monotonic()
            wait = min(wait, due)
        return max(0.0, wait)

    def _take(self, records: list[Record]) -> None:
        self._views_out = True
        try:
            self._take_records(records)
        finally:
            self._views_out = False

    def _take_records(self, records: list[Record]) -> None:
        stored = False
        size = 0
        reader = self.reader
        assert reader is not None
        for record in records:
            size += len(record.data)
            seq = record.seq
            if self._last_seq is not None and seq != self._last_seq + 1:
                self._lose(self._last_seq + 1, seq - 1, self._last_ts, record.timestamp_ns)
            previous_ts = self._last_ts
            self._last_seq, self._last_ts = seq, record.timestamp_ns
            if record.zero_copy and record.kind != "frame":
                # (a view only after a lap met mid-read): copied, then checked
                record.data, record.zero_copy = bytes(record.data), False
                if not reader.still_valid(record):
                    self._tear(record, previous_ts, None)
                    continue
            if self._loss is not None and not record.zero_copy:
                self._end_loss()  # (a view may be lost yet: see below)
            stream = self._streams.get(record.stream_id)
            if stream is None:
                stream = self._new_stream(record)
            stream.records += 1
            stream.last_ts = record.timestamp_ns
            route = stream.route
            if route.error:
                stream.unroutable += 1
            if not route.formats:
                continue
            kind = record.kind
            if route.kind == "frames" and kind == "frame":
                taken = self._take_frame(stream, record)
                if taken is None:
                    self._tear(record, previous_ts, stream)
                    continue
                stored |= taken
            elif route.kind == "table" and kind == "arrow":
                stored |= self._take_row_batch(stream, record)
            else:  # a stream that changed kind: its formats were chosen for the other
                stream.unroutable += 1
                self._error(f"stream {route.stream!r}: a {kind!r} record (seq {record.seq}) "
                            f"in a stream of {route.kind}: not recorded")  # fmt: skip
            if self._loss is not None:
                self._end_loss()
        self._avg_record = max(1, size // len(records))
        if stored and self._unflushed_since is None:
            self._unflushed_since = time.monotonic()

    def _new_stream(self, record: Record) -> _Stream:
        route = self.routing.route(record.stream, record.kind)
        if route.error:
            self._error(route.error)
        stream = self._streams[record.stream_id] = _Stream(route)
        return stream

    def _tear(self, record: Record, after_ns: int, stream: _Stream | None) -> None:
        """``record`` was overwritten while (or before) it was copied: not stored, and
        counted lost exactly as a ring gap (in the ring's count of this consumer too)."""
        assert self.reader is not None
        self.reader.discard(record)
        if stream is not None:
            stream.records -= 1
        self._lose(record.seq, record.seq, after_ns, record.timestamp_ns)

    def _lose(self, first: int, last: int, after_ns: int, before_ns: int) -> None:
        run = self._loss
        if run is not None and run[1] == first - 1:
            self._loss = (run[0], last, run[2], before_ns)
        else:
            self._end_loss()
            self._loss = (first, last, after_ns, before_ns)

    def _end_loss(self) -> None:
        run, self._loss = self._loss, None
        if run is not None:
            self._gap(*run)

    def _gap(self, first: int, last: int, after_ns: int, before_ns: int) -> None:
        gap = LossGap(first, last, last - first + 1, after_ns, before_ns, time.time_ns())
        log.warning("lost %d records (seq %d..%d): the ring overwrote them before they "
                    "were read", gap.count, first, last)  # fmt: skip
        self._gaps.append(gap)
        for sink in self.sinks.values():
            sink.gap(gap)

    # ------------------------------------------------------------ frames
    def _take_frame(self, stream: _Stream, record: Record) -> bool | None:
        """Copy the frame into its stream's group: True if taken, False if refused,
        None if it was overwritten in the ring before its copy was complete."""
        view = record.zero_copy
        try:
            frame = record.array()  # a view of the ring (zero-copy) or of the record's copy
            number = record.frame_number
        except RingCorrupt:
            if view and not self._valid(record):
                return None  # its header was overwritten under us
            raise
        spec = (frame.dtype, frame.shape)
        if stream.spec is None:
            stream.spec = spec
        elif spec != stream.spec:
            if view and not self._valid(record):
                return None
            stream.frames += 1
            stream.bytes_in += frame.nbytes
            stream.refused += 1
            self._error(f"stream {stream.route.stream!r}: a frame of dtype {frame.dtype} shape "
                        f"{frame.shape} (seq {record.seq}) differs from the stream's "
                        f"{stream.spec[0]} {stream.spec[1]}: not recorded")  # fmt: skip
            return False
        group = stream.group
        if group is None:
            group = stream.group = self._new_group(stream, frame)
        group.frames[stream.held] = frame
        if view and not self._valid(record):
            return None  # the copy may be torn: the slot is simply filled again
        stream.frames += 1
        stream.bytes_in += frame.nbytes
        stream.held += 1
        stream.stamps.append(record.timestamp_ns)
        stream.numbers.append(number)
        stream.frame_bytes += frame.nbytes
        if stream.held >= len(group.frames):
            self._submit_frames(stream)
        return True

    def _valid(self, record: Record) -> bool:
        assert self.reader is not None
        return self.reader.still_valid(record)

    def _new_group(self, stream: _Stream, frame: npt.NDArray[Any]) -> FrameGroup:
        """A free group of the stream's pool, whose capacity is the frames per write
        now (whole chunks: the chunk shape is known after a format's first write)."""
        capacity = max(1, min(self._frames_per_write(stream, frame.nbytes),
                              self.settings.batch_bytes // max(1, frame.nbytes)))  # fmt: skip
        pool = stream.pool
        if pool is None or pool.capacity != capacity:
            pool = stream.pool = GroupPool(frame.dtype, frame.shape, capacity)
        return pool.take()

    def _frames_per_write(self, stream: _Stream, frame_bytes: int) -> int:
        """Whole chunks: the largest frames-per-chunk of the stream's formats, at least
        16 frames, capped by batch_bytes (``frames_per_write`` when given)."""
        given = self.settings.frames_per_write
        if given is not None:
            return given
        chunks = [self.sinks[f].chunk_frames.get(stream.route.stream, 0)
                  for f in stream.route.formats]  # fmt: skip
        chunk = max([c for c in chunks if c > 0], default=1)
        count = chunk * math.ceil(_MIN_FRAMES_PER_WRITE / chunk)
        cap = max(1, self.settings.batch_bytes // max(1, frame_bytes))
        if count > cap:
            count = cap - cap % chunk if cap >= chunk else cap
        return count

    def _submit_frames(self, stream: _Stream) -> None:
        group, count = stream.group, stream.held
        if group is None or not count:
            return
        frames = group.frames[:count]
        stamps = np.array(stream.stamps, np.uint64)
        numbers = np.array(stream.numbers, np.uint64)
        nbytes = stream.frame_bytes
        stream.group, stream.held, stream.stamps, stream.numbers = None, 0, [], []
        stream.frame_bytes = 0
        sinks = [self.sinks[fmt] for fmt in stream.route.formats]
        group.hand_out(len(sinks))
        for sink in sinks:
            sink.write_frames(stream.route.stream, frames, stamps, numbers, nbytes,
                              release=group.release)  # fmt: skip

    # ------------------------------------------------------------ tables
    def _take_row_batch(self, stream: _Stream, record: Record) -> bool:
        batch = record.batch()
        stream.rows += batch.num_rows
        stream.bytes_in += batch.nbytes
        held = stream.batches
        s = self.settings
        if held and (
            not batch.schema.equals(held[0].schema, check_metadata=True)
            or stream.batch_rows + batch.num_rows > s.batch_rows
            or stream.batch_bytes + batch.nbytes > s.batch_bytes
        ):  # a new schema (or metadata), or a batch that would grow past the limits
            self._submit_table(stream)
        stream.batches.append(batch)
        stream.batch_records += 1
        stream.batch_rows += batch.num_rows
        stream.batch_bytes += batch.nbytes
        if stream.batch_rows >= s.batch_rows or stream.batch_bytes >= s.batch_bytes:
            self._submit_table(stream)
        return True

    def _submit_table(self, stream: _Stream) -> None:
        batches, records = stream.batches, stream.batch_records
        if not batches:
            return
        stream.batches, stream.batch_records = [], 0
        stream.batch_rows = stream.batch_bytes = 0
        joined = batches[0] if len(batches) == 1 else pa.concat_batches(batches)
        name = stream.route.stream
        if stream.accepted_schema is None or not joined.schema.equals(stream.accepted_schema):
            live = [self.sinks[f] for f in stream.route.formats if not self.sinks[f].failed]
            replies: list[Reply] = [sink.check(name, joined) for sink in live]
            for reply in replies:
                reply.wait(self.heartbeat)
            refusals = [r.error for r in replies if r.error]
            if refusals:
                stream.refused += records
                self._error(f"stream {name!r}: {joined.num_rows} rows ({records} records) "
                            f"refused, stored in no format: {'; '.join(refusals)}")  # fmt: skip
                return
            stream.accepted_schema = joined.schema
        for fmt in stream.route.formats:
            self.sinks[fmt].write_batch(name, joined, records)

    # ------------------------------------------------------------ flushing
    def _submit_all(self) -> None:
        for stream in self._streams.values():
            self._submit_frames(stream)
            self._submit_table(stream)

    def _cadence(self) -> None:
        since = self._unflushed_since
        if since is not None and time.monotonic() - since >= self.settings.flush_interval_s:
            self._flush_now(self.settings.durable)

    def _flush_now(self, durable: bool) -> str | None:
        """Write what is held back and flush every format; returns when they are done."""
        self._end_loss()
        self._submit_all()
        replies = [sink.flush(durable) for sink in self.sinks.values() if not sink.closed]
        for reply in replies:
            reply.wait(self.heartbeat)
        self._flushes += 1
        self._unflushed_since = None
        self.publish()
        return None

    # ------------------------------------------------------------ stats
    def _error(self, text: str) -> None:
        self._error_count += 1
        if len(self._errors) < _MAX_ERRORS:
            self._errors.append(text)
        elif self._error_count > _MAX_ERRORS:
            self._errors[-1] = f"... and {self._error_count - _MAX_ERRORS + 1} more errors"

    def snapshot(self) -> RecorderStats:
        s = self.settings
        reader = self.reader
        now_ns = time.time_ns()
        written = dropped = 0
        lag = 0
        evicted = False
        if reader is not None and not reader.closed:
            ring = reader.stats()
            written, dropped = ring.written, ring.dropped
            following = reader.next_seq
            lag = max(0, written - (following if following is not None else written))
            evicted = reader.evicted
        elif self.latest is not None:
            dropped, evicted = self.latest.dropped, self.latest.evicted
        streams = {st.route.stream: st.stats() for st in self._streams.values()}
        formats = {fmt: sink.snapshot() for fmt, sink in self.sinks.items()}
        files = tuple(f for fs in formats.values() for f in fs.files)
        errors = list(self._errors)
        errors += [f"format {f.format} failed: {f.error}" for f in formats.values() if f.error]
        return RecorderStats(
            ring=s.ring, consumer=s.consumer, pid=os.getpid(), state=self.state,
            started_ns=s.started_ns, updated_ns=now_ns,
            records=sum(x.records for x in streams.values()),
            frames=sum(x.frames for x in streams.values()),
            rows=sum(x.rows for x in streams.values()),
            bytes_in=sum(x.bytes_in for x in streams.values()),
            bytes_on_disk=sum(f.bytes_on_disk for f in formats.values()),
            files=files, lag_records=lag,
            lag_seconds=max(0.0, (now_ns - self._last_ts) / 1e9) if lag and self._last_ts else 0.0,
            lost=sum(g.count for g in self._gaps), gaps=tuple(self._gaps), dropped=dropped,
            evicted=evicted, flushes=self._flushes, errors=tuple(errors),
            streams=streams, formats=formats,
        )  # fmt: skip

    def publish(self) -> RecorderStats:
        """Take a snapshot and replace the stats file with it."""
        self._end_loss()
        stats = self.latest = self.snapshot()
        self._published = time.monotonic()
        try:
            write_stats(self.settings.stats_path, stats)
        except OSError as exc:  # stats are a view: recording goes on without them
            log.warning("cannot write the Recorder stats %s: %s", self.settings.stats_path, exc)
        return stats


def _same_file(name: str, consumer: str) -> bool:
    """Whether a consumer named ``name`` publishes its stats where ``consumer`` would."""
    if name == consumer:
        return True
    try:
        return sanitize_name(name, what="consumer name") == sanitize_name(consumer)
    except InvalidName:
        return False


def with_state(stats: RecorderStats, state: str, error: str | None = None) -> RecorderStats:
    """``stats`` as the Recorder ended (``killed``, ``failed``), with ``error`` added."""
    errors = stats.errors + ((error,) if error else ())
    return replace(stats, state=state, errors=errors, updated_ns=time.time_ns())
