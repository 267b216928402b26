"""Write the same power-meter readings, DAQ samples and camera frames in every format,
then read each back with the tool a scientist would use.

HDF5 writes one file (``run_hdf5.h5``) and Zarr one store (``run_zarr.zarr``); Arrow,
Parquet, CSV and TIFF write a plain directory holding one file per stream
(``run_parquet/power_meter_01.parquet``, ...): the writer's ``path_suffix`` says which.

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

from daq_storage.sim import SimulatedCamera, SimulatedDaqCard, SimulatedPowerMeter
from daq_storage.writers import available_writers, get_writer_class, open_writer


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    meter = SimulatedPowerMeter(seed=0)
    card = SimulatedDaqCard(4, sample_rate=10_000, seed=0)
    camera = SimulatedCamera((120, 160), seed=0)
    batch = meter.read_batch(1000)
    samples = card.read_block(1000).to_record_batch()
    block = camera.frames(10)
    for name in available_writers():
        cls = get_writer_class(name)
        path = out / f"run_{name}{cls.path_suffix}"
        with open_writer(name, path) as writer:
            writer.set_metadata("experiment", "example")
            if cls.supports_tables:
                writer.write_batch("power_meter_01", batch)
                writer.write_batch("daq_card", samples)
            if cls.supports_frames:
                writer.write_frames("camera_1", block.frames, timestamps_ns=block.timestamps_ns,
                                    frame_numbers=block.frame_numbers)  # fmt: skip
        files = ", ".join(p.name for p in writer.stats.files)
        print(f"{name:8s} {writer.stats.file_size / 1e6:6.2f} MB  {path.name}: {files}")

    with h5py.File(out / "run_hdf5.h5", "r") as f:
        print("h5py:", f["camera_1/frames"].shape, f["power_meter_01/value"][:3],
              f["power_meter_01/value"].attrs["units"],
              "DAQ sample rate", f["daq_card"].attrs["sample_rate"])  # fmt: skip
    power = pl.read_parquet(out / "run_parquet" / "power_meter_01.parquet")
    print("polars:", power.shape)
    print("  timestamp_ns:", power.schema["timestamp_ns"])
    daq = xr.open_zarr(out / "run_zarr.zarr", group="daq_card")
    print("xarray:", dict(daq.sizes), f"ai0 in {daq['ai0'].attrs['units']}:",
          daq["ai0"].values[:3])  # fmt: skip
    print("tifffile:", tifffile.imread(out / "run_tiff" / "camera_1.tif").shape)


if __name__ == "__main__":
    main()
