"""Where the actor's writer lives: in a thread of the actor's process, or in a process of
its own (``mode="process"``: no thread of the event loop's process holds the GIL while
HDF5 compresses)."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import signal
from multiprocessing.connection import Connection
from typing import Any, Literal

from daq_storage.actor._core import Core, Output
from daq_storage.errors import ActorStopped, DaqStorageError

__all__ = ["MODES", "ProcessWorker", "ThreadWorker", "Worker"]

log = logging.getLogger("daq_storage.actor")

MODES = ("thread", "process")
_STOP_TIMEOUT_S = 60.0


class ThreadWorker:
    """The writer in this process, driven by the actor's one worker thread."""

    def __init__(self, output: Output) -> None:
        self._core = Core(output)

    def run(self, op: Literal["handle", "flush", "close"], *args: Any) -> Any:
        return getattr(self._core, op)(*args)

    def stop(self) -> None:
        return


class ProcessWorker:
    """The writer in a spawned process; each operation sent through a pipe (batches as
    the IPC bytes they came in) by the actor's worker thread, which waits for the answer
    in a system call, the GIL released."""

    def __init__(self, output: Output) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, output), name="daq_storage_actor", daemon=True
        )
        self._process.start()
        child.close()
        self._dead: ActorStopped | None = None

    @property
    def pid(self) -> int | None:
        """The writer process's id."""
        return self._process.pid

    def run(self, op: Literal["handle", "flush", "close"], *args: Any) -> Any:
        if self._dead is not None:
            raise self._dead
        try:
            self._conn.send((op, args))
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._process.join(5)
            self._dead = ActorStopped(
                f"the storage actor's writer process (pid {self._process.pid}) ended "
                f"(exit code {self._process.exitcode}); everything it flushed stays in "
                "the file"
            )
            raise self._dead from exc
        if status == "ok":
            return value
        raise value

    def stop(self) -> None:
        """End the process (after ``close``); killed if it does not end in time."""
        with contextlib.suppress(OSError):
            self._conn.send(("exit", ()))
        self._process.join(_STOP_TIMEOUT_S)
        if self._process.is_alive():
            log.error("storage actor: the writer process did not end; killing it")
            self._process.kill()
            self._process.join()
        self._conn.close()


Worker = ThreadWorker | ProcessWorker


def _serve(conn: Connection, output: Output) -> None:
    """The writer process: operations in, answers out, until ``exit`` or the pipe closes
    (the actor's process died: the writer is flushed and closed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the actor's stop() ends it, in order
    core = Core(output)
    try:
        while True:
            try:
                op, args = conn.recv()
            except (EOFError, OSError):
                break
            if op == "exit":
                return
            try:
                answer: tuple[str, Any] = ("ok", getattr(core, op)(*args))
            except Exception as exc:
                answer = ("error", _picklable(exc))
            conn.send(answer)
    finally:
        with contextlib.suppress(Exception):
            core.close()
        conn.close()


def _picklable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling, else a DaqStorageError saying what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return DaqStorageError(f"{type(exc).__name__}: {exc}")
    return exc
