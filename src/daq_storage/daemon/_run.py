"""The daemon's run: its lock, its ring and the loop around the Recorder (see the
package's notes)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

from daq_storage.config import Overflow, StorageConfig, daemon_ring_path
from daq_storage.daemon._logging import log_event as _log
from daq_storage.errors import DaqStorageError, RingBusy, StorageIOError
from daq_storage.recorder import Recorder, RecorderStats, read_stats
from daq_storage.ring import RingBuffer, RingReader, max_ring_bytes

__all__ = [
    "DEFAULT_RECORD_BYTES",
    "DaemonInfo",
    "DaemonLock",
    "RingPlan",
    "lock_path",
    "plan_ring",
    "run_daemon",
]


#: The record ``[ring_buffer] frames`` counts when no ``record_bytes`` is given: one
#: frame of the simulated camera (640x480 uint16) with its 32-byte record header and
#: 88-byte frame header (docs/ring-format.md).
DEFAULT_RECORD_BYTES = 32 + 88 + 480 * 640 * 2
#: Seconds between two progress lines.
PROGRESS_INTERVAL_S = 5.0
_DEFAULT_RING_BYTES = 256 << 20
_MIN_RING_BYTES = 8 << 20
_POLL_S = 0.25  # how often the loop looks at the stop event and the Recorder's health


# --------------------------------------------------------------------- the ring
def lock_path(ring: str | os.PathLike[str]) -> Path:
    """The single-instance lock of the daemon of ``ring``: ``<ring>.daemon.lock``."""
    path = Path(ring)
    return path.with_name(f"{path.name}.daemon.lock")


@dataclasses.dataclass(frozen=True, slots=True)
class RingPlan:
    """The ring a daemon creates."""

    path: Path
    capacity: int
    overflow: Overflow
    block_timeout: float
    max_readers: int


def _configured(config: StorageConfig, key: str) -> bool:
    return any(v.key == key and v.source != "default" for v in config.sources())


def plan_ring(config: StorageConfig, *, record_bytes: int | None = None) -> RingPlan:
    """The ring :func:`run_daemon` creates for ``config`` (see the module docstring).

    Raises:
        ConfigError: ``record_bytes`` is not a positive integer.
        StorageIOError: the default-sized ring would get less than 8 MiB of room.
    """
    ring = config.ring_buffer
    path = daemon_ring_path(config)
    if ring.frames is not None:
        capacity = ring.capacity_for(DEFAULT_RECORD_BYTES if record_bytes is None else record_bytes)
    elif _configured(config, "ring_buffer.size_mb"):
        capacity = ring.capacity_bytes  # a configured size is used as given, or refused
    else:
        # A container's /dev/shm is often 64 MiB: the default shrinks to fit.
        room = max_ring_bytes(path, max_readers=ring.max_readers) >> 20 << 20
        if room < _MIN_RING_BYTES:
            raise StorageIOError(
                errno.ENOSPC,
                f"no room for the daemon's ring: {room >> 20} MiB free for it in "
                f"{path.parent}, at least {_MIN_RING_BYTES >> 20} MiB needed",
                str(path.parent),
            )
        capacity = min(_DEFAULT_RING_BYTES, ring.capacity_bytes, room)
    return RingPlan(path, capacity, ring.overflow, ring.block_timeout_secs, ring.max_readers)


# --------------------------------------------------------------------- the lock
class DaemonLock:
    """The single-instance lock of the daemon of a ring (``flock`` on
    :func:`lock_path`, which holds the holder's pid)."""

    def __init__(self, ring: str | os.PathLike[str]) -> None:
        self.path = lock_path(ring)
        self._fd: int | None = None

    @staticmethod
    def holder(ring: str | os.PathLike[str]) -> int | None:
        """The pid of the live daemon holding ``ring``'s lock, ``-1`` when it has not
        written its pid yet (it is starting), ``None`` when no daemon holds it."""
        path = lock_path(ring)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _pid_in(fd) or -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def acquire(self) -> None:
        """Take the lock and write this process's pid into it.

        Raises:
            RingBusy: another live daemon holds it (the message names its pid).
            StorageIOError: the lock file cannot be created.
        """
        while self._fd is None:
            try:
                fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
                )
            except OSError as exc:
                raise StorageIOError(
                    exc.errno or errno.EIO,
                    f"cannot create the daemon lock {self.path}: {exc.strerror}",
                    str(self.path),
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _pid_in(fd)
                os.close(fd)
                ring = self.path.with_name(self.path.name.removesuffix(".daemon.lock"))
                who = f"pid {pid}" if pid else "starting, its pid not written yet"
                raise RingBusy(
                    f"a daemon ({who}) is already running on ring {ring}; stop it first"
                    + (f" (kill -TERM {pid})" if pid else "")
                    + " or give this one another [ring_buffer] path"
                ) from None
            # The holder we waited for may have removed the file before we locked it:
            # a lock on a removed file excludes nobody, so take the one at the path.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order: see ``acquire``)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> DaemonLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _pid_in(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


# --------------------------------------------------------------------- the run
@dataclasses.dataclass(frozen=True, slots=True)
class DaemonInfo:
    """What a started daemon runs, given to ``ready``."""

    ring: Path
    capacity: int
    overflow: str
    formats: tuple[str, ...]
    output_dir: Path | str  # a local directory, or an s3:// URL
    consumer: str
    pid: int  # the daemon's
    recorder_pid: int | None
    stats_path: Path


def _describe_stale(path: Path, consumer: str) -> None:
    """Log what a killed daemon left at ``path``: the ring's counters and its Recorder's
    last stats (the ring is then replaced by ``RingBuffer.create(exist_ok=True)``, which
    refuses while anyone is still attached, and only then the stats file removed)."""
    fields: dict[str, Any] = {"ring": str(path)}
    try:
        with RingReader.open(path) as reader:
            stats = reader.stats()
            fields |= {"written": stats.written, "writer_alive": reader.writer_alive}
        for slot in stats.readers:
            if slot.name == consumer:
                fields |= {"recorder_read": slot.delivered, "recorder_lost": slot.lost}
    except DaqStorageError as exc:
        fields["unreadable"] = f"{type(exc).__name__}: {exc}"
    try:
        last = read_stats(path, consumer)
    except DaqStorageError:
        last = None
    if last is not None:
        fields |= {"last_state": last.state, "last_files": list(last.files)}
    _log(
        logging.WARNING,
        "stale ring: a daemon stopped without cleaning up; replacing its ring (its files "
        "stay readable up to their last flush)",
        **fields,
    )


def _progress_fields(stats: RecorderStats, mb_per_s: float, ring: RingReader) -> dict[str, Any]:
    ring_stats = ring.stats()
    return {
        "records": stats.records,
        "frames": stats.frames,
        "rows": stats.rows,
        "mb": round(stats.bytes_in / 1e6, 1),
        "mb_per_s": round(mb_per_s, 1),
        "fill": round(ring_stats.used_bytes / ring_stats.capacity, 3),
        "lag_records": stats.lag_records,
        "lag_s": round(stats.lag_seconds, 3),
        "lost": stats.lost,
        "dropped": stats.dropped,
        "errors": len(stats.errors),
        "files": len(stats.files),
        "producer": ring.writer_alive,
        # A Recorder busy waiting for a slow format publishes less often: how old
        # these figures are.
        "stats_age_s": round(max(time.time_ns() - stats.updated_ns, 0) / 1e9, 1),
    }


class _Watch:
    """What the loop has already reported, so each loss, error and failure is logged once."""

    def __init__(self) -> None:
        self.gaps = 0
        self.errors = 0
        self.failed: set[str] = set()
        self.evicted = False
        self.bytes_in = 0
        self.at = time.monotonic()

    def report(self, stats: RecorderStats) -> None:
        for gap in stats.gaps[self.gaps :]:
            _log(logging.WARNING, "lost", first_seq=gap.first_seq, last_seq=gap.last_seq,
                 count=gap.count, total_lost=stats.lost)  # fmt: skip
        self.gaps = max(self.gaps, len(stats.gaps))
        for error in stats.errors[self.errors :]:
            _log(logging.ERROR, "recorder error", error=error)
        self.errors = max(self.errors, len(stats.errors))
        for name, fmt in stats.formats.items():
            if fmt.state == "failed" and name not in self.failed:
                self.failed.add(name)
                _log(logging.ERROR, "format failed", format=name, error=fmt.error,
                     lost_after_failure=fmt.lost_after_failure)  # fmt: skip
        if stats.evicted and not self.evicted:
            self.evicted = True
            _log(logging.ERROR, "the ring evicted the recorder (block mode): it stopped reading")

    def rate(self, stats: RecorderStats) -> float:
        now = time.monotonic()
        mb_per_s = (stats.bytes_in - self.bytes_in) / 1e6 / max(now - self.at, 1e-9)
        self.bytes_in, self.at = stats.bytes_in, now
        return mb_per_s


def _summary_fields(stats: RecorderStats) -> dict[str, Any]:
    return {
        "state": stats.state,
        "complete": stats.complete,
        "records": stats.records,
        "frames": stats.frames,
        "rows": stats.rows,
        "mb": round(stats.bytes_in / 1e6, 1),
        "mb_on_disk": round(stats.bytes_on_disk / 1e6, 1),
        "lost": stats.lost,
        "dropped": stats.dropped,
        "errors": len(stats.errors),
        "files": list(stats.files),
    }


def run_daemon(
    config: StorageConfig,
    *,
    record_bytes: int | None = None,
    ready: Callable[[DaemonInfo], None] | None = None,
    stop: threading.Event | None = None,
    progress_interval: float = PROGRESS_INTERVAL_S,
) -> RecorderStats:
    """Run the daemon (module docstring) until ``stop`` is set or the Recorder ends;
    returns the Recorder's final stats (``complete`` says whether anything was lost).

    Args:
        config: ``[ring_buffer]``, ``[storage]`` and ``[recorder]``.
        record_bytes: the record ``[ring_buffer] frames`` counts
            (:data:`DEFAULT_RECORD_BYTES` when ``None``).
        ready: called once the Recorder is registered and producers may attach.
        stop: set it to stop (the CLI sets it on SIGINT / SIGTERM); ``None``: run until
            the Recorder ends.
        progress_interval: seconds between two progress lines.

    While the Recorder process starts, this process's stderr (file descriptor 2) is a
    pipe to the log (see the ``daq_storage.recorder`` log lines it makes): run the
    daemon as a program, not inside one whose stderr other threads write meanwhile.
    Records the ring holds at the end that the Recorder neither stored nor counted
    lost are an error in the returned stats (they go with the ring).

    Raises:
        RingBusy: another daemon runs on the ring (its pid named), or a live process is
            attached to a ring left at the path.
        DaqStorageError: the ring or the Recorder could not be created or started.
    """
    stop = stop if stop is not None else threading.Event()
    plan = plan_ring(config, record_bytes=record_bytes)
    recorder = Recorder.from_config(config, ring=plan.path)  # validates; opens nothing
    consumer = config.recorder.consumer
    with DaemonLock(plan.path):
        stale = plan.path.exists()
        if stale:
            _describe_stale(plan.path, consumer)
        ring = RingBuffer.create(
            plan.path, capacity_bytes=plan.capacity, overflow=plan.overflow,
            block_timeout=plan.block_timeout, max_readers=plan.max_readers, exist_ok=True,
        )  # fmt: skip
        if stale:  # nobody was attached: its Recorder is gone too
            with contextlib.suppress(FileNotFoundError):
                recorder.stats_path.unlink()
        try:
            return _run(config, plan, ring, recorder, ready, stop, progress_interval)
        finally:
            ring.close()
            _remove(plan.path, recorder.stats_path)


def _run(
    config: StorageConfig,
    plan: RingPlan,
    ring: RingBuffer,
    recorder: Recorder,
    ready: Callable[[DaemonInfo], None] | None,
    stop: threading.Event,
    progress_interval: float,
) -> RecorderStats:
    watch = _Watch()
    relay = _StderrRelay()
    try:
        with relay.capture():
            recorder.start()
    except BaseException:
        relay.join()  # what the failed process said is logged before the error
        raise
    watcher: RingReader | None = None
    try:
        # The Recorder is registered: a producer attaching from now on loses nothing.
        ring.close()
        watcher = RingReader.open(plan.path)  # anonymous: never slows the producer
        info = DaemonInfo(
            plan.path, ring.capacity, plan.overflow, config.storage.recorded_formats,
            config.storage.output_dir, config.recorder.consumer, os.getpid(), recorder.pid,
            recorder.stats_path,
        )  # fmt: skip
        _log(logging.INFO, "ready", ring=str(plan.path), capacity_mib=ring.capacity >> 20,
             overflow=plan.overflow, formats=list(info.formats), output_dir=str(info.output_dir),
             consumer=info.consumer, pid=info.pid, recorder_pid=info.recorder_pid)  # fmt: skip
        if ready is not None:
            ready(info)
        _loop(recorder, watcher, watch, stop, progress_interval)
        if watcher.writer_alive:
            _log(logging.WARNING, "a producer is still attached to the ring: what it "
                 "writes from now on is recorded by nobody", ring=str(plan.path))  # fmt: skip
    finally:
        final = recorder.stop()
        relay.join()
        if watcher is not None:
            final = _unrecorded(final, watcher)
            watcher.close()
    watch.report(final)  # what happened since the last look
    level = logging.INFO if final.complete else logging.ERROR
    _log(level, "stopped", **_summary_fields(final))
    return final


def _unrecorded(final: RecorderStats, watcher: RingReader) -> RecorderStats:
    """``final`` with an error when the ring, about to be removed, holds records the
    Recorder neither read nor counted lost (a drain cut short, a producer that went on
    writing after it): they would otherwise vanish with the ring unreported. The
    Recorder registered before any producer could write, so every record written to
    the ring is one it read, or lost, or this."""
    written = watcher.stats().written
    unread = written - final.records - final.lost
    if unread <= 0:
        return final
    error = (
        f"{unread:,} of the {written:,} records written to the ring were neither stored "
        "nor counted lost by the Recorder when it stopped: they are not recorded"
    )
    return dataclasses.replace(final, errors=(*final.errors, error))


class _StderrRelay:
    """The Recorder process's stderr, logged line by line as WARNINGs of the
    ``daq_storage.recorder`` logger: what that process reports on its own (its losses
    and failures, a crash's traceback) then carries a timestamp in the daemon's log, or
    is a JSON line with ``--log-json``, like every other line, instead of bare text.

    While :meth:`capture` is open this process's own stderr goes to the pipe too, so
    lines read meanwhile are held and logged once it closes: logged at once, they would
    be written into the pipe and read again, without end.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._capturing = False
        self.held: list[str] = []  # lines read while capturing

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Processes started inside get a pipe to this relay as their stderr."""
        # Started inside, the tracker would hold the pipe open after the Recorder ends.
        resource_tracker.ensure_running()
        read_fd, write_fd = os.pipe()
        self._capturing = True
        self._thread = threading.Thread(
            target=self._relay, args=(read_fd,), name="recorder-stderr", daemon=True
        )
        self._thread.start()
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(write_fd, 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            os.close(write_fd)
            with self._lock:
                self._capturing = False
                held, self.held = self.held, []
            for line in held:
                self._log(line)

    def _relay(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for raw in pipe:
                if line := raw.decode(errors="replace").rstrip():
                    with self._lock:
                        if self._capturing:
                            self.held.append(line)
                            continue
                    self._log(line)

    @staticmethod
    def _log(line: str) -> None:
        logging.getLogger("daq_storage.recorder").warning(
            line, extra={"fields": {"process": "recorder"}}
        )

    def join(self) -> None:
        """Wait for the end of the Recorder process's stderr (it has exited)."""
        if self._thread is not None:
            self._thread.join(10)


def _loop(
    recorder: Recorder,
    watcher: RingReader,
    watch: _Watch,
    stop: threading.Event,
    interval: float,
) -> None:
    next_progress = time.monotonic() + interval
    unreadable = ""
    while not stop.wait(_POLL_S):
        if not recorder.running:
            if not stop.is_set():  # a Ctrl-C reaches the Recorder's process too
                _log(logging.ERROR, "the recorder process ended on its own; stopping")
            break
        try:
            stats = recorder.stats
        except DaqStorageError as exc:
            if str(exc) != unreadable:  # once, not four times a second
                unreadable = str(exc)
                _log(logging.WARNING, "recorder stats unreadable", error=unreadable)
            continue
        unreadable = ""
        watch.report(stats)
        if time.monotonic() >= next_progress:
            next_progress = time.monotonic() + interval
            _log(logging.INFO, "progress", **_progress_fields(stats, watch.rate(stats), watcher))
    _log(logging.INFO, "stopping", then="drain the ring, flush and close every file")


def _remove(ring: Path, stats_file: Path) -> None:
    """Remove what the daemon created (the lock goes with the ``DaemonLock``)."""
    for path in (ring, stats_file):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            _log(logging.ERROR, "cannot remove", path=str(path), error=exc.strerror)
