"""A camera process writes frames into a shared-memory ring; this process records
every frame and, like a live viewer, peeks at the newest one.

The recorder is a registered consumer of a ring in ``overflow="block"`` mode, so the
camera waits for it rather than overwriting frames it has not read: every frame is
recorded. The live viewer is anonymous and never slows anyone down.

Run: python examples/ring_live_view.py
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

from daq_storage import RingBuffer, RingReader
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter

FRAMES = 200


def camera_process(path: str, frames: int, ready: Connection) -> None:
    """The acquisition side: attaches as the ring's writer, then writes."""
    with RingBuffer.open(path) as ring:
        ready.send(True)
        camera = SimulatedCamera(seed=0)
        meter = SimulatedPowerMeter(seed=0)
        for _ in range(frames):
            frame = camera.next_frame()
            ring.write_frame(
                frame.array,
                stream="camera_1",
                frame_number=frame.frame_number,
                timestamp_ns=frame.timestamp_ns,
                metadata={"exposure_ms": 10},
            )
            ring.write_batch(meter.read_batch(100), stream="power_meter_01")


def main() -> None:
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    path = shm / f"example_ring_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    ring = RingBuffer.create(path, capacity_bytes=64 << 20, overflow="block", block_timeout=30)
    try:
        with (
            RingReader.open(path, consumer="recorder") as recorder,
            RingReader.open(path) as viewer,
        ):
            ring.close()  # the camera process attaches as the writer
            context = multiprocessing.get_context("spawn")
            ready, ready_sender = context.Pipe(duplex=False)
            producer = context.Process(
                target=camera_process, args=(str(path), FRAMES, ready_sender)
            )
            producer.start()
            ready.recv()  # the camera is attached: from now on "no data" means "not yet"
            frames = rows = 0
            while True:
                records = recorder.read_many(256, timeout=0.1)
                if not records and not producer.is_alive():
                    records = recorder.read_many(1 << 20)  # what came before it exited
                    if not records:
                        break
                for record in records:
                    if record.kind == "frame":
                        frames += 1
                    else:
                        rows += record.batch().num_rows
                latest = viewer.read_latest("camera_1")
                if latest is not None and frames % 50 == 0:
                    print(
                        f"live view: frame {latest.frame_number}, mean {latest.array().mean():.0f}"
                    )
            producer.join()
            stats = recorder.stats()
            print(f"recorded {frames} frames and {rows} power-meter rows; "
                  f"lost {recorder.lost}, ring wrote {stats.written} records")  # fmt: skip
    finally:
        ring.close()
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
