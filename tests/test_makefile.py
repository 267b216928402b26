"""The two-command setup: what `make` does with the interpreter and with recordings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _fake_python(path: Path, version: str) -> Path:
    """An executable that answers the Makefile's version question like a Python would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{version} cpython'\n")
    path.chmod(0o755)
    return path


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip


def test_a_python_named_on_the_command_line_rebuilds_a_venv_made_with_another(tmp_path: Path):
    venv = tmp_path / "venv"
    _fake_python(venv / "bin" / "python", "3.11.7")
    other = _fake_python(tmp_path / "python3.12", "3.12.1")
    result = _make("venv", f"VENV={venv}", f"PYTHON={other}")
    assert "rebuilding .venv" in result.stdout
    assert not venv.exists()


def test_the_same_python_keeps_the_venv(tmp_path: Path):
    venv = tmp_path / "venv"
    _fake_python(venv / "bin" / "python", "3.11.7")
    same = _fake_python(tmp_path / "python3", "3.11.7")
    result = _make("venv", f"VENV={venv}", f"PYTHON={same}")
    assert "rebuilding" not in result.stdout
    assert (venv / "bin" / "python").exists()


@pytest.mark.parametrize("target", ["clean", "distclean"])
def test_clean_never_deletes_recordings(target: str):
    result = _make(target)
    assert result.returncode == 0, result.stderr
    assert "rm" in result.stdout
    assert "data" not in result.stdout.split()


def test_make_demo_bootstraps_a_fresh_venv_then_runs_the_demo_from_it(tmp_path: Path):
    """`make demo` on a fresh clone: the venv made and installed first, then the demo
    (instruments and Recorder in their own processes) from that venv."""
    venv = tmp_path / "fresh_venv"
    result = _make("demo", f"VENV={venv}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    made = next(i for i, line in enumerate(lines) if "-m venv" in line)
    installed = next(i for i, line in enumerate(lines) if "pip install" in line and "-e" in line)
    assert made < installed < len(lines) - 1
    assert lines[-1] == f"{venv}/bin/daq-storage demo"
    assert not venv.exists()  # -n: shown, not run


def test_make_help_says_what_the_demo_runs():
    result = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT,
                            capture_output=True, text=True, check=False)  # fmt: skip
    demo = next(line for line in result.stdout.splitlines() if line.startswith("make demo"))
    assert "Recorder" in demo
    assert "HDF5 + Arrow IPC" in demo
