"""Simulated acquisition: what the instruments say they wrote is what a reader of the ring
reads back, record by record; drops are counted; the process variant reports errors, early
stops and deaths in the parent."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daq_storage.acquisition import (
    CAMERA_STREAM,
    DAQ_STREAM,
    POWER_METER_STREAM,
    AcquisitionResult,
    InstrumentCount,
    InstrumentProcess,
    format_counts,
    run_instruments,
    stop_on_signals,
)
from daq_storage.errors import ConfigError, DaqStorageError, RingBusy, RingNotFound
from daq_storage.ring import Record, RingBuffer, RingReader
from daq_storage.sim import SimulatedCamera

SHAPE = (32, 48)


@pytest.fixture
def ring_path(shm_path: Path) -> Iterator[Path]:
    """A 16 MiB discard_oldest ring with no writer attached."""
    RingBuffer.create(shm_path, capacity_bytes=16 << 20).close()
    yield shm_path
    shm_path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Got:
    """A record read back, copied out of the ring (it outlives the reader)."""

    stream: str
    kind: str
    seq: int
    timestamp_ns: int
    frame_number: int | None = None
    array: np.ndarray | None = None
    batch: pa.RecordBatch | None = None

    @property
    def units(self) -> int:
        return 1 if self.batch is None else self.batch.num_rows


def _got(record: Record) -> Got:
    if record.kind == "frame":
        return Got(record.stream, record.kind, record.seq, record.timestamp_ns,
                   record.frame_number, array=record.array(copy=True))  # fmt: skip
    batch = record.batch()
    copy = pa.ipc.read_record_batch(batch.serialize(), batch.schema)
    return Got(record.stream, record.kind, record.seq, record.timestamp_ns, batch=copy)


def _read_all(reader: RingReader, timeout: float = 0.0) -> list[Got]:
    """What the ring holds for ``reader`` (waiting up to ``timeout`` for a first record)."""
    got = [_got(r) for r in reader.read_many(4096, timeout=timeout)]
    while got and (more := reader.read_many(4096)):
        got += [_got(r) for r in more]
    return got


def _by_stream(records: list[Got]) -> dict[str, list[Got]]:
    grouped: dict[str, list[Got]] = defaultdict(list)
    for record in records:
        grouped[record.stream].append(record)
    return grouped


def _check_against_ring(result: AcquisitionResult, records: list[Got]) -> None:
    """Every count of ``result`` equals what the records show, stream by stream."""
    grouped = _by_stream(records)
    assert set(grouped) <= set(result.streams)
    for name, count in result.streams.items():
        got = grouped.get(name, [])
        assert count.records == len(got), name
        assert count.produced - count.dropped == sum(r.units for r in got), name
        if count.seqs:
            assert list(count.seqs) == [r.seq for r in got], name


def test_counts_frames_and_rows_match_what_a_registered_reader_reads(ring_path: Path):
    """Unpaced: 0.5 s of data (50 frames at 100 fps, five 100 ms blocks per scalar
    instrument) as fast as the ring takes them; the reader gets each frame with its number,
    the camera's timestamps and its pixels, and every row."""
    with RingReader.open(ring_path, consumer="check") as reader:
        result = run_instruments(
            ring_path, camera_shape=SHAPE, duration=0.5, paced=False, seed=7, log_seqs=True
        )
        records = _read_all(reader)
        assert reader.lost == 0
    _check_against_ring(result, records)
    camera = result.streams[CAMERA_STREAM]
    assert (camera.kind, camera.produced, camera.records, camera.dropped) == ("frames", 50, 50, 0)
    assert camera.bytes == 50 * SHAPE[0] * SHAPE[1] * 2
    frames = _by_stream(records)[CAMERA_STREAM]
    assert [r.frame_number for r in frames] == list(range(50))
    arrays = [r.array for r in frames if r.array is not None]
    assert [SimulatedCamera.frame_number_of(a) for a in arrays] == list(range(50))
    stamps = np.diff([r.timestamp_ns for r in frames])
    assert set(stamps.tolist()) == {10_000_000}  # the camera's 100 fps, not the write times
    reference = SimulatedCamera(SHAPE, seed=7).next_frame().array  # the same seed, same pixels
    np.testing.assert_array_equal(frames[0].array, reference)
    meter = result.streams[POWER_METER_STREAM]
    assert (meter.kind, meter.produced, meter.records) == ("table", 5_000, 5)
    daq = result.streams[DAQ_STREAM]
    assert (daq.kind, daq.produced, daq.records) == ("table", 50_000, 5)
    blocks = [r.batch for r in _by_stream(records)[DAQ_STREAM] if r.batch is not None]
    indices = np.concatenate([b.column("sample_index").to_numpy() for b in blocks])
    np.testing.assert_array_equal(indices, np.arange(50_000))
    assert daq.bytes == sum(b.nbytes for b in blocks)
    rows = [r.batch for r in _by_stream(records)[POWER_METER_STREAM] if r.batch is not None]
    times = np.concatenate([b.column("timestamp_ns").cast("int64").to_numpy() for b in rows])
    assert set(np.diff(times).tolist()) == {100_000}  # 10 kS/s, continuous across batches


