"""HDF5 table streams: one dataset per column, written so that a kill loses nothing a
flush stored.

HDF5 without SWMR writes its metadata (chunk index, extents) only when flushed, and
frees the old place of a chunk that is rewritten at another size: a compressed chunk
rewritten at every flush, as a part-filled chunk is, moves each time, and the space it
left is reused before the index that still points at it is written. A kill in between
left a column's index pointing at other data (every row of the column lost). Here a
chunk is never rewritten elsewhere:

- whole chunks are compressed and written once;
- the rows of a chunk that a flush finds part-filled are stored *uncompressed* (HDF5
  records per chunk which filters were skipped; every reader built on the HDF5 library,
  h5py, MATLAB and h5dump included, decodes such a chunk), always at the chunk's full
  size, so a later flush rewrites them in place, and the chunk stays uncompressed when
  it fills. A kill in the middle of that rewrite leaves the rows stored before as they
  were: the bytes are the same, and no checksum covers the chunk;
- an extent never covers rows whose values are not in the file, so metadata written at
  any moment (a flush, or HDF5 evicting its cache) shows only stored rows;
- every dataset of a stream, ``.valid`` masks included, has one length in the file:
  before any commit (a flush, a new dataset, a replaced metadata value), the datasets
  behind the longest are brought to its length (their open chunk stored uncompressed,
  as by a flush), and the commit applies every header at once, through its journal
  (see :class:`~daq_storage.writers._hdf5_file.OrderedFile`).

A chunk caught part-filled by a commit costs its compression: a stream that fills fewer
chunks than the file is committed stores most of its rows uncompressed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import InvalidName, SchemaMismatch, UnsupportedData
from daq_storage.schema import Column, SchemaChange, widened
from daq_storage.writers._chunks import ChunkBatch, ChunkEncode
from daq_storage.writers._hdf5_arrow import ArrowStream
from daq_storage.writers._hdf5_attributes import dataset_name, field_json
from daq_storage.writers._hdf5_strings import (
    CATEGORIES,
    Categories,
    Coder,
    Encoded,
    make_categories,
)

__all__ = ["RAW", "BatchPlan", "ColumnStore", "NameClash", "Planned", "TableStream",
           "write_raw_chunk"]  # fmt: skip

#: Filter mask of a chunk stored as it is: every filter of the pipeline skipped.
RAW = 0xFFFFFFFF

_STRING = h5py.string_dtype("utf-8")
#: Datasets beside a column's, named by a suffix: its null mask, its categories.
_BESIDE = (".valid", CATEGORIES)
_CHUNK_LIMIT = (1 << 32) - 1  # HDF5 stores a chunk's size in 32 bits


class NameClash(SchemaMismatch):
    """A column of a batch would take the dataset of a column of an earlier batch (a
    struct field ``a.b`` and a column ``a.b``, a column ``x.valid`` and the null mask of
    ``x``, ``x.categories`` and the categories of ``x``): the stream continues in a new
    part, where the batch's names are free."""


def _leaves(kind: pa.DataType) -> int:
    """How many stored columns a field of type ``kind`` becomes (structs flatten)."""
    if isinstance(kind, pa.FixedShapeTensorType):
        return 1
    if pa.types.is_dictionary(kind):
        return _leaves(kind.value_type)
    if pa.types.is_struct(kind):
        return sum(_leaves(kind.field(i).type) for i in range(kind.num_fields))
    return 1


def _fill(dtype: np.dtype[Any]) -> Any:
    if dtype.kind == "f":
        return np.nan
    return None if dtype.kind == "O" else 0


