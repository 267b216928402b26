"""CSV export after the experiment: the power meter's readings of an HDF5 run as CSV
files for Excel or a collaborator, two ways.

1. ``convert_run`` (on the command line: ``daq-storage convert run.h5 run_csv --format
   csv --streams power_meter_01``): the stream copied as it is, in batches (any size
   fits in memory), its metadata in ``metadata.json`` beside it, nothing overwritten.
2. ``open_run`` and polars: a table of your own (here the power in mW) for one CSV file.

CSV suits a simple time series; never images or large data (text is slow and big).

Run: python examples/csv_export.py [OUTPUT_DIR]
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import polars as pl

from daq_storage.read import open_run
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter
from daq_storage.tools import convert_run
from daq_storage.writers import open_writer


def record(path: Path) -> None:
    """The experiment: camera frames and 2,000 power readings, into HDF5."""
    camera, meter = SimulatedCamera((60, 80), seed=0), SimulatedPowerMeter(seed=0)
    with open_writer("hdf5", path) as writer:
        block = camera.frames(5)
        writer.write_frames("camera_1", block.frames, timestamps_ns=block.timestamps_ns,
                            frame_numbers=block.frame_numbers)  # fmt: skip
        writer.write_batch("power_meter_01", meter.read_batch(2000))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    run = out / "experiment_v1.h5"
    record(run)

    # 1. The stream as it is. Frames have no CSV form: only the table is asked for.
    target = out / "experiment_csv"
    result = convert_run(run, target, format="csv", streams=["power_meter_01"])
    files = sorted(p.name for p in target.iterdir())
    print(f"convert: {result.source_format} -> {result.format}, files {files}")
    with open(target / "power_meter_01.csv", newline="") as f:
        rows = list(csv.reader(f))
    print(f"  header {rows[0]}, {len(rows) - 1} rows")

    # 2. A table of your own: time and power in mW (the design notes' export script).
    with open_run(run) as recorded:
        power = recorded.polars("power_meter_01", ["timestamp_ns", "value"])
    table = power.select(
        pl.col("timestamp_ns").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").alias("timestamp"),
        (pl.col("value") * 1e3).alias("power_mW"),
    )
    table.write_csv(out / "power_mW.csv")
    back = pl.read_csv(out / "power_mW.csv")
    print(f"power_mW.csv: {back.columns}, {back.height} rows, "
          f"mean {back['power_mW'].to_numpy().mean():.3f} mW")  # fmt: skip


if __name__ == "__main__":
    main()
