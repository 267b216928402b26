"""The Arrow IPC writer on an S3-compatible object store (moto on loopback): a complete
IPC file per stream per flush, read over S3 with pyarrow (``ipc.open_file``, datasets),
polars and the read API's ``ArrowReader`` and ``ParquetReader``."""

from __future__ import annotations

import numpy as np
import obstore
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from daq_storage.errors import StorageIOError
from daq_storage.location import S3Location, parse_location
from daq_storage.read._arrow import ArrowReader
from daq_storage.read._parquet import ParquetReader
from daq_storage.testing._s3 import S3Server
from daq_storage.writers import open_writer


def located(url: str, server: S3Server) -> S3Location:
    location = parse_location(url, server.options())
    assert isinstance(location, S3Location)
    return location


def test_arrow_parts_read_over_s3_while_open(s3_server: S3Server, s3_bucket: str) -> None:
    location = located(f"s3://{s3_bucket}/run", s3_server)
    fs = location.arrow_filesystem()
    frames = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    with open_writer("arrow", location, compression="zstd") as writer:
        writer.write_batch("power", pa.record_batch({"w": [1.5, 2.5]}, metadata={"units": "W"}))
        writer.write_frames("cam", frames, timestamps_ns=[5, 6])
        writer.flush()
        assert writer.visible("cam") == 2
        writer.write_batch("power", pa.record_batch({"w": [3.5]}))
        writer.flush()
        part = location.child("power", "part-000002.arrow").arrow_path
        with fs.open_input_file(part) as source:  # each part: a complete IPC file
            opened = pa.ipc.open_file(source)
            assert opened.read_all().column("w").to_pylist() == [3.5]
            assert opened.schema.metadata[b"daq_storage.first_row"] == b"2"
        view = pads.dataset(location.child("power").arrow_path, filesystem=fs, format="arrow")
        assert view.to_table().column("w").to_pylist() == [1.5, 2.5, 3.5]
        scanned = pl.scan_ipc(f"{location.url}/power/*.arrow",
                              storage_options=location.polars_options()).collect()  # fmt: skip
        assert scanned["w"].to_list() == [1.5, 2.5, 3.5]
        writer.write_frames("cam", frames[:1], timestamps_ns=[7])
    reader = ArrowReader(location)
    streams = reader.streams()
    assert "units" in streams["power"].metadata  # (decoded as for local files)
    assert streams["power"].rows == 3
    table = reader.table("power", None, None, None)
    joined = table if table is not None else pa.Table.from_batches(
        list(reader.iter_batches("power", None, 100)))  # fmt: skip
    assert joined.column("w").to_pylist() == [1.5, 2.5, 3.5]
    stack = reader.frames("cam")
    np.testing.assert_array_equal(stack.read(slice(None)), np.concatenate([frames, frames[:1]]))
    assert stack.timestamps_ns().tolist() == [5, 6, 7]
    reader.close()


def test_the_stream_format_and_the_parquet_reader_over_s3(
    s3_server: S3Server, s3_bucket: str
) -> None:
    options = s3_server.options()
    arrows = located(f"s3://{s3_bucket}/streamed", s3_server)
    with open_writer("arrow", arrows.url, storage_options=options, ipc_format="stream") as w:
        w.write_batch("s", pa.record_batch({"a": [1, 2]}))
    with arrows.arrow_filesystem().open_input_stream(
        arrows.child("s", "part-000001.arrows").arrow_path
    ) as source:
        assert pa.ipc.open_stream(source).read_all().column("a").to_pylist() == [1, 2]

    parquet = located(f"s3://{s3_bucket}/pq", s3_server)
    with open_writer("parquet", parquet.url, storage_options=options) as w:
        for start in (0, 3):
            w.write_batch("s", pa.record_batch({"a": list(range(start, start + 3))}))
            w.flush()
        w.write_frames("cam", np.ones((4, 2, 2), np.uint8))
        w.set_metadata("sample", "quartz")
    reader = ParquetReader(parquet)
    assert reader.metadata()["sample"] == "quartz"
    table = reader.table("s", None, None, None)
    assert table is not None
    assert table.column("a").to_pylist() == list(range(6))
    assert reader.polars("s", None)["a"].to_list() == list(range(6))
    assert reader.frames("cam").read(slice(1, 3)).shape == (2, 2, 2)
    reader.close()


def test_a_failed_open_is_named(s3_server: S3Server, s3_bucket: str) -> None:
    location = located(f"s3://{s3_bucket}/taken", s3_server)
    obstore.put(location.object_store(), "notes.txt", b"someone else's")
    with pytest.raises(StorageIOError, match=r"notes\.txt"):
        open_writer("arrow", location)
    with pytest.raises(StorageIOError, match="no such bucket"):
        open_writer("arrow", "s3://missing-bucket-b/run", storage_options=s3_server.options())


def test_metadata_without_streams_goes_to_metadata_json(
    s3_server: S3Server, s3_bucket: str
) -> None:
    location = located(f"s3://{s3_bucket}/notes", s3_server)
    with open_writer("arrow", location) as writer:
        writer.set_metadata("sample", {"name": "quartz", "mm": 2})
    assert ArrowReader(location).metadata() == {"sample": {"name": "quartz", "mm": 2}}
