"""The daq-storage command, run as a user would run it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import polars as pl
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from daq_storage import __version__
from daq_storage.cli import cli
from daq_storage.config import StorageConfig
from daq_storage.demo import CAMERA_RECORD_BYTES, run_demo
from daq_storage.errors import RingBusy
from daq_storage.ring import RingReader
from daq_storage.writers import Writer
from tests.conftest import SHM_DIR, SHM_TEST_PREFIX

SHM_BASE = SHM_DIR if SHM_DIR is not None else Path("/tmp")


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


def _demo_rings(pid: int) -> list[Path]:
    """The rings a demo run made for itself (``daq_storage_<experiment>_<pid>_<id>``)."""
    return [p for p in SHM_BASE.glob("daq_storage_*") if f"_{pid}_" in p.name]


@pytest.fixture(autouse=True)
def _demo_rings_removed() -> Iterator[None]:
    """Every demo run removes its own ring at the end."""
    _children.clear()
    yield
    left = [ring for pid in _children for ring in _demo_rings(pid)]
    for path in left:
        path.unlink(missing_ok=True)
    assert not left, f"a demo run left its ring behind: {sorted(left)}"


@pytest.fixture
def small_tmpfs(mount_tmpfs: Callable[[str], Path]) -> Path:
    """A real 64 MiB tmpfs, the size of Docker's default /dev/shm (needs root, as in CI)."""
    return mount_tmpfs("64m")


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


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """The demo's summary table: stream -> its cells."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) >= 6 and cells[0] in ("camera_1", "power_meter_01", "daq_card"):
            rows[cells[0]] = cells
    return rows


def test_demo_records_through_the_ring_into_hdf5(tmp_path: Path):
    result = run_cli("demo", "--frames", "20", "--seconds", "0.2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "records through shared memory, 0 lost, 0 dropped" in result.stdout
    rows = _table_rows(result.stdout)
    assert rows["camera_1"][:5] == ["camera_1", "frames", "20", "20", "0"]
    assert rows["power_meter_01"][:5] == ["power_meter_01", "table", "2,000", "2,000", "0"]
    assert rows["daq_card"][:5] == ["daq_card", "table", "20,000", "20,000", "0"]
    (path,) = sorted((tmp_path / "data").iterdir())
    assert path.name.startswith("experiment_")
    assert path.name.endswith("_v1.h5")
    with h5py.File(path, "r") as f:
        assert f["camera_1/frames"].shape == (20, 480, 640)
        assert list(f["camera_1/frame_number"][:]) == list(range(20))
        assert f["power_meter_01/value"].shape == (2000,)
        assert f["daq_card/ai0"].shape == (20_000,)
        assert f.attrs["experiment"] == "experiment"


def _open_lines(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    start = lines.index("open with:")
    return dict(line.strip().split(": ", 1) for line in lines[start + 1 :] if line.strip())


@pytest.mark.parametrize("backend", ["hdf5", "arrow", "parquet", "csv", "zarr", "tiff"])
def test_demo_in_every_format_prints_lines_that_open_each_stream(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
):
    """Every "open with" line the summary prints runs as written and gives the stream."""
    import pyarrow.ipc
    import pyarrow.parquet
    import tifffile
    import xarray

    result = run_cli("demo", "--format", backend.upper(), "--frames", "4", "--seconds", "0.1",
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (path,) = sorted((tmp_path / "data").iterdir())
    if backend in ("hdf5", "zarr"):
        assert path.suffix == {"hdf5": ".h5", "zarr": ".zarr"}[backend]
    else:  # a directory of one file per stream is named as a directory
        assert path.is_dir()
        assert path.name.endswith("_v1")
    lines = _open_lines(result.stdout)
    expected = {"camera_1": 4, "power_meter_01": 1000, "daq_card": 10_000}
    holds_frames = backend not in ("csv",)
    holds_tables = backend != "tiff"
    wanted = {s for s in expected if (s == "camera_1" and holds_frames)
              or (s != "camera_1" and holds_tables)}  # fmt: skip
    assert set(lines) == wanted
    monkeypatch.chdir(tmp_path)  # the printed paths are relative, as the user gave them
    names = {"h5py": h5py, "polars": pl, "pyarrow": pyarrow, "tifffile": tifffile,
             "xarray": xarray}  # fmt: skip
    for stream, line in lines.items():
        opened = eval(line, names)
        if stream == "camera_1":
            assert tuple(opened.shape) == (4, 480, 640), line
        elif backend in ("hdf5", "zarr"):
            assert (
                len(opened["sample_index" if stream == "daq_card" else "value"]) == expected[stream]
            ), line
        else:
            assert len(opened) == expected[stream], line
        if hasattr(opened, "file"):
            opened.file.close()


def test_demo_that_loses_data_says_so_per_stream_and_exits_3(tmp_path: Path):
    # A ring far smaller than the run, that never waits, and instruments as fast as
    # they can go: the recorder is lapped.
    result = run_cli(
        "demo", "--frames", "200", "--seconds", "0.5", "--unpaced", cwd=tmp_path,
        env={"DAQ_STORAGE_RING_BUFFER_SIZE_MB": "8",
             "DAQ_STORAGE_RING_BUFFER_OVERFLOW": "discard_oldest"},
    )  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    rows = _table_rows(result.stdout)
    camera = rows["camera_1"]
    assert camera[2] == "200"
    assert int(camera[4].replace(",", "")) > 0
    assert "LOST DATA" in camera[-1] or "NOTHING STORED" in camera[-1]
    assert "data lost: camera_1 stored" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_block_mode_ring_that_times_out_counts_the_refused_records(tmp_path: Path):
    result = run_cli(
        "demo", "--frames", "200", "--seconds", "0.5", "--unpaced", cwd=tmp_path,
        env={"DAQ_STORAGE_RING_BUFFER_SIZE_MB": "8",
             "DAQ_STORAGE_RING_BUFFER_OVERFLOW": "block",
             "DAQ_STORAGE_RING_BUFFER_BLOCK_TIMEOUT_SECS": "0"},
    )  # fmt: skip
    assert "Traceback" not in result.stderr
    assert "RingFull" not in result.stderr
    assert result.returncode == 3, result.stdout + result.stderr
    assert "refused by the full ring" in result.stdout
    assert "data lost:" in result.stderr


def test_two_demos_at_once_each_record_everything(tmp_path: Path):
    first = start_cli("demo", "--frames", "150", "--seconds", "1.5", "--output-dir", "one",
                      cwd=tmp_path)  # fmt: skip
    try:
        # The first run's own ring exists: it is recording.
        wait_for(lambda: bool(_demo_rings(first.pid)) or first.poll() is not None,
                 "the first run's ring")  # fmt: skip
        second = run_cli("demo", "--frames", "10", "--seconds", "0.1", "--output-dir", "two",
                         cwd=tmp_path)  # fmt: skip
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, out + err
    assert second.returncode == 0, second.stdout + second.stderr
    assert _table_rows(out)["camera_1"][:5] == ["camera_1", "frames", "150", "150", "0"]
    assert _table_rows(second.stdout)["camera_1"][:5] == ["camera_1", "frames", "10", "10", "0"]


def test_a_configured_ring_in_use_is_never_replaced(tmp_path: Path):
    ring = SHM_BASE / f"{SHM_TEST_PREFIX}cli_{uuid.uuid4().hex[:8]}"
    env = {"DAQ_STORAGE_RING_BUFFER_PATH": str(ring)}
    first = start_cli("demo", "--frames", "150", "--seconds", "1.5", "--output-dir", "one",
                      cwd=tmp_path, env=env)  # fmt: skip
    try:
        wait_for(lambda: (ring.exists() and ring.stat().st_size > 0) or first.poll() is not None,
                 "the first run's ring")  # fmt: skip
        second = run_cli("demo", "--frames", "2", "--output-dir", "two", cwd=tmp_path, env=env)
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2, second.stdout + second.stderr
    assert "RingBusy" in second.stderr
    assert str(ring) in second.stderr
    assert first.returncode == 0, out + err
    assert _table_rows(out)["camera_1"][:5] == ["camera_1", "frames", "150", "150", "0"]
    assert not ring.exists()


def test_demo_fits_its_ring_into_a_small_tmpfs(small_tmpfs: Path, tmp_path: Path):
    """Docker's default /dev/shm is 64 MiB: the default 256 MiB ring must shrink to fit,
    and the run still loses nothing."""
    env = {"DAQ_STORAGE_RING_BUFFER_PATH": str(small_tmpfs / "ring")}
    result = run_cli("demo", "--frames", "60", "--seconds", "0.3", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 lost, 0 dropped" in result.stdout
    assert _table_rows(result.stdout)["camera_1"][:5] == ["camera_1", "frames", "60", "60", "0"]
    assert list(small_tmpfs.iterdir()) == []


def test_a_configured_ring_too_big_for_its_tmpfs_is_refused_clearly(
    small_tmpfs: Path, tmp_path: Path
):
    env = {"DAQ_STORAGE_RING_BUFFER_PATH": str(small_tmpfs / "ring"),
           "DAQ_STORAGE_RING_BUFFER_SIZE_MB": "64"}  # fmt: skip
    result = run_cli("demo", "--frames", "2", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "StorageIOError" in result.stderr
    assert str(small_tmpfs) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(small_tmpfs.iterdir()) == []


def test_user_text_with_brackets_is_printed_literally(tmp_path: Path):
    config = tmp_path / "typo.toml"
    config.write_text('[storge]\ncompression = "lz4"\n')
    result = run_cli("config", "show", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown config section [storge]" in result.stderr
    assert "known sections: [storage], [ring_buffer]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # never wrapped
    shown = run_cli("demo", "--frames", "1", "--seconds", "0", "--output-dir", "scan[a]",
                    cwd=tmp_path)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    (path,) = (tmp_path / "scan[a]").iterdir()
    assert f"-> scan[a]/{path.name}" in shown.stdout


def test_demo_never_overwrites(tmp_path: Path):
    for _ in range(2):
        result = run_cli(
            "demo", "--frames", "2", "--seconds", "0", "--output-dir", "out", cwd=tmp_path
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


# --------------------------------------------------------------------- config keys in effect
def _load(tmp_path: Path, text: str) -> StorageConfig:
    path = tmp_path / "daq.toml"
    path.write_text(textwrap.dedent(text))
    return StorageConfig.load(path, environ={})


def test_demo_applies_the_configured_keys(tmp_path: Path):
    """One run, every key it can show: the format, where and under what name, the codec,
    its level and the rows per chunk, the flush cadence (0: after every read, so the
    files show data while the run goes on), the ring sized in frames, its reader slots."""
    ring = SHM_BASE / f"{SHM_TEST_PREFIX}keys_{uuid.uuid4().hex[:8]}"
    config = _load(tmp_path, f"""
        [storage]
        default_backend = "hdf5"
        output_dir = "{tmp_path / "out"}"
        experiment = "keys"
        compression = "gzip"
        compression_level = 7
        chunk_size = 100
        flush_interval_ms = 0

        [ring_buffer]
        path = "{ring}"
        frames = 20
        max_readers = 1
    """)  # fmt: skip
    during: list[dict[str, tuple[int, int]]] = []
    intruders: list[str] = []

    def look(writer: Writer) -> None:  # runs while the acquisition is going on
        during.append({s: (writer.visible(s), writer.accepted(s)) for s in writer.streams})
        if not intruders:  # the one reader slot is the recorder's
            with pytest.raises(RingBusy, match=r"no free reader slot.*max_readers=1") as busy:
                RingReader.open(ring, consumer="intruder")
            intruders.append(str(busy.value))

    result = run_demo(config, frames=30, seconds=0.3, on_flush=look)
    assert result.complete
    assert result.backend == "hdf5"
    assert result.path.parent == tmp_path / "out"
    assert result.path.name.startswith("keys_")
    assert result.path.suffix == ".h5"
    # 20 camera records at once, plus one for the wrap, rounded up to the ring's 4 KiB.
    record = (CAMERA_RECORD_BYTES + 7) // 8 * 8
    assert result.ring_capacity == -(-21 * record // 4096) * 4096
    assert not ring.exists()
    assert intruders
    assert result.flushes >= 1
    assert any(any(visible for visible, _ in seen.values()) for seen in during)
    assert all(visible == accepted for seen in during for visible, accepted in seen.values())
    with h5py.File(result.path, "r") as f:
        value = f["power_meter_01/value"]
        assert (value.compression, value.compression_opts, value.chunks) == ("gzip", 7, (100,))
        assert len(value) == 3000
        assert f["camera_1/frames"].compression == "gzip"
        assert f["camera_1/frames"].shape == (30, 480, 640)


def test_demo_flushes_only_when_the_interval_falls_due(tmp_path: Path):
    """An interval longer than the run: no flush while it runs (the files show the data
    at the end, when the writer closes); default_backend picks the format."""
    config = _load(tmp_path, f"""
        [storage]
        default_backend = "zarr"
        output_dir = "{tmp_path}"
        flush_interval_ms = 3600000
    """)  # fmt: skip
    flushed: list[int] = []
    result = run_demo(config, frames=10, seconds=0.2, on_flush=lambda w: flushed.append(1))
    assert result.complete
    assert (result.flushes, flushed) == (0, [])
    assert result.path.suffix == ".zarr"
    import zarr

    frames: Any = zarr.open_group(result.path, mode="r")["camera_1/frames"]
    assert frames.shape == (10, 480, 640)


def test_demo_writes_to_the_configured_output_path(tmp_path: Path):
    target = tmp_path / "exactly" / "here.h5"
    result = run_cli("demo", "--frames", "2", "--seconds", "0", cwd=tmp_path,
                     env={"DAQ_STORAGE_OUTPUT_PATH": str(target)})  # fmt: skip
    assert result.returncode == 0, result.stderr
    with h5py.File(target, "r") as f:
        assert f["camera_1/frames"].shape == (2, 480, 640)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("backend", "env", "expected"),
    [
        (
            "hdf5",
            {"DAQ_STORAGE_COMPRESSION": "snappy"},
            r"storage\.compression = 'snappy' \(env DAQ_STORAGE_COMPRESSION\): the hdf5 writer "
            r"cannot honour it .*; it takes one of 'none', 'gzip'",
        ),
        (
            "csv",
            {"DAQ_STORAGE_COMPRESSION": "gzip", "DAQ_STORAGE_CHUNK_SIZE": "10"},
            r"storage\.compression = 'gzip' \(env DAQ_STORAGE_COMPRESSION\): the csv writer does "
            r"not take it; storage\.chunk_size = 10 .*: the csv writer does not take it",
        ),
    ],
)
def test_a_key_the_format_cannot_honour_stops_the_demo_before_it_starts(
    tmp_path: Path, backend: str, env: dict[str, str], expected: str
):
    result = run_cli("demo", "--format", backend, "--frames", "1", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert re.search(r"^error: ConfigError: " + expected, result.stderr), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()  # nothing made, no ring left (see the fixture)


def _one_error_line(result: Result) -> str:
    """A handled error: exit 2, and one line on stderr that is not a traceback."""
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"DAQ_STORAGE_AUTO_FLUSH_INTERVAL_SECS": "5"}, [], "storage actor"),
        (
            {"DAQ_STORAGE_RING_BUFFER_FRAMES": "5", "DAQ_STORAGE_RING_BUFFER_SIZE_MB": "8"},
            [],
            "both size the ring",
        ),
        ({"DAQ_STORAGE_COMPRESSION": "lzw"}, ["--format", "zarr"], "storage.compression = 'lzw'"),
        ({"DAQ_STORAGE_CHUNK_SIZE": "64"}, ["--format", "tiff"], "storage.chunk_size = 64"),
        ({"DAQ_STORAGE_COMPRESSION_LEVEL": "3"}, ["--format", "csv"], "compression_level = 3"),
        ({}, ["--format", "xlsx"], "unknown writer 'xlsx'"),
        ({"DAQ_STORAGE_EXPERIMENT": "../.."}, [], "experiment"),
        ({"DAQ_STORAGE_RING_BUFFER_MAX_READERS": "0"}, [], "ring_buffer.max_readers: '0'"),
        ({"DAQ_STORAGE_RING_BUFFER_PATH": "/"}, [], "/"),
        ({"DAQ_STORAGE_RING_BUFFER_FRAMES": "16777216"}, [], "ring"),
        ({"DAQ_STORAGE_FLUSH_INTERVAL_MS": "soon"}, [], "flush_interval_ms: 'soon'"),
        ({"DAQ_STORAGE_CONFIG": "/"}, [], "cannot be read"),
    ],
)
def test_no_config_error_shows_a_traceback(
    env: dict[str, str], args: list[str], expected: str, tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
):  # fmt: skip
    clean_env.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["demo", "--frames", "1", "--seconds", "0", *args], env=env)
    line = _one_error_line(result)
    assert expected in line
    assert not (tmp_path / "data").exists()


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
