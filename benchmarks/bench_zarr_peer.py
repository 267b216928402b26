"""Our Zarr writer against acquire-zarr, at equal durability.

acquire-zarr fsyncs every shard file as it completes it, and its metadata documents at
close (its file-handle pool fsyncs a file when it lets the handle go; it fsyncs no
directory). Our writer fsyncs only at ``flush(durable=True)``, so two comparisons are
published from the same run, on the same frames, codec (blosc-lz4, level 5, shuffle),
16-frame shards and calls of 16 frames:

- on the disk, durable against durable: ours with ``flush(durable=True)`` after every
  shard (it also publishes the shard, fsyncs the metadata and the directories whose
  entries changed: more than the peer does); and, for the end state only, one durable
  flush before close;
- on tmpfs (``/dev/shm``), where fsync costs nothing: the two pipelines alone.

Ours with a plain ``flush()`` after every shard separates what publishing costs from
what fsync costs; ours without any flush on the disk is the old (mixed) comparison.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import Report
from benchmarks._writers import (
    FRAMES,
    FRAMES_PER_CALL,
    REPEATS,
    SHAPE,
    Run,
    Timing,
    frames_run,
    has_durable_flush,
    interleaved,
)
from daq_storage.sim import SimulatedCamera

TMPFS = Path("/dev/shm")


def acquire_zarr_run(calls: Sequence[np.ndarray]) -> Run | None:
    """acquire-zarr writing ``calls`` (an append per call), or None where not installed."""
    try:
        import acquire_zarr as aqz
    except ImportError:
        return None

    def dim(name: str, kind: object, size: int, chunk: int, shard: int) -> object:
        return aqz.Dimension(name=name, kind=kind, array_size_px=size, chunk_size_px=chunk,
                             shard_size_chunks=shard)  # fmt: skip

    def run(path: Path) -> None:
        settings = aqz.StreamSettings(
            store_path=str(path),
            overwrite=True,
            arrays=[aqz.ArraySettings(
                output_key="frames",
                data_type=np.uint16,
                compression=aqz.CompressionSettings(
                    compressor=aqz.Compressor.BLOSC1, codec=aqz.CompressionCodec.BLOSC_LZ4,
                    level=5, shuffle=1,
                ),
                dimensions=[
                    dim("t", aqz.DimensionType.TIME, 0, 1, FRAMES_PER_CALL),
                    dim("y", aqz.DimensionType.SPACE, SHAPE[0], SHAPE[0], 1),
                    dim("x", aqz.DimensionType.SPACE, SHAPE[1], SHAPE[1], 1),
                ],
            )],
        )  # fmt: skip
        stream = aqz.ZarrStream(settings)
        for chunk in calls:
            stream.append(chunk)
        stream.close()

    return run


def _frames_fitting(directory: Path, wanted: int, frame_bytes: int) -> int:
    """Frames whose store (at most raw size) takes under a third of the free space: tmpfs
    is memory, shared with the other processes of the machine."""
    free = shutil.disk_usage(directory).free
    fitting = int(free / 3 // frame_bytes) // FRAMES_PER_CALL * FRAMES_PER_CALL
    return max(0, min(wanted, fitting))


def compare(report: Report, where: str, tmp: Path, frames: np.ndarray, *,
            durable_runs: bool, plain: bool) -> None:  # fmt: skip
    """Alternating runs of the peer and ours in ``tmp``; a row per variant of ours."""
    calls = [frames[i : i + FRAMES_PER_CALL] for i in range(0, len(frames), FRAMES_PER_CALL)]
    stamps = np.arange(len(frames), dtype=np.uint64)
    peer = acquire_zarr_run(calls)
    assert peer is not None
    options: dict[str, Any] = {"compression": "blosc-lz4", "compression_level": 5,
               "shard_frames": FRAMES_PER_CALL}  # fmt: skip
    ours: dict[str, tuple[Run, str]] = {}
    if durable_runs:
        ours["durable"] = (frames_run("zarr", calls, stamps, flush_every=1, durable=True,
                                      **options),
                           "ours, flush(durable=True) after every shard")  # fmt: skip
        ours["flush"] = (frames_run("zarr", calls, stamps, flush_every=1, **options),
                         "ours, flush() after every shard (no fsync)")  # fmt: skip
        ours["at close"] = (frames_run("zarr", calls, stamps, durable_at_close=True, **options),
                            "ours, one flush(durable=True) before close")  # fmt: skip
    if plain:
        ours["plain"] = (frames_run("zarr", calls, stamps, **options),
                         "ours, no fsync (the peer fsyncs: not alike)")  # fmt: skip
    timings: dict[str, Timing] = interleaved(
        {"peer": peer, **{key: run for key, (run, _) in ours.items()}}, tmp
    )
    nbytes = frames.nbytes
    found = timings["peer"]
    report.add(f"{where}: acquire-zarr (peer), {len(frames)} frames", nbytes / found.seconds / 1e6,
               "MB/s", note=f"store {found.size / nbytes:.0%} of raw")  # fmt: skip
    for key, (_, label) in ours.items():
        mine = timings[key]
        report.add(f"{where}: {label}", nbytes / mine.seconds / 1e6, "MB/s",
                   reference="acquire-zarr", ratio=found.seconds / mine.seconds,
                   note=f"store {mine.size / nbytes:.0%} of raw")  # fmt: skip


def main() -> None:
    report = Report(
        f"zarr v3 blosc-lz4 vs acquire-zarr: 640x480 uint16 frames, {FRAMES_PER_CALL} per call "
        f"and per shard, best of {REPEATS} interleaved runs; ratio = peer time / ours"
    )
    base = Path(tempfile.mkdtemp(prefix="daq_storage_bench_", dir=os.environ.get("DAQ_BENCH_DIR")))
    try:
        if acquire_zarr_run([]) is None:
            report.add("acquire-zarr (peer)", 0, "", note="acquire-zarr not installed")
            report.print()
            return
        if not has_durable_flush("zarr"):
            report.add("zarr", 0, "", note="flush has no durable option yet: not measured")
            report.print()
            return
        frames = SimulatedCamera(seed=0, start_ns=0).frames(FRAMES).frames
        compare(report, "disk", base, frames, durable_runs=True, plain=True)
        if TMPFS.is_dir():
            shm = Path(tempfile.mkdtemp(prefix="daq_storage_bench_", dir=TMPFS))
            try:
                count = _frames_fitting(shm, FRAMES, frames[0].nbytes)
                if count:
                    compare(report, "tmpfs", shm, frames[:count], durable_runs=True, plain=False)
                else:
                    report.add("tmpfs", 0, "", note="too little free space in /dev/shm")
            finally:
                shutil.rmtree(shm, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report.print()


if __name__ == "__main__":
    main()
