"""The Recorder end to end: a camera process -> ring (/dev/shm) -> Recorder process -> files.

A producer process renders simulated 640x480 uint16 frames (``SimulatedCamera``, seed 0)
and writes each to the ring with ``write_frame``, timing every call
(``perf_counter_ns``); it sends back the timings and the ring sequence of every frame.
The Recorder (``mode="process"``, a 1 s flush cadence, no fsync) writes to a temporary
directory on the real disk (``DAQ_BENCH_DIR`` moves it); the filesystem is printed.

- **End to end** (block mode, producer unpaced): ``DAQ_BENCH_RECORDER_FRAMES`` (2,000)
  frames through a ``DAQ_BENCH_RECORDER_RING_MB`` (256) MiB ring into HDF5 blosc-lz4;
  MB/s from the producer's first write until ``stop()`` returned (everything stored and
  every file closed), against our HDF5 writer alone taking the same frames from memory
  in calls of 16 (the Recorder's whole-chunk groups) with a flush every second and no
  fsync, including its close. Ratio = writer alone's time / the Recorder's.
- **Fan-out**: the same with HDF5 + Arrow IPC at once, against the slower of the two
  writers alone.
  Each run alternates with its references, in reversed order every other round, best of
  ``DAQ_BENCH_REPEATS`` (3).
- **Latency**: ``write_frame`` p50 / p99 / max with the Recorder draining against no
  consumer at all, both in ``discard_oldest`` mode (nothing blocks), the producer paced
  at ``DAQ_BENCH_RECORDER_FPS`` (250) frames/s for ``DAQ_BENCH_RECORDER_LATENCY_FRAMES``
  (1,000) frames; samples of every round pooled. Ratio = with / without. Once more with
  the Recorder process at nice 10 (Linux): on a machine with few cores its compression
  threads otherwise take the producer's core away mid-write.
- **Losses**: ``discard_oldest``, a 64 MiB ring and an unpaced producer faster than the
  Recorder (``DAQ_BENCH_RECORDER_LOSS_FRAMES``, 1,500 frames): the Recorder's ``lost``,
  the sum of the loss ledgers in the files, and the gaps the producer's sequence log
  implies (written sequences whose frames are not in the files) must all be equal.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from benchmarks._harness import Report, console
from daq_storage.errors import RingFull
from daq_storage.ring import RingBuffer, RingReader
from daq_storage.sim import SimulatedCamera

# The producer process imports this module: the writers (benchmarks._writers too), the
# Recorder and h5py are imported where they are used, so that a producer starts quickly.
if TYPE_CHECKING:
    from daq_storage.recorder import Recorder, RecorderStats
    from daq_storage.schema import FrameBlock

STREAM = "camera_1"
SHAPE = (480, 640)
FRAMES_PER_CALL = 16  # whole chunks: the Recorder's group of frames (bench_writers' calls)
REPEATS = int(os.environ.get("DAQ_BENCH_REPEATS", "3"))
SEED = 0
FLUSH_S = 1.0  # the Recorder's cadence (seed 004's 1 Hz), and the writers' alone
CONSUMER = "bench"
OPTIONS: dict[str, dict[str, Any]] = {"hdf5": {"compression": "blosc-lz4"}, "arrow": {}}
BLOCK_TIMEOUT_S = 120.0  # block mode: the producer waits for the Recorder, never drops
NICE = 10  # the lowered priority of the Recorder in the latency variant


def _env(name: str, default: float) -> float:
    return float(os.environ.get(f"DAQ_BENCH_RECORDER_{name}", default))


@dataclass(frozen=True)
class Sizes:
    """How much each section moves (the defaults: a few seconds per figure)."""

    frames: int = int(_env("FRAMES", 2000))
    ring_mb: int = int(_env("RING_MB", 256))
    latency_frames: int = int(_env("LATENCY_FRAMES", 1000))
    latency_fps: float = _env("FPS", 250)
    latency_rounds: int = 2
    loss_frames: int = int(_env("LOSS_FRAMES", 1500))
    loss_ring_mb: int = int(_env("LOSS_RING_MB", 64))
    repeats: int = REPEATS


# ------------------------------------------------------------------------------ producer
@dataclass(frozen=True)
class Produced:
    """What the producer process did, in its own words."""

    seqs: npt.NDArray[np.int64]  # ring sequence of frame i (-1: the ring refused it)
    latency_ns: npt.NDArray[np.int64]  # each write_frame call
    first_ns: int  # perf_counter_ns before the first write (CLOCK_MONOTONIC: any process)
    last_ns: int  # after the last
    cpu_s: float  # the producer's CPU time from its first write to its last

    @property
    def dropped(self) -> int:
        return int((self.seqs < 0).sum())


def _produce(ring: str, frames: int, fps: float, conn: Connection) -> None:
    """The camera process: ``frames`` frames into ``ring``, paced at ``fps`` (0: as fast
    as the ring takes them); sends back a :class:`Produced` (or the error's text)."""
    try:
        camera = SimulatedCamera(SHAPE, seed=SEED, start_ns=0)
        seqs = np.full(frames, -1, np.int64)
        latency = np.zeros(frames, np.int64)
        period = int(1e9 / fps) if fps > 0 else 0
        writer = RingBuffer.open(ring, block_timeout=BLOCK_TIMEOUT_S)
        try:
            cpu, first = time.process_time(), time.perf_counter_ns()
            for i in range(frames):
                frame = camera.next_frame()
                if period:  # pacing a simulated camera, not synchronisation
                    delay = first + i * period - time.perf_counter_ns()
                    if delay > 0:
                        time.sleep(delay / 1e9)
                started = time.perf_counter_ns()
                with contextlib.suppress(RingFull):  # counted: seqs[i] stays -1
                    seqs[i] = writer.write_frame(
                        frame.array, stream=STREAM, timestamp_ns=frame.timestamp_ns,
                        frame_number=frame.frame_number,
                    )  # fmt: skip
                latency[i] = time.perf_counter_ns() - started
            last = time.perf_counter_ns()
        finally:
            writer.close()
        conn.send(Produced(seqs, latency, first, last, time.process_time() - cpu))
    except BaseException as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        conn.close()


def produce(ring: Path, frames: int, fps: float = 0.0) -> Produced:
    """Run the camera process to the end and return what it reports."""
    context = mp.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_produce, args=(str(ring), frames, fps, send), daemon=True)
    process.start()
    send.close()
    try:
        answer = receive.recv()
    except EOFError:
        answer = "the producer died without a word"
    finally:
        process.join()
        receive.close()
    if not isinstance(answer, Produced):
        raise RuntimeError(f"producer (exit code {process.exitcode}): {answer}")
    return answer


