"""The Recorder end to end: a ring written by this test process, the Recorder in a
thread (and a few checks in its own process), files read back with h5py, pyarrow,
polars, zarr and tifffile."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from daq_storage.config import StorageConfig
from daq_storage.errors import ConfigError, DaqStorageError, RingBusy, RingNotFound
from daq_storage.recorder import (
    Recorder,
    RecorderNotRunning,
    RecorderStats,
    list_stats,
    read_stats,
)
from daq_storage.recorder._loop import DrainLoop
from daq_storage.ring import RingBuffer
from daq_storage.writers import ArrowWriter
from tests.recorder.conftest import (
    FRAME_FORMATS,
    TABLE_FORMATS,
    expected_frames,
    file_metadata,
    outputs,
    read_frames,
    read_table,
    table,
    write_frames,
)

ALL = ("hdf5", "arrow", "parquet", "csv", "zarr", "tiff")


def running(recorder: Recorder) -> bool:
    return recorder.running


def pid(recorder: Recorder) -> int | None:  # (read afresh: mypy would narrow the property)
    return recorder.pid


def test_fan_out_stores_the_same_frames_and_rows_in_every_format(
    ring: RingBuffer, tmp_path: Path
) -> None:
    write_frames(ring, "camera", 0, 40)
    for i in range(30):
        ring.write_batch(table(i * 7, 7), stream="meter", timestamp_ns=2_000_000 + i)
    write_frames(ring, "camera", 40, 13)  # a last group smaller than a chunk
    recorder = Recorder(ring.path, formats=ALL, output_dir=tmp_path, mode="thread",
                        batch_rows=50, metadata={"sample": "Si-7"})  # fmt: skip
    recorder.start()
    stats = recorder.stop()

    assert stats.state == "stopped"
    assert stats.complete, stats.errors
    assert (stats.records, stats.frames, stats.rows) == (83, 53, 210)
    assert stats.streams["camera"].formats == FRAME_FORMATS
    assert stats.streams["meter"].formats == TABLE_FORMATS
    rows = table(0, 210)
    for fmt in FRAME_FORMATS:
        (root,) = outputs(stats, fmt)
        frames, stamps, numbers = read_frames(fmt, root, "camera")
        np.testing.assert_array_equal(frames, expected_frames(0, 53), err_msg=fmt)
        if fmt != "tiff":
            assert numbers == list(range(53)), fmt
            assert stamps == [1_000_000 + i for i in range(53)], fmt
        assert stats.formats[fmt].frames == stats.formats[fmt].visible_frames == 53
    for fmt in TABLE_FORMATS:
        (root,) = outputs(stats, fmt)
        got = read_table(fmt, root, "meter")
        assert got.num_rows == 210, fmt
        for column in ("i", "v"):
            assert got[column].to_pylist() == rows[column].to_pylist(), (fmt, column)
        assert stats.formats[fmt].rows == stats.formats[fmt].visible_rows == 210
        metadata = file_metadata(fmt, root, "meter")
        assert metadata["loss_ledger"] == [], fmt
        assert metadata["lost_records"] == 0, fmt
        assert metadata["sample"] == "Si-7", fmt
        assert metadata["recorder"]["consumer"] == "recorder", fmt
        assert metadata["recorder"]["formats"] == list(ALL), fmt


def test_a_batch_one_format_refuses_is_stored_in_none(ring: RingBuffer, tmp_path: Path) -> None:
    good = table(0, 5)
    ring.write_batch(good, stream="meter")
    # HDF5 cannot hold a decimal column (Arrow IPC could): refused up front by the check.
    decimals = good.append_column("d", pa.array([1] * 5, pa.decimal128(10, 2)))
    ring.write_batch(decimals, stream="meter")
    ring.write_batch(table(5, 5), stream="meter")
    recorder = Recorder(ring.path, formats=["hdf5", "arrow"], output_dir=tmp_path, mode="thread")
    recorder.start()
    stats = recorder.stop()

    assert stats.streams["meter"].refused == 1
    assert not stats.complete
    assert any("refused" in e and "hdf5" in e for e in stats.errors), stats.errors
    for fmt in ("hdf5", "arrow"):
        (root,) = outputs(stats, fmt)
        got = read_table(fmt, root, "meter")
        assert got["i"].to_pylist() == list(range(10)), fmt
        assert "d" not in got.column_names, fmt


def test_a_recorder_that_received_nothing_leaves_nothing(ring: RingBuffer, tmp_path: Path) -> None:
    output = tmp_path / "out"
    with Recorder(ring.path, formats=ALL, output_dir=output, mode="thread") as recorder:
        assert recorder.running
    assert recorder.stats.state == "stopped"
    assert recorder.stats.files == ()
    assert not output.exists() or not any(output.iterdir())


def test_on_demand_flush_makes_data_visible_to_another_process(
    ring: RingBuffer, tmp_path: Path
) -> None:
    recorder = Recorder(ring.path, formats=["hdf5", "arrow"], output_dir=tmp_path,
                        flush_interval_s=3600, mode="process")  # fmt: skip
    with recorder:
        write_frames(ring, "camera", 0, 5)  # fewer than a group: held back until a flush
        ring.write_batch(table(0, 3), stream="meter")
        recorder.flush()
        stats = recorder.stats
        hdf5 = stats.formats["hdf5"].current
        script = (
            "import h5py, sys, json\n"
            "with h5py.File(sys.argv[1], 'r') as f:\n"
            "    print(json.dumps([len(f['camera/frames']), len(f['meter/i'])]))\n"
        )
        shown = subprocess.run([sys.executable, "-c", script, hdf5], capture_output=True,
                               text=True, check=True)  # fmt: skip
        assert json.loads(shown.stdout) == [5, 3]
        assert stats.formats["arrow"].visible_frames == 5
    final = recorder.stop()
    assert final.complete
    assert final.frames == 5
    assert final.rows == 3


def test_process_mode_start_stop_and_stats_from_another_process(
    ring: RingBuffer, tmp_path: Path
) -> None:
    recorder = Recorder(ring.path, formats=["hdf5"], output_dir=tmp_path, flush_interval_s=0)
    assert pid(recorder) is None
    assert not running(recorder)
    with recorder:
        assert isinstance(pid(recorder), int)
        assert running(recorder)
        write_frames(ring, "camera", 0, 20)
        recorder.flush()
        script = (
            "import sys\n"
            "from daq_storage.recorder import read_stats\n"
            "print(read_stats(sys.argv[1]).to_json())\n"
        )
        shown = subprocess.run([sys.executable, "-c", script, str(ring.path)],
                               capture_output=True, text=True, check=True)  # fmt: skip
        live = RecorderStats.from_json(shown.stdout)
        assert live.pid == recorder.pid
        assert live.state == "running"
        assert live.frames == 20
    final = recorder.stop()
    assert final.state == "stopped"
    assert final.complete
    assert recorder.stop() is final  # idempotent
    assert read_stats(ring.path).state == "stopped"
    assert not running(recorder)


def test_start_on_a_missing_ring_raises_ring_not_found_in_the_parent(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "no_ring", output_dir=tmp_path)
    with pytest.raises(RingNotFound):
        recorder.start()
    assert not recorder.running
    assert not (tmp_path / "data").exists()


def test_thread_mode_errors_are_the_rings_own(tmp_path: Path) -> None:
    with pytest.raises(RingNotFound):
        Recorder(tmp_path / "no_ring", mode="thread").start()


def test_misuse_raises_daq_storage_errors(ring: RingBuffer, tmp_path: Path) -> None:
    recorder = Recorder(ring.path, output_dir=tmp_path, mode="thread")
    assert recorder.stop().state == "stopped"  # never started: empty stats
    with pytest.raises(RecorderNotRunning):
        recorder.flush()
    recorder = Recorder(ring.path, output_dir=tmp_path, mode="thread")
    recorder.start()
    with pytest.raises(RecorderNotRunning):
        recorder.start()
    recorder.stop()
    with pytest.raises(RecorderNotRunning):
        recorder.flush()


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"formats": ["hdf5", "nope"]}, "nope"),
        ({"formats": ["hdf5", "HDF5"]}, "twice"),
        ({"formats": []}, "at least one"),
        ({"formats": "hdf5"}, "list"),
        ({"flush_interval_s": -1}, "flush_interval_s"),
        ({"flush_interval_s": float("nan")}, "flush_interval_s"),
        ({"batch_rows": 0}, "batch_rows"),
        ({"batch_bytes": True}, "batch_bytes"),
        ({"frames_per_write": 0}, "frames_per_write"),
        ({"rotate_bytes": 0}, "rotate_bytes"),
        ({"rotate_seconds": 0}, "rotate_seconds"),
        ({"start": "newest"}, "start"),
        ({"mode": "fork"}, "mode"),
        ({"consumer": ""}, "consumer"),
        ({"consumer": "x" * 65}, "consumer"),
        ({"experiment": "\x00"}, "experiment"),
        ({"metadata": {"loss_ledger": 1}}, "loss_ledger"),
        ({"options": {"arrow": {}}}, "arrow"),
        ({"options": {"hdf5": {"compression": "nope"}}}, "compression"),
        ({"streams": {"camera": ["csv", "csv"]}}, "twice"),
        ({"durable": 1}, "durable"),
        ({"stop_timeout_s": 0}, "stop_timeout_s"),
    ],
)
def test_bad_arguments_are_config_errors_naming_them(
    kwargs: dict[str, object], named: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=named):
        Recorder(tmp_path / "ring", output_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())  # nothing opened, nothing created


def test_an_unpicklable_option_is_refused_in_process_mode(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        options = {"hdf5": {"executor": pool}}
        with pytest.raises(ConfigError, match="picklable"):
            Recorder(tmp_path / "ring", options=options)
        Recorder(tmp_path / "ring", options=options, mode="thread")  # fine in a thread


def test_every_error_type_is_a_daq_storage_error() -> None:
    import daq_storage.recorder as recorder

    for name in recorder.__all__:
        value = getattr(recorder, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, DaqStorageError), name


# ---------------------------------------------------------------- losses, rotation, failures
class _StopNow:
    """A control that asks the loop to stop at once: it drains what the ring holds."""

    stopping = True
    aborting = False
    signalled = False

    def poll(self) -> list[tuple[bool | None, Callable[[str | None], None]]]:
        return []


def test_an_overrun_is_counted_logged_and_in_every_file(
    shm_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ring = RingBuffer.create(shm_path, capacity_bytes=1 << 16)  # laps after ~60 frames
    recorder = Recorder(ring.path, formats=["hdf5", "zarr"], output_dir=tmp_path, mode="thread")
    loop = DrainLoop(recorder._settings())
    try:
        loop.open()  # registered at seq 0, and paused: nothing reads until run()
        write_frames(ring, "camera", 0, 200, shape=(16, 32))  # 1 KiB frames: ring laps
        ring.write_batch(table(0, 4), stream="meter")
        stats = loop.run(_StopNow())
    finally:
        ring.close()
        ring.unlink()
        for left in shm_path.parent.glob(f"{shm_path.name}.*"):
            left.unlink()
    reader = loop.reader
    assert reader is not None
    assert stats.lost == reader.lost > 0
    assert sum(g.count for g in stats.gaps) == stats.lost
    (gap,) = stats.gaps
    assert gap.first_seq == 0
    assert gap.count == gap.last_seq + 1
    assert gap.after_ns == 0  # nothing was read before it
    assert gap.before_ns == 1_000_000 + gap.count  # the first frame read after it
    assert stats.frames + stats.lost == 200
    assert not stats.complete
    assert "lost" in caplog.text
    for fmt in ("hdf5", "zarr"):
        (root,) = outputs(stats, fmt)
        metadata = file_metadata(fmt, root, "camera")
        assert metadata["loss_ledger"] == [gap.to_dict()], fmt
        assert metadata["lost_records"] == stats.lost, fmt
        _frames, _, numbers = read_frames(fmt, root, "camera")
        assert numbers == list(range(gap.count, 200)), fmt  # written == stored + lost


def test_rotation_by_size_never_splits_a_frame_and_each_file_is_complete(
    ring: RingBuffer, tmp_path: Path
) -> None:
    write_frames(ring, "camera", 0, 64)
    recorder = Recorder(ring.path, formats=["hdf5", "arrow"], output_dir=tmp_path,
                        mode="thread", frames_per_write=16, rotate_bytes=1)  # fmt: skip
    recorder.start()
    stats = recorder.stop()
    assert stats.complete, stats.errors
    for fmt in ("hdf5", "arrow"):
        roots = outputs(stats, fmt)
        assert len(roots) == 4
        assert stats.formats[fmt].rotations == 3
        assert [r.name.split("_v")[-1].split(".")[0] for r in roots] == ["1", "2", "3", "4"] or (
            fmt == "arrow"  # the directory formats share the version numbers of the run
        )
        numbers = []
        for root in roots:
            part, _, ids = read_frames(fmt, root, "camera")
            assert len(part) == 16
            numbers += ids
            assert file_metadata(fmt, root, "camera")["loss_ledger"] == []
        assert numbers == list(range(64))


def test_rotation_by_time(ring: RingBuffer, tmp_path: Path) -> None:
    for i in range(3):
        ring.write_batch(table(i * 5, 5), stream="meter")
    recorder = Recorder(ring.path, formats=["parquet"], output_dir=tmp_path, mode="thread",
                        batch_rows=5, rotate_seconds=1e-9)  # fmt: skip
    recorder.start()
    stats = recorder.stop()
    roots = outputs(stats, "parquet")
    assert len(roots) == 3
    assert stats.formats["parquet"].rotations == 2
    got = [read_table("parquet", r, "meter")["i"].to_pylist() for r in roots]
    assert got == [list(range(0, 5)), list(range(5, 10)), list(range(10, 15))]


def test_a_failing_format_stops_alone_and_the_others_go_on(
    ring: RingBuffer, tmp_path: Path
) -> None:
    write_frames(ring, "camera", 0, 20)
    write_frames(ring, "spectra", 0, 5, shape=(64,))  # TIFF pages hold no 1-D frames
    write_frames(ring, "camera", 20, 20)
    recorder = Recorder(ring.path, formats=["hdf5", "tiff"], output_dir=tmp_path,
                        mode="thread", frames_per_write=5)  # fmt: skip
    recorder.start()
    stats = recorder.stop()
    tiff = stats.formats["tiff"]
    assert tiff.state == "failed"
    assert "UnsupportedData" in tiff.error
    assert tiff.lost_after_failure > 0
    assert stats.formats["hdf5"].state == "closed"
    assert not stats.complete
    assert any("tiff" in e for e in stats.errors)
    (hdf5,) = outputs(stats, "hdf5")
    assert read_frames("hdf5", hdf5, "camera")[2] == list(range(40))
    assert len(read_frames("hdf5", hdf5, "spectra")[0]) == 5
    (tiff_dir,) = outputs(stats, "tiff")  # what it stored before failing stays readable
    assert len(read_frames("tiff", tiff_dir, "camera")[0]) >= 5


# ---------------------------------------------------------------- process life
def test_sigterm_stops_the_recorder_process_gracefully(ring: RingBuffer, tmp_path: Path) -> None:
    recorder = Recorder(ring.path, formats=["hdf5"], output_dir=tmp_path,
                        flush_interval_s=3600)  # fmt: skip
    recorder.start()
    write_frames(ring, "camera", 0, 7)
    recorder.flush()
    assert recorder.pid is not None
    os.kill(recorder.pid, signal.SIGTERM)
    final = recorder.stop()
    assert final.state == "stopped"
    assert final.complete, final.errors
    (hdf5,) = outputs(final, "hdf5")
    assert read_frames("hdf5", hdf5, "camera")[2] == list(range(7))


_INSTRUMENT = """
import signal, sys, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # before any thread starts
import numpy as np
from daq_storage.recorder import read_stats
from daq_storage.ring import RingBuffer
with RingBuffer.open(sys.argv[1]) as ring:
    def frame(i):
        ring.write_frame(np.full((4, 4), i, np.uint16), stream="cam", frame_number=i)
    for i in range(5):
        frame(i)
    print("ready", flush=True)
    signal.sigwait({signal.SIGINT})  # Ctrl-C: the last frames, then detach
    while read_stats(sys.argv[1]).state == "running":  # they come after its own stop began
        time.sleep(0.005)
    for i in range(5, 10):
        frame(i)
