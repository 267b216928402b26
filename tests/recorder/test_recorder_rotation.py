"""Rotation by size and by time: each format continues in ``_v{N+1}``, every file it
closed opens complete (its loss ledger written), and the files read in order hold exactly
what was written, no frame or row lost, repeated or split."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from daq_storage.recorder import Recorder, RecorderStats
from daq_storage.repair import check_files
from tests.recorder._helpers import (
    ALL_FORMATS,
    FRAME_FORMATS,
    TABLE_FORMATS,
    Producer,
    check_frames,
    check_rows,
    expected_rows,
    format_outputs,
    read_frames,
    read_ledger,
    read_rows,
    ring_at,
)

_NAME = re.compile(r"^rot_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_v(\d+)(\.[a-z0-9]+)?$")
_SIZE_GROUPS, _TIME_GROUPS = 24, 6


def _record(
    shm_path: Path, out: Path, name: str, groups: int, **rotation: Any
) -> tuple[Producer, RecorderStats]:
    """A Recorder of one format, rotating as told, fed ``groups`` groups of frames
    and / or rows (what the format holds) with an on-demand flush after each (so each
    group reaches the disk and the next write finds the file grown, or older)."""
    with ring_at(shm_path, capacity_bytes=8 << 20, overflow="block", block_timeout=30) as ring:
        recorder = Recorder(ring.path, formats=[name], output_dir=out, experiment="rot",
                            frames_per_write=8, batch_rows=100, mode="thread",
                            flush_interval_s=3600, **rotation)  # fmt: skip
        producer = Producer(ring, rows_per_batch=50)
        # only what the format holds: a stream it cannot hold would be unroutable
        frames = 16 if name in FRAME_FORMATS else 0
        batches = 4 if name in TABLE_FORMATS else 0
        with recorder:
            for _ in range(groups):
                producer.write_group(frames=frames, batches=batches)
                recorder.flush()
        return producer, recorder.stop()


def _check_rotated(producer: Producer, stats: RecorderStats, name: str, out: Path) -> int:
    """Every output of ``name`` complete and named in sequence; together they hold what
    was written. Returns how many files the format made."""
    assert stats.complete, stats
    fmt = stats.formats[name]
    outputs = format_outputs(stats, name)
    assert len(outputs) >= 2, f"{name} never rotated: {fmt}"
    assert fmt.rotations == len(outputs) - 1, fmt
    assert fmt.current == "", fmt
    assert fmt.state == "closed", fmt
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in outputs)
    versions = []
    for path in outputs:
        match = _NAME.match(path.name)
        assert match, path.name
        versions.append(int(match.group(1)))
        found = check_files(path)  # opened by each format's reader; nothing to repair
        assert all(c.status in ("ok", "skipped") for c in found), found
        assert any(c.status == "ok" for c in found), found
        assert read_ledger(name, path) == ([], 0), path  # closed complete
    assert versions == list(range(1, len(outputs) + 1)), [p.name for p in outputs]
    if name in FRAME_FORMATS:
        parts = [read_frames(name, path) for path in outputs]
        assert sum(len(p) for p in parts) == producer.frames
        if name not in TABLE_FORMATS:
            assert all(len(p) for p in parts), "a file with no frames"
        seen: list[int] = []
        for part in parts:
            indices = list(range(len(seen), len(seen) + len(part)))
            check_frames(part, indices, f"{name}: frames of one file")
            seen += indices
    if name in TABLE_FORMATS:
        tables = [read_rows(name, path) for path in outputs]
        rows = sum(t.num_rows for t in tables)
        if name not in FRAME_FORMATS:
            assert all(t.num_rows for t in tables), "a file with no rows"
        assert rows == producer.rows
        joined = [i for t in tables for i in t.column("i").to_pylist()]
        check_rows(expected_rows(joined), list(range(producer.rows)), f"{name}: rows")
        for table in tables:
            first = table.column("i")[0].as_py() if table.num_rows else 0
            check_rows(table, list(range(first, first + table.num_rows)), name)
    return len(outputs)


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_rotation_by_size(shm_path: Path, tmp_path: Path, name: str):
    """``rotate_bytes`` small against what is written: several files, none split."""
    producer, stats = _record(shm_path, tmp_path, name, _SIZE_GROUPS, rotate_bytes=48 << 10)
    files = _check_rotated(producer, stats, name, tmp_path)
    assert files >= 2


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_rotation_by_time(shm_path: Path, tmp_path: Path, name: str):
    """``rotate_seconds`` far shorter than the gap between two writes (no waiting on a
    clock: the ring drives the writes): the format rotates between writes, never
    inside one, and at most once per write."""
    producer, stats = _record(shm_path, tmp_path, name, _TIME_GROUPS, rotate_seconds=1e-6)
    files = _check_rotated(producer, stats, name, tmp_path)
    assert 2 <= files <= _TIME_GROUPS * 4  # at most one file per write
