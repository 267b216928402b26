"""A nested scan as one 4-D Zarr V3 array: wavelength x position x y x x, with dimension
names and coordinates, so xarray opens it with named dimensions and selects by value.

The array is chunked as the scan fills it, one chunk per position holding every
wavelength (chunks ``(10, 1, 128, 128)``): each write fills whole chunks, and a reader
can take one position's spectrum of images without touching the others.

Run: python examples/zarr_nested_scan.py [OUTPUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from daq_storage.sim import SimulatedCamera
from daq_storage.writers import ZarrWriter

WAVELENGTHS_NM = np.arange(700.0, 950.0, 25.0)  # 10 steps
POSITIONS_MM = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
SHAPE_YX = (128, 128)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    store = out / "experiment.zarr"
    camera = SimulatedCamera(SHAPE_YX, seed=0)
    # The sample's (simulated) response peaks at 800 nm.
    response = np.exp(-(((WAVELENGTHS_NM - 800.0) / 80.0) ** 2))
    with ZarrWriter(store) as writer:  # open_writer("zarr", ...) makes the same writer
        writer.set_metadata("experiment", "wavelength_position_scan")
        writer.create_array(
            "camera_frames",
            shape=(len(WAVELENGTHS_NM), len(POSITIONS_MM), *SHAPE_YX),
            chunks=(len(WAVELENGTHS_NM), 1, *SHAPE_YX),  # every wavelength, one position
            dimension_names=("wavelength", "position", "y", "x"),
            dtype=np.uint16,
            attributes={"units": "counts", "camera": "simulated 128x128"},
        )
        # 1-D arrays named after their dimension: xarray's coordinates.
        for name, values, units in (("wavelength", WAVELENGTHS_NM, "nm"),
                                    ("position", POSITIONS_MM, "mm")):  # fmt: skip
            writer.create_array(name, values.shape, values.shape, dimension_names=(name,),
                                dtype=np.float64, attributes={"units": units})  # fmt: skip
            writer.write_chunk(name, (0,), values)
        for p in range(len(POSITIONS_MM)):
            frames = camera.frames(len(WAVELENGTHS_NM)).frames.astype(np.float64)
            spectrum = (frames * response[:, None, None]).astype(np.uint16)
            writer.write_chunk("camera_frames", (0, p, 0, 0), spectrum[:, np.newaxis])

    ds = xr.open_zarr(store, consolidated=False)
    frames = ds["camera_frames"]
    print(f"xarray: camera_frames {dict(frames.sizes)}")
    print(f"  dims {frames.dims}, chunks {frames.encoding['chunks']}")
    brightest = frames.mean(dim=("position", "y", "x")).idxmax("wavelength")
    print(f"  brightest wavelength: {float(brightest):.0f} nm")
    one = frames.sel(wavelength=800.0, position=1.0)
    print(f"  one image at 800 nm, 1.0 mm: {one.shape}, mean {float(one.mean()):.0f} counts")


if __name__ == "__main__":
    main()
