"""The Recorder: drains a ring into one or more formats, in its own process or a thread.

Process mode (the default) runs the drain loop in a process of the ``spawn`` context
(h5py holds the GIL and compression is CPU work; HDF5 must not be forked with open
files), controlled over a pipe: ``ready`` once the consumer is registered, ``flush`` /
``flushed``, ``stop`` / the final stats. The process stops gracefully (drain, flush,
close) on SIGINT/SIGTERM and when its parent dies (it checks ``os.getppid()`` on every
turn of its loop), so a restarted daemon can take the ring over. Thread mode runs the
same loop in a thread of the caller, for embedding and tests.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from daq_storage.errors import ConfigError, DaqStorageError, InvalidName, describe_value
from daq_storage.naming import sanitize_name
from daq_storage.recorder import _args as a
from daq_storage.recorder._control import PipeReader, ThreadControl, child_main, rebuild
from daq_storage.recorder._destinations import Destination, resolve_destinations
from daq_storage.recorder._loop import DrainLoop, LoopSettings, with_state
from daq_storage.recorder._routing import Routing
from daq_storage.recorder._sinks import SinkSettings
from daq_storage.recorder._stats import (
    RecorderFailed,
    RecorderStats,
    read_stats_file,
)
from daq_storage.recorder._stats import stats_path as _stats_path

if TYPE_CHECKING:
    from daq_storage.config import StorageConfig
    from daq_storage.location import S3Options

__all__ = ["Recorder", "RecorderNotRunning", "RecorderTimeout"]

_START_TIMEOUT_S = 120.0  # a spawned process imports numpy, pyarrow, h5py, zarr: seconds


def _stop_at_shutdown(recorder: Recorder) -> None:
    """Stop ``recorder`` when the interpreter exits, if it still runs then: early in the
    shutdown (a threading exit hook, run before those of ``concurrent.futures``, whose
    pools the writers use), else from ``atexit``."""
    ref = weakref.ref(recorder)

    def stop() -> None:
        alive = ref()
        if alive is not None:
            alive._stop_at_exit()

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError
        register(stop)
    except RuntimeError:  # no such hook here, or the shutdown has begun
        atexit.register(stop)


def _death(code: int | None) -> str:
    """How the recorder process ended, for ``errors``."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the recorder process died of {name} (exit code {code})"
    return f"the recorder process exited with code {code} before its final stats"


class RecorderNotRunning(DaqStorageError, RuntimeError):
    """An operation that needs a running Recorder (``flush()``) on one that is not."""


class RecorderTimeout(DaqStorageError, TimeoutError):
    """The Recorder did not answer within the timeout given."""


