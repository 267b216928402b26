"""``daq_storage.daemon``: its lock, its ring, its logs, and a run with a real Recorder
process and a real producer."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.config import StorageConfig
from daq_storage.daemon import (
    DEFAULT_RECORD_BYTES,
    DaemonInfo,
    DaemonLock,
    configure_logging,
    lock_path,
    plan_ring,
    run_daemon,
)
from daq_storage.errors import RingBusy
from daq_storage.recorder import RecorderStats
from daq_storage.ring import RingBuffer, RingReader, max_ring_bytes


def _config(
    tmp_path: Path, ring: Path, recorder: dict[str, object] | None = None, **ring_keys: object
) -> StorageConfig:
    return StorageConfig(
        storage={"formats": ["hdf5", "arrow"], "output_dir": tmp_path / "data",
                 "flush_interval_ms": 100},
        ring_buffer={"path": ring, **ring_keys},
        recorder=recorder or {},
    )  # fmt: skip


Running = tuple[threading.Thread, DaemonInfo, list[RecorderStats]]


def _start(config: StorageConfig, stop: threading.Event) -> Running:
    """``run_daemon`` in a thread, once ready: the thread, what it runs, its result."""
    started = threading.Event()
    infos: list[DaemonInfo] = []
    results: list[RecorderStats] = []

    def ready(info: DaemonInfo) -> None:
        infos.append(info)
        started.set()

    def run() -> None:
        try:
            results.append(run_daemon(config, ready=ready, stop=stop, progress_interval=0.1))
        finally:
            started.set()

    thread = threading.Thread(target=run, name="daemon")
    thread.start()
    started.wait(60)
    if not infos:
        thread.join(60)
        pytest.fail("the daemon did not start")
    return thread, infos[0], results


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The daemon's log lines (JSON), as ``daq-storage daemon --log-json`` writes them."""
    stream = io.StringIO()
    handler = configure_logging(log_json=True, stream=stream)
    yield stream
    logger = logging.getLogger("daq_storage")
    logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def _messages(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# --------------------------------------------------------------------- the lock
def test_a_second_lock_on_a_ring_is_refused_naming_the_holder(shm_path: Path) -> None:
    with DaemonLock(shm_path):
        assert DaemonLock.holder(shm_path) == os.getpid()
        assert lock_path(shm_path).read_text() == f"{os.getpid()}\n"
        with pytest.raises(
            RingBusy, match=rf"a daemon \(pid {os.getpid()}\) is already running on ring"
        ):
            DaemonLock(shm_path).acquire()
    assert not lock_path(shm_path).exists()
    assert DaemonLock.holder(shm_path) is None


def test_the_lock_of_a_killed_daemon_is_free(shm_path: Path) -> None:
    script = (
        "import sys; from daq_storage.daemon import DaemonLock; "
        f"DaemonLock({str(shm_path)!r}).acquire(); print('locked', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as holder:  # fmt: skip
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        assert DaemonLock.holder(shm_path) == holder.pid
        with pytest.raises(RingBusy, match=f"pid {holder.pid}"):
            DaemonLock(shm_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(shm_path).exists()  # left behind, but nobody holds it
    assert DaemonLock.holder(shm_path) is None
    with DaemonLock(shm_path):
        assert DaemonLock.holder(shm_path) == os.getpid()
    assert not lock_path(shm_path).exists()


# --------------------------------------------------------------------- the ring
def test_the_ring_is_sized_by_the_configuration(tmp_path: Path, shm_path: Path) -> None:
    plan = plan_ring(_config(tmp_path, shm_path, size_mb=32, overflow="block"))
    assert (plan.path, plan.capacity, plan.overflow) == (shm_path, 32 << 20, "block")
    by_frames = _config(tmp_path, shm_path, frames=10)
    assert plan_ring(by_frames).capacity == 11 * DEFAULT_RECORD_BYTES
    assert plan_ring(by_frames, record_bytes=1000).capacity == 11 * 1000
    default = plan_ring(_config(tmp_path, shm_path)).capacity
    assert default == min(256 << 20, max_ring_bytes(shm_path) >> 20 << 20)


def test_a_ring_in_use_is_never_replaced(tmp_path: Path, shm_path: Path) -> None:
    with RingBuffer.create(shm_path, capacity_bytes=1 << 20):  # a live producer on it
        with pytest.raises(RingBusy, match="in use"):
            run_daemon(_config(tmp_path, shm_path, size_mb=8))
        assert shm_path.exists()
        assert not lock_path(shm_path).exists()
    shm_path.unlink()


# --------------------------------------------------------------------- logging
def test_text_log_lines_have_an_iso_time_and_fields() -> None:
    stream = io.StringIO()
    handler = configure_logging(stream=stream)
    try:
        logging.getLogger("daq_storage.daemon").warning(
            "lost", extra={"fields": {"count": 3, "path": "a b", "formats": ["hdf5", "arrow"]}}
        )
    finally:
        logging.getLogger("daq_storage").removeHandler(handler)
    line = stream.getvalue()
    pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 WARNING lost count=3 "
    assert re.fullmatch(pattern + r'path="a b" formats=hdf5,arrow\n', line), line


# --------------------------------------------------------------------- a run
def test_a_run_records_a_producer_and_cleans_up_after_a_stale_ring(
    tmp_path: Path, shm_path: Path, log_lines: io.StringIO
) -> None:
    # What a killed daemon leaves: a ring nobody is attached to, and its lock file.
    RingBuffer.create(shm_path, capacity_bytes=1 << 20).close()
    lock_path(shm_path).write_text("999999999\n")
    config = _config(tmp_path, shm_path, size_mb=16, overflow="block", block_timeout_secs=30)
    stop = threading.Event()
    thread, info, results = _start(config, stop)
    try:
        assert info.ring == shm_path
        assert info.capacity == 16 << 20
        assert info.formats == ("hdf5", "arrow")
        assert info.recorder_pid not in (None, os.getpid())
        frames = np.arange(12 * 8 * 4, dtype=np.uint16).reshape(12, 8, 4)
        with RingBuffer.open(shm_path) as producer:  # the daemon let go of the writer's end
            for i, frame in enumerate(frames):
                producer.write_frame(frame, stream="cam", timestamp_ns=1000 + i, frame_number=i)
            producer.write_batch(pa.record_batch({"v": [1.0, 2.0, 3.0]}), stream="meter")
        with RingReader.open(shm_path) as watcher:
            assert [r.name for r in watcher.stats().readers] == ["recorder"]
    finally:
        stop.set()
        thread.join(60)
    (final,) = results
    assert final.complete, final
    assert (final.state, final.frames, final.rows, final.lost) == ("stopped", 12, 3, 0)
    assert not shm_path.exists()
    assert not lock_path(shm_path).exists()
    assert not info.stats_path.exists()
    messages = [m["message"] for m in _messages(log_lines)]
    assert messages.index("stale ring: a daemon stopped without cleaning up; replacing its "
                          "ring (its files stay readable up to their last flush)") == 0  # fmt: skip
    assert messages[1] == "ready"
    assert messages[-1] == "stopped"
    (h5_file,) = final.formats["hdf5"].files
    with h5py.File(h5_file, "r") as f:
        np.testing.assert_array_equal(f["cam/frames"][()], frames)
        assert list(f["meter/v"][()]) == [1.0, 2.0, 3.0]
    arrow_files = {Path(p).name: p for p in final.formats["arrow"].files}
    assert sorted(arrow_files) == ["cam.arrows", "meter.arrows"]
    with pa.ipc.open_stream(arrow_files["cam.arrows"]) as reader:
        table = reader.read_all()
    np.testing.assert_array_equal(table["frame"].combine_chunks().to_numpy_ndarray(), frames)
    assert table["frame_number"].to_pylist() == list(range(12))


def test_a_daemon_whose_recorder_dies_stops_and_says_so(
    tmp_path: Path, shm_path: Path, log_lines: io.StringIO
) -> None:
    stop = threading.Event()  # set only if the test fails before the kill
    thread, info, results = _start(_config(tmp_path, shm_path, size_mb=8), stop)
    killed = False
    try:
        assert info.recorder_pid is not None
        os.kill(info.recorder_pid, signal.SIGKILL)
        killed = True
    finally:
        if not killed:
            stop.set()
        thread.join(60)
    (final,) = results
    assert not final.complete
    assert final.state == "failed"
    assert not shm_path.exists()
    assert not lock_path(shm_path).exists()
    logged = _messages(log_lines)
    errors = [m["message"] for m in logged if m["level"] == "ERROR"]
    assert errors[0] == "the recorder process ended on its own; stopping"
    assert logged[-1]["message"] == "stopped"
    assert logged[-1]["level"] == "ERROR"
    assert logged[-1]["state"] == "failed"


def test_records_the_recorder_never_stored_are_reported_before_the_ring_goes(
    tmp_path: Path, shm_path: Path, log_lines: io.StringIO
) -> None:
    config = _config(tmp_path, shm_path, {"stop_timeout_secs": 0.5}, size_mb=8)
    stop = threading.Event()
    thread, info, results = _start(config, stop)
    try:
        assert info.recorder_pid is not None
        os.kill(info.recorder_pid, signal.SIGSTOP)  # it cannot drain: stop() kills it
        with RingBuffer.open(shm_path) as producer:
            for i in range(5):
                producer.write_batch(pa.record_batch({"v": [float(i)]}), stream="meter")
    finally:
        stop.set()
        thread.join(60)
    (final,) = results
    assert final.state == "killed"
    assert not final.complete
    assert final.errors[-1] == (
        "5 of the 5 records written to the ring were neither stored nor counted lost by "
        "the Recorder when it stopped: they are not recorded"
    )
    assert not shm_path.exists()
    assert _messages(log_lines)[-1]["level"] == "ERROR"


def test_what_the_recorder_process_writes_to_stderr_is_logged_once_as_log_lines(
    tmp_path: Path,
    shm_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resource_tracker.ensure_running()  # a helper process of this one, not the Recorder's
    logger = logging.getLogger("daq_storage")
    # The daemon's log on this process's stderr (fd 2), as in the CLI.
    handler = configure_logging(log_json=True, stream=open(2, "w", closefd=False))  # noqa: SIM115
    monkeypatch.setenv("PYTHONVERBOSE", "1")  # the Recorder process: every import on stderr
    try:
        stop = threading.Event()
        stop.set()  # ready, then stop at once
        thread, _, results = _start(_config(tmp_path, shm_path, size_mb=8), stop)
        thread.join(60)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    assert results[0].state == "stopped"
    logged = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    relayed = [m for m in logged if m.get("process") == "recorder"]
    assert len(relayed) > 100
    assert {m["level"] for m in relayed} == {"WARNING"}
    assert not [m for m in logged if m["message"].startswith("{")]  # nothing relayed twice
    own = [m["message"] for m in logged if m["logger"] == "daq_storage.daemon"]
    assert own[0] == "ready"
