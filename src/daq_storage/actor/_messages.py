"""What a :class:`~daq_storage.actor.StorageActor` is sent and what it answers (seed 003's
messages, as frozen dataclasses checked when they are made)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from daq_storage.errors import InvalidName, UnsupportedData, describe_value
from daq_storage.naming import sanitize_name

__all__ = [
    "Flush",
    "GetStats",
    "MailboxStats",
    "Message",
    "SetInstrumentMetadata",
    "SetMetadata",
    "StorageStats",
    "WriteBatch",
    "message_cost",
]

#: What a message other than a batch is counted as in the mailbox's byte bound (its
#: text is added): the dataclass, its future and its place in the queue.
MESSAGE_OVERHEAD = 256

_BYTES = (bytes, bytearray, memoryview)


def _instrument_id(value: object, message: str) -> str:
    """``value`` if it is a usable group / file name as it is, else InvalidName.

    The name is used as given (it is the stream's name and its ``instrument_id``
    attribute): one that would have to be changed to be safe (``../x``, ``a b``, a NUL)
    is refused rather than renamed, so two instruments never end up in one group.
    """
    if not isinstance(value, str):
        raise InvalidName(
            f"{message}: instrument_id must be a str, got {type(value).__name__} "
            f"{describe_value(value)}"
        )
    safe = sanitize_name(value, what=f"{message}: instrument_id")  # InvalidName if unusable
    if safe != value:
        raise InvalidName(
            f"{message}: instrument_id {describe_value(value)} is not a safe name (letters, "
            f"digits, _ - and single inner dots; no leading _ or dot); "
            f"use {safe!r} for instance"
        )
    return value


def _key(value: object, message: str) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidName(
            f"{message}: key must be a non-empty str without NUL, got {describe_value(value)}"
        )
    return value


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """Append rows to the stream ``instrument_id`` (a group of the HDF5 file).

    ``batch`` is Arrow IPC bytes (``bytes``, ``bytearray``, ``memoryview`` or a
    ``pyarrow.Buffer``), in the stream or the file format (as seed 003 sends them; every
    record batch they hold is written, as one write), or a ``pyarrow.RecordBatch`` /
    ``Table``.

    Raises:
        InvalidName: ``instrument_id`` is not a str, is empty, holds NUL, or is not a safe
            name as it is (``../x``).
        UnsupportedData: ``batch`` is neither bytes nor an Arrow batch or table.
    """

    batch: bytes | bytearray | memoryview | pa.Buffer | pa.RecordBatch | pa.Table
    instrument_id: str

    def __post_init__(self) -> None:
        _instrument_id(self.instrument_id, "WriteBatch")
        if not isinstance(self.batch, (*_BYTES, pa.Buffer, pa.RecordBatch, pa.Table)):
            raise UnsupportedData(
                f"WriteBatch for {self.instrument_id!r}: batch must be Arrow IPC bytes (or a "
                "pyarrow.Buffer of them), a pyarrow.RecordBatch or a pyarrow.Table, got "
                f"{type(self.batch).__name__}"
            )


@dataclass(frozen=True, slots=True)
class SetMetadata:
    """Store ``key = value`` on the file (an attribute of the HDF5 root).

    Raises:
        InvalidName: ``key`` is not a non-empty str without NUL.
    """

    key: str
    value: Any

    def __post_init__(self) -> None:
        _key(self.key, "SetMetadata")


@dataclass(frozen=True, slots=True)
class SetInstrumentMetadata:
    """Store ``key = value`` on the stream ``instrument_id`` (its group's attribute).

    Raises:
        InvalidName: ``instrument_id`` as for :class:`WriteBatch`, or ``key`` is not a
            non-empty str without NUL.
    """

    instrument_id: str
    key: str
    value: Any

    def __post_init__(self) -> None:
        _instrument_id(self.instrument_id, "SetInstrumentMetadata")
        _key(self.key, "SetInstrumentMetadata")


@dataclass(frozen=True, slots=True)
class Flush:
    """Make every row written so far visible to a reader opening the file;
    ``durable=True`` also syncs it to the disk (fsync)."""

    durable: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.durable, bool):
            raise UnsupportedData(f"Flush: durable must be True or False, got {self.durable!r}")


@dataclass(frozen=True, slots=True)
class GetStats:
    """Ask for a :class:`StorageStats` snapshot."""


Message = WriteBatch | SetMetadata | SetInstrumentMetadata | Flush | GetStats
MESSAGE_TYPES = (WriteBatch, SetMetadata, SetInstrumentMetadata, Flush, GetStats)


@dataclass(frozen=True, slots=True)
class StorageStats:
    """What the actor has stored (seed 003's fields), as of the moment it was asked."""

    #: ``WriteBatch`` messages stored (one IPC message of several batches counts once).
    batches_written: int
    #: Arrow payload bytes handed to the writer (before compression).
    bytes_written: int
    #: Size of the current output on disk (0 before the first write).
    file_size: int
    #: Columns stored over every stream (in HDF5: one dataset each, validity masks not
    #: counted); a stream continued in a new part counts the columns of its current part.
    num_datasets: int
    #: The current output (``None`` until the first message that stores something).
    file_path: Path | None


@dataclass(frozen=True, slots=True)
class MailboxStats:
    """The mailbox now and at its fullest: messages waiting or being handled, their
    bytes, and the bounds."""

    messages: int
    bytes: int
    peak_messages: int
    peak_bytes: int
    max_messages: int
    max_bytes: int


def message_cost(message: Message) -> int:
    """Bytes ``message`` is counted as in the mailbox: a batch's bytes, else an overhead
    plus its text."""
    if isinstance(message, WriteBatch):
        data = message.batch
        if isinstance(data, memoryview):
            return data.nbytes
        if isinstance(data, (bytes, bytearray)):
            return len(data)
        if isinstance(data, pa.Buffer):
            return int(data.size)
        return int(data.get_total_buffer_size())
    if isinstance(message, SetMetadata | SetInstrumentMetadata):
        value = message.value
        size = len(value) if isinstance(value, str | bytes) else len(repr(value))
        return MESSAGE_OVERHEAD + len(message.key) + size
    return MESSAGE_OVERHEAD
