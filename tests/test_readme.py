"""Every snippet in README.md runs as written and checks what it shows.

Python blocks run in order in one fresh interpreter (as a reader pasting them one after
the other would), each in a scratch directory holding a copy of ``examples/``; every
block must check its own results (``assert``). Console blocks run each ``$`` command and
require the lines shown under it to appear in its output (``…`` standing for what differs
from run to run); a block that starts a background job (``$ command &``) runs as one
session, ``kill -INT %1`` ending the job.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from daq_storage.testing import S3Server

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_BUCKET = "lab-data"
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


def test_python_blocks_run_as_written(scratch: Path, s3_server: S3Server):
    # The object-storage block writes to bucket lab-data of an S3-compatible server that
    # the standard AWS_* variables name, as on a lab machine.
    s3_server.create_bucket(README_BUCKET)
    program = "\n".join(
        f"print('--- README block {i}', flush=True)\n{block}"
        for i, block in enumerate(_blocks("python"))
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=scratch,
        env={**_environ(), **s3_server.environ()},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    last = re.findall(r"--- README block (\d+)", result.stdout)
    assert result.returncode == 0, (
        f"README python block {last[-1] if last else '?'} failed:\n{result.stderr}"
    )
    rings = [Path("/dev/shm/lab_ring"), Path("/dev/shm/lab_recorder_ring"),
             Path("/dev/shm/lab_flight_ring")]  # fmt: skip
    left = [
        p for ring in rings for p in (ring, ring.with_name(f"{ring.name}.recorder.recorder.json"))
    ]
    assert not [p for p in left if p.exists()], "a README example left its ring (or stats) behind"


def _commands_of(block: str) -> list[tuple[str, list[str]]]:
    commands = []
    for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
        command, *shown = chunk.splitlines()
        commands.append((command, [line for line in shown if line.strip()]))
    return commands


def _is_session(block: str) -> bool:
    """A block that starts a job in the background (``$ command &``)."""
    return any(command.endswith(" &") for command, _ in _commands_of(block))


def _commands() -> list[tuple[str, list[str]]]:
    return [
        c for block in _blocks("console") if not _is_session(block) for c in _commands_of(block)
    ]


def _shows(line: str, output: str) -> bool:
    """Whether ``output`` has a line showing ``line``: its pieces between ``…`` (what
    differs from run to run: timestamps, pids, sizes) in that order."""
    pieces = [piece.strip() for piece in line.split("…") if piece.strip()]
    pattern = re.compile(".*".join(re.escape(piece) for piece in pieces))
    return any(pattern.search(out) for out in output.splitlines())


@pytest.mark.parametrize(("command", "shown"), _commands(), ids=lambda c: str(c)[:40])
def test_console_commands_print_what_is_shown(command: str, shown: list[str], scratch: Path):
    result = subprocess.run(["bash", "-c", command], cwd=scratch, env=_environ(),
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for line in shown:
        assert _shows(line, result.stdout), f"{command!r} did not print {line!r}:\n{result.stdout}"


class _Job:
    """A command started in the background (``$ command &``): its output (stdout and
    stderr, as a terminal shows them) collected by a thread as it comes."""

    def __init__(self, command: str, cwd: Path) -> None:
        self.command = command
        self.process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"], cwd=cwd, env=_environ(), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.output = ""
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, name="readme-job", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.output += line
                self.changed.notify_all()
        self.process.stdout.close()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, line: str, timeout: float = 120.0) -> None:
        """Until the job has printed ``line`` (it says it is ready), or has ended."""
        with self.changed:
            shown = self.changed.wait_for(
                lambda: _shows(line, self.output) or not self.reader.is_alive(), timeout
            )
        assert shown, f"{self.command!r}: no {line!r} within {timeout} s:\n{self.output}"
        assert _shows(line, self.output), f"{self.command!r} ended:\n{self.output}"

    def finish(self, signum: int) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(120)
        self.reader.join()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join()


def test_console_sessions_run_as_shown(scratch: Path):
    """A block with a background job (``$ daq-storage daemon ... &``) runs as a session:
    the job's shown lines are awaited before the next command (its "ready" line), and
    ``kill -INT %1`` stops it; it must exit with 0 and print the lines shown there."""
    sessions = [block for block in _blocks("console") if _is_session(block)]
    assert sessions
    for block in sessions:
        jobs: list[_Job] = []
        try:
            for command, shown in _commands_of(block):
                if command.endswith(" &"):
                    jobs.append(_Job(command.removesuffix(" &"), scratch))
                    for line in shown:
                        jobs[-1].wait_for(line)
                elif found := re.fullmatch(r"kill -(\w+) %(\d+)", command):
                    job = jobs[int(found[2]) - 1]
                    code = job.finish(getattr(signal, f"SIG{found[1]}"))
                    assert code == 0, job.output
                    for line in shown:
                        assert _shows(line, job.output), f"{job.command!r} did not print {line!r}"
                else:
                    result = subprocess.run(["bash", "-c", command], cwd=scratch,
                                            env=_environ(), capture_output=True, text=True,
                                            timeout=120, check=False)  # fmt: skip
                    assert result.returncode == 0, result.stdout + result.stderr
                    for line in shown:
                        assert _shows(line, result.stdout), (
                            f"{command!r} did not print {line!r}:\n{result.stdout}"
                        )
        finally:
            for job in jobs:
                job.kill()
