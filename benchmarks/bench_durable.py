"""What ``flush(durable=True)`` costs against ``flush()``, per format, on the same data.

A recorder flushes on its own cadence; durable flushes also fsync what they made visible
(files, and the directories whose entries changed). Each format writes the same data
twice, alternating, best of ``DAQ_BENCH_REPEATS`` (3): once with ``flush()`` and once
with ``flush(durable=True)`` at the same points, to a temporary directory on the real
disk. Tables: ``DAQ_BENCH_DURABLE_BATCHES`` (100) power-meter batches of 10,000 rows,
a flush after every batch. Frames: ``DAQ_BENCH_DURABLE_FRAMES`` (320) 640x480 uint16
frames, 16 per call, a flush every 4 calls (64 frames). The ratio is the plain run's time
over the durable run's: the share of its speed a writer keeps when every flush is durable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import Report, scratch_directory
from benchmarks._writers import (
    BATCH_ROWS,
    FRAMES_PER_CALL,
    REPEATS,
    frames_run,
    has_durable_flush,
    interleaved,
    tables_run,
)
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter

BATCHES = int(os.environ.get("DAQ_BENCH_DURABLE_BATCHES", "100"))
FRAMES = int(os.environ.get("DAQ_BENCH_DURABLE_FRAMES", "320"))
CALLS_PER_FLUSH = 4

TABLE_FORMATS: dict[str, dict[str, Any]] = {
    "hdf5": {}, "zarr": {}, "parquet": {}, "arrow": {}, "csv": {},
}  # fmt: skip
FRAME_FORMATS: dict[str, dict[str, Any]] = {
    "hdf5": {"compression": "none"},
    "hdf5 blosc-lz4": {"compression": "blosc-lz4"},
    "zarr": {"shard_frames": FRAMES_PER_CALL},
    "tiff": {"bigtiff": True},
    "arrow": {},
    "parquet": {},
}


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _row(report: Report, label: str, plain: float, durable: float, flushes: int,
         amount: float, unit: str) -> None:  # fmt: skip
    added = (durable - plain) / flushes * 1e3
    note = (f"{added:+.2f} ms per durable flush ({flushes} flushes; "
            f"flush() alone {_figure(amount / plain)} {unit})")  # fmt: skip
    report.add(label, amount / durable, unit, reference="same, flush()", ratio=plain / durable,
               note=note)  # fmt: skip


def bench_tables(report: Report, tmp: Path) -> None:
    meter = SimulatedPowerMeter(seed=0, start_ns=0)
    batches = [meter.read_batch(BATCH_ROWS) for _ in range(BATCHES)]
    rows = BATCHES * BATCH_ROWS
    for name, options in TABLE_FORMATS.items():
        if not has_durable_flush(name):
            report.add(f"{name} tables", 0, "", note="flush has no durable option yet")
            continue
        timings = interleaved({
            "plain": tables_run(name, batches, flush_every=1, **options),
            "durable": tables_run(name, batches, flush_every=1, durable=True, **options),
        }, tmp)  # fmt: skip
        _row(report, f"{name} tables, a flush per batch", timings["plain"].seconds,
             timings["durable"].seconds, BATCHES, rows / 1e6, "M rows/s")  # fmt: skip


def bench_frames(report: Report, tmp: Path) -> None:
    frames = SimulatedCamera(seed=0, start_ns=0).frames(FRAMES).frames
    stamps = np.arange(FRAMES, dtype=np.uint64)
    calls = [frames[i : i + FRAMES_PER_CALL] for i in range(0, FRAMES, FRAMES_PER_CALL)]
    flushes = len(calls) // CALLS_PER_FLUSH
    for label, options in FRAME_FORMATS.items():
        name = label.split()[0]
        if not has_durable_flush(name):
            report.add(f"{label} frames", 0, "", note="flush has no durable option yet")
            continue
        timings = interleaved({
            "plain": frames_run(name, calls, stamps, flush_every=CALLS_PER_FLUSH, **options),
            "durable": frames_run(name, calls, stamps, flush_every=CALLS_PER_FLUSH,
                                  durable=True, **options),
        }, tmp)  # fmt: skip
        _row(report, f"{label} frames, a flush per {CALLS_PER_FLUSH * FRAMES_PER_CALL} frames",
             timings["plain"].seconds, timings["durable"].seconds, flushes,
             frames.nbytes / 1e6, "MB/s")  # fmt: skip


def main() -> None:
    report = Report(
        f"durable flushes: flush(durable=True) against flush() at the same points, best of "
        f"{REPEATS} interleaved runs; ratio = flush() time / durable time"
    )
    with scratch_directory() as tmp:
        bench_tables(report, tmp)
        bench_frames(report, tmp)
    report.print()


if __name__ == "__main__":
    main()
