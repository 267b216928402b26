"""Simulated instruments for the demo, the tests and the benchmarks.

Each simulator is deterministic for a given ``seed``: the same seed gives the same
values, and timestamps are ``start_ns`` plus a fixed period (``start_ns`` defaults to
the wall clock at construction, so pass it explicitly for byte-identical output).

The data are shaped like what real instruments produce, because compression ratios
and writer throughput depend on it: camera frames have a smooth scene, shot noise
and read noise (they compress like real sCMOS frames, neither like zeros nor like
white noise); the power meter drifts and ripples; the DAQ card records sines plus
noise quantised by a 16-bit ADC.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import operator
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import ConfigError, SchemaMismatch, describe_value
from daq_storage.schema import FrameBlock

__all__ = [
    "POWER_METER_SCHEMA",
    "DaqBlock",
    "Frame",
    "FrameBlock",
    "SimulatedCamera",
    "SimulatedDaqCard",
    "SimulatedPowerMeter",
]

#: The seeds' scalar-measurement schema (seed 002). ``timestamp_ns`` is the seeds' "ns
#: since epoch" as an Arrow timestamp (the same int64, with its meaning attached, so
#: readers show dates); ``value`` carries its CF ``units`` as field metadata.
POWER_METER_SCHEMA = pa.schema(
    [
        pa.field("timestamp_ns", pa.timestamp("ns", "UTC"), nullable=False),
        pa.field("channel", pa.utf8(), nullable=False),
        pa.field("value", pa.float64(), nullable=False, metadata={"units": "W"}),
        pa.field("unit", pa.utf8(), nullable=True),
    ]
)

_NS_PER_S = 1_000_000_000
# Rates between one sample per ~12 days and one per ns: timestamps are whole ns, and the
# spacing of the slowest still fits int64 timestamps for millions of samples.
_RATES = (1e-6, 1e9)
_INT64_MAX = (1 << 63) - 1
_UTF8_BYTES = (1 << 31) - 1  # an Arrow utf8 array's offsets are int32


def _refused(owner: str, name: str, accepted: str, value: object) -> ConfigError:
    return ConfigError(f"{owner} {name} must be {accepted}, got {describe_value(value)}")


def _integer(value: object, owner: str, name: str, low: int, high: int | None = None) -> int:
    """An int (numpy's too, never a bool or a float) in ``low..high``."""
    number: int | None = None
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError):
            number = operator.index(value)  # type: ignore[arg-type]
    if number is None or number < low or (high is not None and number > high):
        accepted = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
        raise _refused(owner, name, accepted, value)
    return number


def _number(value: object, owner: str, name: str, bounds: tuple[float, float]) -> float:
    """A real number (not a bool) in ``[low, high]``: NaN and infinities are refused."""
    low, high = bounds
    if not isinstance(value, bool) and isinstance(value, Real):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if low <= number <= high:
            return number
    raise _refused(owner, name, f"a number in [{low:g}, {high:g}]", value)


def _start_ns(start_ns: object, owner: str) -> int:
    if start_ns is None:
        return time.time_ns()
    return _integer(start_ns, owner, "start_ns", 0, _INT64_MAX)


def _seed(seed: object, owner: str) -> np.random.Generator:
    return np.random.default_rng(_integer(seed, owner, "seed", 0))


@contextlib.contextmanager
def _memory(owner: str, what: str) -> Iterator[None]:
    """Turn an allocation this machine cannot make into a ConfigError naming it."""
    try:
        yield
    except MemoryError:
        raise ConfigError(f"{owner}: not enough memory for {what}") from None


def _text(value: object, owner: str, name: str) -> str:
    """A non-empty str that UTF-8 can encode."""
    if isinstance(value, str) and value:
        try:
            value.encode()
        except UnicodeEncodeError:
            pass
        else:
            return value
    raise _refused(owner, name, "a non-empty UTF-8 string", value)


