"""The Recorder writing to an S3-compatible server (moto on loopback) in a process of its
own: configured from ``[storage.s3]`` and ``[storage.destinations]``, outputs named and
claimed in the bucket, read back over S3 with open_run, polars and xarray; and the server
killed mid-run: the bucket's format fails alone, HDF5 keeps every record."""

from __future__ import annotations

import errno
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import xarray as xr
import zarr

from daq_storage.config import StorageConfig
from daq_storage.errors import ConfigError, StorageIOError
from daq_storage.location import S3Location, S3Options, parse_location
from daq_storage.read import list_runs, open_run
from daq_storage.recorder import Recorder
from daq_storage.testing import S3Server, s3_server
from daq_storage.writers import open_writer
from tests.recorder._helpers import (
    CAMERA,
    TABLE,
    Producer,
    check_frames,
    check_rows,
    expected_frames,
    expected_rows,
    format_outputs,
    read_frames,
    read_rows,
    ring_at,
)

#: The formats the happy path sends to the bucket.
BUCKET_FORMATS = ("parquet", "zarr")


def _config(tmp_path: Path, server: S3Server, bucket: str) -> Path:
    options = server.options()
    path = tmp_path / "daq.toml"
    path.write_text(f"""
[storage]
formats = ["hdf5", {", ".join(f'"{f}"' for f in BUCKET_FORMATS)}]
output_dir = "s3://{bucket}/lab/runs"
experiment = "scan"
flush_interval_ms = 50

[storage.destinations]
hdf5 = "{tmp_path / "local"}"

[storage.s3]
endpoint_url = "{options.endpoint_url}"
region = "{options.region}"
access_key_id = "{options.access_key_id}"
secret_access_key = "{options.secret_access_key}"
retry_timeout_s = 5
""")
    return path


def test_a_configured_recorder_writes_into_the_bucket_and_reads_back_over_s3(
    tmp_path: Path, shm_path: Path, s3_server: S3Server, s3_bucket: str
):
    config = StorageConfig.load(_config(tmp_path, s3_server, s3_bucket), environ={})
    url = f"s3://{s3_bucket}/lab/runs"
    options = s3_server.options()
    with ring_at(shm_path, capacity_bytes=8 << 20, overflow="block", block_timeout=60) as ring:
        producer = Producer(ring, rows_per_batch=40)
        with Recorder.from_config(config, ring=ring.path, mode="process") as recorder:
            producer.write_group(frames=6, batches=5)
            recorder.flush()
            producer.write_group(frames=4, batches=3)
        stats = recorder.stop()
    assert stats.complete, stats
    assert {f.state for f in stats.formats.values()} == {"closed"}, stats

    # HDF5 kept locally; Parquet and Zarr in the bucket under one run name
    (h5,) = format_outputs(stats, "hdf5")
    assert h5.parent == tmp_path / "local"
    check_rows(read_rows("hdf5", h5), list(range(producer.rows)), "hdf5")
    (listing,) = list_runs(url, storage_options=options)
    assert listing.formats == BUCKET_FORMATS
    assert listing.name.startswith("scan_")
    for fmt in BUCKET_FORMATS:
        (where,) = listing.outputs[fmt]
        assert str(where).startswith(f"{url}/scan_"), where
        with open_run(url, format=fmt, storage_options=options) as run:
            assert run.table(TABLE).select(["i", "v"]).equals(expected_rows(range(producer.rows)))
            frames = run.frames(CAMERA)
            wanted = expected_frames(range(producer.frames))
            np.testing.assert_array_equal(frames[:], wanted.pixels)

    # the libraries a scientist uses, over S3
    location = parse_location(url, options)
    assert isinstance(location, S3Location)
    parquet = listing.outputs["parquet"][0]
    rows = pl.read_parquet(
        f"{parquet}/{TABLE}/*.parquet", storage_options=location.polars_options()
    )
    assert rows["i"].to_list() == list(range(producer.rows))
    store = listing.outputs["zarr"][0]
    data = xr.open_zarr(f"{store}/{TABLE}", storage_options=location.fsspec_options(),
                        consolidated=False)  # fmt: skip
    assert data["i"].values.tolist() == list(range(producer.rows))


def test_names_in_a_bucket_skip_taken_prefixes_and_writers_claim_them(
    s3_server: S3Server, s3_bucket: str
):
    from daq_storage.recorder._claims import free_s3_names

    folder = parse_location(f"s3://{s3_bucket}/runs", s3_server.options())
    assert isinstance(folder, S3Location)
    when = datetime(2026, 1, 2, 3, 4, 5)
    first = next(free_s3_names(folder, "scan", "", when=when))
    assert first.name == "scan_2026-01-02_03-04-05_v1"
    writer = open_writer("parquet", first)
    try:
        # a Recorder racing for the same name: the writer's conditional create refuses it
        with pytest.raises(StorageIOError) as refused:
            open_writer("parquet", first)
        assert refused.value.errno == errno.EEXIST
        names = free_s3_names(folder, "scan", "", when=when)
        assert [next(names).name, next(names).name] == [
            "scan_2026-01-02_03-04-05_v2",
            "scan_2026-01-02_03-04-05_v3",
        ]
    finally:
        writer.close()


