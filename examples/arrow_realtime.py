"""Real-time optical power: a power meter process streams readings into a shared-memory
ring at 10 kHz; this process, a consumer of the ring, watches them live (a running
mean over the newest batch) and appends every batch to an Arrow IPC stream file, the
format to pick when write speed matters. The file can be read while it grows.

The ring is in ``overflow="block"`` mode and the consumer is registered, so the meter
waits rather than overwrite readings not yet stored: every reading reaches the file.

Run: python examples/arrow_realtime.py [OUTPUT_DIR]
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

import polars as pl

from daq_storage import RingBuffer, RingReader
from daq_storage.config import default_ring_dir
from daq_storage.sim import SimulatedPowerMeter
from daq_storage.writers import open_writer

BATCHES = 50  # of 100 readings: half a second at 10 kHz
ROWS_PER_BATCH = 100


def power_meter(path: str, ready: Connection) -> None:
    """The instrument's process: the ring's writer, at the meter's real rate."""
    meter = SimulatedPowerMeter(rate_hz=10_000.0, seed=0)
    with RingBuffer.open(path) as ring:
        ready.send(True)
        start = time.monotonic()
        for i in range(BATCHES):
            ring.write_batch(meter.read_batch(ROWS_PER_BATCH), stream="power_meter_01")
            # Paced like the instrument: batch i is ready (i + 1) x 10 ms after the start.
            time.sleep(max(0.0, start + (i + 1) * ROWS_PER_BATCH / 10_000.0 - time.monotonic()))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    path = default_ring_dir() / f"example_arrow_ring_{uuid.uuid4().hex[:8]}"
    ring = RingBuffer.create(path, capacity_bytes=8 << 20, overflow="block", block_timeout=30)
    run = out / "live_power"  # a directory: one .arrows file per stream
    try:
        with (
            RingReader.open(path, consumer="live_monitor") as consumer,
            open_writer("arrow", run) as writer,
        ):
            ring.close()  # the meter's process attaches as the writer
            context = multiprocessing.get_context("spawn")
            ready, ready_sender = context.Pipe(duplex=False)
            meter = context.Process(target=power_meter, args=(str(path), ready_sender))
            meter.start()
            ready.recv()  # attached: from now on "no record" means "not yet"
            rows = batches = 0
            while True:
                records = consumer.read_many(64, timeout=0.1)
                if not records and not meter.is_alive():
                    records = consumer.read_many(1 << 20)  # what came before it ended
                    if not records:
                        break
                for record in records:
                    batch = record.batch()
                    writer.write_batch("power_meter_01", batch)
                    rows += batch.num_rows
                    batches += 1
                    if batches == BATCHES // 2:
                        # Another program may read the file while it is being written:
                        # each batch is published as it is written.
                        growing = pl.read_ipc_stream(run / "power_meter_01.arrows")
                        print(f"read while recording: {growing.height} of {rows} rows so far")
                    if batches % 10 == 0:  # the live view, every 100 ms of readings
                        mean = batch.column("value").to_numpy().mean()
                        print(f"live: {rows:5d} readings, newest mean {mean * 1e3:.3f} mW")
            meter.join()
            lost = consumer.lost
    finally:
        ring.close()
        path.unlink(missing_ok=True)
    table = pl.read_ipc_stream(run / "power_meter_01.arrows")
    print(f"recorded {rows} readings in {batches} batches, lost {lost}")
    print(f"polars: {table.shape}, columns {table.columns}")
    print(f"mean power {table['value'].to_numpy().mean() * 1e3:.3f} mW")


if __name__ == "__main__":
    main()
