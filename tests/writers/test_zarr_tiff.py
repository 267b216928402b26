"""Zarr V3 builder and sharding; TIFF stacks, BigTIFF, ImageJ."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import tifffile
import xarray as xr
import zarr

from daq_storage.errors import ConfigError, SchemaMismatch, UnsupportedData
from daq_storage.sim import SimulatedCamera
from daq_storage.writers import TiffWriter, ZarrWriter


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
    with ZarrWriter(path, compression="blosc-lz4", chunk_size=1, shard_frames=4) as writer:
        for i in range(0, 10, 3):  # appends that do not line up with shards
            writer.write_frames("camera_1", frames[i : i + 3])
    array = zarr.open_array(path / "camera_1" / "frames", mode="r")
    assert array.shards == (4, 480, 640)
    np.testing.assert_array_equal(array[:], frames)
    size = sum(p.stat().st_size for p in (path / "camera_1" / "frames").rglob("*") if p.is_file())
    assert size < 0.9 * frames.nbytes


def test_zarr_bad_input(tmp_path: Path):
    with pytest.raises(ConfigError, match="shard_frames"):
        ZarrWriter(tmp_path / "a.zarr", chunk_size=3, shard_frames=4)
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


def test_tiff_stack_with_per_frame_ids(tmp_path: Path):
    block = SimulatedCamera((48, 64), seed=0, start_ns=5000).frames(6)
    with TiffWriter(tmp_path / "t", compression="zlib") as writer:
        writer.set_metadata("exposure_ms", 10, stream="camera_1")
        writer.write_frames("camera_1", block.frames[:4], timestamps_ns=block.timestamps_ns[:4],
                            frame_numbers=block.frame_numbers[:4])  # fmt: skip
        writer.write_frames("camera_1", block.frames[4:], timestamps_ns=block.timestamps_ns[4:],
                            frame_numbers=block.frame_numbers[4:])  # fmt: skip
    path = tmp_path / "t" / "camera_1.tif"
    np.testing.assert_array_equal(tifffile.imread(path), block.frames)
    with tifffile.TiffFile(path) as tif:
        ids = [json.loads(page.description) for page in tif.pages]  # type: ignore[union-attr]
        assert [i["frame_number"] for i in ids] == block.frame_numbers.tolist()
        assert [i["timestamp_ns"] for i in ids] == block.timestamps_ns.tolist()
        assert ids[0]["metadata"] == {"exposure_ms": 10}
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    assert path.stat().st_size < block.frames.nbytes


@pytest.mark.parametrize("compression", ["zstd", "lzw"])
def test_tiff_codecs(tmp_path: Path, compression: str):
    frames = SimulatedCamera(seed=0, start_ns=0).frames(3).frames
    with TiffWriter(tmp_path / compression, compression=compression) as writer:
        writer.write_frames("cam", frames)
    path = tmp_path / compression / "cam.tif"
    np.testing.assert_array_equal(tifffile.imread(path), frames)
    assert path.stat().st_size < frames.nbytes


def test_tiff_imagej_hyperstack_and_bigtiff(tmp_path: Path):
    block = SimulatedCamera((32, 40), seed=0, start_ns=0).frames(5)
    with TiffWriter(tmp_path / "ij", imagej=True) as writer:
        writer.write_frames("cam", block.frames, frame_numbers=block.frame_numbers)
    with tifffile.TiffFile(tmp_path / "ij" / "cam.tif") as tif:
        assert tif.is_imagej
        assert (tif.imagej_metadata or {})["images"] == 5
        np.testing.assert_array_equal(tif.asarray(), block.frames)
    lines = (tmp_path / "ij" / "cam.frames.csv").read_text().splitlines()
    assert lines[0] == "frame_number,timestamp_ns"
    assert [int(line.split(",")[0]) for line in lines[1:]] == [0, 1, 2, 3, 4]
    with TiffWriter(tmp_path / "big", bigtiff=True) as writer:
        writer.write_frames("cam", block.frames)
    with tifffile.TiffFile(tmp_path / "big" / "cam.tif") as tif:
        assert tif.is_bigtiff
    with pytest.raises(ConfigError, match="imagej"):
        TiffWriter(tmp_path / "x", imagej=True, compression="zlib")


def test_tiff_refuses_tables(tmp_path: Path):
    with (
        TiffWriter(tmp_path / "t") as writer,
        pytest.raises(UnsupportedData, match="TIFF cannot store tables"),
    ):
        writer.write_batch("s", pa.record_batch({"v": [1]}))
