"""kill -9 of the Recorder's process at random moments, repeated: whatever the moment
(between flushes, inside one, while it reads or writes), every file it left opens with
its format's reader (after ``daq-storage repair`` where the format needs one) and holds
at least everything the last completed flush made visible, as the stats file says, and
nothing that was not written, in order.

One Recorder writes all six formats at once (tables to five, frames to five), so each
kill is a kill of every format: the suite runs ``_KILLS`` kills, ``-m stress`` twenty.
Each kill gets a fresh ring of its own (cheap: the producer is this process) and an
output directory of its own; only the Recorder process is started again.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from daq_storage.recorder import Recorder, RecorderStats, read_stats
from daq_storage.repair import check_files
from tests.recorder._helpers import (
    ALL_FORMATS,
    FRAME_FORMATS,
    TABLE_FORMATS,
    Producer,
    check_frames,
    check_rows,
    format_outputs,
    read_frames,
    read_rows,
    ring_at,
    wait_for_stats,
)

_KILLS = 6  # per format in the regular suite (each kill kills all six formats)


@dataclass(frozen=True)
class KilledRun:
    """What one killed Recorder left: its last stats file, its outputs, the producer."""

    output: Path
    last: RecorderStats  # the stats file as the killed process left it
    producer: Producer
    flushes_seen: int  # flushes the test waited for before the kill
    stopped: RecorderStats  # what stop() said about the dead process
    rotating: bool  # rotate_seconds tiny: a new file after every write


def _caught_up(records: int, flushes: int = 1) -> Callable[[RecorderStats], bool]:
    return lambda stats: stats.records == records and stats.flushes >= flushes


def _killed_run(shm_path: Path, output: Path, rng: random.Random) -> KilledRun:
    """A Recorder (process mode) of every format, fed by this process; SIGKILLed after
    ``k`` flushes and ``extra`` more groups written without waiting for it. Every other
    run rotates after each write (``rotate_seconds`` tiny), so kills land in rotations
    too: a file closed, the next name claimed, a new writer starting."""
    flushes, extra = rng.randint(1, 4), rng.randint(0, 8)
    rotate = rng.random() < 0.5
    with ring_at(shm_path, capacity_bytes=8 << 20, overflow="discard_oldest") as ring:
        recorder = Recorder(ring.path, formats=ALL_FORMATS, output_dir=output,
                            flush_interval_s=0, frames_per_write=4, batch_rows=100,
                            mode="process", stop_timeout_s=30,
                            rotate_seconds=1e-6 if rotate else None)  # fmt: skip
        producer = Producer(ring, rows_per_batch=50)
        recorder.start()
        try:
            pid = recorder.pid
            assert pid is not None
            for k in range(flushes):  # flush_interval_s=0: a flush after each read
                producer.write_group(frames=rng.randint(4, 12), batches=rng.randint(2, 4))
                wait_for_stats(ring.path, "recorder", _caught_up(producer.records, k + 1))
            for _ in range(extra):  # the kill lands wherever the Recorder is with these
                producer.write_group(frames=rng.randint(1, 9), batches=rng.randint(1, 3))
            os.kill(pid, signal.SIGKILL)
        finally:
            stopped = recorder.stop(timeout=30)  # never raises: the stats say what happened
        last = read_stats(ring.path, "recorder")
    return KilledRun(output, last, producer, flushes, stopped, rotate)


def _check(run: KilledRun) -> None:
    """Every file opens; each format holds a prefix of what was written, at least what
    its last flush made visible."""
    where = f"{run.output.name}{' (rotating)' if run.rotating else ''}"
    assert run.stopped.state == "failed", run.stopped
    assert any("SIGKILL" in error for error in run.stopped.errors), run.stopped.errors
    assert not run.stopped.complete
    assert not any(p.suffix == ".recorder.json" for p in run.output.rglob("*"))
    bad = [c for c in check_files(run.output) if c.status not in ("ok", "repaired", "skipped")]
    assert not bad, (where, bad)
    assert run.last.flushes >= 1, run.last
    for name in ALL_FORMATS:
        fmt = run.last.formats[name]
        # the outputs the stats file lists, in order (a newer one, unlisted, holds
        # only what came after them)
        outputs = format_outputs(run.last, name)
        assert run.rotating or len(outputs) <= 1, fmt
        if name in FRAME_FORMATS:
            parts = [read_frames(name, output) for output in outputs]
            numbers = [int(n) for part in parts for n in part.frame_numbers]
            held = len(numbers)
            assert fmt.visible_frames <= held <= run.producer.frames, (where, name, fmt)
            start = 0
            for part in parts:
                indices = list(range(start, start + len(part)))
                check_frames(part, indices, f"{where} {name} frames")
                start += len(part)
        if name in TABLE_FORMATS:
            tables = [read_rows(name, output) for output in outputs]
            held = sum(t.num_rows for t in tables)
            assert fmt.visible_rows <= held <= run.producer.rows, (where, name, fmt)
            start = 0
            for table in tables:
                indices = list(range(start, start + table.num_rows))
                check_rows(table, indices, f"{where} {name} rows")
                start += table.num_rows


def _kills(shm_path: Path, tmp_path: Path, count: int, seed: str) -> list[KilledRun]:
    rng = random.Random(seed)
    runs = []
    for i in range(count):
        ring = shm_path.with_name(f"{shm_path.name}_{i}")
        runs.append(_killed_run(ring, tmp_path / f"run{i:02d}", rng))
    return runs


def _check_all(runs: list[KilledRun]) -> None:
    """Every run checked; the failures of all of them reported together."""
    failures = []
    for run in runs:
        try:
            _check(run)
        except AssertionError as exc:
            failures.append(f"{run.output.name}: {exc}")
    assert not failures, f"{len(failures)} of {len(runs)} killed runs:\n" + "\n".join(failures)


@pytest.mark.slow
def test_killed_recorders_leave_every_flushed_record_readable(shm_path: Path, tmp_path: Path):
    runs = _kills(shm_path, tmp_path, _KILLS, "suite")
    _check_all(runs)
    # the kills landed at different places: not always right after the waited flushes
    assert len({(r.flushes_seen, r.producer.records) for r in runs}) > 1


@pytest.mark.stress
@pytest.mark.timeout(900)
def test_twenty_killed_recorders_per_format(shm_path: Path, tmp_path: Path):
    _check_all(_kills(shm_path, tmp_path, 20, "stress"))


@pytest.mark.slow
def test_a_killed_recorder_never_blocks_a_block_mode_ring(shm_path: Path, tmp_path: Path):
    """Block mode waits for a live Recorder, never for a dead one: once the Recorder's
    process is SIGKILLed the producer writes four times the ring without a refusal,
    and the ring shows the dead consumer evicted."""
    with ring_at(shm_path, capacity_bytes=256 << 10, overflow="block", block_timeout=30) as ring:
        recorder = Recorder(ring.path, formats=["hdf5"], output_dir=tmp_path, mode="process")
        producer = Producer(ring)
        recorder.start()
        try:
            pid = recorder.pid
            assert pid is not None
            producer.write_group(frames=4, batches=2)
            wait_for_stats(ring.path, "recorder", _caught_up(producer.records))
            os.kill(pid, signal.SIGKILL)
        finally:
            recorder.stop(timeout=30)
        for _ in range(400):  # ~1 MB: the ring's capacity four times over
            producer.write_group(frames=2, batches=1)
        ring_stats = ring.stats()
    assert ring_stats.dropped == 0, ring_stats
    (slot,) = [r for r in ring_stats.readers if r.name == "recorder"]
    assert slot.state == "evicted", slot
    assert not slot.alive, slot
