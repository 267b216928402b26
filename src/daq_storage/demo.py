"""The main job in miniature: simulated instruments -> shared-memory ring -> a writer.

``daq-storage demo`` (and ``make demo``) runs this with the default configuration: an
acquisition process writes camera frames, power-meter readings and DAQ blocks into a
ring in ``/dev/shm``, paced at the instruments' own rates, and this process drains the
ring into the ``[storage] default_backend`` format (HDF5) in ``[storage] output_dir``
(``./data``), flushing the writer every ``[storage] flush_interval_ms`` (the
:class:`Router`, the seed of the Recorder).

Nothing is lost silently: the acquisition process reports what each instrument
produced, and the result compares it with what was stored, stream by stream.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from daq_storage.config import Overflow, StorageConfig, default_ring_dir
from daq_storage.errors import DaqStorageError, RingFull, StorageIOError
from daq_storage.naming import claim_path, sanitize_name
from daq_storage.ring import Record, RingBuffer, RingReader, max_ring_bytes
from daq_storage.sim import SimulatedCamera, SimulatedDaqCard, SimulatedPowerMeter
from daq_storage.writers import Writer, get_writer_class, writer_options

__all__ = ["DemoResult", "Router", "StreamSummary", "how_to_open", "run_demo"]

#: The demo's camera: 640x480 uint16 at 100 frames/s (61 MB/s).
CAMERA_FPS = 100.0
CAMERA_SHAPE = (480, 640)
#: A camera frame's ring record: the 32-byte record header and the 88-byte frame header
#: (docs/ring-format.md) before its pixels; the largest record the demo writes, which
#: ``[ring_buffer] frames`` counts.
CAMERA_RECORD_BYTES = 32 + 88 + CAMERA_SHAPE[0] * CAMERA_SHAPE[1] * 2
_SCALAR_TICK_S = 0.1  # the power meter and the DAQ card deliver 100 ms of data at a time
_FRAMES_PER_WRITE = 50
#: The demo's own ring waits this long for its recorder in ``overflow="block"`` mode,
#: unless ``[ring_buffer] block_timeout_secs`` is configured.
DEMO_BLOCK_TIMEOUT_S = 30.0
_MIN_RING_BYTES = 8 << 20


@dataclass(slots=True)
class StreamSummary:
    """What the demo produced and stored for one instrument.

    ``produced``, ``stored`` and ``dropped`` count frames for frame streams and rows for
    tables. ``dropped`` is what the ring refused (``overflow="block"`` timeouts); what the
    ring overwrote before the recorder read it shows only as ``produced - stored``.
    """

    stream: str
    kind: str  # "frames" or "table"
    produced: int = 0
    stored: int = 0
    dropped: int = 0
    raw_bytes: int = 0
    files: list[Path] = field(default_factory=list)
    skipped: str = ""  # why nothing was stored: the format cannot hold this kind of data

    @property
    def lost(self) -> int:
        """Frames or rows produced and not stored (0 for a stream the format skips)."""
        return 0 if self.skipped else max(self.produced - self.stored, 0)


@dataclass(frozen=True, slots=True)
class DemoResult:
    """Summary of a demo run."""

    streams: list[StreamSummary]
    seconds: float
    output_dir: Path
    backend: str
    path: Path
    file_bytes: int
    files: list[Path]
    ring_path: Path
    ring_capacity: int
    overflow: str
    ring_records: int
    lost_records: int  # ring records overwritten before the recorder read them
    dropped_records: int  # ring records refused by block-mode timeouts
    #: Flushes on the ``flush_interval_ms`` cadence while the run went on (the last one,
    #: at the end of the run, not counted).
    flushes: int = 0

    @property
    def complete(self) -> bool:
        """Every frame and row the format can hold was stored."""
        return not any(s.lost for s in self.streams) and not self.lost_records


# --------------------------------------------------------------------- acquisition
def _schedule(frames: int, seconds: float) -> Iterator[tuple[float, str]]:
    """``(due time in s, "frame" | "scalars")`` events in time order."""
    ticks = round(seconds / _SCALAR_TICK_S)
    frame = tick = 0
    while frame < frames or tick < ticks:
        frame_due = frame / CAMERA_FPS if frame < frames else float("inf")
        tick_due = tick * _SCALAR_TICK_S if tick < ticks else float("inf")
        if frame_due <= tick_due:
            yield frame_due, "frame"
            frame += 1
        else:
            yield tick_due, "scalars"
            tick += 1


def acquire(
    ring_path: str,
    frames: int,
    seconds: float,
    seed: int,
    paced: bool,
    block_timeout: float,
    report: Connection,
) -> None:
    """The acquisition process: simulated instruments writing into the ring.

    Sends ``("ready", None)`` once attached, then ``("done", counts)`` with, per stream,
    ``[kind, produced, dropped]``; or ``("error", message)``. A write the ring refuses
    (``RingFull`` after a block-mode timeout) is counted as dropped and the
    acquisition goes on, as a real instrument's would.
    """
    counts: dict[str, list[Any]] = {
        "camera_1": ["frames", 0, 0],
        "power_meter_01": ["table", 0, 0],
        "daq_card": ["table", 0, 0],
    }

    def put(name: str, units: int, write: Any, *args: Any, **kwargs: Any) -> None:
        counts[name][1] += units
        try:
            write(*args, **kwargs)
        except RingFull:
            counts[name][2] += units

    try:
        start_ns = time.time_ns()
        camera = SimulatedCamera(shape=CAMERA_SHAPE, seed=seed, start_ns=start_ns, fps=CAMERA_FPS)
        meter = SimulatedPowerMeter(("power_meter_01",), seed=seed, start_ns=start_ns)
        daq = SimulatedDaqCard(8, sample_rate=100_000, seed=seed, start_ns=start_ns)
        meter_rows = round(meter.rate_hz * _SCALAR_TICK_S)
        daq_samples = round(daq.sample_rate * _SCALAR_TICK_S)
        with RingBuffer.open(ring_path, block_timeout=block_timeout) as ring:
            report.send(("ready", None))
            started = time.monotonic()
            for due, event in _schedule(frames, seconds):
                if paced and (wait := started + due - time.monotonic()) > 0:
                    time.sleep(wait)  # the instruments' own rate, not synchronisation
                if event == "frame":
                    frame = camera.next_frame()
                    put("camera_1", 1, ring.write_frame, frame.array, stream="camera_1",
                        timestamp_ns=frame.timestamp_ns,
                        frame_number=frame.frame_number)  # fmt: skip
                    continue
                put("power_meter_01", meter_rows, ring.write_batch,
                    meter.read_batch(meter_rows), stream="power_meter_01")  # fmt: skip
                block = daq.read_block(daq_samples)
                put("daq_card", daq_samples, ring.write_batch, block.to_record_batch(),
                    stream="daq_card", timestamp_ns=block.timestamp_ns)  # fmt: skip
    except DaqStorageError as exc:
        report.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    report.send(("done", counts))


# --------------------------------------------------------------------- the run
@dataclass(frozen=True, slots=True)
class _RingPlan:
    path: Path
    shared: bool  # a configured path: may replace a stale ring there, never a live one
    capacity: int
    overflow: Overflow
    block_timeout: float


def _configured(config: StorageConfig, key: str) -> bool:
    return any(v.key == key and v.source != "default" for v in config.sources())


def _plan_ring(config: StorageConfig) -> _RingPlan:
    """The ring of this run: its own unless one is configured, sized to fit."""
    ring = config.ring_buffer
    if ring.path is not None:
        path, shared = ring.path, True
    else:
        name = sanitize_name(config.storage.experiment, what="experiment name")[:40]
        path = default_ring_dir() / f"daq_storage_{name}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        shared = False
    if ring.frames is not None:  # a configured size: used as given, or refused
        capacity = ring.capacity_for(CAMERA_RECORD_BYTES)
    elif _configured(config, "ring_buffer.size_mb"):
        capacity = ring.capacity_bytes
    else:
        # The default size shrinks to what the tmpfs and the RAM allow (a container's
        # /dev/shm is often 64 MiB); a configured size is used as given, or refused.
        room = max_ring_bytes(path) // (1 << 20) << 20
        if room < _MIN_RING_BYTES:
            raise StorageIOError(
                errno.ENOSPC,
                f"no room for the demo's ring: {room >> 20} MiB free for it in "
                f"{path.parent}, at least {_MIN_RING_BYTES >> 20} MiB needed",
                str(path.parent),
            )
        capacity = min(ring.capacity_bytes, room)
    # The demo's recorder is a registered consumer, so in block mode the simulated
    # instruments wait for it instead of losing data; a configured mode is honoured.
    overflow: Overflow = ring.overflow if _configured(config, "ring_buffer.overflow") else "block"
    timeout = (
        ring.block_timeout_secs
        if _configured(config, "ring_buffer.block_timeout_secs")
        else DEMO_BLOCK_TIMEOUT_S
    )
    return _RingPlan(path, shared, capacity, overflow, timeout)


def run_demo(
    config: StorageConfig | None = None,
    *,
    frames: int = 200,
    seconds: float = 2.0,
    seed: int = 0,
    backend: str | None = None,
    paced: bool = True,
    on_flush: Callable[[Writer], None] | None = None,
) -> DemoResult:
    """Record ``frames`` camera frames and ``seconds`` of power-meter and DAQ data.

    The acquisition runs in its own process and only writes to the ring (paced at the
    instruments' rates unless ``paced=False``); this process drains the ring into
    ``config.storage.output_dir`` in the ``backend`` format (default
    ``[storage] default_backend``), named by the naming scheme, with the ``[storage]``
    codec keys the format takes (:func:`~daq_storage.writers.writer_options`), and
    flushes the writer every ``[storage] flush_interval_ms``. The ring is this run's
    own (``/dev/shm/daq_storage_<experiment>_<pid>_<id>``) unless ``[ring_buffer] path``
    is set, and is removed at the end.

    Args:
        on_flush: called with the writer after each flush on that cadence, while the
            run goes on (from this thread: the writer may be read, not written).

    Raises:
        ConfigError: a configured key the format cannot honour; nothing is created.
        DaqStorageError: the run could not start or the acquisition failed.
    """
    config = config or StorageConfig.load()
    settings = config.storage
    backend = (backend or settings.default_backend).lower()
    writer_class = get_writer_class(backend)
    sources = {v.key: v.source for v in config.sources() if v.source != "default"}
    options = writer_options(writer_class, settings, sources=sources)
    plan = _plan_ring(config)
    started = time.perf_counter()
    # The ring first: a ring refused (busy, too big) leaves no empty output file behind.
    try:
        ring = RingBuffer.create(
            plan.path, capacity_bytes=plan.capacity, overflow=plan.overflow,
            block_timeout=plan.block_timeout, max_readers=config.ring_buffer.max_readers,
            exist_ok=plan.shared,
        )  # fmt: skip
    except StorageIOError as exc:
        if config.ring_buffer.frames is None:
            raise
        # Its advice names size_mb; the size asked for came from frames.
        raise StorageIOError(
            exc.errno, f"ring_buffer.frames = {config.ring_buffer.frames} asks for a ring of "
            f"{plan.capacity:,} bytes: {exc.strerror}", exc.filename,
        ) from exc  # fmt: skip
    capacity = ring.capacity  # as created: rounded up to whole pages
    try:
        if settings.output_path is not None:
            path = settings.output_path
        else:
            path = claim_path(settings.output_dir, settings.experiment, writer_class.path_suffix,
                              directory=writer_class.path_is_directory)  # fmt: skip
        # Registered before the writer detaches, so nobody can take the ring over between.
        with RingReader.open(plan.path, start="oldest", consumer="demo") as reader:
            ring.close()  # the acquisition process attaches as the writer
            with writer_class(path, **options) as writer:
                writer.set_metadata("experiment", settings.experiment)
                writer.set_metadata("source", "daq-storage demo (simulated instruments)")
                # Frames are written in groups that leave most of the ring free meanwhile.
                per_write = max(1, min(_FRAMES_PER_WRITE, capacity // CAMERA_RECORD_BYTES // 4))
                router = Router(reader, writer, flush_interval_s=settings.flush_interval_ms / 1000,
                                frames_per_write=per_write, on_flush=on_flush)  # fmt: skip
                counts = _record(router, plan, frames, seconds, seed, paced)
            stats = reader.stats()
            lost_records = reader.lost
    finally:
        ring.close()
        plan.path.unlink(missing_ok=True)
    summaries = router.summaries
    for stream, (kind, produced, dropped) in counts.items():
        summary = summaries.setdefault(stream, StreamSummary(stream, kind))
        summary.produced, summary.dropped = produced, dropped
    files = list(writer.stats.files) or [path]
    for summary in summaries.values():
        summary.files = _stream_files(writer_class, path, files, summary.stream)
    return DemoResult(
        list(summaries.values()), time.perf_counter() - started, settings.output_dir, backend,
        path, writer.stats.file_size, files, plan.path, capacity, plan.overflow,
        stats.written, lost_records, stats.dropped, router.flushes,
    )  # fmt: skip


class Router:
    """Drains a ring into one writer: the seed of the Recorder.

    The writer owns no timer (``flush()`` is its single visibility point); the router
    flushes it on its cadence: once ``flush_interval_s`` has passed since the first
    record it stored after the last flush, it writes the frames it holds back for
    grouping and flushes, so nothing read from the ring waits longer than that (plus one
    ring read) before a reader opening the file sees it. With ``0`` it flushes after
    every read that stored something.

    Used from one thread; ``on_flush(writer)`` runs in it after each cadence flush.
    """

    def __init__(
        self,
        reader: RingReader,
        writer: Writer,
        *,
        flush_interval_s: float,
        frames_per_write: int = _FRAMES_PER_WRITE,
        on_flush: Callable[[Writer], None] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.flush_interval_s = flush_interval_s
        self.frames_per_write = frames_per_write
        self.on_flush = on_flush
        #: What each stream produced into the writer so far.
        self.summaries: dict[str, StreamSummary] = {}
        #: Flushes made on the cadence.
        self.flushes = 0
        self._pending: dict[str, list[Record]] = {}
        self._unflushed_since: float | None = None  # monotonic time of the first store

    def poll(self, timeout: float) -> int:
        """Store what the ring holds, waiting up to ``timeout`` seconds for a first
        record (less when a flush falls due sooner), and flush if one is due; returns
        the records read."""
        wait = timeout
        if self._unflushed_since is not None:
            due = self._unflushed_since + self.flush_interval_s - time.monotonic()
            wait = max(0.0, min(timeout, due))
        records = self.reader.read_many(256, timeout=wait)
        for record in records:
            self._store(record)
        if (
            self._unflushed_since is not None
            and time.monotonic() - self._unflushed_since >= self.flush_interval_s
        ):
            self.flush()
        return len(records)

    def drain(self) -> int:
        """Store everything the ring still holds, without waiting; returns the records."""
        total = 0
        while records := self.reader.read_many(1 << 20):
            total += len(records)
            for record in records:
                self._store(record)
        return total

    def flush(self) -> None:
        """Write the frames held back for grouping, flush the writer, call ``on_flush``."""
        self._write_pending()
        self.writer.flush()
        self._unflushed_since = None
        self.flushes += 1
        if self.on_flush is not None:
            self.on_flush(self.writer)

    def finish(self) -> None:
        """Write the frames held back; the writer's close makes them visible."""
        self._write_pending()
        self._unflushed_since = None

    def _write_pending(self) -> None:
        for stream, pending in self._pending.items():
            self._write_frames(stream, pending)

    def _stored(self) -> None:
        if self._unflushed_since is None:
            self._unflushed_since = time.monotonic()

    def _store(self, record: Record) -> None:
        stream, writer = record.stream, self.writer
        if record.kind == "frame":
            summary = self.summaries.setdefault(stream, StreamSummary(stream, "frames"))
            if not writer.supports_frames:
                summary.skipped = f"{writer.name} cannot hold frames"
                return
            pending = self._pending.setdefault(stream, [])
            pending.append(record)
            self._stored()
            if len(pending) >= self.frames_per_write:
                self._write_frames(stream, pending)
            return
        summary = self.summaries.setdefault(stream, StreamSummary(stream, "table"))
        if not writer.supports_tables:
            summary.skipped = f"{writer.name} cannot hold tables"
            return
        batch = record.batch()
        writer.write_batch(stream, batch)
        self._stored()
        summary.stored += batch.num_rows
        summary.raw_bytes += batch.nbytes

    def _write_frames(self, stream: str, pending: list[Record]) -> None:
        if not pending:
            return
        frames = [r.array() for r in pending]  # the writer takes the sequence as it is
        self.writer.write_frames(
            stream, frames,
            timestamps_ns=np.array([r.timestamp_ns for r in pending], np.uint64),
            frame_numbers=np.array([r.frame_number for r in pending], np.uint64),
        )  # fmt: skip
        summary = self.summaries[stream]
        summary.stored += len(pending)
        summary.raw_bytes += sum(f.nbytes for f in frames)
        pending.clear()


def _record(
    router: Router, plan: _RingPlan, frames: int, seconds: float, seed: int, paced: bool
) -> dict[str, list[Any]]:
    """Run the acquisition process and drain the ring through ``router`` until it ends;
    returns what the acquisition reported it produced."""
    receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
    producer = multiprocessing.get_context("spawn").Process(
        target=acquire,
        args=(str(plan.path), frames, seconds, seed, paced, plan.block_timeout, send),
        name="acquisition",
    )  # fmt: skip
    producer.start()
    send.close()
    messages: list[tuple[str, Any]] = []
    try:
        while True:
            # Once the producer has exited, what it wrote before is drained, then done.
            if not router.poll(timeout=0.2) and not producer.is_alive() and not router.drain():
                break
            _receive(receive, messages)
        router.finish()
    finally:
        producer.join(30)
        if producer.is_alive():
            producer.kill()
            producer.join()
        _receive(receive, messages)
        receive.close()
    for kind, payload in messages:
        if kind == "error":
            raise DaqStorageError(f"the acquisition process failed: {payload}")
        if kind == "done":
            counts: dict[str, list[Any]] = payload
            return counts
    raise DaqStorageError(
        f"the acquisition process failed (exit code {producer.exitcode}) before reporting "
        "what it produced"
    )


def _receive(connection: Connection, messages: list[tuple[str, Any]]) -> None:
    """Collect what the acquisition process has sent (it may have exited meanwhile)."""
    try:
        while connection.poll():
            messages.append(connection.recv())
    except (EOFError, OSError):
        pass  # it exited; whatever it managed to send is in ``messages``


# --------------------------------------------------------------------- how to open
_OPEN_TABLE = {
    "hdf5": 'h5py.File("{path}")["{stream}"]',
    "zarr": 'xarray.open_zarr("{path}", group="{stream}")',
    "arrow": 'polars.read_ipc_stream("{file}")',
    "parquet": 'polars.read_parquet("{file}")',
    "csv": 'polars.read_csv("{file}")',
}
_OPEN_FRAMES = {
    "hdf5": 'h5py.File("{path}")["{stream}/frames"]',
    "zarr": 'xarray.open_zarr("{path}", group="{stream}")["frames"]',
    "arrow": 'pyarrow.ipc.open_stream("{file}").read_all()["frame"]'
    ".combine_chunks().to_numpy_ndarray()",
    "parquet": 'pyarrow.parquet.read_table("{file}")["frame"].combine_chunks().to_numpy_ndarray()',
    "tiff": 'tifffile.imread("{file}")',
}


def how_to_open(backend: str, path: Path, summary: StreamSummary) -> str:
    """One line of Python that opens ``summary``'s stream, or ``""`` when unknown."""
    table = _OPEN_FRAMES if summary.kind == "frames" else _OPEN_TABLE
    template = table.get(backend, "")
    file = summary.files[0] if summary.files else path
    return template.format(path=path, stream=summary.stream, file=file)


def _stream_files(
    writer_class: type[Writer], path: Path, files: list[Path], stream: str
) -> list[Path]:
    """The files holding ``stream``: the run's one file, or its own per-stream files."""
    if writer_class.path_suffix:
        return [path]
    own = re.compile(re.escape(sanitize_name(stream, what="stream name")) + r"(\.part\d+)?\.\w+$")
    return [f for f in files if own.match(f.name)]
