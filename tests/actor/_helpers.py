"""What the actor tests share: the power meter's batches as Arrow IPC bytes, a
configuration pointing at a test directory, and running a coroutine."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from daq_storage.config import StorageConfig
from daq_storage.sim import SimulatedPowerMeter

T = TypeVar("T")
STREAM = "power_meter_01"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` in a fresh event loop (no pytest plugin needed)."""
    return asyncio.run(coroutine)


def config(output_dir: Path, **storage: object) -> StorageConfig:
    """``[storage]`` as the environment would give it: ``output_dir`` and ``storage``'s
    keys as ``DAQ_STORAGE_*`` variables (nothing from the caller's environment)."""
    environ = {"DAQ_STORAGE_OUTPUT_DIR": str(output_dir)}
    environ |= {f"DAQ_STORAGE_{key.upper()}": str(value) for key, value in storage.items()}
    return StorageConfig.load(environ=environ)


def ipc_stream(batch: pa.RecordBatch | pa.Table) -> bytes:
    """``batch`` in the Arrow IPC stream format (what seed 003 sends)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write(batch)
    return bytes(sink.getvalue().to_pybytes())


def ipc_file(batch: pa.RecordBatch | pa.Table) -> bytes:
    """``batch`` in the Arrow IPC file format."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write(batch)
    return bytes(sink.getvalue().to_pybytes())


def meter_batches(count: int, rows: int = 1000, seed: int = 0) -> list[pa.RecordBatch]:
    """``count`` batches of ``rows`` rows of the seeds' power-meter schema."""
    meter = SimulatedPowerMeter(seed=seed, start_ns=0)
    return [meter.read_batch(rows) for _ in range(count)]
