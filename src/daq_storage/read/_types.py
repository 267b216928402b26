"""Arrow types from the text the writers record (``str(pyarrow.DataType)``), and Arrow
arrays from the numpy values a format stores them as."""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import ReadError

__all__ = ["arrow_array", "parse_type"]

_UNIT = re.compile(r"^(timestamp|duration|time32|time64)\[(\w+)(?:, tz=(.+))?\]$")
_DECIMAL = re.compile(r"^decimal(128|256)\((\d+), (-?\d+)\)$")
_FIXED_BINARY = re.compile(r"^fixed_size_binary\[(\d+)\]$")


def _split_top(text: str) -> list[str]:
    """``text`` split at the commas outside ``<>``, ``[]`` and ``()``."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "<[(":
            depth += 1
        elif char in ">])":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _inner(text: str, opening: str) -> tuple[str, str]:
    """The text between ``opening``'s ``<`` and its matching ``>``, and what follows."""
    depth = 0
    for i in range(len(opening) - 1, len(text)):
        if text[i] == "<":
            depth += 1
        elif text[i] == ">":
            depth -= 1
            if depth == 0:
                return text[len(opening) : i], text[i + 1 :]
    raise ValueError(text)


@functools.lru_cache(maxsize=512)
def parse_type(text: str) -> pa.DataType:
    """The Arrow type ``text`` names, as ``str(type)`` prints it (``"double"``,
    ``"timestamp[ns, tz=UTC]"``, ``"struct<x: double>"``, ``"fixed_size_list<item:
    float>[3]"``, ``"dictionary<values=string, indices=int32, ordered=0>"``, and the
    writers' ``"fixed_shape_tensor<uint16>[4, 4]"``).

    Raises:
        ReadError: a type this reader does not know.
    """
    try:
        return _parse(text.strip())
    except (ValueError, KeyError, TypeError, pa.ArrowInvalid) as exc:
        raise ReadError(f"unknown Arrow type {text!r} recorded for a column") from exc


def _field(text: str) -> pa.Field:
    name, _, kind = text.partition(": ")
    nullable = not kind.endswith(" not null")
    kind = kind.removesuffix(" not null")
    return pa.field(name, _parse(kind), nullable=nullable)


def _parse(text: str) -> pa.DataType:
    if match := _UNIT.match(text):
        kind, unit, tz = match.groups()
        if kind == "timestamp":
            return pa.timestamp(unit, tz)
        return {"duration": pa.duration, "time32": pa.time32, "time64": pa.time64}[kind](unit)
    if match := _DECIMAL.match(text):
        width, precision, scale = match.groups()
        make = pa.decimal128 if width == "128" else pa.decimal256
        return make(int(precision), int(scale))
    if match := _FIXED_BINARY.match(text):
        return pa.binary(int(match.group(1)))
    if text in ("date32[day]", "date64[ms]"):
        return pa.date32() if text.startswith("date32") else pa.date64()
    for opening, make in (("list<", pa.list_), ("large_list<", pa.large_list)):
        if text.startswith(opening):
            inner, rest = _inner(text, opening)
            if rest:
                raise ValueError(text)
            return make(_field(inner))
    if text.startswith("fixed_size_list<"):
        inner, rest = _inner(text, "fixed_size_list<")
        return pa.list_(_field(inner), int(rest.strip("[]")))
    if text.startswith("struct<"):
        inner, _ = _inner(text, "struct<")
        return pa.struct([_field(part) for part in _split_top(inner)])
    if text.startswith("dictionary<"):
        inner, _ = _inner(text, "dictionary<")
        parts = dict(part.split("=", 1) for part in _split_top(inner))
        return pa.dictionary(_parse(parts["indices"]), _parse(parts["values"]),
                             ordered=parts.get("ordered") == "1")  # fmt: skip
    if text.startswith("fixed_shape_tensor<"):
        inner, rest = _inner(text, "fixed_shape_tensor<")
        shape = [int(n) for n in rest.strip("[]").split(",") if n.strip()]
        return pa.fixed_shape_tensor(_parse(inner), shape)
    return pa.type_for_alias(text)


def arrow_array(values: npt.NDArray[Any], kind: pa.DataType | None,
                valid: npt.NDArray[np.bool_] | None = None) -> pa.Array:  # fmt: skip
    """``values`` as one Arrow array (see :func:`_arrow_array`)."""
    array = _arrow_array(values, kind, valid)
    if isinstance(array, pa.ChunkedArray):  # pyarrow splits millions of numpy strings
        return array.combine_chunks()
    return array


def _arrow_array(values: npt.NDArray[Any], kind: pa.DataType | None,
                 valid: npt.NDArray[np.bool_] | None = None) -> Any:  # fmt: skip
    """``values`` (as a format stores a column: integers for times, an ``(n, k)`` array
    for a fixed-size list, objects for text) as an Arrow array of type ``kind`` (by
    default the one numpy's dtype maps to), null where ``valid`` is False."""
    mask = None if valid is None or bool(valid.all()) else ~np.asarray(valid, bool)
    if kind is None:
        if values.dtype.kind in "OSU":
            return pa.array(values.tolist() if values.dtype.kind == "S" else values,
                            pa.string(), mask=mask)  # fmt: skip
        return pa.array(values, mask=mask)
    if isinstance(kind, pa.FixedShapeTensorType):
        storage = _fixed_list(values, kind.storage_type, mask)
        return pa.ExtensionArray.from_storage(kind, storage)
    if pa.types.is_fixed_size_list(kind):
        return _fixed_list(values, kind, mask)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        items = [None if mask is not None and mask[i] else np.asarray(v).tolist()
                 for i, v in enumerate(values)]  # fmt: skip
        return pa.array(items, kind)
    if pa.types.is_dictionary(kind):
        return arrow_array(values, kind.value_type, valid).dictionary_encode().cast(kind)
    if pa.types.is_timestamp(kind) or pa.types.is_duration(kind) or pa.types.is_date(kind) \
            or pa.types.is_time(kind):  # fmt: skip
        storage = pa.int32() if kind.bit_width == 32 else pa.int64()
        return pa.array(values.astype(storage.to_pandas_dtype(), copy=False), storage,
                        mask=mask).view(kind)  # fmt: skip
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if values.dtype.kind == "S":  # h5py without asstr(): UTF-8 bytes
            return pa.array(values.tolist(), pa.binary(), mask=mask).cast(kind)
        return pa.array(values, kind, mask=mask)
    return pa.array(values, kind, mask=mask)


def _fixed_list(values: npt.NDArray[Any], kind: pa.DataType, mask: Any) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), kind.value_type)
    array = pa.FixedSizeListArray.from_arrays(flat, kind.list_size)
    if mask is None:
        return array
    return pa.FixedSizeListArray.from_arrays(flat, kind.list_size, mask=pa.array(mask))
