"""What the read tests write: the same tables and frames through each real writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from daq_storage.read import FORMATS
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter
from daq_storage.writers import Writer, open_writer

__all__ = ["FORMATS", "START_NS", "TARGETS", "frames_block", "power_batches", "rich_batch",
           "write_run"]  # fmt: skip

START_NS = 1_700_000_000_000_000_000
#: Each format's output name inside a test's directory.
TARGETS = {"hdf5": "run.h5", "arrow": "run_arrow", "parquet": "run_parquet",
           "csv": "run_csv", "zarr": "run.zarr", "tiff": "run_tiff"}  # fmt: skip
TABLES = [f for f in FORMATS if f != "tiff"]
FRAMES = [f for f in FORMATS if f != "csv"]


def power_batches(
    count: int = 3, rows: int = 400, start_ns: int = START_NS
) -> list[pa.RecordBatch]:
    """The seeds' power-meter batches (timestamp_ns, channel, value, unit)."""
    meter = SimulatedPowerMeter(["pm_a", "pm_b"], seed=1, start_ns=start_ns)
    return [meter.read_batch(rows) for _ in range(count)]


def rich_batch(offset: int = 0) -> pa.RecordBatch:
    """Nulls, text (empty included), booleans, integers, times: what every table format
    holds (CSV too)."""
    n = 6
    return pa.record_batch({
        "timestamp_ns": pa.array(START_NS + np.arange(offset, offset + n) * 1000,
                                 pa.timestamp("ns", "UTC")),
        "label": pa.array(["a", "", None, "d", "é", "f"]),
        "count": pa.array([1, 2, None, 4, 5, 6], pa.int32()),
        "level": pa.array([0.5, None, 2.5, 3.5, 4.5, 5.5]),
        "ok": pa.array([True, False, None, True, True, False]),
    })  # fmt: skip


def frames_block(count: int = 12, shape: tuple[int, int] = (16, 20)) -> Any:
    return SimulatedCamera(shape, seed=3, start_ns=START_NS).frames(count)


def write_run(name: str, path: Path, *, tables: bool = True, frames: bool = True,
              **options: Any) -> Writer:  # fmt: skip
    """A run of ``name`` at ``path``: stream ``power`` (power-meter batches), ``rich``,
    and ``camera`` (frames), what the format takes; closed, returned for describe()."""
    with open_writer(name, path, **options) as writer:
        writer.set_metadata("experiment", "readback")
        if tables and writer.supports_tables:
            for batch in power_batches():
                writer.write_batch("power", batch)
            writer.set_metadata("wavelength_nm", 633.0, stream="power")
            writer.write_batch("rich", rich_batch())
            writer.write_batch("rich", rich_batch(6))
        if frames and writer.supports_frames:
            block = frames_block()
            writer.write_frames("camera", block.frames[:5], timestamps_ns=block.timestamps_ns[:5],
                                frame_numbers=block.frame_numbers[:5])  # fmt: skip
            writer.write_frames("camera", block.frames[5:], timestamps_ns=block.timestamps_ns[5:],
                                frame_numbers=block.frame_numbers[5:])  # fmt: skip
    return writer