def test_an_anonymous_reader_reads_the_same(ring_path: Path):
    reader = RingReader.open(ring_path)  # before the run: it sees the ring from its start
    with reader:
        result = run_instruments(
            ring_path, camera_shape=SHAPE, duration=0.3, paced=False, daq=False, log_seqs=True
        )
        records = _read_all(reader)
    assert set(result.streams) == {CAMERA_STREAM, POWER_METER_STREAM}
    assert result.records == len(records) == 30 + 3
    _check_against_ring(result, records)


def test_frames_cap_the_camera_and_duration_bounds_it(ring_path: Path):
    capped = run_instruments(ring_path, camera_shape=SHAPE, frames=7, duration=1.0,
                             power_meter=False, daq=False, paced=False)  # fmt: skip
    assert capped.streams[CAMERA_STREAM].produced == 7
    bounded = run_instruments(ring_path, camera_shape=SHAPE, frames=1000, duration=0.2,
                              camera_fps=50, power_meter=False, daq=False, paced=False)  # fmt: skip
    assert bounded.streams[CAMERA_STREAM].produced == 10  # 0.2 s at 50 fps
    assert list(bounded.streams) == [CAMERA_STREAM]


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    fps=st.floats(1.0, 2000.0),
    duration=st.floats(0.0, 0.4),
    frames=st.none() | st.integers(0, 300),
    instruments=st.sets(st.sampled_from(["camera", "power_meter", "daq"]), min_size=1),
)
def test_every_schedule_writes_its_counts_in_time_order(
    shm_path: Path, fps: float, duration: float, frames: int | None, instruments: set[str]
):
    """Whatever the rate, duration and frame cap: the camera writes ``min(frames,
    round(duration * fps))`` frames spaced by its period, each scalar instrument
    ``round(duration / 0.1)`` blocks, and the records reach the ring in the order of
    their own timestamps (one timeline for all instruments)."""
    path = shm_path.with_name(f"{shm_path.name}_{uuid.uuid4().hex[:6]}")
    RingBuffer.create(path, capacity_bytes=8 << 20).close()
    try:
        with RingReader.open(path, consumer="check") as reader:
            result = run_instruments(
                path, camera="camera" in instruments, power_meter="power_meter" in instruments,
                daq="daq" in instruments, camera_shape=(8, 8), camera_fps=fps, frames=frames,
                duration=duration, paced=False, log_seqs=True,
            )  # fmt: skip
            records = _read_all(reader)
    finally:
        path.unlink()
    _check_against_ring(result, records)
    ticks = round(duration / 0.1)
    planned = round(duration * fps)
    expected = {
        CAMERA_STREAM: planned if frames is None else min(frames, planned),
        POWER_METER_STREAM: 1_000 * ticks,
        DAQ_STREAM: 10_000 * ticks,
    }  # fmt: skip
    names = {"camera": CAMERA_STREAM, "power_meter": POWER_METER_STREAM, "daq": DAQ_STREAM}
    assert {names[i] for i in instruments} == set(result.streams)
    for name, count in result.streams.items():
        assert count.produced == expected[name], name
    stamps = [r.timestamp_ns for r in records]
    assert stamps == sorted(stamps)
    camera = [r.timestamp_ns for r in records if r.stream == CAMERA_STREAM]
    assert set(np.diff(camera).tolist()) <= {round(1e9 / fps)}


