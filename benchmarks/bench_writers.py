"""Format writers: MB/s and file size, next to the raw library and a raw write() of the bytes.

``DAQ_BENCH_FRAMES`` (800) simulated 640x480 uint16 frames handed over 16 per call, and
``DAQ_BENCH_ROWS`` (3 M) power-meter rows in 10 k-row batches, written to a temporary
directory on the real disk (page cache included, as in a run; no flush until close).
``python -m benchmarks.bench_writers tables`` runs the tables alone.
Each writer and its references run alternately, and the best of ``DAQ_BENCH_REPEATS``
(3) runs of each is kept, so a burst of background write-back or of load on the other
core does not decide a ratio.

Two references where our writer is tuned beyond the library's defaults: the library as
a user calls it by default, and the library tuned the same way ("tuned alike": the
same buffering, chunking or threads). A ratio over 1.0 against defaults alone says only
that the tuning pays. acquire-zarr is compared in ``bench_zarr_peer``; the cost of
durable flushes in ``bench_durable``.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import tifffile
import zarr
import zarr.codecs
from numcodecs import Blosc, Shuffle

from benchmarks._harness import Report, scratch_directory
from benchmarks._writers import (
    BATCH_ROWS,
    FRAMES,
    FRAMES_PER_CALL,
    REPEATS,
    ROWS,
    SHAPE,
    Run,
    Timing,
    frames_run,
    interleaved,
    raw_write,
    tables_run,
)
from daq_storage.schema import FrameBlock, frames_to_batch
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter

GZIP_FRAMES = min(FRAMES, 200)  # gzip runs at ~100 MB/s: fewer frames, same ratio
SINK_BUFFER = 1 << 20  # what a careful pyarrow user puts between the IPC writer and the file
CSV_CHUNK_ROWS = 16_384  # our CSV writer's pyarrow batch_size (pyarrow's default: 1,024)
ZARR_TABLE_CHUNK = 65_536  # rows per chunk of our Zarr tables
PARQUET_GROUP_BYTES = 64 << 20  # our Parquet writer's row-group bound


# ---------------------------------------------------------------------------------- frames
def h5py_frames(calls: Sequence[np.ndarray], filters: dict[str, object]) -> Run:
    """What an h5py user writes: one resizable dataset, one chunk per frame."""

    def run(path: Path) -> None:
        with h5py.File(path, "w") as f:
            d = f.create_dataset(
                "frames", shape=(0, *SHAPE), maxshape=(None, *SHAPE), dtype=np.uint16,
                chunks=(1, *SHAPE), **filters,
            )  # fmt: skip
            for chunk in calls:
                n = d.shape[0]
                d.resize(n + len(chunk), axis=0)
                d[n:] = chunk

    return run


def h5py_direct(calls: Sequence[np.ndarray], filters: dict[str, object],
                encode: Callable[[np.ndarray], bytes]) -> Run:  # fmt: skip
    """h5py tuned as our writer is: frames compressed on a thread pool (one thread a
    core) and stored whole with ``write_direct_chunk``."""

    def run(path: Path) -> None:
        with h5py.File(path, "w") as f, ThreadPoolExecutor(os.cpu_count()) as pool:
            d = f.create_dataset(
                "frames", shape=(0, *SHAPE), maxshape=(None, *SHAPE), dtype=np.uint16,
                chunks=(1, *SHAPE), **filters,
            )  # fmt: skip
            for chunk in calls:
                n = d.shape[0]
                d.resize(n + len(chunk), axis=0)
                for i, data in enumerate(pool.map(encode, chunk), n):
                    d.id.write_direct_chunk((i, 0, 0), data)

    return run


def frame_batches(calls: Sequence[np.ndarray], stamps: np.ndarray) -> list[pa.RecordBatch]:
    batches, first = [], 0
    for chunk in calls:
        n = len(chunk)
        numbers = np.arange(first, first + n, dtype=np.uint64)
        block = FrameBlock(chunk, stamps[first : first + n], numbers)
        batches.append(frames_to_batch(block))
        first += n
    return batches


def arrow_stream(batches: Sequence[pa.RecordBatch], *, buffered: bool) -> Run:
    """pyarrow's IPC stream writer on a file, or (tuned) on a 1 MiB buffered sink."""

    def run(path: Path) -> None:
        with pa.OSFile(str(path), "wb") as raw:
            sink: Any = pa.BufferedOutputStream(raw, SINK_BUFFER) if buffered else raw
            with pa.ipc.new_stream(sink, batches[0].schema) as w:
                for batch in batches:
                    w.write_batch(batch)
            if buffered:
                sink.close()

    return run


