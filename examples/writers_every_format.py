"""Write the same power-meter readings and camera frames in every format, then read
each file back with the tool a scientist would use.

Run: python examples/writers_every_format.py [OUTPUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import h5py
import polars as pl
import tifffile
import xarray as xr

from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter
from daq_storage.writers import available_writers, get_writer_class, open_writer


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    meter = SimulatedPowerMeter(seed=0)
    camera = SimulatedCamera((120, 160), seed=0)
    batch = meter.read_batch(1000)
    block = camera.frames(10)
    for name in available_writers():
        cls = get_writer_class(name)
        path = out / f"run{cls.suffixes[0]}"
        with open_writer(name, path) as writer:
            writer.set_metadata("experiment", "example")
            if cls.supports_tables:
                writer.write_batch("power_meter_01", batch)
            if cls.supports_frames:
                writer.write_frames("camera_1", block.frames, timestamps_ns=block.timestamps_ns,
                                    frame_numbers=block.frame_numbers)  # fmt: skip
        print(f"{name:8s} {writer.stats.file_size / 1e6:6.2f} MB  {path.name}")

    with h5py.File(out / "run.h5", "r") as f:
        print("h5py:", f["camera_1/frames"].shape, f["power_meter_01/value"][:3])
    print("polars:", pl.read_parquet(out / "run.parquet" / "power_meter_01.parquet").shape)
    print(
        "xarray:", dict(xr.open_zarr(out / "run.zarr", group="camera_1", consolidated=False).sizes)
    )
    print("tifffile:", tifffile.imread(out / "run.tif" / "camera_1.tif").shape)


if __name__ == "__main__":
    main()
