"""The instruments' run: :func:`run_instruments`, in this process."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from daq_storage.acquisition._results import (
    _FIELDS,
    CAMERA_STREAM,
    DAQ_STREAM,
    POWER_METER_STREAM,
    STREAMS,
    AcquisitionResult,
    InstrumentCount,
    _count_of,
)
from daq_storage.errors import ConfigError, RingFull, describe_value
from daq_storage.ring import RingBuffer
from daq_storage.sim import SimulatedCamera, SimulatedDaqCard, SimulatedPowerMeter

__all__ = ["StopSignal", "run_instruments", "stop_on_signals"]

SCALAR_TICK_S = 0.1  # the power meter and the DAQ card deliver 100 ms of data at a time
DAQ_CHANNELS = 8
DAQ_RATE_HZ = 100_000
PROGRESS_INTERVAL_S = 0.25
# A frame record: the 32-byte record header and the 88-byte frame header before the
# pixels, aligned to 8 bytes (docs/ring-format.md).
_FRAME_OVERHEAD = 32 + 88
_RECORD_HEADER = 32


class StopSignal(Protocol):
    """What ends a run early: a ``threading.Event`` or a ``multiprocessing`` one."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = ...) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Settings:
    camera: bool
    power_meter: bool
    daq: bool
    camera_fps: float
    camera_shape: tuple[int, int]
    frames: int  # camera frames to produce (duration and ``frames`` applied)
    ticks: int  # 100 ms deliveries of the scalar instruments
    paced: bool
    seed: int
    block_timeout: float | None
    log_seqs: bool

    @property
    def streams(self) -> tuple[str, ...]:
        on = {CAMERA_STREAM: self.camera, POWER_METER_STREAM: self.power_meter,
              DAQ_STREAM: self.daq}  # fmt: skip
        return tuple(s for s in STREAMS if on[s])


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {describe_value(value)}")
    return value


def _seconds(value: object, name: str, *, positive: bool = False) -> float:
    number = math.nan
    if not isinstance(value, bool) and isinstance(value, int | float):
        number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        accepted = "a finite number > 0" if positive else "a finite number >= 0"
        raise ConfigError(f"{name} must be {accepted}, got {describe_value(value)}")
    return number


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0, got {describe_value(value)}")
    return value


def _settings(
    *, camera: bool, power_meter: bool, daq: bool, camera_fps: float,
    camera_shape: tuple[int, int], frames: int | None, duration: float, paced: bool,
    seed: int, block_timeout: float | None, log_seqs: bool,
) -> _Settings:  # fmt: skip
    """The arguments checked; ConfigError naming the first one that is wrong."""
    fps = _seconds(camera_fps, "camera_fps", positive=True)
    seconds = _seconds(duration, "duration")
    shape = camera_shape
    if (
        not isinstance(shape, tuple | list)
        or len(shape) != 2
        or not all(type(d) is int and 8 <= d <= 65536 for d in shape)
    ):
        raise ConfigError(
            f"camera_shape must be (height, width), two integers in 8..65536, got "
            f"{describe_value(camera_shape)}"
        )
    if not (_flag(camera, "camera") | _flag(power_meter, "power_meter") | _flag(daq, "daq")):
        raise ConfigError("no instrument to run: camera, power_meter and daq are all False")
    planned = round(seconds * fps)  # duration bounds the camera too
    if frames is not None:
        planned = min(planned, _count(frames, "frames"))
    return _Settings(
        _flag(camera, "camera"), _flag(power_meter, "power_meter"), _flag(daq, "daq"),
        fps, (shape[0], shape[1]), planned, round(seconds / SCALAR_TICK_S),
        _flag(paced, "paced"), _count(seed, "seed"),
        None if block_timeout is None else _seconds(block_timeout, "block_timeout"),
        _flag(log_seqs, "log_seqs"),
    )  # fmt: skip


def _schedule(s: _Settings) -> Iterator[tuple[float, str]]:
    """``(due time in s, "frame" | "scalars")`` events in time order.

    Ordered on the data's own whole-ns timeline (the camera's timestamps advance by its
    rounded period), so records reach the ring in the order of their timestamps."""
    frames = s.frames if s.camera else 0
    ticks = s.ticks if s.power_meter or s.daq else 0
    frame_ns = round(1e9 / s.camera_fps)  # as SimulatedCamera spaces its timestamps
    tick_ns = round(SCALAR_TICK_S * 1e9)
    frame = tick = 0
    while frame < frames or tick < ticks:
        frame_due = frame * frame_ns if frame < frames else math.inf
        tick_due = tick * tick_ns if tick < ticks else math.inf
        if frame_due <= tick_due:
            yield frame_due / 1e9, "frame"
            frame += 1
        else:
            yield tick_due / 1e9, "scalars"
            tick += 1


