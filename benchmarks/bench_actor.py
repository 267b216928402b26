"""The storage actor: power-meter batches as Arrow IPC bytes through ``WriteBatch`` into HDF5.

``DAQ_BENCH_ACTOR_ROWS`` (1 M) rows of the seeds' 4-column schema
(``SimulatedPowerMeter``: timestamp_ns, channel, value, unit) in 10,000-row batches,
serialised as IPC stream bytes before the timing (the producer's work), sent with
``tell`` as fast as the mailbox takes them; timed from the first batch (the actor started
and its worker ready) until ``stop()`` returned (every batch stored, the file closed),
in both modes (``"thread"``, ``"process"``). The actor writes
with its defaults (``[storage]`` unset: gzip 4 + shuffle, the writer's chunks and text
coding), no flush until stop, to a temporary directory on the real disk
(``DAQ_BENCH_DIR`` moves it).

References, run alternately with the actor, best of ``DAQ_BENCH_REPEATS`` (3):

- **h5py tuned alike**: plain h5py appending the same columns from the decoded batches to
  one group, a resizable dataset per column with the dtypes, chunks and filters the
  actor's file has (read from it: a text column the writer stores as codes is coded the
  same way, with its categories), dataset handles kept, no flush until close. Ratio = its
  time / the actor's (target >= 0.5x).
- **h5py defaults**: the same with h5py's defaults (auto chunks, no compression, text as
  variable-length UTF-8 strings).
- **our HDF5 writer alone**: the same batches, in this thread, without the actor: what
  the mailbox, the worker thread and the IPC decoding cost.

Event-loop scheduling delay (a coroutine sleeping 1 ms and measuring how late it wakes):
p50 / p99 / max while the actor writes the same batches once more (the timed runs have no
such coroutine: their references have none either), against the same coroutine on an
idle loop for as long.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks._harness import Report, scratch_directory
from benchmarks._writers import Run, interleaved, tables_run
from daq_storage.actor import GetStats, StorageActor, WriteBatch
from daq_storage.config import StorageConfig
from daq_storage.sim import SimulatedPowerMeter

STREAM = "power_meter_01"
BATCH_ROWS = 10_000
TICK_S = 0.001
MODES = ("thread", "process")  # StorageActor(mode=...)


@dataclass(frozen=True)
class Sizes:
    rows: int = int(os.environ.get("DAQ_BENCH_ACTOR_ROWS", "1000000"))
    batch_rows: int = BATCH_ROWS
    repeats: int = int(os.environ.get("DAQ_BENCH_REPEATS", "3"))


@dataclass
class Delays:
    """How late a 1 ms sleep woke, in seconds, sample by sample."""

    samples: list[float]

    def stat(self, which: str) -> float:
        values = np.asarray(self.samples or [0.0])
        return float(values.max() if which == "max" else np.percentile(values, float(which[1:])))


def ipc_stream(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


async def _ticker(delays: list[float], running: list[bool]) -> None:
    while running[0]:
        before = time.perf_counter()
        await asyncio.sleep(TICK_S)
        delays.append(time.perf_counter() - before - TICK_S)


@dataclass
class ActorRun:
    path: Path
    seconds: float  # from the actor's first message to stop() returned


async def _through_actor(
    payloads: Sequence[bytes], out: Path, delays: list[float] | None, mode: str = "thread"
) -> ActorRun:
    """Every payload told to an actor writing into ``out``, until ``stop()`` returned; a
    1 ms ticker on the loop meanwhile when ``delays`` is given (it records into it).

    Timed from the first batch: the actor is started and its worker ready before (a
    process takes about a second to start and import h5py, once per run of a program).
    """
    config = StorageConfig.load(environ={"DAQ_STORAGE_OUTPUT_DIR": str(out)})
    actor = await StorageActor.start(config, mode=mode)  # type: ignore[arg-type]
    await actor.call(GetStats())  # the worker (thread or process) is ready
    running = [True]
    ticks = asyncio.create_task(_ticker(delays, running)) if delays is not None else None
    started = time.perf_counter()
    try:
        for payload in payloads:
            await actor.tell(WriteBatch(payload, STREAM))
        path = (await actor.call(GetStats())).file_path
    finally:
        await actor.stop()
        seconds = time.perf_counter() - started
        running[0] = False
        if ticks is not None:
            await ticks
    assert path is not None
    return ActorRun(path, seconds)


async def _idle(seconds: float, delays: list[float]) -> None:
    running = [True]
    ticks = asyncio.create_task(_ticker(delays, running))
    await asyncio.sleep(seconds)
    running[0] = False
    await ticks


def _numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray[Any, Any]:
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _layout(path: Path) -> dict[str, dict[str, Any]]:
    """Each column's dtype, chunks and filters in the actor's file, as h5py keywords (a
    text column the writer stored as codes: its code dtype, ``coded`` set)."""
    found = {}
    with h5py.File(path, "r") as f:
        for name, dataset in f[STREAM].items():
            if name.endswith((".categories", ".valid")):
                continue
            found[name] = {"dtype": dataset.dtype, "chunks": dataset.chunks,
                           "compression": dataset.compression,
                           "compression_opts": dataset.compression_opts,
                           "shuffle": dataset.shuffle,
                           "coded": dataset.attrs.get("encoding") == "dictionary"}  # fmt: skip
    return found


def h5py_append(batches: Sequence[pa.RecordBatch], layout: dict[str, dict[str, Any]] | None) -> Run:
    """Plain h5py: a resizable dataset per column, each batch appended. ``layout``: the
    dtypes, chunks and filters of the actor's file, text coded as it codes it (codes of
    the distinct values of each batch, kept in one mapping; the categories written at
    the end); ``None``: h5py's defaults (auto chunks, no filter, text as vlen strings)."""
    string = h5py.string_dtype("utf-8")

    def run(path: Path) -> None:
        with h5py.File(path, "w") as f:
            group = f.create_group(STREAM)
            columns = {}
            known: dict[str, dict[str, int]] = {}
            for field in batches[0].schema:
                text = pa.types.is_string(field.type)
                options = dict((layout or {}).get(field.name, {"chunks": True}))
                if options.pop("coded", False):
                    known[field.name] = {}
                options.setdefault(
                    "dtype", string if text else _numpy(pa.array([], field.type)).dtype
                )
                columns[field.name] = group.create_dataset(
                    field.name, shape=(0,), maxshape=(None,), **options
                )
            n = 0
            for batch in batches:
                for name, dataset in columns.items():
                    column = batch.column(name)
                    if name in known:
                        encoded = pc.dictionary_encode(column)
                        codes = [known[name].setdefault(t, len(known[name]))
                                 for t in encoded.dictionary.to_pylist()]  # fmt: skip
                        values = np.asarray(codes, dataset.dtype)[
                            encoded.indices.to_numpy(zero_copy_only=False)
                        ]
                    else:
                        values = _numpy(column)
                    dataset.resize(n + batch.num_rows, axis=0)
                    dataset[n:] = values
                n += batch.num_rows
            for name, categories in known.items():
                group.create_dataset(f"{name}.categories", data=list(categories), dtype=string)

    return run


