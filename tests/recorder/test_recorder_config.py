"""What each ``[storage] formats`` / ``[recorder]`` key and ``flush_interval_ms`` does to a
Recorder built by ``Recorder.from_config``, observed in the files (read back with h5py,
pyarrow, polars, tifffile), in the Recorder's stats, on the ring, or in the system calls
it makes; the registry of these effects is ``tests/test_config_effects.py``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daq_storage.config import StorageConfig
from daq_storage.errors import ConfigError
from daq_storage.recorder import Recorder, RecorderStats, read_stats
from daq_storage.ring import RingBuffer
from tests.recorder._helpers import (
    CAMERA,
    TABLE,
    Producer,
    check_frames,
    check_rows,
    format_outputs,
    read_frames,
    read_ledger,
    read_rows,
    ring_at,
    wait_for_stats,
)

ROW_BYTES = 16  # the producer's rows: an int64 and a float64
_HOUR_MS = 3_600_000  # a flush interval that never falls due in a test


def load(tmp_path: Path, text: str, *, experiment: str = "effects") -> StorageConfig:
    """The configuration of a TOML file: ``text`` after a ``[storage]`` table that sends
    the files to ``tmp_path / "out"``."""
    path = tmp_path / "daq.toml"
    storage = f"[storage]\noutput_dir = {json.dumps(str(tmp_path / 'out'))}\n"
    path.write_text(storage + f"experiment = {json.dumps(experiment)}\n" + textwrap.dedent(text))
    return StorageConfig.load(path, environ={})


def record(
    ring: RingBuffer,
    config: StorageConfig,
    run: Callable[[Producer, Recorder], object],
    *,
    mode: Literal["thread", "process"] = "thread",
) -> RecorderStats:
    """Run a Recorder made from ``config`` on ``ring`` around ``run(producer, recorder)``;
    its final stats."""
    recorder = Recorder.from_config(config, ring=ring.path, mode=mode)
    producer = Producer(ring)
    with recorder:
        run(producer, recorder)
    return recorder.stop()


def _arrow_batches(path: Path) -> list[int]:
    """Row counts of the record batches of an Arrow IPC stream file (the empty one that
    carries the closing metadata left out)."""
    reader = pa.ipc.open_stream(path)
    return [b.num_rows for b, _ in reader.iter_batches_with_custom_metadata() if b.num_rows]


def _stream_file(output: Path, stream: str, suffix: str) -> Path:
    (path,) = output.glob(f"{stream}*{suffix}")
    return path


# --------------------------------------------------------------------- [storage] formats
def test_storage_formats_write_every_stream_to_each_format(shm_path: Path, tmp_path: Path):
    """``formats = ["hdf5", "arrow"]``: one file of each, holding the same frames (pixels,
    frame numbers, timestamps) and the same rows."""
    config = load(tmp_path, 'formats = ["HDF5", "arrow"]\n')
    with ring_at(shm_path, capacity_bytes=4 << 20, overflow="block", block_timeout=30) as ring:
        stats = record(ring, config, lambda p, _: p.write_group(frames=20, batches=7))
    assert stats.complete, stats
    assert sorted(stats.formats) == ["arrow", "hdf5"]
    for name in ("hdf5", "arrow"):
        (output,) = format_outputs(stats, name)
        check_frames(read_frames(name, output), list(range(20)), f"{name} frames")
        check_rows(read_rows(name, output), list(range(7 * 50)), f"{name} rows")
        assert read_ledger(name, output) == ([], 0)


def test_without_formats_the_default_backend_is_recorded(shm_path: Path, tmp_path: Path):
    config = load(tmp_path, 'default_backend = "parquet"\n')
    with ring_at(shm_path, capacity_bytes=4 << 20, overflow="block", block_timeout=30) as ring:
        stats = record(ring, config, lambda p, _: p.write_group(frames=3, batches=2))
    assert list(stats.formats) == ["parquet"]
    (output,) = format_outputs(stats, "parquet")
    check_rows(read_rows("parquet", output), list(range(100)), "parquet rows")
    check_frames(read_frames("parquet", output), [0, 1, 2], "parquet frames")


def test_a_codec_key_a_format_cannot_honour_is_refused_before_start(shm_path: Path, tmp_path: Path):
    """Each format gets the codec keys through ``writer_options``: chunk_size suits HDF5,
    Arrow IPC writes each batch as it comes and refuses it; nothing is created."""
    config = load(tmp_path, 'formats = ["hdf5", "arrow"]\nchunk_size = 1000\n')
    with pytest.raises(ConfigError, match=r"storage\.chunk_size = 1000 \(file .*the arrow writer"):
        Recorder.from_config(config, ring=shm_path, mode="thread")
    assert not (tmp_path / "out").exists()
    assert not shm_path.exists()


# --------------------------------------------------------------------- [recorder] streams
def test_recorder_streams_route_a_stream_to_its_own_formats(shm_path: Path, tmp_path: Path):
    """The camera goes to HDF5 and TIFF only (not to ``formats``), the table, not named
    in ``streams``, to ``formats`` (Arrow) only."""
    config = load(
        tmp_path, 'formats = ["arrow"]\n[recorder.streams]\ncamera_1 = ["hdf5", "tiff"]\n'
    )
    with ring_at(shm_path, capacity_bytes=4 << 20, overflow="block", block_timeout=30) as ring:
        stats = record(ring, config, lambda p, _: p.write_group(frames=6, batches=4))
    assert stats.complete, stats
    assert set(stats.streams[CAMERA].formats) == {"hdf5", "tiff"}
    assert stats.streams[TABLE].formats == ("arrow",)
    for name in ("hdf5", "tiff"):
        (output,) = format_outputs(stats, name)
        check_frames(read_frames(name, output), list(range(6)), f"{name} frames")
    (hdf5,) = format_outputs(stats, "hdf5")
    assert read_rows("hdf5", hdf5).num_rows == 0  # the table is not routed there
    (arrow,) = format_outputs(stats, "arrow")
    check_rows(read_rows("arrow", arrow), list(range(200)), "arrow rows")
    assert read_frames("arrow", arrow).pixels.shape[0] == 0  # nor the camera here
    assert (stats.formats["arrow"].frames, stats.formats["hdf5"].rows) == (0, 0)


def test_a_routed_format_that_cannot_hold_the_stream_is_counted_unroutable(
    shm_path: Path, tmp_path: Path
):
    """TIFF holds no tables: the table routed only there is counted, reported, and the
    run is not complete; the camera still goes to ``formats``."""
    config = load(tmp_path, '[recorder.streams]\npower_meter_01 = ["tiff"]\n')
    with ring_at(shm_path, capacity_bytes=4 << 20, overflow="block", block_timeout=30) as ring:
        stats = record(ring, config, lambda p, _: p.write_group(frames=2, batches=3))
    table = stats.streams[TABLE]
    assert (table.records, table.unroutable) == (3, 3), table
    assert any("tiff" in e and TABLE in e for e in stats.errors), stats.errors
    assert not stats.complete
    (hdf5,) = format_outputs(stats, "hdf5")
    check_frames(read_frames("hdf5", hdf5), [0, 1], "hdf5 frames")


# --------------------------------------------------------------------- [recorder] durable
_DURABLE_RUN = """
import os, sys, time
from pathlib import Path
import pyarrow as pa
from daq_storage.config import StorageConfig
from daq_storage.recorder import Recorder
from daq_storage.ring import RingBuffer

