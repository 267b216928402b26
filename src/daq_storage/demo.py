"""The main job in miniature, composed of the real parts: ``daq-storage demo``, ``make demo``.

Three processes, as in a lab:

- this one creates the run's ring (its own in ``/dev/shm`` unless ``[ring_buffer] path`` is
  set), watches it for the progress display, and removes it at the end;
- the :class:`~daq_storage.recorder.Recorder` (what the daemon runs), in a process of its
  own, drains the ring into every format (``hdf5`` and ``arrow`` unless told otherwise),
  flushing on ``[storage] flush_interval_ms``;
- the simulated instruments (:class:`~daq_storage.acquisition.InstrumentProcess`: camera,
  power meter, DAQ card), in a process of their own, write into the ring at their rates.

Nothing is lost silently: the instruments report what each produced, the Recorder what it
read and stored in each format, and the result compares them stream by stream.
"""

from __future__ import annotations

import errno
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from daq_storage.acquisition import AcquisitionResult, AcquisitionTimeout, InstrumentProcess
from daq_storage.config import Overflow, StorageConfig, default_ring_dir
from daq_storage.errors import ConfigError, StorageIOError
from daq_storage.naming import sanitize_name
from daq_storage.recorder import FormatStats, LossGap, Recorder, RecorderStats, StreamStats
from daq_storage.ring import RingBuffer, RingReader, max_ring_bytes
from daq_storage.writers import get_writer_class

__all__ = [
    "DEMO_FORMATS",
    "DemoProgress",
    "DemoResult",
    "FormatSummary",
    "StreamSummary",
    "how_to_open",
    "run_demo",
]

#: The demo's camera: 640x480 uint16 at 100 frames/s (61 MB/s).
CAMERA_FPS = 100.0
CAMERA_SHAPE = (480, 640)
#: A camera frame's ring record: the 32-byte record header and the 88-byte frame header
#: (docs/ring-format.md) before its pixels; the largest record the demo writes, which
#: ``[ring_buffer] frames`` counts.
CAMERA_RECORD_BYTES = 32 + 88 + CAMERA_SHAPE[0] * CAMERA_SHAPE[1] * 2
#: "HDF5 and one more format": what the demo records unless formats are given or configured.
DEMO_FORMATS = ("hdf5", "arrow")
#: The demo's own ring waits this long for its Recorder in ``overflow="block"`` mode,
#: unless ``[ring_buffer] block_timeout_secs`` is configured.
DEMO_BLOCK_TIMEOUT_S = 30.0
#: How often the Recorder's stats are read for the progress display.
PROGRESS_INTERVAL_S = 0.25
_MIN_RING_BYTES = 8 << 20


# --------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class StreamSummary:
    """What the demo produced and stored for one instrument.

    Counts are frames for a frame stream and rows for a table. ``dropped`` is what the
    ring refused (``overflow="block"`` timeouts); ``taken`` what the Recorder read from
    the ring; ``stored`` what each format it was routed to stored (``None``: that format
    stored fewer than it was given, and the shortfall cannot be told apart between its
    streams of this kind: see :attr:`FormatSummary.missing`).
    """

    stream: str
    kind: str  # "frames" or "table"
    produced: int
    dropped: int
    taken: int
    raw_bytes: int
    stored: Mapping[str, int | None]
    files: Mapping[str, tuple[Path, ...]]
    refused: int = 0
    unroutable: int = 0

    @property
    def formats(self) -> tuple[str, ...]:
        """The formats this stream was recorded in."""
        return tuple(self.stored)

    def lost_in(self, fmt: str) -> int | None:
        """Frames or rows produced and not stored in ``fmt`` (``None``: not known)."""
        stored = self.stored.get(fmt, 0)
        return None if stored is None else max(self.produced - stored, 0)

    @property
    def lost(self) -> int:
        """Frames or rows produced and missing from at least one format (all of them
        when no format holds the stream)."""
        if not self.stored:
            return self.produced
        # A format's shortfall it cannot attribute is its own (FormatSummary.missing).
        least = min(self.taken if n is None else n for n in self.stored.values())
        return max(self.produced - least, 0)