def test_block_mode_with_no_consumer_draining_counts_every_drop(shm_path: Path):
    """A registered consumer that never reads and a ring too small for the run: once it
    is full each write waits ``block_timeout`` and is refused; the acquisition counts it and
    goes on, and what was written is exactly what the consumer reads."""
    with RingBuffer.create(shm_path, capacity_bytes=1 << 20, overflow="block") as ring:
        ring.close()
        try:
            with RingReader.open(shm_path, consumer="stalled") as reader:
                result = run_instruments(
                    shm_path, camera_shape=(64, 64), duration=1.0, paced=False,
                    block_timeout=0.001, log_seqs=True,
                )  # fmt: skip
                records = _read_all(reader)
                ring_dropped = reader.stats().dropped
        finally:
            shm_path.unlink()
    assert result.dropped > 0
    _check_against_ring(result, records)
    writes = {CAMERA_STREAM: 100, POWER_METER_STREAM: 10, DAQ_STREAM: 10}
    produced = {CAMERA_STREAM: 100, POWER_METER_STREAM: 10_000, DAQ_STREAM: 100_000}
    for name, count in result.streams.items():
        assert count.records + count.dropped_records == writes[name], name
        assert count.produced == produced[name], name
        assert count.produced == count.written + count.dropped, name
        assert len(count.seqs) == count.records
    assert ring_dropped == sum(c.dropped_records for c in result.streams.values())
    assert (
        json.loads(result.to_json())["streams"][CAMERA_STREAM]["dropped"]
        == result.streams[CAMERA_STREAM].dropped
    )


def test_a_ring_too_small_for_a_record_is_a_config_error(shm_path: Path):
    """A frame larger than the whole ring is not a slow consumer: refused, named."""
    RingBuffer.create(shm_path, capacity_bytes=64 << 10, overflow="block").close()
    try:
        with pytest.raises(ConfigError, match="too small for camera_1's records"):
            run_instruments(shm_path, camera_shape=(256, 256), power_meter=False, daq=False)
    finally:
        shm_path.unlink()


def test_stop_event_and_progress_end_a_paced_run_early(ring_path: Path):
    """``on_progress`` is called while the run goes on; a stop set from it ends the run
    at the next event, long before its 60 s, and the counts stay exact."""
    stop = threading.Event()
    seen: list[AcquisitionResult] = []

    def progress(result: AcquisitionResult) -> None:
        seen.append(result)
        stop.set()

    with RingReader.open(ring_path, consumer="check") as reader:
        result = run_instruments(ring_path, camera_shape=SHAPE, duration=60.0, stop=stop,
                                 on_progress=progress, log_seqs=True)  # fmt: skip
        records = _read_all(reader)
    assert 0 < result.streams[CAMERA_STREAM].produced < 6000
    assert seen[-1] == result  # the last call has the final counts
    assert len(seen) >= 2
    _check_against_ring(result, records)


def test_stop_on_signals_ends_a_run_on_sigterm_and_restores_the_handler(ring_path: Path):
    """The CLI's way: SIGTERM (here sent by the run itself, at its first progress report)
    sets the stop event; the run ends with exact counts; the old handler is back."""
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert signal.getsignal(signal.SIGTERM) is not before

        def progress(result: AcquisitionResult) -> None:
            if not stop.is_set():
                os.kill(os.getpid(), signal.SIGTERM)
                assert stop.wait(60)  # set by the watcher thread, not in the handler

        with RingReader.open(ring_path, consumer="check") as reader:
            result = run_instruments(ring_path, camera_shape=SHAPE, duration=60.0, stop=stop,
                                     on_progress=progress, log_seqs=True)  # fmt: skip
            records = _read_all(reader)
    assert signal.getsignal(signal.SIGTERM) is before
    assert 0 < result.streams[CAMERA_STREAM].produced < 6000
    _check_against_ring(result, records)


