"""HDF5 files SIGKILLed at the commits between flushes (a new column, stream or mask, a
widening, a replaced metadata value) and at random points: every dataset of a stream,
``.valid`` masks included, has one length in the file, every null reads as null and no
flushed row is lost.

A helper process imports everything once and forks a child per kill; the child runs the
same writes from the start on a file of its own and SIGKILLs itself, deterministically
just after the chosen commit of the file, or at a random point on a timer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from daq_storage.writers import repair_hdf5
from tests.writers.kill_harness import kill_when

#: The run: per batch of rows, a nullable column, text, a column from batch 2 on (null
#: before), one in batches 0-2 only (null after), an int8 column widened to int16 at
#: batch 4, a dictionary column whose codes widen from uint8 to uint16 (past 256
#: categories, at batch 4), a second stream from batch 3, frames; a stream attribute
#: replaced at every batch, a file value over 64 KiB (a dataset) set every third batch; a
#: flush after every third. ``run`` prints ``flushed <rows> <frames>`` after each flush.
_RUN = """
import os, random, signal, sys, threading, time
import numpy as np, pyarrow as pa
from daq_storage.writers import Hdf5Writer, _hdf5_file

WRITTEN = [0, 0]  # rows and frames handed to the writer
QUIET = [False]


def say(line):
    if not QUIET[0]:
        os.write(1, (line + "\\n").encode())


def run(path, batches):
    writer = Hdf5Writer(path, chunk_size=100)
    rows = frames = 0
    for b in range(batches):
        n = 60 + b * 37 % 150
        i = np.arange(rows, rows + n)
        columns = {"seq": i, "x": pa.array(i * 3, mask=i % 7 == 0),
                   "s": pa.array([f"r{v}" for v in i]),
                   "k": pa.array([f"k{v // 2}" for v in i]).dictionary_encode()}
        if b >= 2:
            columns["late"] = pa.array(i * 2, mask=i % 5 == 0)
        if b < 3:
            columns["gone"] = i
        columns["small"] = (i % 100).astype(np.int8 if b < 4 else np.int16)
        ids = np.arange(frames, frames + 1 + b % 3, dtype=np.uint64)
        WRITTEN[:] = rows + n, frames + len(ids)  # before the calls: they commit
        writer.write_batch("tab", pa.record_batch(columns))
        if b >= 3:
            writer.write_batch("aux", pa.record_batch({"a": pa.array([b] * 5)}))
        block = (ids[:, None, None] + np.arange(64).reshape(8, 8)).astype(np.uint16)
        writer.write_frames("cam", block, frame_numbers=ids, timestamps_ns=ids + 5)
        rows, frames = WRITTEN
        writer.set_metadata("step", b, stream="tab")
        if b % 3 == 2:
            writer.set_metadata("big", f"{b:06d}" * 12000)
        if b % 3 == 1:
            writer.flush()
            say(f"flushed {rows} {frames}")
    writer.close()
"""

#: ``argv[1]``: directory; ``argv[2]``: batches. A child per commit of the file, killed
#: as soon as that commit returns, announced as ``<c>.h5 killed <rows> <frames>`` (what
#: was handed to the writer by then) after its own ``flushed`` lines; ends when a child
#: runs to the end.
_AT_COMMITS = (
    _RUN
    + """
BASE, BATCHES = sys.argv[1], int(sys.argv[2])
real_commit = _hdf5_file.OrderedFile.commit


def armed(target):
    commits = 0

    def commit(self, *args):
        nonlocal commits
        real_commit(self, *args)
        commits += 1
        if commits == target:
            say(f"killed {WRITTEN[0]} {WRITTEN[1]}")
            os.kill(os.getpid(), signal.SIGKILL)

    _hdf5_file.OrderedFile.commit = commit


for target in range(1, 10**6):
    if os.fork() == 0:
        armed(target)
        run(f"{BASE}/{target}.h5", BATCHES)
        os._exit(0)
    _, status = os.wait()
    if not os.WIFSIGNALED(status):
        say(f"{target}.h5 ended")
        os._exit(0)
    say(f"{target}.h5 checked")
"""
)

#: ``argv[1]``: directory; ``argv[2]``: batches; ``argv[3]``: a commit whose every point
#: is killed (0: every point of every commit); ``argv[4]``: how many other points, drawn
#: with seed ``argv[5]``. A point is a change to the disk in a commit (the journal's
#: write, each write to the file, a truncation, the journal's removal), counted in a
#: first run. A child per point is SIGKILLed just before that change, announced as
#: ``<c>-<w>.h5 killed <rows> <frames>`` after its own ``flushed`` lines; ends with
#: ``done <points>``.
_AT_WRITES = (
    _RUN
    + """
BASE, BATCHES, FULL, SAMPLE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
real_commit = _hdf5_file.OrderedFile.commit
CHANGES = []  # per commit of the first run


