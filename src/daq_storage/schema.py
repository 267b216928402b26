"""Arrow types as the writers see them: flattening, numpy conversion, safe widening, and
the one rule for a table stream's metadata."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from daq_storage.errors import UnsupportedData

__all__ = [
    "METADATA_CHANGES",
    "Column",
    "FrameBlock",
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
