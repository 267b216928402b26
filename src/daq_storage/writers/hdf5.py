"""HDF5 (h5py + hdf5plugin), in the layout of the seeds' storage actor.

```
file.h5                      attrs: created_at, created_timestamp_ns, application, <meta>
├── <stream>/        attrs: instrument_id, created_at, schema (Arrow schema JSON), the
│   │                schema metadata of the first batch, metadata_changes, <metadata>
│   ├── <column>             1-D (or N-d for fixed-size lists / tensors), chunked, resizable;
│   │                        attrs: schema (the field as JSON), arrow_type, the field's
│   │                        metadata (units, long_name, scale_factor, ...)
│   ├── <column>.valid       bool mask, only for columns that have had nulls
│   ├── frames               (n, *frame_shape) for frame streams
│   ├── timestamp_ns         (n,) uint64 for frame streams; CF units and calendar
│   └── frame_number         (n,) uint64 for frame streams
├── _metadata/               file metadata values too large for an attribute (> 64 KiB)
└── _stream_metadata/<stream>/   the same for a stream's metadata
```

A column's dataset is named as the column, with ``%`` and ``/`` percent-encoded (``a/b``
is ``a%2Fb``); the ``schema`` attributes keep every original name. Stream names never
start with ``_`` (see :func:`~daq_storage.naming.sanitize_name`), so the two metadata
groups are never a stream's.

Times (Arrow ``timestamp`` columns, frames' ``timestamp_ns``) are integers with the CF
attributes ``units = "nanoseconds since 1970-01-01"`` (in the column's unit) and
``calendar = "proleptic_gregorian"``; durations have ``units`` and ``dtype``
(``timedelta64[ms]``). Metadata values are attributes: numbers and text as they are,
lists and dicts as JSON text.

The file is in the HDF5 1.8 format (readable by HDF5 1.8 and later: h5py, MATLAB, h5dump),
with attributes in dense storage (a name index: many keys stay fast); ``swmr=True``
files are in the 1.10 format SWMR needs. A kill loses nothing a flush stored: see
:mod:`daq_storage.writers._hdf5_tables` for how chunks are written.

Every flush's updates are committed through a journal (``<file>.h5.journal``, see
:mod:`~daq_storage.writers._hdf5_file`). A writer killed outside a commit leaves a file
that opens as it is; a writer killed inside a commit leaves a journal, and h5py may not
open the file until ``daq-storage repair`` (or :func:`repair_hdf5`) applies it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

import h5py
import hdf5plugin
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage._version import __version__
from daq_storage.config import StorageSettings
from daq_storage.errors import (
    ConfigError,
    DaqStorageError,
    InvalidName,
    SchemaMismatch,
    StorageIOError,
    UnsupportedData,
    WriterClosedError,
)
from daq_storage.schema import METADATA_CHANGES, Column, flatten_batch, time_attrs
from daq_storage.writers._base import Writer, json_value, storage_errors
from daq_storage.writers._chunks import (
    ChunkEncode,
    blosc_encoder,
    deflate_encoder,
    zstd_encoder,
)
from daq_storage.writers._hdf5_file import OrderedFile
from daq_storage.writers._hdf5_frames import FrameStream
from daq_storage.writers._hdf5_journal import journal_path, repair_journal
from daq_storage.writers._hdf5_superblock import cover_written
from daq_storage.writers._hdf5_tables import (
    TableStream,
    dataset_name,
    field_json,
    metadata_refusal,
)

__all__ = ["Hdf5Writer", "repair_hdf5"]

_COMPRESSIONS = ("none", "gzip", "lzf", "lz4", "zstd", "blosc-lz4", "blosc-zstd")
_ATTRIBUTE_LIMIT = 64 * 1024
_TABLE_CHUNK_BYTES = 1 << 20
_CHUNK_LIMIT = (1 << 32) - 1  # HDF5 stores a chunk's size in 32 bits
_FILE_HOLDER = "_metadata"  # sanitised stream names never start with "_"
_STREAM_HOLDER = "_stream_metadata"
# HDF5 reports failed writes (disk full, file-size limit) through h5py as RuntimeError.
_H5_ERRORS: tuple[type[Exception], ...] = (RuntimeError,)


def _filters(compression: str, level: int, shuffle: bool) -> dict[str, Any]:
    if compression == "none":
        return {}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": level, "shuffle": shuffle}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": shuffle}
    if compression == "lz4":
        return {**hdf5plugin.LZ4(), "shuffle": shuffle}
    if compression == "zstd":
        return {**hdf5plugin.Zstd(clevel=max(1, level)), "shuffle": shuffle}
    cname: Any = compression.removeprefix("blosc-")
    return dict(hdf5plugin.Blosc(cname=cname, clevel=level, shuffle=hdf5plugin.Blosc.SHUFFLE))


def _chunk_encoder(compression: str, level: int, shuffle: bool) -> ChunkEncode | None:
    """Our encoder for whole frame chunks (``None``: none, or HDF5 compresses them)."""
    if compression == "gzip":
        return deflate_encoder(level, shuffle)
    if compression == "zstd":
        return zstd_encoder(max(1, level), shuffle)
    if compression.startswith("blosc-"):
        return blosc_encoder(compression.removeprefix("blosc-"), level)
    return None


def _now() -> tuple[str, int]:
    ns = time.time_ns()
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(), ns


def _dense_attributes(creation: Any) -> None:
    """A group's attributes in dense storage from the start (a name index: many keys stay
    fast; no conversion from compact storage later). Tracking their creation order also
    gives the group the newer object header dense storage needs, in a file otherwise of
    the earliest structures (see :class:`OrderedFile`)."""
    creation.set_obj_track_times(False)  # as h5py: a file's bytes do not depend on when
    creation.set_attr_creation_order(h5py.h5p.CRT_ORDER_TRACKED)
    creation.set_attr_phase_change(0, 0)


def _create_file(
    path: os.PathLike[str], take_over: bool, swmr: bool
) -> tuple[h5py.File, int, OrderedFile | None]:
    """A new file, its descriptor, and (not for SWMR) the :class:`OrderedFile` HDF5
    writes through: the HDF5 1.8 format at the earliest structures it allows (1.10 for
    SWMR); group attributes in dense storage (:func:`_dense_attributes`); no chunk cache
    (every chunk reaches the file when written, none waits for a flush).

    Raises:
        FileExistsError: ``path`` exists (and is not an empty file to take over).
    """
    access = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    if swmr:
        access.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
    else:  # the earliest structures (readable everywhere) but for dense attributes
        access.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_V18)
    access.set_cache(0, 0, 0, 0.75)
    creation = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    _dense_attributes(creation)
    journal = journal_path(path)
    if journal.exists():  # a killed writer's commit, for repair to apply to another file
        raise StorageIOError(errno.EEXIST, f"a killed writer's journal {journal.name} is left "
                             "there: run daq-storage repair first", str(path))  # fmt: skip
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_TRUNC if take_over else os.O_CREAT | os.O_EXCL)
    fd = os.open(path, flags, 0o644)
    try:
        ordered = None
        name = os.fsencode(path)
        if not swmr:  # SWMR orders its own writes, through HDF5's own driver only
            ordered = OrderedFile(fd, journal)
            access.set_fileobj_driver(h5py.h5fd.fileobj_driver, ordered)
        made = h5py.h5f.create(name, h5py.h5f.ACC_TRUNC, fapl=access, fcpl=creation)
        return h5py.File(made), fd, ordered
    except BaseException:
        os.close(fd)
        raise


class Hdf5Writer(Writer):
    """One HDF5 file; one group per stream; one resizable dataset per column.

    Args:
        path: the file; created (an existing empty file, as made by
            :func:`~daq_storage.naming.claim_path`, is taken over; a non-empty one is
            never overwritten). The file is valid from the start: killed before its
            first flush, it opens as an empty file.
        compression: ``none``, ``gzip`` (default: readable everywhere without plugins),
            ``lzf``, ``lz4``, ``zstd``, ``blosc-lz4``, ``blosc-zstd``. A chunk that a
            flush finds part-filled is stored uncompressed (see the module notes).
        compression_level: 0-9.
        shuffle: byte-shuffle before gzip/lzf/lz4/zstd (blosc always shuffles).
        chunk_size: rows per chunk for tables (the seeds' "samples per chunk"; default:
            about 1 MiB of data per chunk).
        frames_per_chunk: frames per chunk for images (default 1: one frame is read
            without touching its neighbours).
        swmr: single-writer/multiple-reader mode: readers may open the file while it is
            written and see flushed rows. SWMR starts at the first :meth:`flush`; no new
            stream or column can be added after that. A killed SWMR file opens only
            with ``swmr=True`` (or after ``h5clear -s``).
        threads: pool threads that compress and store frame chunks with gzip, zstd or
            blosc (default: CPU count; the calling thread joins them).

    A write that fails half-way (a disk that another process filled) leaves the file as
    it was and the writer refusing further calls (:class:`WriterClosedError`): close it
    and start a new file. Everything flushed before stays readable.
    """

    name: ClassVar[str] = "hdf5"
    suffixes: ClassVar[tuple[str, ...]] = (".h5", ".hdf5")
    supports_frames: ClassVar[bool] = True
    supports_tables: ClassVar[bool] = True
    path_is_directory: ClassVar[bool] = False
    path_suffix: ClassVar[str] = ".h5"
    removes_unused_output: ClassVar[bool] = True

    @classmethod
    def options_from_config(cls, settings: StorageSettings) -> dict[str, Any]:
        """``compression`` (if HDF5 has it), ``compression_level``, ``chunk_size``."""
        options: dict[str, Any] = {
            "compression_level": settings.compression_level,
            "chunk_size": settings.chunk_size,
        }
        if settings.compression in _COMPRESSIONS:
            options["compression"] = settings.compression
        return options

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compression: str = "gzip",
        compression_level: int = 4,
        shuffle: bool = True,
        chunk_size: int | None = None,
        frames_per_chunk: int = 1,
        swmr: bool = False,
        threads: int | None = None,
    ) -> None:
        if compression not in _COMPRESSIONS:
            raise ConfigError(f"hdf5 compression {compression!r} is not one of {_COMPRESSIONS}")
        if not 0 <= compression_level <= 9:
            raise ConfigError(f"hdf5 compression_level must be 0..9, got {compression_level}")
        if chunk_size is not None and chunk_size < 1:
            raise ConfigError(f"hdf5 chunk_size must be >= 1, got {chunk_size}")
        if frames_per_chunk < 1:
            raise ConfigError(f"hdf5 frames_per_chunk must be >= 1, got {frames_per_chunk}")
        super().__init__(path)
        self.compression = compression
        self.compression_level = compression_level
        self.chunk_size = chunk_size
        self.frames_per_chunk = frames_per_chunk
        self.swmr = swmr
        self._filters = _filters(compression, compression_level, shuffle)
        self._tables: dict[str, TableStream] = {}
        self._frame_streams: dict[str, FrameStream] = {}
        self._took_over = self.path.exists() and self.path.stat().st_size == 0
        with storage_errors(self.path, "cannot create HDF5 file", library_errors=_H5_ERRORS):
            self._claim_directory(self.path.parent)
            try:
                self._file, self._fd, self._ordered = _create_file(self.path, self._took_over,
                                                                   swmr)  # fmt: skip
            except FileExistsError:
                raise FileExistsError(17, "File exists (never overwritten)") from None
            try:
                created_at, created_ns = _now()
                self._file.attrs["created_at"] = created_at
                self._file.attrs["created_timestamp_ns"] = np.uint64(created_ns)
                self._file.attrs["application"] = f"daq-storage {__version__}"
                self._flush_file()  # a valid, empty file from now on, whenever it is killed
            except BaseException:
                self._release()
                raise
        self._add_file(self.path)
        self._pool: ThreadPoolExecutor | None = None
        self._threads = threads or os.cpu_count() or 1
        self._encode = _chunk_encoder(compression, compression_level, shuffle)
        self._groups: dict[str, h5py.Group] = {}
        self._swmr_started = False
        self._described: set[str] = set()  # streams whose first metadata is stored
        self._failure: str | None = None  # what failed half-way (then nothing is written)

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
        """``storage_errors`` for a step that changes the file: a failure in it (after
        the checks, so the file may be half-changed) makes the writer refuse any further
        write, so nothing is written on top of a state the file does not have."""
        try:
            with storage_errors(self.path, action, library_errors=_H5_ERRORS):
                try:
                    yield
                except Exception as exc:
                    # HDF5 goes on after a failed write of the file, and h5py may then
                    # report another error (errno 5, or a SystemError): the first one
                    failure = self._ordered.failure if self._ordered is not None else None
                    if failure is None:
                        raise
                    raise OSError(failure.errno, failure.strerror) from exc
        except StorageIOError as exc:
            self._failure = f"{action}: {exc.strerror}"
            raise
        except DaqStorageError:  # refused by a check, before anything changed
            raise
        except Exception as exc:
            self._failure = f"{action}: {type(exc).__name__}: {exc}"
            raise StorageIOError(errno.EIO, self._failure, str(self.path)) from exc

    def _flush_file(self) -> None:
        """HDF5's flush, its updates committed at once through the journal (see
        :class:`OrderedFile`; for SWMR, HDF5 orders them, and only the end-of-file address
        is moved up first). Every dataset of a stream is first brought to one length (see
        :mod:`~daq_storage.writers._hdf5_tables`)."""
        for table in self._tables.values():
            table.level()
        for target in self._frame_streams.values():
            target.write_ids()
        if self._ordered is None:
            cover_written(self._fd)
            self._file.flush()
        else:
            self._file.flush()
            self._ordered.commit()

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
    def _group(self, stream: str) -> h5py.Group:
        group = self._groups.get(stream)
        if group is None:
            safe = self._safe_stream(stream)
            self._check_can_create(stream)
            creation = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
            _dense_attributes(creation)
            made = h5py.h5g.create(self._file.id, self._file._e(safe), lcpl=self._file._lcpl,
                                   gcpl=creation)  # fmt: skip
            group = self._groups[stream] = h5py.Group(made)
            group.attrs["instrument_id"] = stream
            group.attrs["created_at"] = _now()[0]
        return group

    def _check_can_create(self, stream: str) -> None:
        if self._swmr_started:
            raise UnsupportedData(
                f"{self.path}: SWMR mode has started; stream {stream!r} cannot gain new "
                "datasets (write every stream and column once before the first flush)"
            )

    def _chunk_rows(self, column: Column) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        if column.kind != "fixed":
            return 4096
        row_bytes = max(1, column.values[:1].nbytes or column.values.dtype.itemsize)
        return int(max(1024, min(1 << 20, _TABLE_CHUNK_BYTES // row_bytes)))

    def _refuse_widening(self, stream: str) -> Callable[[Column, str], None]:
        def refuse(column: Column, stored: str) -> None:
            if self._swmr_started:
                raise SchemaMismatch(
                    f"stream {stream!r} column {column.name!r}: widening {stored} to "
                    f"{column.attrs['arrow_type']} rewrites the dataset, which SWMR mode "
                    "(started at the first flush) does not allow"
                )

        return refuse

    # ------------------------------------------------------------------ tables
    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        """Append a table (see :meth:`Writer.write_batch`). Rows are stored a chunk at a
        time and at :meth:`flush`.

        Raises:
            InvalidName: a column name is empty or holds NUL.
            SchemaMismatch: a type change that is not a safe widening, or two columns
                (or a column and another's ``.valid`` mask) on one dataset.
        """
        batch = self._check_batch(stream, batch)
        if stream in self._frame_specs:
            raise SchemaMismatch(f"stream {stream!r} holds frames; tables go to another stream")
        columns = flatten_batch(batch, stream=stream)
        table = self._tables.get(stream)
        planner = table or TableStream(self._filters, self._chunk_rows)
        # Every column checked before the file is touched: a refused batch changes nothing.
        plan = planner.plan(stream, batch, columns,
                            may_create=lambda: self._check_can_create(stream),
                            may_widen=self._refuse_widening(stream))  # fmt: skip
        self._ensure_room(batch.nbytes, f"stream {stream!r}", self.path)
        with self._writing(f"cannot write stream {stream!r}"):
            if table is None:
                planner.attach(self._group(stream))
                table = self._tables[stream] = planner
            changed = table.append(plan, batch.num_rows)
            self._observe_metadata(stream, batch)
            group = table.group
            first = self._table_metadata[stream].first or {}
            if stream not in self._described:
                self._described.add(stream)
                for key, value in first.items():
                    # Attributes set before (ours, or by set_metadata) stay; the schema
                    # attribute holds every key.
                    usable = key and "\x00" not in key and not metadata_refusal(key, value)
                    if usable and key not in group.attrs:
                        self._set_attribute(group, key, value, stream)
            if changed or table.schema is None or not table.schema.equals(batch.schema):
                # rewriting an attribute every batch costs more than the rows
                group.attrs["schema"] = _schema_json(batch.schema, first)
                table.schema = batch.schema
            if changed:  # new or replaced datasets: on disk before rows depend on them
                self._flush_file()
        self._stats.batches += 1
        self._stats.rows += batch.num_rows
        self._stats.bytes_written += batch.nbytes

    # ------------------------------------------------------------------ frames
    def write_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any],
        *,
        timestamps_ns: npt.ArrayLike | None = None,
        frame_numbers: npt.ArrayLike | None = None,
    ) -> None:
        """Append frames to ``<stream>/frames`` (and their ids to ``timestamp_ns`` and
        ``frame_number``).

        Whole chunks are stored at once: with ``none``, ``gzip``, ``zstd`` and
        ``blosc-*`` compression by direct chunk writes, compressed and written by a
        thread pool (and this thread) in parallel. Frames short of a whole chunk wait
        (copied) for the next call or :meth:`flush`.
        """
        if stream in self._tables:
            raise SchemaMismatch(f"stream {stream!r} holds a table; frames go to another stream")
        block = self._check_frames(stream, frames, timestamps_ns, frame_numbers)
        self._ensure_room(block.frames.nbytes, f"frames of stream {stream!r}", self.path)
        with self._writing(f"cannot write frames of stream {stream!r}"):
            target = self._frame_stream(stream, block)
            target.add(block, self._encode, self._get_pool)
        self._stored = True
        self._stats.frames += len(block)
        self._stats.bytes_written += block.frames.nbytes

    def _check_frame_format(self, stream: str, frames: npt.NDArray[Any]) -> None:
        """Frames HDF5 cannot chunk are refused before anything is created."""
        shape = frames.shape[1:]
        if 0 in shape:
            raise UnsupportedData(f"stream {stream!r}: frame shape {shape} has no pixels")
        if self.frames_per_chunk * int(np.prod(shape)) * frames.dtype.itemsize > _CHUNK_LIMIT:
            raise UnsupportedData(
                f"stream {stream!r}: {self.frames_per_chunk} frames of shape {shape} "
                f"{frames.dtype} exceed HDF5's 4 GiB chunk limit; lower frames_per_chunk"
            )

    def _get_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, "daq_storage_hdf5")
        return self._pool

    def _frame_stream(self, stream: str, block: Any) -> FrameStream:
        target = self._frame_streams.get(stream)
        if target is not None:
            return target
        self._check_can_create(stream)
        group = self._group(stream)
        shape = block.frames.shape[1:]
        frames = group.create_dataset(
            "frames", shape=(0, *shape), maxshape=(None, *shape), dtype=block.frames.dtype,
            chunks=(self.frames_per_chunk, *shape), **self._filters,
        )  # fmt: skip
        frames.attrs["dim_names"] = ",".join(["frame", "y", "x"][: 1 + len(shape)])
        stamps, numbers = (
            group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.uint64,
                                 chunks=(4096,))
            for name in ("timestamp_ns", "frame_number")
        )  # fmt: skip
        stamps.attrs.update(time_attrs("ns"))
        target = self._frame_streams[stream] = FrameStream(frames, stamps, numbers)
        self._flush_file()  # the new datasets on disk before frames depend on them
        return target

    # ------------------------------------------------------------------ metadata
    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        """An attribute of the file or of the stream's group; JSON text for dicts and
        lists; values over 64 KiB become datasets under ``/_metadata`` (file) or
        ``/_stream_metadata/<stream>``, the attribute saying where."""
        self._check_open()
        if not isinstance(key, str) or not key or "\x00" in key:
            raise InvalidName(f"metadata key {key!r} must be a non-empty name without NUL")
        refused = metadata_refusal(key, value)
        if refused is not None:  # refused before anything changes: the writer goes on
            where = "the file" if stream is None else f"stream {stream!r}"
            error = InvalidName if refused.startswith("metadata key ") else UnsupportedData
            raise error(f"{self.path}, {where}: {refused}")
        if stream is not None and stream not in self._groups:
            self._check_can_create(stream)
        with self._writing(f"cannot store metadata {key!r}"):
            target = self._file if stream is None else self._group(stream)
            self._set_attribute(target, key, value, stream)
        self._stored = True

    def _set_attribute(self, target: h5py.Group, key: str, value: Any, stream: str | None) -> None:
        native = (
            isinstance(value, str | float | bool | np.generic)
            or (isinstance(value, int) and -(2**63) <= value < 2**63)
            or (isinstance(value, np.ndarray) and value.dtype.kind in "biuf")
        )
        stored: Any = value if native else json_value(value, what=f"metadata {key!r}")
        size = stored.nbytes if isinstance(stored, np.ndarray | np.generic) else len(str(stored))
        replaced = key in target.attrs
        with storage_errors(self.path, f"cannot store metadata {key!r}", library_errors=_H5_ERRORS):
            if size > _ATTRIBUTE_LIMIT:
                where = _FILE_HOLDER
                if stream is not None:
                    where = f"{_STREAM_HOLDER}/{self._safe_stream(stream)}"
                holder = self._file.require_group(where)
                name = dataset_name(key)
                holder.create_dataset(name + "%", data=stored)  # never a key's name
                if name in holder:
                    del holder[name]
                    replaced = True
                holder.move(name + "%", name)
                target.attrs[key] = f"<stored in /{where}/{name}>"
            else:
                target.attrs[key] = stored
            if replaced:  # freed space is reused only once nothing on disk points at it
                self._flush_file()

    def _store_metadata_changes(self) -> None:
        """``metadata_changes`` of each table stream whose metadata changed since."""
        for stream, metadata in self._table_metadata.items():
            if len(metadata.changes) > metadata.stored_changes:
                changes = metadata.changes_json()
                self._set_attribute(self._groups[stream], METADATA_CHANGES, changes, stream)
                metadata.stored_changes = len(metadata.changes)

    # ------------------------------------------------------------------ lifecycle
    def flush(self) -> None:
        """Store every row and frame written so far (see the module notes) and make the
        file's metadata say so."""
        self._check_open()
        with self._writing("cannot flush HDF5 file"):
            self._store_held()
            if self.swmr and not self._swmr_started:
                self._file.swmr_mode = True
                self._swmr_started = True
            self._flush_file()

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
            # else: what HDF5 holds is not committed; the file stays as the last flush
            # left it, and the rows held here are given up
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            self._release()

    def _discard_unused(self) -> None:
        if self._took_over:  # the empty file that claimed the name stays, empty as it was
            with contextlib.suppress(OSError):
                os.truncate(self.path, 0)
            self._stats.files.remove(self.path)
        super()._discard_unused()


def _schema_json(schema: pa.Schema, metadata: dict[str, Any]) -> str:
    """The schema's fields as JSON, with the stream's metadata (as JSON text values)."""
    return json.dumps({
        "fields": [json.loads(field_json(f)) for f in schema],
        "metadata": {k: json.dumps(v, allow_nan=True) for k, v in metadata.items()},
    })  # fmt: skip


def repair_hdf5(path: str | os.PathLike[str]) -> str | None:
    """Apply the journal a writer killed inside a commit left beside the HDF5 file at
    ``path`` (a torn one is removed: that commit never reached the file); what was done,
    or ``None`` when there is no journal (a file killed outside a commit opens as it is).

    Raises:
        StorageIOError: ``EBUSY`` when a live writer has the file open; an I/O failure.
    """
    with storage_errors(os.fspath(path), "cannot repair HDF5 file"):
        return repair_journal(path)
