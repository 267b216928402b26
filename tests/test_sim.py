"""Simulated instruments: deterministic, realistic, and in the seeds' schema."""

from __future__ import annotations

import functools
import json
import math
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from daq_storage.errors import ConfigError, DaqStorageError, describe_value
from daq_storage.sim import (
    POWER_METER_SCHEMA,
    SimulatedCamera,
    SimulatedDaqCard,
    SimulatedPowerMeter,
)

START = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def camera_frames() -> np.ndarray:
    return SimulatedCamera(seed=3, start_ns=START).frames(8).frames


def test_camera_frames_are_640x480_uint16(camera_frames: np.ndarray):
    assert camera_frames.shape == (8, 480, 640)
    assert camera_frames.dtype == np.uint16


def test_camera_is_deterministic_for_a_seed(camera_frames: np.ndarray):
    again = SimulatedCamera(seed=3, start_ns=START).frames(8)
    np.testing.assert_array_equal(again.frames, camera_frames)
    other = SimulatedCamera(seed=4, start_ns=START).frames(8).frames
    assert not np.array_equal(other, camera_frames)


def test_camera_single_frames_match_blocks(camera_frames: np.ndarray):
    camera = SimulatedCamera(seed=3, start_ns=START, fps=50.0)
    for i in range(3):
        frame = camera.next_frame()
        np.testing.assert_array_equal(frame.array, camera_frames[i])
        assert frame.frame_number == i
        assert frame.timestamp_ns == START + i * 20_000_000


def test_camera_stamps_counter_and_timestamps():
    camera = SimulatedCamera(seed=0, start_ns=START, fps=100.0)
    camera.frames(5)
    block = camera.frames(3)
    np.testing.assert_array_equal(block.frame_numbers, [5, 6, 7])
    np.testing.assert_array_equal(block.timestamps_ns, START + np.array([5, 6, 7]) * 10_000_000)
    assert [SimulatedCamera.frame_number_of(f) for f in block.frames] == [5, 6, 7]
    assert camera.frame_count == 8


def test_camera_frames_compress_like_real_data(camera_frames: np.ndarray):
    for frame in camera_frames[:3]:
        raw = frame.tobytes()
        ratio = len(zlib.compress(raw, 6)) / len(raw)
        assert 0.2 <= ratio <= 0.8, f"gzip ratio {ratio:.2f} is not camera-like"


def test_camera_frames_differ_and_have_shot_noise(camera_frames: np.ndarray):
    assert not np.array_equal(camera_frames[0], camera_frames[1])
    # Shot noise: variance grows with signal (Poisson), unlike constant-variance noise.
    diff = camera_frames[2].astype(np.float64) - camera_frames[3]
    mean = (camera_frames[2].astype(np.float64) + camera_frames[3]) / 2
    bright, dim = mean > np.percentile(mean, 90), mean < np.percentile(mean, 10)
    assert diff[bright].var() > 2 * diff[dim].var()
    assert camera_frames.max() < 4096 + 2000  # a 12-bit-like scene, no saturation at 65535


def test_camera_frames_into_a_given_buffer():
    out = np.zeros((4, 480, 640), np.uint16)
    block = SimulatedCamera(seed=0, start_ns=0).frames(4, out=out)
    assert block.frames is out
    assert out.any()
    with pytest.raises(ValueError, match="expected"):
        SimulatedCamera(seed=0).frames(4, out=np.zeros((3, 480, 640), np.uint16))


def test_camera_rejects_bad_parameters():
    with pytest.raises(ValueError, match="fps"):
        SimulatedCamera(fps=0)
    with pytest.raises(ValueError, match="too small"):
        SimulatedCamera(shape=(2, 2))
    with pytest.raises(ValueError, match=r"frame count must be an integer in 0\.\..*got -1"):
        SimulatedCamera().frames(-1)


