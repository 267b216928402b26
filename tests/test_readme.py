"""Every snippet in README.md runs as written and checks what it shows.

Python blocks run in order in one fresh interpreter (as a reader pasting them one after
the other would), each in a scratch directory holding a copy of ``examples/``; every
block must check its own results (``assert``). Console blocks run each ``$`` command and
require the lines shown under it to appear in its output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(README.read_text()) if lang == language]


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def _environ() -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DAQ_STORAGE_")}
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
    return environ


def test_every_python_block_checks_its_results():
    blocks = _blocks("python")
    assert len(blocks) >= 5
    for block in blocks:
        assert "assert " in block, f"a README block checks nothing:\n{block}"


def test_python_blocks_run_as_written(scratch: Path):
    program = "\n".join(
        f"print('--- README block {i}', flush=True)\n{block}"
        for i, block in enumerate(_blocks("python"))
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=scratch,
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    last = re.findall(r"--- README block (\d+)", result.stdout)
    assert result.returncode == 0, (
        f"README python block {last[-1] if last else '?'} failed:\n{result.stderr}"
    )
    assert not Path("/dev/shm/lab_ring").exists(), "the ring example left its ring behind"


def _commands() -> list[tuple[str, list[str]]]:
    commands = []
    for block in _blocks("console"):
        for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            command, *shown = chunk.splitlines()
            commands.append((command, [line for line in shown if line.strip()]))
    return commands


@pytest.mark.parametrize(("command", "shown"), _commands(), ids=lambda c: str(c)[:40])
def test_console_commands_print_what_is_shown(command: str, shown: list[str], scratch: Path):
    result = subprocess.run(["bash", "-c", command], cwd=scratch, env=_environ(),
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for line in shown:
        assert line in result.stdout, f"{command!r} did not print {line!r}:\n{result.stdout}"
