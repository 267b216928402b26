"""The instruments in a process of their own: :class:`InstrumentProcess`."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import time
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from multiprocessing.process import BaseProcess
from typing import Any

from daq_storage.acquisition._results import (
    _FIELDS,
    STREAMS,
    AcquisitionResult,
    _count_of,
)
from daq_storage.acquisition._run import _acquire, _OnSignals, _Settings, _settings
from daq_storage.errors import DaqStorageError

__all__ = ["AcquisitionTimeout", "InstrumentProcess"]


class AcquisitionTimeout(DaqStorageError, TimeoutError):
    """:meth:`InstrumentProcess.start` or :meth:`~InstrumentProcess.wait` gave up
    waiting; the acquisition process may still be running."""


def _mirror(shared: Any, counts: Mapping[str, Any], seconds: float) -> None:
    """Copy the counters where the parent's :meth:`InstrumentProcess.progress` reads them
    (single int64 stores: a snapshot may be a write apart between fields)."""
    width = len(_FIELDS)
    for i, stream in enumerate(STREAMS):
        values = counts.get(stream)
        if values is not None:
            shared[i * width : (i + 1) * width] = values
    shared[len(STREAMS) * width] = int(seconds * 1e9)


def _pack(exc: BaseException) -> tuple[bytes | None, str, str, str]:
    """An exception for the pipe: pickled if it survives the round trip."""
    blob: bytes | None
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)
    except Exception:  # an exception type that cannot be rebuilt: sent as text
        blob = None
    tb = "".join(traceback.format_exception(exc))
    return blob, type(exc).__name__, str(exc), tb


def _unpack(payload: tuple[bytes | None, str, str, str], pid: int | None) -> DaqStorageError:
    blob, name, message, tb = payload
    exc: object = None
    if blob is not None:
        try:
            exc = pickle.loads(blob)
        except Exception:  # not importable here: the text below says what it was
            exc = None
    if not isinstance(exc, DaqStorageError):
        exc = DaqStorageError(f"the acquisition process failed: {name}: {message}")
        exc.add_note(tb)
    else:
        exc.add_note(f"raised in the acquisition process (pid {pid})")
    return exc


def _child(ring_path: str, s: _Settings, conn: Connection, stop: Any, shared: Any) -> None:
    """The acquisition process: ``("ready", pid)`` once attached as the ring's writer,
    then ``("done", result JSON)``; ``("error", packed exception)`` instead of either."""

    # A Ctrl-C on the terminal reaches this process too: end the run, and report.
    _OnSignals(stop.set, (signal.SIGINT, signal.SIGTERM))  # for the process's lifetime
    try:
        result = _acquire(
            ring_path, s, stop, None,
            on_ready=lambda run: conn.send(("ready", os.getpid())),
            on_write=lambda run: _mirror(
                shared, {n: c.values for n, c in run.counts.items()},
                time.monotonic() - run.started,
            ),
        )  # fmt: skip
    except Exception as exc:
        message: tuple[str, Any] = ("error", _pack(exc))
    else:
        final = {n: [getattr(c, f) for f in _FIELDS] for n, c in result.streams.items()}
        _mirror(shared, final, result.seconds)
        message = ("done", result.to_json())
    with contextlib.suppress(OSError):  # the parent has gone: nobody left to tell
        conn.send(message)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"exit code {code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"exit code {code}"


class InstrumentProcess:
    """:func:`run_instruments` in a process of its own (the multiprocessing ``spawn``
    context), writing into the ring at ``ring``.

    Takes the keyword arguments of :func:`run_instruments` but ``stop`` and
    ``on_progress``: :meth:`stop` ends the run early, :meth:`progress` reads the counts
    while it runs. The process stops gracefully (and reports) on SIGINT and SIGTERM. As a
    context manager: :meth:`start` on entry; on exit :meth:`stop` if it still runs (call
    :meth:`wait` inside the block to let it finish).

    Raises:
        ConfigError: an argument is wrong (checked here, before any process starts).
    """

    def __init__(
        self,
        ring: str | os.PathLike[str],
        *,
        camera: bool = True,
        power_meter: bool = True,
        daq: bool = True,
        camera_fps: float = 100.0,
        camera_shape: tuple[int, int] = (480, 640),
        frames: int | None = None,
        duration: float = 2.0,
        paced: bool = True,
        seed: int = 0,
        block_timeout: float | None = None,
        log_seqs: bool = False,
    ) -> None:
        self.ring = os.fspath(ring)
        self._settings = _settings(
            camera=camera, power_meter=power_meter, daq=daq, camera_fps=camera_fps,
            camera_shape=camera_shape, frames=frames, duration=duration, paced=paced,
            seed=seed, block_timeout=block_timeout, log_seqs=log_seqs,
        )  # fmt: skip
        ctx = multiprocessing.get_context("spawn")
        self._ctx = ctx
        self._stop = ctx.Event()
        self._shared = ctx.Array("q", len(STREAMS) * len(_FIELDS) + 1, lock=False)
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._result: AcquisitionResult | None = None
        self._error: DaqStorageError | None = None

    @property
    def pid(self) -> int | None:
        """The acquisition process's id (``None`` before :meth:`start`)."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Whether the acquisition process is alive."""
        return self._process is not None and self._process.is_alive()

    def start(self, timeout: float | None = None) -> None:
        """Start the process; returns once it is attached to the ring as its writer.

        Args:
            timeout: the longest to wait for that (``None``: as long as the process
                lives); on expiry the process is killed.

        Raises:
            DaqStorageError: the child's own error, of the same type (``RingNotFound``,
                ``RingBusy``, ``ConfigError``, ...); or the process died (its exit code
                named) or was already started.
            AcquisitionTimeout: not attached within ``timeout``.
        """
        if self._process is not None:
            raise DaqStorageError(f"InstrumentProcess for {self.ring} was already started")
        receive, send = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_child, args=(self.ring, self._settings, send, self._stop, self._shared),
            name="daq-storage-instruments", daemon=True,
        )  # fmt: skip
        self._process, self._conn = process, receive
        process.start()
        send.close()  # the child holds the only writing end: EOF once it has gone
        try:
            message = self._next(timeout, "attaching to the ring")
        except AcquisitionTimeout:
            self._finish(kill=True)
            raise
        if message[0] != "ready":
            self._settle(message)
            raise DaqStorageError(f"the acquisition process sent {message[0]!r} first")

    def wait(self, timeout: float | None = None) -> AcquisitionResult:
        """The result once the run ends (at once when it has).

        Raises:
            DaqStorageError: the run failed in the process (its error, same type), or the
                process died (its exit code named) before reporting, or was not started.
            AcquisitionTimeout: still running after ``timeout`` s (it goes on).
        """
        if self._result is not None:
            return self._result
        if self._error is not None:
            raise self._error
        if self._process is None:
            raise DaqStorageError(f"InstrumentProcess for {self.ring} was not started")
        result = self._settle(self._next(timeout, "reporting its result"))
        if result is None:
            raise DaqStorageError("the acquisition process reported twice that it was ready")
        return result

    def stop(self, timeout: float | None = None) -> AcquisitionResult:
        """End the run early (between two writes) and return what was written until then.

        Raises:
            as :meth:`wait`.
        """
        self._stop.set()
        return self.wait(timeout)

    def progress(self) -> AcquisitionResult:
        """The counts so far, readable while the process runs (without ``seqs``)."""
        if self._result is not None:
            return self._result
        width = len(_FIELDS)
        values = list(self._shared)
        streams = {}
        for i, stream in enumerate(STREAMS):
            if stream in self._settings.streams:
                row = values[i * width : (i + 1) * width]
                streams[stream] = _count_of(stream, row)
        return AcquisitionResult(streams, values[-1] / 1e9)

    def __enter__(self) -> InstrumentProcess:
        self.start()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self._process is None or self._result is not None or self._error is not None:
            return
        if exc_type is None:
            self.stop()
        else:  # already failing: end the process, without hiding the error
            self._stop.set()
            self._finish(kill=True)

    # ----------------------------------------------------------------- internals
    def _next(self, timeout: float | None, what: str) -> tuple[str, Any]:
        """The next message; raises if the process dies before sending one."""
        assert self._process is not None
        assert self._conn is not None
        conn, process = self._conn, self._process
        ready = wait_for([conn, process.sentinel], timeout)
        if not ready:
            raise AcquisitionTimeout(
                f"the acquisition process (pid {process.pid}) was not done {what} after {timeout} s"
            )
        try:
            if conn in ready or conn.poll():
                message: tuple[str, Any] = conn.recv()
                return message
        except (EOFError, OSError):
            pass  # it exited without a word
        code = self._finish(kill=False)
        self._error = DaqStorageError(
            f"the acquisition process (pid {process.pid}) died with {_exit_text(code)} "
            f"before {what}"
        )
        raise self._error

    def _settle(self, message: tuple[str, Any]) -> AcquisitionResult | None:
        kind, payload = message
        if kind == "ready":
            return None
        self._finish(kill=False)
        if kind == "done":
            self._result = AcquisitionResult.from_json(payload)
            return self._result
        self._error = _unpack(payload, self.pid)
        raise self._error

    def _finish(self, *, kill: bool) -> int | None:
        """Reap the process (killed first with ``kill``; it exits by itself once it has
        reported); returns its exit code."""
        assert self._process is not None
        process = self._process
        if kill and process.is_alive():
            process.kill()
        process.join(30)
        if process.is_alive():  # reported, yet stuck on the way out
            process.kill()
            process.join()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        return process.exitcode