class ColumnStore:
    """One dataset of a table stream (a column or a ``.valid`` mask) and its rows on
    their way to it: whole chunks are written as they fill, the rest at a flush."""

    def __init__(self, dataset: h5py.Dataset, start: int, fill: Any) -> None:
        self.dataset = dataset
        # h5py looks these up in the file at every access: read once (a widening makes a
        # new store)
        self.dtype: np.dtype[Any] = dataset.dtype
        self.inner: tuple[int, ...] = tuple(dataset.shape[1:])
        self.chunk = int(dataset.chunks[0])
        self.filtered = dataset.id.get_create_plist().get_nfilters() > 0
        self.fill = fill
        self.extent = int(dataset.shape[0])
        #: rows whose values are in the file (rows before a late column's first are its
        #: fill values, which a reader gets from chunks never written)
        self.written = start
        #: the first row held in memory: for a filtered dataset the start of the chunk
        #: still open (its rows are kept to rewrite it whole), else ``written``
        self.base = start - start % self.chunk if self.filtered else start
        self.raw = False  # the open chunk was stored uncompressed by a flush
        self._pending: list[npt.NDArray[Any]] = []
        self._pending_rows = 0
        if start > self.base:  # a late column's open chunk: fill values up to its start
            self._hold(self._filled(start - self.base))

    @property
    def rows(self) -> int:
        return self.base + self._pending_rows

    def append(self, values: npt.NDArray[Any], batch: ChunkBatch | None = None) -> None:
        """Add rows; every chunk they complete is written at once (with ``batch``: given
        to it, to be compressed with the other columns' chunks)."""
        self._hold(values)
        boundary = self.rows - self.rows % self.chunk
        if boundary <= self.base:
            return
        data = self._take(boundary - self.base)
        start = self.base
        if self.raw:  # stored uncompressed by a flush: stays so, rewritten in place
            self._put_raw(start, data[: self.chunk])
            self.raw = False
            data, start = data[self.chunk :], start + self.chunk
        if len(data) and (batch is None or not self._gather(batch, start, data)):
            self._write(start, data)
        self.base = boundary

    def flush(self) -> None:
        """Store the rows not yet in the file (a part-filled chunk uncompressed)."""
        if self.rows <= self.written:
            return
        if self.filtered:
            self._put_raw(self.base, self._peek())
            self.raw = True
        else:
            self._write(self.base, self._take(self._pending_rows))
            self.base = self.written

    def store_to(self, rows: int) -> None:
        """Store the held rows up to row ``rows`` (another dataset's length in the file),
        a part-filled chunk uncompressed as :meth:`flush` does."""
        if rows <= self.written:
            return
        if self.filtered:
            self._put_raw(self.base, self._peek()[: rows - self.base])
            self.raw = True
        else:
            self._write(self.base, self._take(rows - self.base))
            self.base = self.written

    def widen(self, group: h5py.Group, dtype: np.dtype[Any], arrow_type: str,
              filters: dict[str, Any]) -> ColumnStore:  # fmt: skip
        """This column in a new dataset of ``dtype`` that replaces this one (HDF5 cannot
        change a dataset's type in place); the caller flushes the file at once, so the
        space of the old dataset is reused only once nothing on disk points at it."""
        old = self.dataset
        name = old.name.rsplit("/", 1)[-1]
        temporary = name + "%"  # an escaped name never ends with a bare "%"
        fill = _fill(dtype)
        new = group.create_dataset(
            temporary, shape=(0, *old.shape[1:]), maxshape=old.maxshape, dtype=dtype,
            chunks=old.chunks, fillvalue=fill, **filters,
        )  # fmt: skip
        step = self.chunk * 16
        kept = self.base if self.filtered else self.written
        for start in range(0, kept, step):  # whole chunks (or written rows), then the rest
            stop = min(kept, start + step)
            new.resize(stop, axis=0)
            new[start:stop] = old[start:stop].astype(dtype)
        store = ColumnStore(new, kept, fill)
        store._hold(np.asarray(self._peek(), dtype) if self._pending_rows else new[:0])
        if self.written > kept:  # rows a flush stored: in the new dataset before the switch
            store.flush()
        for key, value in old.attrs.items():
            new.attrs[key] = value
        new.attrs["arrow_type"] = arrow_type
        del group[name]
        group.move(temporary, name)
        return store

    # ------------------------------------------------------------------ internals
    def _filled(self, rows: int) -> npt.NDArray[Any]:
        dtype = self.dtype
        values = np.empty((rows, *self.inner), dtype)
        if dtype.kind == "O":
            text = h5py.check_string_dtype(dtype) is not None
            inner = h5py.check_vlen_dtype(dtype)
            for i in range(rows):
                values[i] = "" if text else np.zeros(0, inner)
        else:
            values[...] = self.fill if self.fill is not None else 0
        return values

    def _hold(self, values: npt.NDArray[Any]) -> None:
        if len(values):
            self._pending.append(values)
            self._pending_rows += len(values)

    def _peek(self) -> npt.NDArray[Any]:
        if len(self._pending) > 1:
            self._pending = [np.concatenate(self._pending)]
        return self._pending[0]

    def _take(self, rows: int) -> npt.NDArray[Any]:
        """The first ``rows`` held rows, no longer held."""
        data = self._peek()
        rest = data[rows:]
        self._pending = [rest.copy()] if len(rest) else []  # a copy: frees the big array
        self._pending_rows = len(rest)
        return data[:rows]

    def _grow(self, rows: int) -> int:
        """Extend the dataset to ``rows`` (HDF5 writes only inside the extent); returns
        the extent to go back to if the write fails."""
        before = self.extent
        if rows > before:
            self.dataset.resize(rows, axis=0)
            self.extent = rows
        return before

    def _undo(self, extent: int) -> None:
        """Back to ``extent`` after a failed write: a chunk boundary or the rows written,
        so HDF5 never rewrites a part-cut chunk to clear it."""
        if self.extent > extent:
            with contextlib.suppress(Exception):  # the write's own error is the one to report
                self.dataset.resize(extent, axis=0)
                self.extent = extent

    def _write(self, start: int, data: npt.NDArray[Any]) -> None:
        """Rows through HDF5 (whole chunks compressed; unfiltered data in place)."""
        end = start + len(data)
        before = self._grow(end)
        try:
            self.dataset[start:end] = data
        except BaseException:
            self._undo(max(before, self.written - self.written % self.chunk))
            raise
        self.written = max(self.written, end)

    def _gather(self, batch: ChunkBatch, start: int, data: npt.NDArray[Any]) -> bool:
        """Whole chunks from ``start`` into ``batch`` (the extent grown first, as for a
        write; ``batch`` takes it back if storing fails); ``False``: not this dataset's
        kind (text, unfiltered), written as before."""
        if not self.filtered or self.dtype.kind in "OSU" or start % self.chunk \
                or len(data) % self.chunk:  # fmt: skip
            return False
        end = start + len(data)
        written, base = self.written, self.base
        before = self._grow(end)

        def undo() -> None:
            self._undo(max(before, written - written % self.chunk))
            self.written, self.base = written, base

        batch.undo.append(undo)
        zeros = (0,) * len(self.inner)
        for at in range(0, len(data), self.chunk):
            chunk = np.ascontiguousarray(data[at : at + self.chunk], self.dtype)
            job = functools.partial(_store_chunk, self.dataset, (start + at, *zeros),
                                    batch.encode, chunk)  # fmt: skip
            batch.jobs.append(job)
        self.written = max(self.written, end)
        return True

    def _put_raw(self, start: int, values: npt.NDArray[Any]) -> None:
        """The chunk at ``start`` uncompressed, at its full size (in place once stored)."""
        chunk = np.empty((self.chunk, *self.inner), self.dtype)
        chunk[: len(values)] = values
        chunk[len(values) :] = self.fill if self.fill is not None else 0
        end = start + len(values)
        before = self._grow(end)
        try:
            write_raw_chunk(self.dataset, start, chunk, self.filtered)
        except BaseException:
            self._undo(before)
            raise
        self.written = max(self.written, end)