def test_power_meter_batches_follow_the_seed_schema():
    meter = SimulatedPowerMeter(seed=1, start_ns=START, rate_hz=1000)
    batch = meter.read_batch(100)
    assert batch.schema == POWER_METER_SCHEMA
    assert batch.num_rows == 100
    assert batch.column("channel").to_pylist() == ["power_meter_01"] * 100
    assert batch.column("unit").to_pylist() == ["W"] * 100
    stamps = batch.column("timestamp_ns").cast(pa.int64()).to_numpy()
    np.testing.assert_array_equal(np.diff(stamps), 1_000_000)
    assert stamps[0] == START
    values = batch.column("value").to_numpy()
    assert 0.9e-3 < values.mean() < 1.1e-3
    assert values.std() > 0
    second = meter.read_batch(10)
    assert second.column("timestamp_ns").cast(pa.int64())[0].as_py() == START + 100 * 1_000_000


def test_power_meter_times_are_dates_and_values_have_units():
    """The seeds' ns since the epoch as an Arrow timestamp; the value's unit as CF metadata."""
    batch = SimulatedPowerMeter(seed=0, start_ns=START).read_batch(3)
    assert batch.schema.field("timestamp_ns").type == pa.timestamp("ns", "UTC")
    assert batch.schema.field("value").metadata == {b"units": b"W"}
    first = batch.column("timestamp_ns").to_numpy()[0]
    assert first == np.datetime64(START, "ns")


def test_power_meter_is_deterministic_and_multichannel():
    a = SimulatedPowerMeter(["a", "b"], seed=2, start_ns=START).read_batch(50)
    b = SimulatedPowerMeter(["a", "b"], seed=2, start_ns=START).read_batch(50)
    assert a.equals(b)
    assert a.num_rows == 100
    assert a.column("channel").to_pylist()[:4] == ["a", "b", "a", "b"]
    assert a.schema.field("channel").type == pa.utf8()


def test_power_meter_without_unit_has_null_units():
    batch = SimulatedPowerMeter(unit=None, seed=0, start_ns=0).read_batch(5)
    assert batch.column("unit").null_count == 5


def test_power_meter_rejects_bad_parameters():
    with pytest.raises(ValueError, match="at least one channel"):
        SimulatedPowerMeter([])
    with pytest.raises(ValueError, match="rate_hz"):
        SimulatedPowerMeter(rate_hz=-1)


def test_daq_card_blocks_are_int16_and_continuous():
    card = SimulatedDaqCard(4, sample_rate=1000, seed=5, start_ns=START, table_length=1024)
    blocks = [card.read_block(700) for _ in range(4)]  # crosses the table seam
    whole = np.concatenate([b.samples for b in blocks])
    assert whole.dtype == np.int16
    assert whole.shape == (2800, 4)
    assert [b.first_sample for b in blocks] == [0, 700, 1400, 2100]
    assert blocks[1].timestamp_ns == START + 700 * 1_000_000
    np.testing.assert_array_equal(whole[:1024], whole[1024:2048])  # replayed period
    # Each channel is a sine of its own frequency: the spectra peak in different bins.
    peaks = np.abs(np.fft.rfft(whole[:1024].astype(np.float64), axis=0))[1:].argmax(axis=0)
    assert len(set(peaks.tolist())) == 4


def test_daq_card_is_deterministic():
    a = SimulatedDaqCard(2, seed=9, start_ns=0).read_block(5000).samples
    b = SimulatedDaqCard(2, seed=9, start_ns=0).read_block(5000).samples
    np.testing.assert_array_equal(a, b)


def test_daq_block_as_record_batch():
    block = SimulatedDaqCard(3, sample_rate=2000, seed=0, start_ns=START).read_block(10)
    batch = block.to_record_batch()
    assert batch.schema.names == ["sample_index", "ai0", "ai1", "ai2"]
    assert batch.schema.field("ai0").type == pa.int16()
    assert batch.schema.metadata[b"sample_rate"] == b"2000.0"
    np.testing.assert_array_equal(batch.column("ai1").to_numpy(), block.samples[:, 1])


