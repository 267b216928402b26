"""One format's sink: its writer, touched only by the sink's own thread.

A writer is a single-thread object (a second thread gets ``WriterBusy``), so everything
a writer does -- the up-front check of a batch, writes, flushes, metadata, rotation,
close -- happens in its sink's thread, in the order the drain loop queued it. The
queue is bounded in bytes: the loop waits (keeping its ring heartbeat fresh) while a
sink is behind, so memory stays bounded and, in ``discard_oldest`` mode, the ring laps
the Recorder instead (the loss then shows in the ledger).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import InvalidName, SchemaMismatch, StorageIOError, UnsupportedData
from daq_storage.location import S3Location
from daq_storage.naming import claim_path, next_path
from daq_storage.recorder._claims import free_s3_names
from daq_storage.recorder._stats import FormatStats, LossGap
from daq_storage.writers import Writer

__all__ = ["FormatSink", "Reply", "SinkSettings"]

log = logging.getLogger("daq_storage.recorder")

_WAIT_SLICE_S = 0.1  # how often a waiting loop refreshes its ring heartbeat
_SIZE_CHECK_S = 0.25  # at most this often, the size on disk is asked of the writer
#: A ledger of up to this many gaps is written at every flush after a new gap; a longer
#: one at most every _LEDGER_INTERVAL_S (and always at close).
_LEDGER_EVERY_FLUSH = 64
_LEDGER_INTERVAL_S = 10.0
_NAME_ATTEMPTS = 100
#: The sinks of a process pick their outputs' names one at a time (formats whose outputs
#: share a name pattern would otherwise see the same free name).
_CLAIMS = threading.Lock()


class Reply:
    """The answer to a request queued to a sink: ``None`` (done) or a refusal's text."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.error: str | None = None

    def set(self, error: str | None = None) -> None:
        self.error = error
        self._event.set()

    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, heartbeat: Callable[[], None], deadline: float | None = None) -> bool:
        """Wait for the answer, calling ``heartbeat`` every 100 ms; False on timeout."""
        while not self._event.wait(_WAIT_SLICE_S):
            heartbeat()
            if deadline is not None and time.monotonic() >= deadline:
                return self._event.is_set()
        return True


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """What a sink needs besides its writer class (picklable: built in the parent)."""

    fmt: str
    options: Mapping[str, Any]
    output_dir: Path | S3Location  # a directory, or an s3:// prefix
    experiment: str
    when: datetime  # the Recorder's start: every file of the run is named after it
    metadata: Mapping[str, Any]  # file-level metadata set in every file that holds data
    rotate_bytes: int | None
    rotate_seconds: float | None
    queue_bytes: int


# Queue items: (tag, payload..., nbytes, records)
_Item = tuple[Any, ...]


