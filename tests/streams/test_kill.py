"""A stream writer SIGKILLed at any instant, in a real child process: the HDF5 file (after
``repair_hdf5`` applies a commit's journal, if the kill fell inside one) and the Arrow
IPC file open with h5py / pyarrow / open_run and hold every sample flushed, each with
its index, time and value, and nothing that was not written."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the lz4 filter for reading)
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.read import open_run
from daq_storage.sim import SimulatedDaqCard
from daq_storage.streams import Timebase
from daq_storage.writers import repair_hdf5
from tests.writers.kill_harness import kill_when, line_starting

START = 1_700_000_000 * 10**9
RATE = 44_100.0

#: Blocks of varying size from a simulated card into HDF5 + Arrow IPC (lz4, small
#: chunks: chunks are cut everywhere), a jump after every fifth block, a flush after
#: every second block, announced before ("flushing") and after ("flushed <samples>").
#: argv[2] > 0: the child SIGKILLs itself that many ms after the start of flush 3.
_CHILD = f"""
import os, signal, sys, threading
from daq_storage.sim import SimulatedDaqCard
from daq_storage.streams import ChannelConfig, StreamWriter

card = SimulatedDaqCard(8, sample_rate={RATE}, start_ns={START}, seed=5)
channels = [ChannelConfig(i, f"ai{{i}}", -10.0, 10.0) for i in range(8)]
timer_ms = int(sys.argv[2])
writer = StreamWriter(sys.argv[1], channels=channels, sample_rate={RATE}, chunk_size=3000,
                      compression="lz4", storage_format="both", start_ns={START})
print("opened", flush=True)
for step in range(10**6):
    block = card.read_block(500 + step * 7919 % 4000)
    if step % 5 == 4:
        card.read_block(1234)  # samples the writer never gets: a gap
    writer.write(block.samples, first_sample=block.first_sample)
    if step % 2:
        print(f"flushing {{step // 2}}", flush=True)
        if step // 2 == 3 and timer_ms:
            threading.Timer(timer_ms / 1000, os.kill, (os.getpid(), signal.SIGKILL)).start()
        writer.flush()
        print(f"flushed {{writer.stats.samples_flushed}}", flush=True)
"""


def _check(path: Path, flushed: int) -> None:
    """Every sample in the files is right; at least ``flushed`` of them."""
    repair_hdf5(path)  # a kill inside a commit leaves its journal: applied here
    with h5py.File(path, "r") as f:
        index = f["data/sample_index"][()] if "data" in f else np.zeros(0, np.uint64)
        times = f["data/timestamps"][()] if "data" in f else np.zeros(0, np.int64)
        counts = np.column_stack([f["data"][f"ai{i}"][()] for i in range(8)]) if "data" in f \
            else np.zeros((0, 8), np.int16)  # fmt: skip
    assert len(index) >= flushed
    card = SimulatedDaqCard(8, sample_rate=RATE, start_ns=START, seed=5)
    whole = card.read_block(int(index[-1]) + 1 if len(index) else 0).samples
    np.testing.assert_array_equal(counts, whole[index.astype(np.int64)])
    timebase = Timebase(RATE, START)
    assert times.tolist() == [timebase.at(int(i)) for i in index]
    steps = np.diff(index.astype(np.int64))
    assert set(steps.tolist()) <= {1, 1235}  # consecutive, or the jump of a gap
    if len(index):
        with open_run(path) as run:
            table = run.table("data", ["sample_index"])
            assert table.num_rows == len(index)
    arrow = path.with_suffix("") / "data.arrows"
    if arrow.exists():
        rows = pa.ipc.open_stream(arrow).read_all()
        assert rows.num_rows >= flushed
        prefix = min(rows.num_rows, len(index))
        np.testing.assert_array_equal(rows["sample_index"].to_numpy()[:prefix], index[:prefix])
        np.testing.assert_array_equal(rows["ai3"].to_numpy()[:prefix], counts[:prefix, 3])


def _flushed(lines: list[str]) -> int:
    done = [int(line.split()[1]) for line in lines if line.startswith("flushed ")]
    return done[-1] if done else 0


@pytest.mark.parametrize("at", ["flushing 1", "flushed 2"])
def test_killed_at_a_flush_keeps_every_flushed_sample(tmp_path: Path, at: str):
    path = tmp_path / "run.h5"
    killed = kill_when(_CHILD, line_starting(at), str(path), "0")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _check(path, _flushed(killed.lines))


@pytest.mark.parametrize("delay_ms", [2, 15])
def test_killed_inside_a_flush_keeps_every_earlier_flushed_sample(tmp_path: Path,
                                                                  delay_ms: int):  # fmt: skip
    path = tmp_path / "run.h5"
    killed = kill_when(_CHILD, line_starting("flushed 999999999"), str(path), str(delay_ms))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _check(path, _flushed(killed.lines))


def test_gaps_are_stored_with_their_flush(tmp_path: Path):
    """Flush 4 stores the samples up to block 9 and the gap after block 4 (the one after
    block 9 shows with block 10, after it)."""
    killed = kill_when(_CHILD, line_starting("flushing 5"), str(tmp_path / "b.h5"), "0")
    assert killed.returncode == -signal.SIGKILL
    with h5py.File(tmp_path / "b.h5", "r") as f:
        gaps = json.loads(f["data"].attrs["gaps"])
        index = f["data/sample_index"][()].astype(np.int64)
    jumps = np.flatnonzero(np.diff(index) != 1)
    assert gaps == [{"first": int(index[j]) + 1, "count": 1234} for j in jumps]
    assert len(gaps) == 1


@pytest.mark.stress
@pytest.mark.parametrize("seed", range(24))
def test_many_kills_at_random_instants(tmp_path: Path, seed: int):
    """Kills spread over 0-40 ms from the start of flush 3: inside the flush, inside
    the writes after it, between them."""
    delay_ms = 1 + random.Random(seed).randrange(40)
    path = tmp_path / "run.h5"
    killed = kill_when(_CHILD, line_starting("flushed 999999999"), str(path), str(delay_ms))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _check(path, _flushed(killed.lines))
