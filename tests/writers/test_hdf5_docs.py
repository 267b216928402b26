"""docs/hdf5-layout.md runs as written: its Python blocks in order in one fresh
interpreter in a scratch directory (each checks its results), its console blocks (h5dump)
each command with the lines shown under it found in its output."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "hdf5-layout.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(DOC.read_text()) if lang == language]


def _run_python(folder: Path) -> None:
    blocks = _blocks("python")
    assert len(blocks) >= 4
    for block in blocks:
        assert "assert " in block, f"a block checks nothing:\n{block}"
    program = "\n".join(f"print('--- block {i}', flush=True)\n{b}" for i, b in enumerate(blocks))
    result = subprocess.run([sys.executable, "-c", program], cwd=folder, capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def test_python_blocks_run_as_written(tmp_path: Path):
    _run_python(tmp_path)


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump (hdf5-tools) not installed")
def test_console_blocks_show_what_h5dump_shows(tmp_path: Path):
    _run_python(tmp_path)  # the files the console blocks look at
    blocks = _blocks("console")
    assert blocks
    for block in blocks:
        output = ""
        for line in block.splitlines():
            if line.startswith("$ "):
                output = subprocess.run(line[2:], shell=True, cwd=tmp_path, capture_output=True,
                                        text=True, timeout=60, check=True).stdout  # fmt: skip
            elif line.strip():
                assert line.strip() in output, (line, output)