@dataclass(frozen=True, slots=True)
class Frame:
    """One camera frame."""

    array: npt.NDArray[np.uint16]
    frame_number: int
    timestamp_ns: int


def _frame_shape(shape: object) -> tuple[int, int]:
    """``(height, width)``, each 8..65536."""
    dims: tuple[int, int] | None = None
    if (
        isinstance(shape, tuple | list)
        and len(shape) == 2
        and not any(isinstance(d, bool) for d in shape)
    ):
        with contextlib.suppress(TypeError):
            dims = (operator.index(shape[0]), operator.index(shape[1]))
    if dims is None or not all(8 <= d <= 65536 for d in dims):
        raise ConfigError(
            f"SimulatedCamera shape {describe_value(shape)} is too small, too large or not "
            "(height, width): two integers in 8..65536"
        )
    return dims


def _channel_names(channels: object) -> tuple[str, ...]:
    """Distinct non-empty channel names, at least one."""
    if isinstance(channels, str | bytes) or not isinstance(channels, Sequence):
        raise _refused(
            "SimulatedPowerMeter", "channels", "a sequence of names such as ('pm1',)", channels
        )
    if not channels:
        raise ConfigError("SimulatedPowerMeter needs at least one channel")
    names = tuple(_text(name, "SimulatedPowerMeter", "channel name") for name in channels)
    if len(set(names)) != len(names):
        raise _refused("SimulatedPowerMeter", "channels", "distinct names", channels)
    return names


