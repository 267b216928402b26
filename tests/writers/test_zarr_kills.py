"""Zarr stores SIGKILLed inside flush() and between flushes: every kill leaves a store that
xarray (consolidated or not) and zarr-python open, with every flushed row and frame and
nothing that was not written."""

from __future__ import annotations

import json
import random
import signal
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.errors

from tests.writers.kill_harness import kill_when, line_starting

#: One step of a run: rows and frames per step vary, so chunks and shards are cut at every
#: place; a flush after every second step, announced with the rows and frames so far.
_STEPS = """
import json, os, signal, sys
import numpy as np, pyarrow as pa
from daq_storage import open_writer

PIXELS = np.arange(40 * 56, dtype=np.uint64).reshape(40, 56)


def run(path, options, rows_per_step, steps, before_flush=lambda step: None):
    writer = open_writer("zarr", path, **options)
    rows = frames = 0
    for step in range(steps):
        n = rows_per_step + step * 7919 % rows_per_step
        seq = np.arange(rows, rows + n)
        columns = {"seq": seq, "value": seq * 0.5, "label": pa.array(seq.astype(str))}
        if step >= 2:  # a column that appears mid-run: null before
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
            writer.flush()
            print(f"flushed {step} {rows} {frames}", flush=True)
    writer.close()
"""

#: Killed by the parent (kill_harness) at the line it chooses.
_CHILD = (
    _STEPS
    + """
run(sys.argv[1], json.loads(sys.argv[2]), 9000, 10**6)
"""
)

#: Kills a writer at each file-system change in turn (audit events: opens for writing,
#: renames, links, directories made and removed): one child per change, forked by this
#: helper, SIGKILLs itself when it is about to make change ``kill_at``, counted from the
#: writer's creation (``argv[3]`` negative) or from the flush after step ``argv[3]``. In
#: the second case the helper writes up to that flush itself and each child continues
#: from there, on a copy of the store as the helper left it; each killed store is then
#: renamed ``<kill_at>.zarr`` and announced.
_SWEEP = (
    _STEPS
    + """
import shutil
import daq_storage.writers.zarr  # imported once, before the forks

CHANGES = {"os.rename", "os.symlink", "os.link", "os.mkdir", "os.remove", "os.rmdir"}
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT
BASE, OPTIONS, START = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])


def die_at(kill_at):
    seen = 0

    def hook(event, args):
        nonlocal seen
        if event in CHANGES or (event == "open" and (args[2] or 0) & WRITES):
            seen += 1
            if seen == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    sys.stdout = open(os.devnull, "w")  # the parent reads the helper's lines only
    sys.addaudithook(hook)


def forks(done):  # a child per change: each returns from here, armed; this process never
    for kill_at in range(1, 10**6):
        pid = os.fork()
        if pid == 0:
            die_at(kill_at)
            return kill_at
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        done(kill_at)
        print(f"{kill_at} {'killed' if killed else 'ended'}", flush=True)
        if not killed:
            os._exit(0)


store, copy = f"{BASE}/run.zarr", f"{BASE}/copy.zarr"
if START < 0:
    run(f"{BASE}/{forks(lambda k: None)}.zarr", OPTIONS, 700, 4)
    os._exit(0)


def sweep(step):
    if step != START:
        return
    shutil.copytree(store, copy, symlinks=True)

    def done(kill_at):
        os.rename(store, f"{BASE}/{kill_at}.zarr")
        shutil.copytree(copy, store, symlinks=True)

    forks(done)  # a child returns here, and flushes


run(store, OPTIONS, 700, START + 1, sweep)
os._exit(0)
"""
)


def _counts(line: str) -> tuple[int, int]:
    _, _, rows, frames = line.split()
    return int(rows), int(frames)


def _expected_frames(count: int) -> np.ndarray:
    ids = np.arange(count, dtype=np.uint64)
    pixels = np.arange(40 * 56, dtype=np.uint64).reshape(40, 56)
    return ((ids[:, None, None] * 7 + pixels) % 65521).astype(np.uint16)


