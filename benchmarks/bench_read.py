"""Reading back: :func:`daq_storage.read.open_run` against each format's own library
reading the same data, in the same run.

``DAQ_BENCH_READ_ROWS`` (10 M) rows of the seeds' power-meter schema (timestamp_ns,
channel, value, unit) and ``DAQ_BENCH_READ_FRAMES`` (2,000) 640x480 uint16 frames are
written once by each writer (default options) to a temporary directory on the real disk,
then read back whole: by open_run (open, list, read: ``run.table(stream)`` as a
``pyarrow.Table``, ``numpy.asarray(run.frames(stream))``), and by the library a
scientist would call (h5py, pyarrow.ipc, pyarrow.parquet / polars, pyarrow.csv, zarr,
tifffile) producing the same arrays. The files are in the page cache (just written), for
both. Each pair runs alternately, at least ``DAQ_BENCH_REPEATS`` (5) rounds and until
each side has run ``DAQ_BENCH_READ_MIN_SECONDS`` (2 s) in all; the ratio is the library's
best time over open_run's (1.0: as fast), the note the median round's ratio (how far a
single round spreads on a shared machine). One-frame rows show what a lazy frame array
costs to index.
"""

from __future__ import annotations

import functools
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import tifffile
import zarr

from benchmarks._harness import Report, scratch_directory
from daq_storage.read import open_run
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter
from daq_storage.writers import open_writer

TARGETS = {"hdf5": "run.h5", "arrow": "run_arrow", "parquet": "run_parquet",
           "csv": "run_csv", "zarr": "run.zarr", "tiff": "run_tiff"}  # fmt: skip


@dataclass
class Sizes:
    rows: int = int(os.environ.get("DAQ_BENCH_READ_ROWS", "10000000"))
    frames: int = int(os.environ.get("DAQ_BENCH_READ_FRAMES", "2000"))
    repeats: int = int(os.environ.get("DAQ_BENCH_REPEATS", "5"))
    #: Each side of a pair runs at least this long in all (more rounds for fast reads).
    min_seconds: float = float(os.environ.get("DAQ_BENCH_READ_MIN_SECONDS", "2"))
    batch_rows: int = 100_000
    frames_per_call: int = 50
    shape: tuple[int, int] = (480, 640)
    table_formats: list[str] = field(default_factory=lambda: ["hdf5", "arrow", "parquet", "csv",
                                                             "zarr"])  # fmt: skip
    frame_formats: list[str] = field(default_factory=lambda: ["hdf5", "arrow", "parquet",
                                                             "zarr", "tiff"])  # fmt: skip