# ---------------------------------------------------------------------- the class
class Recorder:
    """Attaches to a ring as a named consumer and records every stream in its formats.

    Each record goes by stream to its formats (``streams`` routing, else every format in
    ``formats`` that can hold its kind); table records are joined into batches of up to
    ``batch_rows`` rows / ``batch_bytes`` bytes, frames grouped into whole chunks; every
    format gets the same batches in the same order, from its own thread. Every format
    is flushed once ``flush_interval_s`` has passed since the first record stored after
    the last flush (``0``: after every read that stored something), with fsync when
    ``durable``; on :meth:`flush`; and at :meth:`stop`, which drains what the ring holds
    and closes every file.

    Files are named ``{experiment}_{date}_{time}_v{N}`` after the Recorder's start and
    created when a format's first record arrives (a Recorder that received nothing
    leaves nothing). Rotation (``rotate_bytes``, ``rotate_seconds``) closes a format's
    file complete and continues in the next version. Losses (the ring overwrote records
    before they were read) are counted, logged and written into every file as the
    file-level metadata ``loss_ledger`` and ``lost_records``.

    Args:
        ring: the ring file.
        formats: formats every stream goes to (those that can hold its kind).
        streams: per-stream formats, overriding ``formats`` for that stream.
        output_dir, experiment: where files go (a directory, or an ``s3://bucket/prefix``
            for the formats that write to object storage) and what they are named after.
        destinations: per format, a directory or ``s3://`` URL instead of ``output_dir``.
        storage_options: how to reach the ``s3://`` destinations (``S3Options`` or a
            mapping of its fields; unset: the ``AWS_*`` environment and profiles).
        options: per format, the writer's keyword arguments.
        consumer: the ring consumer name (several Recorders need different names).
        metadata: file-level metadata set in every file (besides ``recorder``).
        mode: ``"process"`` (default) or ``"thread"``.
        stop_timeout_s: longest :meth:`stop` waits for the drain before it kills.

    Raises:
        ConfigError: any argument out of range or unknown (naming it); nothing is opened.
    """

    def __init__(
        self,
        ring: str | os.PathLike[str],
        *,
        formats: Sequence[str] = ("hdf5",),
        streams: Mapping[str, Sequence[str]] | None = None,
        output_dir: Destination = "data",
        destinations: Mapping[str, Destination] | None = None,
        storage_options: S3Options | Mapping[str, Any] | None = None,
        experiment: str = "experiment",
        options: Mapping[str, Mapping[str, Any]] | None = None,
        consumer: str = "recorder",
        flush_interval_s: float = 1.0,
        durable: bool = False,
        rotate_bytes: int | None = None,
        rotate_seconds: float | None = None,
        batch_rows: int = 65536,
        batch_bytes: int = 64 << 20,
        frames_per_write: int | None = None,
        start: Literal["oldest", "latest"] = "oldest",
        metadata: Mapping[str, Any] | None = None,
        mode: Literal["process", "thread"] = "process",
        stop_timeout_s: float = 30.0,
    ) -> None:
        self._ring = a.path(ring, "ring")
        self._routing = Routing(formats, streams)
        self._destinations = resolve_destinations(
            self._routing, output_dir, destinations, storage_options
        )
        if not isinstance(experiment, str):
            raise ConfigError(f"experiment must be a string, got {describe_value(experiment)}")
        try:
            sanitize_name(experiment, what="experiment name")
        except InvalidName as exc:
            raise ConfigError(f"experiment: {exc}") from None
        self._experiment = experiment
        self._consumer = a.consumer_name(consumer)
        self._flush_interval_s = a.number(flush_interval_s, "flush_interval_s", low=0)
        if not isinstance(durable, bool):
            raise ConfigError(f"durable must be True or False, got {describe_value(durable)}")
        self._durable = durable
        self._rotate_bytes = (
            None if rotate_bytes is None else a.integer(rotate_bytes, "rotate_bytes", 1)
        )
        self._rotate_seconds = (
            None
            if rotate_seconds is None
            else a.number(rotate_seconds, "rotate_seconds", low=0, inclusive=False)
        )
        self._batch_rows = a.integer(batch_rows, "batch_rows", 1)
        self._batch_bytes = a.integer(batch_bytes, "batch_bytes", 1)
        self._frames_per_write = (
            None if frames_per_write is None else a.integer(frames_per_write, "frames_per_write", 1)
        )
        self._start = a.choice(start, "start", ("oldest", "latest"))
        self._mode = a.choice(mode, "mode", ("process", "thread"))
        self._stop_timeout_s = a.number(stop_timeout_s, "stop_timeout_s", low=0, inclusive=False)
        self._metadata = a.metadata(metadata)
        self._options = self._validate_options(options)
        if self._mode == "process":
            try:
                pickle.dumps((self._options, self._metadata))
            except Exception as exc:
                raise ConfigError(
                    "options and metadata must be picklable in process mode (an executor "
                    f"cannot cross to another process; use mode='thread'): {exc}"
                ) from None
        self._stats_path: Path = _stats_path(self._ring, self._consumer)
        # running state
        self._started = False
        self._final: RecorderStats | None = None
        self._thread: threading.Thread | None = None
        self._loop: DrainLoop | None = None
        self._control: ThreadControl | None = None
        self._process: Any = None
        self._conn: Connection | None = None
        self._pipe: PipeReader | None = None
        self._inbox: list[tuple[Any, ...]] = []

    def _validate_options(
        self, options: Mapping[str, Mapping[str, Any]] | None
    ) -> dict[str, dict[str, Any]]:
        if options is None:
            return {}
        if not isinstance(options, Mapping):
            raise ConfigError(f"options must map formats to options, got {describe_value(options)}")
        out: dict[str, dict[str, Any]] = {}
        for fmt, given in options.items():
            if not isinstance(fmt, str):
                raise ConfigError(f"options: {describe_value(fmt)} is not a format name")
            name = fmt.lower()
            if name not in self._routing.all_formats:
                raise ConfigError(
                    f"options[{fmt!r}]: {fmt!r} is not one of the recorded formats "
                    f"({', '.join(self._routing.all_formats)})"
                )
            if not isinstance(given, Mapping):
                raise ConfigError(
                    f"options[{fmt!r}] must be a mapping, got {describe_value(given)}"
                )
            self._routing.writer_class(name).validate_options(**given)
            out[name] = dict(given)
        return out

    @classmethod
    def from_config(
        cls,
        config: StorageConfig,
        *,
        ring: str | os.PathLike[str] | None = None,
        mode: Literal["process", "thread"] = "process",
    ) -> Recorder:
        """A Recorder as ``config`` describes it: ``[storage]`` formats (or
        default_backend), output_dir, destinations, s3, experiment, flush_interval_ms and
        the codec keys
        (per format, through ``writers.writer_options``: a key a format cannot honour is
        refused), and the ``[recorder]`` keys; ``ring`` defaults to the daemon's ring
        (``[ring_buffer] path``, else ``default_ring_dir() / "daq_storage_{experiment}"``).

        Raises:
            ConfigError: a key a format cannot honour, or a value out of range.
        """
        from daq_storage.config import daemon_ring_path
        from daq_storage.writers import get_writer_class, writer_options

        settings = config.storage
        recorder = config.recorder
        formats = settings.recorded_formats
        streams = {stream: tuple(fmts) for stream, fmts in recorder.streams.items()}
        sources = {v.key: v.source for v in config.sources() if v.source != "default"}
        options = {}
        for fmt in dict.fromkeys([*formats, *(f for fs in streams.values() for f in fs)]):
            found = writer_options(get_writer_class(fmt), settings, sources=sources)
            if found:
                options[fmt] = found
        return cls(
            daemon_ring_path(config) if ring is None else ring,
            formats=formats, streams=streams, output_dir=settings.output_dir,
            destinations={str(k): v for k, v in settings.destinations.items()},
            storage_options=None if settings.s3 is None else settings.s3.options(),
            experiment=settings.experiment, options=options,
            flush_interval_s=settings.flush_interval_ms / 1000, mode=mode,
            metadata={"experiment": settings.experiment},
            consumer=recorder.consumer, durable=recorder.durable,
            rotate_bytes=recorder.rotate_bytes,
            rotate_seconds=recorder.rotate_interval_secs, batch_rows=recorder.batch_rows,
            batch_bytes=recorder.batch_bytes, frames_per_write=recorder.frames_per_write,
            start=recorder.start, stop_timeout_s=recorder.stop_timeout_secs,
        )  # fmt: skip

    # ------------------------------------------------------------ properties
    @property
    def stats_path(self) -> Path:
        """Where this Recorder publishes its stats (see :func:`read_stats`)."""
        return self._stats_path

    @property
    def pid(self) -> int | None:
        """The recorder process (process mode, once started), else None."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        if not self._started or self._final is not None:
            return False
        if self._process is not None:
            return bool(self._process.is_alive())
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> RecorderStats:
        """A live snapshot (published at least every 0.5 s and at each flush), or the
        final stats once stopped."""
        if self._final is not None:
            return self._final
        if self._loop is not None:
            return self._loop.latest
        if self._started:
            try:
                return read_stats_file(self._stats_path)
            except DaqStorageError:
                pass
        return self._empty("starting" if self._started else "stopped")

    def _empty(self, state: str) -> RecorderStats:
        return RecorderStats(str(self._ring), self._consumer, state=state)

    # ------------------------------------------------------------ start
    def _settings(self) -> LoopSettings:
        when = datetime.now()
        started_ns = time.time_ns()
        recorder = {"consumer": self._consumer, "ring": str(self._ring),
                    "formats": list(self._routing.all_formats)}  # fmt: skip
        metadata = {**self._metadata, "recorder": recorder}
        sinks = {
            fmt: SinkSettings(
                fmt=fmt,
                options=self._options.get(fmt, {}),
                output_dir=self._destinations[fmt],
                experiment=self._experiment,
                when=when,
                metadata=metadata,
                rotate_bytes=self._rotate_bytes,
                rotate_seconds=self._rotate_seconds,
                queue_bytes=self._batch_bytes,
            )
            for fmt in self._routing.all_formats
        }
        return LoopSettings(
            ring=str(self._ring), consumer=self._consumer, start=self._start,
            formats=self._routing.formats, streams=dict(self._routing.streams), sinks=sinks,
            flush_interval_s=self._flush_interval_s, durable=self._durable,
            batch_rows=self._batch_rows, batch_bytes=self._batch_bytes,
            frames_per_write=self._frames_per_write, stats_path=self._stats_path,
            started_ns=started_ns,
            parent_pid=os.getpid() if self._mode == "process" else None,
            log_level=logging.getLogger("daq_storage.recorder").getEffectiveLevel(),
        )  # fmt: skip

    def start(self) -> None:
        """Register the consumer on the ring (no file is created yet); returns once it is
        registered, so a producer that starts after this loses nothing.

        Raises:
            RingNotFound, RingBusy, RingNotTrusted, ...: the ring cannot be attached to
                (the same DaqStorageError type the recorder process met).
            RecorderFailed: the recorder process died before it was ready.
            RecorderNotRunning: started before (a Recorder runs once).
        """
        if self._started:
            raise RecorderNotRunning(
                f"Recorder {self._consumer!r} of {self._ring} was started already "
                "(a Recorder runs once: make a new one)"
            )
        self._started = True
        # A Recorder still running when the interpreter exits is stopped first (drain,
        # flush, close): its thread would be frozen mid-write, its process terminated.
        _stop_at_shutdown(self)
        settings = self._settings()
        if self._mode == "thread":
            self._start_thread(settings)
        else:
            self._start_process(settings)

    def _start_thread(self, settings: LoopSettings) -> None:
        loop = DrainLoop(settings)
        control = ThreadControl()
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            try:
                loop.open()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._final = loop.run(control)

        thread = threading.Thread(target=main, name=f"daq-recorder-{self._consumer}", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            self._final = self._empty("failed")
            raise failure[0]
        self._loop, self._control, self._thread = loop, control, thread
        self._final = None

    def _start_process(self, settings: LoopSettings) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=child_main, args=(child, settings),
                                  name=f"daq-recorder-{self._consumer}", daemon=True)  # fmt: skip
        process.start()
        child.close()
        self._process, self._conn = process, parent
        self._pipe = PipeReader(parent, process.pid)
        message = self._receive({"ready", "error"}, time.monotonic() + _START_TIMEOUT_S)
        if message is None or message[0] != "ready":
            if message is None:
                process.kill()
            process.join()
            self._close_pipe()
            self._final = self._empty("failed")
            if message is None:
                raise RecorderFailed(
                    f"the recorder process for {self._ring} exited (code {process.exitcode}) "
                    "before it was ready"
                )
            raise rebuild(message[1], message[2])

    def _receive(self, wanted: set[str], deadline: float | None) -> tuple[Any, ...] | None:
        """The first message of a kind in ``wanted`` (others kept); None on EOF/timeout."""
        for i, kept in enumerate(self._inbox):
            if kept[0] in wanted:
                return self._inbox.pop(i)
        pipe = self._pipe
        if pipe is None:
            return None
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            message = pipe.get(remaining)
            if message is None:
                return None
            if message[0] in wanted:
                return message
            self._inbox.append(message)

    def _close_pipe(self) -> None:
        """After the recorder process has exited: its reader thread ends on the EOF."""
        if self._pipe is not None:
            self._pipe.join(5)
            self._pipe = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------ flush
    def flush(self, *, durable: bool | None = None, timeout: float | None = 30.0) -> None:
        """Write the held-back frames and rows and flush every format now (fsync when
        ``durable``, default the Recorder's); returns when done.

        Raises:
            RecorderNotRunning: not started, or stopped.
            RecorderTimeout: not done within ``timeout`` seconds.
            RecorderFailed: the recorder process died.
        """
        if durable is not None and not isinstance(durable, bool):
            raise ConfigError(f"durable must be True, False or None, got {describe_value(durable)}")
        wait = None if timeout is None else a.number(timeout, "timeout", low=0)
        if not self._started or self._final is not None:
            raise RecorderNotRunning(f"Recorder {self._consumer!r} of {self._ring} is not running")
        deadline = None if wait is None else time.monotonic() + wait
        if self._control is not None:
            done = threading.Event()
            self._control.requests.put((durable, lambda _error: done.set()))
            while not done.wait(0.05):
                if self._thread is not None and not self._thread.is_alive():
                    raise RecorderNotRunning(f"Recorder {self._consumer!r} stopped")
                if deadline is not None and time.monotonic() >= deadline:
                    raise RecorderTimeout(f"flush of Recorder {self._consumer!r}: no answer "
                                          f"within {timeout} s")  # fmt: skip
            return
        assert self._conn is not None
        try:
            self._conn.send(("flush", durable))
        except OSError:
            raise RecorderFailed(f"the recorder process of {self._ring} is gone") from None
        message = self._receive({"flushed", "stopped"}, deadline)
        if message is None:
            if self._process is not None and not self._process.is_alive():
                raise RecorderFailed(f"the recorder process of {self._ring} died "
                                     f"(exit code {self._process.exitcode})")  # fmt: skip
            raise RecorderTimeout(f"flush of Recorder {self._consumer!r}: no answer within "
                                  f"{timeout} s")  # fmt: skip
        if message[0] == "stopped":
            self._inbox.append(message)
            raise RecorderNotRunning(f"Recorder {self._consumer!r} stopped (signal or parent)")

    # ------------------------------------------------------------ stop
    def stop(self, timeout: float | None = None) -> RecorderStats:
        """Drain what the ring holds now, write what is held back, flush, close every
        file; the final stats (state ``"stopped"``). Idempotent; a Recorder never
        started returns empty stats. If that takes longer than ``timeout`` (default
        ``stop_timeout_s``) the process is killed (a thread stops draining) and the
        stats say ``"killed"``: files stay readable up to their last flush. Never raises
        for a data problem: see :attr:`RecorderStats.complete`."""
        wait = self._stop_timeout_s if timeout is None else a.number(timeout, "timeout", low=0)
        if self._final is not None:
            return self._final
        if not self._started:
            return self._empty("stopped")
        if self._control is not None:
            self._final = self._stop_thread(wait)
        else:
            self._final = self._stop_process(wait)
        return self._final

    def _stop_thread(self, wait: float) -> RecorderStats:
        assert self._control is not None
        assert self._thread is not None
        assert self._loop is not None
        self._control.stop = True
        self._thread.join(wait)
        if self._thread.is_alive():
            self._control.abort = True  # close what is open; what is left stays in the ring
            self._thread.join()
        final = self._final if self._final is not None else self._loop.latest
        return final

    def _stop_process(self, wait: float) -> RecorderStats:
        process, conn = self._process, self._conn
        assert process is not None
        assert conn is not None
        deadline = time.monotonic() + wait
        with contextlib.suppress(OSError):  # it may have stopped already (a signal)
            conn.send(("stop",))
        message = self._receive({"stopped"}, deadline)
        final: RecorderStats
        # The final stats, or the pipe closed (the process is gone or going: wait for it
        # within what is left of the timeout), or the timeout passed.
        process.join(max(0.0, deadline - time.monotonic()) + (5 if message else 0))
        if process.is_alive():
            process.kill()
            process.join()
            why = f"the recorder process did not stop within {wait} s: killed"
            final = with_state(self._file_stats(), "killed", why)
        elif message is not None:
            final = RecorderStats.from_json(message[1])
        else:
            final = with_state(self._file_stats(), "failed", _death(process.exitcode))
        self._close_pipe()
        return final

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):  # at exit: do what can be done, quietly
            self.stop()

    def _file_stats(self) -> RecorderStats:
        try:
            return read_stats_file(self._stats_path)
        except DaqStorageError:
            return self._empty("failed")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"Recorder({str(self._ring)!r}, consumer={self._consumer!r}, "
                f"formats={list(self._routing.formats)}, mode={self._mode!r})")  # fmt: skip
