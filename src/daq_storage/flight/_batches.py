"""Ring records as the Arrow data a Flight stream carries, and back.

Table records are their record batches as written. Frames are rows of a
``fixed_shape_tensor`` column ``frame`` beside ``timestamp_ns`` (``timestamp("ns",
"UTC")``) and ``frame_number`` (``uint64``), the layout the Arrow IPC and Parquet writers
store frames in. Raw records are rows of ``timestamp_ns`` and ``data`` (``binary``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import SchemaMismatch
from daq_storage.ring import Record
from daq_storage.schema import (
    FRAME_COLUMNS,
    FRAME_TIMESTAMP,
    FrameBlock,
    frame_schema,
    frames_to_batch,
)

__all__ = [
    "FRAME_COLUMNS",
    "TIMESTAMP",
    "frame_schema",
    "frames_batch",
    "frames_of",
    "is_frame_schema",
    "raw_batch",
    "raw_schema",
    "record_schema",
    "records_batch",
]

#: The type of ``timestamp_ns`` in frame and raw batches: nanoseconds since the epoch.
TIMESTAMP = FRAME_TIMESTAMP


def raw_schema() -> pa.Schema:
    """The schema of a raw stream."""
    return pa.schema([("timestamp_ns", TIMESTAMP), ("data", pa.binary())])


def is_frame_schema(schema: pa.Schema) -> bool:
    """Whether ``schema`` is :func:`frame_schema`'s layout (what DoPut stores as frames)."""
    return tuple(schema.names) == FRAME_COLUMNS and isinstance(
        schema.field("frame").type, pa.FixedShapeTensorType
    )


def record_schema(record: Record) -> pa.Schema:
    """The Flight schema of ``record``'s stream, as of this record."""
    if record.kind == "arrow":
        return record.schema
    if record.kind == "frame":
        array = record.array()
        return frame_schema(array.dtype, array.shape)
    return raw_schema()


def frames_batch(records: Sequence[Record]) -> pa.RecordBatch:
    """Frame ``records`` (of one dtype and shape) as one batch of :func:`frame_schema`."""
    stamps = np.fromiter((r.timestamp_ns for r in records), np.uint64, len(records))
    numbers = np.fromiter((r.frame_number for r in records), np.uint64, len(records))
    return frames_to_batch(FrameBlock(np.stack([r.array() for r in records]), stamps, numbers))


def raw_batch(records: Sequence[Record]) -> pa.RecordBatch:
    """Raw ``records`` as one batch."""
    stamps = np.fromiter((r.timestamp_ns for r in records), np.int64, len(records))
    data = pa.array([r.tobytes() for r in records], pa.binary())
    return pa.RecordBatch.from_arrays([pa.array(stamps, TIMESTAMP), data], schema=raw_schema())


def records_batch(schema: pa.Schema, kind: str, records: Sequence[Record]) -> pa.RecordBatch:
    """Consecutive ``records`` of one stream and schema as one batch of ``schema``."""
    if kind == "frame":
        return frames_batch(records)
    if kind == "raw":
        return raw_batch(records)
    batches = [r.batch() for r in records]
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches, schema).combine_chunks().to_batches()[0]


def frames_of(batch: pa.RecordBatch) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """``(frames, timestamps_ns, frame_numbers)`` of a frame batch: the frames as one
    ``(n, *shape)`` array (zero-copy where Arrow allows), the others as ``uint64``.

    Raises:
        SchemaMismatch: ``batch`` is not a frame batch (see :func:`frame_schema`).
    """
    if not is_frame_schema(batch.schema):
        raise SchemaMismatch(
            f"a frame batch has columns {list(FRAME_COLUMNS)} with a fixed_shape_tensor "
            f"'frame'; got {batch.schema.names}"
        )
    column = batch.column("frame")
    tensor: pa.FixedShapeTensorType = column.type
    shape = tuple(tensor.shape)
    if len(column) == 0:
        frames = np.empty((0, *shape), tensor.value_type.to_pandas_dtype())
    else:
        frames = column.to_numpy_ndarray()
    stamps = batch.column("timestamp_ns").cast(pa.int64()).to_numpy(zero_copy_only=False)
    numbers = batch.column("frame_number").to_numpy(zero_copy_only=False)
    return frames, stamps.astype(np.uint64), numbers.astype(np.uint64)
