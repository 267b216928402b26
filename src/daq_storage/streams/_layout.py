"""What a stream writer's files hold: the Arrow schema of ``/data`` (the same in HDF5 and
Arrow IPC), the HDF5 file's ``/metadata`` and ``/channels``, and the checks that turn a
user's block into columns.

```
data.h5
├── metadata/          attrs: layout, sample_rate, start_ns, start_time, storage,
│                      compression, chunk_size, n_channels, time_formula, volts_formula
├── channels/<name>    (1,) int32: the channel's index; attrs: index, min_value,
│                      max_value, unit, scale_factor, add_offset, long_name
└── data/              attrs: the metadata above, channels (JSON), gaps (JSON, once one)
    ├── timestamps     (n,) int64 ns since the epoch (CF units, calendar)
    ├── sample_index   (n,) uint64
    └── <name>         (n,) int16 counts (attrs scale_factor, add_offset, units) or
                       float64 values (attrs units), one per channel
```
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import SchemaMismatch, UnsupportedData, describe_value
from daq_storage.streams._channels import COUNT_MAX, COUNT_MIN, ChannelConfig

__all__ = [
    "DATA",
    "LAYOUT",
    "TIME_FORMULA",
    "VOLTS_FORMULA",
    "channel_columns",
    "channels_batch",
    "data_schema",
    "file_metadata",
]

#: The value of the ``layout`` metadata key that marks a stream writer's output.
LAYOUT = "daq_storage.streams"
#: The stream (HDF5 group, Arrow IPC file) holding the samples.
DATA = "data"
TIME_FORMULA = "timestamps = start_ns + round(sample_index * 1e9 / sample_rate), in integers"
VOLTS_FORMULA = "value = counts * scale_factor + add_offset"


def _json(value: Any) -> str:
    """A metadata value as Arrow metadata text: JSON, text as it is (the project's
    writers decode values that parse as JSON, and keep CF text attributes as text)."""
    return value if isinstance(value, str) else json.dumps(value)


def file_metadata(channels: Sequence[ChannelConfig], sample_rate: float, start_ns: int,
                  store: str, compression: str | None,
                  chunk_size: int | None) -> dict[str, Any]:  # fmt: skip
    """The run's metadata: ``/metadata`` attributes, and the ``data`` stream's."""
    start = datetime.fromtimestamp(start_ns // 10**9, UTC).replace(
        microsecond=start_ns % 10**9 // 1000
    )
    return {
        "layout": LAYOUT,
        "sample_rate": sample_rate,
        "start_ns": start_ns,
        "start_time": start.isoformat(),
        "storage": store,
        "compression": compression or "none",
        "chunk_size": chunk_size or 0,
        "n_channels": len(channels),
        "time_formula": TIME_FORMULA,
        "volts_formula": VOLTS_FORMULA,
    }


def data_schema(channels: Sequence[ChannelConfig], metadata: dict[str, Any],
                store: str) -> pa.Schema:  # fmt: skip
    """The schema of every batch of ``/data``: its metadata (JSON text values, as every
    writer of the project decodes them) and the channels' (CF attributes)."""
    fields = [
        pa.field("timestamps", pa.timestamp("ns", "UTC"), nullable=False,
                 metadata={"long_name": "sample time", "description": TIME_FORMULA}),
        pa.field("sample_index", pa.uint64(), nullable=False,
                 metadata={"long_name": "sample index"}),
    ]  # fmt: skip
    for channel in channels:
        described = {
            "units": channel.unit,
            "long_name": f"{channel.name} ({channel.unit})",
            "channel_index": _json(channel.index),
            "min_value": _json(channel.min_value),
            "max_value": _json(channel.max_value),
        }
        if store == "counts":
            described["scale_factor"] = _json(channel.scale_factor)
            described["add_offset"] = _json(channel.add_offset)
            kind = pa.int16()
        else:
            kind = pa.float64()
        fields.append(pa.field(channel.name, kind, nullable=False, metadata=described))
    schema_metadata = {key: _json(value) for key, value in metadata.items()}
    schema_metadata["channels"] = _json([c.describe() for c in channels])
    return pa.schema(fields, metadata=schema_metadata)


def channels_batch(channels: Sequence[ChannelConfig]) -> pa.RecordBatch:
    """``/channels``: a one-row table, a column per channel holding its index, the
    channel's description as the column's metadata (attributes of its dataset)."""
    fields, arrays = [], []
    for channel in channels:
        described = {key: _json(value) for key, value in channel.describe().items()}
        described["units"] = channel.unit
        described["long_name"] = f"channel {channel.index}: {channel.name}"
        fields.append(pa.field(channel.name, pa.int32(), nullable=False, metadata=described))
        arrays.append(pa.array([channel.index], pa.int32()))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def channel_columns(block: Any, channels: Sequence[ChannelConfig], store: str,
                    first: int) -> list[npt.NDArray[Any]]:  # fmt: skip
    """The columns to store of ``block`` (``(n_samples, n_channels)`` int16 counts or
    float values), in the order of ``channels``: int16 counts or float64 values.

    Raises:
        SchemaMismatch: a block that is no 2-D array of ``len(channels)`` columns.
        UnsupportedData: a dtype other than int16 and float; with ``store="counts"``,
            a float value outside its channel's range (or NaN): it has no count.
    """
    if not isinstance(block, np.ndarray):
        raise SchemaMismatch(f"a block must be a numpy array of shape (n_samples, "
                             f"{len(channels)}), got {type(block).__name__} "
                             f"{describe_value(block)}")  # fmt: skip
    if block.ndim != 2 or block.shape[1] != len(channels):
        raise SchemaMismatch(f"a block must have shape (n_samples, {len(channels)}) for the "
                             f"channels {[c.name for c in channels]}, got shape "
                             f"{block.shape}")  # fmt: skip
    counts = block.dtype == np.int16
    if not counts and block.dtype.kind != "f":
        raise UnsupportedData(f"a block must hold int16 counts or float values, got dtype "
                              f"{block.dtype}")  # fmt: skip
    columns: list[npt.NDArray[Any]] = []
    for i, channel in enumerate(channels):
        values = block[:, i]
        if store == "counts":
            columns.append(values if counts else _to_counts(values, channel, first))
        elif counts:
            columns.append(values * channel.scale_factor + channel.add_offset)
        else:
            columns.append(values.astype(np.float64, copy=False))
    return columns


def _to_counts(values: npt.NDArray[Any], channel: ChannelConfig,
               first: int) -> npt.NDArray[np.int16]:  # fmt: skip
    """Float values in the channel's range as the counts that stand for them (the
    nearest)."""
    values = values.astype(np.float64, copy=False)
    bad = ~((values >= channel.min_value) & (values <= channel.max_value))  # NaN too
    if bad.any():
        at = int(np.argmax(bad))
        raise UnsupportedData(
            f"channel {channel.name!r}: value {float(values[at])!r} at sample {first + at} is "
            f"outside its range [{channel.min_value}, {channel.max_value}] {channel.unit}: "
            f"it has no int16 count (store='volts' keeps any value)"
        )
    counts = np.rint((values - channel.add_offset) / channel.scale_factor)
    # max_value itself is count 32768: the ADC's top code, 32767, as a card saturates
    return np.clip(counts, COUNT_MIN, COUNT_MAX).astype(np.int16)
