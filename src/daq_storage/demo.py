"""The main job in miniature: simulated instruments record a short run into ``output_dir``.

``daq-storage demo`` (and ``make demo``) runs this with the default configuration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from daq_storage.config import StorageConfig
from daq_storage.errors import StorageIOError
from daq_storage.naming import claim_path
from daq_storage.sim import SimulatedCamera, SimulatedDaqCard, SimulatedPowerMeter

__all__ = ["DemoResult", "StreamSummary", "run_demo"]


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """What the demo wrote for one instrument."""

    stream: str
    kind: str  # "frames" or "table"
    records: int  # frames, or rows
    raw_bytes: int
    file: Path
    file_bytes: int


@dataclass(frozen=True, slots=True)
class DemoResult:
    """Summary of a demo run."""

    streams: list[StreamSummary]
    seconds: float
    output_dir: Path


def _frames_batch(
    block_frames: np.ndarray, stamps: np.ndarray, numbers: np.ndarray
) -> pa.RecordBatch:
    _, height, width = block_frames.shape
    tensor_type = pa.fixed_shape_tensor(pa.uint16(), [height, width], dim_names=["y", "x"])
    storage = pa.FixedSizeListArray.from_arrays(pa.array(block_frames.reshape(-1)), height * width)
    tensors = pa.ExtensionArray.from_storage(tensor_type, storage)
    return pa.RecordBatch.from_arrays(
        [pa.array(stamps), pa.array(numbers), tensors],
        names=["timestamp_ns", "frame_number", "frame"],
    )


def _write_ipc(path: Path, batches: list[pa.RecordBatch], metadata: dict[str, str]) -> int:
    schema = batches[0].schema.with_metadata(metadata)
    try:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch.replace_schema_metadata(metadata))
    except OSError as exc:
        raise StorageIOError(exc.errno, f"cannot write demo file: {exc}", str(path)) from exc
    return sum(b.nbytes for b in batches)


def run_demo(
    config: StorageConfig | None = None,
    *,
    frames: int = 200,
    seconds: float = 2.0,
    seed: int = 0,
) -> DemoResult:
    """Record ``frames`` camera frames and ``seconds`` of power-meter and DAQ data.

    Files go to ``config.storage.output_dir`` and are named by the naming scheme.
    Formats written so far: Arrow IPC streams (``.arrows``), one per instrument.
    """
    config = config or StorageConfig.load()
    output_dir = config.storage.output_dir
    experiment = config.storage.experiment
    started = time.perf_counter()
    start_ns = time.time_ns()
    summaries: list[StreamSummary] = []

    camera = SimulatedCamera(seed=seed, start_ns=start_ns, fps=100.0)
    camera_batches = []
    for _ in range(0, frames, 50):
        block = camera.frames(min(50, frames - camera.frame_count))
        camera_batches.append(_frames_batch(block.frames, block.timestamps_ns, block.frame_numbers))
    meter = SimulatedPowerMeter(("power_meter_01",), seed=seed, start_ns=start_ns, rate_hz=10_000)
    meter_batches = [meter.read_batch(1_000) for _ in range(round(seconds * 10))]
    daq = SimulatedDaqCard(8, sample_rate=100_000, seed=seed, start_ns=start_ns)
    daq_batches = [daq.read_block(10_000).to_record_batch() for _ in range(round(seconds * 10))]

    for stream, kind, batches, count in (
        ("camera_1", "frames", camera_batches, frames),
        ("power_meter_01", "table", meter_batches, sum(b.num_rows for b in meter_batches)),
        ("daq_card", "table", daq_batches, sum(b.num_rows for b in daq_batches)),
    ):
        if not batches:
            continue
        path = claim_path(output_dir, f"{experiment}_{stream}", "arrows")
        metadata = {"instrument_id": stream, "experiment": experiment, "application": "daq-storage"}
        raw = _write_ipc(path, batches, metadata)
        summaries.append(StreamSummary(stream, kind, count, raw, path, path.stat().st_size))
    return DemoResult(summaries, time.perf_counter() - started, output_dir)
