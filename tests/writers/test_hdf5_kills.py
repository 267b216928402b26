"""HDF5 files SIGKILLed inside flush() and between flushes, in real child processes: every
kill leaves a file that h5py opens, with every flushed row and frame, right, and nothing
that was not written.

Three ways to kill: the parent kills on the line the child announces (``kill_harness``:
at the start of a flush, or just after one returned); the child kills itself on a timer
started as a flush begins (a random point inside it); and a sweep that kills a flush at
each of its writes to the file in turn, whole or torn half-way. A kill inside a commit
leaves its journal, applied by ``repair_hdf5`` before the file is read; a kill outside
one needs nothing.
"""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the lz4/zstd/blosc filters for reading)
import numpy as np
import pytest

from daq_storage.writers import repair_hdf5
from tests.writers.kill_harness import kill_when, line_starting

#: A run: rows and frames per step vary (chunks are cut at every place), a column with
#: nulls, one that appears at step 2 (null before), text, dictionary-coded text whose
#: categories grow at every flush; a flush after every second step, announced with the
#: rows and frames so far.
_STEPS = """
import json, os, random, signal, sys, threading, time
import numpy as np, pyarrow as pa
from daq_storage.writers import Hdf5Writer

PIXELS = np.arange(48 * 64, dtype=np.uint64).reshape(48, 64)
durations = [0.001]  # of each flush so far, in seconds


def run(path, options, steps, before_flush=lambda step: None):
    writer = Hdf5Writer(path, **options)
    print("opened 0 0 0", flush=True)
    rows = frames = 0
    for step in range(steps):
        n = 1000 + step * 7919 % 3000
        seq = np.arange(rows, rows + n)
        columns = {
            "seq": seq,
            "value": seq / 7.0,
            "maybe": pa.array(seq * 0.5, mask=seq % 11 == 0),
            "label": pa.array([f"r{x}" for x in seq]),
            "chan": pa.array([f"c{x // 700 % 97}" for x in seq]),
        }
        if step >= 2:
            columns["late"] = seq * 2
        writer.write_batch("tab", pa.record_batch(columns))
        rows += n
        m = 1 + step % 5
        ids = np.arange(frames, frames + m, dtype=np.uint64)
        block = ((ids[:, None, None] * 7 + PIXELS) % 65521).astype(np.uint16)
        writer.write_frames("cam", block, timestamps_ns=ids * 1000 + 5, frame_numbers=ids)
        frames += m
        if step % 2:
            print(f"flushing {step} {rows} {frames}", flush=True)
            before_flush(step)
            started = time.perf_counter()
            writer.flush()
            durations.append(time.perf_counter() - started)
            print(f"flushed {step} {rows} {frames}", flush=True)
    return writer
"""

#: Killed by the parent at the line it chooses, or by itself on a timer started as flush
#: ``argv[3]`` begins (a uniform point within 1.5x the longest flush so far).
_CHILD = (
    _STEPS
    + """
timed, rng = int(sys.argv[3]), random.Random(int(sys.argv[4]))


def before_flush(step):
    if step == timed:
        delay = rng.uniform(0, 1.5 * max(durations))
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()


run(sys.argv[1], json.loads(sys.argv[2]), 10**6, before_flush)
"""
)


