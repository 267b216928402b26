"""What every writer checks before it touches a file: who uses it (one process per
output, one thread at a time), metadata keys and values, and frame ids.

**One process per output.** A writer holds an exclusive ``flock`` on its output
directory (per-stream formats, see :func:`lock_directory`) while it is open; a second
writer, in this process or another, is refused with ``StorageIOError`` (``EBUSY``)
naming the holder's pid where ``/proc/locks`` tells it. The kernel drops the lock when
the holder dies, so a killed writer never blocks the next run.

**One thread at a time.** A writer is used from one thread at a time. Every public
method of a :class:`~daq_storage.writers.Writer` subclass is wrapped (see
:func:`guard_public_methods`) so that a second thread entering while the first is
inside raises :class:`WriterBusy` instead of interleaving rows; a thread may re-enter
(a method calling another), and the writers' own pool threads never call them. A
``MemoryError`` inside one becomes :class:`UnsupportedData` naming the writer, the
method and the stream.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import inspect
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from daq_storage.errors import (
    InvalidName,
    SchemaMismatch,
    StorageIOError,
    UnsupportedData,
    WriterBusy,
)

__all__ = [
    "EntryGuard",
    "WriterBusy",
    "check_metadata_key",
    "check_metadata_value",
    "directory_held",
    "frame_ids",
    "guard_public_methods",
    "guarded",
    "lock_directory",
]

_F = TypeVar("_F", bound=Callable[..., Any])


# ---------------------------------------------------------------------- threads
class EntryGuard:
    """Who is inside a writer: a non-blocking lock, re-entrant for its holder."""

    __slots__ = ("_depth", "_lock", "_owner", "_owner_name")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._owner_name = ""
        self._depth = 0

    def enter(self, describe: Callable[[], str]) -> None:
        me = threading.get_ident()
        if self._owner == me:  # only the holder ever stores its own ident here
            self._depth += 1
            return
        if not self._lock.acquire(blocking=False):
            raise WriterBusy(
                f"{describe()} was called from thread {threading.current_thread().name!r} "
                f"while thread {self._owner_name!r} is inside the writer; a writer is used "
                "from one thread at a time (guard it with a lock, or give each thread a "
                "writer of its own)"
            )
        self._owner, self._owner_name, self._depth = me, threading.current_thread().name, 1

    def leave(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            self._lock.release()


#: Public methods whose first argument is a stream name.
_STREAM_FIRST = frozenset(
    {"write_batch", "write_frames", "check_batch", "visible", "accepted", "describe"}
)


def guarded(method: _F) -> _F:
    """``method`` entered through the writer's :class:`EntryGuard` (``self._entry``);
    its stream name is checked to be text, and ``set_metadata``'s key and value too
    (:func:`check_metadata_key`, :func:`check_metadata_value`), before any format sees
    them. A ``MemoryError`` becomes :class:`UnsupportedData` naming the call."""
    name = method.__name__
    checks_key = name == "set_metadata"
    stream_first = name in _STREAM_FIRST

    @functools.wraps(method)
    def entered(self: Any, *args: Any, **kwargs: Any) -> Any:
        entry: EntryGuard | None = self.__dict__.get("_entry")
        if entry is None:  # before Writer.__init__ ran
            return method(self, *args, **kwargs)

        def describe() -> str:
            return f"{getattr(self, 'name', type(self).__name__)} writer for " \
                   f"{getattr(self, 'path', '?')}: {name}()"  # fmt: skip

        entry.enter(describe)
        stream = kwargs.get("stream", args[0] if stream_first and args else None)
        try:
            if stream_first and (args or "stream" in kwargs):
                _check_stream_type(stream)
            elif checks_key:
                if stream is not None:
                    _check_stream_type(stream)
                if args or "key" in kwargs:
                    key = args[0] if args else kwargs["key"]
                    check_metadata_key(key, stream)
                    if len(args) > 1 or "value" in kwargs:
                        check_metadata_value(args[1] if len(args) > 1 else kwargs["value"],
                                             key, stream)  # fmt: skip
            return method(self, *args, **kwargs)
        except MemoryError as exc:
            on = "" if stream is None else f" on stream {_short(stream)}"
            raise UnsupportedData(
                f"{describe()}{on} ran out of memory ({exc or 'MemoryError'}); the call was "
                "refused (write smaller batches or frames)"
            ) from None
        finally:
            entry.leave()

    entered.__daq_guarded__ = True  # type: ignore[attr-defined]
    return entered  # type: ignore[return-value]


def guard_public_methods(cls: type) -> None:
    """Wrap every public method ``cls`` defines itself with :func:`guarded`."""
    for attribute, member in list(vars(cls).items()):
        if (
            attribute.startswith("_")
            or not inspect.isfunction(member)
            or getattr(member, "__daq_guarded__", False)
        ):
            continue
        setattr(cls, attribute, guarded(member))


def _check_stream_type(stream: Any) -> None:
    if not isinstance(stream, str):
        raise InvalidName(
            f"stream name must be a string, got {type(stream).__name__} {_short(stream)}"
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


# ---------------------------------------------------------------------- metadata
#: Schema-metadata keys that a format or a reader gives a meaning of its own: Arrow's
#: (``ARROW:schema`` in Parquet, extension types), Parquet's, pandas' DataFrame
#: description, polars' ``_PL_`` keys, netCDF/xarray's attributes, and the writers' own
#: records of metadata changes and of a stream's parts (``parts``, ``part_of``,
#: ``daq_storage.*``). A value under one of them makes readers fail or misread
#: the whole file.
RESERVED_KEYS = frozenset({
    "pandas", "metadata_changes", "_ARRAY_DIMENSIONS", "_FillValue", "_NCProperties",
    "_Netcdf4Dimid", "_Netcdf4Coordinates", "DIMENSION_LIST", "REFERENCE_LIST",
    "parts", "part_of",
})  # fmt: skip
RESERVED_PREFIXES = ("ARROW:", "PARQUET:", "_PL_", "daq_storage.")
#: Deeper metadata values are refused: every format stores them as JSON, whose
#: encoders and decoders recurse once per level.
MAX_METADATA_DEPTH = 100


def check_metadata_key(key: Any, stream: Any = None) -> None:
    """Refuse a metadata key every format cannot store as it is: not a string, empty,
    holding NUL, not encodable as UTF-8 (Arrow and Parquet keys are UTF-8 bytes), or
    reserved by a format or reader (:data:`RESERVED_KEYS`, :data:`RESERVED_PREFIXES`).

    Raises:
        InvalidName: naming the key (and the stream it was meant for).
    """
    where = "" if stream is None else f" (stream {_short(stream)})"
    if not isinstance(key, str):
        raise InvalidName(f"metadata key {key!r}{where} must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidName(f"metadata key{where} must not be empty")
    if "\x00" in key:
        raise InvalidName(f"metadata key {key!r}{where} contains a NUL character")
    if not _is_text(key):
        raise InvalidName(f"metadata key {key!r}{where} is not valid Unicode text")
    if key in RESERVED_KEYS or key.startswith(RESERVED_PREFIXES):
        raise InvalidName(
            f"metadata key {key!r}{where} is reserved: Arrow, Parquet, pandas, polars, "
            "xarray or daq-storage itself give it a meaning of their own; choose another key"
        )


def check_metadata_value(value: Any, key: str, stream: Any = None) -> None:
    """Refuse a metadata value no format can store: text (also in lists, dicts, their
    keys, numpy string or object arrays) that is not valid Unicode (a lone surrogate
    has no UTF-8 form), or nesting deeper than :data:`MAX_METADATA_DEPTH` (also a
    container that holds itself). Other values are the format's to judge.

    Raises:
        UnsupportedData: naming the key (and the stream it was meant for).
    """
    where = "" if stream is None else f" (stream {_short(stream)})"
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if not _is_text(item):
                raise UnsupportedData(
                    f"metadata {key!r}{where}: {_short(item)} is not valid Unicode text "
                    "(no UTF-8 form); no format can store it"
                )
            continue
        if isinstance(item, np.ndarray):
            if item.dtype.kind == "U":
                pending.extend((text, depth) for text in item.ravel().tolist())
                continue
            if item.dtype.kind != "O":
                continue
            children: list[Any] = item.ravel().tolist()
        elif isinstance(item, dict):
            children = [part for pair in item.items() for part in pair]
        elif isinstance(item, list | tuple | set | frozenset):
            children = list(item)
        else:
            continue
        if depth >= MAX_METADATA_DEPTH:
            raise UnsupportedData(
                f"metadata {key!r}{where}: the value is nested more than {MAX_METADATA_DEPTH} "
                "levels deep (or holds itself); store it flatter"
            )
        pending.extend((child, depth + 1) for child in children)


def _is_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------------- frame ids
_ID_RULE = {
    "frame_numbers": "integers from 0 to 2**64 - 1",
    "timestamps_ns": "integer nanoseconds since the Unix epoch (or numpy datetime64), from 0",
}
_LATEST_NS = np.iinfo(np.int64).max


def frame_ids(values: Any, count: int, *, stream: str, label: str) -> npt.NDArray[np.uint64]:
    """``frame_numbers`` or ``timestamps_ns`` of ``count`` frames as ``uint64``, validated,
    never converted: integers (Python or numpy) in range, and ``datetime64`` for times.

    Raises:
        SchemaMismatch: naming the stream, the argument and the first bad value.
    """
    rule = _ID_RULE[label]
    try:
        array = np.asarray(values)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SchemaMismatch(f"stream {stream!r}: {label} must be {rule} ({exc})") from None
    if array.shape != (count,):
        raise SchemaMismatch(
            f"stream {stream!r}: {label} has shape {array.shape}, expected ({count},)"
        )
    if array.dtype.kind == "M" and label == "timestamps_ns":
        array = _datetimes_as_ns(array, stream)
    if array.dtype.kind == "f" and not isinstance(values, np.ndarray):
        # numpy makes floats of Python ints past int64 mixed with others: look again.
        array = np.asarray(values, dtype=object)
    if array.dtype.kind == "O":
        array = _python_ints(array, stream, label, rule)
    elif array.dtype.kind not in "iu":
        example = array[0] if count else ""
        raise SchemaMismatch(
            f"stream {stream!r}: {label} holds {array.dtype} values (such as {example!r}); "
            f"ids are {rule}"
        )
    if count:
        low, high = int(array.min()), int(array.max())
        if low < 0:
            raise SchemaMismatch(f"stream {stream!r}: {label} holds {low}; ids are {rule}")
        if label == "timestamps_ns" and high > _LATEST_NS:
            raise SchemaMismatch(
                f"stream {stream!r}: timestamps_ns holds {high}, later than any int64 "
                "nanoseconds since the epoch (year 2262) that readers decode as a date"
            )
    return array.astype(np.uint64, copy=False)


def _datetimes_as_ns(array: npt.NDArray[Any], stream: str) -> npt.NDArray[Any]:
    if np.isnat(array).any():
        raise SchemaMismatch(f"stream {stream!r}: timestamps_ns holds NaT (no time)")
    as_ns = array.astype("datetime64[ns]")
    if not np.array_equal(as_ns.astype(array.dtype), array):
        raise SchemaMismatch(
            f"stream {stream!r}: timestamps_ns holds a time that nanoseconds since the epoch "
            "cannot hold (before 1678 or after 2262)"
        )
    return as_ns.view(np.int64)


def _python_ints(array: npt.NDArray[Any], stream: str, label: str, rule: str) -> npt.NDArray[Any]:
    """Python ints too large for int64 (numpy keeps them as objects), checked one by one."""
    for value in array.tolist():
        if not isinstance(value, int | np.integer) or isinstance(value, bool | np.bool_):
            raise SchemaMismatch(
                f"stream {stream!r}: {label} holds {value!r} ({type(value).__name__}); "
                f"ids are {rule}"
            )
        if not 0 <= int(value) < 2**64:
            raise SchemaMismatch(f"stream {stream!r}: {label} holds {value}; ids are {rule}")
    return np.array([int(v) for v in array.tolist()], dtype=np.uint64)


# ---------------------------------------------------------------------- processes
def lock_directory(folder: Path) -> int:
    """Take the exclusive lock of a writer's output directory; its file descriptor (close
    it to release), or -1 where the filesystem has no locks.

    Raises:
        StorageIOError: ``EBUSY``, another writer holds the lock (its pid named when known).
    """
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StorageIOError(exc.errno, f"cannot open output directory: {exc.strerror}",
                             str(folder)) from exc  # fmt: skip
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise StorageIOError(
            errno.EBUSY,
            f"{folder} is being written by another writer{holder}; two writers never share "
            "an output (write to another directory, or wait until it is closed)",
            str(folder),
        ) from None
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return -1  # no locks here (some network filesystems): O_EXCL still protects files
        raise StorageIOError(exc.errno, f"cannot lock output directory: {exc.strerror}",
                             str(folder)) from exc  # fmt: skip
    return fd


@contextmanager
def directory_held(folder: Path, action: str) -> Iterator[None]:
    """Hold ``folder``'s writer lock while repairing a file in it: no writer is using it.

    Raises:
        StorageIOError: ``EBUSY``, a writer holds it (``action`` says what was refused).
    """
    try:
        fd = lock_directory(folder)
    except StorageIOError as exc:
        if exc.errno != errno.EBUSY:
            raise
        raise StorageIOError(
            errno.EBUSY, f"cannot {action}: {exc.strerror}", exc.filename
        ) from None
    try:
        yield
    finally:
        if fd >= 0:
            os.close(fd)


def _lock_holder(fd: int) -> str:
    """`` (pid N)`` for the process holding the flock on ``fd``'s file, from /proc/locks."""
    status = os.fstat(fd)
    key = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK" or fields[5] != key:
            continue
        pid = int(fields[4]) if fields[4].isdigit() else 0
        if pid == os.getpid():
            return f" (this process, pid {pid})"
        return f" (pid {pid})" if pid > 0 else ""
    return ""
