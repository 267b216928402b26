"""The storage actor: seed 003's HDF5 storage actor in asyncio, for any table format."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, overload

from daq_storage.actor._core import Output
from daq_storage.actor._mailbox import Mailbox
from daq_storage.actor._messages import (
    MESSAGE_TYPES,
    Flush,
    GetStats,
    MailboxStats,
    Message,
    SetInstrumentMetadata,
    SetMetadata,
    StorageStats,
    WriteBatch,
    message_cost,
)
from daq_storage.actor._worker import MODES, Op, ProcessWorker, ThreadWorker, Worker
from daq_storage.errors import ActorStopped, ConfigError, DaqStorageError, UnsupportedData

if TYPE_CHECKING:
    from daq_storage.config import StorageConfig

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_MESSAGES", "StorageActor"]

log = logging.getLogger("daq_storage.actor")

#: Default bounds of the mailbox: about 160 batches of 10,000 power-meter rows.
DEFAULT_MAX_MESSAGES = 1024
DEFAULT_MAX_BYTES = 64 << 20


@dataclass(eq=False, slots=True)
class _Envelope:
    message: Message | None  # None: stop
    reply: asyncio.Future[Any] | None  # None: told
    description: str
    seq: int = 0  # the order of sending (set when it is in the mailbox)


def _describe(message: Message) -> str:
    if isinstance(message, WriteBatch | SetInstrumentMetadata):
        return f"{type(message).__name__} for {message.instrument_id!r}"
    if isinstance(message, SetMetadata):
        return f"SetMetadata {message.key!r}"
    return type(message).__name__


def _again(exc: BaseException, text: str) -> DaqStorageError:
    """``exc`` told again in ``text``: an error of its class where one can be made from a
    message (a caller's ``except SchemaMismatch`` still works), chained to it."""
    new: DaqStorageError | None = None
    if isinstance(exc, DaqStorageError):
        with contextlib.suppress(Exception):
            new = type(exc)(text)
    if new is None:
        new = DaqStorageError(text)
    new.__cause__ = exc
    return new


class StorageActor:
    """Stores Arrow batches sent as messages, in the format of
    ``config.storage.default_backend``, from one worker thread: file I/O never runs on
    the event loop.

    ``actor = await StorageActor.start(config)`` (or ``async with StorageActor(config) as
    actor``); ``await actor.call(message)`` returns the reply, ``await actor.tell(message)``
    sends without waiting for it; ``await actor.stop()`` handles what is queued, flushes and
    closes. See ``docs/actor.md``.

    Args:
        config: ``[storage]`` gives the format (``default_backend``), ``output_dir``,
            ``experiment`` (file names ``{experiment}_{date}_{time}_v{N}``), the codec keys
            and ``auto_flush_interval_secs`` (0: flush only on :class:`Flush` and at stop).
            ``None``: ``StorageConfig()``, the environment (``DAQ_STORAGE_*``) and the file
            ``DAQ_STORAGE_CONFIG`` names.
        max_messages: the mailbox holds at most this many messages (the one being
            handled included); a sender waits for room.
        max_bytes: ... and at most this many bytes of batches; a batch larger than that
            alone is taken once the mailbox is empty.
        mode: ``"thread"``: the writer in this process, used by the actor's worker thread;
            ``"process"``: in a spawned process (the GIL h5py holds while compressing is
            then another process's). See ``docs/actor.md`` for what each costs.

    Raises:
        ConfigError: the format stores no tables (``tiff``), a codec key it cannot honour,
            a bound that is not an integer >= 1, an unknown ``mode``.
    """

    def __init__(
        self,
        config: StorageConfig | None = None,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        mode: Literal["thread", "process"] = "thread",
    ) -> None:
        from daq_storage.config import StorageConfig
        from daq_storage.writers import get_writer_class, writer_options

        if mode not in MODES:
            raise ConfigError(f"mode must be 'thread' or 'process', got {mode!r}")
        self._mode = mode
        if config is None:
            config = StorageConfig()
        if not isinstance(config, StorageConfig):
            raise ConfigError(f"config must be a StorageConfig, got {type(config).__name__}")
        settings = config.storage
        writer_class = get_writer_class(settings.default_backend)
        if not writer_class.supports_tables:
            raise ConfigError(
                f"storage.default_backend = {settings.default_backend!r}: the storage actor "
                "stores tables, which this format cannot hold; choose hdf5, arrow, parquet, "
                "csv or zarr"
            )
        sources = {v.key: v.source for v in config.sources() if v.source != "default"}
        options = writer_options(writer_class, settings, sources=sources)
        self._output = Output(writer_class, options, settings.local_output_dir, settings.experiment)
        self._auto_flush_s = float(settings.auto_flush_interval_secs)
        self._bounds = (max_messages, max_bytes)
        Mailbox(max_messages, max_bytes)  # the bounds checked now, not at start
        self._mailbox: Mailbox[_Envelope] | None = None
        self._worker: Worker | None = None
        self._task: asyncio.Task[None] | None = None
        self._state = "new"  # new, running, stopping, stopped, failed
        self._failure: BaseException | None = None
        #: The first told message that failed and was not reported yet: error, what, seq.
        self._told_error: tuple[DaqStorageError, str, int] | None = None
        self._sent = 0
        self._told_failed = 0

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    async def start(
        cls,
        config: StorageConfig | None = None,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        mode: Literal["thread", "process"] = "thread",
    ) -> StorageActor:
        """A started actor (see the class for the arguments)."""
        actor = cls(config, max_messages=max_messages, max_bytes=max_bytes, mode=mode)
        actor._start()
        return actor

    def _start(self) -> None:
        if self._state != "new":
            raise ActorStopped(f"storage actor already {self._state}: start a new one")
        loop = asyncio.get_running_loop()  # (outside a loop: refused before anything starts)
        self._mailbox = Mailbox(*self._bounds)
        self._worker = (
            ProcessWorker(self._output) if self._mode == "process" else ThreadWorker(self._output)
        )
        self._task = loop.create_task(self._run(), name="storage actor")
        self._state = "running"

    async def __aenter__(self) -> Self:
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.stop()
            return
        try:
            await self.stop()
        except DaqStorageError as error:  # the exception in the block is the one raised
            log.warning("storage actor: stopping after an error in its block: %s", error)

    async def stop(self) -> None:
        """Handle every message queued before, flush and close the output; idempotent.

        Raises:
            DaqStorageError: closing failed, or a told message failed and no call has
                reported it yet (the output is closed all the same).
        """
        if self._state == "new":
            self._state = "stopped"
            return
        if self._state == "running":
            self._state = "stopping"
            assert self._mailbox is not None
            done = asyncio.get_running_loop().create_future()
            if await self._mailbox.put(_Envelope(None, done, "stop"), 0):
                with contextlib.suppress(DaqStorageError):
                    await asyncio.shield(done)
        if self._task is not None:
            with contextlib.suppress(Exception):  # its failure is reported below
                await asyncio.shield(self._task)
        if self._state == "failed":
            raise ActorStopped(f"storage actor failed: {self._failure}") from self._failure
        self._raise_told("stop()")

    # ------------------------------------------------------------------ messages
    @overload
    async def call(self, message: GetStats) -> StorageStats: ...
    @overload
    async def call(
        self, message: WriteBatch | SetMetadata | SetInstrumentMetadata | Flush
    ) -> None: ...
    async def call(self, message: Message) -> StorageStats | None:
        """Send ``message`` and wait for its reply: a :class:`StorageStats` for
        :class:`GetStats`, ``None`` for the others (done: stored, flushed).

        Waits first for room in the mailbox when it is full.

        Raises:
            DaqStorageError: the message's own error (InvalidName, SchemaMismatch,
                UnsupportedData, StorageIOError, ...); the actor goes on. Else the error of
                a told message sent before this one and not reported yet (see
                :meth:`tell`), chained; this message was handled all the same.
            ActorStopped: the actor has stopped, or failed (the cause chained).
        """
        description = self._check_message(message)
        reply = asyncio.get_running_loop().create_future()
        envelope = _Envelope(message, reply, description)
        await self._send(envelope, message)
        result = await reply
        self._raise_told(f"call({description})", before=envelope.seq)
        return result  # type: ignore[no-any-return]

    async def tell(self, message: Message) -> None:
        """Send ``message`` without waiting for it to be handled: returns once it is in
        the mailbox (waiting for room when it is full, so a sender never outruns the
        disk by more than the mailbox holds).

        Its error, if any, is logged and raised, chained, by the first :meth:`call` sent
        after it (once that call's own message was handled), or by :meth:`stop`.

        Raises:
            ActorStopped: the actor has stopped or failed.
        """
        description = self._check_message(message)
        await self._send(_Envelope(message, None, description), message)

    @property
    def mailbox(self) -> MailboxStats:
        """The mailbox's counters now and at their peak, and its bounds."""
        if self._mailbox is None:
            messages, max_bytes = self._bounds
            return MailboxStats(0, 0, 0, 0, messages, max_bytes)
        return self._mailbox.stats

    @property
    def running(self) -> bool:
        """Started, and neither stopping, stopped nor failed."""
        return self._state == "running"

    def _check_message(self, message: object) -> str:
        if not isinstance(message, MESSAGE_TYPES):
            raise UnsupportedData(
                "the storage actor takes WriteBatch, SetMetadata, SetInstrumentMetadata, "
                f"Flush and GetStats messages, got {type(message).__name__}"
            )
        self._check_running()
        return _describe(message)

    def _check_running(self) -> None:
        if self._state == "running":
            return
        if self._state == "failed":
            raise ActorStopped(f"storage actor failed: {self._failure}") from self._failure
        raise ActorStopped(f"storage actor is {self._state}: messages are no longer taken")

    async def _send(self, envelope: _Envelope, message: Message) -> None:
        assert self._mailbox is not None
        if not await self._mailbox.put(envelope, message_cost(message)):
            self._check_running()
            raise ActorStopped("storage actor stopped while the message waited for room")
        self._sent += 1  # the mailbox is first in, first out: this is its place in line
        envelope.seq = self._sent

    def _raise_told(self, where: str, before: float = float("inf")) -> None:
        """Raise the first unreported told error, if it came from a message sent before
        ``before`` (a call reports only what was handled before its own message)."""
        told = self._told_error
        if told is None or told[2] > before:
            return
        self._told_error = None
        error, description, _ = told
        count, self._told_failed = self._told_failed, 0
        more = f"; {count - 1} more failed after it (logged)" if count > 1 else ""
        raise _again(error, f"the told {description} failed: {error} (reported by {where}{more})")

    # ------------------------------------------------------------------ the loop
    # Each message goes to the worker thread as soon as the loop takes it from the
    # mailbox: the worker's own queue (a one-thread executor, first in first out) keeps
    # the order, and the worker goes from one message to the next without waiting for
    # the loop, whose thread may be slow to get a core on a busy machine. A message
    # leaves the mailbox's counts when the worker is done with it.
    async def _in_worker(self, op: Op, *args: Any) -> Any:
        assert self._worker is not None
        return await asyncio.wrap_future(self._worker.submit(op, *args))

    def _submit(self, envelope: _Envelope, cost: int) -> None:
        assert self._worker is not None
        assert envelope.message is not None
        assert self._worker is not None
        job = asyncio.wrap_future(self._worker.submit("handle", envelope.message))
        job.add_done_callback(functools.partial(self._handled, envelope, cost))

    def _handled(self, envelope: _Envelope, cost: int, job: asyncio.Future[Any]) -> None:
        assert self._mailbox is not None
        self._mailbox.release(cost)
        reply = envelope.reply
        if job.cancelled():  # the loop is going away: the caller hears it
            if reply is not None and not reply.done():
                reply.set_exception(ActorStopped("storage actor stopped before the reply"))
            return
        error = job.exception()
        if error is None:
            if reply is not None and not reply.done():
                reply.set_result(job.result())
            return
        if not isinstance(error, DaqStorageError):  # Core.handle raises no other
            error = _again(error, f"{envelope.description}: {type(error).__name__}: {error}")
        if isinstance(error, ActorStopped) and self._state in ("running", "stopping"):
            # The writer process died: nothing more can be stored; senders hear it.
            self._state, self._failure = "failed", error
            log.error("storage actor failed: %s", error)
            for left in self._mailbox.close():
                if left.reply is not None and not left.reply.done():
                    left.reply.set_exception(ActorStopped(f"storage actor failed: {error}"))
        if reply is None:
            self._told(error, envelope.description, envelope.seq)
        elif not reply.done():
            reply.set_exception(error)

    async def _run(self) -> None:
        mailbox = self._mailbox
        assert mailbox is not None
        loop = asyncio.get_running_loop()
        flush_at: float | None = None  # auto flush: when the oldest unflushed write is due
        try:
            while self._state != "failed":
                if flush_at is not None and loop.time() >= flush_at:
                    flush_at = None
                    self._submit_auto_flush()
                    continue
                timeout = None if flush_at is None else flush_at - loop.time()
                taken = await mailbox.get(timeout)
                if taken is None:
                    continue  # the auto flush is due
                envelope, cost = taken
                message = envelope.message
                if message is None:  # stop: after every message before it
                    await self._close(envelope)
                    mailbox.release(cost)
                    return
                self._submit(envelope, cost)
                if isinstance(message, Flush):
                    flush_at = None
                elif (
                    self._auto_flush_s > 0
                    and flush_at is None
                    and not isinstance(message, GetStats)
                ):
                    flush_at = loop.time() + self._auto_flush_s
        except BaseException as exc:
            self._state = "failed"
            self._failure = exc
            log.exception("storage actor failed")
            with contextlib.suppress(BaseException):
                await self._in_worker("close")
            raise
        finally:
            if self._state != "failed":
                self._state = "stopped"
            for left in mailbox.close():
                if left.reply is not None and not left.reply.done():
                    left.reply.set_exception(ActorStopped(f"storage actor is {self._state}"))
            if self._worker is not None:  # joins a thread or a process: not on the loop
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self._worker.stop)

    def _told(self, exc: DaqStorageError, description: str, seq: int | None = None) -> None:
        """A failure no caller waits for: logged, kept for the next call or stop()."""
        log.error("storage actor: told %s failed: %s", description, exc)
        if self._told_error is None:
            self._told_error = (exc, description, self._sent if seq is None else seq)
        self._told_failed += 1

    def _submit_auto_flush(self) -> None:
        assert self._worker is not None
        job = asyncio.wrap_future(self._worker.submit("flush"))
        description = f"auto flush (every {self._auto_flush_s:g} s)"

        def done(job: asyncio.Future[Any]) -> None:
            error = None if job.cancelled() else job.exception()
            if isinstance(error, DaqStorageError):
                self._told(error, description)

        job.add_done_callback(done)

    async def _close(self, envelope: _Envelope) -> None:
        try:
            await self._in_worker("close")
        except DaqStorageError as exc:
            self._told(exc, "stop (flush and close)")
        assert envelope.reply is not None
        if not envelope.reply.done():
            envelope.reply.set_result(None)
