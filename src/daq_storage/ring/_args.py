"""Checks of what callers pass to the ring writer: every bad value becomes a
:class:`~daq_storage.errors.DaqStorageError` naming it, before anything is stored."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
import numpy.typing as npt

from daq_storage.errors import ConfigError, SchemaMismatch, describe_value
from daq_storage.ring import _format as f

__all__ = [
    "check_overflow",
    "count",
    "file_mode",
    "flag",
    "frame_metadata",
    "geometry",
    "payload_rows",
    "payload_view",
    "seconds",
    "timestamps",
    "u64",
]

_U64 = 1 << 64


def check_overflow(overflow: object) -> None:
    if not isinstance(overflow, str) or overflow not in ("discard_oldest", "block"):
        raise ConfigError(
            f"overflow must be 'discard_oldest' or 'block', got {describe_value(overflow)}"
        )


def seconds(value: object, name: str) -> float:
    """A duration: a real number >= 0 (infinity allowed: wait forever)."""
    if not isinstance(value, bool) and isinstance(value, Real):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float's range: as good as forever
            number = math.inf if value > 0 else -math.inf  # type: ignore[operator]
        if number >= 0:  # also refuses NaN
            return number
    raise ConfigError(f"{name} must be a number of seconds >= 0, got {describe_value(value)}")


def count(value: object, name: str, low: int | None = None, high: int | None = None) -> int:
    """An integer option (bytes, slots), in ``low..high`` where given."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {describe_value(value)}") from None
    if (low is not None and number < low) or (high is not None and number > high):
        accepted = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be an integer in {accepted}, got {describe_value(value)}")
    return number


def flag(value: object, name: str) -> bool:
    """A yes/no option: ``True`` or ``False`` (numpy's bool too), nothing merely truthy."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise ConfigError(f"{name} must be True or False, got {describe_value(value)}")


def geometry(
    capacity_bytes: object,
    max_readers: object,
    max_streams: object,
    max_schemas: object,
    schema_heap_bytes: object,
) -> f.Geometry:
    """The geometry of a new ring; the capacity is rounded up to whole pages (at least
    the smallest ring), the heap to the record alignment."""
    requested = count(capacity_bytes, "capacity_bytes", 1, f.MAX_CAPACITY)
    return f.check_geometry(
        max(f.MIN_CAPACITY, (requested + f.PAGE - 1) // f.PAGE * f.PAGE),
        count(max_readers, "max_readers", 1, f.MAX_READERS),
        count(max_streams, "max_streams", 1, f.MAX_STREAMS),
        count(max_schemas, "max_schemas", 1, f.MAX_SCHEMAS),
        f.align(count(schema_heap_bytes, "schema_heap_bytes", 0, f.MAX_CAPACITY)),
    )


def file_mode(mode: object) -> int:
    """Permission bits for a new ring file (no set-id or sticky bits)."""
    bits = count(mode, "mode")
    if not 0 <= bits <= 0o777:
        raise ConfigError(
            f"mode must be permission bits in 0o000..0o777, got {describe_value(mode)}"
        )
    return bits


def u64(value: object, name: str) -> int:
    """A timestamp or frame number: an integer that fits 64 unsigned bits."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise SchemaMismatch(f"{name} must be an integer, got {describe_value(value)}") from None
    if not 0 <= number < _U64:
        raise SchemaMismatch(f"{name} must be in 0..2**64-1, got {describe_value(number)}")
    return number


def timestamps(values: Any, n: int) -> npt.NDArray[np.uint64]:
    """``n`` timestamps as uint64, refusing negative, fractional or oversized ones."""
    try:
        stamps = np.asarray(values)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SchemaMismatch(f"timestamps_ns cannot be read as integers: {exc}") from None
    if stamps.shape != (n,):
        raise SchemaMismatch(f"timestamps_ns has shape {stamps.shape}; expected ({n},)")
    if stamps.dtype == object:  # Python ints beyond int64, or anything else
        return np.fromiter((u64(v, "timestamps_ns") for v in stamps), np.uint64, n)
    if stamps.dtype.kind not in "iu":
        raise SchemaMismatch(f"timestamps_ns must be integers, got dtype {stamps.dtype}")
    if stamps.dtype.kind == "i" and int(stamps.min()) < 0:
        raise SchemaMismatch(f"timestamps_ns holds {int(stamps.min())}; they must be >= 0")
    return stamps.astype(np.uint64, copy=False)


def payload_view(payload: object) -> bytes | memoryview:
    """The bytes of one raw record."""
    if isinstance(payload, bytes):
        return payload
    try:
        if isinstance(payload, np.ndarray):
            if payload.dtype.hasobject:
                raise TypeError("an object array has no bytes to store")
            # A uint8 view: any dtype's bytes, datetimes included (no buffer protocol).
            return np.ascontiguousarray(payload).reshape(-1).view(np.uint8).data
        view = memoryview(payload)  # type: ignore[arg-type]
        return view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
    except (TypeError, ValueError) as exc:
        raise SchemaMismatch(
            f"a raw record needs bytes or a buffer, got {type(payload).__name__} ({exc})"
        ) from None


def payload_rows(payloads: Sequence[Any] | npt.NDArray[Any]) -> npt.NDArray[np.uint8] | None:
    """Equal-length payloads as a 2-D uint8 array (one row each), or ``None`` when their
    lengths differ (each is then written on its own)."""
    if isinstance(payloads, np.ndarray):
        if payloads.ndim != 2 or payloads.dtype.hasobject:
            raise SchemaMismatch(
                f"write_many needs a 2-D array of numbers, got shape {payloads.shape} "
                f"dtype {payloads.dtype}"
            )
        rows = np.ascontiguousarray(payloads)
        return rows.view(np.uint8).reshape(len(rows), rows.shape[1] * rows.dtype.itemsize)
    if not isinstance(payloads, list | tuple):
        try:
            payloads = list(payloads)
        except TypeError:
            raise SchemaMismatch(
                f"write_many needs a sequence of byte strings, got {type(payloads).__name__}"
            ) from None
    n = len(payloads)
    try:
        sizes = {len(p) for p in payloads}
        joined = b"".join(payloads) if len(sizes) == 1 else b""
        if len(sizes) == 1 and len(joined) != n * next(iter(sizes)):
            raise TypeError("not flat byte strings")
    except TypeError:  # not all flat bytes: take each as a buffer
        views = [payload_view(p) for p in payloads]
        sizes = {len(v) for v in views}
        joined = b"".join(views) if len(sizes) == 1 else b""
    if len(sizes) > 1:
        return None
    return np.frombuffer(joined, np.uint8).reshape(n, sizes.pop() if sizes else 0)


def frame_metadata(metadata: object) -> bytes:
    """A frame's metadata as compact UTF-8 JSON (an object); ``b""`` for none."""
    if metadata is None:
        return b""
    if not isinstance(metadata, Mapping):
        raise SchemaMismatch(f"frame metadata must be a mapping, got {type(metadata).__name__}")
    if not metadata:
        return b""
    try:
        text = json.dumps(metadata, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise SchemaMismatch(f"frame metadata cannot be stored as JSON: {exc}") from None
    return text.encode()
