"""The writer interface every format implements."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.config import StorageSettings
from daq_storage.errors import (
    InvalidName,
    SchemaMismatch,
    StorageIOError,
    UnsupportedData,
    WriterClosedError,
)
from daq_storage.naming import sanitize_name
from daq_storage.schema import FrameBlock, join_frames

__all__ = [
    "FrameBlock",
    "Writer",
    "WriterStats",
    "finish_all",
    "join_frames",
    "json_value",
    "pwrite_all",
    "storage_errors",
]


@dataclass
class WriterStats:
    """What a writer has done so far."""

    batches: int = 0
    rows: int = 0
    frames: int = 0
    bytes_written: int = 0  # payload bytes handed to the format (before compression)
    file_size: int = 0  # bytes on disk now
    files: list[Path] = field(default_factory=list)


def finish_all(steps: Iterable[Callable[[], object]]) -> None:
    """Run every step (closing or flushing one file each) even when one fails, then raise
    the first failure: one stream's error never costs another stream its data."""
    errors: list[Exception] = []
    for step in steps:
        try:
            step()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def pwrite_all(fd: int, buffers: Sequence[Any], offset: int) -> int:
    """Write ``buffers`` at ``offset``, however many system calls it takes; returns the
    offset after them."""
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        written = os.pwritev(fd, views, offset)
        if written == 0 and any(view.nbytes for view in views):
            raise OSError(errno.EIO, "the file took no more bytes")
        offset += written
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
    return offset