def parquet_grouped(batches: Sequence[pa.RecordBatch]) -> Run:
    """pyarrow's ParquetWriter tuned as our writer is: batches gathered into row groups
    of up to 64 MiB (its default is a row group per ``write_batch`` call)."""

    def run(path: Path) -> None:
        with pq.ParquetWriter(str(path), batches[0].schema) as w:
            pending: list[pa.RecordBatch] = []
            size = 0
            for batch in batches:
                pending.append(batch)
                size += batch.nbytes
                if size >= PARQUET_GROUP_BYTES:
                    table = pa.Table.from_batches(pending)
                    w.write_table(table, row_group_size=table.num_rows)
                    pending, size = [], 0
            if pending:
                table = pa.Table.from_batches(pending)
                w.write_table(table, row_group_size=table.num_rows)

    return run


def bench_frames(report: Report, tmp: Path) -> None:
    frames = SimulatedCamera(seed=0, start_ns=0).frames(FRAMES).frames
    stamps = np.arange(FRAMES, dtype=np.uint64)
    nbytes = frames.nbytes
    calls = [frames[i : i + FRAMES_PER_CALL] for i in range(0, FRAMES, FRAMES_PER_CALL)]

    def ours(name: str, **options: Any) -> Run:
        return frames_run(name, calls, stamps, **options)

    def add(name: str, timings: dict[str, Timing], reference: str, *, tuned: str = "",
            count: int = FRAMES, note: str = "") -> None:  # fmt: skip
        size = count * frames[0].nbytes
        mine = timings["ours"]
        parts = [f"file {mine.size / size:.0%} of raw"]
        if "disk" in timings:
            parts.append(f"{timings['disk'].seconds / mine.seconds:.2f}x raw write()")
        if note:
            parts.append(note)
        report.add(name, size / mine.seconds / 1e6, "MB/s", reference=reference,
                   ratio=timings["raw"].seconds / mine.seconds, note="; ".join(parts),
                   tuned=tuned, tuned_ratio=(timings["tuned"].seconds / mine.seconds
                                             if "tuned" in timings else None))  # fmt: skip

    disk = raw_write(list(calls))
    limit = interleaved({"disk": disk}, tmp)["disk"].seconds
    report.add(f"raw write() of {FRAMES} frames", nbytes / limit / 1e6, "MB/s",
               note=f"{nbytes / 1e9:.2f} GB: the disk limit")  # fmt: skip

    add("hdf5 none (direct chunk writes)",
        interleaved({"ours": ours("hdf5", compression="none"),
                     "raw": h5py_frames(calls, {}), "disk": disk}, tmp),
        "h5py, same chunks")  # fmt: skip

    blosc_filter = dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    blosc = Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)
    add("hdf5 blosc-lz4 (threaded direct chunks)",
        interleaved({"ours": ours("hdf5", compression="blosc-lz4", compression_level=5),
                     "raw": h5py_frames(calls, blosc_filter),
                     "tuned": h5py_direct(calls, blosc_filter, blosc.encode)}, tmp),
        "h5py + hdf5plugin filter pipeline",
        tuned="h5py direct chunks, numcodecs blosc on a thread a core")  # fmt: skip

    few = frames[:GZIP_FRAMES]
    few_calls = [few[i : i + FRAMES_PER_CALL] for i in range(0, len(few), FRAMES_PER_CALL)]
    gzip = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    shuffle = Shuffle(elementsize=2)
    add(f"hdf5 gzip 4 + shuffle ({GZIP_FRAMES} frames)",
        interleaved({"ours": frames_run("hdf5", few_calls, stamps, compression="gzip",
                                        compression_level=4),
                     "raw": h5py_frames(few_calls, gzip),
                     "tuned": h5py_direct(few_calls, gzip,
                                          lambda f: zlib.compress(shuffle.encode(f), 4))}, tmp),
        "h5py, same filters", tuned="h5py direct chunks, zlib on a thread a core",
        count=GZIP_FRAMES)  # fmt: skip

    batches = frame_batches(calls, stamps)
    add("arrow ipc stream",
        interleaved({"ours": ours("arrow"), "raw": arrow_stream(batches, buffered=False),
                     "tuned": arrow_stream(batches, buffered=True), "disk": disk}, tmp),
        "pyarrow ipc stream writer", tuned="same, 1 MiB buffered sink")  # fmt: skip

    def parquet_raw(path: Path) -> None:
        with pq.ParquetWriter(str(path), batches[0].schema) as w:
            for batch in batches:
                w.write_batch(batch)

    add("parquet snappy",
        interleaved({"ours": ours("parquet"), "raw": parquet_raw,
                     "tuned": parquet_grouped(batches)}, tmp),
        "pyarrow ParquetWriter, a batch per call", tuned="same, 64 MiB row groups")  # fmt: skip

    def tiff_raw(path: Path) -> None:
        with tifffile.TiffWriter(path, bigtiff=True) as tw:
            for i, frame in enumerate(frames):
                description = f'{{"frame_number": {i}, "timestamp_ns": {int(stamps[i])}}}'
                tw.write(frame, contiguous=False, description=description, metadata=None)

    add("tiff none (own page writer)",
        interleaved({"ours": ours("tiff", bigtiff=True), "raw": tiff_raw, "disk": disk}, tmp),
        "tifffile, page by page with ids",
        note="tifffile has no setting to tune alike (per-page ids need a page a call)")  # fmt: skip

    def zarr_raw(path: Path) -> None:
        array = zarr.create_array(
            zarr.storage.LocalStore(path), shape=(0, *SHAPE), chunks=(1, *SHAPE),
            shards=(FRAMES_PER_CALL, *SHAPE), dtype=np.uint16,
            compressors=zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        )  # fmt: skip
        for chunk in calls:
            array.append(chunk, axis=0)

    add("zarr v3 blosc-lz4, 16-frame shards",
        interleaved({"ours": ours("zarr", compression="blosc-lz4",
                                  shard_frames=FRAMES_PER_CALL),
                     "raw": zarr_raw}, tmp),
        "zarr-python, a whole shard per append",
        note="same shards and codec: the reference is already alike")  # fmt: skip