class SimulatedCamera:
    """A 16-bit camera looking at a smooth scene with a moving bright spot.

    Frames are built from a bank of ``bank_size`` pre-computed noisy exposures of the
    scene (Poisson shot noise + Gaussian read noise), so producing a frame costs a copy
    plus a small moving spot: thousands of frames per second on one core. The first
    four pixels of each frame carry the frame counter (as some cameras stamp it), so a
    frame's identity can be checked after a round trip.

    Args:
        shape: ``(height, width)`` of a frame.
        seed: seed of the random generator; the same seed gives identical frames.
        fps: frame rate, which sets the timestamp spacing.
        start_ns: timestamp of frame 0 in ns since the epoch (default: now).
        bank_size: number of distinct noise realisations cycled through.
        full_well: peak signal in counts (12-bit-like scenes by default), 1..65535.

    Raises:
        ConfigError: an argument of the wrong type or out of range (the message says
            what is accepted), or frames too large for this machine's memory.
    """

    def __init__(
        self,
        shape: tuple[int, int] = (480, 640),
        *,
        seed: int = 0,
        fps: float = 100.0,
        start_ns: int | None = None,
        bank_size: int = 16,
        full_well: int = 3000,
    ) -> None:
        owner = "SimulatedCamera"
        self.shape = _frame_shape(shape)
        height, width = self.shape
        self.dtype = np.dtype(np.uint16)
        self.fps = _number(fps, owner, "fps", _RATES)
        self.start_ns = _start_ns(start_ns, owner)
        bank_size = _integer(bank_size, owner, "bank_size", 1, 4096)
        peak = _number(full_well, owner, "full_well", (1.0, 65535.0))
        self._period_ns = round(_NS_PER_S / self.fps)
        self._next = 0
        rng = _seed(seed, owner)
        with _memory(owner, f"{bank_size} frames of shape {self.shape}"):
            scene = self._scene(rng, peak)
            dark = 100.0
            bank = rng.poisson(scene, size=(bank_size, *self.shape)).astype(np.float32)
            bank += dark + rng.normal(0.0, 2.0, size=bank.shape).astype(np.float32)
            self._bank = np.clip(bank, 0, 65535).astype(np.uint16)
        self._order = rng.permutation(bank_size)
        spot_size = max(4, min(height, width) // 12)
        yy, xx = np.mgrid[:spot_size, :spot_size].astype(np.float32) - (spot_size - 1) / 2
        spot = 0.5 * peak * np.exp(-(xx**2 + yy**2) / (2 * (spot_size / 5) ** 2))
        self._spot = spot.astype(np.uint16)

    def _scene(self, rng: np.random.Generator, full_well: float) -> npt.NDArray[np.float64]:
        height, width = self.shape
        y = np.linspace(0.0, 1.0, height)[:, None]
        x = np.linspace(0.0, 1.0, width)[None, :]
        scene = 0.15 * full_well * (0.6 + 0.4 * x) * (0.8 + 0.2 * y)
        for _ in range(6):
            cy, cx = rng.uniform(0.1, 0.9, size=2)
            sigma = rng.uniform(0.04, 0.15)
            amplitude = rng.uniform(0.2, 0.7) * full_well
            scene = scene + amplitude * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
        return np.asarray(np.clip(scene, 0.0, full_well))

    @property
    def frame_count(self) -> int:
        """Number of frames produced so far."""
        return self._next

    @property
    def frame_nbytes(self) -> int:
        """Size of one frame in bytes."""
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def _render(self, number: int, out: npt.NDArray[np.uint16]) -> None:
        np.copyto(out, self._bank[self._order[number % len(self._order)]])
        height, width = self.shape
        sh, sw = self._spot.shape
        # The spot circles the frame once every 200 frames: motion between frames.
        angle = 2 * np.pi * (number % 200) / 200
        top = int((height - sh) * (0.5 + 0.35 * np.sin(angle)))
        left = int((width - sw) * (0.5 + 0.35 * np.cos(angle)))
        out[top : top + sh, left : left + sw] += self._spot
        counter = number & 0xFFFF_FFFF_FFFF_FFFF
        out[0, :4] = [(counter >> shift) & 0xFFFF for shift in (48, 32, 16, 0)]

    @staticmethod
    def frame_number_of(frame: npt.NDArray[np.uint16]) -> int:
        """The frame counter stamped into the first four pixels of ``frame``.

        Raises:
            SchemaMismatch: ``frame`` is not a uint16 array of at least four pixels.
        """
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint16 or frame.size < 4:
            raise SchemaMismatch(
                f"frame_number_of needs a uint16 frame of at least 4 pixels, got "
                f"{describe_value(frame)}"
            )
        words = [int(w) for w in frame.reshape(-1)[:4]]
        return (words[0] << 48) | (words[1] << 32) | (words[2] << 16) | words[3]

    def next_frame(self) -> Frame:
        """Produce the next frame."""
        number = self._next
        out = np.empty(self.shape, dtype=np.uint16)
        self._render(number, out)
        self._next += 1
        return Frame(out, number, self.start_ns + number * self._period_ns)

    def frames(self, n: int, *, out: npt.NDArray[np.uint16] | None = None) -> FrameBlock:
        """Produce the next ``n`` frames as one stack (written into ``out`` if given).

        Raises:
            ConfigError: ``n`` is not an integer >= 0 (at most 1 TiB of frames), ``out``
                is not a writable uint16 array of shape ``(n, height, width)``, or ``n``
                frames do not fit memory.
        """
        # At most 2**40 bytes: numpy refuses (ValueError) what exceeds the address space.
        n = _integer(n, "SimulatedCamera", "frame count", 0, (1 << 40) // self.frame_nbytes)
        if out is None:
            with _memory("SimulatedCamera", f"{n} frames of shape {self.shape}"):
                out = np.empty((n, *self.shape), dtype=np.uint16)
        elif (
            not isinstance(out, np.ndarray)
            or out.shape != (n, *self.shape)
            or out.dtype != np.uint16
            or not out.flags.writeable
        ):
            raise ConfigError(
                f"SimulatedCamera out is {describe_value(out)}; expected a writable array of "
                f"shape {(n, *self.shape)} dtype uint16"
            )
        first = self._next
        for i in range(n):
            self._render(first + i, out[i])
        self._next += n
        numbers = np.arange(first, first + n, dtype=np.uint64)
        timestamps = np.uint64(self.start_ns) + numbers * np.uint64(self._period_ns)
        return FrameBlock(out, timestamps, numbers)


def _numeric(values: npt.NDArray[Any], type_: pa.DataType | None = None) -> pa.Array:
    """A non-null Arrow array over ``values``' buffer (a contiguous copy if need be).

    Not ``pa.array``: its first call imports pandas (~0.4 s, tens of MB), a cost an
    instrument process writing into a ring should not pay."""
    values = np.ascontiguousarray(values)
    type_ = pa.from_numpy_dtype(values.dtype) if type_ is None else type_
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])


