"""The writer interface every format implements."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import resource
import shutil
import stat
import sys
import weakref
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
from daq_storage.schema import FrameBlock, StreamMetadata, join_frames
from daq_storage.writers._guards import (
    EntryGuard,
    WriterBusy,
    frame_ids,
    guard_public_methods,
    guarded,
    lock_directory,
)

__all__ = [
    "FrameBlock",
    "Writer",
    "WriterBusy",
    "WriterStats",
    "as_record_batch",
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
        raise UnsupportedData(
            f"{what}: value {_short(value)} is not JSON-serialisable ({exc})"
        ) from None
    except RecursionError:
        raise UnsupportedData(f"{what}: the value is nested too deeply to store") from None


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= 200 else f"{text[:197]}..."


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


_ACCEPTED = (
    "a pyarrow RecordBatch or Table, a polars or pandas DataFrame, or an object with "
    "__arrow_c_array__, __arrow_c_stream__ or to_arrow()"
)


def as_record_batch(data: Any, *, stream: str) -> pa.RecordBatch:
    """``data`` as one record batch, without pandas' schema metadata: a
    ``pyarrow.RecordBatch`` as it is; a ``pyarrow.Table`` (chunks joined; an empty
    table gives an empty batch); a pandas DataFrame (a named or
    non-default index becomes a column, as ``DataFrame.to_parquet`` does); anything with
    ``to_arrow()`` (polars), ``__arrow_c_array__`` or ``__arrow_c_stream__``.

    Raises:
        UnsupportedData: ``data`` is none of these, naming its type and what is accepted.
        InvalidName: its schema metadata holds an ``ARROW:`` or ``PARQUET:`` key.
    """
    if isinstance(data, pa.RecordBatch):
        return _plain_metadata(data, stream)
    pandas = sys.modules.get("pandas")  # loaded if data can be a pandas DataFrame
    converted: Any = None
    try:
        if isinstance(data, pa.Table):
            converted = data
        elif pandas is not None and isinstance(data, pandas.DataFrame):
            converted = _without_pandas_metadata(pa.Table.from_pandas(data))
        elif callable(getattr(data, "to_arrow", None)):
            converted = data.to_arrow()
        elif hasattr(data, "__arrow_c_array__"):
            converted = pa.record_batch(data)
        elif hasattr(data, "__arrow_c_stream__"):
            converted = pa.RecordBatchReader.from_stream(data).read_all()
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise UnsupportedData(
            f"stream {stream!r}: cannot read a {type(data).__name__} as a table ({exc})"
        ) from None
    if isinstance(converted, pa.Table):
        joined = converted.combine_chunks()
        converted = pa.RecordBatch.from_arrays(
            [column.combine_chunks() for column in joined.columns], schema=joined.schema
        )
    if isinstance(converted, pa.RecordBatch):
        return _plain_metadata(converted, stream)
    raise UnsupportedData(
        f"stream {stream!r}: write_batch takes {_ACCEPTED}; got {type(data).__name__}"
    )


def _plain_metadata(batch: pa.RecordBatch, stream: str) -> pa.RecordBatch:
    """``batch`` without pandas' schema metadata (see :func:`_without_pandas_metadata`),
    refused when its schema metadata holds a key Arrow or Parquet reserve (as the
    stream's metadata it would make the files unreadable)."""
    metadata = batch.schema.metadata
    if not metadata:
        return batch
    for key in metadata:
        if key.startswith((b"ARROW:", b"PARQUET:")):
            raise InvalidName(
                f"stream {stream!r}: the batch's schema metadata key "
                f"{key.decode('utf-8', 'replace')!r} is reserved by Arrow and Parquet"
            )
    if b"pandas" in metadata:
        rest = {k: v for k, v in metadata.items() if k != b"pandas"}
        return batch.replace_schema_metadata(rest or None)
    return batch


def _without_pandas_metadata(table: pa.Table) -> pa.Table:
    """pandas' own schema metadata describes the DataFrame's index, which changes with
    every slice of rows: as stream metadata it would be recorded as a change per batch."""
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}
    return table.replace_schema_metadata(metadata or None)