def test_daq_schema_is_the_same_for_every_block_and_says_time_and_volts():
    """A per-block value would make a ring store a schema per block; the block's own time
    is its timestamp_ns."""
    card = SimulatedDaqCard(2, sample_rate=1000, seed=0, start_ns=START)
    first, second = card.read_block(100), card.read_block(100)
    batch = second.to_record_batch()
    assert batch.schema.equals(first.to_record_batch().schema, check_metadata=True)
    assert batch.schema.equals(card.schema, check_metadata=True)
    assert second.timestamp_ns == START + 100 * 1_000_000
    metadata = {k.decode(): json.loads(v) for k, v in batch.schema.metadata.items()}
    assert metadata == {"sample_rate": 1000.0, "volts_per_count": card.volts_per_count,
                        "start_ns": START}  # fmt: skip
    ai0 = batch.schema.field("ai0").metadata
    assert ai0[b"units"] == b"V"
    assert json.loads(ai0[b"scale_factor"]) == card.volts_per_count
    index = batch.schema.field("sample_index").metadata
    assert b"start_ns + sample_index" in index[b"description"]
    # The sample at index i is at start_ns + i / sample_rate.
    i = batch.column("sample_index")[5].as_py()
    assert START + i * 1_000_000_000 // 1000 == second.timestamp_ns + 5 * 1_000_000


def test_daq_card_rejects_bad_parameters():
    with pytest.raises(ValueError, match="n_channels"):
        SimulatedDaqCard(0)
    with pytest.raises(ValueError, match="sample_rate"):
        SimulatedDaqCard(sample_rate=0)


# ----------------------------------------------------------------- hostile arguments
#: Values of every wrong kind: negative, zero, huge (beyond 64 bits, a float, ``str()``),
#: NaN and infinities, bools for numbers, unknown strings, containers, numpy values.
HOSTILE: list[Any] = [
    -1, 0, 1, 7, 2**64, 2**70, -(2**70), 10**400, 10**5000, 1.5, -0.5, 1e-300, 1e300,
    math.nan, math.inf, -math.inf, True, False, None, "", "x", "16", "\udc80", b"x",
    [1], (), (8, 8), (2, 2), (8, 8, 8), ("a", 8), (True, 8), ["pm", "pm"], ["", "x"], [1, 2],
    "pm", {}, object(), np.bool_(True), np.int64(-3), np.float64("nan"), np.array([1, 2]),
    np.zeros((1, 8, 8), np.uint16), np.zeros((1, 8, 8), np.uint16)[:, ::-1],
]  # fmt: skip
SMALL_CAMERA: dict[str, Any] = {"shape": (8, 8), "bank_size": 1, "start_ns": 0}

CALLS: dict[str, Callable[[Any], object]] = {
    **{
        f"SimulatedCamera({name}=)": functools.partial(
            lambda name, v: SimulatedCamera(**{**SMALL_CAMERA, name: v}).frames(2), name
        )
        for name in ("shape", "seed", "fps", "start_ns", "bank_size", "full_well")
    },
    "SimulatedCamera.frames(n)": lambda v: SimulatedCamera(**SMALL_CAMERA).frames(v),
    "SimulatedCamera.frames(out=)": lambda v: SimulatedCamera(**SMALL_CAMERA).frames(1, out=v),
    "SimulatedCamera.frame_number_of": SimulatedCamera.frame_number_of,
    **{
        f"SimulatedPowerMeter({name}=)": functools.partial(
            lambda name, v: SimulatedPowerMeter(**{"start_ns": 0, name: v}).read_batch(3), name
        )
        for name in ("channels", "unit", "rate_hz", "seed", "start_ns", "power_w")
    },
    "SimulatedPowerMeter.read_batch(n)": lambda v: SimulatedPowerMeter(("a", "b")).read_batch(v),
    **{
        f"SimulatedDaqCard({name}=)": functools.partial(
            lambda name, v: (
                SimulatedDaqCard(**{"start_ns": 0, "table_length": 64, name: v})
                .read_block(3)
                .to_record_batch()
            ),
            name,
        )
        for name in ("n_channels", "sample_rate", "seed", "start_ns", "range_v", "table_length")
    },
    "SimulatedDaqCard.read_block(n)": lambda v: SimulatedDaqCard(2, table_length=64).read_block(v),
}