#: Kills flush ``argv[3]`` (a step number) at each of its writes to the file in turn: a
#: helper writes up to that flush, then forks a child per write; each child carries on
#: from there on a copy of the file as the disk showed it (its descriptor moved onto the
#: copy), and SIGKILLs itself at its ``kill_at``-th write, after writing all of it or (torn)
#: the pages up to its middle: of a write of chunk data or into new space (the kernel
#: checks for a kill between the pages of a write; an update of metadata in place, a few
#: pages at most, is copied in nanoseconds and not torn here). Each killed copy is
#: ``<kill_at><t>.h5`` in ``argv[1]``, announced as ``<kill_at> <torn> killed|ended``; the
#: helper ends when a flush ran to the end.
_SWEEP = (
    _STEPS
    + """
import shutil
from pathlib import Path
from daq_storage.writers import _hdf5_file

BASE, OPTIONS, TARGET = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
PATH = f"{BASE}/run.h5"
real_pwrite, real_ftruncate = os.pwrite, os.ftruncate


def arm(fd, kill_at, torn, copy):
    count = 0
    commit = _hdf5_file.OrderedFile.commit

    def journaled(self, *args):  # the copy's journal beside the copy
        self.journal = Path(copy + ".journal")
        commit(self, *args)

    _hdf5_file.OrderedFile.commit = journaled

    def counted():
        nonlocal count
        count += 1
        return count == kill_at

    def pwrite(f, data, offset):
        if f == fd and counted():
            view = memoryview(data).cast("B")
            if torn and (offset >= os.fstat(f).st_size or len(view) >= 64 << 10):
                cut = (offset + len(view) // 2) // 4096 * 4096 - offset
                real_pwrite(f, view[: max(0, cut)], offset)
            os.kill(os.getpid(), signal.SIGKILL)
        return real_pwrite(f, data, offset)

    def ftruncate(f, size):
        if f == fd and counted():
            os.kill(os.getpid(), signal.SIGKILL)
        return real_ftruncate(f, size)

    os.pwrite, os.ftruncate = pwrite, ftruncate


def sweep(step):
    if step != TARGET:
        return
    fd = next(int(n) for n in os.listdir("/proc/self/fd")
              if os.path.realpath(f"/proc/self/fd/{n}") == os.path.realpath(PATH))
    for kill_at in range(1, 10**6):
        for torn in (0, 1):
            copy = f"{BASE}/{kill_at}{'t' if torn else ''}.h5"
            shutil.copyfile(PATH, copy)  # the file as the disk shows it now
            pid = os.fork()
            if pid == 0:
                sys.stdout = open(os.devnull, "w")
                moved = os.open(copy, os.O_RDWR)
                os.dup2(moved, fd)
                os.close(moved)
                arm(fd, kill_at, torn, copy)
                return  # into the flush, on the copy
            _, status = os.waitpid(pid, 0)
            killed = os.WIFSIGNALED(status)
            print(f"{kill_at} {torn} {'killed' if killed else 'ended'}", flush=True)
            if not killed:
                os._exit(0)


run(PATH, OPTIONS, TARGET + 1, sweep)
os._exit(0)
"""
)


def _flushes(steps: int) -> list[tuple[int, int]]:
    """Rows and frames after each flush of ``run`` (nothing flushed first)."""
    rows = frames = 0
    out = [(0, 0)]
    for step in range(steps):
        rows += 1000 + step * 7919 % 3000
        frames += 1 + step % 5
        if step % 2:
            out.append((rows, frames))
    return out


def sweep_flush(tmp_path: Path, options: dict[str, Any], step: int) -> int:
    """Kill the flush after ``step`` at each of its writes, whole and torn; every copy must
    show each dataset with at least what the flush before stored and at most what this
    one stores, every record right. Returns the kills."""
    before, after = _flushes(step + 1)[-2:]
    kills = 0

    def checked(line: str) -> bool:
        nonlocal kills
        words = line.split()
        if len(words) == 3 and words[2] in ("killed", "ended"):
            copy = tmp_path / f"{words[0]}{'t' if words[1] == '1' else ''}.h5"
            assert check(copy, before, after) == 0, line
            kills += words[2] == "killed"
        return False

    killed = kill_when(_SWEEP, checked, str(tmp_path), json.dumps(options), str(step))
    assert killed.returncode == 0, killed.stderr
    assert killed.lines[-1].endswith(" ended"), killed.lines[-3:]
    return kills


def _expected_frames(ids: np.ndarray) -> np.ndarray:
    pixels = np.arange(48 * 64, dtype=np.uint64).reshape(48, 64)
    return ((ids.astype(np.uint64)[:, None, None] * 7 + pixels) % 65521).astype(np.uint16)


