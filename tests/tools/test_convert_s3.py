"""``convert`` from and into a bucket (moto's S3 server on loopback): read back with
xarray, polars and the project's reader over S3; refusals before anything is written; a
failed conversion removes what it put; a killed one is reported by ``inspect``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import obstore
import polars as pl
import pytest
import xarray as xr

from daq_storage.errors import ConfigError, StorageIOError
from daq_storage.location import S3Location, parse_location
from daq_storage.read import open_run
from daq_storage.testing import S3Server
from daq_storage.tools import convert_run, inspect_path
from tests.read.helpers import write_run
from tests.tools.test_inspect_s3 import s3_cli


def _keys(location: S3Location) -> list[str]:
    return sorted(o["path"] for chunk in obstore.list(location.object_store()) for o in chunk)


def _document(location: S3Location) -> dict[str, object]:
    data = obstore.get(location.object_store(), "_daq_storage_conversion.json").bytes()
    return json.loads(bytes(data))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("convert_s3") / "run.h5"
    write_run("hdf5", path)
    return path


def test_a_local_run_into_a_bucket_and_from_it(s3_server: S3Server, s3_bucket: str,
                                               local_run: Path):  # fmt: skip
    options = s3_server.options()
    with open_run(local_run) as source:
        power = source.table("power")
        camera = source.frames("camera")[:]
    result = convert_run(local_run, f"s3://{s3_bucket}/conv/run.zarr", storage_options=options)
    store = result.target
    assert isinstance(store, S3Location)
    assert result.format == "zarr"
    copied = {copy.stream: copy.rows for copy in result.streams}
    assert copied == {"power": power.num_rows, "rich": 12, "camera": len(camera)}
    assert _document(store)["state"] == "complete"
    seen = xr.open_zarr(store.url, group="camera", storage_options=store.fsspec_options())
    assert (seen["frames"].values == camera).all()
    with open_run(store) as back:
        assert back.table("power").equals(power)
        assert back.metadata["converted_from"] == {"name": "run.h5", "format": "hdf5"}
    tree = inspect_path(store)
    assert tree.problems == []
    assert tree.facts["conversion"] == "complete"

    # From the bucket into the bucket, one stream, read with polars over S3.
    again = convert_run(store.url, f"s3://{s3_bucket}/conv/power", format="parquet",
                        streams=["power"], storage_options=options)  # fmt: skip
    out = again.target
    assert isinstance(out, S3Location)
    assert again.source == store
    read = pl.read_parquet(f"{out.url}/power/*.parquet", storage_options=out.polars_options())
    assert read["value"].to_list() == power.column("value").to_pylist()
    assert _document(out)["converted_from"] == {
        "name": "run.zarr", "format": "zarr", "source": store.url}  # fmt: skip


def test_refused_before_anything_is_written(s3_server: S3Server, s3_bucket: str,
                                            local_run: Path, tmp_path: Path):  # fmt: skip
    options = s3_server.options()
    bucket = parse_location(f"s3://{s3_bucket}", options)
    assert isinstance(bucket, S3Location)
    with pytest.raises(ConfigError, match=r"hdf5 writes local files only.*arrow, parquet, zarr"):
        convert_run(local_run, f"s3://{s3_bucket}/out/run.h5", storage_options=options)
    assert _keys(bucket) == []

    # The CLI, through the AWS_* variables: a conversion, then the same prefix again.
    target = f"s3://{s3_bucket}/cli/run.zarr"
    done = s3_cli(s3_server, "convert", str(local_run), target, "--quiet")
    assert done.returncode == 0, done.stderr
    before = _keys(bucket)
    done = s3_cli(s3_server, "convert", str(local_run), target, "--quiet")
    assert done.returncode == 2
    assert done.stderr.startswith("error: StorageIOError: [Errno 17]")
    assert "never overwritten" in done.stderr
    assert _keys(bucket) == before  # nothing overwritten, nothing removed
    with pytest.raises(StorageIOError, match="never overwritten"):
        convert_run(local_run, target, storage_options=options)
    assert _keys(bucket) == before


def test_a_failed_conversion_removes_what_it_put(s3_server: S3Server, s3_bucket: str,
                                                 local_run: Path):  # fmt: skip
    target = parse_location(f"s3://{s3_bucket}/failed", s3_server.options())
    assert isinstance(target, S3Location)
    seen: list[list[str]] = []

    def interrupt(done: int, total: int, stream: str) -> None:
        seen.append(_keys(target))
        if len(seen) == 3:
            raise KeyboardInterrupt  # Ctrl-C mid-conversion

    with pytest.raises(KeyboardInterrupt):
        convert_run(local_run, target, format="parquet", streams=["rich"], progress=interrupt,
                    chunk_bytes=64, options={"row_group_size": 1})  # fmt: skip
    assert any(k.endswith(".parquet") for k in seen[-1])  # parts were put...
    assert _keys(target) == []  # ...and removed


def test_a_killed_conversion_is_reported_by_inspect(s3_server: S3Server, s3_bucket: str,
                                                    local_run: Path):  # fmt: skip
    target = f"s3://{s3_bucket}/killed"
    child = textwrap.dedent(f"""
        import sys
        from daq_storage.tools import convert_run

        def hold(done, total, stream):
            if done > 1:
                print("ready", flush=True)
                sys.stdin.read()  # until killed

        convert_run({str(local_run)!r}, {target!r}, format="parquet", streams=["rich"],
                    progress=hold, chunk_bytes=64, options={{"row_group_size": 1}})
    """)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environ.update(s3_server.environ())
    with subprocess.Popen([sys.executable, "-c", child], env=environ, text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
    location = parse_location(target, s3_server.options())
    assert isinstance(location, S3Location)
    assert _document(location)["state"] == "converting"
    tree = inspect_path(location)
    assert tree.problems == [tree]
    assert tree.problem is not None
    assert "incomplete conversion" in tree.problem
    parts = [n for n in tree.walk() if n.name.endswith(".parquet")]
    assert parts
    assert all(p.problem is None and p.facts["rows"] >= 1 for p in parts)

    done = s3_cli(s3_server, "inspect", target)
    assert done.returncode == 3
    assert "incomplete conversion" in done.stderr
