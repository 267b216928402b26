"""The daq-storage command, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import h5py
import polars as pl
import pytest
from click.testing import CliRunner

from daq_storage import __version__
from daq_storage.cli import cli
from tests.conftest import SHM_DIR, SHM_TEST_PREFIX

SHM_BASE = SHM_DIR if SHM_DIR is not None else Path("/tmp")


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DAQ_STORAGE_")}
    # The demo's ring goes where the leak guard looks, never to the user's default ring.
    ring = SHM_BASE / f"{SHM_TEST_PREFIX}cli_{uuid.uuid4().hex[:8]}"
    environ["DAQ_STORAGE_RING_BUFFER_PATH"] = str(ring)
    environ["DAQ_STORAGE_RING_BUFFER_SIZE_MB"] = "32"
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "daq_storage.cli", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_config_show_reports_sources(tmp_path: Path):
    config = tmp_path / "daq.toml"
    config.write_text("[storage]\ncompression_level = 7\n")
    result = run_cli(
        "config",
        "show",
        "--config",
        str(config),
        "--json",
        cwd=tmp_path,
        env={"DAQ_STORAGE_OUTPUT_DIR": "/mnt/data"},
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["storage.compression_level"] == {"value": 7, "source": f"file {config}"}
    assert shown["storage.output_dir"] == {
        "value": "/mnt/data",
        "source": "env DAQ_STORAGE_OUTPUT_DIR",
    }
    assert shown["storage.compression"] == {"value": "gzip", "source": "default"}


def test_config_show_table(tmp_path: Path):
    result = run_cli("config", "show", cwd=tmp_path, env={"DAQ_STORAGE_COMPRESSION_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if "storage.compression_level" in ln)
    assert "3" in line
    assert "env DAQ_STORAGE_COMPRESSION_LEVEL" in line


def test_bad_config_is_one_clear_line_and_exit_2(tmp_path: Path):
    config = tmp_path / "daq.toml"
    config.write_text("[storage]\ncompression_level = 12\n")
    result = run_cli("config", "show", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "ConfigError" in result.stderr
    assert "storage.compression_level" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_records_through_the_ring_into_hdf5(tmp_path: Path):
    result = run_cli("demo", "--frames", "20", "--seconds", "0.2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "records through shared memory, 0 lost, 0 dropped" in result.stdout
    (path,) = sorted((tmp_path / "data").iterdir())
    assert path.name.startswith("experiment_")
    assert path.name.endswith("_v1.h5")
    with h5py.File(path, "r") as f:
        assert f["camera_1/frames"].shape == (20, 480, 640)
        assert list(f["camera_1/frame_number"][:]) == list(range(20))
        assert f["power_meter_01/value"].shape == (2000,)
        assert f["daq_card/ai0"].shape == (20_000,)
        assert f.attrs["experiment"] == "experiment"


@pytest.mark.parametrize("backend", ["arrow", "parquet", "csv", "zarr", "tiff"])
def test_demo_with_every_backend(tmp_path: Path, backend: str):
    result = run_cli("demo", "--frames", "4", "--seconds", "0.1", cwd=tmp_path,
                     env={"DAQ_STORAGE_FORMAT": backend})  # fmt: skip
    assert result.returncode == 0, result.stderr
    (path,) = sorted((tmp_path / "data").iterdir())
    assert path.is_dir()
    assert any(path.iterdir())
    if backend == "parquet":
        assert pl.read_parquet(path / "power_meter_01.parquet").height == 1000


def test_demo_never_overwrites(tmp_path: Path):
    for _ in range(2):
        result = run_cli(
            "demo", "--frames", "2", "--seconds", "0.1", "--output-dir", "out", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == 2  # same second: _v1 and _v2; otherwise two timestamps
    assert all(f.suffix == ".h5" for f in files)


def test_demo_into_unwritable_place_fails_clearly(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("demo", "--frames", "1", "--output-dir", str(blocker / "sub"), cwd=tmp_path)
    assert result.returncode == 2
    assert "StorageIOError" in result.stderr
    assert "cannot create output directory" in result.stderr


@pytest.mark.parametrize("args", [["--frames", "-1"], ["--bogus"]])
def test_demo_rejects_bad_arguments(tmp_path: Path, args: list[str]):
    result = CliRunner().invoke(cli, ["demo", *args])
    assert result.exit_code == 2


def test_repair_restores_a_killed_parquet_writers_files(tmp_path: Path):
    folder = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import sys, time
        import pyarrow as pa
        from daq_storage.writers import ParquetWriter
        writer = ParquetWriter({str(folder)!r})
        writer.write_batch("pm", pa.record_batch({{"v": [1.0, 2.0, 3.0]}}))
        writer.flush()
        print("READY", flush=True)
        time.sleep(60)
        """
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                          text=True) as child:  # fmt: skip
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "READY"
            busy = run_cli("repair", str(folder), cwd=tmp_path)  # the writer is still alive
            assert busy.returncode == 2
            assert "still has it open" in busy.stderr
        finally:
            child.kill()
    result = run_cli("repair", str(folder), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"repaired {folder / 'pm.parquet'}" in result.stdout
    assert pl.read_parquet(folder / "pm.parquet")["v"].to_list() == [1.0, 2.0, 3.0]
    assert sorted(p.name for p in folder.iterdir()) == ["pm.parquet"]  # recovery file gone
    again = run_cli("repair", str(folder), cwd=tmp_path)
    assert "nothing to repair" in again.stdout