# ------------------------------------------------------------- the least a drain can do
def _drain(ring: str, name: str, path: str, conn: Connection) -> None:
    """The reference consumer: the ring read with ``read_many`` straight into one writer
    (groups of 16 frames, a flush every ``FLUSH_S``), no routing, sink thread, ledger or
    stats; reads until the ring is empty once told the producer is done."""
    from daq_storage.writers import open_writer

    try:
        reader = RingReader.open(ring, consumer=CONSUMER)
        conn.send("ready")
        held: list[Any] = []
        with open_writer(name, path, **OPTIONS[name]) as writer:

            def write() -> None:
                writer.write_frames(STREAM, [r.array() for r in held],
                                    timestamps_ns=[r.timestamp_ns for r in held],
                                    frame_numbers=[r.frame_number for r in held])  # fmt: skip
                held.clear()

            last, finishing = time.perf_counter(), False
            while True:
                records = reader.read_many(FRAMES_PER_CALL - len(held), timeout=0.01)
                held += records
                if len(held) == FRAMES_PER_CALL or (held and not records):
                    write()
                if (now := time.perf_counter()) - last >= FLUSH_S:
                    writer.flush()
                    last = now
                if not records:
                    if finishing:
                        break
                    finishing = conn.poll()  # the producer is done: drain to empty
        reader.close()
        conn.send("done")
    except BaseException as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        conn.close()


