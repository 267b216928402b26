"""Ring buffer throughput, each figure next to its physical reference from the same run.

Frames against a numpy copy of the same frame into the same mapping; single 64-byte
records against a Python loop copying the same bytes into the mapping (what one Python
call per record costs at least); batches of records against memcpy of the same bytes.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks._harness import Report, best_time
from daq_storage.ring import RingBuffer, RingReader
from daq_storage.ring._platform import LARGE_COPY_BYTES, NEEDS_FENCE, store_fence
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter

FRAMES = 300  # 184 MB: fits the 256 MiB ring, so readers see every frame


def ring_path() -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return base / f"daq_storage_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def bench_frames(report: Report) -> None:
    frame = SimulatedCamera(seed=0, start_ns=0).next_frame().array
    path = ring_path()
    ring = RingBuffer.create(path, capacity_bytes=256 << 20)
    try:
        # The memcpy limit: the same frame copied to successive places of the same
        # (pre-faulted, cold-cache) mapping, as the ring writes it; and the same copies each
        # followed by the fence write_frame issues after copying LARGE_COPY_BYTES or more
        # (non-temporal stores are weakly ordered). Rounds alternate, best of 7 each.
        mapping = np.frombuffer(ring._ring.buf, np.uint8)
        base, span = ring._ring.data_offset, frame.nbytes + 128
        copy_s = fenced_s = float("inf")
        for round_ in range(14):
            fenced = round_ % 2 == 1
            started = time.perf_counter()
            for i in range(FRAMES):
                at = base + i * span
                target = mapping[at : at + frame.nbytes].view(np.uint16).reshape(frame.shape)
                np.copyto(target, frame)
                if fenced:
                    store_fence()
            elapsed = (time.perf_counter() - started) / FRAMES
            if fenced:
                fenced_s = min(fenced_s, elapsed)
            else:
                copy_s = min(copy_s, elapsed)
        del mapping, target
    finally:
        ring.close()
        ring.unlink()
    ring = RingBuffer.create(path, capacity_bytes=256 << 20)
    copy_reader = RingReader.open(path)
    view_reader = RingReader.open(path)
    try:
        started = time.perf_counter()
        for _ in range(FRAMES):
            ring.write_frame(frame, stream="camera_1", timestamp_ns=0)
        write_s = (time.perf_counter() - started) / FRAMES
        report.add("  numpy copy + store fence", fenced_s * 1e6, "µs/frame",
                   reference="numpy copy", ratio=copy_s / fenced_s,
                   note=f"the fence after a {frame.nbytes // 1024} KiB copy: "
                   f"{(fenced_s - copy_s) * 1e6:+.2f} µs")  # fmt: skip
        report.add("write_frame 640x480 uint16", write_s * 1e6, "µs/frame",
                   reference="numpy copy into the mapping", ratio=copy_s / write_s,
                   note=f"{frame.nbytes / write_s / 1e9:.1f} GB/s; memcpy {copy_s * 1e6:.0f} µs"
                   )  # fmt: skip
        started = time.perf_counter()
        for _ in range(FRAMES):
            record = copy_reader.read_next()
            assert record is not None
            record.array()
        read_s = (time.perf_counter() - started) / FRAMES
        report.add("read_next + array() (copy)", read_s * 1e6, "µs/frame",
                   reference="numpy copy", ratio=copy_s / read_s)  # fmt: skip
        started = time.perf_counter()
        for _ in range(FRAMES):
            record = view_reader.read_next(copy=False)
            assert record is not None
            record.array()
        view_s = (time.perf_counter() - started) / FRAMES
        report.add("read_next + array() (zero-copy)", view_s * 1e6, "µs/frame",
                   note="a view of the mapping: no bytes move")  # fmt: skip
        latest_s = best_time(lambda: view_reader.read_latest("camera_1"), repeat=200)
        report.add("read_latest (live view, copies)", latest_s * 1e6, "µs/frame",
                   reference="numpy copy", ratio=copy_s / latest_s,
                   note=f"{1 / latest_s:,.0f} frames/s possible")  # fmt: skip
    finally:
        copy_reader.close()
        view_reader.close()
        ring.close()
        ring.unlink()


def bench_small_records(report: Report) -> None:
    n = 300_000
    payload = bytes(64)
    rows = np.zeros((n, 64), np.uint8)
    path = ring_path()
    ring = RingBuffer.create(path, capacity_bytes=256 << 20)
    reader = RingReader.open(path)
    try:
        # A Python loop copying each 64-byte record into the mapping: the least one
        # Python call per record costs (before the ring is written, so it stays empty).
        mapping = memoryview(ring._ring.buf)
        base = ring._ring.data_offset

        def loop_copies() -> None:
            for i in range(n):
                at = base + (i % 1024) * 96
                mapping[at : at + 64] = payload

        loop = n / best_time(loop_copies, repeat=3)
        mapping.release()
        started = time.perf_counter()
        for _ in range(n):
            ring.write(payload, stream="power_meter_01", timestamp_ns=0)
        single = n / (time.perf_counter() - started)
        report.add("write() 64-byte records", single, "records/s",
                   reference="Python loop copying 64 bytes", ratio=single / loop,
                   note=f"the loop: {loop:,.0f} records/s")  # fmt: skip
        started = time.perf_counter()
        ring.write_many(rows, stream="power_meter_01", timestamps_ns=np.zeros(n, np.uint64))
        batched = n / (time.perf_counter() - started)
        # 64-byte payload + 32-byte header: the ring moves 96 bytes per record.
        source, target = np.ones(n * 96, np.uint8), np.empty(n * 96, np.uint8)
        reference = n / best_time(lambda: np.copyto(target, source), repeat=3)
        report.add("write_many() 64-byte records", batched, "records/s",
                   reference="memcpy of the same 96-byte records", ratio=batched / reference,
                   note=f"memcpy: {reference:,.0f} records/s")  # fmt: skip
        started = time.perf_counter()
        count = 0
        while batch := reader.read_many(8192):
            count += len(batch)
        many = count / (time.perf_counter() - started)
        report.add("read_many() 64-byte records", many, "records/s", note=f"{count:,} read")
        reader.close()
        reader = RingReader.open(path)
        started = time.perf_counter()
        count = 0
        while reader.read_next() is not None:
            count += 1
        report.add("read_next() 64-byte records", count / (time.perf_counter() - started),
                   "records/s")  # fmt: skip
    finally:
        reader.close()
        ring.close()
        ring.unlink()


def _read_batches(reader: RingReader) -> float:
    """Batches per second read with read_many and rebuilt with batch(), to the tail."""
    started = time.perf_counter()
    count = 0
    while records := reader.read_many(1024):
        for record in records:
            record.batch()
        count += len(records)
    return count / (time.perf_counter() - started)


def bench_arrow(report: Report) -> None:
    meter = SimulatedPowerMeter(seed=0, start_ns=0)
    batch = meter.read_batch(1000)  # 1,000 rows x 4 columns
    n = 5000
    path = ring_path()
    ring = RingBuffer.create(path, capacity_bytes=256 << 20)
    reader = RingReader.open(path)
    try:
        started = time.perf_counter()
        for _ in range(n):
            ring.write_batch(batch, stream="power_meter_01", timestamp_ns=0)
        written = n / (time.perf_counter() - started)
        serialize = 1 / best_time(batch.serialize, repeat=200)
        report.add("write_batch 1,000 x 4", written, "batches/s",
                   reference="batch.serialize() alone", ratio=written / serialize,
                   note=f"{written * 1000 / 1e6:.1f} M rows/s")  # fmt: skip
        read = _read_batches(reader)
        report.add("read_many + batch() 1,000 x 4", read, "batches/s",
                   note=f"{read * 1000 / 1e6:.1f} M rows/s; 2 string columns: batches "
                   "validated in full (offsets, UTF-8)")  # fmt: skip
        # Fixed-width columns only: no offsets or text, so only the cheap size checks.
        numeric = batch.select(["timestamp_ns", "value"])
        for _ in range(n):
            ring.write_batch(numeric, stream="power_meter_numeric", timestamp_ns=0)
        read = _read_batches(reader)
        report.add("read_many + batch() 1,000 x 2 numeric", read, "batches/s",
                   note=f"{read * 1000 / 1e6:.1f} M rows/s; size checks only")  # fmt: skip
    finally:
        reader.close()
        ring.close()
        ring.unlink()


def bench_fence(report: Report) -> None:
    def fences() -> None:
        for _ in range(10_000):
            store_fence()

    cost = best_time(fences, repeat=5) / 10_000
    report.add("libatomic fence via ctypes, alone", cost * 1e6, "µs/call",
               note=("4 per record on this CPU" if NEEDS_FENCE else
                     f"x86-64: once per record after copies >= {LARGE_COPY_BYTES >> 10} KiB; "
                     "4 per record on aarch64"))  # fmt: skip


def main() -> None:
    report = Report("ring buffer (/dev/shm, 256 MiB)")
    bench_frames(report)
    bench_small_records(report)
    bench_arrow(report)
    bench_fence(report)
    report.print()


if __name__ == "__main__":
    main()