def test_recorder_refuses_a_bucket_for_a_format_that_cannot_write_there(tmp_path: Path):
    with pytest.raises(
        ConfigError, match=r"hdf5 cannot write to object storage; the formats that can: .*parquet"
    ):
        Recorder(tmp_path / "ring", formats=["hdf5", "zarr"], output_dir="s3://bucket/runs")
    with pytest.raises(ConfigError, match="storage_options apply to s3:// destinations"):
        Recorder(tmp_path / "ring", formats=["hdf5"], output_dir=tmp_path,
                 storage_options={"region": "eu-west-1"})  # fmt: skip
    with pytest.raises(ConfigError, match=r"destinations\['csv'\]: not one of the recorded"):
        Recorder(tmp_path / "ring", formats=["hdf5"], destinations={"csv": tmp_path})


def _rows_over_s3(fmt: str, url: str, options: S3Options) -> pa.Table:
    """The table stream of the one output under ``url``, read with polars or zarr over S3."""
    (listing,) = list_runs(url, storage_options=options)
    (output,) = listing.outputs[fmt]
    assert isinstance(output, S3Location)
    if fmt == "parquet":
        pattern = f"{output.url}/{TABLE}/*.parquet"
        return pl.read_parquet(pattern, storage_options=output.polars_options()).to_arrow()
    group: Any = zarr.open_group(output.zarr_store(read_only=True), mode="r")[TABLE]
    return pa.table({"i": group["i"][:], "v": group["v"][:]})


@pytest.mark.parametrize("fmt", ["parquet", "zarr"])
def test_the_server_killed_mid_run_fails_its_format_alone(tmp_path: Path, shm_path: Path, fmt: str):
    with s3_server() as server:
        bucket = server.create_bucket()
        url = f"s3://{bucket}/runs"
        options = server.options(retry_timeout_s=1.0)
        with ring_at(shm_path, capacity_bytes=8 << 20, overflow="block",
                     block_timeout=60) as ring:  # fmt: skip
            recorder = Recorder(ring.path, formats=["hdf5", fmt], output_dir=tmp_path,
                                destinations={fmt: url}, storage_options=options,
                                flush_interval_s=0.05, mode="process")  # fmt: skip
            producer = Producer(ring, rows_per_batch=40)
            with recorder:
                producer.write_group(frames=5, batches=4)
                recorder.flush()
                flushed = recorder.stats
                assert {f.state for f in flushed.formats.values()} == {"recording"}, flushed
                # what was flushed is in the bucket, readable, before the network goes
                check_rows(_rows_over_s3(fmt, url, options), list(range(producer.rows)), fmt)
                server.kill()
                producer.write_group(frames=5, batches=4)
                recorder.flush()
                producer.write_group(frames=2, batches=2)
            stats = recorder.stop()

    failed, kept = stats.formats[fmt], stats.formats["hdf5"]
    assert failed.state == "failed", failed
    assert "StorageIOError" in failed.error, failed.error
    assert url in failed.error, failed.error
    assert "cannot reach" in failed.error, failed.error
    assert failed.lost_after_failure > 0, failed
    assert not stats.complete, stats
    assert any(fmt in e for e in stats.errors), stats.errors
    assert kept.state == "closed", kept
    assert stats.lost == 0, stats
    (h5,) = format_outputs(stats, "hdf5")
    check_rows(read_rows("hdf5", h5), list(range(producer.rows)), "hdf5")
    check_frames(read_frames("hdf5", h5), list(range(producer.frames)), "hdf5")


def test_rotation_continues_in_the_next_version_in_the_bucket(
    shm_path: Path, s3_server: S3Server, s3_bucket: str
):
    url = f"s3://{s3_bucket}/rotating"
    options = s3_server.options()
    with ring_at(shm_path, capacity_bytes=4 << 20, overflow="block", block_timeout=60) as ring:
        producer = Producer(ring, rows_per_batch=30)
        with Recorder(ring.path, formats=["parquet"], output_dir=url, storage_options=options,
                      rotate_bytes=1, batch_rows=30, mode="thread") as recorder:  # fmt: skip
            for _ in range(3):
                producer.write_rows(1)
                recorder.flush()
        stats = recorder.stop()
    assert stats.complete, stats
    parquet = stats.formats["parquet"]
    assert parquet.rotations >= 2, parquet
    (listing,) = list_runs(url, storage_options=options)
    versions = [p.name.rpartition("_v")[2] for p in listing.outputs["parquet"]]
    assert versions == [str(n) for n in range(1, len(versions) + 1)], versions
    assert len(versions) == parquet.rotations + 1
    with open_run(url, storage_options=options) as run:  # the versions, one after the other
        check_rows(run.table(TABLE).select(["i", "v"]), list(range(producer.rows)), "parquet")