def armed(target, kill_at):
    commits, changes, inside = [0], [0], [False]

    def before(real):
        def change(*args):
            changes[0] += 1
            if inside[0] and commits[0] == target and changes[0] == kill_at:
                say(f"killed {WRITTEN[0]} {WRITTEN[1]}")
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args)
        return change

    def commit(self, *args):
        commits[0] += 1
        changes[0], inside[0] = 0, True
        real_commit(self, *args)
        inside[0] = False  # changes outside commits are not points
        if target == 0:
            say(f"changes {changes[0]}")

    for name in ("writev", "pwrite", "ftruncate", "unlink"):
        setattr(os, name, before(getattr(os, name)))
    _hdf5_file.OrderedFile.commit = commit


read, write = os.pipe()
if os.fork() == 0:  # the first run: how many changes each commit makes
    os.dup2(write, 1)
    QUIET[0] = False
    armed(0, 0)
    run(f"{BASE}/dry.h5", BATCHES)
    os._exit(0)
os.close(write)
with os.fdopen(read) as counts:
    CHANGES = [int(line.split()[1]) for line in counts if line.startswith("changes")]
os.wait()
points = [(c + 1, w + 1) for c, n in enumerate(CHANGES) for w in range(n)]
if FULL:
    rng = random.Random(int(sys.argv[5]))
    rest = [p for p in points if p[0] != FULL]
    points = [p for p in points if p[0] == FULL] + rng.sample(rest, min(SAMPLE, len(rest)))
for target, kill_at in points:
    if os.fork() == 0:
        armed(target, kill_at)
        run(f"{BASE}/{target}-{kill_at}.h5", BATCHES)
        os._exit(0)
    os.wait()
    say(f"{target}-{kill_at}.h5 checked")
say(f"done {len(points)}")
"""
)

#: ``argv[1]``: directory; ``argv[2]``: batches; ``argv[3]``: kills; ``argv[4]``: seed.
#: Each child is killed by a timer at a uniform point within the run's duration (measured
#: first); announced as ``<k>.h5 killed``.
_AT_RANDOM = (
    _RUN
    + """
BASE, BATCHES, KILLS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(int(sys.argv[4]))
started, QUIET[0] = time.perf_counter(), True
run(f"{BASE}/dry.h5", BATCHES)
took, QUIET[0] = time.perf_counter() - started, False
for kill in range(KILLS):
    delay = rng.uniform(0, took)
    if os.fork() == 0:
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
        run(f"{BASE}/{kill}.h5", BATCHES)
        os._exit(0)
    _, status = os.wait()
    say(f"{kill}.h5 {'killed' if os.WIFSIGNALED(status) else 'ended'}")