@dataclass(frozen=True, slots=True)
class FormatSummary:
    """One format of the run: its files and what it stored."""

    format: str
    state: str  # the Recorder's: "closed" when complete, "failed", ...
    error: str
    path: Path | None  # the run's output: a file (HDF5, Zarr) or a run directory
    files: tuple[Path, ...]
    bytes_on_disk: int
    frames: int
    rows: int
    flushes: int
    rotations: int
    lost_after_failure: int
    missing: int  # frames and rows given to this format and not stored


@dataclass(frozen=True, slots=True)
class DemoProgress:
    """One update of the live display, about 4 times a second while the instruments run
    (and once when they have finished). Frames, rows, bytes and their rates are the
    Recorder's (its stats, republished about twice a second: the rates are between its
    last two snapshots); ring fill and lag are the ring's own view, live."""

    elapsed_s: float
    frames: int  # frames the Recorder took from the ring so far
    rows: int
    bytes_in: int
    frames_per_s: float
    mb_per_s: float
    ring_fill: float  # the Recorder's unread bytes / the ring's capacity, 0..1
    lag_records: int
    lag_seconds: float
    lost: int
    dropped: int  # ring-wide, refused by block-mode timeouts
    done: bool  # the instruments have finished; the Recorder drains what is left
    recorder: RecorderStats
    acquisition: AcquisitionResult  # what the instruments produced so far


@dataclass(frozen=True, slots=True)
class DemoResult:
    """Summary of a demo run."""

    streams: tuple[StreamSummary, ...]
    formats: tuple[FormatSummary, ...]
    seconds: float
    output_dir: Path
    ring_path: Path
    ring_capacity: int
    overflow: str
    ring_records: int  # records the instruments wrote through the ring
    lost_records: int  # ring records overwritten before the Recorder read them
    dropped_records: int  # ring records refused by block-mode timeouts
    flushes: int  # the Recorder's flushes (its cadence, and the last at stop)
    gaps: tuple[LossGap, ...]
    errors: tuple[str, ...]
    recorder: RecorderStats
    acquisition: AcquisitionResult

    @property
    def complete(self) -> bool:
        """Every frame and row produced was stored in every format it was routed to."""
        return (
            self.recorder.complete
            and not any(s.lost for s in self.streams)
            and not any(f.missing for f in self.formats)
        )

    @property
    def file_bytes(self) -> int:
        """Bytes on disk, every format."""
        return sum(f.bytes_on_disk for f in self.formats)

    @property
    def files(self) -> list[Path]:
        """Every file or directory the run made, every format."""
        return [p for f in self.formats for p in f.files]

    def format(self, name: str) -> FormatSummary:
        """The summary of format ``name`` (``KeyError`` if it was not recorded)."""
        for summary in self.formats:
            if summary.format == name:
                return summary
        raise KeyError(name)

    def path(self, fmt: str) -> Path:
        """The output of ``fmt``: the HDF5 file, the Zarr store, or the run directory of a
        format with one file per stream."""
        path = self.format(fmt).path
        if path is None:
            raise KeyError(f"{fmt} made no file")
        return path

    def stream(self, name: str) -> StreamSummary:
        """The summary of stream ``name`` (``KeyError`` if no instrument produced it)."""
        for summary in self.streams:
            if summary.stream == name:
                return summary
        raise KeyError(name)


# --------------------------------------------------------------------- the ring
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
    # The Recorder is a registered consumer, so in block mode the simulated instruments
    # wait for it instead of losing data; a configured mode is honoured.
    overflow: Overflow = ring.overflow if _configured(config, "ring_buffer.overflow") else "block"
    timeout = (
        ring.block_timeout_secs
        if _configured(config, "ring_buffer.block_timeout_secs")
        else DEMO_BLOCK_TIMEOUT_S
    )
    return _RingPlan(path, shared, capacity, overflow, timeout)


