"""``daq-storage plot``: PNGs of a run recorded by ``daq-storage demo`` and of files
written by the format writers, opened with PIL; errors as one line and exit 2; a long
stream plotted in bounded memory (the command's peak RSS, from its process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from PIL import Image

from daq_storage.cli import cli as main
from daq_storage.cli._plot_draw import BUCKETS, decimate
from daq_storage.read import open_run
from daq_storage.sim import SimulatedCamera
from daq_storage.streams import ChannelConfig, StreamWriter
from daq_storage.writers import open_writer
from tests.cli.conftest import environ

TIMEOUT_S = 120.0
T0_NS = 1_764_547_200_000_000_000  # 2025-12-01T00:00:00Z


def _daq_storage(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daq_storage.cli", *args], cwd=cwd,
                          env=environ(), capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False)  # fmt: skip


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run recorded by ``daq-storage demo`` (HDF5 and Arrow IPC): camera frames, the
    power meter, the DAQ card."""
    where = tmp_path_factory.mktemp("demo")
    result = _daq_storage("demo", "--output-dir", "data", "--frames", "20", "--seconds", "0.2",
                          "--unpaced", "--no-progress", cwd=where)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return where / "data"


def _h5(run_dir: Path) -> Path:
    (found,) = run_dir.glob("*.h5")
    return found


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def _colours(pixels: np.ndarray) -> int:
    return len(np.unique(pixels.reshape(-1, 3), axis=0))