def test_paced_run_ends_with_the_scheduled_counts(ring_path: Path):
    result = run_instruments(ring_path, camera_shape=SHAPE, camera_fps=200, duration=0.2)
    assert [c.produced for c in result.streams.values()] == [40, 2_000, 20_000]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"camera_fps": 0}, "camera_fps must be a finite number > 0"),
        ({"camera_fps": -5.0}, "camera_fps"),
        ({"camera_fps": math.nan}, "camera_fps"),
        ({"camera_fps": True}, "camera_fps"),
        ({"duration": -1}, "duration"),
        ({"duration": math.inf}, "duration"),
        ({"frames": -1}, "frames must be an integer >= 0"),
        ({"frames": 2.5}, "frames"),
        ({"camera_shape": (4, 4)}, "camera_shape"),
        ({"camera_shape": (10,)}, "camera_shape"),
        ({"camera": "yes"}, "camera must be True or False"),
        ({"camera": False, "power_meter": False, "daq": False}, "no instrument to run"),
        ({"seed": -1}, "seed"),
        ({"block_timeout": -0.1}, "block_timeout"),
    ],
)
def test_bad_arguments_are_config_errors_before_anything_starts(
    shm_path: Path, arguments: dict[str, Any], message: str
):
    with pytest.raises(ConfigError, match=message):
        run_instruments(shm_path, **arguments)  # no ring there: the arguments come first
    with pytest.raises(ConfigError, match=message):
        InstrumentProcess(shm_path, **arguments)


def test_result_json_round_trip_and_table():
    count = InstrumentCount(CAMERA_STREAM, "frames", 10, 8, 2, 2, 1000, seqs=(0, 1, 5))
    result = AcquisitionResult({CAMERA_STREAM: count}, 1.5)
    assert AcquisitionResult.from_json(result.to_json()) == result
    assert (result.dropped, result.records, result.bytes, count.written) == (2, 8, 1000, 8)
    table = format_counts(result)
    assert "camera_1" in table
    assert "2 frames/rows dropped" in table
    for bad in ("", "[]", '{"streams": {"x": {"stream": "y"}}, "seconds": 1}', "{"):
        with pytest.raises(ConfigError, match="not an acquisition result"):
            AcquisitionResult.from_json(bad)


