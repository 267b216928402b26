"""Arrow types as the writers see them: flattening, numpy conversion, safe widening, and
the one rule for a table stream's metadata."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from daq_storage.errors import SchemaMismatch, UnsupportedData

__all__ = [
    "CHANGE_KINDS",
    "EVOLUTIONS",
    "METADATA_CHANGES",
    "Evolution",
    "SchemaChange",
    "classify_change",
    "conform_batch",
    "evolution_for",
    "evolved_schema",
    "Column",
    "FRAME_COLUMNS",
    "FRAME_TIMESTAMP",
    "FrameBlock",
    "frame_schema",
    "frames_to_batch",
    "StreamMetadata",
    "decode_metadata",
    "flatten_batch",
    "join_frames",
    "time_attrs",
    "widened",
]

#: The stream metadata entry that records later changes of a stream's schema metadata.
METADATA_CHANGES = "metadata_changes"

#: Metadata keys whose values stay text whatever they look like: CF attributes that
#: readers expect as strings (``units = "1"`` is a unit, not a number).
_TEXT_KEYS = frozenset(
    {"units", "unit", "long_name", "standard_name", "calendar", "description", "comment",
     "coordinates", "dtype"}
)  # fmt: skip
_UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def _metadata_value(key: str, raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="backslashreplace")
    if key in _TEXT_KEYS:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


@functools.lru_cache(maxsize=256)
def _decoded(items: tuple[tuple[bytes, bytes], ...]) -> dict[str, Any]:
    return {
        key.decode("utf-8", errors="backslashreplace"): _metadata_value(
            key.decode("utf-8", errors="backslashreplace"), value
        )
        for key, value in items
    }


def decode_metadata(metadata: Mapping[bytes, bytes] | None) -> dict[str, Any]:
    """Arrow key-value metadata (schema or field) as what each value means.

    A value is JSON text when it parses as JSON (``b"100000.0"`` is the number 100000.0,
    ``b'"run"'`` the text ``run``) and plain text otherwise (``b"V"`` is ``V``); CF text
    attributes (``units``, ``long_name``, ``calendar``, ...) are always text. Every writer
    stores the result as JSON: natively in JSON containers (Zarr attributes, CSV's
    ``metadata.json``), as numbers and strings in HDF5 attributes, and as JSON text in
    Arrow and Parquet key-value metadata.
    """
    if not metadata:
        return {}
    return dict(_decoded(tuple(metadata.items())))


def time_attrs(unit: str) -> dict[str, str]:
    """CF attributes of integer times since the Unix epoch in Arrow ``unit`` (``"ns"``):
    what xarray, netCDF tools and MATLAB decode into dates."""
    return {"units": f"{_UNIT_WORDS[unit]} since 1970-01-01", "calendar": "proleptic_gregorian"}


@dataclass(slots=True)
class StreamMetadata:
    """A table stream's metadata, by the rule every writer follows.

    The schema metadata of the first batch stored is the stream's metadata; a later
    batch never overwrites it. Each later value that differs (or a key that first
    appears later) is recorded as ``{"row": first row with the new value, "key": ...,
    "value": ...}`` in :attr:`changes`, stored under :data:`METADATA_CHANGES`. A batch
    without a key leaves that key as it was.
    """

    first: dict[str, Any] | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0  # rows stored so far
    #: Changes the format has stored (formats that store them at flush and close).
    stored_changes: int = 0
    _raw: dict[bytes, bytes] = field(default_factory=dict)  # the value in force, per key
    _last: Mapping[bytes, bytes] | None = None  # the metadata of the last batch seen

    def observe(self, metadata: Mapping[bytes, bytes] | None, rows: int) -> None:
        """Take the schema metadata of ``rows`` rows just stored."""
        start = self.rows
        self.rows += rows
        if self.first is not None and metadata == self._last:
            return  # the common case: one comparison
        self._last = metadata
        if self.first is None:
            self.first = decode_metadata(metadata)
            self._raw = dict(metadata or {})
            return
        for key, raw in (metadata or {}).items():
            if self._raw.get(key) != raw:
                name = key.decode("utf-8", errors="backslashreplace")
                value = _metadata_value(name, raw)
                self.changes.append({"row": start, "key": name, "value": value})
                self._raw[key] = raw

    def changes_json(self) -> str | None:
        """:attr:`changes` as JSON text, ``None`` when there are none."""
        if not self.changes:
            return None
        return json.dumps(self.changes, allow_nan=True)


@dataclass(frozen=True, slots=True)
class FrameBlock:
    """Consecutive frames as one ``(n, *frame_shape)`` stack, with per-frame ids."""

    frames: npt.NDArray[Any]
    timestamps_ns: npt.NDArray[np.uint64]
    frame_numbers: npt.NDArray[np.uint64]

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def part(self, start: int, stop: int) -> FrameBlock:
        """Frames ``start:stop`` (views, no copy)."""
        return FrameBlock(self.frames[start:stop], self.timestamps_ns[start:stop],
                          self.frame_numbers[start:stop])  # fmt: skip

    def copy(self) -> FrameBlock:
        """A copy that owns its memory (the caller may reuse the original's buffers)."""
        return FrameBlock(self.frames.copy(), self.timestamps_ns.copy(), self.frame_numbers.copy())


#: The type of a frame stream's ``timestamp_ns`` column: nanoseconds since the epoch, UTC
#: (pandas and polars show dates).
FRAME_TIMESTAMP = pa.timestamp("ns", "UTC")
#: Frames as Arrow (the Arrow IPC and Parquet writers, Flight): one row per frame.
FRAME_COLUMNS = ("timestamp_ns", "frame_number", "frame")


def frame_schema(dtype: np.dtype[Any], shape: Sequence[int]) -> pa.Schema:
    """Frames of ``dtype`` and ``shape`` as Arrow: ``timestamp_ns``, ``frame_number``
    (``uint64``) and ``frame``, a ``fixed_shape_tensor``."""
    tensor = pa.fixed_shape_tensor(pa.from_numpy_dtype(dtype), list(shape))
    return pa.schema([("timestamp_ns", FRAME_TIMESTAMP), ("frame_number", pa.uint64()),
                      ("frame", tensor)])  # fmt: skip


def frames_to_batch(block: FrameBlock) -> pa.RecordBatch:
    """``block`` as :func:`frame_schema`'s batch, one row per frame (zero-copy)."""
    frames = block.frames
    schema = frame_schema(frames.dtype, frames.shape[1:])
    tensor = schema.field("frame").type
    flat = pa.array(frames.reshape(-1)) if frames.size else pa.array([], tensor.value_type)
    storage = pa.FixedSizeListArray.from_arrays(flat, math.prod(frames.shape[1:]))
    return pa.RecordBatch.from_arrays(
        [
            # Same int64 nanoseconds; the writers refuse stamps past 2**63 - 1.
            pa.array(block.timestamps_ns.view(np.int64), FRAME_TIMESTAMP),
            pa.array(block.frame_numbers, pa.uint64()),
            pa.ExtensionArray.from_storage(tensor, storage),
        ],
        schema=schema,
    )


def join_frames(blocks: list[FrameBlock]) -> FrameBlock:
    """Consecutive frame blocks as one (the block itself when there is one)."""
    if len(blocks) == 1:
        return blocks[0]
    return FrameBlock(
        np.concatenate([b.frames for b in blocks]),
        np.concatenate([b.timestamps_ns for b in blocks]),
        np.concatenate([b.frame_numbers for b in blocks]),
    )


# Safe widenings: the new type holds every value of the old one exactly.
_WIDER: dict[str, tuple[str, ...]] = {
    "int8": ("int16", "int32", "int64", "float32", "float64"),
    "int16": ("int32", "int64", "float32", "float64"),
    "int32": ("int64", "float64"),
    "uint8": ("uint16", "uint32", "uint64", "int16", "int32", "int64", "float32", "float64"),
    "uint16": ("uint32", "uint64", "int32", "int64", "float32", "float64"),
    "uint32": ("uint64", "int64", "float64"),
    "float16": ("float32", "float64"),
    "float32": ("float64",),
}


def widened(old: np.dtype[Any], new: np.dtype[Any]) -> np.dtype[Any] | None:
    """The dtype that holds both ``old`` and ``new`` safely, or ``None`` if there is none."""
    if old == new:
        return old
    if new.name in _WIDER.get(old.name, ()):
        return new
    if old.name in _WIDER.get(new.name, ()):
        return old  # narrower values arriving in a wider column: cast on append
    return None


@dataclass(frozen=True, slots=True)
class Column:
    """One storable column: a name (``parent.child`` for struct fields), numpy values
    (``(n, ...)``; object dtype for strings and variable-length lists), a validity mask
    when there are nulls, and attributes: the exact Arrow type (``arrow_type``), CF
    ``units`` and ``calendar`` for times, and the field's own metadata (decoded by
    :func:`decode_metadata`)."""

    name: str
    values: npt.NDArray[Any]
    valid: npt.NDArray[np.bool_] | None
    kind: str  # "fixed", "string", "vlen"
    attrs: dict[str, Any]


def _fill_nulls(array: pa.Array, fill: Any) -> pa.Array:
    return pc.fill_null(array, fill) if array.null_count else array


def _primitive(name: str, array: pa.Array, field_type: pa.DataType) -> Column:
    valid = None
    if array.null_count:
        valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    t = array.type
    attrs: dict[str, Any] = {"arrow_type": str(field_type)}
    if pa.types.is_timestamp(t) or pa.types.is_duration(t):
        if pa.types.is_timestamp(t):
            attrs.update(time_attrs(t.unit))
        else:  # xarray decodes a timedelta from units only with its numpy dtype beside
            attrs.update(units=_UNIT_WORDS[t.unit], dtype=f"timedelta64[{t.unit}]")
        values = _fill_nulls(array.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        return Column(name, np.asarray(values, np.int64), valid, "fixed", attrs)
    if pa.types.is_string_view(t):  # what polars exports through the C stream interface
        array, t = array.cast(pa.large_string()), pa.large_string()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        values = _fill_nulls(array, "").to_numpy(zero_copy_only=False)
        return Column(name, np.asarray(values, dtype=object), valid, "string", attrs)
    if pa.types.is_boolean(t):
        values = _fill_nulls(array, False).to_numpy(zero_copy_only=False)
        return Column(name, np.asarray(values, dtype=bool), valid, "fixed", attrs)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        fill = float("nan") if pa.types.is_floating(t) else 0
        values = _fill_nulls(array, fill).to_numpy(zero_copy_only=False)
        return Column(name, np.asarray(values, dtype=t.to_pandas_dtype()), valid, "fixed", attrs)
    raise UnsupportedData(f"column {name!r}: Arrow type {field_type} is not supported")


def _is_primitive_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))


