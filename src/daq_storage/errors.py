"""Every error daq-storage raises on purpose.

One root, :class:`DaqStorageError`; each leaf also inherits the builtin a caller
would naturally catch (``except ValueError`` still works for a bad config value).
Messages name the file, stream, column, key or value at fault.
"""

from __future__ import annotations

__all__ = [
    "ActorStopped",
    "ConfigError",
    "DaqStorageError",
    "DocumentError",
    "ServiceError",
    "FormatError",
    "InvalidName",
    "ReadError",
    "RingBusy",
    "RingCorrupt",
    "RingError",
    "RingExists",
    "RingFull",
    "RingNotFound",
    "RingNotTrusted",
    "RunNotFound",
    "SchemaMismatch",
    "StorageIOError",
    "UnknownStream",
    "UnsupportedData",
    "WriterBusy",
    "WriterClosedError",
]


class DaqStorageError(Exception):
    """Root of every error raised by daq-storage."""


class ConfigError(DaqStorageError, ValueError):
    """A configuration key or an argument is unknown, of the wrong type or out of range
    (a ring's geometry, a simulator's rate, a timeout, ...)."""


class InvalidName(DaqStorageError, ValueError):
    """A stream, experiment or file name cannot be made safe (empty, NUL, ...)."""


class RingError(DaqStorageError):
    """Base of ring-buffer errors."""


class RingFull(RingError, BufferError):
    """``overflow="block"``: the slowest consumer did not free space within the timeout,
    or a record is larger than the ring can ever hold."""


class RingCorrupt(RingError, ValueError):
    """The ring file's header or a record header is invalid (magic, version, geometry,
    length out of bounds, ...)."""


class RingBusy(RingError, BlockingIOError):
    """The ring is in use: another live process holds its single writer lock, or a
    ring cannot be replaced while a writer or reader is attached to it."""


class RingExists(RingError, FileExistsError):
    """A ring (or another file) already exists where a new ring was to be created."""


class RingNotFound(RingError, FileNotFoundError):
    """No ring file where one was to be opened."""


class RingNotTrusted(RingError, PermissionError):
    """The ring file may have been made or changed by another user: it is owned by
    someone other than this user or root, group or others may write it, or its path is
    a symbolic link. ``trust_foreign=True`` accepts it on purpose (a shared account)."""


class SchemaMismatch(DaqStorageError, TypeError):
    """Data does not match what a stream already holds (column type, frame dtype/shape)."""


class UnsupportedData(DaqStorageError, TypeError):
    """The destination cannot hold this kind of data (frames into CSV, an Arrow type
    that has no mapping, ...)."""


class UnknownStream(DaqStorageError, KeyError):
    """A writer was asked about a stream nothing was written to."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class WriterClosedError(DaqStorageError, RuntimeError):
    """An operation was attempted on a closed writer, ring or reader."""


class WriterBusy(DaqStorageError, RuntimeError):
    """A writer was called from a second thread while another thread was inside it.

    A writer is used from one thread at a time: guard it with a lock of your own, or
    give each thread its own writer (each on its own output).
    """


class FormatError(DaqStorageError, RuntimeError):
    """A format library refused an operation for a reason other than I/O (an HDF5
    object header too large for an attribute, ...); the message is the library's."""


class StorageIOError(DaqStorageError, OSError):
    """Writing to disk failed (unwritable directory, disk full, file-size limit, ...).

    ``errno`` and ``filename`` are set when the underlying OS error had them.
    """


class RunNotFound(DaqStorageError, FileNotFoundError):
    """No run at a path: no file, store or directory this project writes (or one whose
    format cannot be told), or a rotated run none of whose files is there."""


class ReadError(DaqStorageError, ValueError):
    """A run's file cannot be read back as this project wrote it (truncated beyond
    repair, a layout this version does not know); the message names the file."""


class ActorStopped(DaqStorageError, RuntimeError):
    """A message was sent to a :class:`~daq_storage.actor.StorageActor` that has stopped
    or failed; the message names the cause when it failed."""


class DocumentError(DaqStorageError, ValueError):
    """A bluesky document cannot be stored: malformed (it fails event-model's schema),
    out of order (an event before its descriptor, an unknown run or descriptor), or
    pointing at external data that cannot be read; the message names the document's
    kind and uid."""


class ServiceError(DaqStorageError, RuntimeError):
    """A request to the ring's Flight service failed: refused (no or a wrong token, a
    stream the ring does not hold, writing to a service that does not own the ring's
    writer) or the service cannot be reached; the message names the service and cause."""


def describe_value(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message: at most ``limit`` characters, and never an
    error itself (an int with more digits than Python prints, a ``__repr__`` that raises)."""
    try:
        text = repr(value)
    except Exception:  # whatever a hostile __repr__ raises, say something
        if isinstance(value, int):
            return f"an integer of {value.bit_length()} bits"
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
