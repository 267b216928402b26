"""``daq-storage daemon``, ``simulate`` and ``status`` run as a lab runs them: separate
processes meeting at a ring in shared memory; files read back with h5py and pyarrow."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from daq_storage.cli import cli as main
from daq_storage.daemon import lock_path
from daq_storage.recorder import stats_path
from daq_storage.ring import RingBuffer

TIMEOUT_S = 60.0


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DAQ_STORAGE_")}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``daq-storage ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "daq_storage.cli", *args], cwd=cwd, env=_environ(),
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip


class Daemon:
    """``daq-storage daemon`` in a child process; its stderr read line by line."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daq_storage.cli", "daemon", *args], cwd=cwd, env=_environ(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []  # stderr lines seen so far
        self.stdout: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stderr, name="daemon-stderr"),
            threading.Thread(target=self._read_stdout, name="daemon-stdout"),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        self.stdout.extend(self.process.stdout)

    def wait_for(self, match: Callable[[str], bool]) -> str:
        """The first log line from now on that ``match``es (fails on exit or timeout)."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            if line is None:
                self.lines.put(None)
                pytest.fail(f"the daemon exited ({self.process.wait()}): {self.log}")
            self.log.append(line)
            if match(line):
                return line

    def wait(self) -> tuple[int, str]:
        """Wait for the exit: its status and stdout (every stderr line is in ``log``)."""
        code = self.process.wait(TIMEOUT_S)
        for reader in self._readers:
            reader.join()
        while (line := self.lines.get_nowait()) is not None:
            self.log.append(line)
        self.lines.put(None)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        return code, "".join(self.stdout)

    def finish(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Send ``sig``, then :meth:`wait`."""
        self.process.send_signal(sig)
        return self.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def _config(tmp_path: Path, ring: Path) -> Path:
    config = tmp_path / "storage.toml"
    config.write_text(
        textwrap.dedent(f"""\
        [storage]
        formats = ["hdf5", "arrow"]
        output_dir = "{tmp_path / "data"}"
        experiment = "daemon_test"
        flush_interval_ms = 200

        [ring_buffer]
        path = "{ring}"
        size_mb = 64
        overflow = "block"
        block_timeout_secs = 30
        """)
    )
    return config


def _ready(line: str) -> bool:
    return " INFO ready " in line


def _json_ready(line: str) -> bool:
    return bool(json.loads(line)["message"] == "ready")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # An exited child of another process waits for its reaper as a zombie.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def _produce(ring: Path, frames: int) -> None:
    """``frames`` camera-sized frames into ``ring``, written from this process."""
    frame = np.zeros((480, 640), np.uint16)
    with RingBuffer.open(ring) as producer:
        for i in range(frames):
            producer.write_frame(frame, stream="camera_1", timestamp_ns=i, frame_number=i)


def _rows(group: Any) -> int:
    lengths = {len(group[name]) for name in group if not name.endswith((".valid", ".categories"))}
    assert len(lengths) == 1, lengths
    return lengths.pop()


