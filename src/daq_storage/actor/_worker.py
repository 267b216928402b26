"""Where the actor's writer lives: in a thread of the actor's process, or in a process of
its own (``mode="process"``: no thread of the event loop's process holds the GIL while
HDF5 compresses).

Either way operations are submitted in order and answered in order, each by a
``concurrent.futures.Future``; the writer goes from one operation to the next without
waiting for whoever submitted them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import queue
import signal
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, Literal

from daq_storage.actor._core import Core, Output
from daq_storage.errors import ActorStopped, DaqStorageError

__all__ = ["MODES", "Op", "ProcessWorker", "ThreadWorker", "Worker"]

log = logging.getLogger("daq_storage.actor")

MODES = ("thread", "process")
Op = Literal["handle", "flush", "close"]
_STOP_TIMEOUT_S = 60.0


class ThreadWorker:
    """The writer in this process, used by one thread of its own."""

    def __init__(self, output: Output) -> None:
        self._core = Core(output)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="daq_storage_actor")

    def submit(self, op: Op, *args: Any) -> Future[Any]:
        return self._executor.submit(getattr(self._core, op), *args)

    def stop(self) -> None:
        """End the thread (after ``close``: its queue is empty, this returns at once)."""
        self._executor.shutdown(wait=True)


class ProcessWorker:
    """The writer in a spawned process. A sender thread pickles each operation into the
    pipe (a batch as the IPC bytes it came in), a receiver thread answers them in order;
    both wait in system calls, the GIL released, and the event loop never waits for the
    pipe."""

    def __init__(self, output: Output) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, output), name="daq_storage_actor", daemon=True
        )
        self._process.start()
        child.close()
        self._outbox: queue.SimpleQueue[tuple[Future[Any], str, tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._pending: deque[Future[Any]] = deque()  # sent, not answered, in order
        self._lock = threading.Lock()
        self._dead: ActorStopped | None = None
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._send, name="daq_storage_actor_send", daemon=True),
            threading.Thread(target=self._receive, name="daq_storage_actor_receive", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pid(self) -> int | None:
        """The writer process's id."""
        return self._process.pid

    def submit(self, op: Op, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._outbox.put((future, op, args))
        return future

    def stop(self) -> None:
        """End the process (after ``close``) and both threads; the process is killed if
        it does not end in time."""
        self._stopping = True
        self._outbox.put(None)  # the sender sends "exit" after everything before
        self._process.join(_STOP_TIMEOUT_S)
        if self._process.is_alive():
            log.error("storage actor: the writer process did not end; killing it")
            self._process.kill()
            self._process.join()
        for thread in self._threads:
            thread.join()
        self._conn.close()

    # ------------------------------------------------------------------ threads
    def _send(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                with contextlib.suppress(OSError):
                    self._conn.send(("exit", ()))
                return
            future, op, args = item
            with self._lock:
                if self._dead is not None:
                    future.set_exception(self._dead)
                    continue
                self._pending.append(future)
            try:
                self._conn.send((op, args))
            except OSError:  # the process is gone: the receiver says so
                continue

    def _receive(self) -> None:
        while True:
            try:
                status, value = self._conn.recv()
            except (EOFError, OSError):
                self._died()
                return
            with self._lock:
                future = self._pending.popleft()
            if status == "ok":
                future.set_result(value)
            else:
                future.set_exception(value)

    def _died(self) -> None:
        """The pipe closed: every operation sent or to come fails with ActorStopped."""
        self._process.join(5)
        if self._stopping and self._process.exitcode == 0:
            error = ActorStopped("the storage actor's writer process has ended")
        else:
            error = ActorStopped(
                f"the storage actor's writer process (pid {self._process.pid}) ended "
                f"(exit code {self._process.exitcode}); everything it flushed stays in "
                "the file"
            )
        with self._lock:
            self._dead = error
            pending, self._pending = self._pending, deque()
        for future in pending:
            future.set_exception(error)


Worker = ThreadWorker | ProcessWorker


def _serve(conn: Connection, output: Output) -> None:
    """The writer process: operations in, answers out, until ``exit`` or the pipe closes
    (the actor's process died: the writer is flushed and closed).

    One thread: a thread reading ahead would wait for the GIL, which h5py holds while it
    compresses, at every piece of a batch it reads, and slow the writer down more than
    the read-ahead gains (the parent's sender thread already waits in the pipe instead
    of the loop)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the actor's stop() ends it, in order
    core = Core(output)
    try:
        while True:
            try:
                op, args = conn.recv()
            except (EOFError, OSError):
                break
            if op == "exit":
                break
            try:
                answer: tuple[str, Any] = ("ok", getattr(core, op)(*args))
            except Exception as exc:
                answer = ("error", _picklable(exc))
            try:
                conn.send(answer)
            except OSError:
                break
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