"""


def test_after_ctrl_c_the_instruments_last_records_are_recorded(
    ring: RingBuffer, tmp_path: Path
) -> None:
    ring.close()  # the instrument process attaches as the ring's writer
    script = tmp_path / "instrument.py"
    script.write_text(_INSTRUMENT)
    recorder = Recorder(ring.path, formats=["hdf5"], output_dir=tmp_path, flush_interval_s=3600)
    recorder.start()
    instrument = subprocess.Popen([sys.executable, str(script), str(ring.path)],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert instrument.stdout is not None
        assert instrument.stdout.readline().strip() == "ready"
        assert recorder.pid is not None
        os.kill(recorder.pid, signal.SIGINT)  # as Ctrl-C reaches the whole process group
        os.kill(instrument.pid, signal.SIGINT)
        assert instrument.wait(60) == 0
    finally:
        instrument.kill()
        instrument.wait()
        if instrument.stdout is not None:
            instrument.stdout.close()
    final = recorder.stop(timeout=60)
    assert final.state == "stopped"
    assert final.complete, final.errors
    (hdf5,) = outputs(final, "hdf5")
    assert read_frames("hdf5", hdf5, "cam")[2] == list(range(10))


_ORPHAN = """
import json, sys
from daq_storage.recorder import Recorder
if __name__ == "__main__":
    recorder = Recorder(sys.argv[1], formats=["hdf5"], output_dir=sys.argv[2],
                        flush_interval_s=3600)
    recorder.start()
    print(json.dumps(recorder.pid), flush=True)
    sys.stdin.read()  # until killed
