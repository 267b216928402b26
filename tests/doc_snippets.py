"""What every docs test shares: a page's code blocks, and its Python blocks run as a
reader would paste them — in order, in one fresh interpreter, in a scratch directory,
without the caller's ``DAQ_STORAGE_*`` variables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(page: Path | str, language: str = "python") -> list[str]:
    """The ``language`` blocks of a docs page (a path, or a name in ``docs/``)."""
    path = page if isinstance(page, Path) else DOCS / page
    return [body for lang, body in _BLOCK.findall(path.read_text()) if lang == language]


def check_each_asserts(snippets: Sequence[str], least: int, page: str) -> None:
    """At least ``least`` snippets, each of which checks something."""
    assert len(snippets) >= least, f"{page}: {len(snippets)} Python blocks, expected {least}+"
    for snippet in snippets:
        assert "assert " in snippet, f"a {page} block checks nothing:\n{snippet}"


def run_in_order(snippets: Sequence[str], folder: Path, page: str, timeout: float = 300,
                 *, warnings_fail: bool = False) -> None:  # fmt: skip
    """Run ``snippets`` one after the other in one fresh interpreter in ``folder`` (with
    ``warnings_fail``, any warning fails it); a failure names the block and its error."""
    program = "\n".join(f"print('--- block {i}', flush=True)\n{snippet}"
                        for i, snippet in enumerate(snippets))  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DAQ_STORAGE_")}
    flags = ["-W", "error"] if warnings_fail else []
    result = subprocess.run([sys.executable, *flags, "-c", program], cwd=folder, env=environ,
                            capture_output=True, text=True, timeout=timeout,
                            check=False)  # fmt: skip
    ran = re.findall(r"--- block (\d+)", result.stdout)
    assert result.returncode == 0, (
        f"{page} block {ran[-1] if ran else '?'} failed:\n{result.stderr[-4000:]}"
    )
    assert ran == [str(i) for i in range(len(snippets))], result.stdout[-2000:]