@dataclass(frozen=True, slots=True)
class Planned:
    """What a batch does to one column: its values, the store it goes to (``None``: a
    new dataset named ``name``) and the dtype it widens to, if any."""

    column: Column
    store: ColumnStore | None
    name: str
    widen_to: np.dtype[Any] | None
    field: str  # the Arrow field the column comes from, as JSON
    origin: str  # that field's name (a struct's, for one of its fields)
    encoded: Encoded | None = None  # a coded column's codes and new categories


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """What a checked batch does: the change, the table (part) it goes to (an
    :class:`ArrowStream` in the Arrow IPC layout, with no columns' plan), its columns'
    plan, and whether that table is a new part (``forced``: for a name clash, not for
    the change)."""

    change: SchemaChange
    table: TableStream | ArrowStream
    plan: list[Planned]
    new_part: bool
    forced: bool


class TableStream:
    """A table stream's group, its column and mask stores, its coded columns'
    categories, and its row count."""

    def __init__(self, filters: dict[str, Any], chunk_rows: Callable[[Column], int],
                 coder: Coder, encode: ChunkEncode | None = None,
                 pool: Callable[[], Executor] | None = None) -> None:  # fmt: skip
        self._group: h5py.Group | None = None  # made with the first batch that is stored
        self.filters = filters
        #: our encoder of the filters' bytes and the pool it runs on: a batch's whole
        #: chunks compressed on all cores (``None``: by HDF5, one after the other)
        self.encode = encode if pool is not None else None
        self.pool = pool
        self.chunk_rows = chunk_rows
        self.coder = coder
        self.rows = 0
        self.columns: dict[str, ColumnStore] = {}  # column name -> store
        self.masks: dict[str, ColumnStore] = {}  # column name -> its .valid mask
        self.names: dict[str, str] = {}  # dataset name -> column name
        self.origins: dict[str, str] = {}  # column name -> the batch field it comes from
        self.schema: pa.Schema | None = None  # of the last batch
        #: the last planned batch's stream, schema and its fields as (JSON, origin)
        self._fields: tuple[str, pa.Schema, list[tuple[str, str]]] | None = None

    @property
    def group(self) -> h5py.Group:
        assert self._group is not None, "plan() then attach() before writing"
        return self._group

    def attach(self, group: h5py.Group) -> None:
        """The stream's group, made once its first batch passed :meth:`plan`."""
        self._group = group

    # ------------------------------------------------------------------ planning
    def plan(self, stream: str, batch: pa.RecordBatch, *, may_create: Callable[[], None],
             may_widen: Callable[[Column, str], None]) -> list[Planned]:  # fmt: skip
        """Check every column of a batch before anything is written: names (``/``
        escaped; empty or NUL refused; never two columns on one dataset, nor a column
        on another's null mask or categories) and types (a change other than a safe
        widening refused); text columns coded as the part's :class:`Coder` says.

        Raises:
            InvalidName: a column name HDF5 cannot hold.
            SchemaMismatch: a clash of names or an unsafe type change
                (:class:`~daq_storage.writers._hdf5_strings.CategoriesFull`: a coded
                column is to continue as text, in a new part).
            UnsupportedData: text holding NUL, or (``may_create``) no new datasets.
        """
        columns, encoded = self.coder.flatten(stream, batch)
        known = self._fields
        if known is not None and known[0] == stream and batch.schema.equals(known[1], True):
            fields = known[2]  # the last batch's fields, metadata and all: their JSON too
        else:
            fields = []
            for field in batch.schema:
                fields += [(field_json(field, stream), field.name)] * _leaves(field.type)
            self._fields = (stream, batch.schema, fields)
        taken = dict(self.names)
        seen: set[str] = set()
        plan: list[Planned] = []
        for column, (field, origin) in zip(columns, fields, strict=True):
            if column.name in seen:
                raise SchemaMismatch(
                    f"stream {stream!r}: column {column.name!r} appears twice in the batch "
                    "(a name given twice, or a struct field named like a column); rename one"
                )
            seen.add(column.name)
            name = self._name(stream, column.name, taken)
            if column.kind == "string" and "\x00" in "".join(column.values):
                raise UnsupportedData(
                    f"stream {stream!r} column {column.name!r}: HDF5 strings cannot contain "
                    "NUL characters"
                )
            store = self.columns.get(column.name)
            if store is None:
                may_create()
                self._check_chunk(stream, column)
                plan.append(Planned(column, None, name, None, field, origin,
                                    encoded.get(column.name)))  # fmt: skip
            else:
                before = self.origins[column.name]
                if before != origin:
                    raise NameClash(
                        f"stream {stream!r}: {_described(column.name, origin)} would be "
                        f"stored as dataset {name!r}, which holds "
                        f"{_described(column.name, before)} of an earlier batch; rename one"
                    )
                target = _checked_type(stream, column, store)
                if target is not None and target != store.dtype:
                    may_widen(column, str(store.dataset.attrs.get("arrow_type", target)))
                plan.append(Planned(column, store, name, target, field, origin,
                                    encoded.get(column.name)))  # fmt: skip
        if any(c.valid is not None and c.name not in self.masks for c in columns) or any(
            name not in seen and name not in self.masks for name in self.columns
        ):
            may_create()  # null masks to add
        return plan

    def _name(self, stream: str, column: str, taken: dict[str, str]) -> str:
        if not column:
            raise InvalidName(f"stream {stream!r}: a column has an empty name")
        if "\x00" in column:
            raise InvalidName(f"stream {stream!r}: column name {column!r} contains NUL")
        name = dataset_name(column)
        clashes = [(name, "dataset", "")]
        for suffix in _BESIDE:  # x.valid (x.categories) beside x, either way round
            if name.endswith(suffix):
                clashes.append((name.removesuffix(suffix), "beside", suffix))
            clashes.append((name + suffix, "owner", suffix))
        for clash, what, suffix in clashes:
            owner = taken.get(clash)
            if owner is None or (what == "dataset" and owner == column):
                continue
            error = NameClash if clash in self.names else SchemaMismatch  # an earlier batch's
            if what == "dataset":
                raise error(
                    f"stream {stream!r}: columns {owner!r} and {column!r} would both be "
                    f"stored as dataset {name!r}; rename one"
                )
            holder, masked = (column, owner) if what == "beside" else (owner, column)
            kept = "null mask" if suffix == ".valid" else "categories"
            raise error(
                f"stream {stream!r}: column {holder!r} would be stored where column "
                f"{masked!r} keeps its {kept} ({dataset_name(masked)}{suffix}); rename it"
            )
        taken[name] = column
        return name

    def _check_chunk(self, stream: str, column: Column) -> None:
        """Refuse a column whose chunks would exceed HDF5's 4 GiB per chunk."""
        inner = column.values.shape[1:]
        row = int(np.prod(inner, dtype=np.int64)) * column.values.dtype.itemsize
        if column.kind == "fixed" and self.chunk_rows(column) * row > _CHUNK_LIMIT:
            raise UnsupportedData(
                f"stream {stream!r} column {column.name!r}: {self.chunk_rows(column)} rows "
                f"of {row} bytes exceed HDF5's 4 GiB chunk limit; lower chunk_size"
            )

    # ------------------------------------------------------------------ writing
    def append(self, plan: list[Planned], rows: int) -> bool:
        """Append a planned batch of ``rows`` rows; ``True`` when datasets were created
        or replaced (the caller makes that durable at once)."""
        start = self.rows
        changed = False
        batch = ChunkBatch(self.encode) if self.encode is not None else None
        for item in plan:
            column, store = item.column, item.store
            if store is None:
                store = self._create(item, start)
                changed = True
                if item.origin == column.name:
                    self.coder.decided[column.name] = item.encoded is not None
                if start:  # a column that appears mid-run: earlier rows are null
                    self._mask(column.name, start, default=False)
            elif item.widen_to is not None and item.widen_to != store.dtype:
                store = store.widen(self.group, item.widen_to, column.attrs["arrow_type"],
                                    self.filters)  # fmt: skip
                self.columns[column.name] = store
                changed = True
            if item.encoded is not None:  # categories in the file before any code using them
                self.coder.categories[column.name].add(item.encoded.new)
            store.append(column.values, batch)
            if column.valid is not None or column.name in self.masks:
                changed |= column.name not in self.masks
                mask = self.masks.get(column.name) or self._mask(column.name, start, default=True)
                mask.append(np.ones(rows, bool) if column.valid is None else column.valid, batch)
        present = {item.column.name for item in plan}
        for name, store in self.columns.items():  # columns absent from this batch: null
            if name in present:
                continue
            changed |= name not in self.masks
            mask = self.masks.get(name) or self._mask(name, start, default=True)
            store.append(store._filled(rows), batch)
            mask.append(np.zeros(rows, bool), batch)
        if batch is not None and self.pool is not None:
            batch.run(self.pool)
        self.rows = start + rows
        return changed

    @property
    def stored_rows(self) -> int:
        """Rows every dataset holds in the file (all of them after :meth:`level`)."""
        return min((store.extent for store in self.stores), default=0)

    @property
    def stores(self) -> tuple[ColumnStore, ...]:
        """Every dataset's store: columns and masks."""
        return (*self.columns.values(), *self.masks.values())

    def flush(self) -> None:
        """Store every held row (part-filled chunks uncompressed, in place)."""
        for store in self.stores:
            store.flush()

    def level(self) -> None:
        """Bring every dataset to the longest one's length in the file, before a commit:
        a whole chunk of one column reaches the file as it fills, while its mask (or
        another column, chunked otherwise) still holds those rows in memory."""
        length = max((store.extent for store in self.stores), default=0)
        for store in self.stores:
            store.store_to(length)

    def _create(self, item: Planned, rows: int) -> ColumnStore:
        column = item.column
        if column.kind == "string":
            # No explicit fill: HDF5 would write "" into every new chunk's global heap
            # before the data overwrites it. Unwritten strings read back as "" anyway.
            dtype: Any = _STRING
        elif column.kind == "vlen":
            dtype = h5py.vlen_dtype(column.values[0].dtype if len(column.values) else np.float64)
        else:
            dtype = column.values.dtype
        fill = _fill(np.dtype(dtype))
        inner = column.values.shape[1:]
        filters = self.filters if column.kind == "fixed" else {}
        chunk = self.chunk_rows(column)
        if item.encoded is not None:  # chunked as 8-byte columns: cut at the same rows
            chunk = self.chunk_rows(Column(column.name, np.zeros(1, np.uint64), None,
                                           "fixed", {}))  # fmt: skip
        dataset = self.group.create_dataset(
            item.name, shape=(rows, *inner), maxshape=(None, *inner), dtype=dtype,
            chunks=(chunk, *inner), fillvalue=fill, **filters,
        )  # fmt: skip
        dataset.attrs["schema"] = item.field
        for key, value in column.attrs.items():
            dataset.attrs[key] = value
        if item.encoded is not None:
            dataset.attrs["categories"] = item.name + CATEGORIES
            categories = make_categories(self.group, item.name, column.name)
            self.coder.categories[column.name] = Categories(
                ColumnStore(categories, 0, None), limit=item.encoded.limit
            )
        store = self.columns[column.name] = ColumnStore(dataset, rows, fill)
        self.names[item.name] = column.name
        self.origins[column.name] = item.origin
        return store

    def _mask(self, column: str, rows: int, *, default: bool) -> ColumnStore:
        """The ``.valid`` mask of ``column``, new: ``default`` for its ``rows`` rows (read
        from chunks never written: the fill value)."""
        name = f"{dataset_name(column)}.valid"
        dataset = self.group.create_dataset(
            name, shape=(rows,), maxshape=(None,), dtype=bool, chunks=(65536,),
            fillvalue=default, **self.filters,
        )  # fmt: skip
        dataset.attrs["meaning"] = f"True where {column} holds a value; False where it is null"
        store = self.masks[column] = ColumnStore(dataset, rows, default)
        return store


