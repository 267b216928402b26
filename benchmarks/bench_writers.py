"""Format writers: MB/s and file size, next to the raw library and a raw write() of the bytes.

2,000 simulated 640x480 uint16 frames (1.2 GB) and 10 M scalar rows in 10 k-row batches,
written to a temporary directory on the real disk (page cache included, as in a run).
acquire-zarr, when installed, is measured on the same frames with the same codec as a peer.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import tifffile
import zarr
import zarr.codecs

from benchmarks._harness import Report
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter
from daq_storage.writers import open_writer
from daq_storage.writers._base import FrameBlock
from daq_storage.writers._tensor import frames_to_batch

FRAMES = int(os.environ.get("DAQ_BENCH_FRAMES", "2000"))
ROWS = int(os.environ.get("DAQ_BENCH_ROWS", "10000000"))
BATCH_ROWS = 10_000
FRAMES_PER_CALL = 16  # what a recorder hands a writer per drain


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def timed(run: Callable[[Path], None], path: Path) -> tuple[float, int]:
    """Seconds to run ``run(path)`` (including close) and the bytes it left on disk."""
    started = time.perf_counter()
    run(path)
    seconds = time.perf_counter() - started
    size = size_of(path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    return seconds, size


def raw_write(data: list[bytes] | list[np.ndarray]) -> Callable[[Path], None]:
    def run(path: Path) -> None:
        with path.open("wb") as handle:
            for chunk in data:
                handle.write(chunk.data if isinstance(chunk, np.ndarray) else chunk)

    return run


def bench_frames(report: Report, tmp: Path) -> None:
    camera = SimulatedCamera(seed=0, start_ns=0)
    frames = camera.frames(FRAMES).frames
    stamps = np.arange(FRAMES, dtype=np.uint64)
    nbytes = frames.nbytes
    calls = [frames[i : i + FRAMES_PER_CALL] for i in range(0, FRAMES, FRAMES_PER_CALL)]
    # Best of two, like every pair below: the page cache makes a first write slower.
    raw_s = min(timed(raw_write(list(calls)), tmp / "raw.bin")[0] for _ in range(2))
    limit = nbytes / raw_s / 1e6
    report.add(
        f"raw write() of {FRAMES} frames",
        limit,
        "MB/s",
        note=f"{nbytes / 1e9:.2f} GB: the disk limit",
    )

    def ours(name: str, **options: object) -> Callable[[Path], None]:
        def run(path: Path) -> None:
            with open_writer(name, path, **options) as writer:
                for i, chunk in enumerate(calls):
                    first = i * FRAMES_PER_CALL
                    writer.write_frames(
                        "camera_1", chunk, timestamps_ns=stamps[first : first + len(chunk)]
                    )

        return run

    def h5py_plain(filters: dict[str, object], per_chunk: int) -> Callable[[Path], None]:
        def run(path: Path) -> None:
            with h5py.File(path, "w") as f:
                d = f.create_dataset(
                    "frames", shape=(0, 480, 640), maxshape=(None, 480, 640),
                    dtype=np.uint16, chunks=(per_chunk, 480, 640), **filters,
                )  # fmt: skip
                for chunk in calls:
                    n = d.shape[0]
                    d.resize(n + len(chunk), axis=0)
                    d[n:] = chunk

        return run

    def row(
        name: str,
        ours_run: Callable[[Path], None],
        raw_name: str,
        raw_run: Callable[[Path], None] | None,
        target: str,
        vs_disk: bool = False,
    ) -> None:
        seconds, size = timed(ours_run, tmp / target)
        raw_seconds = timed(raw_run, tmp / ("raw_" + target))[0] if raw_run else 0.0
        seconds = min(seconds, timed(ours_run, tmp / target)[0])
        mbs = nbytes / seconds / 1e6
        note = f"file {size / nbytes:.0%} of raw"
        if vs_disk:
            note += f"; {mbs / limit:.2f}x raw write()"
        if raw_run is not None:
            raw_seconds = min(raw_seconds, timed(raw_run, tmp / ("raw_" + target))[0])
            report.add(
                name, mbs, "MB/s", reference=raw_name, ratio=raw_seconds / seconds, note=note
            )
        else:
            report.add(name, mbs, "MB/s", note=note)

    blosc = dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    row("hdf5 none", ours("hdf5", compression="none"), "h5py, same chunks",
        h5py_plain({}, 1), "a.h5", vs_disk=True)  # fmt: skip
    row("hdf5 blosc-lz4 (threaded direct chunks)",
        ours("hdf5", compression="blosc-lz4", compression_level=5, chunk_size=1),
        "h5py + hdf5plugin filter pipeline", h5py_plain(blosc, 1), "b.h5")  # fmt: skip
    row("hdf5 gzip 4", ours("hdf5", compression="gzip", compression_level=4),
        "h5py gzip 4 + shuffle", h5py_plain({"compression": "gzip", "compression_opts": 4,
                                              "shuffle": True}, 1), "c.h5")  # fmt: skip

    def arrow_raw(path: Path) -> None:
        tensor = pa.fixed_shape_tensor(pa.uint16(), [480, 640])
        schema = pa.schema(
            [("timestamp_ns", pa.uint64()), ("frame_number", pa.uint64()), ("frame", tensor)]
        )
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as w:
            for i, chunk in enumerate(calls):
                storage = pa.FixedSizeListArray.from_arrays(pa.array(chunk.reshape(-1)), 480 * 640)
                first = i * FRAMES_PER_CALL
                numbers = np.arange(first, first + len(chunk), dtype=np.uint64)
                columns = [
                    pa.array(stamps[first : first + len(chunk)]),
                    pa.array(numbers),
                    pa.ExtensionArray.from_storage(tensor, storage),
                ]
                w.write_batch(pa.record_batch(columns, schema=schema))

    row(
        "arrow ipc stream",
        ours("arrow"),
        "pyarrow ipc stream writer",
        arrow_raw,
        "arrow_dir",
        vs_disk=True,
    )

    def tiff_raw(path: Path) -> None:
        with tifffile.TiffWriter(path, bigtiff=True) as tw:
            for chunk in calls:
                for frame in chunk:
                    tw.write(frame, contiguous=False, description="{}", metadata=None)

    row(
        "tiff none",
        ours("tiff", bigtiff=True),
        "tifffile page by page",
        tiff_raw,
        "tiff_dir",
        vs_disk=True,
    )

    def zarr_raw(path: Path) -> None:
        array = zarr.create_array(
            zarr.storage.LocalStore(path), shape=(0, 480, 640), chunks=(1, 480, 640),
            shards=(FRAMES_PER_CALL, 480, 640), dtype=np.uint16,
            compressors=zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        )  # fmt: skip
        for frame in frames:
            array.append(frame[None], axis=0)

    row("zarr v3 blosc-lz4, sharded", ours("zarr", compression="blosc-lz4", chunk_size=1,
                                           shard_frames=FRAMES_PER_CALL),
        "zarr-python, one append per frame", zarr_raw, "z.zarr")  # fmt: skip
    peer = acquire_zarr_run(frames)
    if peer is None:
        report.add("acquire-zarr (peer)", 0, "", note="acquire-zarr not installed")
    else:
        seconds, size = timed(peer, tmp / "aqz.zarr")
        report.add("acquire-zarr blosc-lz4, sharded (peer)", nbytes / seconds / 1e6, "MB/s",
                   note=f"file {size / nbytes:.0%} of raw")  # fmt: skip


def acquire_zarr_run(frames: np.ndarray) -> Callable[[Path], None] | None:
    try:
        import acquire_zarr as aqz
    except ImportError:
        return None

    def run(path: Path) -> None:
        def dim(name: str, kind: object, size: int, chunk: int, shard: int) -> object:
            return aqz.Dimension(name=name, kind=kind, array_size_px=size, chunk_size_px=chunk,
                                 shard_size_chunks=shard)  # fmt: skip

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
                    dim("y", aqz.DimensionType.SPACE, 480, 480, 1),
                    dim("x", aqz.DimensionType.SPACE, 640, 640, 1),
                ],
            )],
        )  # fmt: skip
        stream = aqz.ZarrStream(settings)
        for frame in frames:
            stream.append(frame)
        stream.close()

    return run


def bench_tables(report: Report, tmp: Path) -> None:
    meter = SimulatedPowerMeter(seed=0, start_ns=0)
    batches = [meter.read_batch(BATCH_ROWS) for _ in range(ROWS // BATCH_ROWS)]
    nbytes = sum(b.nbytes for b in batches)
    raw_bytes = [b.serialize().to_pybytes() for b in batches]
    raw_s, _ = timed(raw_write(raw_bytes), tmp / "raw.bin")
    report.add(f"raw write() of {ROWS / 1e6:.0f} M rows", nbytes / raw_s / 1e6, "MB/s",
               note=f"{nbytes / 1e6:.0f} MB of Arrow buffers")  # fmt: skip

    def ours(name: str, **options: object) -> Callable[[Path], None]:
        def run(path: Path) -> None:
            with open_writer(name, path, **options) as writer:
                for batch in batches:
                    writer.write_batch("power_meter_01", batch)

        return run

    def h5py_tables(path: Path) -> None:
        with h5py.File(path, "w") as f:
            g = f.create_group("power_meter_01")
            string = h5py.string_dtype("utf-8")
            dtypes = {
                "timestamp_ns": np.uint64,
                "channel": string,
                "value": np.float64,
                "unit": string,
            }
            for name, dtype in dtypes.items():
                g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                                 chunks=(131072 if dtype is not string else 4096,),
                                 **({"compression": "gzip", "compression_opts": 4, "shuffle": True}
                                    if dtype is not string else {}))  # fmt: skip
            columns = {name: g[name] for name in dtypes}  # handles kept, as a careful user would
            n = 0
            for batch in batches:
                for name, dataset in columns.items():
                    dataset.resize(n + batch.num_rows, axis=0)
                    dataset[n:] = batch.column(name).to_numpy(zero_copy_only=False)
                n += batch.num_rows

    def arrow_raw(path: Path) -> None:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, batches[0].schema) as w:
            for batch in batches:
                w.write_batch(batch)

    def parquet_raw(path: Path) -> None:
        pq.write_table(pa.Table.from_batches(batches), path, row_group_size=1_000_000)

    def csv_raw(path: Path) -> None:
        with pacsv.CSVWriter(str(path), batches[0].schema) as w:
            for batch in batches:
                w.write_batch(batch)

    for name, run, raw_name, raw_run, target, options in (
        ("hdf5 gzip 4", ours("hdf5"), "h5py per column, gzip 4", h5py_tables, "t.h5", None),
        ("arrow ipc", ours("arrow"), "pyarrow ipc writer", arrow_raw, "t_arrow", "disk"),
        ("parquet snappy", ours("parquet"), "pq.write_table", parquet_raw, "t_parquet", None),
        ("csv", ours("csv"), "pyarrow.csv writer", csv_raw, "t_csv", None),
    ):
        seconds, size = timed(run, tmp / target)
        raw_seconds, _ = timed(raw_run, tmp / ("raw_" + target))
        note = f"file {size / nbytes:.0%} of raw"
        if options == "disk":
            note += f"; {raw_s / seconds:.2f}x raw write()"
        report.add(f"{name}, 10k-row batches", ROWS / seconds / 1e6, "M rows/s",
                   reference=raw_name, ratio=raw_seconds / seconds, note=note)  # fmt: skip


def main() -> None:
    # First use of fixed_shape_tensor imports pandas (0.2 s): not what is being measured.
    frames_to_batch(FrameBlock(np.zeros((1, 1, 1), np.uint16), np.zeros(1, np.uint64),
                               np.zeros(1, np.uint64)))  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="daq_storage_bench_", dir=os.environ.get("DAQ_BENCH_DIR")))
    try:
        frames = Report(f"writers: {FRAMES} frames 640x480 uint16, {FRAMES_PER_CALL} per call")
        bench_frames(frames, tmp)
        frames.print()
        tables = Report(
            f"writers: {ROWS / 1e6:.0f} M power-meter rows in {BATCH_ROWS:,}-row batches"
        )
        bench_tables(tables, tmp)
        tables.print()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
