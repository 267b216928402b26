"""Every Python block of docs/reading.md runs as written, in order, in one fresh
interpreter and a scratch directory, and checks what it shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "reading.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks() -> list[str]:
    return [body for lang, body in _BLOCK.findall(PAGE.read_text()) if lang == "python"]


def test_every_block_checks_its_results() -> None:
    blocks = _blocks()
    assert len(blocks) >= 5
    for block in blocks[1:]:
        assert "assert " in block, f"a block checks nothing:\n{block}"


def test_blocks_run_as_written(tmp_path: Path) -> None:
    program = "\n".join(f"print('--- block {i}', flush=True)\n{block}"
                        for i, block in enumerate(_blocks()))  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DAQ_STORAGE_")}
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=environ,
                            capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    last = re.findall(r"--- block (\d+)", result.stdout)
    assert result.returncode == 0, (
        f"docs/reading.md python block {last[-1] if last else '?'} failed:\n{result.stderr}"
    )
    assert last == [str(i) for i in range(len(_blocks()))]
