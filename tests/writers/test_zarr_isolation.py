"""Zarr: one stream's failure costs the other streams nothing, and a call that fails (on
the calling thread or in a pool job) publishes nothing of itself."""

from __future__ import annotations

import errno
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr
import zarr

from daq_storage.errors import StorageIOError
from daq_storage.sim import SimulatedCamera
from daq_storage.writers import ZarrWriter


def _rows(start: int, stop: int, **extra: Any) -> pa.RecordBatch:
    return pa.record_batch({"x": np.arange(start, stop), **extra})


@pytest.mark.parametrize("consolidated", [None, False])
def test_a_stream_whose_flush_fails_costs_the_others_nothing(tmp_path: Path, consolidated: Any):
    """The filesystem refuses one stream's new column (something is in the way): flush()
    and close() still write and publish every other stream, then raise the failure,
    naming the stream; the failing stream keeps what it had published and its rows stay
    pending until the way is clear."""
    path = tmp_path / "r.zarr"
    frames = SimulatedCamera((8, 8), seed=2, start_ns=0).frames(7)
    writer = ZarrWriter(path, shard_frames=4)
    writer.write_batch("a_bad", _rows(0, 100))
    writer.flush()
    writer.write_batch("a_bad", _rows(100, 200, y=np.ones(100)))
    writer.write_batch("z_good", _rows(0, 100))
    writer.write_frames("cam", frames.frames, timestamps_ns=frames.timestamps_ns)
    (path / "a_bad" / "y").write_text("in the way")
    with pytest.raises(StorageIOError, match="stream 'a_bad'"):
        writer.flush()
    good = xr.open_zarr(path, group="z_good", consolidated=consolidated)
    np.testing.assert_array_equal(good["x"].values, np.arange(100))
    cam = xr.open_zarr(path, group="cam", consolidated=consolidated)
    np.testing.assert_array_equal(cam["frames"].values, frames.frames)
    np.testing.assert_array_equal(cam["frame_number"].values, frames.frame_numbers)
    bad: Any = zarr.open_group(path, mode="r")["a_bad"]  # as of the first flush
    assert {name: array.shape for name, array in bad.arrays()} == {"x": (100,)}
    writer.write_batch("z_good", _rows(100, 150))
    with pytest.raises(StorageIOError, match="stream 'a_bad'"):
        writer.close()
    good = xr.open_zarr(path, group="z_good", consolidated=consolidated)
    np.testing.assert_array_equal(good["x"].values, np.arange(150))
    np.testing.assert_array_equal(bad["x"][:], np.arange(100))


def test_a_failed_flush_is_retried_by_the_next(tmp_path: Path):
    path = tmp_path / "r.zarr"
    with ZarrWriter(path) as writer:
        writer.write_batch("a", _rows(0, 10))
        writer.write_batch("b", _rows(0, 10))
        writer.flush()
        writer.write_batch("a", _rows(10, 20, y=np.ones(10)))
        (path / "a" / "y").write_text("in the way")
        with pytest.raises(StorageIOError, match="stream 'a'"):
            writer.flush()
        (path / "a" / "y").unlink()
        writer.write_batch("b", _rows(10, 20))
    a = xr.open_zarr(path, group="a")
    np.testing.assert_array_equal(a["x"].values, np.arange(20))
    np.testing.assert_array_equal(a["y.valid"].values, np.arange(20) >= 10)
    np.testing.assert_array_equal(xr.open_zarr(path, group="b")["x"].values, np.arange(20))


@pytest.mark.parametrize("fail_at", [1, 5])
def test_a_pool_job_that_fails_stores_nothing_of_its_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
):
    """A shard's compression fails on a pool thread (the encoder is our own code, made to
    fail here): the call raises, none of its frames or ids become visible, the stream
    goes on (its default frame numbers from the frames stored), and the next flush shows
    exactly the frames of the calls that returned."""
    path = tmp_path / "f.zarr"
    block = SimulatedCamera((16, 16), seed=3, start_ns=5).frames(40)
    with (
        ThreadPoolExecutor(2) as executor,
        ZarrWriter(path, shard_frames=4, frames_per_chunk=2, executor=executor) as writer,
    ):
        assert writer._encode is not None
        encode, calls = writer._encode, [0]

        def failing(chunk: np.ndarray) -> bytes:
            calls[0] += 1
            if calls[0] == fail_at:
                raise OSError(errno.EIO, "injected: the encoder failed")
            return encode(chunk)

        writer.write_frames("cam", block.frames[:6], timestamps_ns=block.timestamps_ns[:6])
        writer.flush()
        monkeypatch.setattr(writer, "_encode", failing)
        writer.write_frames("cam", block.frames[6:8], timestamps_ns=block.timestamps_ns[6:8])
        with pytest.raises(StorageIOError, match="stream 'cam'"):
            writer.write_frames("cam", block.frames[8:30], timestamps_ns=block.timestamps_ns[8:30])
        dataset = xr.open_zarr(path, group="cam", consolidated=False)  # as of the flush
        np.testing.assert_array_equal(dataset["frames"].values, block.frames[:6])
        writer.write_frames("cam", block.frames[30:], timestamps_ns=block.timestamps_ns[30:])
    kept = np.r_[0:8, 30:40]
    for consolidated in (None, False):
        dataset = xr.open_zarr(path, group="cam", consolidated=consolidated)
        np.testing.assert_array_equal(dataset["frames"].values, block.frames[kept])
        # Default frame numbers count the frames stored: the failed call took none.
        np.testing.assert_array_equal(dataset["frame_number"].values, np.arange(18))
        stamps = dataset["timestamp_ns"].values.astype("int64")
        np.testing.assert_array_equal(stamps, block.timestamps_ns[kept].astype("int64"))


@pytest.mark.parametrize("flushed_before", [False, True])
def test_a_stream_whose_folder_is_gone_costs_the_others_nothing(
    tmp_path: Path, flushed_before: bool
):
    """The first stream's folder is replaced by a file: every other stream still makes its
    arrays, publishes its rows and appears in the root's consolidated metadata; close()
    raises the failure, naming the stream."""
    path = tmp_path / "r.zarr"
    writer = ZarrWriter(path)
    writer.write_batch("a_bad", _rows(0, 2))
    if flushed_before:
        writer.write_batch("z_good", _rows(0, 100))
    writer.flush()
    writer.write_batch("z_good", _rows(100, 200))
    shutil.rmtree(path / "a_bad")
    (path / "a_bad").write_text("in the way")
    with pytest.raises(StorageIOError, match="stream 'a_bad'"):
        writer.close()
    expected = np.arange(0 if flushed_before else 100, 200)
    for consolidated in (None, False):
        good = xr.open_zarr(path, group="z_good", consolidated=consolidated)
        np.testing.assert_array_equal(good["x"].values, expected)
    root: Any = zarr.open_group(path, mode="r", use_consolidated=True)
    np.testing.assert_array_equal(root["z_good"]["x"][:], expected)
    listed = json.loads((path / "zarr.json").read_bytes())["consolidated_metadata"]["metadata"]
    assert listed["z_good/x"]["shape"] == [len(expected)]
