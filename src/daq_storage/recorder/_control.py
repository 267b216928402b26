"""How the Recorder talks to its loop: a request list in thread mode; a pipe to the
recorder process, whose main function is here."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import daq_storage.errors as _errors
from daq_storage.errors import DaqStorageError
from daq_storage.recorder import _stats
from daq_storage.recorder._loop import DrainLoop, LoopSettings
from daq_storage.recorder._stats import RecorderFailed

__all__ = ["Channel", "PipeControl", "PipeReader", "ThreadControl", "child_main", "rebuild"]

Request = tuple[bool | None, Callable[[str | None], None]]


class ThreadControl:
    """Requests to a loop in a thread of this process."""

    signalled = False  # signals are the embedding application's

    def __init__(self) -> None:
        self.stop = False
        self.abort = False
        #: Flush requests, put by the caller's threads, taken by the loop's.
        self.requests: queue.SimpleQueue[Request] = queue.SimpleQueue()

    def poll(self) -> list[Request]:
        taken: list[Request] = []
        with contextlib.suppress(queue.Empty):
            while True:
                taken.append(self.requests.get_nowait())
        return taken

    @property
    def stopping(self) -> bool:
        return self.stop or self.abort

    @property
    def aborting(self) -> bool:
        return self.abort


class Channel:
    """The recorder process's end of the pipe: sends from any of its threads (the loop,
    the sinks' log records) one message at a time."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self.conn.send(message)


class _ForwardLogs(logging.Handler):
    """Sends the recorder process's log records to its parent, which re-emits them on its
    own loggers (so a daemon's handlers format and timestamp them)."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.channel.send(("log", record.levelno, record.name, text, record.created))
        except Exception:  # the parent is gone, or a record that does not format
            pass


class PipeReader:
    """The parent's end: a thread reads the pipe, re-emits the log records the recorder
    process forwards, and queues the other messages for :meth:`get`."""

    def __init__(self, conn: Connection, pid: int | None) -> None:
        self._conn = conn
        self._pid = pid
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="daq-recorder-pipe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                message = tuple(self._conn.recv())
            except (EOFError, OSError):  # the recorder process has exited
                self._queue.put(("eof",))
                return
            if message and message[0] == "log":
                self._emit(*message[1:])
            else:
                self._queue.put(message)

    def _emit(self, level: int, name: str, text: str, created: float) -> None:
        logger = logging.getLogger(name)
        if logger.isEnabledFor(level):
            record = logger.makeRecord(name, level, "(recorder process)", 0, text, (), None)
            record.created = created
            record.process = self._pid
            logger.handle(record)

    def get(self, timeout: float | None) -> tuple[Any, ...] | None:
        """The next message; None on timeout or once the pipe has closed."""
        if self._eof:
            return None
        try:
            message = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if message == ("eof",):
            self._eof = True
            return None
        return message

    @property
    def closed(self) -> bool:
        """The recorder process's end of the pipe closed (it exited)."""
        return self._eof or not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


class PipeControl:
    """Requests from the parent over the pipe (recorder process side)."""

    def __init__(self, conn: Connection, channel: Channel) -> None:
        self.conn = conn
        self.channel = channel
        self.stop = False
        self.signalled = False  # the stop came from SIGINT / SIGTERM

    def poll(self) -> list[Request]:
        found: list[Request] = []
        try:
            while not self.stop and self.conn.poll():
                message = self.conn.recv()
                if message[0] == "flush":
                    found.append((message[1], self._flushed))
                elif message[0] == "stop":
                    self.stop = True
        except (EOFError, OSError):
            self.stop = True  # the parent is gone
        return found

    def _flushed(self, error: str | None) -> None:
        try:
            self.channel.send(("flushed", error))
        except OSError:
            self.stop = True

    @property
    def stopping(self) -> bool:
        return self.stop  # set by poll() (a stop message, the pipe closed) or a signal

    @property
    def aborting(self) -> bool:
        return False


def child_main(conn: Connection, settings: LoopSettings) -> None:
    """The recorder process: register, say ready, drain until told to stop."""
    channel = Channel(conn)
    control = PipeControl(conn, channel)

    def graceful(signum: int, frame: Any) -> None:
        control.stop = control.signalled = True

    signal.signal(signal.SIGINT, graceful)
    signal.signal(signal.SIGTERM, graceful)
    logger = logging.getLogger("daq_storage")
    logger.addHandler(_ForwardLogs(channel))
    logger.setLevel(settings.log_level)  # what the parent's logger would let through
    logger.propagate = False
    loop = DrainLoop(settings)
    try:
        loop.open()
    except DaqStorageError as exc:
        channel.send(("error", type(exc).__name__, str(exc)))
        return
    except Exception as exc:
        channel.send(("error", "RecorderFailed", f"{type(exc).__name__}: {exc}"))
        return
    channel.send(("ready", os.getpid()))
    final = loop.run(control)
    with contextlib.suppress(OSError):  # the parent is gone: the stats file has it
        channel.send(("stopped", final.to_json()))


def rebuild(name: str, message: str) -> DaqStorageError:
    """The recorder process's error as the same DaqStorageError type."""
    cls = getattr(_errors, name, None) or getattr(_stats, name, None)
    if not (isinstance(cls, type) and issubclass(cls, DaqStorageError)):
        cls = RecorderFailed
    try:
        return cls(message)
    except Exception:
        return RecorderFailed(f"{name}: {message}")
