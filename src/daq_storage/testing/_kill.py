"""Writers killed with SIGKILL at chosen moments, in child processes of their own.

A child runs a script that writes through a real writer and announces each step on
stdout, one line per step, *before* it takes it (``"flushing 7"``) and after it returns
(``"flushed 7"``). The parent reads the lines as they come and kills the child when
``kill_at(line)`` holds: a kill on ``"flushing …"`` lands inside ``flush()`` (a pipe
hop is microseconds, a flush milliseconds), a kill on ``"flushed …"`` between flushes.
No sleep decides anything: the lines are the synchronisation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Killed", "kill_when", "line_starting"]


@dataclass(frozen=True)
class Killed:
    """What a killed child said before it died."""

    lines: list[str]  # every line read, the one that triggered the kill last
    returncode: int  # -SIGKILL when the kill landed; 0 or an error code if it ended first
    stderr: str

    @property
    def flushed(self) -> list[str]:
        """The ``flushed …`` lines: each names a flush that returned before the kill."""
        return [line for line in self.lines if line.startswith("flushed")]


def kill_when(
    script: str,
    kill_at: Callable[[str], bool],
    *args: str,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> Killed:
    """Run ``script`` (Python source; ``sys.argv[1:]`` are ``args``) and SIGKILL it at the
    first stdout line for which ``kill_at`` holds; returns what it said.

    The child runs with ``PYTHONUNBUFFERED=1`` in ``env`` (default: this process's
    environment); print with ``flush=True`` anyway.
    """
    environ = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    lines: list[str] = []
    try:
        assert child.stdout is not None
        for raw in child.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            if kill_at(line):
                child.send_signal(signal.SIGKILL)
                break
        child.wait(timeout)
        stderr = child.stderr.read() if child.stderr is not None else ""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    return Killed(lines, child.returncode, stderr)


def line_starting(prefix: str) -> Callable[[str], bool]:
    """A ``kill_at`` for :func:`kill_when`: the first line that starts with ``prefix``."""
    return lambda line: line.startswith(prefix)
