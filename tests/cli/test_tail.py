"""``daq-storage tail``: a ring written by a real producer process, watched by the
command in a pseudo-terminal (live redraws, Ctrl-C) and through a pipe (``--once``)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from click.testing import CliRunner

from daq_storage.cli import cli as main
from daq_storage.config import default_ring_dir
from daq_storage.ring import RingReader
from tests.cli.conftest import environ

TIMEOUT_S = 60.0
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "daq_storage.cli", *args]


class Terminal:
    """A command in a pseudo-terminal of 160 x 50 (its controlling terminal, so Ctrl-C
    typed there interrupts it, as in a shell); its screen output collected."""

    def __init__(self, argv: list[str]) -> None:
        # The terminal's size, not an inherited COLUMNS / LINES (pytest-xdist's workers
        # have them), decides the layout.
        env = {k: v for k, v in environ().items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        pid, fd = pty.fork()
        if pid == 0:  # the child: size the terminal, become the command
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
            os.execve(argv[0], argv, env)
        self.pid, self.fd = pid, fd
        self.raw = b""
        self.status: int | None = None

    @property
    def text(self) -> str:
        return _ANSI.sub("", self.raw.decode(errors="replace"))

    def _read(self, timeout: float) -> bool:
        """Read what the command printed; False once it has closed the terminal."""
        if not select.select([self.fd], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the command exited and the terminal is gone
            return False
        self.raw += chunk
        return bool(chunk)

    def wait_for(self, done: object, what: str) -> None:
        """Read until ``done(text)`` holds (fails at the deadline or the command's end)."""
        deadline = time.monotonic() + TIMEOUT_S
        assert callable(done)
        while not done(self.text):
            assert time.monotonic() < deadline, f"no {what} within {TIMEOUT_S} s:\n{self.text}"
            assert self._read(0.1), f"the command ended before {what}:\n{self.text}"

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait(self) -> int:
        """Read to the end; the exit status."""
        deadline = time.monotonic() + TIMEOUT_S
        while self._read(0.1):
            assert time.monotonic() < deadline, f"the command did not end:\n{self.text}"
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def kill(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self.fd)


def _ring_argument(path: Path) -> str:
    """The ring by name where it is in the rings' directory (how a user types it)."""
    return path.name if path.parent == default_ring_dir() else str(path)


def test_live_view_redraws_and_ctrl_c_exits_0(live_ring: Path) -> None:
    with RingReader.open(live_ring, consumer="slow_viewer"):  # never reads: lags behind
        terminal = Terminal(_command("tail", _ring_argument(live_ring), "--interval", "0.1"))
        try:
            # Redrawn with the newest frame each time: several frame numbers go by.
            terminal.wait_for(
                lambda text: len(set(re.findall(r"frame (\d+): \(60, 80\) uint16", text))) >= 3,
                "three different newest frames",
            )
            text = terminal.text
            words = " ".join(text.split())  # the ring's line, wrapped at 160 columns
            assert f"ring {live_ring}: 1 MiB, discard_oldest" in words
            assert "producer attached" in words
            assert re.search(r"[\d,]+ records/s, [\d.]+ MB/s", words)
            assert re.search(r"│ slow_viewer │ \d+ +│ (active|evicted) │ yes", text)
            # The power meter's newest row, its scalar values by name.
            assert re.search(r"│ power_meter_01 │ arrow │.*50 rows; last: .*value=\d", text)
            terminal.type(b"\x03")  # Ctrl-C, typed
            status = terminal.wait()
        finally:
            terminal.kill()
    assert status == 0, terminal.text
    assert "Traceback" not in terminal.text
    assert "KeyboardInterrupt" not in terminal.text
    assert "error" not in terminal.text


def test_once_prints_one_snapshot_through_a_pipe(live_ring: Path) -> None:
    result = subprocess.run(_command("tail", str(live_ring), "--once"), env=environ(),
                            capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b[" not in out  # no terminal: no cursor movements
    assert out.count(f"ring {live_ring}: 1 MiB") == 1
    (ring_line,) = [line for line in out.splitlines() if line.startswith("ring ")]
    assert ring_line.endswith("; daemon not running")  # one line, never wrapped
    assert re.search(r"│ camera_1 +│ frame +│ +[\d,]+ │ .* │ frame \d+: \(60, 80\) uint16", out)
    assert re.search(r"power_meter_01 .* last: channel=power_meter_01 +value=\S+ W +unit=W", out)
    # The DAQ card's raw counts, shown in volts (their scale_factor).
    (daq,) = re.findall(r"│ daq_card .*", out)
    volts = [float(v) for v in re.findall(r"ai[01]=(-?[\d.]+(?:e-?\d+)?) V", daq)]
    assert len(volts) == 2
    assert all(abs(v) <= 10.0 for v in volts), daq
    assert "sample_index=" in daq
    assert result.stderr == ""


def test_a_ring_removed_while_watched_is_one_error_line_and_exit_2(live_ring: Path) -> None:
    watcher = subprocess.Popen(_command("tail", str(live_ring)), env=environ(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert watcher.stdout is not None
        deadline = time.monotonic() + TIMEOUT_S
        while "streams (newest record)" not in watcher.stdout.readline():  # a first snapshot
            assert time.monotonic() < deadline
            assert watcher.poll() is None
        live_ring.unlink()  # the producer keeps writing into its mapping
        _, err = watcher.communicate(timeout=TIMEOUT_S)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 2
    assert err == (
        f"error: RingNotFound: ring {live_ring} was removed (its daemon or demo stopped)\n"
    )


def test_no_ring_is_one_error_line_and_exit_2(shm_path: Path) -> None:
    runner = CliRunner()
    for argument in (str(shm_path), shm_path.name):
        result = runner.invoke(main, ["tail", argument, "--once"])
        assert result.exit_code == 2
        assert result.stderr.splitlines() == [
            f"error: RingNotFound: no ring at {default_ring_dir() / shm_path.name}: no daemon "
            "is running on it (start one with `daq-storage daemon`), or give the right "
            "RING / --config"
        ]
    both = runner.invoke(main, ["tail", "x", "--config", "lab.toml"])
    assert both.exit_code == 2
    assert "give RING or --config, not both" in both.stderr


def test_help_shows_examples() -> None:
    result = CliRunner().invoke(main, ["tail", "--help"])
    assert result.exit_code == 0
    assert "Examples:\n    daq-storage tail daq_storage_lab" in result.output
    assert "--once" in result.output