#: The largest frame any writer takes: 4 GiB, HDF5's largest chunk (one frame each).
MAX_FRAME_BYTES = 1 << 32
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

    Writers are synchronous, and a writer is used from one thread at a time: a second
    thread calling any public method while another is inside one gets
    :class:`WriterBusy` (async callers reach a writer through one thread). Use as a
    context manager, or call :meth:`close`.

    A built-in writer that stores nothing (no rows, no frames, no metadata) leaves
    nothing behind at :meth:`close`: the file or directories it created are removed (a
    directory or empty file that existed before is left as it was). While it is open,
    the name is its own: nothing that exists is overwritten. A subclass opts in with
    :attr:`removes_unused_output` once it marks what it stores.
    """

    #: Registry name ("hdf5", "arrow", ...).
    name: ClassVar[str]
    #: File suffixes, the first is the default (for per-stream writers: of each stream's
    #: file).
    suffixes: ClassVar[tuple[str, ...]]
    supports_frames: ClassVar[bool]
    supports_tables: ClassVar[bool]
    supports_append: ClassVar[bool] = True
    #: ``path`` names a directory (one file per stream, or a Zarr store), not a file.
    path_is_directory: ClassVar[bool] = True
    #: What the name of ``path`` ends with: ``".h5"``, ``".zarr"``, or ``""`` for a plain
    #: directory holding one file per stream. A subclass that does not set it gets
    #: ``suffixes[0]`` when its path is a file and ``""`` when it is a directory.
    path_suffix: ClassVar[str] = ""
    _path_suffix_given: ClassVar[bool] = False
    #: :meth:`close` removes the files of a writer that stored nothing; only for writers
    #: that set ``_stored`` whenever they store rows, frames or metadata.
    removes_unused_output: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "path_suffix" in cls.__dict__:
            cls._path_suffix_given = True
        elif not cls._path_suffix_given:
            suffixes = getattr(cls, "suffixes", ("",))
            cls.path_suffix = "" if cls.path_is_directory else suffixes[0]
        guard_public_methods(cls)  # one thread at a time; metadata keys checked

    @classmethod
    def options_from_config(cls, settings: StorageSettings) -> dict[str, Any]:
        """Writer options taken from the ``[storage]`` config section (none by default)."""
        return {}

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._closed = False
        self._stats = WriterStats()
        self._stream_names: dict[str, str] = {}  # safe name -> stream as given
        self._safe_names: dict[str, str] = {}  # stream as given -> safe name
        self._frame_specs: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {}
        self._frames_seen: dict[str, int] = {}
        self._unchecked_bytes = 0
        #: Per table stream: its metadata by the rule of :meth:`write_batch`.
        self._table_metadata: dict[str, StreamMetadata] = {}
        self._stored = False  # any rows, frames or metadata: see _discard_unused
        self._made_dirs: list[Path] = []  # directories this writer created, deepest first
        self._entry = EntryGuard()  # see guarded(): one thread at a time
        #: Releases the output's writer lock (see _lock_output): at close, or when a
        #: writer never closed is collected.
        self._unlock: weakref.finalize[Any, Any] | None = None

    # ------------------------------------------------------------------ public API
    @abstractmethod
    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        """Append a table to ``stream``.

        ``batch`` is a ``pyarrow.RecordBatch`` or ``Table``, a polars or pandas
        DataFrame, or any object with ``__arrow_c_array__``, ``__arrow_c_stream__`` or
        ``to_arrow()``.

        The schema metadata of the stream's first batch is the stream's metadata (each
        value as JSON: see :func:`~daq_storage.schema.decode_metadata`); a later batch
        never overwrites it: each value that changes is recorded in the stream metadata
        entry ``metadata_changes``, a list of ``{"row": first row with the new value,
        "key": ..., "value": ...}``. Field metadata (``units``, ``long_name``,
        ``scale_factor``, ...) describes its column.
        """

    @guarded
    def write_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any],
        *,
        timestamps_ns: npt.ArrayLike | None = None,
        frame_numbers: npt.ArrayLike | None = None,
    ) -> None:
        """Append ``frames`` (``(n, *frame_shape)``) to ``stream``.

        The first axis counts frames: one 2-D image is ``image[np.newaxis]``, and a 2-D
        array starts a stream of 1-D frames (spectra, lines). ``timestamps_ns`` are
        nanoseconds since the Unix epoch (integers or ``datetime64``; default 0);
        ``frame_numbers`` (integers, default the count of frames before) are any
        integers from 0 to 2**64 - 1. Ids are validated, never converted.

        Raises:
            UnsupportedData: the format cannot hold images, a frame has no pixels
                (a dimension of size 0) or is larger than :data:`MAX_FRAME_BYTES`.
            SchemaMismatch: dtype or frame shape differs from the stream's (a single frame
                of the stream's shape is named as such), or an id is not an integer in
                range (negative, a float, NaN, text, 2**64 or more).
        """
        self._check_open()
        raise UnsupportedData(
            f"{self.name} writer cannot store frames (stream {stream!r}); "
            "use hdf5, zarr, tiff, arrow or parquet"
        )

    @abstractmethod
    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        """Attach ``key = value`` to the file (``stream=None``) or to one stream.

        Raises:
            InvalidName: ``key`` is not a non-empty string of valid text without NUL, or
                is reserved by a format or reader (``ARROW:...``, ``PARQUET:...``,
                ``pandas``, polars' ``_PL_...``, xarray's ``_FillValue``, ...).
            UnsupportedData: ``value`` holds text that is not valid Unicode (a lone
                surrogate) or is nested more than 100 levels deep; keys and values are
                checked for every writer before the format sees them.
        """

    @abstractmethod
    def flush(self) -> None:
        """Make everything written so far durable and visible to readers."""

    @guarded
    def close(self) -> None:
        """Flush and close; idempotent. A writer that stored nothing removes what it
        created."""
        if self._closed:
            return
        try:
            self._close()
        finally:
            self._closed = True
            try:
                if self.removes_unused_output and not self._stored:
                    self._discard_unused()
            finally:
                self._release_output()

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
        if isinstance(stream, str) and stream in self._safe_names:
            return self._safe_names[stream]  # checked once: this runs for every batch
        safe = sanitize_name(stream, what="stream name")
        owner = self._stream_names.setdefault(safe, stream)
        if owner != stream:
            raise InvalidName(
                f"stream names {owner!r} and {stream!r} both map to {safe!r} in {self.path}"
            )
        self._safe_names[stream] = safe
        return safe

    def _check_batch(self, stream: str, batch: Any) -> pa.RecordBatch:
        self._check_open()
        self._safe_stream(stream)  # a bad name is refused before anything is made
        return as_record_batch(batch, stream=stream)

    def _observe_metadata(self, stream: str, batch: pa.RecordBatch) -> None:
        """Count ``batch``, just stored, in its stream's :class:`StreamMetadata` (and the
        writer as having stored something)."""
        self._stored = True
        metadata = self._table_metadata.get(stream)
        if metadata is None:
            metadata = self._table_metadata[stream] = StreamMetadata()
        metadata.observe(batch.schema.metadata, batch.num_rows)

    def _lock_output(self, folder: Path) -> None:
        """Hold the writer lock of ``folder`` until :meth:`close`: a second writer on the
        same output, in any process, is refused (``StorageIOError``, ``EBUSY``)."""
        fd = lock_directory(folder)
        if fd >= 0:
            self._unlock = weakref.finalize(self, os.close, fd)

    def _release_output(self) -> None:
        if self._unlock is not None:
            self._unlock()  # runs once: later calls do nothing

    def _claim_directory(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents, remembering which were made here."""
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        self._made_dirs = missing

    def _discard_unused(self) -> None:
        """Remove the files in :attr:`WriterStats.files` (a directory: what is in it), then
        the directories this writer created, if empty; errors are ignored (a reader may
        hold a file, another process may have added one)."""
        for path in reversed(self._stats.files):
            try:
                if path.is_dir() and not path.is_symlink():
                    for child in path.iterdir():
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
                else:
                    path.unlink(missing_ok=True)
            except OSError:
                pass
        for folder in self._made_dirs:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty, or already gone: its parents stay too
        self._stats.files.clear()

    def _check_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any],
        timestamps_ns: npt.ArrayLike | None,
        frame_numbers: npt.ArrayLike | None,
        *,
        record: bool = True,
    ) -> FrameBlock:
        """The call's frames and ids, checked; nothing about the stream changes unless
        the call is accepted. ``record=False``: the format records the frames with
        :meth:`_record_frames` once it has stored them (a refusal by the format then
        leaves the stream's dtype and shape free)."""
        self._check_open()
        self._safe_stream(stream)  # a bad name is refused before anything is made
        if not isinstance(frames, np.ndarray):
            raise SchemaMismatch(
                f"stream {stream!r}: frames must be a numpy array, got {type(frames).__name__}"
            )
        known = self._frame_specs.get(stream)
        if known is not None and frames.ndim == len(known[1]):
            raise SchemaMismatch(
                f"stream {stream!r} holds frames of shape {known[1]}; an array of shape "
                f"{frames.shape} looks like a single frame; pass frame[np.newaxis] or a "
                "stack (n, *frame_shape)"
            )
        if frames.ndim < 2:
            raise SchemaMismatch(
                f"stream {stream!r}: frames must be (n, *frame_shape), got shape {frames.shape}"
            )
        if 0 in frames.shape[1:]:  # one rule for every format: no frame without pixels
            raise UnsupportedData(
                f"stream {stream!r}: frame shape {frames.shape[1:]} has no pixels; every "
                "frame dimension must be at least 1"
            )
        if frames.dtype.kind not in "biuf" or frames.dtype.itemsize > 8:
            raise UnsupportedData(f"stream {stream!r}: frame dtype {frames.dtype} is not supported")
        frame_bytes = math.prod(frames.shape[1:]) * frames.dtype.itemsize
        if frame_bytes > MAX_FRAME_BYTES:  # (a stride-0 view can claim any size)
            raise UnsupportedData(
                f"stream {stream!r}: a frame of shape {frames.shape[1:]} ({frames.dtype}) is "
                f"{frame_bytes} bytes, more than the limit of {MAX_FRAME_BYTES} bytes per frame"
            )
        if not frames.dtype.isnative:  # stored (and compressed) in this machine's byte order
            frames = frames.astype(frames.dtype.newbyteorder("="))
        self._check_frame_format(stream, frames)
        spec = (frames.dtype, frames.shape[1:])
        known = known or spec
        if known != spec:
            raise SchemaMismatch(
                f"stream {stream!r} holds frames of dtype {known[0]} shape {known[1]}; "
                f"got dtype {frames.dtype} shape {frames.shape[1:]}"
            )
        n = frames.shape[0]
        first = self._frames_seen.get(stream, 0)
        stamps = (
            np.zeros(n, np.uint64)
            if timestamps_ns is None
            else frame_ids(timestamps_ns, n, stream=stream, label="timestamps_ns")
        )
        numbers = (
            np.arange(first, first + n, dtype=np.uint64)
            if frame_numbers is None
            else frame_ids(frame_numbers, n, stream=stream, label="frame_numbers")
        )
        block = FrameBlock(np.ascontiguousarray(frames), stamps, numbers)
        if record:
            self._record_frames(stream, block)
        return block

    def _record_frames(self, stream: str, block: FrameBlock, count: int | None = None) -> None:
        """Fix the stream's frame dtype and shape to ``block``'s and count ``count`` of its
        frames (all by default) for the default frame numbers."""
        self._frame_specs[stream] = (block.frames.dtype, block.frames.shape[1:])
        seen = self._frames_seen.get(stream, 0)
        self._frames_seen[stream] = seen + (len(block) if count is None else count)

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
        self._unchecked_bytes = _CHECK_EVERY  # until a check passes: every write is checked
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
            self._unchecked_bytes = 0
            return  # the write itself will report what is wrong
        free = disk.f_bavail * disk.f_frsize
        if free < need:
            raise StorageIOError(
                errno.ENOSPC,
                f"cannot write {what}: {free} bytes free on the disk, {nbytes} needed "
                f"(+{HEADROOM} headroom); everything written before stays readable",
                str(file),
            )
        self._unchecked_bytes = 0

    def _recheck_room(self) -> None:
        """After a write the disk refused: the next write checks the room first."""
        self._unchecked_bytes = _CHECK_EVERY

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
