"""The actor's mailbox: a FIFO bounded by messages and by bytes, in asyncio."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

from daq_storage.actor._messages import MailboxStats
from daq_storage.errors import ConfigError, describe_value

__all__ = ["Mailbox"]

T = TypeVar("T")


def _bound(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {describe_value(value)}")
    return value


class Mailbox(Generic[T]):
    """Messages in order, at most ``max_messages`` of them and ``max_bytes`` of their
    cost at once; a message counts from :meth:`put` until :meth:`release` (while it is
    handled too), so the bounds cover everything the actor holds.

    :meth:`put` waits for room, first come first served (a large message is not
    overtaken by small ones). A message larger than ``max_bytes`` alone is admitted
    once the mailbox is empty, so nothing waits forever. Used from the event loop's
    thread only.
    """

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = _bound(max_messages, "max_messages")
        self.max_bytes = _bound(max_bytes, "max_bytes")
        self._items: deque[tuple[T, int]] = deque()
        self._messages = 0
        self._bytes = 0
        self._peak_messages = 0
        self._peak_bytes = 0
        #: Senders waiting for room, in order: their future, item and cost.
        self._waiting: deque[tuple[asyncio.Future[bool], T, int]] = deque()
        self._not_empty = asyncio.Event()
        self._closed = False

    def _fits(self, cost: int) -> bool:
        if self._messages == 0:
            return True
        return self._messages < self.max_messages and self._bytes + cost <= self.max_bytes

    def _admit(self, item: T, cost: int) -> None:
        self._items.append((item, cost))
        self._messages += 1
        self._bytes += cost
        self._peak_messages = max(self._peak_messages, self._messages)
        self._peak_bytes = max(self._peak_bytes, self._bytes)
        self._not_empty.set()

    def _wake(self) -> None:
        """Admit the senders at the head of the line while they fit."""
        while self._waiting and self._fits(self._waiting[0][2]):
            future, item, cost = self._waiting.popleft()
            if not future.done():  # (a cancelled sender is skipped)
                self._admit(item, cost)
                future.set_result(True)

    async def put(self, item: T, cost: int) -> bool:
        """Append ``item`` (counted as ``cost`` bytes) once there is room for it; ``False``
        (nothing appended) once the mailbox is closed."""
        if self._closed:
            return False
        if not self._waiting and self._fits(cost):
            self._admit(item, cost)
            return True
        admitted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiter = (admitted, item, cost)
        self._waiting.append(waiter)
        try:
            return await admitted
        except asyncio.CancelledError:
            if waiter in self._waiting:  # not admitted: those behind it may fit now
                self._waiting.remove(waiter)
                self._wake()
            raise

    async def get(self, timeout: float | None = None) -> tuple[T, int] | None:
        """The next item and its cost, or ``None`` after ``timeout`` seconds without one
        (at once once closed). The item stays counted until :meth:`release`."""
        if not self._items and not self._closed:
            self._not_empty.clear()
            try:
                await asyncio.wait_for(self._not_empty.wait(), timeout)
            except TimeoutError:
                return None
        return self._items.popleft() if self._items else None  # (None: closed)

    def release(self, cost: int) -> None:
        """An item taken by :meth:`get` is done: its room is free again."""
        self._messages -= 1
        self._bytes -= cost
        self._wake()

    def close(self) -> list[T]:
        """Admit nothing more (waiting and later :meth:`put` calls return ``False``) and
        take every item still queued, for the actor to refuse."""
        self._closed = True
        items = [item for item, _ in self._items]
        for _, cost in self._items:
            self._messages -= 1
            self._bytes -= cost
        self._items.clear()
        self._not_empty.set()  # a get() waiting returns None
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_result(False)
        return items

    @property
    def stats(self) -> MailboxStats:
        return MailboxStats(
            messages=self._messages, bytes=self._bytes, peak_messages=self._peak_messages,
            peak_bytes=self._peak_bytes, max_messages=self.max_messages,
            max_bytes=self.max_bytes,
        )  # fmt: skip