# ---------------------------------------------------------------------------------- tables
def numpy_dtype(kind: pa.DataType) -> np.dtype[Any]:
    """How a careful user stores an Arrow column with numpy: times as int64 counts."""
    return np.dtype(np.int64 if pa.types.is_timestamp(kind) else kind.to_pandas_dtype())


def numpy_values(column: pa.Array | pa.ChunkedArray) -> np.ndarray[Any, Any]:
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    return np.asarray(column.to_numpy(zero_copy_only=False))


def zarr_tables(batches: Sequence[pa.RecordBatch], *, whole_chunks: bool) -> Run:
    """zarr-python, an array per column: an append per batch, or (tuned) rows gathered
    into whole 65,536-row chunks first, as our writer does."""
    schema = batches[0].schema

    def run(path: Path) -> None:
        group = zarr.open_group(zarr.storage.LocalStore(path), mode="w")
        arrays = {
            field.name: group.create_array(
                field.name, shape=(0,), chunks=(ZARR_TABLE_CHUNK,),
                dtype=str if pa.types.is_string(field.type) else numpy_dtype(field.type),
                compressors=zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
            )
            for field in schema
        }  # fmt: skip

        def append(table: pa.Table | pa.RecordBatch) -> None:
            for name, array in arrays.items():
                array.append(numpy_values(table.column(name)))

        if not whole_chunks:
            for batch in batches:
                append(batch)
            return
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in batches:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= ZARR_TABLE_CHUNK:
                table = pa.Table.from_batches(pending)
                whole = rows - rows % ZARR_TABLE_CHUNK
                append(table.slice(0, whole))
                pending = table.slice(whole).to_batches()
                rows -= whole
        if rows:
            append(pa.Table.from_batches(pending, schema=schema))

    return run


