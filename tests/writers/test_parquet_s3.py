"""The Parquet writer on an S3-compatible object store (moto on loopback): one complete
part object per stream per flush, read back over S3 with pyarrow's datasets and polars
while the writer is open, refusal of a taken prefix, failures, retries and kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request

import numpy as np
import obstore
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from daq_storage.errors import StorageIOError
from daq_storage.location import S3Location, parse_location
from daq_storage.testing import s3_server
from daq_storage.testing._s3 import S3Server
from daq_storage.writers import open_writer
from daq_storage.writers._object_parts import MARKER


def located(url: str, server: S3Server) -> S3Location:
    location = parse_location(url, server.options())
    assert isinstance(location, S3Location)
    return location


def keys(location: S3Location) -> list[str]:
    return sorted(o["path"] for o in obstore.list(location.object_store()).collect())


def dataset(location: S3Location) -> pa.Table:
    found = pads.dataset(location.arrow_path, filesystem=location.arrow_filesystem(),
                         format="parquet")  # fmt: skip
    return found.to_table()


def polars_read(location: S3Location) -> pl.DataFrame:
    return pl.scan_parquet(f"{location.url}/*.parquet",
                           storage_options=location.polars_options()).collect()  # fmt: skip


def test_every_flush_is_complete_parts_read_over_s3(s3_server: S3Server, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/runs/r1"
    location = parse_location(url, s3_server.options())
    assert isinstance(location, S3Location)
    power = location.child("power")
    with open_writer("parquet", url, storage_options=s3_server.options()) as writer:
        assert keys(location) == [MARKER]
        writer.write_batch("power", pa.record_batch({"v": [1.0, 2.0]},
                                                    metadata={"units": "W"}))  # fmt: skip
        assert (writer.visible("power"), writer.accepted("power")) == (0, 2)
        assert keys(location) == [MARKER]  # pending rows are in no object
        writer.flush()
        assert writer.visible("power") == 2
        assert dataset(power).column("v").to_pylist() == [1.0, 2.0]

        writer.write_batch("power", pa.record_batch({"v": [3.0]}))
        writer.write_frames("cam", np.arange(24, dtype=np.uint16).reshape(2, 3, 4),
                            timestamps_ns=[10, 20])  # fmt: skip
        writer.flush()
        writer.flush()  # nothing new: no object
        parts = [
            "cam/part-000001.parquet",
            "power/part-000001.parquet",
            "power/part-000002.parquet",
        ]
        assert keys(location) == [MARKER, *parts]
        # read while the writer is open: every flushed row, once
        assert polars_read(power)["v"].to_list() == [1.0, 2.0, 3.0]
        frames = pq.read_table(location.child("cam", "part-000001.parquet").arrow_path,
                               filesystem=location.arrow_filesystem())  # fmt: skip
        assert frames.column("frame").combine_chunks().to_numpy_ndarray().shape == (2, 3, 4)

        writer.set_metadata("operator", "ada")
        writer.flush()  # no rows, new metadata: a part without rows carries it
        assert keys(location)[1:3] == ["cam/part-000001.parquet", "cam/part-000002.parquet"]
        writer.write_batch("power", pa.record_batch({"v": [4.0], "w": [1]}))  # a new schema
    assert keys(location)[-2:] == ["power/part-000003.parquet", "power/part-000004.parquet"]
    last = pq.read_schema(power.child("part-000004.parquet").arrow_path,
                          filesystem=location.arrow_filesystem()).metadata  # fmt: skip
    assert json.loads(last[b"daq_storage.first_row"]) == 3
    assert json.loads(last[b"operator"]) == "ada"
    assert json.loads(last[b"units"]) == "W"
    unified = pa.schema([("v", pa.float64()), ("w", pa.int64())])  # (the schema changed)
    table = pads.dataset(power.arrow_path, schema=unified, format="parquet",
                         filesystem=location.arrow_filesystem()).to_table()  # fmt: skip
    assert table.to_pydict() == {"v": [1.0, 2.0, 3.0, 4.0], "w": [None, None, None, 1]}
    cam = polars_read(location.child("cam"))
    assert cam["frame_number"].to_list() == [0, 1]
    assert cam.height == 2


def test_a_taken_prefix_and_a_missing_bucket_are_refused(
    s3_server: S3Server, s3_bucket: str
) -> None:
    options = s3_server.options()
    url = f"s3://{s3_bucket}/run"
    with open_writer("parquet", url, storage_options=options) as first:
        with pytest.raises(StorageIOError, match="already holds objects"):
            open_writer("parquet", url, storage_options=options)  # its marker is there
        first.write_batch("s", pa.record_batch({"a": [1]}))
    with pytest.raises(StorageIOError, match="already holds objects"):
        open_writer("arrow", url, storage_options=options)
    assert keys(located(url, s3_server)) == [MARKER, "s/part-000001.parquet"]
    with pytest.raises(StorageIOError, match="no such bucket"):
        open_writer("parquet", "s3://no-such-bucket-here/run", storage_options=options)
    # a writer that stored nothing leaves nothing behind
    open_writer("parquet", f"s3://{s3_bucket}/empty", storage_options=options).close()
    assert keys(located(f"s3://{s3_bucket}/empty", s3_server)) == []


def test_a_failed_upload_is_retried_under_the_same_key(s3_server: S3Server, s3_bucket: str) -> None:
    """The bucket vanishes mid-run: the flush fails naming the URL, its rows stay
    pending; once the bucket is back, the next flush uploads them, once."""
    options = s3_server.options()
    location = parse_location(f"s3://{s3_bucket}/run", options)
    assert isinstance(location, S3Location)
    writer = open_writer("parquet", location.url, storage_options=options)
    writer.write_batch("s", pa.record_batch({"a": [0, 1]}))
    writer.flush()
    for key in keys(location):
        obstore.delete(location.object_store(), key)
    bucket = f"{s3_server.endpoint_url}/{s3_bucket}"
    urllib.request.urlopen(urllib.request.Request(bucket, method="DELETE"), timeout=30).read()
    writer.write_batch("s", pa.record_batch({"a": [2, 3]}))
    with pytest.raises(StorageIOError, match=f"{location.url}/s/part-000002.parquet"):
        writer.flush()
    assert (writer.visible("s"), writer.accepted("s")) == (2, 4)
    s3_server.create_bucket(s3_bucket)
    writer.write_batch("s", pa.record_batch({"a": [4]}))
    writer.close()
    assert keys(location) == ["s/part-000002.parquet"]
    assert dataset(location.child("s")).column("a").to_pylist() == [2, 3, 4]


def test_a_network_down_mid_run_fails_in_bounded_time() -> None:
    with s3_server() as server:
        bucket = server.create_bucket()
        options = server.options(retry_timeout_s=2.0)
        writer = open_writer("parquet", f"s3://{bucket}/run", storage_options=options)
        writer.write_frames("cam", np.zeros((3, 4, 4), np.uint8))
        writer.flush()
        writer.write_frames("cam", np.zeros((2, 4, 4), np.uint8))
        server.kill()
        with pytest.raises(StorageIOError, match="cannot reach the object store"):
            writer.flush()
        assert (writer.visible("cam"), writer.accepted("cam")) == (3, 5)
        with pytest.raises(StorageIOError, match=f"s3://{bucket}/run/cam/part-000002.parquet"):
            writer.close()


_WRITER = """
import sys
import pyarrow as pa
from daq_storage.writers import open_writer
writer = open_writer("parquet", sys.argv[1])
n = 0
while True:
    writer.write_batch("s", pa.record_batch({"i": list(range(n, n + 1000))}))
    n += 1000
    if n % 3000 == 0:
        writer.flush()
        print(n, flush=True)
