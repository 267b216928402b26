"""The writer contract every format implements."""

from __future__ import annotations

import math
import os
import shutil
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pydantic import ValidationError

from daq_storage.errors import (
    ConfigError,
    InvalidName,
    SchemaMismatch,
    UnknownStream,
    UnsupportedData,
    WriterClosedError,
)
from daq_storage.location import S3Location
from daq_storage.naming import sanitize_name
from daq_storage.schema import (
    FrameBlock,
    SchemaChange,
    StreamMetadata,
    classify_change,
    evolution_for,
    evolved_schema,
    join_frames,
)
from daq_storage.writers._contract import (
    EVOLUTION_ATTRIBUTES,
    StatsCounters,
    StreamDescription,
    StreamPart,
    WriterOptions,
    WriterStats,
    check_all,
    check_capabilities,
)
from daq_storage.writers._guards import (
    EntryGuard,
    WriterBusy,
    frame_ids,
    guard_public_methods,
    guarded,
    lock_directory,
)
from daq_storage.writers._inputs import as_record_batch, json_value, stack_frames
from daq_storage.writers._io import (
    check_room,
    file_size,
    finish_all,
    fsync_paths,
    pwrite_all,
    storage_errors,
)

__all__ = [
    "FrameBlock",
    "StreamDescription",
    "StreamPart",
    "Writer",
    "WriterBusy",
    "WriterOptions",
    "WriterStats",
    "as_record_batch",
    "check_all",
    "finish_all",
    "fsync_paths",
    "join_frames",
    "json_value",
    "pwrite_all",
    "storage_errors",
]