def test_an_instrument_run_loads_no_writer_no_config_schema_and_no_pandas(ring_path: Path):
    """An instrument process stays light: no format library, no pydantic, and no pandas
    (which pyarrow's ``pa.array`` would import on first use, ~0.4 s)."""
    code = (
        "import sys, json\n"
        "from daq_storage.acquisition import run_instruments\n"
        f"run_instruments({str(ring_path)!r}, camera_shape=(8, 8), duration=0.2, paced=False)\n"
        "print(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout  # fmt: skip
    loaded = set(json.loads(out))
    heavy = {"pydantic", "h5py", "zarr", "tifffile", "hdf5plugin", "polars", "pandas"}
    assert loaded & heavy == set()
    assert "daq_storage" in loaded


# --------------------------------------------------------------------- in a process
def test_process_start_wait_and_progress(ring_path: Path):
    """``start()`` returns once the child is the ring's writer (a second writer is
    refused then); ``wait()`` returns what a reader reads; ``progress()`` ends equal."""
    with RingReader.open(ring_path, consumer="check") as reader:
        process = InstrumentProcess(ring_path, camera_shape=SHAPE, duration=0.3, paced=False,
                                    log_seqs=True)  # fmt: skip
        assert (process.pid, process.running) == (None, False)
        process.start()
        assert isinstance(process.pid, int)
        result = process.wait(timeout=120)
        records = _read_all(reader)
    assert not process.running
    _check_against_ring(result, records)
    assert result.records == 30 + 3 + 3
    assert process.wait() is result  # once ended, at once
    progress = process.progress()
    assert [(c.produced, c.records) for c in progress.streams.values()] == [
        (c.produced, c.records) for c in result.streams.values()
    ]


def test_process_is_the_writer_once_started_and_stop_returns_partial_counts(ring_path: Path):
    with RingReader.open(ring_path, consumer="check") as reader:
        process = InstrumentProcess(ring_path, camera_shape=SHAPE, duration=60.0, log_seqs=True)
        process.start()
        try:
            with pytest.raises(RingBusy):  # attached as the ring's one writer already
                RingBuffer.open(ring_path)
            first = _read_all(reader, timeout=60)  # the run is under way
            assert first
            live = process.progress()
            assert set(live.streams) == {CAMERA_STREAM, POWER_METER_STREAM, DAQ_STREAM}
        finally:
            result = process.stop(timeout=120)
        records = first + _read_all(reader)
    assert not process.running
    assert 0 < result.streams[CAMERA_STREAM].produced < 6000
    assert all(c.dropped == 0 for c in result.streams.values())
    for name, count in live.streams.items():  # read while it ran: at most the final count
        assert count.produced <= result.streams[name].produced, name
    _check_against_ring(result, records)


def test_process_stops_gracefully_on_sigterm(ring_path: Path):
    with RingReader.open(ring_path, consumer="check") as reader:
        process = InstrumentProcess(ring_path, camera_shape=SHAPE, duration=60.0)
        process.start()
        first = _read_all(reader, timeout=60)
        assert process.pid is not None
        os.kill(process.pid, signal.SIGTERM)
        result = process.wait(timeout=120)
        records = first + _read_all(reader)
    assert 0 < result.streams[CAMERA_STREAM].produced < 6000
    _check_against_ring(result, records)


def test_a_missing_ring_raises_ring_not_found_in_the_parent(shm_path: Path):
    process = InstrumentProcess(shm_path)
    with pytest.raises(RingNotFound, match="no ring buffer at"):
        process.start()
    assert not process.running
    with pytest.raises(RingNotFound):  # and again on wait: the run failed
        process.wait()


def test_a_ring_with_a_writer_raises_ring_busy_in_the_parent(shm_path: Path):
    with RingBuffer.create(shm_path, capacity_bytes=1 << 20):
        try:
            with pytest.raises(RingBusy):
                InstrumentProcess(shm_path, camera_shape=SHAPE).start()
        finally:
            shm_path.unlink()


def test_an_error_during_the_run_is_raised_by_wait_with_its_type(shm_path: Path):
    """Attached fine, then the first frame can never fit the ring: ``wait()`` raises the
    child's ConfigError, and keeps raising it."""
    RingBuffer.create(shm_path, capacity_bytes=64 << 10).close()
    try:
        process = InstrumentProcess(shm_path, camera_shape=(256, 256), power_meter=False,
                                    daq=False)  # fmt: skip
        process.start()
        with pytest.raises(ConfigError, match="too small for camera_1's records") as raised:
            process.wait(timeout=120)
        assert "raised in the acquisition process" in "".join(raised.value.__notes__)
        with pytest.raises(ConfigError):
            process.stop()
        assert not process.running
    finally:
        shm_path.unlink()


def test_a_killed_process_is_reported_with_its_exit_code(ring_path: Path):
    with RingReader.open(ring_path, consumer="check") as reader:
        process = InstrumentProcess(ring_path, camera_shape=SHAPE, duration=60.0)
        process.start()
        assert reader.read_many(1, timeout=60)
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(DaqStorageError, match=r"exit code -9 \(killed by SIGKILL\)"):
            process.wait(timeout=120)
    assert not process.running


def test_process_misuse_is_refused(ring_path: Path):
    process = InstrumentProcess(ring_path, camera_shape=SHAPE, duration=0.1, paced=False)
    with pytest.raises(DaqStorageError, match="not started"):
        process.wait()
    with process, pytest.raises(DaqStorageError, match="already started"):
        process.start()
    # Leaving the block stopped it (early, or after its 10 frames): the result stays.
    assert process.wait().streams[CAMERA_STREAM].produced <= 10
    assert not process.running