def visible(path: Path) -> dict[str, int]:
    """Rows or frames of each dataset that h5py reads back; asserts every one is the row or
    frame written at its index (nothing never written, no fill values)."""
    seen: dict[str, int] = {}
    with h5py.File(path, "r") as f:
        tab = f.get("tab")
        if tab is not None:
            columns = {name: dataset[()] for name, dataset in tab.items()}
            seen.update({name: len(values) for name, values in columns.items()
                         if not name.endswith(".categories")})  # fmt: skip
            for name, values in columns.items():
                index = np.arange(len(values))
                if name == "seq":
                    np.testing.assert_array_equal(values, index)
                elif name == "value":
                    np.testing.assert_array_equal(values, index / 7.0)
                elif name == "label":
                    assert [v.decode() for v in values] == [f"r{i}" for i in index]
                elif name == "chan":  # every code the file holds has its category
                    assert tab["chan"].attrs["encoding"] == "dictionary"
                    categories = columns["chan.categories"].astype(str)
                    expected = np.char.add("c", (index // 700 % 97).astype(str))
                    np.testing.assert_array_equal(categories[values], expected)
                elif name in ("maybe", "maybe.valid"):
                    expected = index % 11 != 0
                    if name == "maybe.valid":
                        np.testing.assert_array_equal(values, expected)
                    else:
                        np.testing.assert_array_equal(values[expected], index[expected] * 0.5)
            if "late.valid" in columns:  # null before the step it came with, then seq * 2
                valid = columns["late.valid"]
                start = int(np.argmax(valid)) if valid.any() else len(valid)
                np.testing.assert_array_equal(valid, np.arange(len(valid)) >= start)
                late = columns.get("late", np.zeros(0))[start:]
                np.testing.assert_array_equal(late, np.arange(start, start + len(late)) * 2)
        cam = f.get("cam")
        if cam is not None:
            frames, numbers = cam["frames"][()], cam["frame_number"][()]
            stamps = cam["timestamp_ns"][()]
            np.testing.assert_array_equal(numbers, np.arange(len(numbers)))
            np.testing.assert_array_equal(stamps, np.arange(len(stamps)) * 1000 + 5)
            np.testing.assert_array_equal(frames, _expected_frames(np.arange(len(frames))))
            seen.update(frames=len(frames), ids=len(numbers), stamps=len(stamps))
    return seen


_FRAME_DATASETS = ("frames", "ids", "stamps")


def check(path: Path, flushed: tuple[int, int], announced: tuple[int, int]) -> int:
    """Every dataset holds at least what was flushed and at most what was written (once
    the journal of a commit the kill fell in is applied); returns the records lost
    (flushed but not seen)."""
    repair_hdf5(path)
    seen = visible(path)
    lost = 0
    for name, count in seen.items():
        which = 1 if name in _FRAME_DATASETS else 0
        lost += max(0, flushed[which] - count)
        assert count <= announced[which], (name, count, flushed, announced)
    for which, names in ((0, ("seq", "value", "maybe", "maybe.valid", "label", "chan")),
                         (1, _FRAME_DATASETS)):  # fmt: skip
        lost += sum(flushed[which] for name in names if name not in seen)
    return lost


def _counts(line: str) -> tuple[int, int]:
    _, _, rows, frames = line.split()
    return int(rows), int(frames)


def _written_by(step: int) -> tuple[int, int]:
    """Rows and frames ``run`` has written once step ``step`` is done."""
    rows = sum(1000 + s * 7919 % 3000 for s in range(step + 1))
    return rows, sum(1 + s % 5 for s in range(step + 1))


def kill_loop(tmp_path: Path, options: dict[str, Any], kills: int, seed: int) -> list[str]:
    """Kill a writer ``kills`` times: in turn as a flush starts, just after one returned
    and at a random point inside one; at the first flush (datasets made), the second
    (the column that came at step 2 made, null before) or a random later one (appends),
    so that three kills try each kind of kill and each kind of flush, and nine every
    pair. Returns what each kill left (for a failure)."""
    rng = random.Random(seed)
    report: list[str] = []
    lost = 0
    shift = rng.randrange(3)
    for kill in range(kills):
        flush = (kill + kill // 3 + shift) % 3
        step = (1, 3, 2 * rng.randint(2, 9) + 1)[flush]
        where = ("flushing", "flushed", "timed")[kill % 3]
        path = tmp_path / f"k{kill}.h5"
        if where == "timed":
            killed = kill_when(_CHILD, lambda line: False, str(path), json.dumps(options),
                               str(step), str(rng.randrange(1 << 30)))  # fmt: skip
        else:
            killed = kill_when(_CHILD, line_starting(f"{where} {step} "),
                               str(path), json.dumps(options), "-1", "0")  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        flushed = _counts(killed.flushed[-1]) if killed.flushed else (0, 0)
        last = killed.lines[-1]
        announced = _counts(last)
        if last.startswith("flushed"):
            # The kill came after that flush returned (the timer, or the parent's signal on
            # a loaded machine): the child may have written the next two steps, whose full
            # chunks go to the file, before announcing its next flush.
            announced = _written_by(int(last.split()[1]) + 2)
        lost += check(path, flushed, announced)
        report.append(f"{where} {step}: flushed {flushed} announced {announced}")
    assert lost == 0, report
    return report


@pytest.mark.parametrize(
    "options",
    [{}, {"compression": "blosc-lz4"}, {"compression": "none"},
     {"frames_per_chunk": 4, "chunk_size": 1500}],
    ids=["default", "blosc", "uncompressed", "partial-chunks"],
)  # fmt: skip
def test_kills_inside_and_between_flushes_lose_no_flushed_record(
    tmp_path: Path, options: dict[str, Any]
):
    """Every kind of kill at every kind of flush with the default options; each kind of
    kill and of flush once per variant (the stress run: 120 kills per variant)."""
    kill_loop(tmp_path, options, kills=9 if not options else 3, seed=len(json.dumps(options)))


def test_a_file_killed_before_its_first_flush_opens_empty(tmp_path: Path):
    path = tmp_path / "early.h5"
    killed = kill_when(_CHILD, lambda line: line.startswith("opened"), str(path), "{}", "-1", "0")
    assert killed.returncode == -signal.SIGKILL
    with h5py.File(path, "r") as f:
        assert f.attrs["application"].startswith("daq-storage")
    assert visible(path) == {}


def test_a_kill_at_every_write_of_a_flush_leaves_it_or_the_one_before(tmp_path: Path):
    """The fourth flush (new chunks, part-filled chunks stored uncompressed in place,
    text, null masks, a column that came at step 2, frames and ids), killed at each of
    its writes to the file, whole or torn half-way."""
    assert sweep_flush(tmp_path, {}, 7) > 10


@pytest.mark.stress
@pytest.mark.parametrize(
    ("options", "step"),
    [({}, 1), ({}, 3), ({"compression": "blosc-lz4"}, 5), ({"compression": "none"}, 9),
     ({"frames_per_chunk": 4, "chunk_size": 1500}, 7), ({"compression": "lzf"}, 11)],
)  # fmt: skip
def test_a_kill_at_every_write_of_more_flushes(tmp_path: Path, options: dict[str, Any],
                                              step: int):  # fmt: skip
    assert sweep_flush(tmp_path, options, step) > 10


@pytest.mark.stress
@pytest.mark.parametrize(
    "options",
    [{}, {"compression": "blosc-lz4"}, {"compression": "none"}, {"compression": "zstd"},
     {"frames_per_chunk": 4, "chunk_size": 1500}, {"compression": "lz4", "frames_per_chunk": 3}],
    ids=["default", "blosc", "uncompressed", "zstd", "partial-chunks", "lz4-partial"],
)  # fmt: skip
def test_many_kills_lose_no_flushed_record(tmp_path: Path, options: dict[str, Any]):
    for round_ in range(4):
        kill_loop(tmp_path / str(round_), options, kills=30, seed=round_)