def json_value(value: Any, *, what: str) -> str:
    """``value`` as JSON text, or :class:`UnsupportedData` naming ``what``."""
    try:
        return json.dumps(value, default=_json_default, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise UnsupportedData(f"{what}: value {value!r} is not JSON-serialisable ({exc})") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


#: Bytes kept free for a format's own metadata (indexes, footers, directories).
HEADROOM = 4 << 20
_CHECK_EVERY = HEADROOM // 4

_ERRNO_IN_MESSAGE = re.compile(r"errno = (\d+)")


@contextmanager
def storage_errors(
    path: Path | str, action: str, *, library_errors: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Turn OS errors (disk full, permissions, file-size limit) into :class:`StorageIOError`.

    ``library_errors`` are further exception types a library uses for I/O failures
    (h5py raises ``RuntimeError`` from HDF5's write path); their errno is taken from
    the message when it names one.
    """
    try:
        yield
    except (StorageIOError, WriterClosedError, UnsupportedData, SchemaMismatch):
        raise
    except OSError as exc:
        code = exc.errno if exc.errno is not None else _errno_in(str(exc))
        raise StorageIOError(code, f"{action}: {exc.strerror or exc}", str(path)) from exc
    except library_errors as exc:
        raise StorageIOError(_errno_in(str(exc)), f"{action}: {exc}", str(path)) from exc


def _errno_in(message: str) -> int:
    found = _ERRNO_IN_MESSAGE.search(message)
    return int(found.group(1)) if found else errno.EIO


class Writer(ABC):
    """A destination for tables (Arrow record batches) and frames (N-d arrays), by stream.

    Writers are synchronous and single-threaded from the caller's side; async callers
    reach them through a thread. Use as a context manager, or call :meth:`close`.
    """

    #: Registry name ("hdf5", "arrow", ...).
    name: ClassVar[str]
    #: File suffixes, the first is the default.
    suffixes: ClassVar[tuple[str, ...]]
    supports_frames: ClassVar[bool]
    supports_tables: ClassVar[bool]
    supports_append: ClassVar[bool] = True
    #: ``path`` names a directory (one file per stream, or a Zarr store), not a file.
    path_is_directory: ClassVar[bool] = True

    @classmethod
    def options_from_config(cls, settings: StorageSettings) -> dict[str, Any]:
        """Writer options taken from the ``[storage]`` config section (none by default)."""
        return {}

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._closed = False
        self._stats = WriterStats()
        self._stream_names: dict[str, str] = {}  # safe name -> stream as given
        self._frame_specs: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {}
        self._frames_seen: dict[str, int] = {}
        self._unchecked_bytes = 0

    # ------------------------------------------------------------------ public API
    @abstractmethod
    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        """Append an Arrow record batch to ``stream``."""

    def write_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any],
        *,
        timestamps_ns: npt.ArrayLike | None = None,
        frame_numbers: npt.ArrayLike | None = None,
    ) -> None:
        """Append ``frames`` (``(n, *frame_shape)``) to ``stream``.

        Raises:
            UnsupportedData: the format cannot hold images.
            SchemaMismatch: dtype or frame shape differs from the stream's.
        """
        self._check_open()
        raise UnsupportedData(
            f"{self.name} writer cannot store frames (stream {stream!r}); "
            "use hdf5, zarr, tiff, arrow or parquet"
        )

    @abstractmethod
    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        """Attach ``key = value`` to the file (``stream=None``) or to one stream."""

    @abstractmethod
    def flush(self) -> None:
        """Make everything written so far durable and visible to readers."""

    def close(self) -> None:
        """Flush and close; idempotent."""
        if self._closed:
            return
        try:
            self._close()
        finally:
            self._closed = True

    @abstractmethod
    def _close(self) -> None: ...

    @property
    def stats(self) -> WriterStats:
        """Counters, with ``file_size`` measured now."""
        size = 0
        for path in self._stats.files:
            size += _disk_size(path)
        self._stats.file_size = size
        return self._stats

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def _check_open(self) -> None:
        if self._closed:
            raise WriterClosedError(f"{self.name} writer for {self.path} is closed")

    def _safe_stream(self, stream: str) -> str:
        """The stream's name as used in paths, consistent over the writer's life.

        Unsafe characters are replaced (``a/b`` -> ``a_b``, ``../x`` -> ``x``); two
        streams that would map to the same name are refused.
        """
        safe = sanitize_name(stream, what="stream name")
        owner = self._stream_names.setdefault(safe, stream)
        if owner != stream:
            raise InvalidName(
                f"stream names {owner!r} and {stream!r} both map to {safe!r} in {self.path}"
            )
        return safe

    def _check_batch(self, stream: str, batch: pa.RecordBatch) -> pa.RecordBatch:
        self._check_open()
        if isinstance(batch, pa.Table):
            batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else None
        if not isinstance(batch, pa.RecordBatch):
            raise UnsupportedData(
                f"stream {stream!r}: write_batch needs a pyarrow RecordBatch, "
                f"got {type(batch).__name__}"
            )
        return batch

    def _check_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any],
        timestamps_ns: npt.ArrayLike | None,
        frame_numbers: npt.ArrayLike | None,
    ) -> FrameBlock:
        self._check_open()
        if not isinstance(frames, np.ndarray):
            raise SchemaMismatch(
                f"stream {stream!r}: frames must be a numpy array, got {type(frames).__name__}"
            )
        if frames.ndim < 2:
            raise SchemaMismatch(
                f"stream {stream!r}: frames must be (n, *frame_shape), got shape {frames.shape}"
            )
        if frames.dtype.kind not in "biuf" or frames.dtype.itemsize > 8:
            raise UnsupportedData(f"stream {stream!r}: frame dtype {frames.dtype} is not supported")
        if not frames.dtype.isnative:  # stored (and compressed) in this machine's byte order
            frames = frames.astype(frames.dtype.newbyteorder("="))
        self._check_frame_format(stream, frames)
        spec = (frames.dtype, frames.shape[1:])
        known = self._frame_specs.get(stream, spec)
        if known != spec:
            raise SchemaMismatch(
                f"stream {stream!r} holds frames of dtype {known[0]} shape {known[1]}; "
                f"got dtype {frames.dtype} shape {frames.shape[1:]}"
            )
        n = frames.shape[0]
        first = self._frames_seen.get(stream, 0)
        numbers = (
            np.arange(first, first + n, dtype=np.uint64)
            if frame_numbers is None
            else np.asarray(frame_numbers, np.uint64)
        )
        stamps = (
            np.zeros(n, np.uint64)
            if timestamps_ns is None
            else np.asarray(timestamps_ns, np.uint64)
        )
        for label, values in (("timestamps_ns", stamps), ("frame_numbers", numbers)):
            if values.shape != (n,):
                raise SchemaMismatch(
                    f"stream {stream!r}: {label} has shape {values.shape}, expected ({n},)"
                )
        self._frame_specs[stream] = spec  # only for an accepted call
        self._frames_seen[stream] = first + n
        return FrameBlock(np.ascontiguousarray(frames), stamps, numbers)

    def _check_frame_format(self, stream: str, frames: npt.NDArray[Any]) -> None:
        """Refuse frames this format cannot hold, before the stream's frame spec is fixed
        (a refused first call leaves the stream free for other frames). Any frame by
        default."""
        return

    def _ensure_room(self, nbytes: int, what: str, file: Path) -> None:
        """Refuse a write of ``nbytes`` to ``file`` up front (``StorageIOError``, nothing
        written) when the disk or the process's file-size limit leaves too little room.

        A write that fails half-way can leave a file unreadable (HDF5's superblock then
        promises bytes that are missing; a Parquet file needs room for its footer), so
        every writer checks first and keeps :data:`HEADROOM` bytes for its own metadata.
        """
        # Checking costs three system calls; small writes are checked once per
        # _CHECK_EVERY bytes, which the headroom (4x larger) covers.
        if self._unchecked_bytes + nbytes < _CHECK_EVERY:
            self._unchecked_bytes += nbytes
            return
        self._unchecked_bytes = 0
        need = nbytes + HEADROOM
        try:
            status = os.stat(file)
        except OSError:
            size, folder = 0, file.parent
        else:
            size = status.st_size
            folder = file if stat.S_ISDIR(status.st_mode) else file.parent
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and size + need > limit:
            raise StorageIOError(
                errno.EFBIG,
                f"cannot write {what}: the file-size limit ({limit} bytes) leaves no room for "
                f"{nbytes} more bytes; everything written before stays readable",
                str(file),
            )
        try:
            disk = os.statvfs(folder)
        except OSError:
            return  # the write itself will report what is wrong
        free = disk.f_bavail * disk.f_frsize
        if free < need:
            raise StorageIOError(
                errno.ENOSPC,
                f"cannot write {what}: {free} bytes free on the disk, {nbytes} needed "
                f"(+{HEADROOM} headroom); everything written before stays readable",
                str(file),
            )

    def _add_file(self, path: Path) -> None:
        if path not in self._stats.files:
            self._stats.files.append(path)


def _disk_size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0