class FormatSink:
    """A writer of one format in its own thread, fed through a bounded queue."""

    def __init__(
        self, settings: SinkSettings, writer_class: type[Writer], heartbeat: Callable[[], None]
    ) -> None:
        self.settings = settings
        self.fmt = settings.fmt
        self._cls = writer_class
        self._heartbeat = heartbeat
        self._queue: deque[_Item] = deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name=f"daq-recorder-{self.fmt}", daemon=True
        )
        # Written by the sink thread only; read (as whole values) by the loop's thread.
        self.failed = False
        self.closed = False
        self._state = "idle"
        self._error = ""
        self._writer: Writer | None = None
        self._path: Path | S3Location | None = None  # the current output, as claimed
        self._opened_at = 0.0
        self._stored = False  # the current writer stored something
        self._files: tuple[str, ...] = ()
        self._closed_files: tuple[str, ...] = ()
        self._closed_bytes = 0
        self._current_bytes = 0
        self._size_checked = 0.0
        self._rotations = 0
        self._rotate_next = False  # the current file was closed by a rotation rule
        self._payload_mark = 0  # payload bytes of the current writer at its last flush
        self._flushes = 0
        self._durable_flushes = 0
        self._frames = self._rows = 0
        self._visible_frames = self._visible_rows = 0
        self._lost_after_failure = 0
        self._ledger: list[LossGap] = []  # gaps that fell while the current file was current
        self._ledger_written: list[LossGap] | None = None
        self._ledger_at = 0.0  # monotonic time the ledger was last written
        #: Frames per chunk of each frame stream, from the writer's description.
        self.chunk_frames: dict[str, int] = {}

    # ------------------------------------------------------------ loop side
    def start(self) -> None:
        self._thread.start()

    def _put(self, item: _Item, nbytes: int) -> None:
        with self._cond:
            limit = self.settings.queue_bytes
            while self._queued_bytes and self._queued_bytes + nbytes > limit:
                if not self._cond.wait(_WAIT_SLICE_S):
                    self._heartbeat()  # a live but slow Recorder is not evicted
            self._queue.append(item)
            self._queued_bytes += nbytes
            self._cond.notify_all()

    def write_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any] | Sequence[npt.NDArray[Any]],
        timestamps_ns: npt.NDArray[np.uint64],
        frame_numbers: npt.NDArray[np.uint64],
        nbytes: int,
        *,
        release: Callable[[], None] | None = None,
    ) -> None:
        """Queue ``frames`` (a ``(n, *shape)`` group, or a sequence of frames);
        ``release`` is called once this sink is done with them (written, or not: a
        failed format), after it dropped every reference it held to them."""
        if self.failed:
            self._lost_after_failure += len(frames)
            if release is not None:
                release()
            return
        item = ("frames", stream, frames, timestamps_ns, frame_numbers, release, nbytes,
                len(frames))  # fmt: skip
        self._put(item, nbytes)

    def write_batch(self, stream: str, batch: pa.RecordBatch, records: int) -> None:
        if self.failed:
            self._lost_after_failure += records
            return
        nbytes = batch.nbytes
        self._put(("batch", stream, batch, nbytes, records), nbytes)

    def check(self, stream: str, batch: pa.RecordBatch) -> Reply:
        reply = Reply()
        if self.failed:
            reply.set()
        else:
            self._put(("check", stream, batch, reply), 0)
        return reply

    def gap(self, gap: LossGap) -> None:
        self._put(("gap", gap), 0)

    def flush(self, durable: bool) -> Reply:
        reply = Reply()
        self._put(("flush", durable, reply), 0)
        return reply

    def close(self) -> Reply:
        reply = Reply()
        self._put(("close", reply), 0)
        return reply

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def snapshot(self) -> FormatStats:
        return FormatStats(
            format=self.fmt,
            state=self._state,
            error=self._error,
            files=self._files,
            current=str(self._path) if self._writer is not None and self._path else "",
            rotations=self._rotations,
            flushes=self._flushes,
            frames=self._frames,
            rows=self._rows,
            visible_frames=self._visible_frames,
            visible_rows=self._visible_rows,
            bytes_on_disk=self._closed_bytes + self._current_bytes,
            pending=len(self._queue),
            lost_after_failure=self._lost_after_failure,
            durable_flushes=self._durable_flushes,
        )

    # ------------------------------------------------------------ sink thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                item = self._queue[0]
            try:
                done = self._handle(item)
            except BaseException as exc:  # never leave the loop waiting on a dead thread
                self._fail(exc)
                done = item[0] == "close"
                for reply in item:
                    if isinstance(reply, Reply) and not reply.done():
                        reply.set()
            with self._cond:
                self._queue.popleft()
                self._queued_bytes -= item[-2] if item[0] in ("frames", "batch") else 0
                self._cond.notify_all()
            release = item[5] if item[0] == "frames" else None
            del item  # (the frames' last reference here: see write_frames' release)
            if release is not None:
                release()
            if done:
                return

    def _handle(self, item: _Item) -> bool:
        tag = item[0]
        if tag == "frames":
            _, stream, frames, stamps, numbers, _release, _nbytes, records = item
            self._write(records, lambda w: self._store_frames(w, stream, frames, stamps, numbers))
        elif tag == "batch":
            _, stream, batch, _nbytes, records = item
            self._write(records, lambda w: self._store_batch(w, stream, batch))
        elif tag == "check":
            _, stream, batch, reply = item
            reply.set(self._check(stream, batch))
        elif tag == "gap":
            self._ledger.append(item[1])
        elif tag == "flush":
            _, durable, reply = item
            self._flush(durable)
            reply.set()
        elif tag == "close":
            self._close()
            item[1].set()
            return True
        return False

    def _store_frames(
        self,
        writer: Writer,
        stream: str,
        frames: npt.NDArray[Any] | Sequence[npt.NDArray[Any]],
        stamps: npt.NDArray[np.uint64],
        numbers: npt.NDArray[np.uint64],
    ) -> None:
        writer.write_frames(stream, frames, timestamps_ns=stamps, frame_numbers=numbers)
        self._frames += len(frames)
        if stream not in self.chunk_frames:
            shape = writer.describe(stream).chunk_shape
            self.chunk_frames[stream] = int(shape[0]) if shape else 1

    def _store_batch(self, writer: Writer, stream: str, batch: pa.RecordBatch) -> None:
        writer.write_batch(stream, batch)
        self._rows += batch.num_rows

    def _write(self, records: int, store: Callable[[Writer], None]) -> None:
        if self.failed:
            self._lost_after_failure += records
            return
        try:
            writer = self._writer or self._open()
            if not self._stored:
                # Before the first write: formats that put metadata in a header (Arrow's
                # schema, TIFF's first page) hold it where readers look first.
                for key, value in self.settings.metadata.items():
                    writer.set_metadata(key, value)
                self._stored = True
            store(writer)
            self._state = "recording"
            self._after_write()
        except Exception as exc:  # a format's failure stays its own: the others go on
            self._fail(exc)
            self._lost_after_failure += records

    def _check(self, stream: str, batch: pa.RecordBatch) -> str | None:
        if self.failed:
            return None
        try:
            (self._writer or self._open()).check_batch(stream, batch)
        except (SchemaMismatch, UnsupportedData, InvalidName) as exc:
            notes = "; ".join(getattr(exc, "__notes__", ()))
            return f"{self.fmt}: {type(exc).__name__}: {exc}" + (f" ({notes})" if notes else "")
        except Exception as exc:
            self._fail(exc)
        return None

    def _open(self) -> Writer:
        s = self.settings
        cls = self._cls
        path: Path | S3Location
        with _CLAIMS:
            if cls.path_suffix or isinstance(s.output_dir, S3Location):
                writer, path = self._create_named(cls)
            else:  # a directory of per-stream files: claimed (mkdir), filled by the writer
                path = claim_path(s.output_dir, s.experiment, "", when=s.when, directory=True)
                try:
                    writer = cls(path, **s.options)
                except BaseException:
                    _remove_if_empty(path)
                    raise
        self._writer, self._path, self._stored = writer, path, False
        if self._rotate_next:
            self._rotations += 1
            self._rotate_next = False
        self._opened_at = time.monotonic()
        self._files = (*self._closed_files, str(path))
        return writer

    def _create_named(self, cls: type[Writer]) -> tuple[Writer, Path | S3Location]:
        """A file (``.h5``), store (``.zarr``) or object prefix under the next free
        ``_v{N}`` name, made by its writer, which creates it exclusively and initialises
        it at once: no empty claimed name is left for a kill to find between the claim and
        the writer's first bytes. A name another process takes meanwhile: the next one."""
        s = self.settings
        where = s.output_dir
        # In a bucket, every writer claims its prefix itself (a conditional create).
        free = (
            free_s3_names(where, s.experiment, cls.path_suffix, when=s.when)
            if isinstance(where, S3Location)
            else None
        )
        path: Path | S3Location
        for _ in range(_NAME_ATTEMPTS):
            if free is None:
                assert isinstance(where, Path)
                path = next_path(where, s.experiment, cls.path_suffix, when=s.when)
            else:
                path = next(free)
            try:
                return cls(path, **s.options), path
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
        raise StorageIOError(errno.EEXIST, f"no free name for a new {self.fmt} output after "
                             f"{_NAME_ATTEMPTS} attempts", str(s.output_dir))  # fmt: skip

    def _after_write(self) -> None:
        writer = self._writer
        assert writer is not None
        s = self.settings
        now = time.monotonic()
        if s.rotate_bytes is not None or now - self._size_checked >= _SIZE_CHECK_S:
            payload = self._refresh_size(writer)
            self._size_checked = now
            if (
                s.rotate_bytes is not None
                and self._current_bytes < s.rotate_bytes
                and payload - self._payload_mark >= s.rotate_bytes
            ):
                # A format that buffers (Parquet's row groups, a compressor's block)
                # grows on disk only at a flush: flush once per rotate_bytes of payload,
                # so that the size it reaches is seen.
                self._payload_mark = payload
                self._flush_writer(writer, durable=False)
        if self._rotation_due():
            self._rotate()

    def _rotation_due(self) -> bool:
        s = self.settings
        return (s.rotate_bytes is not None and self._current_bytes >= s.rotate_bytes) or (
            s.rotate_seconds is not None and time.monotonic() - self._opened_at >= s.rotate_seconds
        )

    def _refresh_size(self, writer: Writer) -> int:
        """Update the size on disk and the files; returns the payload bytes written."""
        stats = writer.stats
        self._current_bytes = stats.file_size
        files = [str(p) for p in stats.files] or ([str(self._path)] if self._path else [])
        self._files = tuple(dict.fromkeys([*self._closed_files, *files]))
        return stats.bytes_written

    def _write_ledger(self, writer: Writer, final: bool) -> None:
        """``loss_ledger`` / ``lost_records`` of the current file: at a flush when it
        changed, and at close always (an empty list: nothing was lost meanwhile)."""
        if not self._stored or self._ledger == self._ledger_written:
            return
        if self._ledger_written is None and not self._ledger and not final:
            return  # an empty ledger waits for the close (one metadata write per file)
        now = time.monotonic()
        if (
            not final
            and len(self._ledger) > _LEDGER_EVERY_FLUSH
            and now - self._ledger_at < _LEDGER_INTERVAL_S
        ):
            # Some formats append metadata (an Arrow stream's batch metadata, a TIFF
            # page): a long ledger rewritten at every flush would grow the file
            # quadratically. It is complete at close either way.
            return
        writer.set_metadata("loss_ledger", [g.to_dict() for g in self._ledger])
        writer.set_metadata("lost_records", sum(g.count for g in self._ledger))
        self._ledger_written = list(self._ledger)
        self._ledger_at = now

    def _flush(self, durable: bool) -> None:
        writer = self._writer
        if writer is None or self.failed:
            return
        try:
            self._flush_writer(writer, durable)
            if self._rotation_due():
                self._rotate()
        except Exception as exc:
            self._fail(exc)

    def _flush_writer(self, writer: Writer, durable: bool) -> None:
        self._write_ledger(writer, final=False)
        writer.flush(durable=durable)
        self._visible_frames, self._visible_rows = self._frames, self._rows
        self._flushes += 1
        self._durable_flushes += durable
        self._payload_mark = self._refresh_size(writer)  # (buffers reach the disk here)

    def _close_writer(self) -> None:
        """Close the current writer complete (ledger written), or drop an unused one."""
        writer, path = self._writer, self._path
        if writer is None:
            return
        self._write_ledger(writer, final=True)
        writer.close()
        self._writer = None
        if self._stored:
            self._refresh_size(writer)
            self._closed_files = self._files
            self._closed_bytes += self._current_bytes
        else:
            if path is not None:
                _remove_if_empty(path)
            self._files = self._closed_files
        self._current_bytes = 0
        self._visible_frames, self._visible_rows = self._frames, self._rows
        self._ledger, self._ledger_written, self._stored = [], None, False
        self._payload_mark = 0

    def _rotate(self) -> None:
        """Close the current file complete; the next write starts ``_v{N+1}`` (counted
        then: ``rotations`` is the number of next files started)."""
        self._close_writer()
        self._rotate_next = True
        log.info("%s: closed %s (rotation)", self.fmt, self._closed_files[-1:])

    def _close(self) -> None:
        if not self.failed:
            try:
                self._close_writer()
                self._state = "closed"
            except Exception as exc:
                self._fail(exc)
        self.closed = True

    def _fail(self, exc: BaseException) -> None:
        """Mark this format failed, close its writer best-effort; the others go on."""
        if self.failed:
            return
        self.failed = True
        self._state = "failed"
        self._error = f"{type(exc).__name__}: {exc}"
        log.error("format %s failed: %s", self.fmt, self._error)
        writer = self._writer
        self._writer = None
        if writer is not None:
            try:
                writer.close()
            except Exception as close_exc:  # best effort: it failed already
                log.warning("format %s: closing after the failure: %s", self.fmt, close_exc)
            if not self._stored and self._path is not None:
                _remove_if_empty(self._path)


def _remove_if_empty(path: Path | S3Location) -> None:
    """Remove a claimed output that holds nothing (an empty file or directory; a writer
    in a bucket releases its own claim)."""
    if isinstance(path, S3Location):
        return
    try:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        elif path.stat().st_size == 0:
            path.unlink()
    except OSError:
        pass  # holds something after all, or gone: leave it
