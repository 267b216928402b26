"""The ring over Arrow Flight: a loopback subscriber's throughput against a local
RingReader and a memcpy of the same frames in the same run, and the ring writer's p99
``write_frame`` latency with 0, 1 and 4 remote subscribers (service and subscribers in
processes of their own, as deployed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks._harness import Report, best_time, console
from daq_storage.flight import FlightService, connect
from daq_storage.ring import RingBuffer, RingReader

_SUBSCRIBER = """
import sys
from daq_storage.flight import connect
url, last = sys.argv[1], int(sys.argv[2])
with connect(url) as client, client.subscribe("camera", start="latest") as subscription:
    rows = lost = 0
    for n, batch in enumerate(subscription):
        rows += batch.data.num_rows
        lost += batch.lost
        if n == 0:
            print("ready", flush=True)
        if batch.info.last_seq >= last:
            break
print(rows, lost, flush=True)
"""


@dataclass(frozen=True)
class Sizes:
    frames: int = 400
    shape: tuple[int, int] = (480, 640)
    latency_frames: int = 2000
    subscribers: tuple[int, ...] = (0, 1, 4)
    repeats: int = 3


def _ring_path(tag: str) -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(os.environ.get("TMPDIR", "/tmp"))
    return base / f"daq_bench_flight_{os.getpid()}_{tag}"


def _throughput(report: Report, sizes: Sizes) -> None:
    frame = np.random.default_rng(0).integers(0, 4096, sizes.shape, np.uint16)
    total = frame.nbytes * sizes.frames
    path = _ring_path("throughput")
    with RingBuffer.create(path, capacity_bytes=total + (8 << 20), exist_ok=True) as writer:
        for i in range(sizes.frames):
            writer.write_frame(frame, stream="camera", frame_number=i)
        last = sizes.frames - 1

        def local() -> None:
            with RingReader.open(path) as reader:
                seen = 0
                while seen < sizes.frames:
                    records = reader.read_many(64)
                    seen += len(records)
                    np.stack([r.array() for r in records])

        block = np.stack([frame] * min(sizes.frames, 64))

        def memcpy() -> None:
            for _ in range(0, sizes.frames, len(block)):
                block.copy()

        with FlightService(path) as service, connect(service.url) as client:

            def flight() -> None:
                with client.subscribe("camera") as subscription:
                    for batch in subscription:
                        batch.frames()
                        if batch.info.last_seq >= last:
                            break

            flight_s = best_time(flight, repeat=sizes.repeats)
        local_s = best_time(local, repeat=sizes.repeats)
        copy_s = best_time(memcpy, repeat=sizes.repeats)
    path.unlink()
    mb = total / 1e6
    name = f"{sizes.frames} frames {sizes.shape[1]}x{sizes.shape[0]} uint16"
    report.add(f"Flight DoGet (loopback), {name}", mb / flight_s, "MB/s",
               reference="local RingReader", ratio=local_s / flight_s,
               note=f"{sizes.frames / flight_s:,.0f} frames/s")  # fmt: skip
    report.add("  local RingReader read_many + array()", mb / local_s, "MB/s",
               reference="memcpy", ratio=copy_s / local_s,
               note=f"{sizes.frames / local_s:,.0f} frames/s")  # fmt: skip
    report.add("  memcpy of the same frames (limit)", mb / copy_s, "MB/s")


def _p99_with(count: int, sizes: Sizes) -> tuple[float, int]:
    """The writer's p99 write_frame latency (s) with ``count`` remote subscribers, and
    the frames they received in all."""
    frame = np.zeros((sizes.shape[0] // 2, sizes.shape[1] // 2), np.uint16)
    path = _ring_path(f"latency{count}")
    writer = RingBuffer.create(path, capacity_bytes=64 << 20, exist_ok=True)
    writer.write_frame(frame, stream="camera")
    command = [sys.executable, "-m", "daq_storage.cli", "serve", "--ring", str(path), "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    clients: list[subprocess.Popen[str]] = []
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        last = sizes.latency_frames
        for _ in range(count):
            clients.append(subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, url, str(last)],
                                            stdout=subprocess.PIPE, text=True))  # fmt: skip
        for client in clients:
            assert client.stdout is not None
            assert client.stdout.readline() == "ready\n"
        times = np.empty(sizes.latency_frames)
        for i in range(sizes.latency_frames):
            t0 = time.perf_counter()
            writer.write_frame(frame, stream="camera")
            times[i] = time.perf_counter() - t0
        received = 0
        for client in clients:
            out, _ = client.communicate(timeout=120)
            rows, lost = map(int, out.split())
            assert rows + lost >= sizes.latency_frames  # every frame delivered or counted lost
            received += rows
        return float(np.percentile(times, 99)), received
    finally:
        for process in [*clients, server]:
            if process.poll() is None:
                process.terminate()
            process.wait(30)
            if process.stdout is not None:
                process.stdout.close()
        writer.close()
        path.unlink()


def _latency(report: Report, sizes: Sizes) -> None:
    """Each count of subscribers measured ``repeats`` times, the counts alternated: the
    median p99 is reported (one p99 of a few thousand writes on a shared machine is one
    scheduling hiccup away from another)."""
    p99s: dict[int, list[float]] = {count: [] for count in sizes.subscribers}
    received: dict[int, int] = dict.fromkeys(sizes.subscribers, 0)
    for _ in range(sizes.repeats):
        for count in sizes.subscribers:
            p99, got = _p99_with(count, sizes)
            p99s[count].append(p99)
            received[count] += got
    baseline = float(np.median(p99s[sizes.subscribers[0]]))
    for count in sizes.subscribers:
        median = float(np.median(p99s[count]))
        spread = ", ".join(f"{p * 1e6:.1f}" for p in sorted(p99s[count]))
        report.add(f"writer p99 write_frame, {count} remote subscriber(s)", median * 1e6, "µs",
                   reference="no subscriber", ratio=baseline / median,
                   note=f"median of {spread} µs; {received[count]:,} frames received")  # fmt: skip


def main(sizes: Sizes | None = None) -> None:
    sizes = sizes or Sizes()
    report = Report("ring over Arrow Flight (loopback)")
    _throughput(report, sizes)
    _latency(report, sizes)
    report.print()
    console.print("ratios: over 1.0 = faster than the reference; latency ratio = median p99 "
                  "without subscribers / median p99 with them")  # fmt: skip


if __name__ == "__main__":
    main()