@pytest.mark.filterwarnings("error")  # a NaN or overflow warning is an escape too
@pytest.mark.parametrize("call", list(CALLS))
def test_only_config_errors_escape_from_hostile_arguments(call: str):
    escaped = []
    for value in HOSTILE:
        try:
            CALLS[call](value)
        except DaqStorageError:
            pass
        except Exception as exc:
            escaped.append(f"{describe_value(value)}: {type(exc).__name__}: {exc}"[:200])
    assert escaped == []


REFUSALS: list[tuple[Callable[[], object], str]] = [
    (lambda: SimulatedCamera(fps=math.nan), r"fps must be a number in \[1e-06, 1e\+09\], got nan"),
    (lambda: SimulatedCamera(bank_size=True),
     r"bank_size must be an integer in 1\.\.4096, got True"),
    (lambda: SimulatedCamera(seed=-1), r"seed must be an integer >= 0, got -1"),
    (lambda: SimulatedCamera(start_ns=1.5),  # type: ignore[arg-type]
     r"start_ns must be an integer in 0\.\.\d+, got 1\.5"),
    (lambda: SimulatedPowerMeter("pm1"), r"channels must be a sequence of names"),
    (lambda: SimulatedPowerMeter(["a", "a"]), r"channels must be distinct names"),
    (lambda: SimulatedDaqCard(table_length=0),
     r"table_length must be an integer in 1\.\.\d+, got 0"),
    (lambda: SimulatedDaqCard(range_v=0), r"range_v must be a number in"),
    (lambda: SimulatedDaqCard(2).read_block("5"),  # type: ignore[arg-type]
     r"sample count must be an integer"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "match"), REFUSALS)
def test_refusals_name_the_argument_the_value_and_what_is_accepted(
    make: Callable[[], object], match: str
):
    with pytest.raises(ConfigError, match=match) as info:
        make()
    assert isinstance(info.value, ValueError)  # `except ValueError` keeps working


def test_a_daq_card_with_an_empty_table_is_refused_instead_of_looping():
    """table_length=0 made read_block divide by zero; a negative one looped forever."""
    with pytest.raises(ConfigError, match="table_length"):
        SimulatedDaqCard(table_length=-5)


def test_a_power_meter_batch_beyond_arrow_s_utf8_offsets_is_refused_not_wrapped():
    """2**31 bytes of channel names would wrap the int32 offsets into a corrupt array."""
    meter = SimulatedPowerMeter(("a" * 64,), start_ns=0)
    with pytest.raises(ConfigError, match=r"sample count must be an integer in 0\.\.33554431"):
        meter.read_batch(1 << 25)


@pytest.mark.parametrize("n", [0, 1, 7])
def test_batches_are_valid_arrow_for_any_size_and_channel_names(n: int):
    """Built from numpy buffers (never ``pa.array``, which imports pandas): every batch
    passes Arrow's full validation, non-ASCII names and empty batches included."""
    meter = SimulatedPowerMeter(["µW-Kanal", "b", "ç"], seed=1, start_ns=START)
    batch = meter.read_batch(n)
    batch.validate(full=True)
    assert batch.column("channel").to_pylist() == ["µW-Kanal", "b", "ç"] * n
    assert batch.column("value").null_count == 0
    block = SimulatedDaqCard(3, seed=1, start_ns=START).read_block(n).to_record_batch()
    block.validate(full=True)
    assert block.column("sample_index").to_pylist() == list(range(n))
    assert block.num_columns == 4