"""


def test_the_recorder_process_stops_gracefully_when_its_parent_dies(
    ring: RingBuffer, tmp_path: Path
) -> None:
    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN)
    parent = subprocess.Popen([sys.executable, str(script), str(ring.path), str(tmp_path / "o")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert parent.stdout is not None
        child = json.loads(parent.stdout.readline())
        watch = os.pidfd_open(child)
        write_frames(ring, "camera", 0, 9)
        parent.kill()  # kill -9: no stop(), no atexit
        parent.wait()
        ready, _, _ = select.select([watch], [], [], 60)  # the orphan exits on its own
        os.close(watch)
        assert ready, "the recorder process outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        assert parent.stdin is not None
        assert parent.stdout is not None
        parent.stdin.close()
        parent.stdout.close()
    final = read_stats(ring.path)
    assert final.state == "stopped"
    assert final.frames == 9
    (hdf5,) = outputs(final, "hdf5")
    assert read_frames("hdf5", hdf5, "camera")[2] == list(range(9))


def test_from_config(ring: RingBuffer, tmp_path: Path) -> None:
    path = tmp_path / "daq.toml"
    path.write_text(
        f'[storage]\noutput_dir = "{tmp_path / "out"}"\nexperiment = "cfg"\n'
        'formats = ["hdf5", "csv"]\nflush_interval_ms = 0\n'
        '[recorder]\nconsumer = "archiver"\nbatch_rows = 4\n'
        '[recorder.streams]\ncamera = ["tiff"]\n'
    )
    recorder = Recorder.from_config(StorageConfig.load(path, environ={}), ring=ring.path,
                                    mode="thread")  # fmt: skip
    write_frames(ring, "camera", 0, 3)
    ring.write_batch(table(0, 10), stream="meter")
    with recorder:
        pass
    stats = recorder.stats
    assert stats.consumer == "archiver"
    assert stats.complete, stats.errors
    assert stats.streams["camera"].formats == ("tiff",)
    assert stats.streams["meter"].formats == ("hdf5", "csv")
    (hdf5,) = outputs(stats, "hdf5")
    assert hdf5.name.startswith("cfg_")
    assert file_metadata("hdf5", hdf5, "meter")["experiment"] == "cfg"


def test_the_snippet_of_docs_recorder_md_runs_as_written(shm_path: Path, tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "recorder.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert '"/dev/shm/daq_storage_run1"' in snippet
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace('"/dev/shm/daq_storage_run1"', repr(str(shm_path))))
    try:
        shown = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                               text=True, check=True, timeout=120)  # fmt: skip
    finally:
        for left in shm_path.parent.glob(f"{shm_path.name}*"):
            left.unlink()
    assert shown.stdout.split() == ["1", "True"]
    assert len(list((tmp_path / "data").glob("run1_*_v1.h5"))) == 1


def test_a_second_recorder_with_the_same_consumer_name_is_refused(
    ring: RingBuffer, tmp_path: Path
) -> None:
    with Recorder(ring.path, output_dir=tmp_path, mode="thread", consumer="archive") as first:
        with pytest.raises(RingBusy, match="archive"):
            Recorder(ring.path, output_dir=tmp_path, mode="thread", consumer="archive").start()
        with pytest.raises(RingBusy, match="stats file"):  # a name of the same stats file
            Recorder(ring.path, output_dir=tmp_path, mode="thread", consumer="archive?").start()
        assert [r.name for r in ring.stats().readers] == ["archive"]
        other = Recorder(ring.path, output_dir=tmp_path, mode="thread", consumer="copy")
        with other:
            assert {s.consumer for s in list_stats(ring.path)} == {"archive", "copy"}
    assert first.stats.state == "stopped"


def test_stop_after_the_process_was_killed_says_how_it_died(
    ring: RingBuffer, tmp_path: Path
) -> None:
    recorder = Recorder(ring.path, output_dir=tmp_path, flush_interval_s=0)
    recorder.start()
    write_frames(ring, "camera", 0, 3)
    recorder.flush()
    assert recorder.pid is not None
    os.kill(recorder.pid, signal.SIGKILL)
    final = recorder.stop(timeout=60)
    assert final.state == "failed"
    assert any("SIGKILL" in e for e in final.errors), final.errors
    assert final.frames == 3  # the stats file's last content
    assert not final.complete


_FORGOTTEN = """
import sys
import numpy as np
from daq_storage.recorder import Recorder
from daq_storage.ring import RingBuffer
if __name__ == "__main__":
    ring = RingBuffer.create(sys.argv[1], capacity_bytes=1 << 20)
    recorder = Recorder(sys.argv[1], output_dir=sys.argv[2], mode=sys.argv[3],
                        flush_interval_s=3600)
    recorder.start()
    for i in range(5):
        ring.write_frame(np.full((4, 4), i, np.uint16), stream="cam")
    # no stop(): the interpreter exits with the Recorder running