def _open(path: Path, group: str, consolidated: bool | None) -> xr.Dataset:
    """The stream's dataset; empty for a stream never flushed (not in the root's
    consolidated metadata) or, without it, never made."""
    try:
        dataset: xr.Dataset = xr.open_zarr(path, group=group, consolidated=consolidated)
        return dataset
    except (KeyError, zarr.errors.GroupNotFoundError):
        return xr.Dataset()


def _length(dataset: xr.Dataset, dimension: str) -> int:
    return int(dataset.sizes.get(dimension, 0))


def _check_table(columns: dict[str, Any], rows: int) -> None:
    seq = np.arange(rows)
    np.testing.assert_array_equal(np.asarray(columns["seq"]), seq)
    np.testing.assert_array_equal(np.asarray(columns["value"]), seq * 0.5)
    assert [str(x) for x in np.asarray(columns["label"])] == [str(x) for x in seq]
    # A new column is null up to the row it came with, then seq * 2; its mask is made
    # first (a mask of a column not there yet says nothing).
    assert "late" not in columns or "late.valid" in columns
    if "late.valid" in columns:
        valid = np.asarray(columns["late.valid"])
        start = int(np.argmax(valid)) if valid.any() else rows
        np.testing.assert_array_equal(valid, seq >= start)
    if "late" in columns:
        np.testing.assert_array_equal(np.asarray(columns["late"])[start:], seq[start:] * 2)


def _check_frames(frames: Any, stamps: Any, numbers: Any, count: int) -> None:
    ids = np.arange(count, dtype=np.uint64)
    np.testing.assert_array_equal(np.asarray(frames), _expected_frames(count))
    np.testing.assert_array_equal(np.asarray(numbers), ids)
    np.testing.assert_array_equal(np.asarray(stamps).astype(np.uint64), ids * 1000 + 5)


