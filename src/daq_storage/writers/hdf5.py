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
└── metadata/                values too large for an attribute (> 64 KiB)
```

Times (Arrow ``timestamp`` columns, frames' ``timestamp_ns``) are integers with the CF
attributes ``units = "nanoseconds since 1970-01-01"`` (in the column's unit) and
``calendar = "proleptic_gregorian"``; durations have ``units`` and ``dtype``
(``timedelta64[ms]``). Metadata values are attributes: numbers and text as they are,
lists and dicts as JSON text.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, ClassVar

import h5py
import hdf5plugin
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage._version import __version__
from daq_storage.config import StorageSettings
from daq_storage.errors import ConfigError, SchemaMismatch, UnsupportedData
from daq_storage.schema import (
    METADATA_CHANGES,
    Column,
    FrameBlock,
    flatten_batch,
    join_frames,
    time_attrs,
    widened,
)
from daq_storage.writers._base import Writer, json_value, storage_errors
from daq_storage.writers._chunks import (
    ChunkEncode,
    blosc_encoder,
    deflate_encoder,
    split_frames,
    zstd_encoder,
)
from daq_storage.writers._hdf5_frames import FrameStream

__all__ = ["Hdf5Writer"]

_COMPRESSIONS = ("none", "gzip", "lzf", "lz4", "zstd", "blosc-lz4", "blosc-zstd")
_ATTRIBUTE_LIMIT = 64 * 1024
_TABLE_CHUNK_BYTES = 1 << 20
_STRING = h5py.string_dtype("utf-8")
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


class Hdf5Writer(Writer):
    """One HDF5 file; one group per stream; one resizable dataset per column.

    Args:
        path: the file; created (an existing empty file, as made by
            :func:`~daq_storage.naming.claim_path`, is taken over; a non-empty one is
            never overwritten).
        compression: ``none``, ``gzip`` (default: readable everywhere without plugins),
            ``lzf``, ``lz4``, ``zstd``, ``blosc-lz4``, ``blosc-zstd``.
        compression_level: 0-9.
        shuffle: byte-shuffle before gzip/lzf/lz4/zstd (blosc always shuffles).
        chunk_size: rows per chunk for tables (the seeds' "samples per chunk"; default:
            about 1 MiB of data per chunk).
        frames_per_chunk: frames per chunk for images (default 1: one frame is read
            without touching its neighbours).
        swmr: single-writer/multiple-reader mode: readers may open the file while it is
            written and see flushed rows. SWMR starts at the first :meth:`flush`; no new
            stream or column can be added after that.
        threads: pool threads that compress and store frame chunks with gzip, zstd or
            blosc (default: CPU count; the calling thread joins them).
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
        mode = "w" if self.path.exists() and self.path.stat().st_size == 0 else "w-"
        self._took_over = mode == "w"  # an empty file made to claim the name
        with storage_errors(self.path, "cannot create HDF5 file", library_errors=_H5_ERRORS):
            self._claim_directory(self.path.parent)
            try:
                self._file = h5py.File(self.path, mode, libver="latest" if swmr else "earliest")
            except FileExistsError:
                raise FileExistsError(17, "File exists (never overwritten)") from None
        created_at, created_ns = _now()
        self._file.attrs["created_at"] = created_at
        self._file.attrs["created_timestamp_ns"] = np.uint64(created_ns)
        self._file.attrs["application"] = f"daq-storage {__version__}"
        self._add_file(self.path)
        self._rows: dict[str, int] = {}  # rows per table stream
        self._datasets: dict[str, dict[str, h5py.Dataset]] = {}  # stream -> column -> dataset
        self._masks: dict[str, dict[str, h5py.Dataset]] = {}  # stream -> column -> .valid
        self._schemas: dict[str, pa.Schema] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._threads = threads or os.cpu_count() or 1
        self._encode = _chunk_encoder(compression, compression_level, shuffle)
        self._frame_streams: dict[str, FrameStream] = {}
        self._groups: dict[str, h5py.Group] = {}
        self._swmr_started = False
        self._described: set[str] = set()  # streams whose first metadata is stored

    # ------------------------------------------------------------------ structure
    def _group(self, stream: str) -> h5py.Group:
        group = self._groups.get(stream)
        if group is None:
            safe = self._safe_stream(stream)
            self._check_can_create(stream)
            group = self._groups[stream] = self._file.create_group(safe)
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

    def _create_column(self, group: h5py.Group, column: Column, rows_before: int,
                       field_json: str) -> h5py.Dataset:  # fmt: skip
        if column.kind == "string":
            dtype: Any = _STRING
            # No explicit fill: HDF5 would write "" into every new chunk's global heap
            # before the data overwrites it. Unwritten strings read back as "" anyway.
            fill: Any = None
        elif column.kind == "vlen":
            dtype = h5py.vlen_dtype(column.values[0].dtype if len(column.values) else np.float64)
            fill = None
        else:
            dtype = column.values.dtype
            fill = np.nan if dtype.kind == "f" else 0
        inner = column.values.shape[1:]
        chunk = (self._chunk_rows(column), *inner)
        filters = self._filters if column.kind == "fixed" else {}
        dataset = group.create_dataset(
            column.name, shape=(rows_before, *inner), maxshape=(None, *inner), dtype=dtype,
            chunks=chunk, fillvalue=fill, **filters,
        )  # fmt: skip
        dataset.attrs["schema"] = field_json
        for key, value in column.attrs.items():
            dataset.attrs[key] = value
        return dataset

    def _mask(self, group: h5py.Group, name: str, rows: int, default: bool) -> h5py.Dataset:
        mask = group.get(f"{name}.valid")
        if mask is None:
            mask = group.create_dataset(
                f"{name}.valid", shape=(rows,), maxshape=(None,), dtype=bool,
                chunks=(65536,), fillvalue=default, **self._filters,
            )  # fmt: skip
            mask[...] = default
            mask.attrs["meaning"] = f"True where {name} holds a value; False where it is null"
        return mask

    # ------------------------------------------------------------------ tables
    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        batch = self._check_batch(stream, batch)
        if stream in self._frame_specs:
            raise SchemaMismatch(f"stream {stream!r} holds frames; tables go to another stream")
        columns = flatten_batch(batch, stream=stream)
        self._ensure_room(batch.nbytes, f"stream {stream!r}", self.path)
        # Dataset handles are cached: looking them up in the file every batch costs more
        # than appending small batches.
        datasets = self._datasets.setdefault(stream, {})
        masks = self._masks.setdefault(stream, {})
        rows = self._rows.get(stream, 0)
        n = batch.num_rows
        # Plan every column before touching the file: a refused batch changes nothing.
        plan: list[tuple[Column, h5py.Dataset | None, np.dtype[Any] | None]] = []
        for column in columns:
            if column.kind == "string" and "\x00" in "".join(column.values):
                raise UnsupportedData(
                    f"stream {stream!r} column {column.name!r}: HDF5 strings cannot contain "
                    "NUL characters"
                )
            existing = datasets.get(column.name)
            if existing is None:
                self._check_can_create(stream)
                plan.append((column, None, None))
                continue
            old = existing.dtype
            if column.kind == "fixed":
                if existing.shape[1:] != column.values.shape[1:] or old.kind in "OS":
                    raise SchemaMismatch(
                        f"stream {stream!r} column {column.name!r}: stored as "
                        f"{existing.attrs.get('arrow_type', old)} shape {existing.shape[1:]}, "
                        f"got {column.attrs['arrow_type']} shape {column.values.shape[1:]}"
                    )
                target = widened(old, column.values.dtype)
                if target is None:
                    raise SchemaMismatch(
                        f"stream {stream!r} column {column.name!r}: type changed from "
                        f"{existing.attrs.get('arrow_type', old)} to {column.attrs['arrow_type']}"
                        " (not a safe widening)"
                    )
                if target != old and self._swmr_started:
                    raise SchemaMismatch(
                        f"stream {stream!r} column {column.name!r}: widening "
                        f"{existing.attrs.get('arrow_type', old)} to {column.attrs['arrow_type']}"
                        " rewrites the dataset, which SWMR mode (started at the first flush) "
                        "does not allow"
                    )
                plan.append((column, existing, target))
            else:
                same = (column.kind == "string") == (h5py.check_string_dtype(old) is not None)
                if not same:
                    raise SchemaMismatch(
                        f"stream {stream!r} column {column.name!r}: type changed from "
                        f"{existing.attrs.get('arrow_type', old)} to {column.attrs['arrow_type']}"
                    )
                plan.append((column, existing, None))
        previous = self._schemas.get(stream)
        schema_changed = previous is None or not previous.equals(batch.schema)
        with storage_errors(
            self.path, f"cannot write stream {stream!r}", library_errors=_H5_ERRORS
        ):
            group = self._group(stream)
            fields = {f.name: f for f in batch.schema}
            for column, dataset, target in plan:
                if dataset is None:
                    top = fields.get(column.name.split(".")[0])
                    dataset = self._create_column(
                        group, column, rows, _field_json(top) if top is not None else "{}"
                    )
                    if rows:  # a column that appears mid-run: earlier rows are invalid
                        masks[column.name] = self._mask(group, column.name, rows, False)
                elif target is not None and target != dataset.dtype:
                    dataset = self._widen(group, dataset, target, column)
                datasets[column.name] = dataset
                end = rows + n
                dataset.resize(end, axis=0)
                if n:
                    dataset[rows:end] = column.values
                if column.valid is not None or column.name in masks:
                    mask = masks.get(column.name) or self._mask(group, column.name, rows, True)
                    masks[column.name] = mask
                    mask.resize((end,))
                    mask[rows:end] = True if column.valid is None else column.valid
            present = {c.name for c in columns}
            for name, dataset in datasets.items():  # columns absent from this batch: null
                if name in present:
                    continue
                dataset.resize(rows + n, axis=0)
                mask = masks.get(name) or self._mask(group, name, rows, True)
                masks[name] = mask
                mask.resize((rows + n,))
                mask[rows : rows + n] = False
            self._observe_metadata(stream, batch)
            first = self._table_metadata[stream].first or {}
            if stream not in self._described:
                self._described.add(stream)
                for key, value in first.items():
                    # Attributes set before (ours, or by set_metadata) stay; the schema
                    # attribute holds every key.
                    if key and "\x00" not in key and key not in group.attrs:
                        self._set_attribute(group, key, value, stream)
            if schema_changed:  # rewriting an attribute every batch costs more than the rows
                group.attrs["schema"] = _schema_json(batch.schema, first)
        self._rows[stream] = rows + n
        self._schemas[stream] = batch.schema
        self._stats.batches += 1
        self._stats.rows += n
        self._stats.bytes_written += batch.nbytes

    def _widen(self, group: h5py.Group, dataset: h5py.Dataset, dtype: np.dtype[Any],
               column: Column) -> h5py.Dataset:  # fmt: skip
        """Rewrite ``dataset`` with a wider dtype (HDF5 cannot change it in place)."""
        name = dataset.name.rsplit("/", 1)[-1]
        attrs = dict(dataset.attrs)
        temporary = f"{name}.widening"
        new = group.create_dataset(
            temporary, shape=dataset.shape, maxshape=dataset.maxshape, dtype=dtype,
            chunks=dataset.chunks, fillvalue=np.nan if dtype.kind == "f" else 0, **self._filters,
        )  # fmt: skip
        step = dataset.chunks[0] * 16
        for start in range(0, dataset.shape[0], step):
            new[start : start + step] = dataset[start : start + step].astype(dtype)
        del group[name]
        group.move(temporary, name)
        for key, value in attrs.items():
            new.attrs[key] = value
        new.attrs["arrow_type"] = column.attrs["arrow_type"]
        return new

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

        With ``none``, ``gzip``, ``zstd`` and ``blosc-*`` compression, whole chunks are
        stored with direct chunk writes, compressed and written by a thread pool (and
        this thread) in parallel. Frames short of a whole chunk wait (copied) for the
        next call or :meth:`flush`.
        """
        if stream in self._rows:
            raise SchemaMismatch(f"stream {stream!r} holds a table; frames go to another stream")
        block = self._check_frames(stream, frames, timestamps_ns, frame_numbers)
        self._ensure_room(block.frames.nbytes, f"frames of stream {stream!r}", self.path)
        with storage_errors(
            self.path, f"cannot write frames of stream {stream!r}", library_errors=_H5_ERRORS
        ):
            target = self._frame_stream(stream, block)
            # Direct chunk writes unless HDF5 must compress (lz4, lzf: no encoder here).
            if self._encode is not None or self.compression == "none":
                self._write_chunks(target, block)
            else:
                target.append(block)
        self._stored = True
        self._stats.frames += len(block.frames)
        self._stats.bytes_written += block.frames.nbytes

    def _frame_stream(self, stream: str, block: FrameBlock) -> FrameStream:
        target = self._frame_streams.get(stream)
        if target is not None:
            return target
        group = self._group(stream)
        self._check_can_create(stream)
        per_chunk = self.frames_per_chunk
        shape = block.frames.shape[1:]
        frames = group.create_dataset(
            "frames", shape=(0, *shape), maxshape=(None, *shape),
            dtype=block.frames.dtype, chunks=(per_chunk, *shape), **self._filters,
        )  # fmt: skip
        frames.attrs["dim_names"] = ",".join(["frame", "y", "x"][: 1 + len(shape)])
        stamps, numbers = (
            group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.uint64,
                                 chunks=(4096,))
            for name in ("timestamp_ns", "frame_number")
        )  # fmt: skip
        stamps.attrs.update(time_attrs("ns"))
        target = self._frame_streams[stream] = FrameStream(frames, stamps, numbers)
        return target

    def _write_chunks(self, target: FrameStream, block: FrameBlock) -> None:
        """Whole chunks by direct chunk writes (compressed on the pool); the rest waits.

        If storing fails, the frames not stored (this call's, and any still waiting for
        a whole chunk) are dropped; the error reports the failure.
        """
        if target.partial is not None:
            block = join_frames([target.partial, block])
            target.partial = None
        head, whole, rest = split_frames(block, len(target), target.frames.chunks[0])
        if len(head):  # completes the partial chunk a flush wrote
            target.append(head)
        if len(whole):
            per_chunk = target.frames.chunks[0]
            chunks = [whole.frames[i : i + per_chunk] for i in range(0, len(whole), per_chunk)]
            if self._encode is None:  # no compression: the frames' own bytes are the chunks
                target.store(whole, [functools.partial(np.ascontiguousarray, c) for c in chunks])
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self._threads, "daq_storage_hdf5")
                encode = self._encode
                target.store(whole, [functools.partial(encode, c) for c in chunks], self._pool)
        if len(rest):  # copied: the caller may reuse its array
            target.partial = rest.copy()

    def _drain_frames(self) -> None:
        for target in self._frame_streams.values():
            if target.partial is not None:
                target.append(target.partial)
                target.partial = None
            target.write_ids()

    # ------------------------------------------------------------------ metadata
    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        """An attribute of the file or of the stream's group; JSON text for dicts and
        lists; values over 64 KiB become datasets under ``/metadata``."""
        self._check_open()
        if not isinstance(key, str) or not key or "/" in key or "\x00" in key:
            raise UnsupportedData(f"metadata key {key!r} must be a non-empty name without '/'")
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
        with storage_errors(self.path, f"cannot store metadata {key!r}", library_errors=_H5_ERRORS):
            if size > _ATTRIBUTE_LIMIT:
                where = "metadata" if stream is None else f"metadata/{self._safe_stream(stream)}"
                holder = self._file.require_group(where)
                name = key.replace("/", "_")
                if name in holder:
                    del holder[name]
                holder.create_dataset(name, data=stored)
                target.attrs[key] = f"<stored in /{where}/{name}>"
            else:
                target.attrs[key] = stored

    def _store_metadata_changes(self) -> None:
        """``metadata_changes`` of each table stream whose metadata changed since."""
        for stream, metadata in self._table_metadata.items():
            if len(metadata.changes) > metadata.stored_changes:
                changes = metadata.changes_json()
                self._set_attribute(self._groups[stream], METADATA_CHANGES, changes, stream)
                metadata.stored_changes = len(metadata.changes)

    # ------------------------------------------------------------------ lifecycle
    def flush(self) -> None:
        self._check_open()
        with storage_errors(self.path, "cannot flush HDF5 file", library_errors=_H5_ERRORS):
            self._drain_frames()
            self._store_metadata_changes()
            if self.swmr and not self._swmr_started:
                self._file.swmr_mode = True
                self._swmr_started = True
            self._file.flush()

    def _close(self) -> None:
        try:
            with storage_errors(self.path, "cannot close HDF5 file", library_errors=_H5_ERRORS):
                self._drain_frames()
                self._store_metadata_changes()
                self._file.close()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            if self._file.id.valid:
                self._file.close()

    def _discard_unused(self) -> None:
        if self._took_over:  # the empty file that claimed the name stays, empty as it was
            with contextlib.suppress(OSError):
                os.truncate(self.path, 0)
            self._stats.files.remove(self.path)
        super()._discard_unused()


def _field_json(field: pa.Field) -> str:
    metadata = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
    return json.dumps(
        {"name": field.name, "type": str(field.type), "nullable": field.nullable,
         "metadata": metadata}
    )  # fmt: skip


def _schema_json(schema: pa.Schema, metadata: dict[str, Any]) -> str:
    """The schema's fields as JSON, with the stream's metadata (as JSON text values)."""
    return json.dumps({
        "fields": [json.loads(_field_json(f)) for f in schema],
        "metadata": {k: json.dumps(v, allow_nan=True) for k, v in metadata.items()},
    })  # fmt: skip