def h5py_tables(batches: Sequence[pa.RecordBatch], *, coded: bool) -> Run:
    """h5py, a dataset per column (gzip 4 + shuffle, handles kept, as a careful user
    would): text as variable-length strings (h5py's way), or (tuned as our writer is)
    as uint8 codes, gzip'd like the numbers, plus a dataset of categories."""
    string = h5py.string_dtype("utf-8")
    gzip = {"compression": "gzip", "compression_opts": 4, "shuffle": True}

    def run(path: Path) -> None:
        with h5py.File(path, "w") as f:
            g = f.create_group("power_meter_01")
            columns: dict[str, h5py.Dataset] = {}
            known: dict[str, dict[str, int]] = {}
            for field in batches[0].schema:
                text = pa.types.is_string(field.type)
                dtype = (np.uint8 if coded else string) if text else numpy_dtype(field.type)
                columns[field.name] = g.create_dataset(
                    field.name, shape=(0,), maxshape=(None,), dtype=dtype,
                    chunks=(131072 if coded or not text else 4096,),
                    **(gzip if coded or not text else {}),
                )  # fmt: skip
                if text and coded:
                    known[field.name] = {}
            n = 0
            for batch in batches:
                for name, dataset in columns.items():
                    column = batch.column(name)
                    if name in known:  # codes of the batch's distinct values, then of rows
                        encoded = pc.dictionary_encode(column)
                        codes = [known[name].setdefault(t, len(known[name]))
                                 for t in encoded.dictionary.to_pylist()]  # fmt: skip
                        values = np.asarray(codes, np.uint8)[encoded.indices.to_numpy()]
                    else:
                        values = numpy_values(column)
                    dataset.resize(n + batch.num_rows, axis=0)
                    dataset[n:] = values
                n += batch.num_rows
            for name, categories in known.items():
                g.create_dataset(f"{name}.categories", data=list(categories), dtype=string)

    return run


def csv_writer(batches: Sequence[pa.RecordBatch], *, batch_size: int | None) -> Run:
    """pyarrow's CSV writer, with its default batch size or ours."""
    options = pacsv.WriteOptions() if batch_size is None else pacsv.WriteOptions(
        batch_size=batch_size)  # fmt: skip

    def run(path: Path) -> None:
        with pacsv.CSVWriter(str(path), batches[0].schema, write_options=options) as w:
            for batch in batches:
                w.write_batch(batch)

    return run


