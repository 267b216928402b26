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
