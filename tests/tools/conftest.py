"""What the tools tests inspect and convert: runs written by the real writers."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from daq_storage.naming import format_filename
from daq_storage.writers import open_writer
from tests.read.helpers import START_NS, TARGETS, write_run

__all__ = ["GAPS", "START_NS", "TARGETS", "cli", "write_lossy_versions", "write_run"]

WHEN = datetime(2026, 3, 1, 12, 0, 0)
#: What a Recorder's ledger holds (LossGap.to_dict()), one gap per version written.
GAPS = [
    {
        "first_seq": 5,
        "last_seq": 7,
        "count": 3,
        "after_ns": START_NS + 4,
        "before_ns": START_NS + 8,
        "detected_ns": START_NS + 100,
    },
    {
        "first_seq": 30,
        "last_seq": 39,
        "count": 10,
        "after_ns": START_NS + 29,
        "before_ns": START_NS + 40,
        "detected_ns": START_NS + 200,
    },
]


def write_lossy_versions(directory: Path, name: str) -> list[Path]:
    """Two rotated versions of run ``scan`` in format ``name``, as a Recorder leaves
    them: a table ``power`` (and frames ``camera`` where the format holds them), each
    version's ``loss_ledger`` and ``lost_records`` naming the gap it saw."""
    suffix = {"hdf5": "h5", "zarr": "zarr"}.get(name, "")
    paths = []
    for version, gap in enumerate(GAPS, start=1):
        path = directory / format_filename("scan", WHEN, version, suffix)
        first = (version - 1) * 50
        with open_writer(name, path) as writer:
            writer.set_metadata("experiment", "scan")
            if writer.supports_tables:
                stamps = START_NS + np.arange(first, first + 50, dtype=np.int64)
                writer.write_batch(
                    "power",
                    pa.record_batch(
                        {
                            "timestamp_ns": pa.array(stamps, pa.timestamp("ns", "UTC")),
                            "value": np.arange(first, first + 50, dtype=np.float64),
                        }
                    ),
                )
            if writer.supports_frames:
                frames = np.full((4, 3, 5), version, np.uint16)
                writer.write_frames(
                    "camera",
                    frames,
                    timestamps_ns=START_NS + np.arange(first, first + 4),
                    frame_numbers=np.arange(first, first + 4),
                )
            writer.set_metadata("loss_ledger", [gap])
            writer.set_metadata("lost_records", gap["count"])
        paths.append(path)
    return paths


def cli(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``daq-storage ARGS`` in a process of its own (the console script beside this
    interpreter)."""
    exe = Path(sys.executable).with_name("daq-storage")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DAQ_STORAGE_")}
    return subprocess.run(
        [str(exe), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def every_format(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same run (``power``, ``rich``, ``camera``: what each format holds) in every
    format, written once for the module: format -> its output."""
    directory = tmp_path_factory.mktemp("runs")
    out = {}
    for name, target in TARGETS.items():
        write_run(name, directory / target)
        out[name] = directory / target
    return out