def bench_tables(report: Report, tmp: Path) -> None:
    meter = SimulatedPowerMeter(seed=0, start_ns=0)
    batches = [meter.read_batch(BATCH_ROWS) for _ in range(ROWS // BATCH_ROWS)]
    nbytes = sum(b.nbytes for b in batches)
    disk = raw_write([b.serialize().to_pybytes() for b in batches])
    limit = interleaved({"disk": disk}, tmp)["disk"].seconds
    report.add(f"raw write() of {ROWS / 1e6:g} M rows", nbytes / limit / 1e6, "MB/s",
               note=f"{nbytes / 1e6:.0f} MB of Arrow buffers")  # fmt: skip

    def parquet_raw(path: Path) -> None:
        pq.write_table(pa.Table.from_batches(batches), path, row_group_size=1_000_000)

    h5py_text = "h5py per column, gzip 4, handles kept, text as vlen strings"
    # (name, our writer and its options, reference, its name, tuned reference, its name,
    # vs raw write())
    cases: list[tuple[str, str, dict[str, Any], Run, str, Run | None, str, bool]] = [
        ("hdf5 gzip 4, text as codes (strings=auto)", "hdf5", {},
         h5py_tables(batches, coded=False), h5py_text, h5py_tables(batches, coded=True),
         "same, text as uint8 codes + categories", False),
        ("hdf5 gzip 4, text as vlen (strings=vlen)", "hdf5", {"strings": "vlen"},
         h5py_tables(batches, coded=False), h5py_text, None, "", False),
        ("arrow ipc", "arrow", {}, arrow_stream(batches, buffered=False), "pyarrow ipc writer",
         arrow_stream(batches, buffered=True), "same, 1 MiB buffered sink", True),
        ("parquet snappy", "parquet", {}, parquet_raw, "pq.write_table, 1 M-row groups",
         None, "", False),
        ("csv", "csv", {}, csv_writer(batches, batch_size=None), "pyarrow.csv writer",
         csv_writer(batches, batch_size=CSV_CHUNK_ROWS), "same, 16,384-row batch_size", False),
        ("zarr blosc-lz4", "zarr", {}, zarr_tables(batches, whole_chunks=False),
         "zarr-python, an append per batch and column",
         zarr_tables(batches, whole_chunks=True), "same, rows gathered to whole chunks", False),
    ]  # fmt: skip
    for name, writer, options, raw_run, raw_name, tuned_run, tuned_name, versus_disk in cases:
        runs = {"ours": tables_run(writer, batches, **options), "raw": raw_run}
        if tuned_run is not None:
            runs["tuned"] = tuned_run
        timings = interleaved(runs, tmp)
        mine = timings["ours"]
        note = f"file {mine.size / nbytes:.0%} of raw"
        if writer == "hdf5":  # the references' files: like is compared with like
            note += f" (h5py: {timings['raw'].size / nbytes:.0%}"
            if tuned_run is not None:
                note += f", tuned {timings['tuned'].size / nbytes:.0%}"
            note += ")"
        if versus_disk:
            note += f"; {limit / mine.seconds:.2f}x raw write()"
        if tuned_run is None:
            note += "; the reference is already alike"
        report.add(f"{name}, 10k-row batches", ROWS / mine.seconds / 1e6, "M rows/s",
                   reference=raw_name, ratio=timings["raw"].seconds / mine.seconds, note=note,
                   tuned=tuned_name, tuned_ratio=(timings["tuned"].seconds / mine.seconds
                                                  if tuned_run is not None else None))  # fmt: skip


def main(parts: Sequence[str] = ()) -> None:
    """Frames and tables, or the ``parts`` named (``frames``, ``tables``)."""
    parts = parts or ("frames", "tables")
    # First use of fixed_shape_tensor imports pandas (0.2 s): not what is being measured.
    frames_to_batch(FrameBlock(np.zeros((1, 1, 1), np.uint16), np.zeros(1, np.uint64),
                               np.zeros(1, np.uint64)))  # fmt: skip
    with scratch_directory() as tmp:
        if "frames" in parts:
            frames = Report(
                f"writers: {FRAMES} frames 640x480 uint16, {FRAMES_PER_CALL} per call, "
                f"best of {REPEATS} interleaved runs"
            )
            bench_frames(frames, tmp)
            frames.print()
        if "tables" not in parts:
            return
        tables = Report(
            f"writers: {ROWS / 1e6:g} M power-meter rows in {BATCH_ROWS:,}-row batches, "
            f"best of {REPEATS} interleaved runs"
        )
        bench_tables(tables, tmp)
        tables.print()


if __name__ == "__main__":
    main(sys.argv[1:])
