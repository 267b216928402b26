"""A Zarr stream's arrays and what waits for them: rows short of whole chunks, frames
short of whole shards, and the names its columns are stored under.

The writer writes through handles whose shape is unbounded and never stored: chunks go
to their final place, and readers see them only when the stream's group is published
(see ``_zarr_metadata``) with the lengths recorded here.
"""

from __future__ import annotations

import functools
import operator
import re
import unicodedata
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
import zarr.abc.store
import zarr.codecs
import zarr.storage

from daq_storage.errors import InvalidName, SchemaMismatch
from daq_storage.naming import sanitize_name
from daq_storage.schema import Column, FrameBlock, time_attrs
from daq_storage.writers._chunks import ChunkEncode, FrameIds, run_parallel
from daq_storage.writers._zarr_limits import Origins
from daq_storage.writers._zarr_metadata import StreamGroup
from daq_storage.writers._zarr_objects import UPLOADS_IN_FLIGHT, ObjectCountingStore
from daq_storage.writers._zarr_store import CountingStore, Puts

__all__ = [
    "ID_CHUNK",
    "ColumnNames",
    "FrameArrays",
    "TableArrays",
    "array_name",
    "document",
    "filled",
    "grid",
    "new_array",
    "rows_of",
    "storage_kind",
]

#: Ids per chunk; queued ids are written to their chunks once this many wait (memory
#: stays bounded between flushes; readers see them only at a flush).
ID_CHUNK = 4096
#: The frames' ids are coordinates of the "frame" dimension (CF, as xarray decodes it).
_FRAME_COORDINATES: dict[str, Any] = {"coordinates": "timestamp_ns frame_number"}
#: The length of a writing handle: chunks anywhere along the first axis, none stored.
_UNBOUNDED = 1 << 62
#: The longest array name kept, in UTF-8 bytes: with ``.valid`` it stays a legal file name.
_MAX_NAME_BYTES = 200
#: Path separators, and what Windows refuses in file names (a store may be copied there).
_UNSAFE = re.compile(r'[/\\<>:"|?*]')


def grid(
    name: str, shape: Sequence[int], chunks: Sequence[int], shards: Sequence[int] | None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...] | None]:
    """The seeds' builder's shape, chunks and shards, checked (zarr-python takes chunks
    of 0 and fails at the first write)."""
    try:
        grid = [tuple(operator.index(n) for n in sizes) for sizes in (shape, chunks, shards or ())]
    except TypeError as exc:
        raise SchemaMismatch(f"zarr: array {name!r}: sizes must be integers ({exc})") from None
    dims, chunk, shard = grid
    if (len(chunk) != len(dims) or (shards is not None and len(shard) != len(dims))
            or min(dims, default=0) < 0 or min((*chunk, *shard), default=1) < 1):  # fmt: skip
        raise SchemaMismatch(
            f"zarr: array {name!r}: shape {dims}, chunks {chunk} and shards {shard or None} "
            "need one size per dimension (shape >= 0, chunks and shards >= 1)"
        )
    return dims, chunk, None if shards is None else shard


def new_array(
    store: zarr.abc.store.Store, group: StreamGroup, name: str, length: int, **options: Any
) -> zarr.Array[Any]:
    """Make array ``name`` of ``group`` visible with ``length`` along its first axis and
    return its writing handle. ``options`` are ``zarr.create_array``'s (``shape`` with a
    first axis of 0); the metadata is built in memory and written by ``group``."""
    template = zarr.create_array(zarr.storage.MemoryStore(), **options).metadata
    inner = tuple(template.shape[1:])
    group.add_array(name, template.update_shape((length, *inner)).to_dict())
    path = zarr.storage.StorePath(store, f"{group.key}/{name}")
    return zarr.Array(zarr.AsyncArray(template.update_shape((_UNBOUNDED, *inner)), path))


def document(array: zarr.Array[Any], length: int) -> dict[str, Any]:
    """``array``'s ``zarr.json`` with ``length`` along its first axis."""
    return array.metadata.update_shape((length, *array.shape[1:])).to_dict()


