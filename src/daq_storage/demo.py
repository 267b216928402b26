"""The main job in miniature: simulated instruments -> shared-memory ring -> a writer.

``daq-storage demo`` (and ``make demo``) runs this with the default configuration: an
acquisition process writes camera frames, power-meter readings and DAQ blocks into the
ring at ``[ring_buffer] path`` (``/dev/shm``), and this process drains the ring into the
``[storage] default_backend`` format (HDF5) in ``[storage] output_dir`` (``./data``).
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daq_storage.config import StorageConfig
from daq_storage.errors import DaqStorageError
from daq_storage.naming import claim_path
from daq_storage.ring import Record, RingBuffer, RingReader
from daq_storage.sim import SimulatedCamera, SimulatedDaqCard, SimulatedPowerMeter
from daq_storage.writers import Writer, get_writer_class

__all__ = ["DemoResult", "StreamSummary", "run_demo"]

_FRAMES_PER_BATCH = 50


@dataclass(slots=True)
class StreamSummary:
    """What the demo wrote for one instrument."""

    stream: str
    kind: str  # "frames" or "table"
    records: int = 0  # frames, or rows
    raw_bytes: int = 0
    skipped: str = ""  # why nothing was stored, when the format cannot hold the data


@dataclass(frozen=True, slots=True)
class DemoResult:
    """Summary of a demo run."""

    streams: list[StreamSummary]
    seconds: float
    output_dir: Path
    backend: str
    path: Path
    file_bytes: int
    ring_path: Path
    ring_records: int
    lost: int
    dropped: int


def acquire(ring_path: str, frames: int, seconds: float, seed: int) -> None:
    """The acquisition process: simulated instruments writing into the ring."""
    start_ns = time.time_ns()
    camera = SimulatedCamera(seed=seed, start_ns=start_ns, fps=100.0)
    meter = SimulatedPowerMeter(("power_meter_01",), seed=seed, start_ns=start_ns)
    daq = SimulatedDaqCard(8, sample_rate=100_000, seed=seed, start_ns=start_ns)
    ticks = max(frames, round(seconds * 10))
    with RingBuffer.open(ring_path) as ring:
        for tick in range(ticks):
            if tick < frames:
                frame = camera.next_frame()
                ring.write_frame(frame.array, stream="camera_1", timestamp_ns=frame.timestamp_ns,
                                 frame_number=frame.frame_number)  # fmt: skip
            if tick < round(seconds * 10):  # 100 ms of scalar data per tick
                ring.write_batch(meter.read_batch(1_000), stream="power_meter_01")
                block = daq.read_block(10_000)
                ring.write_batch(block.to_record_batch(), stream="daq_card",
                                 timestamp_ns=block.timestamp_ns)  # fmt: skip


def run_demo(
    config: StorageConfig | None = None,
    *,
    frames: int = 200,
    seconds: float = 2.0,
    seed: int = 0,
) -> DemoResult:
    """Record ``frames`` camera frames and ``seconds`` of power-meter and DAQ data.

    The acquisition runs in its own process and only writes to the ring; this process
    drains the ring into ``config.storage.output_dir``, named by the naming scheme. The
    ring file is removed at the end. Formats written so far: Arrow IPC streams
    (``.arrows``), one per instrument.
    """
    config = config or StorageConfig.load()
    settings = config.storage
    backend = settings.default_backend
    writer_class = get_writer_class(backend)
    started = time.perf_counter()
    if settings.output_path is not None:
        path = settings.output_path
    else:
        suffix = writer_class.suffixes[0].lstrip(".")
        path = claim_path(settings.output_dir, settings.experiment, suffix,
                          directory=writer_class.path_is_directory)  # fmt: skip
    ring = RingBuffer.from_config(config.ring_buffer, exist_ok=True)
    ring_path = ring.path
    ring.close()  # the acquisition process attaches as the writer
    summaries: dict[str, StreamSummary] = {}
    frames_pending: dict[str, list[Record]] = {}
    try:
        with (
            writer_class(path, **writer_class.options_from_config(settings)) as writer,
            RingReader.open(ring_path, start="oldest", consumer="demo") as reader,
        ):
            writer.set_metadata("experiment", settings.experiment)
            writer.set_metadata("source", "daq-storage demo (simulated instruments)")
            producer = multiprocessing.get_context("spawn").Process(
                target=acquire, args=(str(ring_path), frames, seconds, seed), name="acquisition"
            )
            producer.start()
            try:
                while True:
                    records = reader.read_many(256, timeout=0.2)
                    if not records and not producer.is_alive():
                        records = reader.read_many(1 << 20)  # what arrived before it exited
                        if not records:
                            break
                    for record in records:
                        _store(writer, record, summaries, frames_pending)
                for stream, pending in frames_pending.items():
                    _write_frames(writer, stream, pending, summaries[stream])
            finally:
                producer.join(30)
                if producer.is_alive():
                    producer.kill()
                    producer.join()
            if producer.exitcode != 0:
                raise DaqStorageError(
                    f"the acquisition process failed (exit code {producer.exitcode})"
                )
            stats = reader.stats()
        return DemoResult(
            list(summaries.values()), time.perf_counter() - started, settings.output_dir,
            backend, path, writer.stats.file_size, ring_path, stats.written, reader.lost,
            stats.dropped,
        )  # fmt: skip
    finally:
        ring_path.unlink(missing_ok=True)


def _store(writer: Writer, record: Record, summaries: dict[str, StreamSummary],
           frames_pending: dict[str, list[Record]]) -> None:  # fmt: skip
    stream = record.stream
    if record.kind == "frame":
        summary = summaries.setdefault(stream, StreamSummary(stream, "frames"))
        if not writer.supports_frames:
            summary.skipped = f"{writer.name} cannot hold frames"
            return
        pending = frames_pending.setdefault(stream, [])
        pending.append(record)
        if len(pending) >= _FRAMES_PER_BATCH:
            _write_frames(writer, stream, pending, summary)
        return
    summary = summaries.setdefault(stream, StreamSummary(stream, "table"))
    if not writer.supports_tables:
        summary.skipped = f"{writer.name} cannot hold tables"
        return
    batch = record.batch()
    writer.write_batch(stream, batch)
    summary.records += batch.num_rows
    summary.raw_bytes += batch.nbytes


def _write_frames(writer: Writer, stream: str, pending: list[Record],
                  summary: StreamSummary) -> None:  # fmt: skip
    if not pending:
        return
    stack = np.stack([r.array() for r in pending])
    writer.write_frames(
        stream, stack,
        timestamps_ns=np.array([r.timestamp_ns for r in pending], np.uint64),
        frame_numbers=np.array([r.frame_number for r in pending], np.uint64),
    )  # fmt: skip
    summary.records += len(pending)
    summary.raw_bytes += stack.nbytes
    pending.clear()