def drain(name: str, frames: int, ring_mb: int, path: Path) -> tuple[float, int]:
    """The producer through a fresh block-mode ring into :func:`_drain`; seconds from
    the first write until the drain process ended, and the frames the producer wrote."""
    context = mp.get_context("spawn")
    with new_ring(ring_mb, "block") as ring:
        conn, theirs = context.Pipe()
        process = context.Process(target=_drain, args=(str(ring), name, str(path), theirs),
                                  daemon=True)  # fmt: skip
        process.start()
        theirs.close()
        try:
            if (answer := conn.recv()) != "ready":
                raise RuntimeError(f"drain: {answer}")
            produced = produce(ring, frames)
            conn.send("finish")
            if (answer := conn.recv()) != "done":
                raise RuntimeError(f"drain: {answer}")
        finally:
            process.join()
            conn.close()
    return (time.perf_counter_ns() - produced.first_ns) / 1e9, int((produced.seqs >= 0).sum())


# ---------------------------------------------------------------------------------- rings
def ring_path() -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return base / f"daq_storage_bench_rec_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def new_ring(size_mb: int, overflow: Literal["block", "discard_oldest"]) -> Iterator[Path]:
    """A fresh ring, its writer detached (the producer process attaches); removed after,
    with the Recorder's stats file beside it."""
    from daq_storage.recorder import stats_path

    path = ring_path()
    RingBuffer.create(path, capacity_bytes=size_mb << 20, overflow=overflow).close()
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        stats_path(path, CONSUMER).unlink(missing_ok=True)


def filesystem(path: Path) -> str:
    """The type of the filesystem holding ``path`` (the longest mount point above it)."""
    target, found = str(path.resolve()), ("", "unknown")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, kind, *_ = line.split()
            mount = mount.replace("\\040", " ")
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(found[0]):
                found = (mount, kind)
    return found[1]


# ------------------------------------------------------------------------------- the runs
@dataclass
class Recorded:
    seconds: float
    produced: Produced
    stats: RecorderStats
    size: int  # bytes on disk, every format


def record(formats: Sequence[str], frames: int, ring_mb: int, out: Path, *,
           overflow: Literal["block", "discard_oldest"] = "block", fps: float = 0.0,
           nice: int = 0,
           on_stats: Callable[[RecorderStats], object] | None = None) -> Recorded:  # fmt: skip
    """The producer through a fresh ring into a Recorder process (its priority lowered
    by ``nice``); timed from the first write until ``stop()`` returned. ``on_stats`` sees
    the final stats before the files are removed."""
    from benchmarks._writers import remove, size_of
    from daq_storage.recorder import Recorder

    with new_ring(ring_mb, overflow) as ring:
        recorder = Recorder(
            ring, formats=formats, output_dir=out, experiment="bench", consumer=CONSUMER,
            options={name: OPTIONS[name] for name in formats}, flush_interval_s=FLUSH_S,
            mode="process", stop_timeout_s=300.0,
        )  # fmt: skip
        start_niced(recorder, nice)
        try:
            produced = produce(ring, frames, fps)
        finally:
            stats = recorder.stop()
        ended = time.perf_counter_ns()
    if on_stats is not None:
        on_stats(stats)
    size = size_of(out)
    remove(out)
    return Recorded((ended - produced.first_ns) / 1e9, produced, stats, size)


def start_niced(recorder: Recorder, nice: int) -> None:
    """``recorder.start()``; with ``nice``, from a thread of that lowered priority: the
    Recorder process spawned from it inherits it, for all its threads (on Linux, where
    nice is per thread; the Recorder has no priority setting of its own)."""
    if not nice:
        recorder.start()
        return
    failed: list[BaseException] = []

    def start() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
            recorder.start()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=start, name="start-niced")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    if recorder.pid is not None and os.getpriority(os.PRIO_PROCESS, recorder.pid) != nice:
        raise RuntimeError(f"the Recorder process did not inherit nice {nice}")


def alone(name: str, block: FrameBlock, path: Path) -> tuple[float, int]:
    """Our writer alone on the same frames, driven as the Recorder drives it: calls of
    whole chunks (16 frames, as sequences of arrays like the ring's), a flush every
    ``FLUSH_S`` seconds, no fsync; seconds including close, and the flushes made."""
    from daq_storage.writers import open_writer

    started = last = time.perf_counter()
    flushes = 0
    with open_writer(name, path, **OPTIONS[name]) as writer:
        for first in range(0, len(block), FRAMES_PER_CALL):
            part = block.part(first, first + FRAMES_PER_CALL)
            writer.write_frames(STREAM, list(part.frames), timestamps_ns=part.timestamps_ns,
                                frame_numbers=part.frame_numbers)  # fmt: skip
            if (now := time.perf_counter()) - last >= FLUSH_S:
                writer.flush()
                last, flushes = now, flushes + 1
    return time.perf_counter() - started, flushes


