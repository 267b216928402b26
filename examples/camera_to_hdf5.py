"""Camera frames into HDF5: a wavelength scan that takes camera frames and logs the power
meter at each step, in one compressed, self-describing file that h5py, MATLAB
(``h5read``) and h5dump open without plugins (gzip).

Layout: ``/camera_1/frames`` (frames x y x x), ``/camera_1/timestamp_ns`` and
``/camera_1/frame_number``; one dataset per column for the tables (``/scan``: which
frames were taken at which wavelength; ``/power_meter_01``); metadata as attributes.

Run: python examples/camera_to_hdf5.py [OUTPUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa

from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter
from daq_storage.writers import open_writer

WAVELENGTHS_NM = [700, 750, 800, 850, 900, 950]
FRAMES_PER_STEP = 5
READINGS_PER_STEP = 100


def record(path: Path) -> None:
    camera = SimulatedCamera((240, 320), seed=0)
    meter = SimulatedPowerMeter(seed=0)
    # gzip level 5: readable everywhere; lz4 / zstd are faster but need hdf5plugin.
    with open_writer("hdf5", path, compression="gzip", compression_level=5) as writer:
        writer.set_metadata("experiment", "wavelength_scan")
        writer.set_metadata("instrument", "simulated 320x240 camera, power meter")
        writer.set_metadata("wavelengths_nm", WAVELENGTHS_NM)
        for wavelength in WAVELENGTHS_NM:
            block = camera.frames(FRAMES_PER_STEP)
            writer.write_frames("camera_1", block.frames, timestamps_ns=block.timestamps_ns,
                                frame_numbers=block.frame_numbers)  # fmt: skip
            stamps = block.timestamps_ns.astype(np.int64)
            steps = pa.record_batch({
                "timestamp_ns": pa.array(stamps, pa.timestamp("ns", tz="UTC")),
                "frame_number": pa.array(block.frame_numbers, pa.uint64()),
                "wavelength_nm": pa.array([wavelength] * FRAMES_PER_STEP, pa.float64()),
            })  # fmt: skip
            writer.write_batch("scan", steps)
            writer.write_batch("power_meter_01", meter.read_batch(READINGS_PER_STEP))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    path = out / "wavelength_scan_v1.h5"
    record(path)

    with h5py.File(path, "r") as f:
        frames = f["camera_1/frames"]
        raw = frames.size * frames.dtype.itemsize
        print(f"h5py: camera_1/frames {frames.shape} {frames.dtype}, {frames.compression}, "
              f"chunks {frames.chunks}")  # fmt: skip
        print(f"  stored in {frames.id.get_storage_size() / raw:.2f} of its raw size")
        print(f"  file attributes: experiment={f.attrs['experiment']}")
        # Which frames were taken at 800 nm: the scan table, column by column.
        wavelength = f["scan/wavelength_nm"][:]
        numbers = f["scan/frame_number"][:][wavelength == 800.0]
        print(f"  frames at 800 nm: {numbers.tolist()}")
        mean_at_800 = frames[np.flatnonzero(wavelength == 800.0)].mean()
        print(f"  mean count at 800 nm: {mean_at_800:.0f}")
        power = f["power_meter_01/value"]
        print(f"power_meter_01: {len(power)} rows in {power.attrs['units']}")


if __name__ == "__main__":
    main()