config_path, ring_path, marker = sys.argv[1:]
ring = RingBuffer.create(ring_path, capacity_bytes=1 << 20, overflow="block", block_timeout=30)
try:
    recorder = Recorder.from_config(StorageConfig.load(config_path, environ={}),
                                    ring=ring_path, mode="thread")
    recorder.start()
    for start in range(0, 300, 100):
        ring.write_batch(pa.record_batch({"i": pa.array(range(start, start + 100))}),
                         stream="pm")
    # flush_interval_ms = 0: a cadence flush after every read that stored something; the
    # rows are visible once one flushed them all (the pause only spares the CPU).
    while recorder.stats.formats.get("arrow") is None or (
            recorder.stats.formats["arrow"].visible_rows < 300):
        time.sleep(0.01)
    fd = os.open(marker, os.O_CREAT | os.O_WRONLY)
    os.fsync(fd)  # marks the end of the cadence flushes in the trace (the close is after)
    os.close(fd)
    print(recorder.stop().formats["arrow"].flushes)
finally:
    ring.close()
    ring.unlink()
    for left in Path(ring_path).parent.glob(Path(ring_path).name + ".*"):
        left.unlink()  # the Recorder's stats file
"""


@pytest.mark.parametrize("durable", [True, False])
def test_recorder_durable_makes_every_flush_a_durable_one(
    shm_path: Path, tmp_path: Path, durable: bool
):
    """The Recorder's own count: with ``durable = true`` every flush of every format is
    ``flush(durable=True)``, without it none is (the system calls are checked below, where
    strace can trace)."""
    flag = "true" if durable else "false"
    config = load(tmp_path, f'formats = ["arrow", "hdf5"]\n[recorder]\ndurable = {flag}\n')

    def run(producer: Producer, recorder: Recorder) -> None:
        for _ in range(3):
            producer.write_rows()
            recorder.flush()

    with ring_at(shm_path, capacity_bytes=1 << 20) as ring:
        stats = record(ring, config, run)
    for name in ("arrow", "hdf5"):
        fmt = stats.formats[name]
        assert fmt.flushes >= 3, fmt
        assert fmt.durable_flushes == (fmt.flushes if durable else 0), fmt
    (arrow,) = format_outputs(stats, "arrow")
    check_rows(read_rows("arrow", arrow), list(range(150)), "arrow rows")


@pytest.mark.slow
@pytest.mark.parametrize("durable", [True, False])
def test_recorder_durable_fsyncs_the_files_at_each_flush(
    shm_path: Path, tmp_path: Path, durable: bool
):
    """Observed in the system calls (strace of a real run): with ``durable = true`` the
    cadence flushes fsync the Arrow file they made visible, without it none does. (Nothing
    in the file shows an fsync: where strace cannot trace, this is skipped.)"""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed: the fsync calls cannot be observed")
    # The run loads tmp_path / "daq.toml", which this writes.
    flag = "true" if durable else "false"
    load(tmp_path, f'formats = ["arrow"]\nflush_interval_ms = 0\n[recorder]\ndurable = {flag}\n')
    trace, marker = tmp_path / "trace.log", tmp_path / "flushes_done"
    command = [strace, "--seccomp-bpf", "-f", "-y", "-qq", "-e", "trace=fsync,fdatasync",
               "-o", str(trace), sys.executable, "-c", _DURABLE_RUN, str(tmp_path / "daq.toml"),
               str(shm_path), str(marker)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 and "seccomp" in done.stderr:  # an strace older than 5.3
        command.remove("--seccomp-bpf")
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) >= 1  # flushes
    out = os.path.realpath(tmp_path / "out")
    lines = trace.read_text().splitlines()
    end = next(i for i, line in enumerate(lines) if str(marker.name) in line)
    # A file is born under a hidden name, then linked to its own: the descriptor strace
    # shows may still carry the (since removed) hidden name.
    arrow_file = rf"<{re.escape(out)}/[^>]*\.arrows(?:\.\d+\.[0-9a-f]{{16}}\.tmp>\(deleted\)|>)"
    synced = [line for line in lines[:end] if re.search(arrow_file, line)]
    if durable:
        assert synced, "\n".join(lines)
    else:
        assert synced == [], "\n".join(lines)


# --------------------------------------------------------------------- rotation
def test_recorder_rotate_size_mb_starts_the_next_file_at_the_size(shm_path: Path, tmp_path: Path):
    """Arrow IPC, writes of 100 rows: each run directory's file reaches the size and goes
    at most one write (plus its closing metadata) past it; the next is ``_v{N+1}`` of the
    same name; no write is split and every row is in one file, in order."""
    limit_kib = 8
    config = load(
        tmp_path,
        f"""\
        formats = ["arrow"]
        flush_interval_ms = {_HOUR_MS}
        [recorder]
        rotate_size_mb = {limit_kib / 1024}
        batch_rows = 100
        """,
    )
    with ring_at(shm_path, capacity_bytes=4 << 20, overflow="block", block_timeout=30) as ring:
        stats = record(ring, config, lambda p, _: p.write_rows(60))
    assert stats.complete, stats
    outputs = format_outputs(stats, "arrow")
    assert len(outputs) >= 3, outputs
    assert stats.formats["arrow"].rotations == len(outputs) - 1  # the next files started
    stem = outputs[0].name.removesuffix("_v1")
    assert [o.name for o in outputs] == [f"{stem}_v{n}" for n in range(1, len(outputs) + 1)]
    write_bytes = _ipc_message_bytes(100)
    rows: list[int] = []
    for n, output in enumerate(outputs):
        file = _stream_file(output, TABLE, ".arrows")
        assert set(_arrow_batches(file)) == {100}, file  # whole writes only
        size = file.stat().st_size
        if n < len(outputs) - 1:
            assert size >= limit_kib * 1024, (file, size)
        assert size <= limit_kib * 1024 + write_bytes + 4096, (file, size)
        rows += read_rows("arrow", output).column("i").to_pylist()
    assert rows == list(range(3000))


def _ipc_message_bytes(rows: int) -> int:
    """The bytes one batch of ``rows`` producer rows takes in an Arrow IPC stream."""
    batch = pa.record_batch({"i": pa.array(range(rows), pa.int64()),
                             "v": pa.array([0.0] * rows, pa.float64())})  # fmt: skip
    return int(batch.serialize().size)


def test_recorder_rotate_interval_secs_starts_the_next_file_after_the_interval(
    shm_path: Path, tmp_path: Path
):
    """An interval of a microsecond: the file is past it after every write (one record of
    50 rows each, as ``batch_rows = 50`` makes them), so four records make four files of
    one batch each; unset, the same writes make one file."""
    counts = {}
    for interval in ("rotate_interval_secs = 0.000001", ""):
        run_dir = tmp_path / ("timed" if interval else "untimed")
        run_dir.mkdir()
        config = load(run_dir, f'formats = ["arrow"]\n[recorder]\nbatch_rows = 50\n{interval}\n')
        with ring_at(shm_path, capacity_bytes=1 << 20, overflow="block", block_timeout=30) as ring:
            stats = record(ring, config, lambda p, _: p.write_rows(4))
        assert stats.complete, stats
        outputs = format_outputs(stats, "arrow")
        counts[bool(interval)] = len(outputs)
        rows: list[int] = []
        for output in outputs:
            batches = _arrow_batches(_stream_file(output, TABLE, ".arrows"))
            assert batches, output
            assert set(batches) == {50}, (output, batches)
            rows += read_rows("arrow", output).column("i").to_pylist()
        assert rows == list(range(200))
    assert counts == {True: 4, False: 1}


# --------------------------------------------------------------------- batching
@pytest.mark.parametrize(("setting", "batches"), [
    ("batch_rows = 100", [100] * 10),
    ("batch_rows = 250", [250] * 4),
    ("batch_rows = 120", [100] * 10),  # up to 120: a third record would make 150
    # 1600 bytes exactly: two records of 800 bytes
    ("batch_rows = 100000\nbatch_bytes_mb = 0.00152587890625", [100] * 10),
    ("", [1000]),  # the defaults (65,536 rows, 64 MiB): one write at the stop
])  # fmt: skip
def test_recorder_batch_rows_and_batch_bytes_mb_size_the_table_writes(
    shm_path: Path, tmp_path: Path, setting: str, batches: list[int]
):
    """Twenty records of 50 rows, no cadence flush during the run: the Arrow file's record
    batches (one per write) are the joined batches."""
    config = load(tmp_path, f'formats = ["arrow"]\nflush_interval_ms = {_HOUR_MS}\n'
                            f"[recorder]\n{setting}\n")  # fmt: skip
    with ring_at(shm_path, capacity_bytes=1 << 20, overflow="block", block_timeout=30) as ring:
        stats = record(ring, config, lambda p, _: p.write_rows(20))
    (output,) = format_outputs(stats, "arrow")
    assert _arrow_batches(_stream_file(output, TABLE, ".arrows")) == batches
    check_rows(read_rows("arrow", output), list(range(1000)), "arrow rows")


@pytest.mark.parametrize(("setting", "batches"), [
    ("frames_per_write = 5", [5] * 8),
    ("frames_per_write = 1", [1] * 40),
    ("", [16, 16, 8]),  # unset: whole chunks, at least 16; the rest at the stop
])  # fmt: skip
def test_recorder_frames_per_write_groups_the_frames(
    shm_path: Path, tmp_path: Path, setting: str, batches: list[int]
):
    """Forty frames: one Arrow record batch per write of frames."""
    config = load(tmp_path, f'formats = ["arrow"]\nflush_interval_ms = {_HOUR_MS}\n'
                            f"[recorder]\n{setting}\n")  # fmt: skip
    with ring_at(shm_path, capacity_bytes=1 << 20, overflow="block", block_timeout=30) as ring:
        stats = record(ring, config, lambda p, _: p.write_frames(40))
    (output,) = format_outputs(stats, "arrow")
    assert _arrow_batches(_stream_file(output, CAMERA, ".arrows")) == batches
    check_frames(read_frames("arrow", output), list(range(40)), "arrow frames")


# --------------------------------------------------------------------- start, consumer
@pytest.mark.parametrize(("start", "rows"), [("oldest", range(500)), ("latest", range(200, 500))])
def test_recorder_start_is_where_a_new_recorder_starts_reading(
    shm_path: Path, tmp_path: Path, start: str, rows: range
):
    """Five batches are in the ring before the Recorder starts, five come after:
    ``oldest`` takes all ten, ``latest`` the newest one in the ring and what follows."""
    config = load(tmp_path, f'formats = ["csv"]\n[recorder]\nstart = "{start}"\n')
    with ring_at(shm_path, capacity_bytes=1 << 20, overflow="block", block_timeout=30) as ring:
        producer = Producer(ring)
        producer.write_rows(5)
        recorder = Recorder.from_config(config, ring=ring.path, mode="thread")
        with recorder:
            producer.write_rows(5)
        stats = recorder.stop()
    (output,) = format_outputs(stats, "csv")
    check_rows(read_rows("csv", output), list(rows), f"start = {start}")


def test_recorder_consumer_names_the_recorder_on_the_ring(shm_path: Path, tmp_path: Path):
    """Two Recorders of two configurations on one ring: each registered under its
    ``consumer`` name, each with its stats file by that name, each storing everything."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    local = load(tmp_path / "a", 'formats = ["hdf5"]\n[recorder]\nconsumer = "local hdf5"\n')
    remote = load(tmp_path / "b", 'formats = ["parquet"]\n[recorder]\nconsumer = "remote pq"\n')
    with ring_at(shm_path, capacity_bytes=1 << 20, overflow="block", block_timeout=30) as ring:
        first = Recorder.from_config(local, ring=ring.path, mode="thread")
        second = Recorder.from_config(remote, ring=ring.path, mode="thread")
        with first, second:
            names = {r.name for r in ring.stats().readers}
            assert {"local hdf5", "remote pq"} <= names, names
            Producer(ring).write_rows(4)
        done = {s.consumer: s for s in (first.stop(), second.stop())}
        assert read_stats(ring.path, "local hdf5").formats.keys() == {"hdf5"}
        assert read_stats(ring.path, "remote pq").formats.keys() == {"parquet"}
    assert sorted(done) == ["local hdf5", "remote pq"]
    for consumer, name in (("local hdf5", "hdf5"), ("remote pq", "parquet")):
        (output,) = format_outputs(done[consumer], name)
        check_rows(read_rows(name, output), list(range(200)), consumer)