@dataclass
class Best:
    seconds: float = float("inf")
    size: int = 0
    note: str = ""  # of the best run
    failures: list[str] = field(default_factory=list)  # runs that lost frames: no speed


def _check(stats: RecorderStats, produced: Produced, formats: Sequence[str]) -> str:
    """'' when every frame reached every format, else what is missing."""
    problems = []
    if stats.lost or produced.dropped or stats.errors:
        problems.append(f"lost {stats.lost}, dropped {produced.dropped}, "
                        f"errors {list(stats.errors)}")  # fmt: skip
    for name in formats:
        stored = stats.formats[name].frames
        if stored != len(produced.seqs):
            problems.append(f"{name} stored {stored} of {len(produced.seqs)}")
    return "; ".join(problems)


def bench_throughput(report: Report, sizes: Sizes, tmp: Path) -> None:
    from benchmarks._writers import remove, size_of

    block = SimulatedCamera(SHAPE, seed=SEED, start_ns=0).frames(sizes.frames)
    nbytes = block.frames.nbytes
    keys = ("hdf5", "arrow", "drain", "recorder hdf5", "recorder hdf5+arrow")
    best = {key: Best() for key in keys}

    def run_alone(name: str) -> Callable[[], None]:
        def run() -> None:
            path = tmp / f"alone_{name}"
            seconds, flushes = alone(name, block, path)
            if seconds < best[name].seconds:
                best[name] = Best(seconds, size_of(path), f"{flushes} flushes")
            remove(path)

        return run

    def run_drain() -> None:
        path = tmp / "drained"
        seconds, written = drain("hdf5", sizes.frames, sizes.ring_mb, path)
        if written != sizes.frames:
            best["drain"].failures.append(f"INCOMPLETE RUN: {written} of {sizes.frames}")
        elif seconds < best["drain"].seconds:
            best["drain"] = Best(seconds, size_of(path), failures=best["drain"].failures)
        remove(path)

    def run_recorder(formats: tuple[str, ...]) -> Callable[[], None]:
        key = "recorder " + "+".join(formats)

        def run() -> None:
            done = record(formats, sizes.frames, sizes.ring_mb, tmp / "recorded")
            problem = _check(done.stats, done.produced, formats)
            if problem:  # a run that lost frames is no speed
                best[key].failures.append(f"INCOMPLETE RUN: {problem}")
            elif done.seconds < best[key].seconds:
                note = (f"0 lost, 0 dropped; {done.stats.flushes} flushes; producer CPU "
                        f"{done.produced.cpu_s:.2f} s")  # fmt: skip
                best[key] = Best(done.seconds, done.size, note, best[key].failures)

        return run

    runs = [run_alone("hdf5"), run_alone("arrow"), run_drain, run_recorder(("hdf5",)),
            run_recorder(("hdf5", "arrow"))]  # fmt: skip
    for round_ in range(sizes.repeats):
        for run in runs if round_ % 2 == 0 else reversed(runs):
            run()

    def mbs(key: str) -> float:
        return nbytes / best[key].seconds / 1e6 if best[key].seconds < float("inf") else 0.0

    def ratio(reference: str, key: str) -> float | None:
        done = max(best[key].seconds, best[reference].seconds) < float("inf")
        return best[reference].seconds / best[key].seconds if done else None

    def notes(key: str, *extra: str) -> str:
        size = f"file {best[key].size / nbytes:.0%} of raw" if best[key].size else ""
        return "; ".join(x for x in [*best[key].failures, best[key].note, size, *extra] if x)

    def versus(reference: str, key: str) -> str:
        value = ratio(reference, key)
        return "" if value is None else f"{value:.2f}x the minimal drain"

    report.add("HDF5 blosc-lz4 writer alone", mbs("hdf5"), "MB/s", note=notes("hdf5"))
    report.add("Arrow IPC writer alone", mbs("arrow"), "MB/s", note=notes("arrow"))
    report.add("minimal drain process -> HDF5", mbs("drain"), "MB/s",
               reference="HDF5 writer alone", ratio=ratio("hdf5", "drain"),
               note=notes("drain", "read_many straight into the writer: the cost of the "
                          "producer, the ring and a second process"))  # fmt: skip
    report.add("Recorder -> HDF5 blosc-lz4, block mode", mbs("recorder hdf5"), "MB/s",
               reference="HDF5 writer alone", ratio=ratio("hdf5", "recorder hdf5"),
               note=notes("recorder hdf5", versus("drain", "recorder hdf5"),
                          "target >= 0.8x"))  # fmt: skip
    slower = max(("hdf5", "arrow"), key=lambda k: best[k].seconds)
    report.add("Recorder -> HDF5 + Arrow IPC, block mode", mbs("recorder hdf5+arrow"), "MB/s",
               reference=f"slower alone ({slower})", ratio=ratio(slower, "recorder hdf5+arrow"),
               note=notes("recorder hdf5+arrow", "target >= 0.8x"))  # fmt: skip


