"""Arrow IPC, Parquet, CSV and TIFF writers SIGKILLed inside ``flush()`` (and the writes
before it) and between flushes, in real child processes (``kill_harness``): every
flushed record reads back with the documented readers, after ``daq-storage repair``
where the format needs it (Parquet, CSV); an Arrow stream file reads without it."""

from __future__ import annotations

import random
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from daq_storage.repair import check_files
from tests.writers.conformance import read_stream
from tests.writers.kill_harness import Killed, kill_when

_WRITES_PER_FLUSH = 4


@dataclass(frozen=True)
class Case:
    module: str
    cls: str
    per_write: int  # rows, or frames, of one write call
    write: str  # Python source writing values start .. start + per_write to stream "s"
    repaired_first: bool  # the documented way to read a killed run starts with repair
    #: A write is visible whole or not at all (CSV: its complete lines are rows).
    whole_writes: bool = True


_TABLE = (
    'writer.write_batch("s", pa.record_batch({"v": np.arange(start, start + N, dtype=np.float64),'
    ' "w": np.arange(start, start + N) % 7}))'
)
_FRAMES = (
    'writer.write_frames("s", np.repeat(np.arange(start, start + N, dtype=np.uint16), 128 * 128)'
    ".reshape(N, 128, 128))"
)
CASES = {
    "arrow": Case("arrow_ipc", "ArrowWriter", 30_000, _TABLE, repaired_first=False),
    "parquet": Case("parquet", "ParquetWriter", 30_000, _TABLE, repaired_first=True),
    "csv": Case("csv", "CsvWriter", 10_000, _TABLE, repaired_first=True, whole_writes=False),
    "tiff": Case("tiff", "TiffWriter", 16, _FRAMES, repaired_first=False),
}

_SCRIPT = """
import sys
import numpy as np, pyarrow as pa
from daq_storage.writers.{module} import {cls}
writer = {cls}(sys.argv[1])
N = {per_write}
for group in range(10_000):
    print(f"flushing {{group}}", flush=True)
    for call in range({writes}):
        start = (group * {writes} + call) * N
        {write}
    writer.flush()
    print(f"flushed {{group}}", flush=True)
"""


def kill_runs(name: str, where: str, kills: int, tmp_path: Path) -> list[tuple[Path, Killed]]:
    """``kills`` runs of ``name``'s writer, each SIGKILLed on the line ``"<where> n"``,
    ``n`` taken in turn from 1 to 5 in a random order, so the first five kills land
    at five different flushes (two at a time: the machine has two cores)."""
    case = CASES[name]
    script = _SCRIPT.format(module=case.module, cls=case.cls, per_write=case.per_write,
                            writes=_WRITES_PER_FLUSH, write=case.write)  # fmt: skip
    order = random.Random(f"{name} {where}").sample(range(1, 6), 5)
    jobs = [(tmp_path / f"run{i}", f"{where} {order[i % 5]}") for i in range(kills)]

    def run(job: tuple[Path, str]) -> tuple[Path, Killed]:
        target, line = job
        return target, kill_when(script, lambda said: said == line, str(target))

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(run, jobs))


def check_killed_run(name: str, target: Path, killed: Killed) -> int:
    """Everything flushed before the kill, and nothing but whole writes in order after
    it, read back the documented way; the flushed records lost (always 0)."""
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    case = CASES[name]
    if case.repaired_first:
        found = check_files(target)
        assert all(c.status in ("ok", "repaired") for c in found), found
    values = read_stream(name, target, "s")
    if not case.repaired_first:  # readable as it was left; repair finds nothing damaged
        found = check_files(target)
        assert all(c.status in ("ok", "repaired", "skipped") for c in found), found
        assert read_stream(name, target, "s") == values
    flushed = len(killed.flushed) * _WRITES_PER_FLUSH * case.per_write
    assert values == list(range(len(values))), "a value that was never written"
    if case.whole_writes:
        assert len(values) % case.per_write == 0, "part of a write is visible"
    return max(0, flushed - len(values))


@pytest.mark.parametrize("where", ["flushing", "flushed"])
@pytest.mark.parametrize("name", list(CASES))
def test_killed_writers_keep_every_flushed_record(tmp_path: Path, name: str, where: str):
    """2 kills per format and place, at two different flushes (60 under ``-m stress``):
    inside a flush (and the writes before it), or right after one (between flushes)."""
    lost = [check_killed_run(name, t, k) for t, k in kill_runs(name, where, 2, tmp_path)]
    assert lost == [0] * len(lost)


@pytest.mark.stress
@pytest.mark.parametrize("where", ["flushing", "flushed"])
@pytest.mark.parametrize("name", list(CASES))
def test_many_killed_writers_keep_every_flushed_record(tmp_path: Path, name: str, where: str):
    lost = [check_killed_run(name, t, k) for t, k in kill_runs(name, where, 60, tmp_path)]
    assert lost == [0] * len(lost)


_MID_WRITE = """
import os, signal, sys
import numpy as np, pyarrow as pa
from daq_storage.writers.{module} import {cls}
writer = {cls}(sys.argv[1])
N = {per_write}
for call in range(3):
    start = call * N
    {write}
writer.flush()
real_pwritev = os.pwritev
def half_then_die(fd, buffers, offset):
    # Real bytes reach the file, then the process dies as a SIGKILL takes it mid-call.
    data = memoryview(buffers[0]).cast("B")
    real_pwritev(fd, [data[: len(data) // 2 + 3]], offset)  # not at a line's end
    os.kill(os.getpid(), signal.SIGKILL)
os.pwritev = half_then_die
start = 3 * N
{write}
"""


@pytest.mark.parametrize("name", ["arrow", "csv", "tiff"])
def test_a_kill_inside_a_write_system_call(tmp_path: Path, name: str):
    """The kill lands inside the write of a batch's bytes (half of them on disk): the
    three calls before read back whole, Arrow and TIFF without any repair and nothing of
    the fourth; CSV after repair, with the fourth call's complete lines."""
    case = CASES[name]
    script = _MID_WRITE.format(module=case.module, cls=case.cls, per_write=case.per_write,
                               write=case.write)  # fmt: skip
    killed = kill_when(script, lambda line: False, str(tmp_path / "run"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if case.repaired_first:
        statuses = {c.path.name: c.status for c in check_files(tmp_path / "run")}
        assert statuses == {"s.csv": "repaired"}
    values = read_stream(name, tmp_path / "run", "s")
    if case.whole_writes:
        assert values == list(range(3 * case.per_write))
    else:
        assert 3 * case.per_write < len(values) < 4 * case.per_write
        assert values == list(range(len(values)))
