"""An output is born complete: a writer process SIGKILLed at the instant between making a
file and giving it its name leaves nothing under that name (only a hidden temporary that
``daq-storage repair`` removes), and a name taken meanwhile is never replaced.

The instant is made exact without sleeping: the child process stops itself (SIGSTOP) in
the first ``os.link`` (files) or ``os.rename`` (a Zarr store) it calls, the parent sees
it stopped (``waitpid`` with ``WUNTRACED``), then kills it, or lets it go on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import pytest

from daq_storage.repair import check_files
from daq_storage.writers._per_stream import leftover
from tests.writers.conformance import read_stream


@dataclass(frozen=True)
class Case:
    module: str
    cls: str
    body: str  # Python source making the output with ``writer``, under OUT
    output: str  # the output's name, relative to OUT
    hook: str = "link"  # the call that gives the output its name


_TABLE = 'writer.write_batch("s", pa.record_batch({"v": np.arange(5.0)}))'
_FRAMES = 'writer.write_frames("s", np.arange(3 * 64, dtype=np.uint16).reshape(3, 8, 8))'
CASES = {
    "hdf5": Case("hdf5", "Hdf5Writer", 'writer = Hdf5Writer(OUT / "run.h5")', "run.h5"),
    "hdf5-swmr": Case(
        "hdf5", "Hdf5Writer", 'writer = Hdf5Writer(OUT / "run.h5", swmr=True)', "run.h5"
    ),
    "parquet": Case("parquet", "ParquetWriter",
                    f'writer = ParquetWriter(OUT / "run")\n{_TABLE}', "run/s.parquet"),
    "arrow": Case("arrow_ipc", "ArrowWriter",
                  f'writer = ArrowWriter(OUT / "run")\n{_TABLE}', "run/s.arrows"),
    "csv": Case("csv", "CsvWriter", f'writer = CsvWriter(OUT / "run")\n{_TABLE}', "run/s.csv"),
    "tiff": Case("tiff", "TiffWriter", f'writer = TiffWriter(OUT / "run")\n{_FRAMES}',
                 "run/s.tif"),
    "tiff-zlib": Case("tiff", "TiffWriter",
                      f'writer = TiffWriter(OUT / "run", compression="zlib")\n{_FRAMES}\n'
                      "writer.flush()", "run/s.tif"),
    "tiff-imagej": Case("tiff", "TiffWriter",
                        f'writer = TiffWriter(OUT / "run", imagej=True)\n{_FRAMES}',
                        "run/s.tif"),
    "zarr": Case("zarr", "ZarrWriter", 'writer = ZarrWriter(OUT / "run.zarr")', "run.zarr",
                 hook="rename"),
}  # fmt: skip
PARAMS = [pytest.param(name, id=name) for name in CASES]

_CHILD = """
import os, signal, sys
from pathlib import Path
import numpy as np
import pyarrow as pa
from daq_storage.errors import DaqStorageError
from daq_storage.writers.{module} import {cls}

OUT = Path(sys.argv[1])
real = os.{hook}

def stop_once(*args, **kwargs):
    os.{hook} = real
    os.kill(os.getpid(), signal.SIGSTOP)  # the parent kills us here, or lets us go on
    return real(*args, **kwargs)

os.{hook} = stop_once
try:
{body}
    writer.close()
except DaqStorageError as exc:
    print("refused", getattr(exc, "errno", None), exc, flush=True)
    sys.exit(3)
print("done", flush=True)
"""


def _stopped(case: Case, out: Path) -> subprocess.Popen[str]:
    """A child process making ``case``'s output in ``out``, stopped just before the
    output gets its name."""
    source = _CHILD.format(module=case.module, cls=case.cls, hook=case.hook,
                           body=textwrap.indent(case.body, "    "))  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", source, str(out)], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    _, status = os.waitpid(child.pid, os.WUNTRACED)  # returns once it stopped (or ended)
    if not os.WIFSTOPPED(status):
        output, errors = child.communicate()
        pytest.fail(f"the output was made without os.{case.hook} to its name: {output}{errors}")
    return child


def _leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if leftover(p.name) is not None]


@pytest.mark.parametrize("name", PARAMS)
def test_a_kill_before_the_name_leaves_no_output_and_a_leftover_repair_removes(
    name: str, tmp_path: Path
) -> None:
    case = CASES[name]
    child = _stopped(case, tmp_path)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert not os.path.lexists(tmp_path / case.output)  # no output a reader cannot open
    # every file left under a name a reader lists opens: none is empty
    named = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert all(p.stat().st_size > 0 for p in named), named
    if case.hook == "link":
        assert _leftovers(tmp_path)
    checks = check_files(tmp_path)
    assert not [c for c in checks if c.problem], checks
    removed = [c for c in checks if leftover(c.path.name) is not None]
    assert len(removed) == (0 if case.hook == "rename" else 2 if name == "tiff-imagej" else 1)
    for check in removed:
        assert check.status == "repaired", check
        assert check.detail.startswith("leftover of a killed writer"), check
    if case.hook == "rename":  # a Zarr store's staging: reported, never read as data
        assert [c.status for c in checks if "Zarr writer's staging" in c.detail] == ["skipped"]
    assert not _leftovers(tmp_path)
    assert not [c for c in check_files(tmp_path) if c.status == "repaired" or c.problem]


@pytest.mark.parametrize("name", ["hdf5", "parquet", "tiff", "tiff-imagej"])
def test_a_name_taken_while_the_output_is_made_is_never_replaced(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    child = _stopped(case, tmp_path)
    taken = tmp_path / case.output
    taken.parent.mkdir(exist_ok=True)
    taken.write_bytes(b"someone else's")
    os.kill(child.pid, signal.SIGCONT)
    output, errors = child.communicate()
    assert child.returncode == 3, output + errors
    assert output.startswith(f"refused {17}"), output  # EEXIST, as a DaqStorageError
    assert taken.read_bytes() == b"someone else's"
    assert not _leftovers(tmp_path)


def test_repair_leaves_a_live_writers_temporary_alone(tmp_path: Path) -> None:
    table = 'writer.write_batch("s", pa.record_batch({"v": np.arange(5.0)}))'
    child = _stopped(replace(CASES["hdf5"], body=f"{CASES['hdf5'].body}\n{table}"), tmp_path)
    try:
        (hidden,) = _leftovers(tmp_path)
        (check,) = check_files(tmp_path)
        assert (check.path, check.status) == (hidden, "busy"), check
        assert hidden.exists()
    finally:
        os.kill(child.pid, signal.SIGCONT)
        output, errors = child.communicate()
    assert output == "done\n", errors
    assert not _leftovers(tmp_path)
    with h5py.File(tmp_path / "run.h5", "r") as f:  # published whole, as before
        assert f.attrs["application"].startswith("daq-storage")
        assert f["s/v"][:].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("name", ["parquet", "tiff", "tiff-zlib", "tiff-imagej"])
def test_a_resumed_writer_publishes_a_readable_output(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    child = _stopped(case, tmp_path)
    os.kill(child.pid, signal.SIGCONT)
    output, errors = child.communicate()
    assert output == "done\n", errors
    assert not _leftovers(tmp_path)
    fmt = "tiff" if name.startswith("tiff") else name
    assert read_stream(fmt, tmp_path / "run", "s") == ([0, 64, 128] if fmt == "tiff" else
                                                      [0.0, 1.0, 2.0, 3.0, 4.0])  # fmt: skip