def bench_latency(report: Report, sizes: Sizes, tmp: Path) -> None:
    samples: dict[int | None, list[npt.NDArray[np.int64]]] = {None: [], 0: [], NICE: []}
    lost = {0: 0, NICE: 0}

    def run(nice: int | None) -> Callable[[], None]:
        def bare() -> None:
            with new_ring(sizes.ring_mb, "discard_oldest") as ring:
                samples[None].append(
                    produce(ring, sizes.latency_frames, sizes.latency_fps).latency_ns
                )

        def recorded() -> None:
            assert nice is not None
            done = record(("hdf5",), sizes.latency_frames, sizes.ring_mb, tmp / "latency",
                          overflow="discard_oldest", fps=sizes.latency_fps,
                          nice=nice)  # fmt: skip
            samples[nice].append(done.produced.latency_ns)
            lost[nice] += done.stats.lost

        return bare if nice is None else recorded

    # Lowering a spawned process's priority from its starting thread works where nice
    # is per thread (Linux); elsewhere the lowered variant is left out.
    runs = [run(None), run(0)] + ([run(NICE)] if sys.platform == "linux" else [])
    for round_ in range(sizes.latency_rounds):
        for one in runs if round_ % 2 == 0 else reversed(runs):
            one()
    bare_ns = np.concatenate(samples[None])
    for nice, label in ((0, "Recorder draining"), (NICE, f"Recorder at nice {NICE}")):
        if not samples[nice]:
            continue
        ours_ns = np.concatenate(samples[nice])
        for stat, q in (("p50", 50.0), ("p99", 99.0), ("max", 100.0)):
            ours = float(np.percentile(ours_ns, q)) / 1e3
            bare_us = float(np.percentile(bare_ns, q)) / 1e3
            report.add(f"write_frame {stat}, {label}", ours, "µs",
                       reference=f"no consumer: {bare_us:,.0f} µs", ratio=ours / bare_us,
                       note="target <= 1.5x" if stat == "p99" else "")  # fmt: skip
        report.add(f"frames lost, {label}", lost[nice], "records",
                   note=f"{len(ours_ns):,} writes with, {len(bare_ns):,} without")  # fmt: skip