"""
)


def _batch_starts(batches: int) -> list[int]:
    """The first row of each batch of ``run`` (and the rows after the last)."""
    starts = [0]
    for b in range(batches):
        starts.append(starts[-1] + 60 + b * 37 % 150)
    return starts


def check(path: Path, flushed: tuple[int, int], written: tuple[int, int]) -> None:
    """One length per stream; every value right and every null a null; at least the
    flushed rows and frames, at most the written ones."""
    starts = _batch_starts(40)
    with h5py.File(path, "r") as f:
        for name in ("tab", "aux", "cam"):
            if name in f:
                lengths = {key: dataset.shape[0] for key, dataset in f[name].items()
                           if not key.endswith(".categories")}  # fmt: skip
                assert len(set(lengths.values())) == 1, (name, lengths)
        tab = {key: dataset[()] for key, dataset in f["tab"].items()} if "tab" in f else {}
        rows = len(tab.get("seq", ()))
        assert flushed[0] <= rows <= written[0]
        i = np.arange(rows)
        if rows:
            np.testing.assert_array_equal(tab["seq"], i)
            assert [v.decode() for v in tab["s"]] == [f"r{v}" for v in i]
            categories = tab["k.categories"].astype(str)  # every code has its category
            np.testing.assert_array_equal(
                categories[tab["k"]], np.char.add("k", (i // 2).astype(str))
            )
            np.testing.assert_array_equal(tab["small"], i % 100)
            for column, valid, values in (
                ("x", i % 7 != 0, i * 3),
                ("late", (i >= starts[2]) & (i % 5 != 0), i * 2),
                ("gone", i < starts[3], i),
            ):
                if column not in tab:  # not created yet: no row of it written
                    assert not valid.any(), column
                    continue
                mask = tab.get(f"{column}.valid", np.ones(rows, bool))
                np.testing.assert_array_equal(mask, valid, err_msg=column)
                np.testing.assert_array_equal(tab[column][valid], values[valid], column)
        frames = f["cam/frames"][()] if "cam" in f else np.zeros((0, 8, 8))
        assert flushed[1] <= len(frames) <= written[1]
        ids = np.arange(len(frames))
        if len(frames):
            np.testing.assert_array_equal(f["cam/frame_number"][()], ids)
            np.testing.assert_array_equal(f["cam/timestamp_ns"][()], ids + 5)
            expected = ids[:, None, None] + np.arange(64).reshape(8, 8)
            np.testing.assert_array_equal(frames, expected)
        if "big" in f.attrs:
            value = f["_metadata/big"][()]
            text = value.decode() if isinstance(value, bytes) else str(value)
            assert text == text[:6] * 12000
        if "tab" in f:
            assert f["tab"].attrs["instrument_id"] == "tab"


def _counts(line: str) -> tuple[int, int]:
    _, rows, frames = line.split()
    return int(rows), int(frames)


def _published(path: Path, written: tuple[int, int]) -> bool:
    """Whether the killed writer had published ``path``; if not (killed at its first
    commit, before the hard link), nothing was written and only its hidden temporary is
    left, which is removed here as repair would."""
    if path.exists():
        return True
    assert written == (0, 0), written
    temporaries = list(path.parent.glob(f".{path.name}.*.tmp"))
    assert temporaries, sorted(p.name for p in path.parent.iterdir())
    for temporary in temporaries:
        temporary.unlink()
    return False


def _judge(tmp_path: Path, repair: bool) -> tuple[Callable[[str], bool], list[str]]:
    """A ``kill_when`` callback that checks each killed file as announced (after
    :func:`repair_hdf5` if ``repair``; else it must have no journal), and the kills."""
    flushed = (0, 0)
    kills: list[str] = []

    def checked(line: str) -> bool:
        nonlocal flushed
        words = line.split()
        if words[0] == "flushed":
            flushed = _counts(line)
        elif words[0] == "killed":
            kills.append(line)
        elif words[0] != "done" and words[1] == "checked":
            path = tmp_path / words[0]
            if not _published(path, _counts(kills[-1])):
                return False
            if repair:
                repair_hdf5(path)
            assert not path.with_name(path.name + ".journal").exists()  # opens as it is
            check(path, flushed, _counts(kills[-1]))
            path.unlink()
            flushed = (0, 0)
        return False

    return checked, kills


def test_a_kill_after_every_commit_leaves_equal_lengths(tmp_path: Path):
    """Seven batches: the commits of the new columns, masks, stream, the widening and the
    replaced values between flushes, and the flushes, each followed by a kill (which
    leaves what the disk shows until the next commit, no journal)."""
    checked, _ = _judge(tmp_path, repair=False)
    done = kill_when(_AT_COMMITS, checked, str(tmp_path), "7")
    assert done.returncode == 0, done.stderr
    assert done.lines[-1].endswith(" ended"), done.lines[-3:]
    assert sum(line.endswith("checked") for line in done.lines) > 12


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.stress)])
def test_random_kills_leave_equal_lengths(tmp_path: Path, seed: int):
    flushed = (0, 0)
    done = kill_when(_AT_RANDOM, lambda line: False, str(tmp_path), "12",
                     "6" if seed == 0 else "200", str(seed))  # fmt: skip
    assert done.returncode == 0, done.stderr
    for line in done.lines:
        if line.startswith("flushed"):
            flushed = _counts(line)
        elif _published(tmp_path / line.split()[0], flushed):
            # whatever was written up to the kill, at most all of it
            repair_hdf5(tmp_path / line.split()[0])  # a kill inside a commit
            check(tmp_path / line.split()[0], flushed, (10**9, 10**9))
            flushed = (0, 0)
    assert sum(not line.startswith("flushed") for line in done.lines) == (6 if seed == 0 else 200)


def sweep_writes(tmp_path: Path, full: int, sample: int, seed: int) -> int:
    """Kill the points of ``_AT_WRITES``; after :func:`repair_hdf5`, every file holds at
    least the rows and frames of the last flush before its kill. Returns the points."""
    checked, kills = _judge(tmp_path, repair=True)
    done = kill_when(_AT_WRITES, checked, str(tmp_path), "7", str(full), str(sample), str(seed))
    assert done.returncode == 0, done.stderr
    assert done.lines[-1].startswith("done"), done.lines[-3:]
    assert len(kills) == int(done.lines[-1].split()[1])
    return len(kills)


def test_a_kill_before_any_write_of_a_commit_is_repaired(tmp_path: Path):
    """Every change to the disk of one commit between flushes (the ninth), and a sample
    of those of the others (new columns, masks, streams, a widening, replaced large
    values, flushes): once the journal is applied
    (or a torn one removed), every file opens with one length per stream, no flushed row
    lost."""
    assert sweep_writes(tmp_path, full=9, sample=8, seed=0) > 12


@pytest.mark.stress
@pytest.mark.timeout(1200)
def test_a_kill_before_every_write_of_every_commit_is_repaired(tmp_path: Path):
    assert sweep_writes(tmp_path, full=0, sample=0, seed=0) > 200
