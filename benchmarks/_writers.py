"""What the writer benchmarks share: sizes, alternating timed runs, the raw-write limit,
and our writers driven the way a recorder drives them (a flush on a cadence)."""

from __future__ import annotations

import inspect
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from daq_storage.writers import get_writer_class, open_writer

# Sizes: modest by default (the machine is shared); DAQ_BENCH_* make them larger.
FRAMES = int(os.environ.get("DAQ_BENCH_FRAMES", "800"))
ROWS = int(os.environ.get("DAQ_BENCH_ROWS", "3000000"))
REPEATS = int(os.environ.get("DAQ_BENCH_REPEATS", "3"))
BATCH_ROWS = 10_000
FRAMES_PER_CALL = 16  # what a recorder hands a writer per drain
SHAPE = (480, 640)

Run = Callable[[Path], None]


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


@dataclass
class Timing:
    seconds: float  # best run
    size: int  # bytes on disk after the run


def interleaved(runs: dict[str, Run], tmp: Path, repeats: int = REPEATS) -> dict[str, Timing]:
    """Each run (including close) ``repeats`` times, alternating, in reversed order every
    other round (whichever writes first after the previous round's files were deleted
    pays more for fresh page-cache pages); best time of each."""
    best = {name: Timing(float("inf"), 0) for name in runs}
    for round_ in range(repeats):
        order = list(runs.items())
        for name, run in order if round_ % 2 == 0 else reversed(order):
            path = tmp / f"target_{name.replace(' ', '_')}"
            started = time.perf_counter()
            run(path)
            seconds = time.perf_counter() - started
            best[name] = Timing(min(best[name].seconds, seconds), size_of(path))
            remove(path)
    return best


def raw_write(data: Sequence[bytes] | Sequence[np.ndarray]) -> Run:
    """The disk limit: the same bytes with plain (unbuffered) write() system calls."""
    views = [c.reshape(-1).view(np.uint8).data if isinstance(c, np.ndarray) else memoryview(c)
             for c in data]  # fmt: skip

    def run(path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for view in views:
                done = 0
                while done < len(view):
                    done += os.write(fd, view[done:])
        finally:
            os.close(fd)

    return run


def has_durable_flush(name: str) -> bool:
    """Whether the writer's ``flush`` takes ``durable=`` (the contract's; a format without
    it is reported as such, not measured)."""
    return "durable" in inspect.signature(get_writer_class(name).flush).parameters


def frames_run(
    name: str,
    calls: Sequence[np.ndarray],
    stamps: np.ndarray,
    *,
    flush_every: int = 0,
    durable: bool = False,
    durable_at_close: bool = False,
    **options: Any,
) -> Run:
    """Our writer taking ``calls`` (blocks of frames) in turn; ``flush(durable=)`` after
    every ``flush_every`` calls (0: none), or one durable flush before close."""

    def run(path: Path) -> None:
        with open_writer(name, path, **options) as writer:
            first = 0
            for i, chunk in enumerate(calls, 1):
                writer.write_frames("camera_1", chunk,
                                    timestamps_ns=stamps[first : first + len(chunk)])  # fmt: skip
                first += len(chunk)
                if flush_every and i % flush_every == 0:
                    _flush(writer, durable)
            if durable_at_close:
                _flush(writer, True)

    return run


def tables_run(
    name: str,
    batches: Sequence[pa.RecordBatch],
    *,
    flush_every: int = 0,
    durable: bool = False,
    **options: Any,
) -> Run:
    """Our writer taking ``batches`` in turn; ``flush(durable=)`` after every
    ``flush_every`` batches (0: none)."""

    def run(path: Path) -> None:
        with open_writer(name, path, **options) as writer:
            for i, batch in enumerate(batches, 1):
                writer.write_batch("power_meter_01", batch)
                if flush_every and i % flush_every == 0:
                    _flush(writer, durable)

    return run


def _flush(writer: Any, durable: bool) -> None:
    if durable:
        writer.flush(durable=True)
    else:
        writer.flush()
