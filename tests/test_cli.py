"""The daq-storage command, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import polars as pl
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from daq_storage import __version__
from daq_storage.cli import cli

_children: list[int] = []  # pids of the CLI processes the current test started


def start_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``daq-storage ARGS`` in a child process, with no DAQ_STORAGE_* from the shell."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DAQ_STORAGE_")}
    environ.update(env or {})
    child = subprocess.Popen(
        [sys.executable, "-m", "daq_storage.cli", *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _children.append(child.pid)
    return child


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    with start_cli(*args, cwd=cwd, env=env) as child:
        try:
            out, err = child.communicate(timeout=90)
        except BaseException:
            child.kill()
            raise
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait for another process to reach a state we can observe (not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


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
    assert shown["storage.compression"] == {"value": None, "source": "default"}


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


def test_user_text_with_brackets_is_printed_literally(tmp_path: Path):
    config = tmp_path / "typo.toml"
    config.write_text('[storge]\ncompression = "lz4"\n')
    result = run_cli("config", "show", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown config section [storge]" in result.stderr
    assert "known sections: [storage], [ring_buffer]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # never wrapped


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
            assert busy.returncode == 3
            assert "still has it open" in busy.stderr
        finally:
            child.kill()
    result = run_cli("repair", str(tmp_path), cwd=tmp_path)  # the folder above the run
    assert result.returncode == 0, result.stderr
    assert f"repaired {folder / 'pm.parquet'}" in result.stdout
    assert pl.read_parquet(folder / "pm.parquet")["v"].to_list() == [1.0, 2.0, 3.0]
    assert sorted(p.name for p in folder.iterdir()) == ["pm.parquet"]  # recovery file gone
    again = run_cli("repair", str(folder), cwd=tmp_path)
    assert again.returncode == 0
    assert f"ok       {folder / 'pm.parquet'}: 3 rows in 1 row groups" in again.stdout


def test_repair_reads_every_file_it_claims_to_have_checked(tmp_path: Path):
    run = tmp_path / "data" / "scan_v1"
    run.mkdir(parents=True)
    (run / "bad.parquet").write_text("hello")
    (run / "bad.h5").write_text("hello")
    (run / "README.md").write_text("notes")
    with h5py.File(tmp_path / "data" / "good.h5", "w") as f:
        f["x"] = [1, 2, 3]
    result = run_cli("repair", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"damaged  {run / 'bad.parquet'}" in result.stdout
    assert f"damaged  {run / 'bad.h5'}" in result.stdout
    assert f"skipped  {run / 'README.md'}" in result.stdout
    assert f"ok       {tmp_path / 'data' / 'good.h5'}: HDF5 with 1 datasets" in result.stdout
    assert "2 checked" not in result.stdout
    assert "3 checked, 0 repaired, 2 with problems, 1 skipped" in result.stdout
    assert "nothing to repair" not in result.stdout


def _one_error_line(result: Result) -> str:
    """A handled error: exit 2, and one line on stderr that is not a traceback."""
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


_KEYS = ["default_backend", "format", "output_dir", "output_path", "experiment", "compression",
         "compression_level", "chunk_size", "flush_interval_ms", "auto_flush_interval_secs",
         "path", "size_mb", "frames", "overflow", "block_timeout_secs", "max_readers",
         "hdf5_compression", "ring_buffer_frames", "bogus"]  # fmt: skip
_toml_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.floats().map(lambda v: "nan" if v != v else str(v).replace("inf", "inf")),
    st.booleans().map(lambda v: "true" if v else "false"),
    st.text(max_size=12).map(json.dumps),
    st.sampled_from(['"hdf5"', '"ZARR"', '"snappy"', '"block"', '"/dev/shm/x"', "[1, 2]",
                     "{ a = 1 }", "1979-05-27"]),
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["storage", "ring_buffer", "stroage"]),
        st.dictionaries(st.sampled_from(_KEYS), _toml_values, max_size=4),
        max_size=3,
    )
)
def test_config_show_reports_any_config_in_one_line_or_shows_it(
    sections: dict[str, dict[str, str]],
):
    """Whatever a config file holds: its values shown, or one line and exit 2."""
    text = "\n".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
        for name, keys in sections.items()
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "daq.toml"
        path.write_text(text)
        unset = {k: None for k in os.environ if k.startswith("DAQ_STORAGE_")}
        result = CliRunner().invoke(cli, ["config", "show", "--config", str(path)], env=unset)
    if result.exit_code == 0:
        assert "storage.compression" in result.stdout
    else:
        assert "ConfigError" in _one_error_line(result)


def test_debug_shows_the_traceback_an_error_line_hides(tmp_path: Path):
    """Without ``--debug`` an error is one line; with it the exception itself comes
    through, traceback and all."""
    from daq_storage.errors import ConfigError

    bad = tmp_path / "daq.toml"
    bad.write_text("[storage]\nbogus = 1\n")
    unset = {k: None for k in os.environ if k.startswith("DAQ_STORAGE_")}
    args = ["config", "show", "--config", str(bad)]
    quiet = CliRunner().invoke(cli, args, env=unset)
    assert "ConfigError" in _one_error_line(quiet)
    loud = CliRunner().invoke(cli, ["--debug", *args], env=unset)
    assert isinstance(loud.exception, ConfigError), loud.output
    assert "bogus" in str(loud.exception)
    shown = subprocess.run([sys.executable, "-m", "daq_storage.cli", "--debug", *args],
                           capture_output=True, text=True, env={**os.environ, **{
                               k: "" for k in os.environ if k.startswith("DAQ_STORAGE_")}},
                           check=False)  # fmt: skip
    assert shown.returncode != 0
    assert "Traceback (most recent call last)" in shown.stderr
