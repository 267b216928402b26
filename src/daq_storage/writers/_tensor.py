"""Frames as Arrow: a ``fixed_shape_tensor`` column beside ``timestamp_ns`` and ``frame_number``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from daq_storage.writers._base import FrameBlock

__all__ = ["frames_to_batch"]


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
            pa.array(block.timestamps_ns, pa.uint64()),
            pa.array(block.frame_numbers, pa.uint64()),
            pa.ExtensionArray.from_storage(tensor_type, storage),
        ],
        names=["timestamp_ns", "frame_number", "frame"],
    )
