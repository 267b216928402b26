"""``inspect`` of outputs in a bucket (moto's S3 server on loopback): the same tree as on
disk, each stream's part objects laid out from their footers, and the CLI reaching the
store through the standard ``AWS_*`` variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from daq_storage.errors import RunNotFound
from daq_storage.testing import S3Server
from daq_storage.tools import inspect_path
from daq_storage.writers import open_writer
from tests.tools.conftest import GAPS


def s3_cli(server: S3Server, *args: str) -> subprocess.CompletedProcess[str]:
    """``daq-storage ARGS`` in a process of its own, told where the store is by the
    ``AWS_*`` variables only."""
    exe = Path(sys.executable).with_name("daq-storage")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DAQ_STORAGE_", "AWS_"))}
    environ.update(server.environ())
    return subprocess.run([str(exe), *args], env=environ, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def runs(s3_server: S3Server) -> str:
    """A prefix of three outputs: Parquet (two flushes of ``power``, frames, a loss
    ledger), Arrow IPC and a Zarr store."""
    prefix = f"s3://{s3_server.create_bucket()}/runs"
    options = s3_server.options()
    with open_writer("parquet", f"{prefix}/scan_v1", storage_options=options) as writer:
        writer.set_metadata("experiment", "scan")
        writer.write_batch("power", pa.record_batch({"watts": [1.5, 2.5]}))
        writer.flush()
        writer.write_batch("power", pa.record_batch({"watts": [3.5]}))
        writer.write_frames("camera", np.ones((3, 4, 6), np.uint16))
        writer.set_metadata("loss_ledger", [GAPS[0]])
        writer.set_metadata("lost_records", GAPS[0]["count"])
    with open_writer("arrow", f"{prefix}/power_v1", storage_options=options) as writer:
        writer.write_batch("power", pa.record_batch({"watts": [1.0, 2.0, 3.0, 4.0]}))
    with open_writer("zarr", f"{prefix}/cam.zarr", storage_options=options) as writer:
        writer.write_frames("camera", np.zeros((5, 8, 8), np.uint16))
    return prefix


def test_a_prefix_of_outputs_laid_out_from_the_objects(s3_server: S3Server, runs: str):
    tree = inspect_path(runs, storage_options=s3_server.options())
    assert tree.kind == "directory"
    assert tree.problems == []
    assert sorted(c.name for c in tree.children) == ["cam.zarr", "power_v1", "scan_v1"]
    json.dumps(tree.to_dict())  # every fact plain JSON

    scan = tree.child("scan_v1")
    assert scan.facts["format"] == "parquet"
    assert scan.facts["url"] == f"{runs}/scan_v1"
    assert scan.facts["lost_records"] == GAPS[0]["count"]
    run = scan.child("run")
    assert run.children[0].kind == "loss_ledger"  # the ledger first
    assert run.child("loss ledger", f"records {GAPS[0]['first_seq']}-{GAPS[0]['last_seq']}")
    assert run.child("streams", "power").facts["rows"] == 3
    assert run.child("streams", "camera").facts["frame_shape"] == [4, 6]
    objects = scan.child("files", "scan_v1")
    assert objects.child("_daq_storage_writer.json").facts["content"]["writer"] == "parquet"
    power = objects.child("power")
    assert [p.name for p in power.children] == ["part-000001.parquet", "part-000002.parquet"]
    assert [p.facts["rows"] for p in power.children] == [2, 1]  # from each footer
    assert power.children[0].child("watts").facts["compression"] == ["SNAPPY"]
    assert power.facts["bytes"] == sum(p.facts["bytes"] for p in power.children) > 0
    assert scan.facts["bytes"] == objects.facts["bytes"]

    part = tree.child("power_v1", "files", "power_v1", "power", "part-000001.arrow")
    assert (part.facts["rows"], part.facts["ipc"]) == (4, "file format")

    store = tree.child("cam.zarr", "files", "cam.zarr")
    assert store.facts["format"] == "zarr"
    assert store.child("camera", "frames").facts["shape"] == [5, 8, 8]
    assert tree.child("cam.zarr").facts["objects"] == tree.child("cam.zarr", "files").facts["count"]

    one = inspect_path(f"{runs}/scan_v1", storage_options=s3_server.options())
    assert one.kind == "output"
    assert one.name == "scan_v1"
    with pytest.raises(RunNotFound, match="nothing to inspect at s3://"):
        inspect_path(f"{runs}/nothing-here", storage_options=s3_server.options())


def test_the_cli_reaches_the_store_through_the_aws_variables(s3_server: S3Server, runs: str):
    done = s3_cli(s3_server, "inspect", f"{runs}/scan_v1", "--json")
    assert done.returncode == 0, done.stderr
    tree = json.loads(done.stdout)
    assert tree["facts"]["lost_records"] == GAPS[0]["count"]

    done = s3_cli(s3_server, "inspect", runs)
    assert done.returncode == 0, done.stderr
    for shown in ("part-000002.parquet", "1 rows", "RECORDS LOST", "cam.zarr", "Zarr v3 store"):
        assert shown in done.stdout

    done = s3_cli(s3_server, "inspect", "s3://no-such-bucket-for-inspect/runs")
    assert done.returncode == 2
    assert done.stderr.startswith("error: StorageIOError")
    assert "no such bucket" in done.stderr
    assert done.stderr.count("\n") == 1