def _described(column: str, origin: str) -> str:
    """A stored column as its batch names it: a column, or a field of a struct column."""
    if column == origin:
        return f"column {column!r}"
    return f"field {column.removeprefix(origin + '.')!r} of struct column {origin!r}"


def _store_chunk(dataset: h5py.Dataset, offset: tuple[int, ...], encode: ChunkEncode,
                 chunk: npt.NDArray[Any]) -> None:  # fmt: skip
    """One whole chunk, compressed here (on a pool thread), stored as the filters would."""
    dataset.id.write_direct_chunk(offset, encode(chunk))


def write_raw_chunk(dataset: h5py.Dataset, start: int, chunk: npt.NDArray[Any],
                    filtered: bool) -> None:  # fmt: skip
    """Store the chunk at row ``start`` as it is (its filters marked skipped)."""
    zeros = (0,) * (len(dataset.shape) - 1)
    data = np.ascontiguousarray(chunk, dataset.dtype)
    dataset.id.write_direct_chunk((start, *zeros), data, filter_mask=RAW if filtered else 0)
    if filtered:
        # HDF5 (up to 2.0 at least) caches the chunk's filter mask as 0 after a direct
        # write of a new chunk, and a read in this process would then decompress the raw
        # bytes; looking up another chunk replaces that cached entry.
        other = (start + int(dataset.chunks[0]), *zeros)
        with contextlib.suppress(Exception):  # no chunk there: the lookup was the point
            dataset.id.read_direct_chunk(other)


def _checked_type(stream: str, column: Column, store: ColumnStore) -> np.dtype[Any] | None:
    """The dtype ``column`` is stored as in ``store``'s dataset (``None``: as it is, for
    text and lists); a change that is not a safe widening raises :class:`SchemaMismatch`."""
    old, dataset = store.dtype, store.dataset

    def refused(what: str) -> SchemaMismatch:  # attributes read only then: they are slow
        stored = dataset.attrs.get("arrow_type", old)
        return SchemaMismatch(
            f"stream {stream!r} column {column.name!r}: "
            + what.format(stored=stored, new=column.attrs["arrow_type"])
        )

    if column.kind == "fixed":
        if store.inner != column.values.shape[1:] or old.kind in "OS":
            raise refused(f"stored as {{stored}} shape {store.inner}, got {{new}} shape "
                          f"{column.values.shape[1:]}")  # fmt: skip
        target = widened(old, column.values.dtype)
        if target is None:
            raise refused("type changed from {stored} to {new} (not a safe widening)")
        return target
    if (column.kind == "string") != (h5py.check_string_dtype(old) is not None):
        raise refused("type changed from {stored} to {new}")
    return None