def _write(tmp: Path, sizes: Sizes) -> dict[str, Path]:
    meter = SimulatedPowerMeter(["pm_a", "pm_b"], seed=0, start_ns=1_700_000_000_000_000_000)
    batches = [meter.read_batch(min(sizes.batch_rows, sizes.rows - done) // 2)
               for done in range(0, sizes.rows, sizes.batch_rows)]  # fmt: skip
    camera = SimulatedCamera(sizes.shape, seed=0, start_ns=1_700_000_000_000_000_000)
    paths = {}
    for name, target in TARGETS.items():
        path = paths[name] = tmp / target
        with open_writer(name, path) as writer:
            if name in sizes.table_formats:
                for batch in batches:
                    writer.write_batch("power", batch)
            if name in sizes.frame_formats:
                for start in range(0, sizes.frames, sizes.frames_per_call):
                    block = camera.frames(min(sizes.frames_per_call, sizes.frames - start))
                    writer.write_frames("camera", block.frames, timestamps_ns=block.timestamps_ns,
                                        frame_numbers=block.frame_numbers)  # fmt: skip
    return paths


@dataclass
class Timed:
    """Wall times of open_run and of the library, taken alternately."""

    ours: list[float]
    theirs: list[float]

    @property
    def best(self) -> tuple[float, float]:
        return min(self.ours), min(self.theirs)

    @property
    def ratio(self) -> float:
        """The library's best time over open_run's (1.0: as fast)."""
        return min(self.theirs) / min(self.ours)

    @property
    def note(self) -> str:
        """How far single rounds spread: the median round's ratio, and the rounds."""
        rounds = [t / o for o, t in zip(self.ours, self.theirs, strict=True)]
        return f"median {statistics.median(rounds):.2f}x, {len(rounds)} rounds"


def _pair(ours: Callable[[], Any], library: Callable[[], Any], repeats: int,
          min_seconds: float = 0.0) -> Timed:  # fmt: skip
    """Each run alternately (the library first every other round), at least ``repeats``
    rounds and until each side has run ``min_seconds`` in all (a read of a few ms is
    timed over many rounds; the best is what the machine allows, the median how it
    spread), at most 25 rounds."""
    timed = Timed([], [])
    for round_ in range(25):
        if round_ >= repeats and min(sum(timed.ours), sum(timed.theirs)) >= min_seconds:
            break
        order = [(timed.ours, ours), (timed.theirs, library)]
        for times, run in order if round_ % 2 == 0 else reversed(order):
            gc.collect()
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
    return timed


# --------------------------------------------------------------------------- the libraries
def _h5py_table(path: Path) -> dict[str, Any]:
    """Every column of the stream as an h5py user gets its values: datasets read whole,
    text decoded (dictionary-coded text: its categories taken by code, with numpy)."""
    columns = {}
    with h5py.File(path, "r") as f:
        group = f["power"]
        for name, dataset in group.items():
            if name.endswith((".valid", ".categories")):
                continue
            if dataset.attrs.get("encoding") == "dictionary":
                categories = group[dataset.attrs["categories"]].asstr()[()]
                columns[name] = categories[dataset[()]]
            elif h5py.check_string_dtype(dataset.dtype) is not None:
                columns[name] = dataset.asstr()[()]
            else:
                columns[name] = dataset[()]
    return columns


def _zarr_table(path: Path) -> dict[str, Any]:
    group = zarr.open_group(path / "power", mode="r")
    return {name: array[:] for name, array in group.arrays()}


def _frames_of(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column("frame").combine_chunks().to_numpy_ndarray())


TABLE_LIBRARIES: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "hdf5": ("h5py, every dataset", _h5py_table),
    "arrow": ("pyarrow.ipc (mapped)",
              lambda p: pa.ipc.open_stream(pa.memory_map(str(p / "power.arrows"))).read_all()),
    "parquet": ("pyarrow.parquet", lambda p: pq.read_table(p / "power.parquet")),
    "csv": ("pyarrow.csv", lambda p: pacsv.read_csv(p / "power.csv")),
    "zarr": ("zarr, every array", _zarr_table),
}  # fmt: skip

FRAME_LIBRARIES: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "hdf5": ("h5py", lambda p: h5py.File(p, "r")["camera/frames"][()]),
    "arrow": ("pyarrow.ipc (mapped)", lambda p: _frames_of(
        pa.ipc.open_stream(pa.memory_map(str(p / "camera.arrows"))).read_all())),
    "parquet": ("pyarrow.parquet", lambda p: _frames_of(
        pq.read_table(p / "camera.parquet", columns=["frame"]))),
    "zarr": ("zarr", lambda p: zarr.open_array(p / "camera" / "frames", mode="r")[:]),
    "tiff": ("tifffile", lambda p: tifffile.imread(p / "camera.tif")),
}  # fmt: skip

ONE_FRAME: dict[str, tuple[str, Callable[[Path, int], Any]]] = {
    "hdf5": ("h5py", lambda p, i: h5py.File(p, "r")["camera/frames"][i]),
    "zarr": ("zarr", lambda p, i: zarr.open_array(p / "camera" / "frames", mode="r")[i]),
    "tiff": ("tifffile", lambda p, i: tifffile.imread(p / "camera.tif", key=i)),
}  # fmt: skip


