"""The real path in a script: simulated instruments and a Recorder, each in a process of
its own, meeting at a ring in shared memory; then the files read back.

Run: python examples/recorder_and_instruments.py [output directory]

Both processes are spawned, so the script's top level is guarded by
``if __name__ == "__main__":`` (a spawned process imports the script again).
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path

import h5py
import polars as pl

from daq_storage import RingBuffer
from daq_storage.acquisition import InstrumentProcess
from daq_storage.config import default_ring_dir
from daq_storage.recorder import Recorder


def main(output_dir: Path) -> None:
    path = default_ring_dir() / f"example_ring_{uuid.uuid4().hex[:8]}"
    # Block mode: the instruments wait for the Recorder rather than lose data.
    ring = RingBuffer.create(path, capacity_bytes=32 << 20, overflow="block", block_timeout=30)
    recorder = Recorder(path, formats=["hdf5", "parquet"], output_dir=output_dir,
                        experiment="example")  # fmt: skip
    try:
        recorder.start()  # registered on the ring before any record is written
        ring.close()  # the instruments' process attaches as the ring's writer
        instruments = InstrumentProcess(path, frames=30, duration=0.3, paced=False)
        instruments.start()
        produced = instruments.wait()
        stats = recorder.stop()  # drains what the ring still holds, closes every file
    finally:
        recorder.stop()  # idempotent: a no-op after the stop above
        ring.close()
        path.unlink(missing_ok=True)
        recorder.stats_path.unlink(missing_ok=True)
    for name, count in produced.streams.items():
        unit = "frames" if count.kind == "frames" else "rows"
        print(f"{name}: produced {count.produced} {unit}, ring refused {count.dropped}")
    print(f"recorder: {stats.records} records, lost {stats.lost}, complete {stats.complete}")
    hdf5, parquet = stats.formats["hdf5"], stats.formats["parquet"]
    with h5py.File(hdf5.files[0]) as f:
        print(f"hdf5: camera_1 {f['camera_1/frames'].shape}, "
              f"power_meter_01 {len(f['power_meter_01/value'])} rows")  # fmt: skip
    table = next(Path(p) for p in parquet.files if Path(p).name == "power_meter_01.parquet")
    print(f"parquet: power_meter_01 {pl.read_parquet(table).height} rows")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
