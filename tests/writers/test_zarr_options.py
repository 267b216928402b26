"""Zarr options: one validated model, the [storage] keys it honours (each with a visible
effect), the executor that compresses shards, and the seeds' builder in its own module."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr

from daq_storage.config import StorageSettings
from daq_storage.errors import ConfigError
from daq_storage.writers import ZarrWriter, open_writer, writer_options
from daq_storage.writers.zarr_arrays import ZarrArrayBuilder


def _codecs(array: Path) -> list[dict[str, Any]]:
    codecs: list[dict[str, Any]] = json.loads((array / "zarr.json").read_text())["codecs"]
    return codecs


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compression": "lzf"}, r"compression = 'lzf'.*'blosc-lz4'.*'none'"),
        ({"compression": "none", "compression_level": 3}, r"needs a compression"),
        ({"compression": "blosc-lz4", "compression_level": 10}, r"'blosc-lz4' is 0\.\.9, got 10"),
        ({"compression": "zstd", "compression_level": 0}, r"'zstd' is 1\.\.22, got 0"),
        ({"chunk_size": 0}, r"chunk_size = 0.*greater than or equal to 1"),
        ({"frames_per_chunk": 0}, r"frames_per_chunk = 0"),
        ({"frames_per_chunk": 3, "shard_frames": 4}, r"shard_frames \(4\) must be a multiple"),
        ({"threads": 2}, r"threads"),
    ],
)
def test_an_option_the_writer_cannot_honour_is_refused_naming_it(
    tmp_path: Path, options: dict[str, Any], message: str
):
    with pytest.raises(ConfigError, match=message):
        open_writer("zarr", tmp_path / "o.zarr", **options)
    assert not (tmp_path / "o.zarr").exists()


def test_an_executor_of_processes_is_refused(tmp_path: Path):
    with ProcessPoolExecutor(1) as processes, pytest.raises(ConfigError, match="threads"):
        ZarrWriter(tmp_path / "p.zarr", executor=processes)


def test_the_storage_keys_reach_the_arrays(tmp_path: Path):
    """compression, compression_level and chunk_size from [storage]: the codec and level
    in every array's metadata, rows per chunk in the table's arrays."""
    assert ZarrWriter.config_keys == {
        "compression": "compression", "compression_level": "compression_level",
        "chunk_size": "chunk_size",
    }  # fmt: skip
    settings = StorageSettings(compression="zstd", compression_level=7, chunk_size=1000)
    options = writer_options(ZarrWriter, settings)
    path = tmp_path / "c.zarr"
    with ZarrWriter(path, **options) as writer:
        writer.write_batch("t", pa.record_batch({"x": np.arange(2500)}))
        writer.write_frames("cam", np.ones((3, 4, 4), np.uint8))
    for array in (path / "t" / "x", path / "cam" / "frames"):
        zstd = {"name": "zstd", "configuration": {"level": 7, "checksum": False}}
        assert _codecs(array)[-1] == zstd
    chunks = json.loads((path / "t" / "x" / "zarr.json").read_text())["chunk_grid"]
    assert chunks["configuration"]["chunk_shape"] == [1000]
    assert xr.open_zarr(path, group="t")["x"].values.tolist() == list(range(2500))


def test_a_storage_key_the_writer_cannot_honour_is_a_config_error():
    with pytest.raises(ConfigError, match=r"storage\.compression = 'snappy'.*cannot honour"):
        writer_options(ZarrWriter, StorageSettings(compression="snappy"))
    with pytest.raises(ConfigError, match=r"storage\.compression_level = 4.*needs a compression"):
        writer_options(ZarrWriter, StorageSettings(compression="none", compression_level=4))


@pytest.mark.parametrize(
    ("compression", "level", "codec"),
    [
        ("blosc-lz4", 2, {"cname": "lz4", "clevel": 2}),
        ("blosc-zstd", None, {"cname": "zstd", "clevel": 5}),
        ("gzip", 9, {"level": 9}),
    ],
)
def test_each_codec_and_level_is_what_the_arrays_say(
    tmp_path: Path, compression: str, level: int | None, codec: dict[str, Any]
):
    path = tmp_path / "l.zarr"
    with ZarrWriter(path, compression=compression, compression_level=level,
                    shard_frames=2) as writer:  # fmt: skip
        writer.write_frames("cam", np.arange(4 * 16, dtype=np.uint16).reshape(4, 4, 4))
        writer.write_batch("t", pa.record_batch({"x": [1.5]}))
    sharded = _codecs(path / "cam" / "frames")[0]["configuration"]["codecs"][-1]
    for configuration in (sharded["configuration"], _codecs(path / "t" / "x")[-1]["configuration"]):
        assert codec.items() <= configuration.items()
    np.testing.assert_array_equal(xr.open_zarr(path, group="cam")["frames"].values,
                                  np.arange(4 * 16, dtype=np.uint16).reshape(4, 4, 4))  # fmt: skip


def _zarr_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("daq_storage_zarr")]


def test_a_shared_executor_compresses_the_shards_and_outlives_the_writer(tmp_path: Path):
    """Two writers share one pool: neither starts threads of its own, neither shuts the
    pool down, and both stores read back."""
    frames = np.random.default_rng(2).integers(0, 500, (16, 32, 32), dtype=np.uint16)
    with ThreadPoolExecutor(2, thread_name_prefix="shared") as shared:
        for name in ("a", "b"):
            with ZarrWriter(tmp_path / f"{name}.zarr", shard_frames=4, executor=shared) as writer:
                writer.write_frames("cam", frames)
                assert _zarr_threads() == []
            assert writer.options.executor is shared
        assert shared.submit(lambda: 7).result() == 7  # still open
    for name in ("a", "b"):
        stored = xr.open_zarr(tmp_path / f"{name}.zarr", group="cam")["frames"].values
        np.testing.assert_array_equal(stored, frames)


def test_without_an_executor_the_writer_runs_a_small_pool_of_its_own(tmp_path: Path):
    frames = np.random.default_rng(3).integers(0, 500, (64, 32, 32), dtype=np.uint16)
    with ZarrWriter(tmp_path / "o.zarr", shard_frames=4) as writer:
        writer.write_frames("cam", frames)
        assert 1 <= len(_zarr_threads()) <= min(4, os.cpu_count() or 1)
    assert _zarr_threads() == []  # stopped at close


def test_the_seeds_builder_lives_in_its_own_module(tmp_path: Path):
    """ZarrArrayBuilder (daq_storage.writers.zarr_arrays) is what gives ZarrWriter its
    create_array and write_chunk."""
    assert issubclass(ZarrWriter, ZarrArrayBuilder)
    assert ZarrWriter.create_array is ZarrArrayBuilder.create_array
    path = tmp_path / "b.zarr"
    with ZarrWriter(path) as writer:
        writer.create_array("grid", [2, 3], [1, 3], dimension_names=["y", "x"], dtype=np.int8)
        writer.write_chunk("grid", [1, 0], [[4, 5, 6]])
    assert xr.open_zarr(path)["grid"].values.tolist() == [[0, 0, 0], [4, 5, 6]]