# --------------------------------------------------------------------- the run
@dataclass(slots=True)
class _Count:
    """One stream's counters while it runs."""

    stream: str
    values: list[int] = field(default_factory=lambda: [0] * len(_FIELDS))
    seqs: list[int] | None = None

    def frozen(self) -> InstrumentCount:
        return _count_of(self.stream, self.values, self.seqs or ())


class _Run:
    """The instruments writing into an open ring, counting every write."""

    def __init__(self, ring: RingBuffer, s: _Settings) -> None:
        self.ring = ring
        self.counts = {n: _Count(n, seqs=[] if s.log_seqs else None) for n in s.streams}
        self.started = time.monotonic()

    def put(self, stream: str, units: int, nbytes: int, size: Callable[[], int],
            write: Callable[..., int], *args: Any, **kwargs: Any) -> None:  # fmt: skip
        """Write one record of ``units`` frames or rows, counting it either way."""
        count = self.counts[stream]
        values = count.values
        values[0] += units
        values[4] += nbytes
        try:
            seq = write(*args, stream=stream, **kwargs)
        except RingFull:
            record = size()
            if (record + 7) // 8 * 8 > self.ring.capacity:
                # Not a consumer too slow: this record can never fit, nothing ever would.
                values[0] -= units
                values[4] -= nbytes
                raise ConfigError(
                    f"ring {self.ring.path} of {self.ring.capacity:,} bytes is too small for "
                    f"{stream}'s records of {record:,} bytes: make it larger"
                ) from None
            values[2] += units
            values[3] += 1
            return
        values[1] += 1
        if count.seqs is not None:
            count.seqs.append(seq)

    def result(self) -> AcquisitionResult:
        return AcquisitionResult(
            {n: c.frozen() for n, c in self.counts.items()}, time.monotonic() - self.started
        )


def run_instruments(
    ring: str | os.PathLike[str],
    *,
    camera: bool = True,
    power_meter: bool = True,
    daq: bool = True,
    camera_fps: float = 100.0,
    camera_shape: tuple[int, int] = (480, 640),
    frames: int | None = None,
    duration: float = 2.0,
    paced: bool = True,
    seed: int = 0,
    block_timeout: float | None = None,
    log_seqs: bool = False,
    stop: StopSignal | None = None,
    on_progress: Callable[[AcquisitionResult], None] | None = None,
) -> AcquisitionResult:
    """Run the simulated instruments in this process, writing into the ring at ``ring``.

    Each instrument keeps its own schedule on a common timeline, that of the data's
    timestamps: frame ``i`` is due at ``i / camera_fps`` s, the scalar instruments deliver
    100 ms of data every 100 ms; records reach the ring in timestamp order.
    ``duration`` is the seconds of data on that timeline: the scalar instruments deliver
    ``duration / 0.1`` blocks and the camera ``round(duration * camera_fps)`` frames, or
    ``frames`` if that is fewer (``frames`` caps the camera, ``duration`` bounds
    everything). With ``paced`` the timeline is the wall clock (the instruments' real
    rates); without, the same data is written as fast as the ring takes it.

    Args:
        ring: an existing ring (made by the daemon or ``RingBuffer.create``); this
            process attaches to it as its one writer.
        camera, power_meter, daq: which instruments run.
        camera_fps: the camera's frame rate (> 0), which also spaces its timestamps.
        camera_shape: ``(height, width)`` of a frame.
        seed: the simulators' seed (the same seed gives the same data).
        block_timeout: in ``overflow="block"`` mode, the longest a write waits for the
            slowest consumer before the ring refuses it (counted as dropped); ``None``:
            the ring writer's default (1 s).
        log_seqs: keep the ring seq of every record written (:attr:`InstrumentCount.seqs`).
        stop: ends the run early once set (a ``threading`` or ``multiprocessing`` Event;
            the CLI sets it on SIGINT/SIGTERM); what was written until then is counted.
        on_progress: called with the counts so far about 4 times a second, from this
            thread, between two writes.

    Raises:
        ConfigError: an argument is wrong, or the ring is too small to ever hold a
            record of one of the streams (nothing could be written).
        RingNotFound, RingBusy, RingCorrupt, RingNotTrusted, StorageIOError: the ring
            cannot be opened as its writer (another process writes it, ...).
    """
    settings = _settings(
        camera=camera, power_meter=power_meter, daq=daq, camera_fps=camera_fps,
        camera_shape=camera_shape, frames=frames, duration=duration, paced=paced, seed=seed,
        block_timeout=block_timeout, log_seqs=log_seqs,
    )  # fmt: skip
    return _acquire(os.fspath(ring), settings, stop, on_progress, None)