def _our_table(path: Path) -> pa.Table:
    with open_run(path) as run:
        return run.table("power")


def _our_frames(path: Path) -> np.ndarray:
    with open_run(path) as run:
        return np.asarray(run.frames("camera"))


def _our_frame(path: Path, index: int) -> np.ndarray:
    with open_run(path) as run:
        return run.frames("camera")[index]


def bench_tables(report: Report, paths: dict[str, Path], sizes: Sizes) -> None:
    nbytes = None
    for name in sizes.table_formats:
        path = paths[name]
        table = _our_table(path)
        assert table.num_rows == sizes.rows, (name, table.num_rows)
        nbytes = nbytes or table.nbytes
        label, library = TABLE_LIBRARIES[name]
        timed = _pair(functools.partial(_our_table, path), functools.partial(library, path),
                      sizes.repeats, sizes.min_seconds)  # fmt: skip
        report.add(f"{name}: open_run(...).table", nbytes / timed.best[0] / 1e6, "MB/s",
                   reference=label, ratio=timed.ratio, note=timed.note)  # fmt: skip
    path = paths["parquet"]
    if "parquet" in sizes.table_formats:

        def our_polars() -> Any:
            with open_run(path) as run:
                return run.polars("power")

        timed = _pair(our_polars, lambda: pl.read_parquet(path / "power.parquet"),
                      sizes.repeats, sizes.min_seconds)  # fmt: skip
        report.add("parquet: open_run(...).polars", (nbytes or 0) / timed.best[0] / 1e6, "MB/s",
                   reference="polars.read_parquet", ratio=timed.ratio,
                   note=timed.note)  # fmt: skip


def bench_frames(report: Report, paths: dict[str, Path], sizes: Sizes) -> None:
    nbytes = sizes.frames * sizes.shape[0] * sizes.shape[1] * 2
    for name in sizes.frame_formats:
        path = paths[name]
        label, library = FRAME_LIBRARIES[name]
        got = _our_frames(path)
        np.testing.assert_array_equal(got, library(path))
        del got
        timed = _pair(functools.partial(_our_frames, path), functools.partial(library, path),
                      sizes.repeats, sizes.min_seconds)  # fmt: skip
        report.add(f"{name}: asarray(open_run(...).frames)", nbytes / timed.best[0] / 1e6,
                   "MB/s", reference=label, ratio=timed.ratio, note=timed.note)  # fmt: skip
    middle = sizes.frames // 2
    for name, (label, one) in ONE_FRAME.items():
        if name not in sizes.frame_formats:
            continue
        path = paths[name]
        timed = _pair(functools.partial(_our_frame, path, middle),
                      functools.partial(one, path, middle), sizes.repeats * 3,
                      sizes.min_seconds)  # fmt: skip
        report.add(f"{name}: one frame by index, open_run(...).frames", timed.best[0] * 1e3,
                   "ms", reference=label, ratio=timed.ratio,
                   note=f"open, list, read one; {timed.note}")  # fmt: skip


def main(sizes: Sizes | None = None) -> None:
    sizes = sizes or Sizes()
    with scratch_directory() as tmp:
        started = time.perf_counter()
        paths = _write(tmp, sizes)
        written = time.perf_counter() - started
        tables = Report(
            f"read: {sizes.rows / 1e6:g} M power-meter rows, whole table, best of >= "
            f"{sizes.repeats} alternating runs (written in {written:.0f} s)"
        )
        bench_tables(tables, paths, sizes)
        tables.print()
        frames = Report(f"read: {sizes.frames:,} frames {sizes.shape[1]}x{sizes.shape[0]} "
                        f"uint16, best of >= {sizes.repeats} alternating runs")  # fmt: skip
        bench_frames(frames, paths, sizes)
        frames.print()


if __name__ == "__main__":
    main()
    sys.exit(0)
