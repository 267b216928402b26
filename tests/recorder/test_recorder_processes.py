"""The Recorder as a process among others: SIGTERM / SIGINT drain the ring before it
exits, its stats are read from another process while it runs, and two Recorders with
different consumer names on one ring each store everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daq_storage.errors import DaqStorageError
from daq_storage.recorder import Recorder, RecorderStats, list_stats, read_stats
from daq_storage.testing import child_environment
from tests.recorder._helpers import (
    CAMERA,
    TABLE,
    Producer,
    check_frames,
    check_rows,
    format_outputs,
    read_frames,
    read_rows,
    ring_at,
    wait_for_stats,
)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_the_ring_before_the_recorder_exits(
    shm_path: Path, tmp_path: Path, signum: signal.Signals
):
    """The signal reaches the Recorder process while it is paused (SIGSTOP) and the
    producer has written 600 frames and 120 batches it has not read; resumed, it reads
    the ring to the end, flushes, closes and exits on its own (its final stats say
    "stopped" before the test calls stop()), and every record is in the files."""
    with ring_at(shm_path, capacity_bytes=32 << 20, overflow="block", block_timeout=30) as ring:
        recorder = Recorder(ring.path, formats=["hdf5", "parquet"], output_dir=tmp_path,
                            flush_interval_s=3600, mode="process")  # fmt: skip
        recorder.start()
        pid = recorder.pid
        assert pid is not None
        assert pid != os.getpid()
        producer = Producer(ring)
        os.kill(pid, signal.SIGSTOP)
        try:
            for _ in range(120):
                producer.write_group(frames=5, batches=1)
            os.kill(pid, signum)  # pending until the process runs again
        finally:
            os.kill(pid, signal.SIGCONT)
        on_file = wait_for_stats(ring.path, "recorder", lambda s: s.state == "stopped")
        final = recorder.stop(timeout=60)
    assert not recorder.running
    for stats in (final, on_file):
        assert stats.state == "stopped", stats
        assert stats.complete, stats
        assert (stats.records, stats.frames, stats.rows) == (
            producer.records, producer.frames, producer.rows
        ), stats  # fmt: skip
    for name in ("hdf5", "parquet"):
        (output,) = format_outputs(final, name)
        check_frames(read_frames(name, output), list(range(producer.frames)), name)
        check_rows(read_rows(name, output), list(range(producer.rows)), name)


_READ_STATS = textwrap.dedent(
    """
    import sys
    from daq_storage.recorder import read_stats
    print(read_stats(sys.argv[1], sys.argv[2]).to_json())
    """
)


def _stats_from_another_process(ring: Path, consumer: str) -> RecorderStats:
    done = subprocess.run([sys.executable, "-c", _READ_STATS, str(ring), consumer],
                          capture_output=True, text=True, timeout=120,
                          env=child_environment(), check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return RecorderStats.from_json(done.stdout)


@pytest.mark.slow
def test_stats_are_read_from_another_process_while_the_recorder_runs(
    shm_path: Path, tmp_path: Path
):
    """Another process reads the running Recorder's stats with ``read_stats``: the
    state, its pid, the streams and formats, and counts that grow with what the
    producer writes (the test waits on the counts, never on a clock)."""
    with ring_at(shm_path, capacity_bytes=8 << 20, overflow="block", block_timeout=30) as ring:
        recorder = Recorder(ring.path, formats=["hdf5", "csv"], output_dir=tmp_path,
                            consumer="lab recorder", flush_interval_s=0.01)  # fmt: skip
        with recorder:
            producer = Producer(ring)
            for _ in range(10):
                producer.write_group(frames=2, batches=1)
            wait_for_stats(ring.path, "lab recorder",
                           lambda s: s.records == producer.records)  # fmt: skip
            first = _stats_from_another_process(ring.path, "lab recorder")
            for _ in range(10):
                producer.write_group(frames=2, batches=1)
            wait_for_stats(ring.path, "lab recorder",
                           lambda s: s.records == producer.records)  # fmt: skip
            second = _stats_from_another_process(ring.path, "lab recorder")
        final = recorder.stop()
    for stats in (first, second):
        assert stats.state == "running", stats
        assert stats.pid == recorder.pid, stats
        assert stats.consumer == "lab recorder"
        assert Path(stats.ring) == Path(ring.path)
        assert set(stats.formats) == {"hdf5", "csv"}
        assert set(stats.streams) == {CAMERA, TABLE}
        assert stats.streams[CAMERA].formats == ("hdf5",)
        assert set(stats.streams[TABLE].formats) == {"hdf5", "csv"}
        assert stats.lost == 0
        assert stats.errors == ()
        assert stats.records == stats.streams[CAMERA].records + stats.streams[TABLE].records
        assert stats.updated_ns >= stats.started_ns > 0
    assert (first.records, first.frames, first.rows) == (30, 20, 500)
    assert (second.records, second.frames, second.rows) == (60, 40, 1000)
    assert second.updated_ns > first.updated_ns
    assert final.state == "stopped", final
    assert final.records == 60, final


@pytest.mark.slow
def test_two_recorders_on_one_ring_each_store_everything(shm_path: Path, tmp_path: Path):
    """One Recorder (this process's thread) writes HDF5 to one directory, another (its
    own process) Parquet to another, under different consumer names; a block-mode ring
    waits for both, so each holds every frame and row."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    with ring_at(shm_path, capacity_bytes=256 << 10, overflow="block", block_timeout=30) as ring:
        first = Recorder(ring.path, formats=["hdf5"], output_dir=local, consumer="local",
                         mode="thread", flush_interval_s=0.05)  # fmt: skip
        second = Recorder(ring.path, formats=["parquet"], output_dir=remote,
                          consumer="remote", mode="process", flush_interval_s=0.05)  # fmt: skip
        with first, second:
            producer = Producer(ring)
            for _ in range(200):  # several times the ring: both must keep up
                producer.write_group(frames=4, batches=1)
            listed = {s.consumer for s in list_stats(ring.path)}
        a, b = first.stop(), second.stop()
    assert listed == {"local", "remote"}
    for stats, name in ((a, "hdf5"), (b, "parquet")):
        assert stats.complete, stats
        assert stats.lost == 0, stats
        assert stats.records == producer.records, stats
        (output,) = format_outputs(stats, name)
        check_frames(read_frames(name, output), list(range(producer.frames)), name)
        check_rows(read_rows(name, output), list(range(producer.rows)), name)
    assert {p.name for p in local.iterdir()} == {format_outputs(a, "hdf5")[0].name}
    assert {p.name for p in remote.iterdir()} == {format_outputs(b, "parquet")[0].name}


def test_a_second_recorder_with_the_same_consumer_name_is_refused(shm_path: Path, tmp_path: Path):
    """Consumer names tell Recorders apart (their ring slot, their stats file): a second
    one under a name a live Recorder holds is refused at start, and the first goes on
    with its stats file its own."""
    with ring_at(shm_path, capacity_bytes=1 << 20, overflow="block", block_timeout=30) as ring:
        first = Recorder(ring.path, formats=["hdf5"], output_dir=tmp_path / "a", mode="thread")
        second = Recorder(ring.path, formats=["parquet"], output_dir=tmp_path / "b",
                          mode="thread")  # fmt: skip
        with first:
            try:
                with pytest.raises(DaqStorageError, match="recorder"):
                    second.start()
            finally:
                second.stop()
            producer = Producer(ring)
            producer.write_group(frames=4, batches=2)
        stats = first.stop()
        on_file = read_stats(ring.path, "recorder")
    assert stats.records == producer.records, stats
    assert set(on_file.formats) == {"hdf5"}, on_file
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