def visible(path: Path) -> dict[str, tuple[int, int]]:
    """Rows and frames each reader sees; asserts every visible row and frame is the one
    written at its index (nothing never-written, no fill values) and that no reader warns."""
    seen: dict[str, tuple[int, int]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for consolidated in (None, False):
            tab = _open(path, "tab", consolidated)
            cam = _open(path, "cam", consolidated)
            rows, frames = _length(tab, "row"), _length(cam, "frame")
            if rows:
                _check_table({str(name): tab[name].values for name in tab.variables}, rows)
            if frames:
                _check_frames(cam["frames"].values, cam["timestamp_ns"].values.astype("int64"),
                              cam["frame_number"].values, frames)  # fmt: skip
            seen[f"xarray consolidated={consolidated}"] = (rows, frames)
        root: Any = zarr.open_group(path, mode="r")
        counts: list[int] = []
        for name in ("tab", "cam"):
            arrays = dict(root[name].arrays()) if name in root else {}
            lengths = {array.shape[0] for array in arrays.values()} or {0}
            assert len(lengths) == 1, f"zarr group {name}: arrays of lengths {lengths}"
            count = lengths.pop()
            if name == "tab" and count:
                _check_table({key: array[:] for key, array in arrays.items()}, count)
            elif count:
                _check_frames(arrays["frames"][:], arrays["timestamp_ns"][:],
                              arrays["frame_number"][:], count)  # fmt: skip
            counts.append(count)
        seen["zarr.open_group"] = (counts[0], counts[1])
    return seen


def _kill_loop(tmp_path: Path, options: dict[str, Any], kills: int, seed: int) -> list[str]:
    """Kill a writer ``kills`` times (alternately inside flush() and just after it
    returned) and check each store; the kills fall in turn at the first flush (groups
    made), the second (a column that came at step 2 made) and a random later one
    (appends). Returns what each kill left, for the failure message."""
    rng = random.Random(seed)
    report: list[str] = []
    lost = 0
    shift = rng.randrange(3)
    for kill in range(kills):
        step = (1, 3, 2 * rng.randint(2, 4) + 1)[(kill + shift) % 3]
        where = "flushing" if kill % 2 == 0 else "flushed"
        path = tmp_path / f"k{kill}.zarr"
        killed = kill_when(_CHILD, line_starting(f"{where} {step} "),
                           str(path), json.dumps(options))  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        flushed = _counts(killed.flushed[-1]) if killed.flushed else (0, 0)
        announced = _counts(killed.lines[-1])
        seen = visible(path)
        for reader, (rows, frames) in seen.items():
            lost += max(0, flushed[0] - rows) + max(0, flushed[1] - frames)
            assert flushed[0] <= rows <= announced[0], (reader, rows, flushed, announced)
            assert flushed[1] <= frames <= announced[1], (reader, frames, flushed, announced)
        report.append(f"{where} {step}: flushed {flushed}, seen {seen}")
    assert lost == 0
    return report


@pytest.mark.parametrize(
    "options",
    [{}, {"shard_frames": 4}],
    ids=["default", "sharded"],
)
def test_every_kill_leaves_a_consistent_store_with_every_flushed_record(
    tmp_path: Path, options: dict[str, Any]
):
    """Each kind of flush killed once, inside and after flushes in turn (the stress run:
    100 kills per variant)."""
    _kill_loop(tmp_path, options, kills=3, seed=len(options))


def _flushes(rows_per_step: int, steps: int) -> list[tuple[int, int]]:
    """The rows and frames of each flush of ``run`` (nothing flushed first)."""
    rows = frames = 0
    out = [(0, 0)]
    for step in range(steps):
        rows += rows_per_step + step * 7919 % rows_per_step
        frames += 1 + step % 5
        if step % 2:
            out.append((rows, frames))
    return out


def _sweep(tmp_path: Path, options: dict[str, Any], start: int) -> int:
    """Kill a writer at each file-system change from the flush after step ``start`` to
    the end of that flush (from its creation to its second flush if ``start`` is
    negative) and check each store as it is announced. Returns the number of kills."""
    states = _flushes(700, 4)
    rows_seen, frames_seen = {r for r, _ in states}, {f for _, f in states}

    def check(line: str) -> bool:
        path = tmp_path / f"{line.split()[0]}.zarr"
        if path.exists():  # else killed before the store was made
            for reader, (rows, frames) in visible(path).items():
                assert rows in rows_seen, (line, reader, rows)
                assert frames in frames_seen, (line, reader, frames)
        return False

    killed = kill_when(_SWEEP, check, str(tmp_path), json.dumps(options), str(start))
    assert killed.returncode == 0, killed.stderr
    assert killed.lines[-1].endswith(" ended")
    closed = tmp_path / f"{killed.lines[-1].split()[0]}.zarr"  # a plain store, as at close
    assert not [p for p in closed.rglob("*") if p.is_symlink() or p.name.startswith(".")]
    return len(killed.lines) - 1


def test_a_kill_at_every_file_system_change_of_a_flush_leaves_it_or_the_last(tmp_path: Path):
    """A second flush (shards, a partial shard and its ids, rows, a new column's array,
    both groups' publications and the root's) and close(), killed before each of their
    file-system changes in turn: every reader opens the store, each stream as of one
    flush."""
    assert _sweep(tmp_path, {"chunk_size": 1000, "shard_frames": 4}, 3) > 30


@pytest.mark.stress
@pytest.mark.parametrize(
    "options",
    [{"chunk_size": 1000}, {"chunk_size": 1000, "shard_frames": 4}, {"shard_frames": 4,
     "compression": "zstd"}],
    ids=["unsharded", "sharded", "sharded-zstd"],
)  # fmt: skip
def test_a_kill_at_every_file_system_change_from_creation(tmp_path: Path, options: dict[str, Any]):
    assert _sweep(tmp_path, options, -1) > 100


@pytest.mark.stress
@pytest.mark.parametrize(
    "options",
    [{}, {"shard_frames": 4}, {"shard_frames": 4, "compression": "zstd"},
     {"compression": "none", "frames_per_chunk": 2}],
    ids=["default", "sharded", "sharded-zstd", "uncompressed"],
)  # fmt: skip
def test_many_kills_leave_consistent_stores(tmp_path: Path, options: dict[str, Any]):
    for round_ in range(5):
        _kill_loop(tmp_path / str(round_), options, kills=20, seed=round_)
