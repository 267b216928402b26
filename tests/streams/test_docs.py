"""Every Python snippet of docs/streams.md runs as written and checks its results.

The blocks run in order in one fresh interpreter (as a reader pasting them one after
the other would), in a scratch directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "streams.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_every_snippet_checks_its_results() -> None:
    blocks = _BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 3
    for block in blocks:
        assert "assert " in block, f"a docs/streams.md block checks nothing:\n{block}"


def test_the_snippets_run_as_written(tmp_path: Path) -> None:
    program = "\n".join(
        f"print('--- block {i}', flush=True)\n{block}"
        for i, block in enumerate(_BLOCK.findall(DOC.read_text()))
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    last = re.findall(r"--- block (\d+)", result.stdout)
    assert result.returncode == 0, (
        f"docs/streams.md block {last[-1] if last else '?'} failed:\n{result.stderr}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.h5", "scan", "scan.h5"]
