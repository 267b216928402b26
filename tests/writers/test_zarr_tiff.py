"""Zarr V3 builder and sharding (TIFF tests are in test_tiff.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr
import zarr

from daq_storage.errors import ConfigError, SchemaMismatch, UnsupportedData
from daq_storage.sim import SimulatedCamera
from daq_storage.writers import ZarrWriter


def test_zarr_4d_nested_scan_shows_dimension_names_in_xarray(tmp_path: Path):
    """The seeds' example: wavelength x position x y x x, written chunk by chunk."""
    path = tmp_path / "scan.zarr"
    camera = SimulatedCamera((32, 32), seed=0, start_ns=0)
    with ZarrWriter(path) as writer:
        writer.create_array(
            "camera_frames", shape=[10, 5, 32, 32], chunks=[10, 1, 32, 32],
            dimension_names=["wavelength", "position", "y", "x"], dtype=np.uint16,
            attributes={"wavelength_nm": list(range(700, 1000, 30))},
        )  # fmt: skip
        expected = np.zeros((10, 5, 32, 32), np.uint16)
        for position in range(5):
            block = camera.frames(10).frames[:, None]  # every wavelength at one position
            writer.write_chunk("camera_frames", [0, position, 0, 0], block)
            expected[:, position : position + 1] = block
        with pytest.raises(SchemaMismatch, match="does not fit"):
            writer.write_chunk("camera_frames", [0, 5, 0, 0], block)
    dataset = xr.open_zarr(path, consolidated=False)
    assert dataset["camera_frames"].dims == ("wavelength", "position", "y", "x")
    np.testing.assert_array_equal(dataset["camera_frames"].values, expected)
    wavelengths = zarr.open_array(path / "camera_frames", mode="r").attrs["wavelength_nm"]
    assert isinstance(wavelengths, list)
    assert wavelengths[0] == 700


def test_zarr_sharded_frames_are_compressed_and_complete(tmp_path: Path):
    frames = SimulatedCamera(seed=0, start_ns=0).frames(10).frames
    path = tmp_path / "frames.zarr"
    with ZarrWriter(path, compression="blosc-lz4", shard_frames=4) as writer:
        for i in range(0, 10, 3):  # appends that do not line up with shards
            writer.write_frames("camera_1", frames[i : i + 3])
    array = zarr.open_array(path / "camera_1" / "frames", mode="r")
    assert array.shards == (4, 480, 640)
    np.testing.assert_array_equal(array[:], frames)
    size = sum(p.stat().st_size for p in (path / "camera_1" / "frames").rglob("*") if p.is_file())
    assert size < 0.9 * frames.nbytes


def test_zarr_bad_input(tmp_path: Path):
    with pytest.raises(ConfigError, match="shard_frames"):
        ZarrWriter(tmp_path / "a.zarr", frames_per_chunk=3, shard_frames=4)
    with pytest.raises(ConfigError, match="compression"):
        ZarrWriter(tmp_path / "b.zarr", compression="rar")
    with ZarrWriter(tmp_path / "c.zarr") as writer:
        writer.write_batch("s", pa.record_batch({"v": pa.array([1, 2], pa.int32())}))
        with pytest.raises(SchemaMismatch, match="column 'v'"):
            writer.write_batch("s", pa.record_batch({"v": ["x"]}))
        with pytest.raises(UnsupportedData, match="variable-length"):
            writer.write_batch("t", pa.record_batch({"xs": [[1.0, 2.0]]}))
    (tmp_path / "d.zarr").mkdir()
    (tmp_path / "d.zarr" / "keep").write_text("x")
    with pytest.raises(OSError, match="never overwritten"):
        ZarrWriter(tmp_path / "d.zarr")