def bench(report: Report, delays_report: Report, sizes: Sizes, tmp: Path) -> None:
    meter = SimulatedPowerMeter(seed=0, start_ns=0)
    batches = [meter.read_batch(sizes.batch_rows) for _ in range(sizes.rows // sizes.batch_rows)]
    payloads = [ipc_stream(b) for b in batches]
    rows = sum(b.num_rows for b in batches)
    layout: dict[str, dict[str, Any]] = {}

    best = dict.fromkeys(MODES, float("inf"))  # the actor's own timing (see _through_actor)

    def actor_run(mode: str) -> Run:
        def run(path: Path) -> None:
            done = asyncio.run(_through_actor(payloads, path, None, mode))
            best[mode] = min(best[mode], done.seconds)

        return run

    # Once first, untimed: the actor's layout (its chunks and filters) for h5py alike.
    layout.update(_layout(asyncio.run(_through_actor(payloads, tmp / "layout", None)).path))
    shutil.rmtree(tmp / "layout")
    timings = interleaved(
        {
            "thread": actor_run("thread"),
            "process": actor_run("process"),
            "tuned": h5py_append(batches, layout),
            "defaults": h5py_append(batches, None),
            "writer": tables_run("hdf5", batches),
        },
        tmp,
        sizes.repeats,
    )
    codec = layout.get("value") or next(iter(layout.values()))
    text = [name for name, found in layout.items() if found["coded"]]
    coded = f"; {', '.join(text)} as codes + categories" if text else ""
    for mode in MODES:
        actor = timings[mode]
        actor.seconds = best[mode]  # without the start of the actor and its worker
        report.add(
            f"StorageActor -> HDF5, IPC bytes in, mode={mode}", rows / actor.seconds / 1e6,
            "M rows/s", reference="h5py defaults (auto chunks, no compression)",
            ratio=timings["defaults"].seconds / actor.seconds,
            tuned=f"h5py, same dtypes, chunks and filters ({codec['compression']} "
            f"{codec['compression_opts']}, shuffle {codec['shuffle']}{coded})",
            tuned_ratio=timings["tuned"].seconds / actor.seconds,
            note=f"file {actor.size / 1e6:.0f} MB (h5py defaults' "
            f"{timings['defaults'].size / 1e6:.0f} MB); "
            f"{actor.seconds / timings['writer'].seconds:.2f}x our writer's time alone",
        )  # fmt: skip
    report.add(
        "our HDF5 writer alone, same batches", rows / timings["writer"].seconds / 1e6,
        "M rows/s", reference="h5py, same dtypes, chunks and filters",
        ratio=timings["tuned"].seconds / timings["writer"].seconds,
        note="no actor: this thread, Arrow batches in",
    )  # fmt: skip
    # The loop's delay: once more per mode with the ticker (not in the timed runs, which
    # the references run without one), then the ticker alone on an idle loop as long.
    idle_samples: list[float] = []
    for mode in MODES:
        busy: list[float] = []
        seconds = asyncio.run(_through_actor(payloads, tmp / "delays", busy, mode)).seconds
        shutil.rmtree(tmp / "delays")
        if not idle_samples:
            asyncio.run(_idle(seconds, idle_samples))
        written, idle = Delays(busy), Delays(idle_samples)
        for which in ("p50", "p99", "max"):
            delays_report.add(
                f"loop delay {which}, mode={mode}", written.stat(which) * 1e3, "ms",
                reference=f"idle loop {which}: {idle.stat(which) * 1e3:.3f} ms",
                note=f"{len(written.samples):,} ticks in {seconds:.2f} s "
                f"({rows / seconds / 1e6:.3g} M rows/s with the ticker)" if which == "p50"
                else "",
            )  # fmt: skip


def main(sizes: Sizes | None = None) -> None:
    sizes = sizes or Sizes()
    with scratch_directory() as tmp:
        report = Report(
            f"StorageActor: {sizes.rows:,} power-meter rows in {sizes.batch_rows:,}-row "
            f"batches as IPC bytes, first tell() until stop() returned; best of "
            f"{sizes.repeats} interleaved runs; ratio = reference time / actor time"
        )
        delays = Report(
            f"event-loop scheduling delay of a {TICK_S * 1e3:g} ms sleep while the actor "
            "writes the same batches once more, vs an idle loop as long"
        )
        bench(report, delays, sizes, tmp)
        report.print()
        delays.print()


if __name__ == "__main__":
    main()