"""


def test_kill_9_leaves_only_complete_parts(s3_server: S3Server, s3_bucket: str) -> None:
    location = parse_location(f"s3://{s3_bucket}/run", s3_server.options())
    assert isinstance(location, S3Location)
    env = {**os.environ, **s3_server.environ()}
    with subprocess.Popen([sys.executable, "-c", textwrap.dedent(_WRITER), location.url],
                          stdout=subprocess.PIPE, text=True, env=env) as child:  # fmt: skip
        assert child.stdout is not None
        for _ in range(5):  # five flushes confirmed; killed while writing the next rows
            flushed = int(child.stdout.readline())
        child.send_signal(signal.SIGKILL)
    parts = [k for k in keys(location) if k.startswith("s/")]
    assert len(parts) >= 5
    for key in parts:  # each part on its own is a complete Parquet file
        pq.read_table(location.child(key).arrow_path, filesystem=location.arrow_filesystem())
    rows = dataset(location.child("s")).column("i").to_pylist()
    assert rows == list(range(len(rows)))
    assert len(rows) >= flushed


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_describe_names_each_streams_prefix(s3_server: S3Server, s3_bucket: str,
                                            fmt: str) -> None:  # fmt: skip
    """A stream on S3 is a dataset of part objects: describe() (and the StreamResource a
    bluesky run records) names its prefix, which pyarrow reads as one table."""
    url = f"s3://{s3_bucket}/described-{fmt}"
    with open_writer(fmt, url, storage_options=s3_server.options()) as writer:
        writer.write_batch("t", pa.table({"x": [1, 2]}))
        writer.flush()
        writer.write_batch("t", pa.table({"x": [3]}))
        writer.write_frames("cam", np.zeros((2, 4, 4), np.uint16))
        writer.flush()
        table = writer.describe("t")
        frames = writer.describe("cam")
    assert table.uri == f"{url}/t" == table.stream_resource()["uri"]
    assert [part.uri for part in table.parts] == [f"{url}/t"]
    assert frames.uri == f"{url}/cam"
    location = located(table.uri, s3_server)
    read = pads.dataset(location.arrow_path, filesystem=location.arrow_filesystem(),
                        format="parquet" if fmt == "parquet" else "arrow").to_table()  # fmt: skip
    assert read.column("x").to_pylist() == [1, 2, 3]