def array_name(column: str, stream: str) -> str:
    """The name ``column`` is stored under: itself when it is a safe file name (no path
    separator, control character or character Windows refuses; not empty, hidden, Zarr's
    reserved ``__`` or ``zarr.json``; at most 200 bytes), else
    :func:`~daq_storage.naming.sanitize_name`'s.

    Raises:
        InvalidName: nothing usable is left, or ``column`` contains NUL.
    """
    if (
        column
        and column == column.strip()
        and not column.startswith((".", "__"))
        and not column.endswith(".")
        and column != "zarr.json"
        and _UNSAFE.search(column) is None
        and not any(unicodedata.category(c)[0] == "C" for c in column)
        and len(column.encode()) <= _MAX_NAME_BYTES
    ):
        return column
    safe = sanitize_name(column, what=f"stream {stream!r} column name")
    while len(safe.encode()) > _MAX_NAME_BYTES:  # a character can take 4 bytes
        safe = safe[:-1]
    if safe == "zarr.json":
        raise InvalidName(f"stream {stream!r}: column name {column!r} is reserved by Zarr")
    return safe


@dataclass
class ColumnNames:
    """The array each column of a table is stored in, and which column each array name
    (a column's or its ``.valid`` mask's) belongs to."""

    arrays: dict[str, str] = field(default_factory=dict)  # column -> array name
    owners: dict[str, str] = field(default_factory=dict)  # array name -> column

    def __getitem__(self, column: str) -> str:
        return self.arrays[column]

    def claim(self, stream: str, columns: list[str]) -> dict[str, str]:
        """Array names for the columns new to the table (nothing recorded).

        Raises:
            InvalidName: a column appears twice (a struct field ``a.b`` beside a column
                ``a.b`` too), or two columns (or a column and another's ``.valid``
                mask) would share an array.
        """
        seen: set[str] = set()
        new: dict[str, str] = {}
        owners = dict(self.owners)
        for column in columns:
            if column in seen:
                raise InvalidName(
                    f"stream {stream!r}: column {column!r} appears twice in one batch (a "
                    "struct field parent.child beside a column of that name counts too)"
                )
            seen.add(column)
            if column in self.arrays:
                continue
            name = array_name(column, stream)
            for taken in (name, f"{name}.valid"):
                owner = owners.get(taken)
                if owner is not None:
                    raise InvalidName(
                        f"stream {stream!r}: column {column!r} would be stored as array "
                        f"{name!r}, but {taken!r} belongs to column {owner!r}"
                    )
            owners[name] = owners[f"{name}.valid"] = column
            new[column] = name
        return new

    def add(self, names: dict[str, str]) -> None:
        for column, name in names.items():
            self.arrays[column] = name
            self.owners[name] = self.owners[f"{name}.valid"] = column

    def drop(self, columns: list[str]) -> None:
        for column in columns:
            name = self.arrays.pop(column)
            del self.owners[name], self.owners[f"{name}.valid"]