def _create_ring(config: StorageConfig, plan: _RingPlan) -> RingBuffer:
    try:
        return RingBuffer.create(
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


# --------------------------------------------------------------------- formats
def _choose_formats(config: StorageConfig, formats: Sequence[str] | None) -> tuple[str, ...]:
    """The formats given, else ``[storage] formats``, else a configured
    ``[storage] default_backend`` alone, else :data:`DEMO_FORMATS`."""
    if formats is None:
        if _configured(config, "storage.formats"):
            return tuple(config.storage.recorded_formats)
        if _configured(config, "storage.default_backend"):
            return (config.storage.default_backend,)
        return DEMO_FORMATS
    if isinstance(formats, str) or not formats:
        raise ConfigError(f"formats must be a non-empty list of format names, got {formats!r}")
    chosen: list[str] = []
    for name in formats:
        writer_class = get_writer_class(name)  # ConfigError naming the ones there are
        if writer_class.name in chosen:
            raise ConfigError(f"format {name!r} given twice")
        chosen.append(writer_class.name)
    return tuple(chosen)


def _with_formats(config: StorageConfig, formats: tuple[str, ...]) -> StorageConfig:
    storage = config.storage.model_copy(update={"formats": list(formats)})
    return config.model_copy(update={"storage": storage})


# --------------------------------------------------------------------- the run
def run_demo(
    config: StorageConfig | None = None,
    *,
    frames: int = 200,
    seconds: float = 2.0,
    seed: int = 0,
    formats: Sequence[str] | None = None,
    paced: bool = True,
    on_progress: Callable[[DemoProgress], None] | None = None,
) -> DemoResult:
    """Record ``frames`` camera frames and ``seconds`` of power-meter and DAQ data.

    The ring is this run's own (``/dev/shm/daq_storage_<experiment>_<pid>_<id>``, removed
    at the end) unless ``[ring_buffer] path`` is set; in ``overflow="block"`` mode unless
    another is configured, so the instruments wait for the Recorder rather than lose data.
    The Recorder (:meth:`Recorder.from_config`, in its own process) writes every stream to
    ``formats``: those given, else ``[storage] formats``, else a configured
    ``[storage] default_backend`` alone, else HDF5 and Arrow IPC. The instruments run in
    another process, paced at their real rates unless ``paced=False``.

    Args:
        on_progress: called about 4 times a second while the instruments run, and once
            when they have finished, from this thread.

    Raises:
        ConfigError: a format unknown, a configured key a format cannot honour; nothing
            is created.
        DaqStorageError: the run could not start, or the instruments or the Recorder failed.
    """
    config = config or StorageConfig.load()
    if config.storage.output_path is not None:
        # One path cannot name the files of several formats, nor their rotations.
        raise ConfigError(
            f"storage.output_path = {str(config.storage.output_path)!r}: the demo records "
            "through the Recorder, which names its files in storage.output_dir; set that "
            "instead"
        )
    config = _with_formats(config, _choose_formats(config, formats))
    plan = _plan_ring(config)
    # The Recorder validates everything before the ring exists: a refused key leaves
    # nothing behind.
    recorder = Recorder.from_config(config, ring=plan.path, mode="process")
    started = time.perf_counter()
    ring = _create_ring(config, plan)
    capacity = ring.capacity  # as created: rounded up to whole pages
    try:
        _make_output_dir(config.storage.local_output_dir)
        # Registered before this process lets go of the ring, so nobody takes it over.
        recorder.start()
        try:
            with RingReader.open(plan.path, start="latest") as watch:  # anonymous: never waited on
                ring.close()  # the instruments attach as the ring's writer
                acquired = _acquire(recorder, watch, plan, frames, seconds, seed, paced,
                                    on_progress)  # fmt: skip
                ring_stats = watch.stats()
        finally:
            final = recorder.stop()
    finally:
        ring.close()
        plan.path.unlink(missing_ok=True)
        recorder.stats_path.unlink(missing_ok=True)  # it lives beside the ring, in RAM
    return DemoResult(
        streams=_streams(acquired, final),
        formats=tuple(_format_summary(f, final) for f in final.formats.values()),
        seconds=time.perf_counter() - started,
        output_dir=config.storage.local_output_dir,
        ring_path=plan.path,
        ring_capacity=capacity,
        overflow=plan.overflow,
        ring_records=ring_stats.written,
        lost_records=final.lost,
        dropped_records=ring_stats.dropped,
        flushes=final.flushes,
        gaps=tuple(final.gaps),
        errors=tuple(final.errors),
        recorder=final,
        acquisition=acquired,
    )


def _make_output_dir(folder: Path) -> None:
    """Made now: the Recorder opens its files when the first records arrive, and a folder
    it cannot make would fail every format then, after the instruments have started."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageIOError(
            exc.errno, f"cannot create output directory: {exc.strerror}", str(folder)
        ) from exc


def _acquire(
    recorder: Recorder,
    watch: RingReader,
    plan: _RingPlan,
    frames: int,
    seconds: float,
    seed: int,
    paced: bool,
    on_progress: Callable[[DemoProgress], None] | None,
) -> AcquisitionResult:
    """Run the instruments' process to its end, reporting progress meanwhile."""
    instruments = InstrumentProcess(
        plan.path, frames=frames, duration=seconds, paced=paced, seed=seed,
        camera_fps=CAMERA_FPS, camera_shape=CAMERA_SHAPE, block_timeout=plan.block_timeout,
    )  # fmt: skip
    instruments.start()
    progress = _Progress(recorder, watch, instruments, on_progress)  # from the first write on
    try:
        while True:
            progress.update(done=False)
            try:  # the display's refresh cadence: wakes at once when the run ends
                result = instruments.wait(timeout=PROGRESS_INTERVAL_S)
            except AcquisitionTimeout:
                continue
            break
    except KeyboardInterrupt:
        # Ctrl-C ends the run early, not the demo: the instruments stop between two
        # writes and report; what they wrote is recorded and summarised.
        result = instruments.stop()
    except BaseException:
        if instruments.running:
            instruments.stop()
        raise
    progress.update(done=True)
    return result


class _Progress:
    """Turns the Recorder's live stats into :class:`DemoProgress` updates."""

    def __init__(
        self,
        recorder: Recorder,
        watch: RingReader,
        instruments: InstrumentProcess,
        on_progress: Callable[[DemoProgress], None] | None,
    ) -> None:
        self.recorder, self.watch, self.on_progress = recorder, watch, on_progress
        self.instruments = instruments
        self.started = time.monotonic()
        self.last = recorder.stats
        self.rates = (0.0, 0.0)  # frames/s, MB/s between the last two Recorder snapshots

    def update(self, *, done: bool) -> None:
        if self.on_progress is None:
            return
        stats = self.recorder.stats
        ring = self.watch.stats()
        # The ring's own view of the Recorder's slot is live.
        slot = next(
            (r for r in ring.readers if r.name == stats.consumer and r.state == "active"), None
        )
        unread = slot.lag_bytes if slot is not None else 0
        lag = stats.lag_records
        if slot is not None:
            lag = max(ring.written - slot.delivered - slot.lost, 0)
        if stats.updated_ns > self.last.updated_ns:
            span = (stats.updated_ns - self.last.updated_ns) / 1e9
            self.rates = ((stats.frames - self.last.frames) / span,
                          (stats.bytes_in - self.last.bytes_in) / span / 1e6)  # fmt: skip
            self.last = stats
        self.on_progress(
            DemoProgress(
                elapsed_s=time.monotonic() - self.started,
                frames=stats.frames,
                rows=stats.rows,
                bytes_in=stats.bytes_in,
                frames_per_s=self.rates[0],
                mb_per_s=self.rates[1],
                ring_fill=min(unread / ring.capacity, 1.0) if ring.capacity else 0.0,
                lag_records=lag,
                lag_seconds=stats.lag_seconds,
                lost=stats.lost,
                dropped=ring.dropped,
                done=done,
                recorder=stats,
                acquisition=self.instruments.progress(),
            )
        )


# --------------------------------------------------------------------- accounting
def _streams(acquired: AcquisitionResult, final: RecorderStats) -> tuple[StreamSummary, ...]:
    """Per stream: what the instruments produced against what each format stored."""
    stored = _stored_per_stream(final)
    summaries = []
    for name, count in acquired.streams.items():
        taken = final.streams.get(name)
        if taken is None:  # nothing of it reached the Recorder
            summaries.append(StreamSummary(name, count.kind, count.produced, count.dropped,
                                           0, 0, {}, {}))  # fmt: skip
            continue
        units = taken.frames if count.kind == "frames" else taken.rows
        files = {
            fmt: _stream_files(fmt, final.formats[fmt], name)
            for fmt in taken.formats
            if fmt in final.formats
        }
        summary = StreamSummary(name, count.kind, count.produced, count.dropped, units,
                                taken.bytes_in, stored.get(name, {}), files, taken.refused,
                                taken.unroutable)  # fmt: skip
        summaries.append(summary)
    return tuple(summaries)


def _stored_per_stream(final: RecorderStats) -> dict[str, dict[str, int | None]]:
    """What each format stored of each stream routed to it.

    The Recorder counts frames and rows per stream (taken from the ring) and per format
    (stored): a format that stored all it was given stored each stream's whole count;
    one that stored less, the rest of its only stream of that kind (``None`` when it has
    several: the shortfall is the format's, :attr:`FormatSummary.missing`).
    """
    result: dict[str, dict[str, int | None]] = {}
    for fmt, fstats in final.formats.items():
        for kind, stored in (("frames", fstats.frames), ("table", fstats.rows)):
            routed = [s for s in final.streams.values() if fmt in s.formats and s.kind == kind]
            given = {s.stream: _given(s) for s in routed}
            total = sum(given.values())
            for s in routed:
                share: int | None = given[s.stream]
                if stored != total:
                    share = stored if len(routed) == 1 else None
                result.setdefault(s.stream, {})[fmt] = share
    return result


def _given(stream: StreamStats) -> int:
    """Frames or rows of a stream the Recorder took from the ring for its formats."""
    return stream.frames if stream.kind == "frames" else stream.rows


def _missing(fstats: FormatStats, final: RecorderStats) -> int:
    routed = [s for s in final.streams.values() if fstats.format in s.formats]
    given = sum(_given(s) for s in routed)
    return max(given - fstats.frames - fstats.rows, 0)


def _format_summary(fstats: FormatStats, final: RecorderStats) -> FormatSummary:
    files = tuple(Path(f) for f in fstats.files)
    return FormatSummary(
        format=fstats.format, state=fstats.state, error=fstats.error,
        path=_output(fstats.format, files), files=files,
        bytes_on_disk=fstats.bytes_on_disk, frames=fstats.frames, rows=fstats.rows,
        flushes=fstats.flushes, rotations=fstats.rotations,
        lost_after_failure=fstats.lost_after_failure, missing=_missing(fstats, final),
    )  # fmt: skip


def _output(fmt: str, files: tuple[Path, ...]) -> Path | None:
    """The run's output of a format: its (first) file or store, or the run directory
    holding its stream files."""
    if not files:
        return None
    first = files[0]
    if get_writer_class(fmt).path_suffix or first.is_dir():
        return first
    return first.parent


def _stream_files(fmt: str, fstats: FormatStats, stream: str) -> tuple[Path, ...]:
    """The files holding ``stream`` in a format: its one output (HDF5, Zarr), or the
    stream's own files (and parts) in the run directory."""
    files = [Path(f) for f in fstats.files]
    if get_writer_class(fmt).path_suffix:
        return tuple(files)
    own = re.compile(re.escape(sanitize_name(stream, what="stream name")) + r"(__part\d+)?\.\w+$")
    found: list[Path] = []
    for path in files:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if own.match(p.name))
        elif own.match(path.name):
            found.append(path)
    return tuple(dict.fromkeys(found))


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


def how_to_open(fmt: str, path: Path, summary: StreamSummary) -> str:
    """One line of Python that opens ``summary``'s stream as format ``fmt`` wrote it under
    ``path`` (the format's output), or ``""`` when unknown."""
    table = _OPEN_FRAMES if summary.kind == "frames" else _OPEN_TABLE
    template = table.get(fmt, "")
    files = summary.files.get(fmt, ())
    file = files[0] if files else path
    return template.format(path=path, stream=summary.stream, file=file)