#: The largest frame any writer takes: 4 GiB, HDF5's largest chunk (one frame each).
MAX_FRAME_BYTES = 1 << 32
#: Bytes kept free for a format's own metadata (indexes, footers, directories).
HEADROOM = 4 << 20
_CHECK_EVERY = HEADROOM // 4


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

    The contract a caller (the Recorder, the documents layer) relies on:

    - **Evolution.** A table writer declares what it does with each kind of schema change
      (:attr:`on_widening`, :attr:`on_new_columns`, :attr:`on_incompatible`: one of
      ``"in_place"``, ``"new_part"``, ``"refuse"``); :func:`daq_storage.schema.classify_change`
      decides the kind, the same way for every writer. :meth:`check_batch` (and
      :func:`check_all` for several writers) says up front whether a batch is accepted.
    - **Visibility.** :meth:`accepted` counts what a stream took; :meth:`visible` what a
      reader opening the output now is guaranteed to see. After :meth:`flush` they are
      equal.
    - **Durability.** ``flush(durable=True)`` also fsyncs what the flush made visible
      (files and the directories naming them).
    - **Description.** :meth:`describe` says where a stream lives (file, key, parts,
      dtype, shape, chunks, codec).
    - **Options.** :attr:`Options` validates the keyword arguments; :attr:`config_keys`
      maps the ``[storage]`` config keys the writer honours onto them.
    """

    #: Registry name ("hdf5", "arrow", ...).
    name: ClassVar[str]
    #: File suffixes, the first is the default (for per-stream writers: of each stream's
    #: file).
    suffixes: ClassVar[tuple[str, ...]]
    supports_frames: ClassVar[bool]
    supports_tables: ClassVar[bool]
    #: The media type of the output (``StreamResource.mimetype``).
    mimetype: ClassVar[str]
    #: What a table stream does on each kind of schema change (required of a writer that
    #: declares ``name`` and supports tables; checked when the class is defined).
    on_widening: ClassVar[str]
    on_new_columns: ClassVar[str]
    on_incompatible: ClassVar[str]
    #: The writer's options model; its fields are the writer's keyword arguments.
    Options: ClassVar[type[WriterOptions]] = WriterOptions
    #: ``[storage]`` config key -> option name, for the keys this writer honours; a key
    #: set in the config and not listed here is refused for this writer.
    config_keys: ClassVar[Mapping[str, str]] = {}
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
    #: ``path`` may be an ``s3://bucket/key`` URL (the writer then takes a
    #: ``storage_options`` keyword and writes through zarr's store API or ``pyarrow.fs``);
    #: :func:`open_writer` refuses a URL for a writer without it.
    supports_object_storage: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "path_suffix" in cls.__dict__:
            cls._path_suffix_given = True
        elif not cls._path_suffix_given:
            suffixes = getattr(cls, "suffixes", ("",))
            cls.path_suffix = "" if cls.path_is_directory else suffixes[0]
        guard_public_methods(cls)  # one thread at a time; metadata keys checked
        if "name" in cls.__dict__:  # a writer that registers: its contract is complete
            check_capabilities(cls)

    @classmethod
    def evolution_policy(cls) -> dict[str, str]:
        """Kind of schema change -> what this writer does with it."""
        return {kind: getattr(cls, attribute) for kind, attribute in EVOLUTION_ATTRIBUTES.items()}

    @classmethod
    def validate_options(cls, **options: Any) -> WriterOptions:
        """``options`` checked by :attr:`Options`.

        Raises:
            ConfigError: an option is unknown or out of range, naming it, the value and
                what the writer takes.
        """
        try:
            return cls.Options(**options)
        except ValidationError as exc:
            problems = "; ".join(_problem(error) for error in exc.errors())
            raise ConfigError(f"{cls.name} writer: {problems}") from None

    def __init__(self, path: str | os.PathLike[str] | S3Location) -> None:
        #: The object-store destination, or None for a local path.
        self.location: S3Location | None = path if isinstance(path, S3Location) else None
        #: The local path; for an object store, the URL as a path (messages use
        #: :attr:`destination`).
        self.path = Path(path.url if isinstance(path, S3Location) else path)
        #: Where the output goes, as a user names it: the path, or the ``s3://`` URL.
        self.destination = str(path.url if isinstance(path, S3Location) else self.path)
        self._closed = False
        self._stats = StatsCounters()
        #: Per table stream: the schema its current part holds (see _observe_metadata).
        self._table_schemas: dict[str, pa.Schema] = {}
        #: Per stream that has more than one part: its parts, in order.
        self._parts: dict[str, list[StreamPart]] = {}
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
        frames: npt.NDArray[Any] | Sequence[npt.NDArray[Any]],
        *,
        timestamps_ns: npt.ArrayLike | None = None,
        frame_numbers: npt.ArrayLike | None = None,
    ) -> None:
        """Append ``frames`` (``(n, *frame_shape)``, or a sequence of equally shaped
        frames such as ring views) to ``stream``.

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
        self._check_frames(stream, frames, timestamps_ns, frame_numbers)
        raise UnsupportedData(f"{self.name} writer cannot store frames (stream {stream!r})")

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
    def flush(self, *, durable: bool = False) -> None:
        """Make everything accepted so far visible to a reader opening the output
        (:meth:`visible` then equals :meth:`accepted` for every stream).

        ``durable=True`` also fsyncs what the flush made visible, files and the
        directories that name them, so a power loss after it loses nothing flushed.
        """

    @abstractmethod
    def visible(self, stream: str) -> int:
        """Rows (a table stream) or frames that a reader opening the output now is
        guaranteed to see; at most :meth:`accepted`.

        Raises:
            UnknownStream: nothing was written to ``stream``.
        """

    @abstractmethod
    def describe(self, stream: str) -> StreamDescription:
        """Where ``stream`` lives and how it is laid out (see :class:`StreamDescription`).

        Raises:
            UnknownStream: nothing was written to ``stream``.
        """

    def accepted(self, stream: str) -> int:
        """Rows (a table stream) or frames the writer has taken for ``stream``.

        Raises:
            UnknownStream: nothing was written to ``stream``.
        """
        self._known_stream(stream)
        metadata = self._table_metadata.get(stream)
        return metadata.rows if metadata is not None else self._frames_seen.get(stream, 0)

    @property
    def streams(self) -> list[str]:
        """The streams written so far (tables, then frames), as given."""
        return [
            *self._table_metadata,
            *(s for s in self._frames_seen if s not in self._table_metadata),
        ]

    def check_batch(self, stream: str, batch: Any) -> SchemaChange:
        """What writing ``batch`` to ``stream`` would change, without writing it.

        Raises:
            UnsupportedData: the format cannot hold tables, or one of the batch's types.
            SchemaMismatch: this writer refuses the change (see :attr:`on_incompatible`).
            InvalidName: the stream name, or a metadata key, cannot be used.
        """
        return self._plan_change(stream, self._check_batch(stream, batch).schema)[0]

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
        """A snapshot of the counters, ``file_size`` as of now (one ``stat`` per file; no
        directory is walked)."""
        counters = self._stats
        size = counters.directory_bytes
        for path in counters.files:
            size += file_size(path)
        return WriterStats(
            batches=counters.batches,
            rows=counters.rows,
            frames=counters.frames,
            bytes_written=counters.bytes_written,
            file_size=size,
            files=tuple(counters.files),
        )

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
            raise WriterClosedError(f"{self.name} writer for {self.destination} is closed")

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
                f"stream names {owner!r} and {stream!r} both map to {safe!r} in {self.destination}"
            )
        self._safe_names[stream] = safe
        return safe

    def _check_batch(self, stream: str, batch: Any) -> pa.RecordBatch:
        self._check_open()
        self._safe_stream(stream)  # a bad name is refused before anything is made
        if not self.supports_tables:
            raise UnsupportedData(
                f"{self.name} writer cannot store tables (stream {stream!r}); "
                "use hdf5, parquet, arrow, csv or zarr"
            )
        return as_record_batch(batch, stream=stream)

    def _check_table_schema(self, stream: str, schema: pa.Schema) -> None:
        """Refuse a batch schema holding a type this format cannot store
        (:class:`UnsupportedData`), before anything is written. Any type by default."""
        return

    def _plan_change(self, stream: str, schema: pa.Schema) -> tuple[SchemaChange, str]:
        """The change a batch of ``schema`` makes in ``stream`` and what this writer does
        with it: ``"same"`` (nothing changes, the first batch included), ``"in_place"``
        or ``"new_part"``.

        Raises:
            SchemaMismatch: the writer's policy refuses the change.
            UnsupportedData: the format cannot store one of the schema's types.
        """
        self._check_table_schema(stream, schema)
        current = self._table_schemas.get(stream)
        if current is None or current.equals(schema):
            return SchemaChange(), "same"
        change = classify_change(current, schema)
        action = evolution_for(change, self.evolution_policy())
        if action == "refuse":
            raise SchemaMismatch(
                f"stream {stream!r}: {change}; the {self.name} writer refuses a change of "
                f"kind {change.kind!r} (it takes: "
                + ", ".join(f"{k} -> {v}" for k, v in self.evolution_policy().items())
                + ")"
            )
        return change, action

    def _observe_metadata(self, stream: str, batch: pa.RecordBatch) -> None:
        """Count ``batch``, just stored, in its stream's :class:`StreamMetadata` (and the
        writer as having stored something), and update the schema of the stream's
        current part: evolved in place, or the batch's own when it started a new part
        (the format records the part with :meth:`_add_part`)."""
        self._stored = True
        current = self._table_schemas.get(stream)
        if current is None:
            self._table_schemas[stream] = batch.schema.remove_metadata()
        elif not current.equals(batch.schema):
            change = classify_change(current, batch.schema)
            action = evolution_for(change, self.evolution_policy())
            if action == "in_place":
                self._table_schemas[stream] = evolved_schema(current, batch.schema)
            elif action == "new_part":
                self._table_schemas[stream] = batch.schema.remove_metadata()
        metadata = self._table_metadata.get(stream)
        if metadata is None:
            metadata = self._table_metadata[stream] = StreamMetadata()
        metadata.observe(batch.schema.metadata, batch.num_rows)

    def _add_part(self, stream: str, part: StreamPart) -> None:
        """Record that ``stream`` continues in ``part`` (its first part included)."""
        self._parts.setdefault(stream, []).append(part)

    def _stream_parts(self, stream: str, first: StreamPart) -> tuple[StreamPart, ...]:
        """The stream's parts: those recorded, else ``first`` alone."""
        return tuple(self._parts.get(stream) or (first,))

    def _known_stream(self, stream: str) -> None:
        if stream not in self._table_metadata and stream not in self._frames_seen:
            raise UnknownStream(
                f"{self.name} writer for {self.destination} has no stream {stream!r}"
            )

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
        frames: npt.NDArray[Any] | Sequence[npt.NDArray[Any]],
        timestamps_ns: npt.ArrayLike | None,
        frame_numbers: npt.ArrayLike | None,
    ) -> FrameBlock:
        """The call's frames and ids, checked; nothing about the stream changes. The
        format records the frames with :meth:`_record_frames` once it has stored them:
        a refused call (by a check, by the format, for room) leaves the stream's dtype,
        shape and default frame numbers as they were."""
        self._check_open()
        self._safe_stream(stream)  # a bad name is refused before anything is made
        if not self.supports_frames:
            raise UnsupportedData(
                f"{self.name} writer cannot store frames (stream {stream!r}); "
                "use hdf5, zarr, tiff, arrow or parquet"
            )
        if isinstance(frames, (list, tuple)):
            frames = stack_frames(stream, frames)
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
        return FrameBlock(np.ascontiguousarray(frames), stamps, numbers)

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
        check_room(file, nbytes, what, headroom=HEADROOM)
        self._unchecked_bytes = 0

    def _recheck_room(self) -> None:
        """After a write the disk refused: the next write checks the room first."""
        self._unchecked_bytes = _CHECK_EVERY

    def _add_file(self, path: Path) -> None:
        if path not in self._stats.files:
            self._stats.files.append(path)


def _problem(error: Any) -> str:
    """One pydantic error as ``option = value: why`` (a rule over several options: why)."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message
    return f"{'.'.join(str(p) for p in error['loc'])} = {error.get('input')!r}: {message}"
