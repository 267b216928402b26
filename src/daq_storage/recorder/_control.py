"""How the Recorder talks to its loop: a request list in thread mode; a pipe to the
recorder process, whose main function is here."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import daq_storage.errors as _errors
from daq_storage.errors import DaqStorageError
from daq_storage.recorder import _stats
from daq_storage.recorder._loop import DrainLoop, LoopSettings
from daq_storage.recorder._stats import RecorderFailed

__all__ = ["PipeControl", "ThreadControl", "child_main", "rebuild"]

Request = tuple[bool | None, Callable[[str | None], None]]


class ThreadControl:
    """Requests to a loop in a thread of this process."""

    signalled = False  # signals are the embedding application's

    def __init__(self) -> None:
        self.stop = False
        self.abort = False
        self.requests: list[Request] = []

    def poll(self) -> list[Request]:
        taken, self.requests = self.requests, []
        return taken

    @property
    def stopping(self) -> bool:
        return self.stop or self.abort

    @property
    def aborting(self) -> bool:
        return self.abort


class PipeControl:
    """Requests from the parent over the pipe (recorder process side)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
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
            self.conn.send(("flushed", error))
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
    control = PipeControl(conn)

    def graceful(signum: int, frame: Any) -> None:
        control.stop = control.signalled = True

    signal.signal(signal.SIGINT, graceful)
    signal.signal(signal.SIGTERM, graceful)
    loop = DrainLoop(settings)
    try:
        loop.open()
    except DaqStorageError as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    except Exception as exc:
        conn.send(("error", "RecorderFailed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    final = loop.run(control)
    with contextlib.suppress(OSError):  # the parent is gone: the stats file has it
        conn.send(("stopped", final.to_json()))


def rebuild(name: str, message: str) -> DaqStorageError:
    """The recorder process's error as the same DaqStorageError type."""
    cls = getattr(_errors, name, None) or getattr(_stats, name, None)
    if not (isinstance(cls, type) and issubclass(cls, DaqStorageError)):
        cls = RecorderFailed
    try:
        return cls(message)
    except Exception:
        return RecorderFailed(f"{name}: {message}")
