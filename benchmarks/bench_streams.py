"""The multi-channel stream writer: a DAQ card's int16 blocks into HDF5 with lz4.

``DAQ_BENCH_STREAMS_SAMPLES`` (2 M) samples of 8 channels (``SimulatedDaqCard``, 100 kS/s:
20 s of the card) in 10,000-sample blocks (100 ms of it, as the simulated acquisition
delivers them), generated before the timing. Each run is timed from the writer's creation
until its file is closed, on the real disk (``DAQ_BENCH_DIR``).

Runs, alternated round by round (reversed order every other round), ``DAQ_BENCH_REPEATS``
(5) rounds; best and median of each, ratios = reference time / StreamWriter time:

- **StreamWriter**: ``StreamWriter(..., compression="lz4")`` (defaults otherwise:
  65,536-sample chunks, the HDF5 writer's byte shuffle before lz4), ``write(block)`` per
  block: ``/data/timestamps``, ``/data/sample_index`` and a dataset per channel, plus
  ``/metadata`` and ``/channels``.
- **h5py, same layout, per block**: plain h5py, the same layout (``/metadata`` and
  ``/channels`` with their attributes, flushed before the first sample as the StreamWriter
  does; ``/data`` datasets of the same dtypes, 65,536-sample chunks, shuffle +
  hdf5plugin's LZ4 filter, the channels' CF attributes), each block's columns, times and
  indices appended (resize, slice assignment) as it comes.
- **h5py, same layout, whole chunks**: the same, the blocks gathered into whole chunks
  before they are written (as the StreamWriter does): the reference tuned alike (target
  >= 0.9x).
- **our HDF5 writer alone**: ``Hdf5Writer.write_batch`` of the same samples already
  gathered into 65,536-row batches of the StreamWriter's schema (the same file options):
  what the StreamWriter adds on top of the writer it builds on.
- **memcpy**: each block copied into a preallocated array (numpy): the memory limit.

Every run is made once, untimed, before the rounds (imports, first page-cache pages).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np
import pyarrow as pa

from benchmarks._harness import Report, scratch_directory
from daq_storage.sim import SimulatedDaqCard
from daq_storage.streams import ChannelConfig, StreamWriter
from daq_storage.streams._layout import file_metadata
from daq_storage.writers import Hdf5Writer

CHANNELS = 8
RATE = 100_000.0
CHUNK = 65_536
START_NS = 1_700_000_000 * 10**9
PERIOD_NS = 10_000  # 1e9 / RATE, exact


@dataclass(frozen=True)
class Sizes:
    samples: int = int(os.environ.get("DAQ_BENCH_STREAMS_SAMPLES", "2000000"))
    block: int = 10_000
    repeats: int = int(os.environ.get("DAQ_BENCH_REPEATS", "5"))


Run = Callable[[Path], None]


def _blocks(sizes: Sizes) -> list[np.ndarray]:
    card = SimulatedDaqCard(CHANNELS, sample_rate=RATE, start_ns=START_NS)
    return [card.read_block(min(sizes.block, sizes.samples - done)).samples
            for done in range(0, sizes.samples, sizes.block)]  # fmt: skip


def ours(blocks: Sequence[np.ndarray]) -> Run:
    channels = [ChannelConfig(i, f"ai{i}", -10.0, 10.0) for i in range(CHANNELS)]

    def run(path: Path) -> None:
        with StreamWriter(path / "run.h5", channels=channels, sample_rate=RATE,
                          compression="lz4", start_ns=START_NS) as writer:  # fmt: skip
            for block in blocks:
                writer.write(block)

    return run


def _described(f: h5py.File) -> None:
    """``/metadata`` and ``/channels`` as the StreamWriter writes them: the same layout
    (the run's attributes; a one-element dataset per channel carrying its description)."""
    channels = [ChannelConfig(i, f"ai{i}", -10.0, 10.0) for i in range(CHANNELS)]
    meta = f.create_group("metadata")
    for key, value in file_metadata(channels, RATE, START_NS, "counts", "lz4", CHUNK).items():
        meta.attrs[key] = value
    group = f.create_group("channels")
    for channel in channels:
        dataset = group.create_dataset(channel.name, data=np.array([channel.index], np.int32))
        for key, value in channel.describe().items():
            dataset.attrs[key] = json.dumps(value) if not isinstance(value, str) else value
        dataset.attrs["units"] = channel.unit
    f.flush()  # the file says what it holds before its first sample, as the StreamWriter's


def _datasets(f: h5py.File) -> list[h5py.Dataset]:
    _described(f)
    group = f.create_group("data")
    filters = {"shuffle": True, **hdf5plugin.LZ4()}
    kinds: list[tuple[str, type[np.integer[Any]]]] = [("timestamps", np.int64),
                                                      ("sample_index", np.uint64)]  # fmt: skip
    kinds += [(f"ai{i}", np.int16) for i in range(CHANNELS)]
    datasets = [group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                                     chunks=(CHUNK,), **filters)
                for name, dtype in kinds]  # fmt: skip
    for dataset in datasets[2:]:  # the channels' CF attributes, as in /data of the StreamWriter
        dataset.attrs.update({"units": "V", "scale_factor": 20.0 / 65536, "add_offset": 0.0})
    return datasets


