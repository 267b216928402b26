"""open_run and list_runs over a bucket (moto on loopback): outputs found by listing,
rotated versions read one after the other, a run named by its base name, and what is
not there (no run, no such bucket, a local-only format) refused clearly."""

from __future__ import annotations

import pyarrow as pa
import pytest

from daq_storage.errors import ConfigError, RunNotFound, StorageIOError
from daq_storage.location import S3Location
from daq_storage.read import list_runs, open_run
from daq_storage.testing import S3Server
from daq_storage.writers import open_writer


def _write(url: str, server: S3Server, fmt: str, first: int, rows: int) -> None:
    with open_writer(fmt, url, storage_options=server.options()) as writer:
        writer.set_metadata("experiment", "scan")
        writer.write_batch("power", pa.record_batch({"i": list(range(first, first + rows))}))
        writer.flush()
        writer.write_batch("power", pa.record_batch({"i": [first + rows]}))


def test_runs_in_a_bucket_are_listed_and_read_back(s3_server: S3Server, s3_bucket: str):
    root = f"s3://{s3_bucket}/lab"
    _write(f"{root}/scan_2026-01-02_03-04-05_v1", s3_server, "parquet", 0, 3)
    _write(f"{root}/scan_2026-01-02_03-04-05_v2", s3_server, "parquet", 4, 2)
    _write(f"{root}/scan_2026-01-02_03-04-05_v3", s3_server, "arrow", 0, 1)
    _write(f"{root}/other_2026-01-02_03-04-06_v1", s3_server, "arrow", 0, 1)
    options = s3_server.options()

    listings = list_runs(root, storage_options=options)
    assert [r.name for r in listings] == ["other_2026-01-02_03-04-06", "scan_2026-01-02_03-04-05"]
    scan = listings[1]
    assert scan.formats == ("arrow", "parquet")
    assert [p.name for p in scan.outputs["parquet"]] == [
        "scan_2026-01-02_03-04-05_v1",
        "scan_2026-01-02_03-04-05_v2",
    ]
    assert all(isinstance(p, S3Location) for p in scan.outputs["parquet"])

    # a run by name in the prefix, and by its base name: the rotated versions in order
    for where, run_name in ((root, "scan_2026-01-02_03-04-05"),
                            (f"{root}/scan_2026-01-02_03-04-05", None)):  # fmt: skip
        with open_run(where, run=run_name, format="parquet", storage_options=options) as run:
            assert run.table("power")["i"].to_pylist() == list(range(7))
            assert run.metadata["experiment"] == "scan"
            versions = [f"{root}/scan_2026-01-02_03-04-05_v{n}" for n in (1, 2)]
            assert [str(f) for f in run.files] == versions
    # one output, given by its URL
    with open_run(f"{root}/scan_2026-01-02_03-04-05_v3", storage_options=options) as run:
        assert run.format == "arrow"
        assert run.table("power")["i"].to_pylist() == [0, 1]

    with pytest.raises(ConfigError, match="holds several runs"):
        open_run(root, storage_options=options)
    with pytest.raises(ConfigError, match="hdf5 outputs are local files"):
        open_run(root, format="hdf5", storage_options=options)
    with pytest.raises(RunNotFound, match=f"no run at s3://{s3_bucket}/nothing"):
        open_run(f"s3://{s3_bucket}/nothing", storage_options=options)
    with pytest.raises(StorageIOError, match="no such bucket"):
        list_runs(f"s3://{s3_bucket}-missing/lab", storage_options=options)
    with pytest.raises(ConfigError, match="storage_options are for s3:// URLs"):
        open_run("data", storage_options=options)


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_a_run_in_a_bucket_keeps_its_own_metadata_not_its_parts(
    s3_server: S3Server, s3_bucket: str, fmt: str
) -> None:
    """Every part object says which stream it belongs to and where it starts: that is
    layout, not the run's metadata (which a conversion would carry on)."""
    url = f"s3://{s3_bucket}/one-stream-{fmt}"
    with open_writer(fmt, url, storage_options=s3_server.options()) as writer:
        writer.set_metadata("sample", "Si-42")
        writer.write_batch("power", pa.table({"watts": [1.5]}))
        writer.flush()
        writer.write_batch("power", pa.table({"watts": [2.5]}))
    with open_run(url, storage_options=s3_server.options()) as run:
        assert run.metadata == {"sample": "Si-42"}
        assert run.table("power")["watts"].to_pylist() == [1.5, 2.5]
