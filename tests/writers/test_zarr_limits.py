"""Zarr: chunk and shard geometries whose buffers memory cannot hold are refused up front,
and running out of memory is a DaqStorageError that names the stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr

from daq_storage.errors import ConfigError, StorageIOError
from daq_storage.writers import ZarrWriter

#: A chunk or shard of 10**5 frames of 10000 x 10000 bytes (10 TB): more than a quarter of any
#: test machine's memory.
_HUGE = 10**5


@pytest.mark.parametrize(
    "options", [{"frames_per_chunk": _HUGE}, {"frames_per_chunk": 1000, "shard_frames": _HUGE}]
)
def test_a_frame_chunk_or_shard_memory_cannot_hold_is_refused_before_anything_is_made(
    tmp_path: Path, options: dict[str, Any]
):
    path = tmp_path / "f.zarr"
    with ZarrWriter(path, **options) as writer:
        with pytest.raises(ConfigError, match=r"stream 'cam'.* of 100000 x uint8 .*GiB.*limit"):
            writer.write_frames("cam", np.zeros((1, 10_000, 10_000), np.uint8))
        assert not (path / "cam").exists()
        writer.write_frames("cam", np.ones((2, 4, 4), np.uint16))  # small frames still fit
    np.testing.assert_array_equal(xr.open_zarr(path, group="cam")["frames"].values, 1)


def test_a_table_chunk_memory_cannot_hold_is_refused_before_anything_is_made(tmp_path: Path):
    path = tmp_path / "t.zarr"
    with ZarrWriter(path, chunk_size=10**12) as writer:
        with pytest.raises(ConfigError, match=r"stream 's' column 'x'.*limit"):
            writer.write_batch("s", pa.record_batch({"x": np.arange(3)}))
        assert not (path / "s").exists()
        with pytest.raises(ConfigError, match=r"column 'flag'.* of 1000000000000 x bool "):
            writer.write_batch("s", pa.record_batch({"flag": np.ones(3, bool)}))
        writer.write_frames("cam", np.ones((2, 4, 4), np.uint16))
    assert not (path / "s").exists()
    np.testing.assert_array_equal(xr.open_zarr(path, group="cam")["frames"].values, 1)


def test_running_out_of_memory_is_a_storage_error_naming_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """zarr-python (or numpy) cannot allocate a buffer at flush: the flush raises a
    StorageIOError naming the stream, and what was published stays readable."""
    path = tmp_path / "m.zarr"
    writer = ZarrWriter(path)
    writer.write_batch("s", pa.record_batch({"x": np.arange(3)}))
    writer.flush()
    writer.write_batch("s", pa.record_batch({"x": np.arange(3, 6)}))
    table = writer._tables["s"]

    def no_memory() -> None:
        raise MemoryError("Unable to allocate 4.46 TiB")

    monkeypatch.setattr(table, "merged_pending", no_memory)
    with pytest.raises(StorageIOError, match=r"stream 's'.*memory"):
        writer.flush()
    with pytest.raises(StorageIOError, match=r"stream 's'.*memory"):
        writer.close()
    np.testing.assert_array_equal(xr.open_zarr(path, group="s")["x"].values, np.arange(3))