# --------------------------------------------------------------------- stop timeout
@pytest.mark.slow
def test_recorder_stop_timeout_secs_kills_a_recorder_that_cannot_stop(
    shm_path: Path, tmp_path: Path
):
    """A Recorder process paused (SIGSTOP) cannot drain: ``stop()`` waits
    ``stop_timeout_secs`` (0.5 s), kills it, says so in the stats; the file holds what
    was flushed before. A watchdog resumes the process after 20 s: a ``stop()`` that
    waited the default 30 s instead would then see it stop cleanly, and the test fail."""
    config = load(tmp_path, 'formats = ["arrow"]\n[recorder]\nstop_timeout_secs = 0.5\n')
    with ring_at(shm_path, capacity_bytes=1 << 20, overflow="block", block_timeout=30) as ring:
        recorder = Recorder.from_config(config, ring=ring.path, mode="process")
        recorder.start()
        pid = recorder.pid
        assert pid is not None
        watchdog = threading.Timer(20.0, os.kill, (pid, signal.SIGCONT))
        try:
            producer = Producer(ring)
            producer.write_rows(4)
            wait_for_stats(ring.path, "recorder", lambda s: s.rows >= 200)
            recorder.flush()
            os.kill(pid, signal.SIGSTOP)
            watchdog.start()
        finally:
            stats = recorder.stop()  # no timeout given: the configured one
            watchdog.cancel()
            if watchdog.is_alive():
                watchdog.join()
    assert stats.state == "killed", stats
    assert not stats.complete
    (output,) = format_outputs(stats, "arrow")
    check_rows(read_rows("arrow", output), list(range(200)), "flushed before the kill")