def _append(datasets: list[h5py.Dataset], at: int, columns: Sequence[np.ndarray]) -> None:
    for dataset, values in zip(datasets, columns, strict=True):
        dataset.resize((at + len(values),))
        dataset[at:] = values


def _columns(first: int, block: np.ndarray) -> list[np.ndarray]:
    index = np.arange(first, first + len(block), dtype=np.uint64)
    times = index.astype(np.int64) * PERIOD_NS + START_NS
    return [times, index, *(np.ascontiguousarray(block[:, i]) for i in range(CHANNELS))]


def h5py_per_block(blocks: Sequence[np.ndarray]) -> Run:
    def run(path: Path) -> None:
        with h5py.File(path / "run.h5", "w") as f:
            datasets, at = _datasets(f), 0
            for block in blocks:
                _append(datasets, at, _columns(at, block))
                at += len(block)

    return run


def h5py_whole_chunks(blocks: Sequence[np.ndarray]) -> Run:
    def run(path: Path) -> None:
        with h5py.File(path / "run.h5", "w") as f:
            datasets = _datasets(f)
            held: list[np.ndarray] = []
            at = written = 0
            for block in blocks:
                held.append(block)
                at += len(block)
                if at - written >= CHUNK:
                    gathered = np.concatenate(held)
                    whole = (at - written) // CHUNK * CHUNK
                    _append(datasets, written, _columns(written, gathered[:whole]))
                    held = [gathered[whole:]]
                    written += whole
            if at > written:
                _append(datasets, written, _columns(written, np.concatenate(held)))

    return run


def writer_alone(blocks: Sequence[np.ndarray]) -> Run:
    channels = [ChannelConfig(i, f"ai{i}", -10.0, 10.0) for i in range(CHANNELS)]
    with scratch_directory() as tmp:  # the schema and batches the StreamWriter makes
        probe = StreamWriter(tmp / "probe.h5", channels=channels, sample_rate=RATE,
                             compression="lz4", start_ns=START_NS)  # fmt: skip
        probe.close()
    gathered = np.concatenate(blocks)
    batches = []
    for first in range(0, len(gathered), CHUNK):
        columns = _columns(first, gathered[first : first + CHUNK])
        arrays = [pa.array(columns[0].view("datetime64[ns]"), probe.schema.field(0).type),
                  *(pa.array(c) for c in columns[1:])]  # fmt: skip
        batches.append(pa.RecordBatch.from_arrays(arrays, schema=probe.schema))

    def run(path: Path) -> None:
        with Hdf5Writer(path / "run.h5", compression="lz4", chunk_size=CHUNK) as writer:
            for batch in batches:
                writer.write_batch("data", batch)

    return run


def memcpy(blocks: Sequence[np.ndarray]) -> Run:
    total = sum(len(b) for b in blocks)

    def run(path: Path) -> None:
        out = np.empty((total, CHANNELS), np.int16)
        at = 0
        for block in blocks:
            out[at : at + len(block)] = block
            at += len(block)

    return run


def _alternated(runs: dict[str, Run], tmp: Path, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(repeats):
        order = list(runs.items())
        for name, run in order if round_ % 2 == 0 else reversed(order):
            folder = Path(tempfile.mkdtemp(dir=tmp))
            started = time.perf_counter()
            run(folder)
            times[name].append(time.perf_counter() - started)
            shutil.rmtree(folder)
    return times


def bench(report: Report, sizes: Sizes, tmp: Path) -> None:
    blocks = _blocks(sizes)
    samples = sum(len(b) for b in blocks)
    names = {
        "ours": "StreamWriter -> HDF5 lz4, write(block)",
        "per_block": "h5py, same layout and filters, per block",
        "chunks": "h5py, same layout and filters, whole chunks (tuned alike)",
        "alone": "our HDF5 writer alone, the same samples in whole-chunk batches",
        "memcpy": "memcpy of the samples (numpy copy)",
    }
    runs = {"ours": ours(blocks), "per_block": h5py_per_block(blocks),
            "chunks": h5py_whole_chunks(blocks), "alone": writer_alone(blocks),
            "memcpy": memcpy(blocks)}  # fmt: skip
    _alternated(runs, tmp, 1)  # warm-up: imports, first pages
    times = _alternated(runs, tmp, sizes.repeats)
    best = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    for stat, chosen in (("best", best), ("median", median)):
        for key in names:
            rate = samples / chosen[key] / 1e6
            ratio = None if key == "ours" else chosen[key] / chosen["ours"]
            note = "x8 channels; " if key == "ours" else ""
            report.add(f"{names[key]} ({stat})", rate, "M samples/s",
                       reference="" if key == "ours" else "StreamWriter", ratio=ratio,
                       note=f"{note}{rate * CHANNELS * 2:,.0f} MB/s of counts")  # fmt: skip


def main(sizes: Sizes | None = None) -> None:
    sizes = sizes or Sizes()
    with scratch_directory() as tmp:
        report = Report(
            f"StreamWriter: {sizes.samples:,} samples x {CHANNELS} int16 channels in "
            f"{sizes.block:,}-sample blocks into HDF5 lz4, creation to close; "
            f"{sizes.repeats} alternated rounds, best and median; "
            "ratio = reference time / StreamWriter time"
        )
        bench(report, sizes, tmp)
        report.print()


if __name__ == "__main__":
    main()
