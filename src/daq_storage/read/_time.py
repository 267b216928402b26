"""Time bounds as integer nanoseconds since the Unix epoch, and a table batch's rows in
a time range."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from daq_storage.errors import ConfigError, describe_value

__all__ = ["TIME_COLUMN", "TimeLike", "in_range", "time_column", "to_ns"]

#: The column a time range applies to.
TIME_COLUMN = "timestamp_ns"
#: Where a stream has no ``timestamp_ns``: the stream writer's ``/data/timestamps``.
_OTHER_TIME_COLUMNS = ("timestamps",)


def time_column(schema: pa.Schema) -> str | None:
    """The column of ``schema`` a time range applies to: ``timestamp_ns``, else a
    ``timestamps`` column of timestamps or integers (nanoseconds); ``None``: none."""
    if TIME_COLUMN in schema.names:
        return TIME_COLUMN
    for name in _OTHER_TIME_COLUMNS:
        index = schema.get_field_index(name)
        if index >= 0:
            kind = schema.field(index).type
            if pa.types.is_timestamp(kind) or pa.types.is_integer(kind):
                return name
    return None


TimeLike: TypeAlias = int | np.integer[Any] | np.datetime64 | datetime


def to_ns(value: object, what: str) -> int | None:
    """``value`` (an int of nanoseconds, a ``numpy.datetime64``, a ``datetime``: aware,
    or naive meaning UTC) as nanoseconds since the epoch; ``None`` stays ``None``.

    Raises:
        ConfigError: another kind of value (named, with ``what``).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a time, got {describe_value(value)}")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise ConfigError(f"{what} must be a time, got NaT")
        return int(value.astype("datetime64[ns]").astype(np.int64))
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if isinstance(value, date):
        raise ConfigError(f"{what} must be a time, got the date {value}; use a datetime")
    raise ConfigError(f"{what} must be an int (ns since the epoch), a numpy.datetime64 or a "
                      f"datetime, got {describe_value(value)}")  # fmt: skip


def in_range(batch: pa.RecordBatch, start: int | None, stop: int | None,
             stream: str) -> pa.RecordBatch:  # fmt: skip
    """The rows of ``batch`` whose time (:func:`time_column`) lies in ``[start, stop)``."""
    if start is None and stop is None:
        return batch
    name = time_column(batch.schema)
    index = -1 if name is None else batch.schema.get_field_index(name)
    if index < 0:
        raise ConfigError(f"stream {stream!r} has no column {TIME_COLUMN!r}: a time range "
                          f"needs one")  # fmt: skip
    column = batch.column(index)
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.timestamp(column.type.unit)).cast(pa.int64())
        unit = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[batch.schema.field(index).type.unit]
    else:
        unit = 1
        column = column.cast(pa.int64())
    keep = None
    if start is not None:
        keep = pc.greater_equal(pc.multiply(column, unit), start)
    if stop is not None:
        upper = pc.less(pc.multiply(column, unit), stop)
        keep = upper if keep is None else pc.and_(keep, upper)
    return batch.filter(pc.fill_null(keep, False))
