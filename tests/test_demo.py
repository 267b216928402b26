"""``daq-storage demo`` and ``run_demo``: instruments and Recorder in processes of their own,
the files of every format read back with the readers scientists use."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc
import pytest
from click.testing import CliRunner, Result

from daq_storage.cli import cli
from daq_storage.config import StorageConfig
from daq_storage.demo import CAMERA_RECORD_BYTES, DemoProgress, how_to_open, run_demo
from daq_storage.errors import ConfigError, RingBusy
from daq_storage.ring import RingReader
from tests.conftest import SHM_DIR, SHM_TEST_PREFIX
from tests.test_cli import _children, run_cli, start_cli, wait_for

SHM_BASE = SHM_DIR if SHM_DIR is not None else Path("/tmp")
STREAMS = ("camera_1", "power_meter_01", "daq_card")


def _demo_rings(pid: int) -> list[Path]:
    """What a demo run made for itself in shared memory: its ring
    (``daq_storage_<experiment>_<pid>_<id>``) and the Recorder's stats file beside it."""
    return [p for p in SHM_BASE.glob("daq_storage_*") if f"_{pid}_" in p.name]


@pytest.fixture(autouse=True)
def _demo_rings_removed() -> Iterator[None]:
    """Every demo run removes its own ring, and the Recorder's stats file, at the end."""
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


