"""What callers hand a writer, made uniform: tables as one Arrow record batch, values as
JSON text."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import InvalidName, SchemaMismatch, UnsupportedData

__all__ = ["as_record_batch", "json_value", "stack_frames"]


def json_value(value: Any, *, what: str) -> str:
    """``value`` as JSON text, or :class:`UnsupportedData` naming ``what``."""
    try:
        return json.dumps(value, default=_json_default, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise UnsupportedData(
            f"{what}: value {_short(value)} is not JSON-serialisable ({exc})"
        ) from None
    except RecursionError:
        raise UnsupportedData(f"{what}: the value is nested too deeply to store") from None


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= 200 else f"{text[:197]}..."


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


_ACCEPTED = (
    "a pyarrow RecordBatch or Table, a polars or pandas DataFrame, or an object with "
    "__arrow_c_array__, __arrow_c_stream__ or to_arrow()"
)


def as_record_batch(data: Any, *, stream: str) -> pa.RecordBatch:
    """``data`` as one record batch, without pandas' schema metadata: a
    ``pyarrow.RecordBatch`` as it is; a ``pyarrow.Table`` (chunks joined; a table of no
    rows, or of no chunks, gives a batch of no rows); a pandas DataFrame (a named or
    non-default index becomes a column, as ``DataFrame.to_parquet`` does); anything with
    ``to_arrow()`` (polars), ``__arrow_c_array__`` or ``__arrow_c_stream__``.

    Raises:
        UnsupportedData: ``data`` is none of these, naming its type and what is accepted;
            or it has no columns (rows of nothing: no format can store them).
        InvalidName: its schema metadata holds an ``ARROW:`` or ``PARQUET:`` key.
    """
    if isinstance(data, pa.RecordBatch):
        _refuse_without_columns(data, data, stream)
        return _plain_metadata(data, stream)
    pandas = sys.modules.get("pandas")  # loaded if data can be a pandas DataFrame
    converted: Any = None
    try:
        if isinstance(data, pa.Table):
            converted = data
        elif pandas is not None and isinstance(data, pandas.DataFrame):
            converted = _without_pandas_metadata(pa.Table.from_pandas(data))
        elif callable(getattr(data, "to_arrow", None)):
            converted = data.to_arrow()
        elif hasattr(data, "__arrow_c_array__"):
            converted = pa.record_batch(data)
        elif hasattr(data, "__arrow_c_stream__"):
            converted = pa.RecordBatchReader.from_stream(data).read_all()
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise UnsupportedData(
            f"stream {stream!r}: cannot read a {type(data).__name__} as a table ({exc})"
        ) from None
    if isinstance(converted, (pa.Table, pa.RecordBatch)):
        _refuse_without_columns(converted, data, stream)
    if isinstance(converted, pa.Table):
        joined = converted.combine_chunks()
        converted = pa.RecordBatch.from_arrays(
            [column.combine_chunks() for column in joined.columns], schema=joined.schema
        )
    if isinstance(converted, pa.RecordBatch):
        return _plain_metadata(converted, stream)
    raise UnsupportedData(
        f"stream {stream!r}: write_batch takes {_ACCEPTED}; got {type(data).__name__}"
    )


def _refuse_without_columns(table: pa.Table | pa.RecordBatch, data: Any, stream: str) -> None:
    """Refuse a table of no columns: its rows hold nothing to store (and joining its
    chunks would silently drop its row count)."""
    if table.num_columns == 0:
        raise UnsupportedData(
            f"stream {stream!r}: the {type(data).__name__} has no columns ({table.num_rows} "
            "rows of nothing): a table to store needs at least one column"
        )


def _plain_metadata(batch: pa.RecordBatch, stream: str) -> pa.RecordBatch:
    """``batch`` without pandas' schema metadata (see :func:`_without_pandas_metadata`),
    refused when its schema metadata holds a key Arrow or Parquet reserve (as the
    stream's metadata it would make the files unreadable)."""
    metadata = batch.schema.metadata
    if not metadata:
        return batch
    for key in metadata:
        if key.startswith((b"ARROW:", b"PARQUET:")):
            raise InvalidName(
                f"stream {stream!r}: the batch's schema metadata key "
                f"{key.decode('utf-8', 'replace')!r} is reserved by Arrow and Parquet"
            )
    if b"pandas" in metadata:
        rest = {k: v for k, v in metadata.items() if k != b"pandas"}
        return batch.replace_schema_metadata(rest or None)
    return batch


def _without_pandas_metadata(table: pa.Table) -> pa.Table:
    """pandas' own schema metadata describes the DataFrame's index, which changes with
    every slice of rows: as stream metadata it would be recorded as a change per batch."""
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}
    return table.replace_schema_metadata(metadata or None)


def stack_frames(stream: str, frames: Sequence[Any]) -> npt.NDArray[Any]:
    """A sequence of equally shaped frames (ring views, say) as one ``(n, *shape)``
    stack: the one copy the writer would make anyway."""
    if not frames:
        raise SchemaMismatch(f"stream {stream!r}: an empty sequence of frames")
    first = frames[0]
    for i, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray):
            raise SchemaMismatch(
                f"stream {stream!r}: frame {i} of the sequence is a {type(frame).__name__}, "
                "not a numpy array"
            )
        if frame.shape != first.shape or frame.dtype != first.dtype:
            raise SchemaMismatch(
                f"stream {stream!r}: frame {i} of the sequence is {frame.dtype} "
                f"{frame.shape}; frame 0 is {first.dtype} {first.shape}: a sequence holds "
                "equally shaped frames"
            )
    return np.stack(frames)