@pytest.mark.slow
def test_daemon_records_what_simulate_writes_into_every_format(
    tmp_path: Path, shm_path: Path, daemons: list[Daemon]
) -> None:
    config = _config(tmp_path, shm_path)
    daemon = Daemon("--config", str(config), "--log-json", "--progress-interval", "0.2",
                    cwd=tmp_path)  # fmt: skip
    daemons.append(daemon)
    ready = json.loads(daemon.wait_for(_json_ready))
    assert ready["ring"] == str(shm_path)
    assert ready["formats"] == ["hdf5", "arrow"]
    assert ready["pid"] == daemon.process.pid
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", ready["time"])

    simulated = cli("simulate", "--ring", str(shm_path), "--unpaced", "--frames", "40",
                    "--duration", "0.5", "--json", cwd=tmp_path)  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr
    produced = json.loads(simulated.stdout)["streams"]
    assert produced["camera_1"]["produced"] == 40
    assert all(s["dropped"] == 0 for s in produced.values())

    status = cli("status", "--config", str(config), "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    seen = json.loads(status.stdout)
    assert seen["ring"]["path"] == str(shm_path)
    assert seen["ring"]["daemon_pid"] == daemon.process.pid
    assert seen["ring"]["written"] == sum(s["records"] for s in produced.values())
    assert [c["name"] for c in seen["consumers"]] == ["recorder"]
    assert seen["consumers"][0]["alive"]
    assert seen["consumers"][0]["lost"] == 0
    (recorder,) = seen["recorders"]
    assert recorder["consumer"] == "recorder"
    assert recorder["state"] == "running"
    assert recorder["process_alive"]
    assert set(recorder["formats"]) == {"hdf5", "arrow"}

    second = Daemon("--config", str(config), cwd=tmp_path)
    daemons.append(second)
    code, _ = second.wait()
    assert code == 2
    (refusal,) = second.log
    assert f"pid {daemon.process.pid}" in refusal
    assert "already running" in refusal

    code, stdout = daemon.finish(signal.SIGTERM)
    assert code == 0, daemon.log
    for line in daemon.log:  # every log line is one JSON object with these keys
        assert {"time", "level", "message"} <= json.loads(line).keys()
    assert any(json.loads(line)["message"] == "progress" for line in daemon.log)
    final = json.loads(stdout)
    assert final["state"] == "stopped"
    assert final["complete"]
    assert final["lost"] == 0
    assert final["frames"] == 40
    assert final["rows"] == sum(s["produced"] for s in produced.values() if s["kind"] == "table")
    for leftover in (shm_path, lock_path(shm_path), stats_path(shm_path, "recorder")):
        assert not leftover.exists(), f"the daemon left {leftover}"

    (h5_file,) = final["formats"]["hdf5"]["files"]
    arrow_files = {Path(p).name: p for p in final["formats"]["arrow"]["files"]}
    with h5py.File(h5_file, "r") as f:
        frames = f["camera_1/frames"][()]
        assert list(f["camera_1/frame_number"][()]) == list(range(40))
        for stream in ("power_meter_01", "daq_card"):
            assert _rows(f[stream]) == produced[stream]["produced"]
    with pa.ipc.open_stream(arrow_files["camera_1.arrows"]) as reader:
        camera = reader.read_all()
    assert camera["frame_number"].to_pylist() == list(range(40))
    np.testing.assert_array_equal(camera["frame"].combine_chunks().to_numpy_ndarray(), frames)
    for stream in ("power_meter_01", "daq_card"):
        with pa.ipc.open_stream(arrow_files[f"{stream}.arrows"]) as reader:
            assert reader.read_all().num_rows == produced[stream]["produced"]


@pytest.mark.slow
def test_a_killed_daemons_stale_ring_is_recovered(
    tmp_path: Path, shm_path: Path, daemons: list[Daemon]
) -> None:
    config = _config(tmp_path, shm_path)
    first = Daemon("--config", str(config), cwd=tmp_path)
    daemons.append(first)
    ready = first.wait_for(_ready)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 INFO ready ", ready)
    recorder_pid = int(re.search(r"recorder_pid=(\d+)", ready)[1])  # type: ignore[index]
    _produce(shm_path, 10)

    first.kill()  # kill -9: no cleanup at all
    with contextlib.suppress(ProcessLookupError):  # it may have stopped on its own
        os.kill(recorder_pid, signal.SIGKILL)
    deadline = time.monotonic() + TIMEOUT_S
    while _alive(recorder_pid):  # reaped by its new parent: an observable state
        assert time.monotonic() < deadline, "the recorder process did not die"
        time.sleep(0.01)
    assert shm_path.exists()
    assert lock_path(shm_path).exists()
    left = cli("status", "--config", str(config), cwd=tmp_path)
    assert left.returncode == 0, left.stderr
    assert "producer not attached" in left.stdout
    assert left.stdout.splitlines()[0].endswith("; daemon not running")

    second = Daemon("--config", str(config), cwd=tmp_path)
    daemons.append(second)
    stale = second.wait_for(lambda line: "stale ring" in line)
    assert " WARNING " in stale
    assert "written=" in stale
    second.wait_for(_ready)
    status = cli("status", "--ring", str(shm_path), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert f"daemon pid {second.process.pid}" in status.stdout
    code, stdout = second.finish(signal.SIGINT)
    assert code == 0, second.log
    assert "stopped" in stdout
    assert "hdf5" in stdout
    assert not shm_path.exists()
    assert not lock_path(shm_path).exists()


def test_status_and_simulate_without_a_ring_exit_2(shm_path: Path) -> None:
    runner = CliRunner()
    status = runner.invoke(main, ["status", "--ring", str(shm_path)])
    assert status.exit_code == 2
    assert f"no ring at {shm_path}: no daemon is running on it" in status.stderr
    assert status.exception is None or isinstance(status.exception, SystemExit)
    simulated = runner.invoke(main, ["simulate", "--ring", str(shm_path), "--duration", "0.1"])
    assert simulated.exit_code == 2
    assert f"RingNotFound: no ring at {shm_path}: no daemon" in simulated.stderr
    both = runner.invoke(main, ["status", "--ring", str(shm_path), "--config", "x.toml"])
    assert both.exit_code == 2
    assert "not both" in both.stderr


@pytest.mark.slow
def test_a_daemon_that_lost_data_logs_each_loss_and_exits_3(
    tmp_path: Path, shm_path: Path, daemons: list[Daemon]
) -> None:
    config = _config(tmp_path, shm_path)
    text = config.read_text().replace("size_mb = 64", "size_mb = 2")
    config.write_text(text.replace('overflow = "block"', 'overflow = "discard_oldest"'))
    daemon = Daemon("--config", str(config), "--log-json", cwd=tmp_path)
    daemons.append(daemon)
    recorder_pid = json.loads(daemon.wait_for(_json_ready))["recorder_pid"]
    os.kill(recorder_pid, signal.SIGSTOP)  # a Recorder that cannot keep up at all
    try:
        _produce(shm_path, 20)  # discard_oldest: never waits, never refused
    finally:
        os.kill(recorder_pid, signal.SIGCONT)

    code, stdout = daemon.finish(signal.SIGTERM)
    assert code == 3, daemon.log
    final = json.loads(stdout)
    assert final["lost"] > 0
    assert final["frames"] + final["lost"] == 20
    logged = [json.loads(line) for line in daemon.log]  # errors are JSON lines too
    losses = [m for m in logged if m["message"] == "lost"]
    assert {m["level"] for m in losses} == {"WARNING"}
    assert sum(m["count"] for m in losses) == final["lost"]
    assert logged[-1]["level"] == "ERROR"
    assert logged[-1]["message"].startswith(f"data lost: {final['lost']:,} records overwritten")
    assert not shm_path.exists()