def _ranges(seqs: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted ``seqs`` as (first, last)."""
    if not len(seqs):
        return []
    breaks = np.flatnonzero(np.diff(seqs) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(seqs) - 1]])
    return [(int(seqs[a]), int(seqs[b])) for a, b in zip(starts, ends, strict=True)]


def _merged(gaps: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted (first, last) ranges with adjacent and overlapping ones joined."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(gaps):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


@dataclass
class Ledger:
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (first_seq, last_seq)
    total: int = 0  # sum of the gaps' counts
    lost_records: int = 0  # sum of the files' lost_records
    numbers: list[npt.NDArray[np.uint64]] = field(default_factory=list)  # stored frames
    torn: int = 0  # frames whose stamped counter is not their frame number
    files: int = 0


def read_ledger(stats: RecorderStats, ledger: Ledger) -> None:
    """What a scientist finds in the HDF5 files: the ledgers and the stored frames."""
    import h5py

    for name in stats.formats["hdf5"].files:
        with h5py.File(name, "r") as f:
            ledger.files += 1
            for gap in json.loads(f.attrs["loss_ledger"]):
                ledger.gaps.append((int(gap["first_seq"]), int(gap["last_seq"])))
                ledger.total += int(gap["count"])
            ledger.lost_records += int(f.attrs["lost_records"])
            if STREAM in f:
                numbers = f[STREAM]["frame_number"][:]
                # The camera stamps its counter into a frame's first four pixels.
                words = f[STREAM]["frames"][:, 0, :4].astype(np.uint64)
                counters = (words[:, 0] << 48) | (words[:, 1] << 32) | (words[:, 2] << 16)
                ledger.torn += int(((counters | words[:, 3]) != numbers).sum())
                ledger.numbers.append(numbers)


def bench_losses(report: Report, sizes: Sizes, tmp: Path) -> None:
    ledger = Ledger()
    done = record(("hdf5",), sizes.loss_frames, sizes.loss_ring_mb, tmp / "losses",
                  overflow="discard_oldest",
                  on_stats=lambda stats: read_ledger(stats, ledger))  # fmt: skip
    seqs, stats = done.produced.seqs, done.stats
    numbers = np.concatenate(ledger.numbers) if ledger.numbers else np.zeros(0, np.uint64)
    stored = np.zeros(len(seqs), bool)
    stored[numbers.astype(np.int64)] = True
    implied = _ranges(np.sort(seqs[~stored & (seqs >= 0)]))
    # The Recorder may record one run of lost records as adjacent gaps (it sees the ring
    # lap it in steps); the log implies maximal runs: compare the sequences covered.
    in_stats = _merged((g.first_seq, g.last_seq) for g in stats.gaps)
    same = _merged(ledger.gaps) == implied == in_stats
    written = int((seqs >= 0).sum())
    rate = len(seqs) / ((done.produced.last_ns - done.produced.first_ns) / 1e9)
    report.add("lost (Recorder stats)", stats.lost, "records",
               note=f"of {written:,} written at {rate:,.0f} frames/s; {len(stats.gaps)} gaps"
               )  # fmt: skip
    report.add("loss ledger in the files", ledger.total, "records",
               note=f"{len(ledger.gaps)} gaps in {ledger.files} file(s); lost_records "
               f"{ledger.lost_records}")  # fmt: skip
    report.add("gaps the producer's seq log implies", sum(b - a + 1 for a, b in implied),
               "records",
               note=f"{len(implied)} runs; ranges identical in stats, ledger and log: "
               f"{'yes' if same else 'NO'}; written == stored + lost: "
               f"{'yes' if written == len(numbers) + stats.lost else 'NO'}; "
               f"torn frames {ledger.torn}")  # fmt: skip


def main(sizes: Sizes | None = None) -> None:
    sizes = sizes or Sizes()
    tmp = Path(tempfile.mkdtemp(prefix="daq_storage_bench_", dir=os.environ.get("DAQ_BENCH_DIR")))
    where = f"files on {filesystem(tmp)}, ring on {filesystem(ring_path().parent)}"
    try:
        throughput = Report(
            f"Recorder end to end: {sizes.frames:,} frames 640x480 uint16 "
            f"({sizes.frames * 2 * SHAPE[0] * SHAPE[1] / 1e9:.2f} GB), {sizes.ring_mb} MiB "
            f"ring, {where}; best of {sizes.repeats}; ratio = reference time / Recorder time"
        )
        bench_throughput(throughput, sizes, tmp)
        throughput.print()
        latency = Report(
            f"producer write_frame latency: {sizes.latency_frames:,} frames at "
            f"{sizes.latency_fps:g} frames/s, discard_oldest (nothing blocks), "
            f"{sizes.latency_rounds} rounds pooled; ratio = with Recorder / without any consumer"
        )
        bench_latency(latency, sizes, tmp)
        latency.print()
        losses = Report(
            f"discard_oldest, producer faster than the disk: {sizes.loss_frames:,} frames "
            f"unpaced through a {sizes.loss_ring_mb} MiB ring into HDF5 blosc-lz4"
        )
        bench_losses(losses, sizes, tmp)
        losses.print()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"[dim]{where}[/dim]")


if __name__ == "__main__":
    main()
