"""HDF5 (h5py + hdf5plugin), in the layout of the seeds' storage actor (docs/hdf5-layout.md
reads it back with h5py, pandas, pyarrow, h5dump and MATLAB).

```
file.h5                      attrs: created_at, created_timestamp_ns, application, <meta>
├── <stream>/        attrs: instrument_id, created_at, schema (Arrow schema JSON), the
│   │                schema metadata of the first batch, metadata_changes, <metadata>,
│   │                parts (once the stream has more than one)
│   ├── <column>             1-D (or N-d for fixed-size lists / tensors), chunked, resizable;
│   │                        attrs: schema (the field as JSON), arrow_type, the field's
│   │                        metadata (units, long_name, scale_factor, ...)
│   ├── <column>             text with few distinct values: uint8/16/32 codes, attrs
│   │                        encoding = "dictionary", categories = "<column>.categories"
│   ├── <column>.categories  vlen UTF-8: category i is the text of code i
│   ├── <column>.valid       bool mask, only for columns that have had nulls
│   ├── frames               (n, *frame_shape) for frame streams
│   ├── timestamp_ns         (n,) uint64 for frame streams; CF units and calendar
│   └── frame_number         (n,) uint64 for frame streams
├── <stream>__part0002/      the stream's second part (attrs: part_of, first, schema)
├── arrow_data/<stream>/     table_layout="arrow_ipc": uint8 datasets 00000000, ..., each
│                            an Arrow IPC file (see :mod:`~._hdf5_arrow`)
├── _metadata/               file metadata values too large for an attribute (> 64 KiB)
└── _stream_metadata/<stream>/   the same for a stream's metadata
```

A column's dataset is named as the column, ``%`` and ``/`` percent-encoded (``a/b`` is
``a%2Fb``; the ``schema`` attributes keep every original name). Stream names never start
with ``_`` (:func:`~daq_storage.naming.sanitize_name`): the metadata groups are no stream's.
Which text columns are coded (``strings``): see :mod:`~._hdf5_strings`.

A table stream evolves in place: a column widened safely (``int32`` to ``int64``,
``int16`` to ``float32``) is rewritten in a dataset of the wider type; a new column is
back-filled (fill values, and a ``.valid`` mask saying those rows are null), a missing
one gets fill values and a mask likewise. An incompatible change (``int64`` to text, a
timestamp's unit; see :func:`~daq_storage.schema.classify_change`), or a column that
would take the dataset of an earlier batch's (a struct field ``a.b`` and a column
``a.b``), continues the stream in a new group ``<stream>__part0002`` (then ``0003``, ...)
holding the rows from there on. The first group's attribute ``parts`` lists them all as
JSON (``[{"key": "/s", "first": 0}, {"key": "/s__part0002", "first": 1200}]``, ``first``
being the stream's row where the part starts); each later group has ``part_of`` (the
stream's name) and ``first``. The stream's metadata stays on its first group.

Times are integers with the CF attributes ``units = "nanoseconds since 1970-01-01"`` (in
the column's unit) and ``calendar = "proleptic_gregorian"``; durations have ``units`` and
``dtype`` (``timedelta64[ms]``). Metadata values are attributes: numbers and text as they
are, lists and dicts as JSON text.

The file is in the HDF5 1.8 format (readable by HDF5 1.8 and later: h5py, MATLAB, h5dump),
with attributes in dense storage; ``swmr=True`` files are in the 1.10 format SWMR needs.
Every commit (each flush, and each change of the file's structure) goes through a journal
(``<file>.h5.journal``, see :mod:`~daq_storage.writers._hdf5_file`; chunks are written as
:mod:`~daq_storage.writers._hdf5_tables` says): a writer killed outside a commit leaves a
file that opens as it is; killed inside one, a journal that ``daq-storage repair``
(:func:`repair_hdf5`) applies. A reader sees what the last commit holds
(:meth:`Hdf5Writer.visible`); ``flush(durable=True)`` also syncs it to the disk.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, ClassVar

import h5py
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage._version import __version__
from daq_storage.errors import (
    InvalidName,
    SchemaMismatch,
    UnsupportedData,
    WriterClosedError,
)
from daq_storage.schema import METADATA_CHANGES, Column, FrameBlock, SchemaChange
from daq_storage.writers._base import (
    StreamDescription,
    StreamPart,
    Writer,
    fsync_paths,
    storage_errors,
)
from daq_storage.writers._hdf5_arrow import ARROW_ROOT, ArrowStream, table_key
from daq_storage.writers._hdf5_attributes import (
    check_metadata,
    leaf_types,
    new_attributes,
    schema_json,
    store_attribute,
)
from daq_storage.writers._hdf5_create import create_file, make_part, now, place_group, publishing
from daq_storage.writers._hdf5_file import failing_step
from daq_storage.writers._hdf5_frames import FrameStream
from daq_storage.writers._hdf5_journal import repair_journal
from daq_storage.writers._hdf5_options import (
    Hdf5Options,
    check_frame_chunk,
    check_storable,
    chunk_encoder,
    filters,
)
from daq_storage.writers._hdf5_strings import CategoriesFull, Coder
from daq_storage.writers._hdf5_superblock import cover_written
from daq_storage.writers._hdf5_tables import BatchPlan, NameClash, Planned, TableStream

__all__ = ["Hdf5Writer", "repair_hdf5"]

_FILE_HOLDER = "_metadata"  # sanitised stream names never start with "_"
_STREAM_HOLDER = "_stream_metadata"
# HDF5 reports failed writes (disk full, file-size limit) through h5py as RuntimeError.
_H5_ERRORS: tuple[type[Exception], ...] = (RuntimeError,)
_CONFIG_KEYS = ("compression", "compression_level", "chunk_size")


class Hdf5Writer(Writer):
    """One HDF5 file; one group per stream (and per later part); one resizable dataset
    per column.

    Args:
        path: the file; created (an existing empty file, as made by
            :func:`~daq_storage.naming.claim_path`, is taken over; a non-empty one is
            never overwritten). The file is valid from the start: killed before its
            first flush, it opens as an empty file.
        compression: ``none``, ``gzip`` (default: readable everywhere without plugins),
            ``lzf``, ``lz4``, ``zstd``, ``blosc-lz4``, ``blosc-zstd`` (the filters HDF5
            has here; anything else is refused). A chunk that a flush finds part-filled
            is stored uncompressed (see the module notes).
        compression_level: 0-9 (zstd 1-9; default 4), for gzip, zstd and blosc only.
        shuffle: byte-shuffle before compressing (HDF5's shuffle filter, or blosc's;
            default on); not with ``none``.
        chunk_size: rows per chunk for tables (the seeds' "samples per chunk"; default:
            about 1 MiB of data per chunk, 4096 rows of text or lists).
        frames_per_chunk: frames per chunk for images (default 1: one frame is read
            without touching its neighbours).
        swmr: single-writer/multiple-reader mode: readers may open the file while it is
            written and see flushed rows. SWMR starts at the first :meth:`flush`; no new
            stream, column or part can be added after that, nor a column widened. A
            killed SWMR file opens only with ``swmr=True`` (or after ``h5clear -s``).
        executor: threads (shared with other writers) that compress and store whole
            frame chunks; the calling thread takes the jobs no worker has started, so a
            busy executor never stalls a call. ``None``: a pool of ``min(4, CPU count)``
            threads of the writer's own, shut down at :meth:`close` (a shared one is not).
        strings: how text columns are stored: ``auto`` (default: few distinct values,
            and dictionary columns, as codes and categories), ``dictionary`` (every text
            column so), ``vlen`` (as text); see :mod:`~daq_storage.writers._hdf5_strings`.
        table_layout: ``columns`` (default: a dataset per column) or ``arrow_ipc``
            (each table stream as Arrow IPC files under ``/arrow_data``; any Arrow type
            reads back exactly; not with ``swmr``; see :mod:`~._hdf5_arrow`).

    A write that fails half-way (a disk that another process filled) leaves the file as
    it was and the writer refusing further calls (:class:`WriterClosedError`): close it
    and start a new file. Everything flushed before stays readable.
    """

    name: ClassVar[str] = "hdf5"
    suffixes: ClassVar[tuple[str, ...]] = (".h5", ".hdf5")
    supports_frames: ClassVar[bool] = True
    supports_tables: ClassVar[bool] = True
    mimetype: ClassVar[str] = "application/x-hdf5"
    on_widening: ClassVar[str] = "in_place"
    on_new_columns: ClassVar[str] = "in_place"
    on_incompatible: ClassVar[str] = "new_part"
    Options: ClassVar[type[Hdf5Options]] = Hdf5Options
    #: ``[storage]`` keys honoured, each by the option of its name.
    config_keys: ClassVar[dict[str, str]] = {k: k for k in _CONFIG_KEYS}
    path_is_directory: ClassVar[bool] = False
    path_suffix: ClassVar[str] = ".h5"
    removes_unused_output: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compression: str = "gzip",
        compression_level: int | None = None,
        shuffle: bool | None = None,
        chunk_size: int | None = None,
        frames_per_chunk: int = 1,
        swmr: bool = False,
        executor: Executor | None = None,
        strings: str | None = None,
        table_layout: str = "columns",
    ) -> None:
        options = self.validate_options(
            compression=compression, compression_level=compression_level, shuffle=shuffle,
            chunk_size=chunk_size, frames_per_chunk=frames_per_chunk, swmr=swmr,
            executor=executor, strings=strings, table_layout=table_layout,
        )  # fmt: skip
        assert isinstance(options, Hdf5Options)
        super().__init__(path)
        self.options: Hdf5Options = options
        self._filters = filters(options)
        self._encode = chunk_encoder(options)
        self._arrow = options.table_layout == "arrow_ipc"
        self._tables: dict[str, TableStream | ArrowStream] = {}  # each stream's current part
        self._retired: list[TableStream | ArrowStream] = []  # earlier parts (handles kept)
        self._part_first: dict[str, int] = {}  # the stream's row where its part starts
        self._frame_streams: dict[str, FrameStream] = {}
        self._visible: dict[str, int] = {}  # rows / frames as of the last commit
        self._groups: dict[str, h5py.Group] = {}  # each stream's first group
        self._own_pool: ThreadPoolExecutor | None = None
        self._swmr_started = False
        self._described: set[str] = set()  # streams whose first metadata is stored
        self._failure: str | None = None  # what failed half-way (then nothing is written)
        self._took_over = self.path.exists() and self.path.stat().st_size == 0
        with storage_errors(self.path, "cannot create HDF5 file", library_errors=_H5_ERRORS):
            self._claim_directory(self.path.parent)
            try:
                self._file, self._fd, self._ordered, hidden = create_file(
                    self.path, self._took_over, swmr
                )
                with publishing(hidden, self.path, self._fd, self._ordered, self._release):
                    created_at, created_ns = now()
                    self._file.attrs["created_at"] = created_at
                    self._file.attrs["created_timestamp_ns"] = np.uint64(created_ns)
                    self._file.attrs["application"] = f"daq-storage {__version__}"
                    self._flush_file()  # a valid, empty file: only now does it get its name
            except FileExistsError:
                raise FileExistsError(17, "File exists (never overwritten)") from None
        self._add_file(self.path)

    # ------------------------------------------------------------------ failures
    def _check_open(self) -> None:
        super()._check_open()
        if self._failure is not None:
            raise WriterClosedError(
                f"hdf5 writer for {self.path} failed ({self._failure}) and writes nothing "
                "more: close it and start a new file; everything flushed before stays "
                "readable"
            )

    @contextmanager
    def _writing(self, action: str) -> Iterator[None]:
        """A step that changes the file (see :func:`failing_step`): a failure in it makes
        the writer refuse any further write."""
        failed = functools.partial(setattr, self, "_failure")
        with failing_step(self.path, action, self._ordered, failed, _H5_ERRORS):
            yield

    def _flush_file(self, durable: bool = False) -> None:
        """HDF5's flush, committed at once through the journal (see :class:`OrderedFile`;
        SWMR orders its own writes: only the end-of-file address is moved up first), and
        synced if ``durable``; every dataset of a stream first brought to one length (see
        :mod:`~daq_storage.writers._hdf5_tables`); what it made visible then counted."""
        for table in self._tables.values():
            table.level()
        for target in self._frame_streams.values():
            target.write_ids()
        if self._ordered is None:
            cover_written(self._fd)
            self._file.flush()
            if durable:
                fsync_paths([self.path])
        else:
            self._file.flush()
            self._ordered.commit(durable)
        for stream, table in self._tables.items():
            self._visible[stream] = self._part_first[stream] + table.stored_rows
        for stream, target in self._frame_streams.items():
            self._visible[stream] = len(target)

    def _release(self) -> None:
        """Close HDF5's file (its updates not committed) and the descriptor."""
        if self._file.id.valid:  # an error from this close is not the one to report
            with contextlib.suppress(Exception):
                self._file.close()
        if self._ordered is not None:
            self._ordered.release()
        else:
            os.close(self._fd)

    # ------------------------------------------------------------------ structure
    def _group(self, stream: str, table: bool = False) -> h5py.Group:
        """The stream's first group, made if need be; a ``table`` stream's in the Arrow
        IPC layout under ``/arrow_data`` (moved there if its metadata made it before)."""
        group = self._groups.get(stream)
        key = table_key(self._safe_stream(stream), self._arrow and table)
        if group is None or (table and group.name != f"/{key}"):  # new, or to move
            self._check_can_create(stream)
            group = self._groups[stream] = place_group(self._file, key, stream, group)
        return group

    def _safe_stream(self, stream: str) -> str:
        safe = super()._safe_stream(stream)
        if self._arrow and safe == ARROW_ROOT:
            raise InvalidName(f"{self.path}: stream name {stream!r} is the group of the "
                              "Arrow IPC layout's tables; choose another")  # fmt: skip
        return safe

    def _check_can_create(self, stream: str) -> None:
        if self._swmr_started:
            raise UnsupportedData(
                f"{self.path}: SWMR mode has started; stream {stream!r} cannot gain new "
                "datasets or parts (write every stream and column once before the first "
                "flush)"
            )

    def _may_widen(self, stream: str, column: Column, stored: str) -> None:
        if self._swmr_started:
            raise SchemaMismatch(
                f"stream {stream!r} column {column.name!r}: widening {stored} to "
                f"{column.attrs['arrow_type']} rewrites the dataset, which SWMR mode "
                "(started at the first flush) does not allow"
            )

    # ------------------------------------------------------------------ tables
    def check_batch(self, stream: str, batch: Any) -> SchemaChange:
        """What writing ``batch`` would change (see :meth:`Writer.check_batch`); every
        check :meth:`write_batch` makes before it touches the file is made here, so a
        batch accepted here is stored there (barring I/O errors)."""
        return self._plan_batch(stream, self._check_batch(stream, batch)).change

    def _check_table_schema(self, stream: str, schema: pa.Schema) -> None:
        if self._arrow:  # any Arrow type; its description must be storable text
            schema_json(schema, {})
        else:
            check_storable(stream, schema)

    def _plan_batch(self, stream: str, batch: pa.RecordBatch) -> BatchPlan:
        """Every check of a batch, nothing written: the change and where it goes."""
        if stream in self._frame_specs or stream in self._frame_streams:
            raise SchemaMismatch(f"stream {stream!r} holds frames; tables go to another stream")
        change, action = self._plan_change(stream, batch.schema)
        current = self._tables.get(stream)
        part = current is not None
        if self._arrow:
            if current is not None and action != "new_part":
                return BatchPlan(change, current, [], False, False)
            if part:
                self._check_can_create(stream)
            return BatchPlan(change, ArrowStream(self._filters, self.options.chunk_size), [],
                             part, False)  # fmt: skip

        def plan_on(table: TableStream) -> list[Planned]:
            return table.plan(stream, batch, may_create=lambda: self._check_can_create(stream),
                              may_widen=functools.partial(self._may_widen, stream))  # fmt: skip

        plain: frozenset[str] = frozenset()
        if isinstance(current, TableStream) and action != "new_part":
            try:
                return BatchPlan(change, current, plan_on(current), False, False)
            except (NameClash, CategoriesFull) as exc:
                if self._swmr_started:
                    raise
                if isinstance(exc, CategoriesFull):  # that column as text from here on
                    plain = frozenset({exc.column})
        coder = Coder(self.options.string_mode, self.options.swmr, plain)
        fresh = TableStream(self._filters, self.options.chunk_rows, coder, self._encode, self._pool)
        if part:
            self._check_can_create(stream)
        return BatchPlan(change, fresh, plan_on(fresh), part, part and action != "new_part")

    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        """Append a table (see :meth:`Writer.write_batch` and the module notes on schema
        changes). Rows are stored a chunk at a time and at :meth:`flush`.

        Raises:
            InvalidName: a column name is empty or holds NUL.
            UnsupportedData: a type HDF5 cannot store, text holding NUL; in SWMR mode, a
                change that needs a new dataset or part.
            SchemaMismatch: two columns of the batch (or a column and another's
                ``.valid`` mask) on one dataset; in SWMR mode, a widening.
        """
        batch = self._check_batch(stream, batch)
        planned = self._plan_batch(stream, batch)  # a refused batch changes nothing
        self._ensure_room(batch.nbytes, f"stream {stream!r}", self.path)
        with self._writing(f"cannot write stream {stream!r}"):
            table = planned.table
            if planned.new_part:
                self._start_part(stream, table)
            elif stream not in self._tables:
                table.attach(self._group(stream, table=True))
                self._tables[stream] = table
                self._part_first[stream] = 0
            if isinstance(table, ArrowStream):
                table.append(batch)
                changed = False  # a dataset made here appears at the next commit
            else:
                changed = table.append(planned.plan, batch.num_rows)
            self._observe_metadata(stream, batch)
            if planned.forced:  # a new part for a name clash: its schema is the batch's
                self._table_schemas[stream] = batch.schema.remove_metadata()
            first = self._table_metadata[stream].first or {}
            if stream not in self._described:
                self._described.add(stream)
                group = self._groups[stream]
                for key, value in new_attributes(group, first):
                    self._set_attribute(group, key, value, stream)
            schema = self._table_schemas[stream]
            if changed or table.schema is None or not table.schema.equals(schema):
                # rewriting an attribute every batch costs more than the rows
                table.group.attrs["schema"] = schema_json(schema, first)
                table.schema = schema
            if changed:  # new or replaced datasets: on disk before rows depend on them
                self._flush_file()
        self._stats.batches += 1
        self._stats.rows += batch.num_rows
        self._stats.bytes_written += batch.nbytes

    def _start_part(self, stream: str, table: TableStream | ArrowStream) -> None:
        """Continue ``stream`` in ``table``, in a new group ``<stream>__partNNNN``: the
        current part's rows stored, the parts recorded (see the module notes), and
        committed before any row of the new part."""
        self._tables[stream].flush()
        self._retired.append(self._tables[stream])
        safe = self._safe_stream(stream)
        first_row = self._table_metadata[stream].rows
        if stream not in self._parts:
            self._add_part(stream, StreamPart(self.path, self._groups[stream].name, 0))
        key = table_key(f"{safe}__part{len(self._parts[stream]) + 1:04d}", self._arrow)
        table.attach(make_part(self._file, key, stream, first_row))
        self._tables[stream] = table
        self._part_first[stream] = first_row
        self._add_part(stream, StreamPart(self.path, f"/{key}", first_row))
        parts = [{"key": part.key, "first": part.first} for part in self._parts[stream]]
        self._groups[stream].attrs["parts"] = json.dumps(parts)
        self._flush_file()  # the replaced attribute's space is reused only after this

    # ------------------------------------------------------------------ frames
    def write_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any] | Sequence[npt.NDArray[Any]],
        *,
        timestamps_ns: npt.ArrayLike | None = None,
        frame_numbers: npt.ArrayLike | None = None,
    ) -> None:
        """Append frames to ``<stream>/frames`` (ids to ``timestamp_ns``, ``frame_number``).

        Whole chunks are stored at once: with ``none``, ``gzip``, ``zstd`` and
        ``blosc-*`` compression by direct chunk writes, compressed and written by the
        executor's threads (and this thread) in parallel. Frames short of a whole chunk
        wait (copied) for the next call or :meth:`flush`.
        """
        if stream in self._tables:
            raise SchemaMismatch(f"stream {stream!r} holds a table; frames go to another stream")
        block = self._check_frames(stream, frames, timestamps_ns, frame_numbers)
        self._ensure_room(block.frames.nbytes, f"frames of stream {stream!r}", self.path)
        with self._writing(f"cannot write frames of stream {stream!r}"):
            target = self._frame_stream(stream, block)
            target.add(block, self._encode, self._pool)
        self._record_frames(stream, block)  # stored: only now counted
        self._stored = True
        self._stats.frames += len(block)
        self._stats.bytes_written += block.frames.nbytes

    def _check_frame_format(self, stream: str, frames: npt.NDArray[Any]) -> None:
        check_frame_chunk(self.options, stream, frames)  # before anything is created

    def _pool(self) -> Executor:
        if self.options.executor is not None:
            return self.options.executor
        if self._own_pool is None:
            self._own_pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1), "daq_storage_hdf5")
        return self._own_pool

    def _frame_stream(self, stream: str, block: FrameBlock) -> FrameStream:
        target = self._frame_streams.get(stream)
        if target is None:
            self._check_can_create(stream)
            target = FrameStream.create(self._group(stream), block, self.options.frames_per_chunk,
                                        self._filters)  # fmt: skip
            self._frame_streams[stream] = target
            self._flush_file()  # the new datasets on disk before frames depend on them
        return target

    # ------------------------------------------------------------------ progress
    def visible(self, stream: str) -> int:
        """Rows or frames the last commit (a :meth:`flush`, or a change of the file's
        structure) put in the file: what a reader opening it now finds."""
        self._known_stream(stream)
        return self._visible.get(stream, 0)

    def describe(self, stream: str) -> StreamDescription:
        """Where ``stream`` lives: for frames the ``/<stream>/frames`` dataset (ids in
        ``timestamp_ns`` and ``frame_number`` beside it), for a table its group, its
        columns (Arrow types of the current part) and their rows per chunk when every
        column has the same (``()`` otherwise)."""
        self._known_stream(stream)
        safe = self._safe_stream(stream)
        codec = None if self.options.compression == "none" else self.options.compression
        described = functools.partial(
            StreamDescription, stream=stream, format=self.name, mimetype=self.mimetype,
            path=self.path, visible=self._visible.get(stream, 0),
            accepted=self.accepted(stream), compression=codec,
        )  # fmt: skip
        target = self._frame_streams.get(stream)
        if target is not None:
            key = f"/{safe}/frames"
            return described(
                kind="frames", key=key, parts=self._stream_parts(stream, StreamPart(
                    self.path, key, 0)), dtype=str(target.frames.dtype),
                shape=tuple(target.frames.shape[1:]), chunk_shape=tuple(target.frames.chunks),
                extra_keys={"timestamps_ns": f"/{safe}/timestamp_ns",
                            "frame_numbers": f"/{safe}/frame_number"},
            )  # fmt: skip
        table = self._tables[stream]
        chunks = {store.chunk for store in table.columns.values()}
        key = f"/{table_key(safe, self._arrow)}"
        return described(
            kind="table", key=key, parts=self._stream_parts(stream, StreamPart(self.path, key, 0)),
            columns=dict(leaf_types(self._table_schemas[stream])),
            chunk_shape=(chunks.pop(),) if len(chunks) == 1 else (),
        )  # fmt: skip

    # ------------------------------------------------------------------ metadata
    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        """An attribute of the file or of the stream's (first) group; JSON text for dicts
        and lists; values over 64 KiB become datasets under ``/_metadata`` (file) or
        ``/_stream_metadata/<stream>``, the attribute saying where."""
        self._check_open()
        check_metadata(self.path, key, value, stream)  # before anything changes
        if stream is not None and stream not in self._groups:
            self._check_can_create(stream)
        with self._writing(f"cannot store metadata {key!r}"):
            target = self._file if stream is None else self._group(stream)
            self._set_attribute(target, key, value, stream)
        self._stored = True

    def _set_attribute(self, target: h5py.Group, key: str, value: Any, stream: str | None) -> None:
        holder = _FILE_HOLDER
        if stream is not None:
            holder = f"{_STREAM_HOLDER}/{self._safe_stream(stream)}"
        with storage_errors(self.path, f"cannot store metadata {key!r}", library_errors=_H5_ERRORS):
            if store_attribute(self._file, target, key, value, holder):
                self._flush_file()  # freed space is reused only once nothing points at it

    def _store_metadata_changes(self) -> None:
        """``metadata_changes`` of each table stream whose metadata changed since."""
        for stream, metadata in self._table_metadata.items():
            if len(metadata.changes) > metadata.stored_changes:
                changes = metadata.changes_json()
                self._set_attribute(self._groups[stream], METADATA_CHANGES, changes, stream)
                metadata.stored_changes = len(metadata.changes)

    # ------------------------------------------------------------------ lifecycle
    def flush(self, *, durable: bool = False) -> None:
        """Store every row and frame written so far (see the module notes) and commit
        the file's metadata saying so: :meth:`visible` then equals :meth:`accepted`.
        ``durable=True`` also syncs the file (see
        :meth:`~daq_storage.writers._hdf5_file.OrderedFile.commit`)."""
        self._check_open()
        with self._writing("cannot flush HDF5 file"):
            self._store_held()
            if self.options.swmr and not self._swmr_started:
                self._file.swmr_mode = True
                self._swmr_started = True
            self._flush_file(durable)

    def _store_held(self) -> None:
        for table in self._tables.values():
            table.flush()
        for target in self._frame_streams.values():
            target.flush()
        self._store_metadata_changes()

    def _close(self) -> None:
        try:
            if self._failure is None:
                with self._writing("cannot close HDF5 file"):
                    self._store_held()
                    if self._ordered is None:
                        cover_written(self._fd)
                    self._file.close()
                    if self._ordered is not None:
                        self._ordered.commit()
                self._visible.update({stream: self.accepted(stream) for stream in self.streams})
            # else: what HDF5 holds is not committed; the file stays as the last flush
            # left it, and the rows held here are given up
        finally:
            if self._own_pool is not None:
                self._own_pool.shutdown()
                self._own_pool = None
            self._release()

    def _discard_unused(self) -> None:
        if self._took_over:  # the empty file that claimed the name stays, empty as it was
            with contextlib.suppress(OSError):
                os.truncate(self.path, 0)
            self._stats.files.remove(self.path)
        super()._discard_unused()


def repair_hdf5(path: str | os.PathLike[str]) -> str | None:
    """Apply the journal a writer killed inside a commit left beside the HDF5 file at
    ``path`` (a torn one is removed: that commit never reached the file); what was done,
    or ``None`` when there is no journal (a file killed outside a commit opens as it is).

    Raises:
        StorageIOError: ``EBUSY`` when a live writer has the file open; an I/O failure.
    """
    with storage_errors(os.fspath(path), "cannot repair HDF5 file"):
        return repair_journal(path)