"""


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_recorder_running_at_exit_is_stopped_cleanly(
    shm_path: Path, tmp_path: Path, mode: str
) -> None:
    script = tmp_path / "forgotten.py"
    script.write_text(_FORGOTTEN)
    try:
        subprocess.run([sys.executable, str(script), str(shm_path), str(tmp_path / "o"), mode],
                       check=True, timeout=120)  # fmt: skip
        final = read_stats(shm_path)
    finally:
        for left in shm_path.parent.glob(f"{shm_path.name}*"):
            left.unlink()
    assert final.state == "stopped"
    assert final.complete, final.errors
    (hdf5,) = outputs(final, "hdf5")
    assert read_frames("hdf5", hdf5, "cam")[0][:, 0, 0].tolist() == [0, 1, 2, 3, 4]


class _Go:
    """Stops the loop when told to."""

    aborting = False
    signalled = False

    def __init__(self) -> None:
        self.stop = threading.Event()

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def poll(self) -> list[tuple[bool | None, Callable[[str | None], None]]]:
        return []


def test_stats_stay_fresh_while_the_loop_waits_on_a_slow_format(
    ring: RingBuffer, tmp_path: Path
) -> None:
    release = threading.Event()
    entered = threading.Event()

    class SlowArrow(ArrowWriter):  # a real writer whose disk is very slow
        def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
            entered.set()
            release.wait()
            super().write_batch(stream, batch)

    recorder = Recorder(ring.path, formats=["arrow"], output_dir=tmp_path, mode="thread",
                        batch_rows=5, batch_bytes=200)  # fmt: skip
    loop = DrainLoop(recorder._settings())
    loop.sinks["arrow"]._cls = SlowArrow
    control = _Go()
    loop.open()
    runner = threading.Thread(target=loop.run, args=(control,))
    runner.start()
    try:
        for i in range(20):  # far more than the sink's queue holds
            ring.write_batch(table(i * 5, 5), stream="meter")
        assert entered.wait(60)
        first = read_stats(ring.path).updated_ns
        deadline = time.monotonic() + 60
        while read_stats(ring.path).updated_ns == first and time.monotonic() < deadline:
            time.sleep(0.05)  # the stats file is what is watched: it must change meanwhile
        live = read_stats(ring.path)
        assert live.updated_ns > first
        assert live.formats["arrow"].rows == 0  # the format has stored nothing yet
    finally:
        release.set()
        control.stop.set()
        runner.join()
    final = loop.latest
    assert final.rows == 100
    assert final.formats["arrow"].rows == 100


def test_the_recorder_process_logs_through_the_parents_loggers(
    shm_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="daq_storage.recorder")
    ring = RingBuffer.create(shm_path, capacity_bytes=1 << 16)
    recorder = Recorder(ring.path, output_dir=tmp_path, flush_interval_s=3600)
    try:
        recorder.start()
        assert recorder.pid is not None
        os.kill(recorder.pid, signal.SIGSTOP)  # it cannot read: the ring laps it
        try:
            write_frames(ring, "camera", 0, 200, shape=(16, 32))
        finally:
            os.kill(recorder.pid, signal.SIGCONT)
        recorder.flush()
        final = recorder.stop()
    finally:
        ring.close()
        ring.unlink()
        for left in shm_path.parent.glob(f"{shm_path.name}.*"):
            left.unlink()
    assert final.lost > 0
    (record,) = [r for r in caplog.records if "overwrote" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.name == "daq_storage.recorder"
    assert record.process == final.pid != os.getpid()
    assert f"lost {final.lost} records" in record.getMessage()