def _utf8(values: Sequence[str]) -> pa.Array:
    """A non-null utf8 array of ``values``, built from buffers (see :func:`_numeric`)."""
    encoded = [v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    data = np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8)
    return pa.Array.from_buffers(
        pa.utf8(), len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _repeated_utf8(value: str, n: int) -> pa.Array:
    """A utf8 array of ``n`` copies of ``value``, built from buffers (no Python loop)."""
    encoded = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(encoded)
    data = np.frombuffer(encoded * n, dtype=np.uint8) if n and encoded else np.empty(0, np.uint8)
    return pa.Array.from_buffers(pa.utf8(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


class SimulatedPowerMeter:
    """An optical power meter streaming scalar readings as Arrow record batches.

    Readings follow the seeds' schema (:data:`POWER_METER_SCHEMA`): ``value`` in watts.
    With several channels the rows interleave channels sample by sample, as a
    multiplexing meter reports them.

    Args:
        channels: channel names.
        unit: the text of the ``unit`` column (``None`` leaves the column null).
        rate_hz: samples per second per channel.
        seed: seed of the random generator.
        start_ns: timestamp of sample 0 (default: now).
        power_w: mean power per channel in watts.

    Raises:
        ConfigError: an argument of the wrong type or out of range (the message says
            what is accepted).
    """

    def __init__(
        self,
        channels: Sequence[str] = ("power_meter_01",),
        *,
        unit: str | None = "W",
        rate_hz: float = 10_000.0,
        seed: int = 0,
        start_ns: int | None = None,
        power_w: float = 1.0e-3,
    ) -> None:
        owner = "SimulatedPowerMeter"
        self.channels = _channel_names(channels)
        self.unit = None if unit is None else _text(unit, owner, "unit")
        self.rate_hz = _number(rate_hz, owner, "rate_hz", _RATES)
        self.start_ns = _start_ns(start_ns, owner)
        self._period_ns = _NS_PER_S / self.rate_hz
        self._rng = _seed(seed, owner)
        power = _number(power_w, owner, "power_w", (0.0, 1e9))
        self._means = power * (1.0 + 0.1 * np.arange(len(self.channels)))
        self._sample = 0
        self._channel_arrays: dict[int, pa.Array] = {}
        self._unit_arrays: dict[int, pa.Array] = {}

    @property
    def schema(self) -> pa.Schema:
        """The schema of every batch."""
        return POWER_METER_SCHEMA

    @property
    def samples_read(self) -> int:
        """Samples per channel produced so far."""
        return self._sample

    def read_batch(self, n: int) -> pa.RecordBatch:
        """The next ``n`` samples of every channel (``n * len(channels)`` rows).

        Raises:
            ConfigError: ``n`` is not an integer >= 0, or so large that a text column
                would pass Arrow's 2 GiB utf8 limit or memory would not hold the batch.
        """
        n_channels = len(self.channels)
        longest = max(len(text.encode()) for text in (*self.channels, self.unit or "", "x"))
        most = _UTF8_BYTES // (n_channels * longest)
        n = _integer(n, "SimulatedPowerMeter", "sample count", 0, most)
        with _memory("SimulatedPowerMeter", f"a batch of {n} samples"):
            return self._batch(n, n_channels)

    def _batch(self, n: int, n_channels: int) -> pa.RecordBatch:
        index = np.arange(self._sample, self._sample + n, dtype=np.float64)
        t_s = index / self.rate_hz
        # Slow thermal drift plus a 50 Hz ripple, relative to the channel's mean power.
        shape = 1.0 + 0.02 * np.sin(2 * np.pi * 0.05 * t_s) + 0.005 * np.sin(2 * np.pi * 50.0 * t_s)
        noise = self._rng.normal(0.0, 0.002, size=(n, n_channels))
        values = (shape[:, None] + noise) * self._means[None, :]
        stamps = self.start_ns + np.round(index * self._period_ns).astype(np.int64)
        self._sample += n
        rows = n * n_channels
        if n_channels == 1:
            channel = self._cached(self._channel_arrays, self.channels[0], rows)
        else:
            channel = pa.DictionaryArray.from_arrays(
                _numeric(np.tile(np.arange(n_channels, dtype=np.int32), n)),
                _utf8(self.channels),
            ).cast(pa.utf8())
        if self.unit is None:
            unit = pa.nulls(rows, pa.utf8())
        else:
            unit = self._cached(self._unit_arrays, self.unit, rows)
        times = _numeric(np.repeat(stamps, n_channels), POWER_METER_SCHEMA.field(0).type)
        return pa.RecordBatch.from_arrays(
            [times, channel, _numeric(values.reshape(-1)), unit], schema=POWER_METER_SCHEMA
        )

    @staticmethod
    def _cached(cache: dict[int, pa.Array], value: str, rows: int) -> pa.Array:
        array = cache.get(rows)
        if array is None:
            array = cache[rows] = _repeated_utf8(value, rows)
        return array


@functools.lru_cache(maxsize=64)
def _daq_schema(
    channel_names: tuple[str, ...], sample_rate: float, volts_per_count: float, start_ns: int
) -> pa.Schema:
    """The schema of a DAQ card's record batches: the same for every block of a card.

    Schema metadata (JSON text): ``sample_rate`` (samples per second), ``volts_per_count``
    and ``start_ns`` (time of sample 0, ns since the epoch). Each channel carries the CF
    attributes ``units = "V"`` and ``scale_factor = volts_per_count``, so xarray decodes
    the counts to volts; ``sample_index`` says how it maps to time.
    """
    channel = {"units": "V", "scale_factor": json.dumps(volts_per_count)}
    index = {
        "long_name": "sample index",
        "description": "time in ns since the epoch = start_ns + sample_index * 1e9 / "
        "sample_rate (start_ns and sample_rate: the stream metadata)",
    }
    channels = [
        pa.field(name, pa.int16(), nullable=False,
                 metadata={**channel, "long_name": f"{name} voltage"})
        for name in channel_names
    ]  # fmt: skip
    metadata = {
        "sample_rate": json.dumps(sample_rate),
        "volts_per_count": json.dumps(volts_per_count),
        "start_ns": json.dumps(start_ns),
    }
    index_field = pa.field("sample_index", pa.uint64(), nullable=False, metadata=index)
    return pa.schema([index_field, *channels], metadata=metadata)


@dataclass(frozen=True, slots=True)
class DaqBlock:
    """A block of raw ADC samples from a multi-channel DAQ card."""

    samples: npt.NDArray[np.int16]  # (n_samples, n_channels)
    first_sample: int
    timestamp_ns: int  # of the first sample
    sample_rate: float
    channel_names: tuple[str, ...]
    volts_per_count: float
    start_ns: int  # of sample 0 of the card

    def to_record_batch(self) -> pa.RecordBatch:
        """One int16 column per channel plus a ``sample_index`` column, in the card's
        schema (:attr:`SimulatedDaqCard.schema`: the same for every block, so a ring
        stores it once). The block's own time is :attr:`timestamp_ns`."""
        n = self.samples.shape[0]
        index = _numeric(np.arange(self.first_sample, self.first_sample + n, dtype=np.uint64))
        columns = [index] + [_numeric(self.samples[:, i]) for i in range(self.samples.shape[1])]
        schema = _daq_schema(self.channel_names, self.sample_rate, self.volts_per_count,
                            self.start_ns)  # fmt: skip
        return pa.RecordBatch.from_arrays(columns, schema=schema)


class SimulatedDaqCard:
    """A multi-channel 16-bit DAQ card (think NI or Comedi analog input).

    Each channel records a sine of its own frequency plus Gaussian noise, digitised by a
    16-bit ADC over ``±range_v``. One pre-computed period of ``table_length`` samples is
    replayed, so generation is a memory copy (tens of millions of samples per second);
    the frequencies are chosen to make that period seamless.

    Args:
        n_channels: number of analog inputs.
        sample_rate: samples per second per channel.
        seed: seed of the random generator.
        start_ns: timestamp of sample 0 (default: now).
        range_v: input range in volts (symmetric).
        table_length: length of the replayed waveform, in samples.

    Raises:
        ConfigError: an argument of the wrong type or out of range (the message says
            what is accepted).
    """

    def __init__(
        self,
        n_channels: int = 8,
        *,
        sample_rate: float = 100_000.0,
        seed: int = 0,
        start_ns: int | None = None,
        range_v: float = 10.0,
        table_length: int = 1 << 16,
    ) -> None:
        owner = "SimulatedDaqCard"
        self.n_channels = _integer(n_channels, owner, "n_channels", 1, 1024)
        self.sample_rate = _number(sample_rate, owner, "sample_rate", _RATES)
        self.start_ns = _start_ns(start_ns, owner)
        self.range_v = _number(range_v, owner, "range_v", (1e-6, 1e6))
        table_length = _integer(table_length, owner, "table_length", 1, 1 << 24)
        self.channel_names = tuple(f"ai{i}" for i in range(self.n_channels))
        self.volts_per_count = self.range_v / 32768.0
        rng = _seed(seed, owner)
        t = np.arange(table_length, dtype=np.float64)[:, None]
        # Whole cycles per table so the replay has no seam.
        cycles = np.arange(1, self.n_channels + 1, dtype=np.float64)[None, :] * 37.0
        amplitude = self.range_v * rng.uniform(0.2, 0.8, size=(1, self.n_channels))
        volts = amplitude * np.sin(2 * np.pi * cycles * t / table_length)
        volts += rng.normal(0.0, 0.002 * self.range_v, size=volts.shape)
        counts = np.clip(np.round(volts / self.volts_per_count), -32768, 32767).astype(np.int16)
        # Two copies back to back: any block of <= table_length samples is one slice.
        self._table = np.ascontiguousarray(np.concatenate([counts, counts]))
        self._table_length = table_length
        self._sample = 0

    @property
    def samples_read(self) -> int:
        """Samples per channel produced so far."""
        return self._sample

    @property
    def schema(self) -> pa.Schema:
        """The schema of every block's record batch (see :meth:`DaqBlock.to_record_batch`)."""
        return _daq_schema(self.channel_names, self.sample_rate, self.volts_per_count,
                           self.start_ns)  # fmt: skip

    def read_block(self, n: int) -> DaqBlock:
        """The next ``n`` samples of every channel.

        Raises:
            ConfigError: ``n`` is not an integer >= 0, or the block does not fit memory.
        """
        n = _integer(n, "SimulatedDaqCard", "sample count", 0, 1 << 40)
        with _memory("SimulatedDaqCard", f"a block of {n} samples x {self.n_channels}"):
            out = np.empty((n, self.n_channels), dtype=np.int16)
        done = 0
        while done < n:
            start = (self._sample + done) % self._table_length
            take = min(n - done, self._table_length)
            out[done : done + take] = self._table[start : start + take]
            done += take
        first = self._sample
        self._sample += n
        timestamp = self.start_ns + round(first * _NS_PER_S / self.sample_rate)
        return DaqBlock(out, first, timestamp, self.sample_rate, self.channel_names,
                        self.volts_per_count, self.start_ns)  # fmt: skip