def test_default_plot_of_a_demo_run_has_every_stream_and_the_middle_frame(
    demo_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run.png"
    result = CliRunner().invoke(main, ["plot", str(_h5(demo_run)), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"plot {out} (1000x1100 px): daq_card (ai0, ai1, ai2, ai3, ai4, ai5, ai6, ai7; "
        "20,000 rows), power_meter_01 (value; 2,000 rows), camera_1 frame 10 (11 of 20)\n"
    )
    pixels = _png(out)
    assert pixels.shape == (1100, 1000, 3)
    # Not blank: lines of eight channels and a colour-mapped camera frame.
    assert _colours(pixels) > 1000
    image_panel = pixels[600:, 300:900]  # the frame, drawn below the two panels
    assert _colours(image_panel) > 200
    assert pixels[:, :, 0].std() > 10


def test_one_column_of_the_arrow_copy(demo_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "power.png"
    args = ["plot", str(demo_run), "--format", "arrow", "--column", "value", "--dpi", "50"]
    result = CliRunner().invoke(main, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "power_meter_01 (value; 2,000 rows)" in result.output
    assert "camera_1" not in result.output  # --column: the tables that have it only
    pixels = _png(out)
    assert pixels.shape == (150, 500, 3)
    assert _colours(pixels) > 20


def test_a_palette_png_is_smaller_and_keeps_the_picture(demo_run: Path, tmp_path: Path) -> None:
    full, small = tmp_path / "full.png", tmp_path / "small.png"
    for out, extra in ((full, []), (small, ["--palette"])):
        args = ["plot", str(_h5(demo_run)), "--dpi", "60", *extra, "-o", str(out)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    with Image.open(small) as image:
        assert image.mode == "P"  # 8-bit, 256 colours
    assert small.stat().st_size < full.stat().st_size * 0.75
    before, after = _png(full).astype(int), _png(small).astype(int)
    assert before.shape == after.shape == (660, 600, 3)
    assert np.abs(before - after).mean() < 4  # dithered: the same picture, colour by colour
    assert _colours(after[360:, 180:540]) > 50  # the frame's gradient, not a few bands


def test_a_stream_writers_lz4_file_plots_in_volts_against_its_timestamps(tmp_path: Path) -> None:
    """Its time column is ``timestamps`` (a timestamp type); ``sample_index`` counts, so
    it is not drawn; reading lz4 needs hdf5plugin's filter in the command's process."""
    channels = [ChannelConfig(0, "AI0", -10.0, 10.0), ChannelConfig(1, "AI1", -1.0, 1.0)]
    ramp = np.linspace(-0.5, 0.5, 20_000)
    with StreamWriter(tmp_path / "daq.h5", channels=channels, sample_rate=10_000.0,
                      compression="lz4", start_ns=T0_NS) as writer:  # fmt: skip
        writer.write(np.column_stack([ramp * 10, ramp]))  # volts, stored as counts
    out = tmp_path / "daq.png"
    result = _daq_storage("plot", "daq.h5", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"plot {out} (1000x300 px): data (AI0, AI1; 20,000 rows)\n"
    with open_run(tmp_path / "daq.h5") as run:
        series = decimate(run, run.stream("data"), ["AI0", "AI1"])
    assert series.datetime
    assert series.time[0] == T0_NS
    assert series.time[-1] == T0_NS + (20_000 - series.step) * 100_000  # 10 kS/s
    assert series.units == {"AI0": "V", "AI1": "V"}
    assert series.high["AI0"].max() == pytest.approx(5.0, abs=1e-3)  # volts, not counts
    assert series.low["AI1"].min() == pytest.approx(-0.5, abs=1e-4)


def test_last_frame_of_a_zarr_store(tmp_path: Path) -> None:
    camera = SimulatedCamera((48, 64), seed=1)
    block = camera.frames(7)
    store = tmp_path / "scan.zarr"
    with open_writer("zarr", store) as writer:
        writer.write_frames("camera_1", block.frames, timestamps_ns=block.timestamps_ns,
                            frame_numbers=block.frame_numbers + 100)  # fmt: skip
    out = tmp_path / "frame.png"
    result = CliRunner().invoke(main, ["plot", str(store), "--frame", "-1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "camera_1 frame 106 (7 of 7)" in result.output
    assert _colours(_png(out)) > 100


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--stream", "nope"],
            r"UnknownStream: run .* has no stream 'nope'; its streams are "
            r"\['camera_1', 'daq_card', 'power_meter_01'\]",
        ),
        (
            ["--column", "unit"],
            r"UnsupportedData: column 'unit' of stream 'power_meter_01' "
            r"\(.*\) holds text \(string\), not numbers; its numeric "
            r"columns are \['value'\]",
        ),
        (["--column", "nope"], r"ConfigError: no table stream of .* has a column 'nope'"),
        (
            ["--stream", "daq_card", "--column", "value"],
            r"ConfigError: no column 'value' in stream\(s\) \['daq_card'\]",
        ),
        (["--frame", "20"], r"ConfigError: --frame 20: stream 'camera_1' of .* has 20 frames"),
        (
            ["--stream", "power_meter_01", "--frame", "0"],
            r"ConfigError: --frame 0: no frame stream chosen .*\['camera_1'\]",
        ),
    ],
    ids=["stream", "text-column", "column", "column-of-other-stream", "frame", "no-frames"],
)
def test_bad_choices_are_one_error_line_and_exit_2(
    demo_run: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "x.png"
    result = CliRunner().invoke(main, ["plot", str(_h5(demo_run)), *args, "-o", str(out)])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert re.fullmatch("error: " + message + ".*", line), line
    assert not out.exists()


def test_several_formats_say_how_to_choose(demo_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["plot", str(demo_run), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "several formats: ['arrow', 'hdf5']" in result.stderr
    assert result.stderr.rstrip().endswith("daq-storage plot --format NAME")


def test_an_empty_stream_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "empty"
    schema = pa.schema([("timestamp_ns", pa.timestamp("ns", tz="UTC")), ("value", pa.float64())])
    with open_writer("parquet", run) as writer:
        writer.write_batch("meter", pa.RecordBatch.from_pylist([], schema=schema))
    result = CliRunner().invoke(main, ["plot", str(run), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert f"error: UnsupportedData: stream 'meter' of {run} is empty (0 rows)" in result.stderr


def _signal_file(path: Path, rows: int) -> None:
    """``rows`` rows of a sine, 1 µs apart, with one spike of 10.0 in the middle."""
    chunk = 1_000_000
    with open_writer("hdf5", path) as writer:
        for start in range(0, rows, chunk):
            index = np.arange(start, min(start + chunk, rows), dtype=np.int64)
            value = np.sin(index / 1e5)
            value[index == rows // 2 + 123] = 10.0
            stamps = pa.array(T0_NS + index * 1000, pa.timestamp("ns", tz="UTC"))
            writer.write_batch("signal", pa.record_batch({"timestamp_ns": stamps, "value": value}))


def _peak_rss_kib(argv: list[str]) -> int:
    """Run ``argv`` to its end; its own peak resident set (KiB), from its rusage."""
    process = subprocess.Popen(argv, env=environ(), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0
    return int(usage.ru_maxrss)


@pytest.mark.parametrize(
    "rows", [2_000_000, pytest.param(10_000_000, marks=pytest.mark.stress)], ids=str
)
def test_a_long_stream_is_drawn_as_min_max_buckets_in_bounded_memory(
    tmp_path: Path, rows: int
) -> None:
    small, large = tmp_path / "small.h5", tmp_path / "large.h5"
    _signal_file(small, 1000)
    _signal_file(large, rows)
    with open_run(large) as run:
        series = decimate(run, run.stream("signal"), ["value"])
    assert len(series.time) == BUCKETS
    assert series.step == rows // BUCKETS
    assert series.high["value"].max() == 10.0  # the one-row spike survives
    assert series.low["value"].min() == pytest.approx(-1.0, abs=1e-6)
    assert series.time[0] == T0_NS
    assert series.time[-1] == T0_NS + (rows - series.step) * 1000
    command = [sys.executable, "-m", "daq_storage.cli", "plot"]
    baseline = _peak_rss_kib([*command, str(small), "-o", str(tmp_path / "small.png")])
    peak = _peak_rss_kib([*command, str(large), "-o", str(tmp_path / "large.png")])
    data_kib = rows * 16 // 1024  # timestamp_ns and value, 8 bytes each
    # Reading the stream whole would add its size; batches add a few MB.
    assert peak - baseline < data_kib // 2, (baseline, peak, data_kib)
    assert _colours(_png(tmp_path / "large.png")) > 20


def test_help_shows_examples() -> None:
    result = CliRunner().invoke(main, ["plot", "--help"])
    assert result.exit_code == 0
    assert "Examples:\n    daq-storage plot data/experiment_" in result.output
    for option in ("--stream", "--column", "--frame", "--format", "--palette", "--output"):
        assert option in result.output
