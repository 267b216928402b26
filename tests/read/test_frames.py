"""FrameArray: numpy's indexing rules, reading only the frames selected; the lazy
xarray view; a time selection."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from daq_storage.read import FrameArray, open_run
from tests.read.helpers import FRAMES, TARGETS, frames_block, write_run

KEYS = [
    3, -1, -12, slice(None), slice(2, 9), slice(1, 11, 3), slice(None, None, -1),
    slice(10, 2, -2), slice(5, 5), [4, 0, 4, 11], np.array([-1, 2]), (2, 3),
    (slice(0, 4), slice(2, 6), 1), (-2, Ellipsis, 0), (Ellipsis, 4), ([1, 3], slice(None), 0),
    np.arange(12) % 3 == 0, (),
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("frames")
    for name in FRAMES:
        write_run(name, root / TARGETS[name], tables=False)
    return {name: root / TARGETS[name] for name in FRAMES}


@pytest.mark.parametrize("name", FRAMES)
def test_indexing_follows_numpy_and_reads_only_what_it_selects(runs: dict[str, Path], name: str):
    expected = frames_block().frames
    with open_run(runs[name]) as run:
        frames = run.frames("camera")
        assert isinstance(frames, FrameArray)
        assert (frames.shape, frames.dtype, len(frames), frames.ndim) == (
            expected.shape, expected.dtype, 12, 3)  # fmt: skip
        assert frames.frames_read == 0  # opening reads no frame
        for key in KEYS:
            before = frames.frames_read
            got = frames[key]
            np.testing.assert_array_equal(got, expected[key], err_msg=repr(key))
            first = key[0] if isinstance(key, tuple) and key and key[0] is not Ellipsis else key
            wanted = np.unique(
                np.arange(12)[first if not isinstance(first, tuple) else slice(None)]
            )
            if isinstance(key, tuple) and (not key or key[0] is Ellipsis):
                wanted = np.arange(12)
            assert frames.frames_read - before == len(wanted), repr(key)
        for bad in (12, -13, [0, 12]):
            with pytest.raises(IndexError, match="out of bounds"):
                frames[bad]
        np.testing.assert_array_equal(np.asarray(frames), expected)
        assert frames.timestamps_ns.dtype == np.uint64
        assert [frame[0, 0] for frame in frames][:2] == [expected[0, 0, 0], expected[1, 0, 0]]


@pytest.mark.parametrize("name", FRAMES)
def test_xarray_view_is_lazy(runs: dict[str, Path], name: str):
    """Dims frame/y/x, timestamps as a datetime64 coordinate; selecting one frame of the
    DataArray reads one frame from disk."""
    block = frames_block()
    with open_run(runs[name]) as run:
        frames = run.frames("camera")
        array = frames.to_xarray()
        assert isinstance(array, xr.DataArray)
        assert array.dims == ("frame", "y", "x")
        assert array.shape == block.frames.shape
        assert frames.frames_read == 0
        assert array["timestamp"].dtype == np.dtype("datetime64[ns]")
        assert array["timestamp"].values.view(np.int64).tolist() == block.timestamps_ns.tolist()
        assert array["frame_number"].values.tolist() == block.frame_numbers.tolist()
        one = array.isel(frame=7).values
        np.testing.assert_array_equal(one, block.frames[7])
        assert frames.frames_read == 1
        patch = array.isel(frame=[2, 9], y=slice(3, 6), x=[0, 4, 5]).values
        np.testing.assert_array_equal(patch, block.frames[[2, 9]][:, 3:6][:, :, [0, 4, 5]])
        assert frames.frames_read == 3
        when = array["timestamp"].values[4]
        np.testing.assert_array_equal(array.sel(frame=array["timestamp"] == when).values[0],
                                      block.frames[4])  # fmt: skip
        mean = array.isel(frame=slice(0, 3)).mean("frame").values
        np.testing.assert_allclose(mean, block.frames[:3].mean(axis=0))


@pytest.mark.parametrize("name", ["hdf5", "tiff"])
def test_sel_time_selects_frames_in_a_half_open_range(runs: dict[str, Path], name: str):
    block = frames_block()
    stamps = block.timestamps_ns.astype(np.int64)
    with open_run(runs[name]) as run:
        frames = run.frames("camera")
        picked = frames.sel_time(int(stamps[3]), np.datetime64(int(stamps[8]), "ns"))
        assert len(picked) == 5
        assert picked.frames_read == 0
        np.testing.assert_array_equal(picked[1:3], block.frames[4:6])
        assert picked.frame_numbers.tolist() == block.frame_numbers[3:8].tolist()
        np.testing.assert_array_equal(np.asarray(picked.sel_time(stop=int(stamps[5]))),
                                      block.frames[3:5])  # fmt: skip
        late = datetime.fromtimestamp(stamps[-1] / 1e9 + 1, UTC)
        assert len(frames.sel_time(start=late)) == 0
        assert picked.to_xarray().shape == (5, *block.frames.shape[1:])


@pytest.mark.parametrize(
    ("name", "options"),
    [("tiff", {"compression": "zlib"}), ("tiff", {"imagej": True}),
     ("hdf5", {"compression": "blosc-lz4", "frames_per_chunk": 4}),
     ("zarr", {"frames_per_chunk": 2, "shard_frames": 4})],
)  # fmt: skip
def test_frames_of_each_writer_option(tmp_path: Path, name: str, options: dict[str, Any]):
    """Compressed and ImageJ stacks, chunks of several frames: the same frames and ids."""
    block = frames_block()
    write_run(name, tmp_path / TARGETS[name], tables=False, **options)
    with open_run(tmp_path / TARGETS[name]) as run:
        frames = run.frames("camera")
        np.testing.assert_array_equal(np.asarray(frames), block.frames)
        np.testing.assert_array_equal(frames[[9, 1, 5]], block.frames[[9, 1, 5]])
        assert frames.frame_numbers.tolist() == block.frame_numbers.tolist()
        assert frames.timestamps_ns.tolist() == block.timestamps_ns.tolist()