def _config(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "daq.toml"
    path.write_text(
        f'[storage]\noutput_dir = "{tmp_path / "data"}"\nexperiment = "bench"\n'
        + textwrap.dedent(text)
    )
    return path


def _load(tmp_path: Path, text: str = "") -> StorageConfig:
    return StorageConfig.load(_config(tmp_path, text), environ={})


def _table_rows(stdout: str) -> dict[tuple[str, str], list[str]]:
    """The demo's summary table: (stream, format) -> its cells."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) >= 7 and cells[0] in STREAMS:
            rows[(cells[0], cells[1])] = cells
    return rows


def _open_lines(stdout: str) -> dict[tuple[str, str], str]:
    lines = stdout.splitlines()
    start = lines.index("open with:")
    found = {}
    for line in lines[start + 1 :]:
        key, _, code = line.strip().partition(": ")
        fmt, _, stream = key.partition(" ")
        found[(fmt, stream)] = code
    return found


def _arrow(path: Path) -> pa.Table:
    with pyarrow.ipc.open_stream(path) as stream:
        return stream.read_all()


# --------------------------------------------------------------------- the real path
@pytest.mark.slow
def test_demo_records_every_frame_and_row_in_hdf5_and_arrow(tmp_path: Path):
    """The default run: instruments and Recorder in their own processes, HDF5 and Arrow
    IPC both holding every frame and row, with the same frame numbers and timestamps."""
    result = run_cli("demo", "--config", str(_config(tmp_path)), "--frames", "40",
                     "--seconds", "0.4", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "daq-storage demo: hdf5, arrow -> " in out
    rows = _table_rows(out)
    expected = {"camera_1": 40, "power_meter_01": 4_000, "daq_card": 40_000}
    for stream, count in expected.items():
        for fmt in ("hdf5", "arrow"):
            cells = rows[(stream, fmt)]
            assert cells[3:6] == [f"{count:,}", f"{count:,}", "0"], cells
    assert re.search(r"records through shared memory, 0 lost, 0 dropped", out)
    # Not a terminal: plain progress lines, the last when the instruments are done.
    progress = [ln for ln in out.splitlines() if "frames/s" in ln and "MB/s" in ln]
    assert progress
    assert progress[-1].startswith("done")
    assert "lost 0" in progress[-1]

    (h5,) = (tmp_path / "data").glob("bench_*_v1.h5")
    (run,) = (p for p in (tmp_path / "data").iterdir() if p.is_dir())
    assert run.name == h5.name.removesuffix(".h5")  # one run, one name, every format
    with h5py.File(h5, "r") as f:
        frames = f["camera_1/frames"]
        assert frames.shape == (40, 480, 640)
        numbers = f["camera_1/frame_number"][:]
        stamps = f["camera_1/timestamp_ns"][:]
        assert numbers.tolist() == list(range(40))
        assert f["power_meter_01/value"].shape == (4_000,)
        assert f["daq_card/ai0"].shape == (40_000,)
        assert json.loads(f.attrs["loss_ledger"]) == []
        assert int(f.attrs["lost_records"]) == 0
        first_frame = frames[7]
        power = f["power_meter_01/value"][:]
    camera = _arrow(run / "camera_1.arrows")
    assert camera.num_rows == 40
    assert camera["frame_number"].to_pylist() == numbers.tolist()
    assert camera["timestamp_ns"].cast(pa.int64()).to_numpy().tolist() == stamps.tolist()
    pixels = camera["frame"].combine_chunks().to_numpy_ndarray()
    assert np.array_equal(pixels[7], first_frame)
    assert pl.read_ipc_stream(run / "power_meter_01.arrows")["value"].to_list() == power.tolist()
    assert pl.read_ipc_stream(run / "daq_card.arrows").height == 40_000
    # The lines it prints open the streams as written.
    lines = _open_lines(out)
    assert set(lines) == {(fmt, s) for fmt in ("hdf5", "arrow") for s in STREAMS}
    _check_open_lines(lines, tmp_path, {"camera_1": 40, "power_meter_01": 4_000,
                                        "daq_card": 40_000})  # fmt: skip
    # The README shows this output: the same columns, rows and lines.
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    sample = readme[readme.index("daq-storage demo: hdf5, arrow -> ") :]
    sample = sample[: sample.index("```")]
    header = next(ln for ln in out.splitlines() if "┃ stream" in ln)
    assert " ".join(header.split()) in {" ".join(ln.split()) for ln in sample.splitlines()}
    assert set(_table_rows(sample)) == set(rows)
    assert set(_open_lines(sample)) == set(lines)


@pytest.mark.slow
def test_demo_flushes_only_when_the_interval_falls_due(tmp_path: Path):
    """run_demo as a function: progress reported while it runs, every stream accounted
    per format, the files read back; an interval longer than the run: no flush while it
    runs (nothing visible yet in Zarr, where only a flush makes rows visible), one at the
    Recorder's stop."""
    config = _load(tmp_path, """
        formats = ["parquet", "zarr"]
        flush_interval_ms = 3600000
    """)  # fmt: skip
    seen: list[DemoProgress] = []
    result = run_demo(config, frames=20, seconds=0.2, on_progress=seen.append)
    assert result.complete, result
    assert [f.format for f in result.formats] == ["parquet", "zarr"]
    assert seen
    assert seen[-1].done
    assert not any(p.done for p in seen[:-1])
    assert all(0.0 <= p.ring_fill <= 1.0 for p in seen)
    assert [p.frames for p in seen] == sorted(p.frames for p in seen)
    assert seen[-1].acquisition.streams["camera_1"].produced == 20
    zarr_seen = [p.recorder.formats["zarr"] for p in seen if "zarr" in p.recorder.formats]
    assert all(f.visible_rows == 0 for f in zarr_seen)
    assert (result.format("zarr").flushes, result.flushes) == (0, 0)  # closed, never flushed
    camera = result.stream("camera_1")
    assert (camera.produced, camera.taken, camera.dropped, camera.lost) == (20, 20, 0, 0)
    assert camera.stored == {"parquet": 20, "zarr": 20}
    assert result.stream("daq_card").stored == {"parquet": 20_000, "zarr": 20_000}
    assert result.ring_records == result.acquisition.records
    assert (result.lost_records, result.dropped_records, result.gaps) == (0, 0, ())
    assert result.file_bytes > 0
    assert not result.ring_path.exists()
    import pyarrow.parquet as pq

    (camera_file,) = camera.files["parquet"]
    assert pq.read_table(camera_file)["frame_number"].to_pylist() == list(range(20))
    # how_to_open gives a line that opens each stream in each format.
    lines = {(f, s.stream): how_to_open(f, result.path(f), s)
             for f in ("parquet", "zarr") for s in result.streams}  # fmt: skip
    _check_open_lines(lines, tmp_path, {"camera_1": 20, "power_meter_01": 2_000,
                                        "daq_card": 20_000})  # fmt: skip


@pytest.mark.slow
def test_demo_that_loses_data_says_so_per_stream_and_exits_3(tmp_path: Path):
    """A ring far smaller than the run, that never waits, and instruments as fast as they
    can go: the Recorder is lapped; the loss is in the table, on stderr, and in the files'
    ledger, counted exactly."""
    config = _config(tmp_path, """
        [ring_buffer]
        size_mb = 8
        overflow = "discard_oldest"

        [recorder]
        batch_bytes_mb = 4  # what it may hold in memory per format: far less than the run
    """)  # fmt: skip
    result = run_cli("demo", "--config", str(config), "--frames", "200", "--seconds", "2",
                     "--unpaced", "--no-progress", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    camera = _table_rows(result.stdout)[("camera_1", "hdf5")]
    assert camera[3] == "200"
    assert int(camera[5].replace(",", "")) > 0
    assert "LOST DATA" in camera[-1] or "NOTHING STORED" in camera[-1]
    assert "data lost: camera_1 produced 200 frames" in result.stderr
    lost = int(re.search(r"records through shared memory, (\d+) lost", result.stdout)[1])  # type: ignore[index]
    assert lost > 0
    assert f"the ring overwrote {lost:,} records" in result.stderr
    assert not any("frames/s" in line for line in result.stdout.splitlines())  # --no-progress
    (h5,) = (tmp_path / "data").glob("*.h5")
    with h5py.File(h5, "r") as f:
        ledger = json.loads(f.attrs["loss_ledger"])
        assert sum(gap["count"] for gap in ledger) == int(f.attrs["lost_records"]) == lost


@pytest.mark.slow
def test_a_block_mode_ring_that_times_out_counts_the_refused_records(tmp_path: Path):
    result = run_cli(
        "demo", "--frames", "200", "--seconds", "2", "--unpaced", "--format", "hdf5",
        cwd=tmp_path,
        env={"DAQ_STORAGE_RING_BUFFER_SIZE_MB": "8",
             "DAQ_STORAGE_RING_BUFFER_OVERFLOW": "block",
             "DAQ_STORAGE_RING_BUFFER_BLOCK_TIMEOUT_SECS": "0",
             "DAQ_STORAGE_RECORDER_BATCH_BYTES_MB": "4"},
    )  # fmt: skip
    assert "Traceback" not in result.stderr
    assert "RingFull" not in result.stderr
    assert result.returncode == 3, result.stdout + result.stderr
    assert "refused by the full ring" in result.stdout
    assert "data lost:" in result.stderr


def _check_open_lines(
    lines: dict[tuple[str, str], str], cwd: Path, expected: dict[str, int]
) -> None:
    """Every "open with" line runs as written (from ``cwd``: the paths are as the user
    gave them) and gives the stream, whole."""
    import pyarrow.parquet
    import tifffile
    import xarray

    readers = {"h5py": h5py, "polars": pl, "pyarrow": pyarrow, "tifffile": tifffile,
               "xarray": xarray}  # fmt: skip
    here = Path.cwd()
    os.chdir(cwd)
    try:
        for (fmt, stream), line in lines.items():
            opened = eval(line, readers)
            if stream == "camera_1":
                assert tuple(opened.shape) == (expected[stream], 480, 640), line
            elif fmt in ("hdf5", "zarr"):
                column = "sample_index" if stream == "daq_card" else "value"
                assert len(opened[column]) == expected[stream], line
            else:
                assert len(opened) == expected[stream], line
            if hasattr(opened, "file"):
                opened.file.close()
    finally:
        os.chdir(here)


@pytest.mark.slow
def test_every_format_prints_lines_that_open_each_stream(tmp_path: Path):
    """TIFF (frames only) and CSV (tables only) together hold every stream; --format is
    repeatable and ignores case. (HDF5, Arrow IPC, Parquet and Zarr: the tests above.)"""
    result = run_cli("demo", "--format", "TIFF", "--format", "csv", "--frames", "4",
                     "--seconds", "0.1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _open_lines(result.stdout)
    assert set(lines) == {("tiff", "camera_1"), ("csv", "power_meter_01"), ("csv", "daq_card")}
    for path in (tmp_path / "data").iterdir():  # one file per stream: run directories
        assert path.is_dir()
        assert re.search(r"_v\d+$", path.name), path
    _check_open_lines(lines, tmp_path, {"camera_1": 4, "power_meter_01": 1000,
                                        "daq_card": 10_000})  # fmt: skip


@pytest.mark.slow
def test_a_stream_no_format_can_hold_is_reported_lost(tmp_path: Path):
    """--format overrides [storage] formats; TIFF holds frames only: the tables are lost,
    and said so."""
    config = _config(tmp_path, 'formats = ["zarr"]\n')
    result = run_cli("demo", "--config", str(config), "--format", "tiff", "--frames", "2",
                     "--seconds", "0.1", "--no-progress", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    rows = _table_rows(result.stdout)
    assert {fmt for _, fmt in rows} == {"tiff", "-"}
    assert rows[("camera_1", "tiff")][3:6] == ["2", "2", "0"]
    assert rows[("power_meter_01", "-")][-1] == "NO FORMAT HOLDS IT"
    assert "data lost: power_meter_01 produced 1,000 rows, stored nowhere" in result.stderr
    assert [p.suffix for p in (tmp_path / "data").iterdir()] == [""]  # the TIFF run only


def test_a_stream_that_produced_nothing_is_not_reported_lost(tmp_path: Path):
    """No camera frame asked for (or Ctrl-C before the first): nothing to store is no loss."""
    result = run_cli("demo", "--frames", "0", "--seconds", "0.1", "--format", "hdf5",
                     "--no-progress", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _table_rows(result.stdout)
    assert rows[("camera_1", "-")][3:] == ["0", "0", "0", "0.0", "none produced"]
    assert rows[("power_meter_01", "hdf5")][3:6] == ["1,000", "1,000", "0"]
    assert "lost" not in result.stderr


@pytest.mark.slow
def test_ctrl_c_ends_the_run_early_and_says_what_was_stored(tmp_path: Path):
    """Ctrl-C reaches the terminal's whole process group (the demo, the Recorder, the
    instruments): the run ends early, the files are closed and whole, and the summary
    says what they hold; no traceback."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DAQ_STORAGE_")}
    child = subprocess.Popen(
        [sys.executable, "-m", "daq_storage.cli", "demo", "--frames", "1000", "--seconds",
         "10", "--format", "hdf5"], cwd=tmp_path, env=environ, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    _children.append(child.pid)
    try:
        assert child.stdout is not None
        # Progress lines (one a second) until the camera has written a frame: on a busy
        # machine the first lines can come before it has.
        produced_before, seen = 0, ""
        while produced_before == 0:
            seen += (line := child.stdout.readline())
            match = re.search(r"([\d,]+)/1,000 frames produced", line)
            assert match, seen + child.communicate(timeout=120)[1]
            produced_before = int(match[1].replace(",", ""))
        os.killpg(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert "Traceback" not in err, err
    camera = _table_rows(out)[("camera_1", "hdf5")]
    produced, stored = (int(cell.replace(",", "")) for cell in camera[3:5])
    assert produced_before <= produced < 1000, out + err
    (h5,) = (tmp_path / "data").glob("*.h5")
    with h5py.File(h5, "r") as f:
        assert f["camera_1/frames"].shape == (stored, 480, 640)
    # Records the instruments wrote after the Recorder's own last drain are lost, and said.
    assert child.returncode == (0 if stored == produced else 3), out + err
    assert ("data lost: camera_1" in err) == (stored < produced)


# --------------------------------------------------------------------- rings
@pytest.mark.slow
def test_two_demos_at_once_each_record_everything(tmp_path: Path):
    first = start_cli("demo", "--frames", "100", "--seconds", "1", "--output-dir", "one",
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
    assert _table_rows(out)[("camera_1", "hdf5")][3:6] == ["100", "100", "0"]
    assert _table_rows(second.stdout)[("camera_1", "arrow")][3:6] == ["10", "10", "0"]


@pytest.mark.slow
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
    assert _table_rows(out)[("camera_1", "hdf5")][3:6] == ["150", "150", "0"]
    assert not ring.exists()
    assert not list(SHM_BASE.glob(f"{ring.name}*"))  # the Recorder's stats file too


@pytest.mark.slow
def test_demo_fits_its_ring_into_a_small_tmpfs(small_tmpfs: Path, tmp_path: Path):
    """Docker's default /dev/shm is 64 MiB: the default 256 MiB ring must shrink to fit,
    and the run still loses nothing."""
    env = {"DAQ_STORAGE_RING_BUFFER_PATH": str(small_tmpfs / "ring")}
    result = run_cli("demo", "--frames", "60", "--seconds", "0.6", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 lost, 0 dropped" in result.stdout
    assert _table_rows(result.stdout)[("camera_1", "hdf5")][3:6] == ["60", "60", "0"]
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


# --------------------------------------------------------------------- output
def test_user_text_with_brackets_is_printed_literally(tmp_path: Path):
    shown = run_cli("demo", "--frames", "1", "--seconds", "0.01", "--output-dir", "scan[a]",
                    "--format", "hdf5", "--no-progress", cwd=tmp_path)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    (path,) = (tmp_path / "scan[a]").iterdir()
    assert f"hdf5: scan[a]/{path.name}: " in shown.stdout
    assert "daq-storage demo: hdf5 -> scan[a] in " in shown.stdout


def test_demo_into_unwritable_place_fails_clearly(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("demo", "--frames", "1", "--output-dir", str(blocker / "sub"), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "StorageIOError" in result.stderr
    assert "cannot create output directory" in result.stderr


@pytest.mark.parametrize("args", [["--frames", "-1"], ["--bogus"], ["--format", "hdf5,"]])
def test_demo_rejects_bad_arguments(args: list[str]):
    result = CliRunner().invoke(cli, ["demo", *args])
    assert result.exit_code == 2


# --------------------------------------------------------------------- config keys in effect
@pytest.mark.slow
def test_demo_applies_the_configured_keys(tmp_path: Path):
    """One run, every key it can show: the format, where and under what name, the codec,
    its level and the rows per chunk, the flush cadence (0: after every read), the ring
    sized in frames, its reader slots (the Recorder's and the demo's watcher need none
    more: a third reader is refused while it runs)."""
    ring = SHM_BASE / f"{SHM_TEST_PREFIX}keys_{uuid.uuid4().hex[:8]}"
    config = StorageConfig.load(_config(tmp_path, f"""
        default_backend = "hdf5"
        compression = "gzip"
        compression_level = 7
        chunk_size = 100
        flush_interval_ms = 0

        [ring_buffer]
        path = "{ring}"
        frames = 20
        max_readers = 1
    """), environ={})  # fmt: skip
    during: list[DemoProgress] = []
    intruders: list[str] = []

    def look(progress: DemoProgress) -> None:  # runs while the acquisition is going on
        during.append(progress)
        if not intruders:  # the one reader slot is the Recorder's
            with pytest.raises(RingBusy, match=r"no free reader slot.*max_readers=1") as busy:
                RingReader.open(ring, consumer="intruder")
            intruders.append(str(busy.value))

    result = run_demo(config, frames=30, seconds=0.3, on_progress=look)
    assert result.complete, result
    assert [f.format for f in result.formats] == ["hdf5"]  # default_backend alone
    path = result.path("hdf5")
    assert path.parent == tmp_path / "data"
    assert path.name.startswith("bench_")
    assert path.suffix == ".h5"
    # 20 camera records at once, plus one for the wrap, rounded up to the ring's 4 KiB.
    record = (CAMERA_RECORD_BYTES + 7) // 8 * 8
    assert result.ring_capacity == -(-21 * record // 4096) * 4096
    assert not ring.exists()
    assert result.flushes > 1  # every read that stored something, not only at the end
    assert during
    assert intruders
    with h5py.File(path, "r") as f:
        value = f["power_meter_01/value"]
        assert (value.compression, value.compression_opts, value.chunks) == ("gzip", 7, (100,))
        assert len(value) == 3000
        assert f["camera_1/frames"].compression == "gzip"
        assert f["camera_1/frames"].shape == (30, 480, 640)


def test_an_output_path_is_refused_before_anything_starts(tmp_path: Path):
    """The Recorder names its files (one per format, rotations): one path cannot."""
    result = run_cli("demo", "--frames", "2", cwd=tmp_path,
                     env={"DAQ_STORAGE_OUTPUT_PATH": str(tmp_path / "here.h5")})  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "ConfigError: storage.output_path" in result.stderr
    assert not (tmp_path / "here.h5").exists()
    assert not (tmp_path / "data").exists()


def test_formats_are_checked_before_anything_starts(tmp_path: Path):
    config = _load(tmp_path)
    with pytest.raises(ConfigError, match="unknown writer 'xlsx'"):
        run_demo(config, frames=1, seconds=0.01, formats=["xlsx"])
    with pytest.raises(ConfigError, match="given twice"):
        run_demo(config, frames=1, seconds=0.01, formats=["csv", "CSV"])
    with pytest.raises(ConfigError, match="non-empty list"):
        run_demo(config, frames=1, seconds=0.01, formats="hdf5")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("formats", "env", "expected"),
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
    tmp_path: Path, formats: str, env: dict[str, str], expected: str
):
    result = run_cli("demo", "--format", formats, "--frames", "1", cwd=tmp_path, env=env)
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
        ({"DAQ_STORAGE_AUTO_FLUSH_INTERVAL_SECS": "-1"}, [], "auto_flush_interval_secs: '-1'"),
        (
            {"DAQ_STORAGE_RING_BUFFER_FRAMES": "5", "DAQ_STORAGE_RING_BUFFER_SIZE_MB": "8"},
            [],
            "both size the ring",
        ),
        ({"DAQ_STORAGE_COMPRESSION": "lzw"}, ["--format", "zarr"], "storage.compression = 'lzw'"),
        ({"DAQ_STORAGE_CHUNK_SIZE": "64"}, ["--format", "tiff"], "storage.chunk_size = 64"),
        ({"DAQ_STORAGE_COMPRESSION_LEVEL": "3"}, ["--format", "csv"], "compression_level = 3"),
        ({}, ["--format", "xlsx"], "unknown writer 'xlsx'"),
        ({}, ["--format", "hdf5,HDF5"], "given twice"),
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