@dataclass
class FrameArrays:
    """A frame stream's arrays (writing handles: looking them up costs more than a shard)
    and the frames on their way to them."""

    group: StreamGroup
    store: Puts
    prefix: str  # the frames array's chunk keys start with it: "<group>/frames/c"
    frames: zarr.Array[Any]
    timestamps: zarr.Array[Any]
    numbers: zarr.Array[Any]
    length: int = 0  # frames stored (or encoded, waiting for their write)
    published: int = 0  # frames readers see
    #: frames short of a whole shard (or chunk), copied: the caller may reuse its array
    partial: FrameBlock | None = None
    #: compressed shards not yet confirmed written: shard index -> inner chunks' bytes
    encoded: dict[int, list[bytes]] = field(default_factory=dict)
    #: writes started in the background (an object store's), by shard index
    uploads: dict[int, Future[None]] = field(default_factory=dict)
    #: ids of stored frames not yet in the id arrays
    ids: FrameIds = field(default_factory=lambda: FrameIds(0))

    @classmethod
    def create(
        cls,
        store: CountingStore | ObjectCountingStore,
        group: StreamGroup,
        frames: npt.NDArray[Any],
        per_chunk: int,
        shard_frames: int | None,
        codecs: Any,
        *,
        own_shards: bool,
    ) -> FrameArrays:
        """A new frame stream's arrays in ``group``, for frames like ``frames``; with
        ``own_shards``, shards are written by :meth:`store_shards`."""
        shape = frames.shape[1:]
        names = (["frame", "y", "x"] if len(shape) == 2
                 else ["frame", *(f"dim_{i}" for i in range(1, 1 + len(shape)))])  # fmt: skip
        layout: dict[str, Any]
        if own_shards:
            # Our own shard objects: the inner chunks' codecs and a plain (crc-free) index.
            assert shard_frames is not None
            serializer = zarr.codecs.ShardingCodec(
                chunk_shape=(per_chunk, *shape), codecs=[zarr.codecs.BytesCodec(), codecs],
                index_codecs=[zarr.codecs.BytesCodec()],
            )  # fmt: skip
            layout = {"chunks": (shard_frames, *shape), "serializer": serializer,
                      "compressors": None}  # fmt: skip
        else:
            shards = None if shard_frames is None else (shard_frames, *shape)
            layout = {"chunks": (per_chunk, *shape), "compressors": codecs, "shards": shards}
        try:
            images = new_array(store, group, "frames", 0, shape=(0, *shape),
                               dtype=frames.dtype, dimension_names=names, fill_value=0,
                               attributes=_FRAME_COORDINATES, **layout)  # fmt: skip
            stamps, numbers = (
                new_array(store, group, name, 0, shape=(0,), chunks=(ID_CHUNK,),
                          dtype=np.uint64, dimension_names=["frame"], attributes=attributes)
                for name, attributes in (("timestamp_ns", time_attrs("ns")), ("frame_number", {}))
            )  # fmt: skip
        except BaseException:  # the next call starts again: nothing half-made stays
            for name in ("frame_number", "timestamp_ns", "frames"):
                group.remove_array(name)
            raise
        return cls(group, store, f"{group.key}/frames/c", images, stamps, numbers)

    def write(self, start: int, block: FrameBlock) -> None:
        """zarr-python encodes and writes (partial shards, codecs without an encoder here)."""
        self.frames[start : start + len(block)] = block.frames

    def write_ids(self) -> None:
        """The queued ids, into their arrays' chunks."""
        pending = self.ids.pending()
        if pending is not None:
            start, stamps, numbers = pending
            self.timestamps[start : start + len(stamps)] = stamps
            self.numbers[start : start + len(numbers)] = numbers
            self.ids.written()

    def encode_shards(
        self,
        pool: Executor,
        encode: ChunkEncode,
        start: int,
        ready: FrameBlock,
        per_chunk: int,
        shard_frames: int,
    ) -> dict[int, list[bytes]]:
        """Compress the shards' inner chunks on ``pool`` while the previous call's shards
        are written; return this call's, for the next call (or flush) to write."""
        count = len(ready.frames)
        inner = [ready.frames[i : i + per_chunk] for i in range(0, count, per_chunk)]
        jobs = [functools.partial(encode, chunk) for chunk in inner]
        encoded = run_parallel(pool, jobs, meanwhile=functools.partial(self.store_shards,
                                                                       wait=False))  # fmt: skip
        per_shard = shard_frames // per_chunk
        first_shard = start // shard_frames
        return {first_shard + k: encoded[k * per_shard : (k + 1) * per_shard]
                for k in range(count // shard_frames)}  # fmt: skip

    def start_uploads(self) -> None:
        """Start writing every compressed shard not being written (never raises: a
        failure is the upload's, reported by :meth:`store_shards`)."""
        trailing = "/".join(["0"] * (self.frames.ndim - 1))
        for shard, parts in self.encoded.items():
            if shard not in self.uploads:
                sizes = [len(p) for p in parts]
                offsets = np.cumsum([0, *sizes[:-1]], dtype=np.uint64)
                index = np.column_stack([offsets, sizes]).astype("<u8")
                key = f"{self.prefix}/{shard}/{trailing}"
                self.uploads[shard] = self.store.put_later(key, [*parts, index.tobytes()])

    def store_shards(self, *, wait: bool = True) -> None:
        """Write the compressed shards as whole objects through the store (a file under a
        temporary name, then renamed; an object put whole: readers never see half a
        shard). An object store writes them in the background: without ``wait`` this
        returns once at most :data:`UPLOADS_IN_FLIGHT` are unconfirmed. A shard whose
        write failed stays, to be written again by the next call; the failure is raised
        once every write waited for has ended."""
        self.start_uploads()
        in_flight = list(self.uploads.values())
        futures_wait(in_flight if wait else in_flight[:-UPLOADS_IN_FLIGHT])
        failure: BaseException | None = None
        for shard, upload in list(self.uploads.items()):
            if upload.done():
                del self.uploads[shard]
                error = upload.exception()
                if error is None:
                    del self.encoded[shard]
                elif failure is None:
                    failure = error
        if failure is not None:
            raise failure

    def documents(self) -> dict[str, dict[str, Any]]:
        """The arrays' documents with every stored frame."""
        arrays = (self.frames, self.timestamps, self.numbers)
        return {name: document(array, self.length)
                for name, array in zip(("frames", "timestamp_ns", "frame_number"), arrays,
                                       strict=True)}  # fmt: skip


@dataclass
class TableArrays:
    """A table stream's part (its group): the arrays (by column) and the rows waiting to
    fill whole chunks."""

    group: StreamGroup
    first: int = 0  # the stream's row where this part starts
    arrays: dict[str, zarr.Array[Any]] = field(default_factory=dict)
    masks: dict[str, zarr.Array[Any]] = field(default_factory=dict)
    #: the column's storage dtype, inner shape and attributes, fixed by its first batch
    kinds: dict[str, tuple[np.dtype[Any], tuple[int, ...], dict[str, Any]]] = field(
        default_factory=dict
    )
    names: ColumnNames = field(default_factory=lambda: ColumnNames())
    origins: Origins = field(default_factory=lambda: Origins())
    rows: int = 0  # rows in the arrays' chunks
    published: int = 0  # rows readers see
    settled: bool = False  # an earlier part, published whole: later flushes skip it
    pending: list[tuple[int, dict[str, Column]]] = field(default_factory=list)
    pending_rows: int = 0

    def documents(self) -> dict[str, dict[str, Any]]:
        """Every array's document with every row in the chunks, in the columns' order."""
        documents: dict[str, dict[str, Any]] = {}
        for column in self.kinds:
            name = self.names[column]
            documents[name] = document(self.arrays[column], self.rows)
            if column in self.masks:
                documents[f"{name}.valid"] = document(self.masks[column], self.rows)
        return documents

    def merged_pending(
        self,
    ) -> dict[str, tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]]:
        """Every column's pending rows as one array (missing columns filled) and its
        validity (``None`` when the column has no nulls, gaps or mask)."""
        merged: dict[str, tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]] = {}
        for name, (dtype, inner, _) in self.kinds.items():
            parts: list[npt.NDArray[Any]] = [filled(0, dtype, inner)]
            valid: list[npt.NDArray[np.bool_]] = [np.ones(0, bool)]
            gaps = False
            for rows, columns in self.pending:
                column = columns.get(name)
                if column is None:
                    parts.append(filled(rows, dtype, inner))
                    valid.append(np.zeros(rows, bool))
                    gaps = True
                else:
                    parts.append(column.values.astype(dtype, copy=False))
                    valid.append(np.ones(rows, bool) if column.valid is None else column.valid)
                    gaps = gaps or column.valid is not None
            merged[name] = (
                np.concatenate(parts) if len(parts) > 2 else parts[-1],
                np.concatenate(valid) if gaps or name in self.masks else None,
            )
        return merged


def storage_kind(column: Column) -> tuple[np.dtype[Any], tuple[int, ...]]:
    dtype = np.dtype(object) if column.kind == "string" else column.values.dtype
    return dtype, tuple(column.values.shape[1:])


def filled(rows: int, dtype: np.dtype[Any], inner: tuple[int, ...]) -> npt.NDArray[Any]:
    if dtype.kind == "O":
        return np.full((rows, *inner), "", dtype=object)
    return np.full((rows, *inner), np.nan if dtype.kind == "f" else 0, dtype=dtype)


def rows_of(
    kind: tuple[np.dtype[Any], tuple[int, ...], dict[str, str]],
    values: npt.NDArray[Any],
    valid: npt.NDArray[np.bool_] | None,
    start: int,
) -> Column:
    """Rows ``start:`` of a merged column, as a pending column."""
    dtype = kind[0]
    return Column("", values[start:], None if valid is None else valid[start:],
                  "string" if dtype.kind == "O" else "fixed", kind[2])  # fmt: skip