def _columns(name: str, array: pa.Array, source: pa.Field) -> Iterator[Column]:
    """The storable columns of ``array`` (of field ``source``), each with the field's
    metadata."""
    for column in _typed_columns(name, array):
        for key, value in decode_metadata(source.metadata).items():
            column.attrs.setdefault(key, value)  # the type's own attributes win
        yield column


def _typed_columns(name: str, array: pa.Array) -> Iterator[Column]:
    t = array.type
    if isinstance(t, pa.FixedShapeTensorType):
        tensor = array.to_numpy_ndarray() if len(array) else np.empty((0, *t.shape))
        values = np.asarray(tensor, dtype=t.value_type.to_pandas_dtype())
        attrs: dict[str, Any] = {"arrow_type": f"fixed_shape_tensor<{t.value_type}>{list(t.shape)}"}
        if t.dim_names:
            attrs["dim_names"] = ",".join(t.dim_names)
        yield Column(name, values, None, "fixed", attrs)
    elif pa.types.is_dictionary(t):
        yield from _typed_columns(name, array.dictionary_decode())
    elif pa.types.is_struct(t):
        for i in range(t.num_fields):
            child = array.field(i)
            if array.null_count:  # a null struct makes every child null
                child = pc.if_else(array.is_valid(), child, pa.nulls(len(child), child.type))
            yield from _columns(f"{name}.{t.field(i).name}", child, t.field(i))
    elif pa.types.is_fixed_size_list(t) and _is_primitive_numeric(t.value_type):
        width = t.list_size
        flat = array.flatten() if not array.null_count else _fill_nulls(array, None).flatten()
        values = np.asarray(flat.to_numpy(zero_copy_only=False), t.value_type.to_pandas_dtype())
        valid = None
        if array.null_count:
            valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            full = np.zeros((len(array), width), values.dtype)
            full[valid] = values.reshape(-1, width)
            values = full.reshape(-1)
        yield Column(name, values.reshape(len(array), width), valid, "fixed",
                     {"arrow_type": str(t)})  # fmt: skip
    elif (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_primitive_numeric(t.value_type):
        dtype = np.dtype(t.value_type.to_pandas_dtype())
        valid = None
        if array.null_count:
            valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        items = np.empty(len(array), dtype=object)
        offsets = array.offsets.to_numpy()
        flat = np.asarray(array.values.to_numpy(zero_copy_only=False), dtype)
        for i in range(len(array)):  # h5py takes vlen data as an object array of arrays
            items[i] = flat[offsets[i] : offsets[i + 1]] if valid is None or valid[i] else flat[:0]
        yield Column(name, items, valid, "vlen", {"arrow_type": str(t)})
    else:
        yield _primitive(name, array, t)


def flatten_batch(batch: pa.RecordBatch, *, stream: str | None = None) -> list[Column]:
    """The batch's columns in storable form (structs flattened to ``parent.child``).

    Raises:
        UnsupportedData: a column's Arrow type has no mapping (named, with ``stream``).
    """
    out: list[Column] = []
    for column_field, array in zip(batch.schema, batch.columns, strict=True):
        try:
            out.extend(_columns(column_field.name, array, column_field))
        except UnsupportedData as exc:
            if stream is None:
                raise
            raise UnsupportedData(f"stream {stream!r} {exc}") from None
    return out


# ---------------------------------------------------------------------------------------
# Schema evolution: what a batch changes in its table stream, and the one policy.

#: What a writer does with a kind of change (declared per writer class):
#: ``"in_place"`` evolves the stream where it is, ``"new_part"`` continues the stream in
#: a new part (file, group or array) recorded in the output's metadata, ``"refuse"``
#: raises :class:`~daq_storage.errors.SchemaMismatch` and stores nothing.
Evolution = Literal["in_place", "new_part", "refuse"]
EVOLUTIONS: tuple[str, ...] = ("in_place", "new_part", "refuse")
#: The kinds of change, mildest first.
CHANGE_KINDS: tuple[str, ...] = ("widening", "new_columns", "incompatible")


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """What a batch changes in a table stream, column by column (``parent.child`` for
    struct fields).

    - ``widened``: the column's type widens safely (``int32 -> int64``, ``float32 ->
      float64``, ``int16 -> float32``: every old value is exact in the new type);
    - ``added``: a column the stream does not have (earlier rows hold nulls);
    - ``missing``: a column of the stream the batch lacks (its rows hold nulls);
    - ``incompatible``: any other type change (``int64 -> float64``, ``float -> string``,
      a timestamp's unit or zone).

    Values narrower than the stream's column (``int32`` into an ``int64`` column) and
    ``string``/``large_string`` (``binary``/``large_binary``) are no change: they are
    cast exactly on append. Column order and nullability are no change either.
    """

    widened: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    incompatible: tuple[str, ...] = ()
    details: tuple[str, ...] = ()  # one human sentence per changed column

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds present (:data:`CHANGE_KINDS`), mildest first; empty when none."""
        present = (self.widened, self.added or self.missing, self.incompatible)
        return tuple(kind for kind, found in zip(CHANGE_KINDS, present, strict=True) if found)

    @property
    def kind(self) -> str:
        """``"same"``, or the most severe kind present."""
        kinds = self.kinds
        return kinds[-1] if kinds else "same"

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def __str__(self) -> str:
        return "; ".join(self.details) if self.details else "no change"


_SEVERITY = {"in_place": 0, "new_part": 1, "refuse": 2}


def evolution_for(change: SchemaChange, policy: Mapping[str, str]) -> str:
    """What a writer with ``policy`` (kind -> :data:`Evolution`) does with ``change``:
    ``"same"`` for none, else the most disruptive of the actions its kinds call for."""
    actions = [policy[kind] for kind in change.kinds]
    return max(actions, key=_SEVERITY.__getitem__) if actions else "same"


def _leaves(fields: Any, prefix: str = "") -> Iterator[tuple[str, pa.DataType]]:
    for leaf in fields:
        name = f"{prefix}{leaf.name}"
        if pa.types.is_struct(leaf.type):
            yield from _leaves(iter(leaf.type), f"{name}.")
        else:
            yield name, leaf.type


_LARGE = {pa.string(): pa.large_string(), pa.binary(): pa.large_binary()}


def _same_type(old: pa.DataType, new: pa.DataType) -> bool:
    return bool(old == new or _LARGE.get(old) == new or _LARGE.get(new) == old)


def _numpy_name(t: pa.DataType) -> str | None:
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return str(t.to_pandas_dtype().__name__)
    return None


def _type_change(old: pa.DataType, new: pa.DataType) -> str:
    """``"same"``, ``"widening"`` or ``"incompatible"`` for one leaf column."""
    if _same_type(old, new):
        return "same"
    old_name, new_name = _numpy_name(old), _numpy_name(new)
    if old_name is not None and new_name is not None:
        if new_name in _WIDER.get(old_name, ()):
            return "widening"
        if old_name in _WIDER.get(new_name, ()):
            return "same"  # narrower values into a wider column: exact on append
    return "incompatible"


def classify_change(stream: pa.Schema, batch: pa.Schema) -> SchemaChange:
    """What ``batch`` changes in a stream whose schema is ``stream``: the one rule every
    writer follows (see :class:`SchemaChange`)."""
    old = dict(_leaves(stream))
    new = dict(_leaves(batch))
    widened, incompatible, details = [], [], []
    for name, new_type in new.items():
        old_type = old.get(name)
        if old_type is None:
            continue
        change = _type_change(old_type, new_type)
        if change == "widening":
            widened.append(name)
            details.append(f"column {name!r} widens from {old_type} to {new_type}")
        elif change == "incompatible":
            incompatible.append(name)
            details.append(f"column {name!r} changes type from {old_type} to {new_type}")
    added = [name for name in new if name not in old]
    missing = [name for name in old if name not in new]
    details += [f"new column {name!r} ({new[name]})" for name in added]
    details += [f"column {name!r} is missing (its rows hold nulls)" for name in missing]
    return SchemaChange(
        tuple(widened), tuple(added), tuple(missing), tuple(incompatible), tuple(details)
    )


def _merged_type(old: pa.DataType, new: pa.DataType) -> pa.DataType:
    if pa.types.is_struct(old) and pa.types.is_struct(new):
        return pa.struct(_merged_fields(list(old), list(new)))
    return new if _type_change(old, new) == "widening" else old


def _merged_fields(old: list[pa.Field], new: list[pa.Field]) -> list[pa.Field]:
    by_name = {f.name: f for f in new}
    merged = []
    for f in old:
        other = by_name.get(f.name)
        if other is None:
            merged.append(f.with_nullable(True))
        else:
            merged.append(f.with_type(_merged_type(f.type, other.type)).with_nullable(True))
    known = {f.name for f in old}
    merged += [f.with_nullable(True) for f in new if f.name not in known]
    return merged


def evolved_schema(stream: pa.Schema, batch: pa.Schema) -> pa.Schema:
    """The stream's schema after an in-place evolution by ``batch``: its columns in
    order, widened where ``batch`` widens them, then ``batch``'s new columns; every
    column that changed nullable. Call it only for a change without incompatible
    columns."""
    if stream.equals(batch):
        return stream
    fields = _merged_fields(list(stream), list(batch))
    return pa.schema(fields, metadata=stream.metadata)


def conform_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with ``schema``'s columns, order and types: missing columns as nulls,
    narrower values cast exactly (a value that does not fit raises
    :class:`~daq_storage.errors.SchemaMismatch`)."""
    if batch.schema.equals(schema):
        return batch
    arrays = []
    for target in schema:
        index = batch.schema.get_field_index(target.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, target.type))
            continue
        array = batch.column(index)
        if array.type != target.type:
            try:
                array = array.cast(target.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaMismatch(
                    f"column {target.name!r}: cannot store {array.type} as {target.type} ({exc})"
                ) from None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema.with_metadata(batch.schema.metadata))