def _acquire(
    ring_path: str,
    s: _Settings,
    stop: StopSignal | None,
    on_progress: Callable[[AcquisitionResult], None] | None,
    on_ready: Callable[[_Run], None] | None,
    on_write: Callable[[_Run], None] | None = None,
) -> AcquisitionResult:
    """The run behind :func:`run_instruments` and :class:`InstrumentProcess`."""
    start_ns = time.time_ns()
    # The simulators first: their arguments are checked before the ring is touched. The
    # camera only when it runs: its bank of exposures takes a moment to compute.
    cam = None
    if s.camera:
        cam = SimulatedCamera(s.camera_shape, seed=s.seed, start_ns=start_ns, fps=s.camera_fps)
    meter = SimulatedPowerMeter((POWER_METER_STREAM,), seed=s.seed, start_ns=start_ns)
    card = SimulatedDaqCard(DAQ_CHANNELS, sample_rate=DAQ_RATE_HZ, seed=s.seed, start_ns=start_ns)
    meter_samples = round(meter.rate_hz * SCALAR_TICK_S)
    daq_samples = round(card.sample_rate * SCALAR_TICK_S)
    frame_bytes = 0 if cam is None else cam.frame_nbytes
    with (
        RingBuffer.open(ring_path)
        if s.block_timeout is None
        else RingBuffer.open(ring_path, block_timeout=s.block_timeout)
    ) as ring:
        run = _Run(ring, s)
        if on_ready is not None:
            on_ready(run)
        next_progress = run.started + PROGRESS_INTERVAL_S
        for due, event in _schedule(s):
            if stop is not None and stop.is_set():
                break
            now = time.monotonic()
            if s.paced and (wait := run.started + due - now) > 0:
                # The instruments' own rate, not synchronisation: a stop ends the wait.
                if stop is not None:
                    if stop.wait(wait):
                        break
                else:
                    time.sleep(wait)
                now = time.monotonic()
            if now >= next_progress:
                ring.heartbeat()  # shows the writer alive to `status` and the consumers
                if on_progress is not None:
                    on_progress(run.result())
                next_progress = now + PROGRESS_INTERVAL_S
            if cam is not None and event == "frame":
                frame = cam.next_frame()
                run.put(CAMERA_STREAM, 1, frame_bytes,
                        lambda: _FRAME_OVERHEAD + frame_bytes, ring.write_frame, frame.array,
                        timestamp_ns=frame.timestamp_ns,
                        frame_number=frame.frame_number)  # fmt: skip
            else:
                if s.power_meter:  # the record's time: its first reading's, as the card's
                    first_ns = start_ns + round(meter.samples_read * 1e9 / meter.rate_hz)
                    batch = meter.read_batch(meter_samples)
                    _put_batch(run, POWER_METER_STREAM, batch, first_ns)
                if s.daq:
                    block = card.read_block(daq_samples)
                    _put_batch(run, DAQ_STREAM, block.to_record_batch(), block.timestamp_ns)
            if on_write is not None:
                on_write(run)
        ring.heartbeat()
        result = run.result()
    if on_progress is not None:
        on_progress(result)
    return result


def _put_batch(run: _Run, stream: str, batch: pa.RecordBatch, timestamp_ns: int) -> None:
    run.put(stream, batch.num_rows, batch.nbytes,
            lambda: _RECORD_HEADER + batch.serialize().size, run.ring.write_batch, batch,
            timestamp_ns=timestamp_ns)  # fmt: skip


class _OnSignals:
    """Run ``action`` in a watcher thread each time one of ``signums`` arrives.

    The handler only writes a byte to a pipe (async-signal-safe, no lock): an Event's
    ``set`` in the handler itself takes a lock the interrupted thread may hold (a
    ``multiprocessing`` Event's even waits for the sleeper it wakes, that same thread),
    and would deadlock. :meth:`close` puts the previous handlers back.
    """

    def __init__(self, action: Callable[[], object], signums: tuple[int, ...]) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # a handler must never block (pipe full: lost)
        self._thread = threading.Thread(
            target=self._watch, args=(action,), name="daq-storage-signals", daemon=True
        )
        self._thread.start()
        self._previous = {signum: signal.signal(signum, self._handler) for signum in signums}

    def _handler(self, signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):  # closed meanwhile: the run is over anyway
            os.write(self._write, b"\0")

    def _watch(self, action: Callable[[], object]) -> None:
        while os.read(self._read, 1):  # b"" once the writing end is closed
            action()

    def close(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        os.close(self._write)
        self._thread.join()
        os.close(self._read)


@contextlib.contextmanager
def stop_on_signals(
    signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[threading.Event]:
    """An Event set when one of ``signums`` arrives, for :func:`run_instruments`'s
    ``stop`` (the CLI's ``simulate``), without the deadlock of setting it in the handler;
    the previous handlers are back afterwards. Enter it in the main thread (Python
    handles signals there only)."""
    event = threading.Event()
    handlers = _OnSignals(event.set, signums)
    try:
        yield event
    finally:
        handlers.close()
