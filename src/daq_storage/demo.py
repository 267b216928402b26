"""The main job in miniature: simulated instruments -> shared-memory ring -> files.

``daq-storage demo`` (and ``make demo``) runs this with the default configuration: an
acquisition process writes camera frames, power-meter readings and DAQ blocks into the
ring at ``[ring_buffer] path`` (``/dev/shm``), and this process drains the ring into one
file per stream in ``[storage] output_dir`` (``./data``).
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.config import StorageConfig
from daq_storage.errors import DaqStorageError, StorageIOError
from daq_storage.naming import claim_path
from daq_storage.ring import Record, RingBuffer, RingReader
from daq_storage.sim import SimulatedCamera, SimulatedDaqCard, SimulatedPowerMeter

__all__ = ["DemoResult", "StreamSummary", "run_demo"]

_FRAMES_PER_BATCH = 50


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


class _StreamFile:
    """One Arrow IPC stream file per ring stream, opened on its first record."""

    def __init__(self, path: Path, stream: str, kind: str, experiment: str) -> None:
        self.path = path
        self.stream = stream
        self.kind = kind
        self.metadata = {"instrument_id": stream, "experiment": experiment,
                         "application": "daq-storage"}  # fmt: skip
        self.records = 0
        self.raw_bytes = 0
        self._sink: pa.OSFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._frames: list[npt.NDArray[np.generic]] = []
        self._stamps: list[int] = []
        self._numbers: list[int] = []

    def add(self, record: Record) -> None:
        if record.kind == "frame":
            self._frames.append(record.array(copy=True))
            self._stamps.append(record.timestamp_ns)
            self._numbers.append(record.frame_number)
            if len(self._frames) >= _FRAMES_PER_BATCH:
                self._flush_frames()
        else:
            batch = record.batch()
            self.records += batch.num_rows
            self.raw_bytes += batch.nbytes
            self._write(batch.replace_schema_metadata(self.metadata))

    def _flush_frames(self) -> None:
        if not self._frames:
            return
        stack = np.stack(self._frames)
        tensor_type = pa.fixed_shape_tensor(pa.from_numpy_dtype(stack.dtype), list(stack.shape[1:]))
        storage = pa.FixedSizeListArray.from_arrays(
            pa.array(stack.reshape(-1)), int(np.prod(stack.shape[1:]))
        )
        columns = [
            pa.array(np.array(self._stamps, np.uint64)),
            pa.array(np.array(self._numbers, np.uint64)),
            pa.ExtensionArray.from_storage(tensor_type, storage),
        ]
        batch = pa.RecordBatch.from_arrays(
            columns, names=["timestamp_ns", "frame_number", "frame"]
        ).replace_schema_metadata(self.metadata)
        self.records += len(self._frames)
        self.raw_bytes += stack.nbytes
        self._frames, self._stamps, self._numbers = [], [], []
        self._write(batch)

    def _write(self, batch: pa.RecordBatch) -> None:
        try:
            if self._writer is None:
                self._sink = pa.OSFile(str(self.path), "wb")
                self._writer = pa.ipc.new_stream(self._sink, batch.schema)
            self._writer.write_batch(batch)
        except OSError as exc:
            raise StorageIOError(
                exc.errno, f"cannot write demo file: {exc}", str(self.path)
            ) from exc

    def close(self) -> StreamSummary:
        self._flush_frames()
        if self._writer is not None:
            self._writer.close()
        if self._sink is not None:
            self._sink.close()
        kind = "frames" if self.kind == "frame" else "table"
        return StreamSummary(self.stream, kind, self.records, self.raw_bytes, self.path,
                             self.path.stat().st_size)  # fmt: skip

    def __enter__(self) -> _StreamFile:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


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
    output_dir = config.storage.output_dir
    experiment = config.storage.experiment
    started = time.perf_counter()
    ring = RingBuffer.from_config(config.ring_buffer, exist_ok=True)
    ring_path = ring.path
    ring.close()  # the acquisition process attaches as the writer
    files: dict[str, _StreamFile] = {}
    try:
        with RingReader.open(ring_path, start="oldest", consumer="demo") as reader:
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
                        stream_file = files.get(record.stream)
                        if stream_file is None:
                            path = claim_path(output_dir, f"{experiment}_{record.stream}", "arrows")
                            stream_file = files[record.stream] = _StreamFile(
                                path, record.stream, record.kind, experiment
                            )
                        stream_file.add(record)
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
            summaries = [f.close() for f in files.values()]
            files.clear()
            return DemoResult(summaries, time.perf_counter() - started, output_dir, ring_path,
                              stats.written, reader.lost, stats.dropped)  # fmt: skip
    finally:
        for stream_file in files.values():
            stream_file.close()
        ring_path.unlink(missing_ok=True)
