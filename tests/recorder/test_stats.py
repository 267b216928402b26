"""Recorder stats: the dataclasses' JSON round trip, the stats file and its readers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daq_storage.errors import InvalidName
from daq_storage.recorder import (
    FormatStats,
    LossGap,
    RecorderNotFound,
    RecorderStats,
    RecorderStatsCorrupt,
    StreamStats,
    list_stats,
    read_stats,
    stats_path,
)
from daq_storage.recorder._stats import write_stats

_INT = st.integers(0, 2**63 - 1)
_TEXT = st.text(max_size=20)


@st.composite
def recorder_stats(draw: st.DrawFn) -> RecorderStats:
    gaps = draw(st.lists(st.builds(LossGap, _INT, _INT, _INT, _INT, _INT, _INT), max_size=3))
    streams = draw(st.dictionaries(_TEXT, st.builds(
        StreamStats, _TEXT, st.sampled_from(["frames", "table", "raw"]), _INT, _INT, _INT,
        _INT, st.tuples(_TEXT), _INT, _INT, _INT), max_size=3))  # fmt: skip
    formats = draw(st.dictionaries(_TEXT, st.builds(
        FormatStats, _TEXT, st.sampled_from(["idle", "recording", "failed", "closed"]), _TEXT,
        st.tuples(_TEXT, _TEXT)), max_size=3))  # fmt: skip
    return RecorderStats(
        ring=draw(_TEXT), consumer=draw(_TEXT), pid=draw(_INT), state="running",
        records=draw(_INT), lag_seconds=draw(st.floats(0, 1e9)), lost=draw(_INT),
        gaps=tuple(gaps), evicted=draw(st.booleans()), errors=tuple(draw(st.lists(_TEXT))),
        streams=streams, formats=formats, files=tuple(draw(st.lists(_TEXT, max_size=3))),
    )  # fmt: skip


@given(recorder_stats())
def test_json_round_trip(stats: RecorderStats) -> None:
    assert RecorderStats.from_json(stats.to_json()) == stats


def test_complete_says_whether_anything_is_missing() -> None:
    clean = RecorderStats("r", "c", state="stopped")
    assert clean.complete
    gap = LossGap(5, 9, 5, 1, 2, 3)
    assert not RecorderStats("r", "c", lost=5, gaps=(gap,)).complete
    assert not RecorderStats("r", "c", errors=("boom",)).complete
    assert not RecorderStats("r", "c", state="killed").complete
    assert not RecorderStats("r", "c", formats={"hdf5": FormatStats("hdf5", "failed")}).complete
    refused = StreamStats("s", "table", refused=1)
    assert not RecorderStats("r", "c", streams={"s": refused}).complete
    assert not RecorderStats(
        "r", "c", streams={"s": StreamStats("s", "raw", unroutable=2)}
    ).complete


@pytest.mark.parametrize("text", ["", "[]", "{", '{"ring": 1, "consumer": "c", "gaps": [1]}'])
def test_what_is_not_a_snapshot_is_refused(text: str) -> None:
    with pytest.raises(RecorderStatsCorrupt):
        RecorderStats.from_json(text)


def test_stats_path_is_beside_the_ring(tmp_path: Path) -> None:
    ring = tmp_path / "daq_storage_run"
    assert stats_path(ring, "rec/1") == tmp_path / "daq_storage_run.rec_1.recorder.json"
    assert stats_path(ring) == tmp_path / "daq_storage_run.recorder.recorder.json"
    with pytest.raises(InvalidName):
        stats_path(ring, "\x00")


def test_read_from_another_process_and_listed_by_ring(tmp_path: Path) -> None:
    ring = tmp_path / "ring"
    with pytest.raises(RecorderNotFound):
        read_stats(ring, "a")
    assert list_stats(ring) == []
    first = RecorderStats(str(ring), "a", pid=1, state="running", records=7)
    second = RecorderStats(str(ring), "b", pid=2, state="stopped",
                           gaps=(LossGap(1, 2, 2, 3, 4, 5),), lost=2)  # fmt: skip
    write_stats(stats_path(ring, "a"), first)
    write_stats(stats_path(ring, "b"), second)
    (tmp_path / "ring_other.a.recorder.json").write_text("{}")  # another ring's
    script = "import sys\nfrom daq_storage.recorder import read_stats\n"
    script += "print(read_stats(sys.argv[1], sys.argv[2]).to_json())"
    shown = subprocess.run([sys.executable, "-c", script, str(ring), "b"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert RecorderStats.from_json(shown.stdout) == second
    assert list_stats(ring) == [first, second]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ring.a.recorder.json",
        "ring.b.recorder.json",
        "ring_other.a.recorder.json",
    ]  # fmt: skip  (no temporary file left)
