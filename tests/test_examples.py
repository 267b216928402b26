"""Every example in examples/ runs and prints what it promises (not just exit 0)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from daq_storage.config import CODEC_KEYS, StorageConfig
from daq_storage.writers import get_writer_class, writer_options

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: Lines each example must print: the results it promises, checked by pattern.
EXPECTED: dict[str, list[str]] = {
    "arrow_realtime.py": [
        r"^live:  5000 readings, newest mean \d\.\d{3} mW$",
        r"^read while recording: 2500 of 2500 rows so far$",
        r"^recorded 5000 readings in 50 batches, lost 0$",
        r"^polars: \(5000, 4\), columns \['timestamp_ns', 'channel', 'value', 'unit'\]$",
    ],
    "camera_to_hdf5.py": [
        r"^h5py: camera_1/frames \(30, 240, 320\) uint16, gzip, chunks \(1, 240, 320\)$",
        r"^  stored in 0\.\d\d of its raw size$",
        r"^  file attributes: experiment=wavelength_scan$",
        r"^  frames at 800 nm: \[10, 11, 12, 13, 14\]$",
        r"^power_meter_01: 600 rows in W$",
    ],
    "csv_export.py": [
        r"^convert: hdf5 -> csv, files \['metadata\.json', 'power_meter_01\.csv'\]$",
        r"^  header \['timestamp_ns', 'channel', 'value', 'unit'\], 2000 rows$",
        r"^power_mW\.csv: \['timestamp', 'power_mW'\], 2000 rows, mean 1\.0\d\d mW$",
    ],
    "multi_format.py": [
        r"^wrote 100000 samples x 8 channels to \['data\.h5', 'data'\]$",
        r"^h5py: /data/AI0\.\.AI7 \(100000, 8\) int16, scale_factor 3\.052e-04 V per count$",
        r"^pyarrow: 100000 rows, columns \['timestamps', 'sample_index', 'AI0'\] \.\.\.$",
        r"^identical samples and timestamps in both: True$",
        r"^AI0 through open_run: float64, ",
    ],
    "recorder_and_instruments.py": [
        r"^camera_1: produced 30 frames, ring refused 0$",
        r"^recorder: 36 records, lost 0, complete True$",
        r"^hdf5: camera_1 \(30, 480, 640\), power_meter_01 3000 rows$",
        r"^parquet: power_meter_01 3000 rows$",
    ],
    "ring_live_view.py": [
        r"^recorded 200 frames and 20000 power-meter rows; lost 0, ring wrote 400 records$",
    ],
    "simulated_instruments.py": [
        r"^camera: \(10, 480, 640\) uint16, gzip ratio 0\.\d\d$",
        r"^  frame numbers \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\]$",
        r"^power meter: 2000 rows",
        r"^DAQ card: \(10000, 8\) int16 at 100000\.0 S/s$",
    ],
    "writers_every_format.py": [
        r"^h5py: \(10, 120, 160\) ",
        r"^polars: \(1000, 4\)$",
        r"^tifffile: \(10, 120, 160\)$",
    ],
    "zarr_nested_scan.py": [
        r"^xarray: camera_frames \{'wavelength': 10, 'position': 5, 'y': 128, 'x': 128\}$",
        r"^  dims \('wavelength', 'position', 'y', 'x'\), chunks \(10, 1, 128, 128\)$",
        r"^  brightest wavelength: 800 nm$",
        r"^  one image at 800 nm, 1\.0 mm: \(128, 128\), mean \d+ counts$",
    ],
}


def test_every_example_has_expectations():
    assert sorted(EXPECTED) == sorted(p.name for p in EXAMPLES.glob("*.py"))


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_example_prints_its_results(script: Path, tmp_path: Path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DAQ_STORAGE_")}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
    for pattern in EXPECTED[script.name]:
        assert re.search(pattern, result.stdout, re.MULTILINE), (
            f"{script.name} did not print {pattern!r}:\n{result.stdout}"
        )


@pytest.mark.parametrize("config", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_example_config_is_valid_and_reaches_its_format(config: Path):
    """Every key the example sets is honoured by its format: none refused, none lost."""
    loaded = StorageConfig.load(config, environ={})
    settings = loaded.storage
    writer_class = get_writer_class(settings.default_backend)
    options = writer_options(writer_class, settings)
    given = {k: getattr(settings, k) for k in CODEC_KEYS if getattr(settings, k) is not None}
    assert options == {writer_class.config_keys[k]: v for k, v in given.items()}
    assert writer_class.validate_options(**options)