# --------------------------------------------------------------------- flush cadence
def test_storage_flush_interval_ms_is_the_recorders_cadence(shm_path: Path, tmp_path: Path):
    """Parquet makes rows visible only at a flush (a row group closes). ``0``: a flush
    after every read that stored something, so the rows show in the file while the run
    goes on; an hour: the rows are stored (the writer holds them) and, 2 s into the run
    (by the Recorder's own published clock; the 1 s default would have flushed by then),
    no flush happened and a reader of the file sees none of them until the stop."""

    def flushed(s: RecorderStats) -> bool:
        return "parquet" in s.formats and s.formats["parquet"].visible_rows == 150

    def stored(s: RecorderStats) -> bool:
        return (
            "parquet" in s.formats
            and s.formats["parquet"].rows == 150
            and s.updated_ns - s.started_ns >= 2_000_000_000
        )

    seen = {}
    for interval, condition in ((0, flushed), (_HOUR_MS, stored)):
        run_dir = tmp_path / f"every_{interval}"
        run_dir.mkdir()
        config = load(
            run_dir,
            f"""\
            formats = ["parquet"]
            flush_interval_ms = {interval}
            [recorder]
            batch_rows = 50  # each record goes to the writer as it comes
            """,
        )
        with ring_at(shm_path, capacity_bytes=1 << 20, overflow="block", block_timeout=30) as ring:
            recorder = Recorder.from_config(config, ring=ring.path, mode="thread")
            with recorder:
                Producer(ring).write_rows(3)
                live = wait_for_stats(ring.path, "recorder", condition)
                fmt = live.formats["parquet"]
                (output,) = format_outputs(live, "parquet")
                in_file = pq.read_table(_stream_file(output, TABLE, ".parquet")).num_rows
                seen[interval] = (fmt.flushes > 0, fmt.rows, fmt.visible_rows, in_file)
            final = recorder.stop()
        (output,) = format_outputs(final, "parquet")
        check_rows(read_rows("parquet", output), list(range(150)), f"interval {interval}")
    assert seen == {0: (True, 150, 150, 150), _HOUR_MS: (False, 150, 0, 0)}


def test_the_example_configuration_makes_a_recorder(shm_path: Path):
    """``examples/daq.toml`` as it is: every key it sets is taken by the Recorder (none
    refused by its formats); nothing is opened before ``start()``."""
    example = Path(__file__).resolve().parents[2] / "examples" / "daq.toml"
    recorder = Recorder.from_config(StorageConfig.load(example, environ={}), ring=shm_path)
    assert not recorder.running
    assert not shm_path.exists()
