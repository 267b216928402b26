"""Frames as Arrow: a ``fixed_shape_tensor`` column beside ``timestamp_ns`` (an Arrow
``timestamp("ns", "UTC")``: pandas and polars show dates) and ``frame_number``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from daq_storage.writers._base import FrameBlock

__all__ = ["FRAME_TIMESTAMP", "frames_to_batch"]

#: The type of a frame stream's ``timestamp_ns`` column: nanoseconds since the epoch.
FRAME_TIMESTAMP = pa.timestamp("ns", "UTC")


def frames_to_batch(block: FrameBlock) -> pa.RecordBatch:
    """One row per frame; the frame column is a ``fixed_shape_tensor`` (zero-copy)."""
    frames = block.frames
    shape = list(frames.shape[1:])
    tensor_type = pa.fixed_shape_tensor(pa.from_numpy_dtype(frames.dtype), shape)
    flat = (
        pa.array(frames.reshape(-1))
        if frames.size
        else pa.array([], pa.from_numpy_dtype(frames.dtype))
    )
    storage = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(shape)))
    return pa.RecordBatch.from_arrays(
        [
            # Same int64 nanoseconds; the writers refuse stamps past 2**63 - 1.
            pa.array(block.timestamps_ns.view(np.int64), FRAME_TIMESTAMP),
            pa.array(block.frame_numbers, pa.uint64()),
            pa.ExtensionArray.from_storage(tensor_type, storage),
        ],
        names=["timestamp_ns", "frame_number", "frame"],
    )
