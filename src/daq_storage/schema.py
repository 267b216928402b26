"""Arrow types as the writers see them: flattening, numpy conversion, safe widening."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from daq_storage.errors import UnsupportedData

__all__ = ["Column", "FrameBlock", "flatten_batch", "join_frames", "widened"]


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
    when there are nulls, and attributes describing the Arrow type."""

    name: str
    values: npt.NDArray[Any]
    valid: npt.NDArray[np.bool_] | None
    kind: str  # "fixed", "string", "vlen"
    attrs: dict[str, str]


def _fill_nulls(array: pa.Array, fill: Any) -> pa.Array:
    return pc.fill_null(array, fill) if array.null_count else array


def _primitive(name: str, array: pa.Array, field_type: pa.DataType) -> Column:
    valid = None
    if array.null_count:
        valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    t = array.type
    attrs: dict[str, str] = {"arrow_type": str(field_type)}
    if pa.types.is_timestamp(t) or pa.types.is_duration(t):
        attrs["unit"] = t.unit
        if pa.types.is_timestamp(t) and t.tz:
            attrs["tz"] = t.tz
        values = _fill_nulls(array.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        return Column(name, np.asarray(values, np.int64), valid, "fixed", attrs)
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


def _columns(name: str, array: pa.Array) -> Iterator[Column]:
    t = array.type
    if isinstance(t, pa.FixedShapeTensorType):
        tensor = array.to_numpy_ndarray() if len(array) else np.empty((0, *t.shape))
        values = np.asarray(tensor, dtype=t.value_type.to_pandas_dtype())
        attrs = {"arrow_type": f"fixed_shape_tensor<{t.value_type}>{list(t.shape)}"}
        if t.dim_names:
            attrs["dim_names"] = ",".join(t.dim_names)
        yield Column(name, values, None, "fixed", attrs)
    elif pa.types.is_dictionary(t):
        yield from _columns(name, array.dictionary_decode())
    elif pa.types.is_struct(t):
        for i in range(t.num_fields):
            child = array.field(i)
            if array.null_count:  # a null struct makes every child null
                child = pc.if_else(array.is_valid(), child, pa.nulls(len(child), child.type))
            yield from _columns(f"{name}.{t.field(i).name}", child)
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
    for field, array in zip(batch.schema, batch.columns, strict=True):
        try:
            columns = list(_columns(field.name, array))
        except UnsupportedData as exc:
            if stream is None:
                raise
            raise UnsupportedData(f"stream {stream!r} {exc}") from None
        for column in columns:
            unit = (field.metadata or {}).get(b"unit")
            if unit is not None and "unit" not in column.attrs:
                column.attrs["unit"] = unit.decode()
            out.append(column)
    return out
