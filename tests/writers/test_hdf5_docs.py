"""docs/hdf5-layout.md runs as written: its Python blocks in order in one fresh
interpreter in a scratch directory (each checks its results), its console blocks (h5dump)
each command with the lines shown under it found in its output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.doc_snippets import blocks, check_each_asserts, run_in_order

PAGE = "hdf5-layout.md"


def _run_python(folder: Path) -> None:
    snippets = blocks(PAGE)
    check_each_asserts(snippets, 4, PAGE)
    run_in_order(snippets, folder, PAGE, timeout=120)


def test_python_blocks_run_as_written(tmp_path: Path):
    _run_python(tmp_path)


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump (hdf5-tools) not installed")
def test_console_blocks_show_what_h5dump_shows(tmp_path: Path):
    _run_python(tmp_path)  # the files the console blocks look at
    consoles = blocks(PAGE, "console")
    assert consoles
    for block in consoles:
        output = ""
        for line in block.splitlines():
            if line.startswith("$ "):
                output = subprocess.run(line[2:], shell=True, cwd=tmp_path, capture_output=True,
                                        text=True, timeout=60, check=True).stdout  # fmt: skip
            elif line.strip():
                assert line.strip() in output, (line, output)
