"""A writer killed at any instruction: the next one continues where its records end,
and readers attached meanwhile read on with exact accounting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daq_storage.ring import RingBuffer, RingReader
from daq_storage.ring import _format as f
from tests.ring._crash import check, payload, stop_writer
from tests.ring.conftest import SMALL, run_python


class _Died(Exception):
    """Where a test makes a writer stop dead (its file is left as a kill leaves it)."""


def _die() -> None:
    raise _Died


def die_before_store(writer: RingBuffer, offset: int, write: Any) -> None:
    """Run ``write(writer)`` and stop the writer dead before it stores word ``offset``;
    then abandon it as a kill would (``close`` stores nothing, it drops the lock)."""
    stop_writer(writer, lambda index: index == offset >> 3, _die)
    with pytest.raises(_Died):
        write(writer)
    writer.close()


@pytest.fixture
def written(shm_path: Path) -> Iterator[RingBuffer]:
    """A ring holding records 0..9 of stream "s", its writer still attached."""
    ring = RingBuffer.create(shm_path, capacity_bytes=SMALL)
    for _ in range(10):
        ring.write(payload(ring._seq, 100), stream="s")
    yield ring
    ring.close()
    ring.unlink()


STREAM_LATEST = "stream latest"  # stands for the first stream's latest-record word
WINDOWS = [
    pytest.param(f.OFF_TAIL, id="latest-stored-tail-not"),
    pytest.param(f.OFF_NEXT_SEQ, id="tail-stored-next_seq-not"),
    pytest.param(f.OFF_RECORDS_WRITTEN, id="next_seq-stored-counters-not"),
    pytest.param(STREAM_LATEST, id="counters-stored-stream-latest-not"),
]


@pytest.mark.parametrize("offset", WINDOWS)
@pytest.mark.parametrize("how", ["write", "write_many", "write_frame"])
def test_writer_dead_inside_a_publication_is_continued_exactly(
    written: RingBuffer, offset: Any, how: str
):
    path = written.path
    sid = 1 if how == "write_frame" else 0  # "cam" is declared by the frame
    stop = written._ring.stream_slot(sid) + f.STREAM_LATEST if offset == STREAM_LATEST else offset
    writes = {
        "write": lambda w: w.write(payload(w._seq, 100), stream="s"),
        "write_many": lambda w: w.write_many(
            [payload(w._seq + i, 64) for i in range(3)], stream="s"
        ),
        "write_frame": lambda w: w.write_frame(
            np.full((4, 4), w._seq, np.uint16), stream="cam", frame_number=w._seq
        ),
    }
    with RingReader.open(path) as before, RingReader.open(path, consumer="rec") as consumer:
        seen: dict[str, list[int]] = {"anonymous": [], "consumer": []}
        for name, reader in (("anonymous", before), ("consumer", consumer)):
            seen[name] += [r.seq for r in reader.read_many()]
        die_before_store(written, stop, writes[how])
        published = offset != f.OFF_TAIL  # the tail was stored: its records are out
        with RingReader.open(path, start="latest") as late:
            newest = late.read_latest()
            assert newest is not None
            first = late.read_next()
            assert first is not None
            assert newest.seq == first.seq == (late.next_seq or 0) - 1
            assert published or newest.seq == 9  # never a record that was not published
        with RingBuffer.open(path) as again:  # recovers, then continues
            resumed = again.write(payload(again._seq, 100), stream="s")
            assert resumed == newest.seq + 1
            assert again.stats().written == resumed + 1
        for name, reader in (("anonymous", before), ("consumer", consumer)):
            for record in reader.read_many():
                check(record)
                seen[name].append(record.seq)
            assert seen[name] == list(range(resumed + 1)), name
            assert (reader.delivered, reader.lost) == (resumed + 1, 0)
        with RingReader.open(path) as after:
            assert [r.seq for r in after.read_many()] == list(range(resumed + 1))
            latest = after.read_latest("s")
            assert latest is not None
            assert latest.seq == resumed


def test_nothing_left_intact_starts_readers_at_the_tail(written: RingBuffer):
    """A writer dies inside a record that overwrites everything before it: nothing
    published is intact. Readers start at the tail and count from the next record."""
    path = written.path

    def huge(writer: RingBuffer) -> None:
        writer._reserve(SMALL - 64)  # reserved: tail_intent a lap past every record
        raise _Died

    with pytest.raises(_Died):
        huge(written)
    written.close()
    with (
        RingBuffer.open(path) as again,
        RingReader.open(path, start="latest") as latest,
        RingReader.open(path) as oldest,
    ):
        assert latest.read_latest() is None
        assert latest.read_next() is None
        assert oldest.read_next() is None
        assert again.write(payload(again._seq, 100), stream="s") == 10
        for reader in (latest, oldest):
            record = reader.read_next()
            assert record is not None
            assert (record.seq, reader.delivered, reader.lost) == (10, 1, 0)


@pytest.mark.timeout(300)
def test_writer_killed_before_each_of_its_stores():
    """SIGKILL before every store to a shared word of every publish path (and inside the
    next writer's recovery): readers attached throughout read every record once."""
    code, summary = run_python(
        "import sys; from tests.ring._crash import sweep; sweep(sys.argv[1])",
        _driver_path("sweep"),
        timeout=280,
    )
    assert code == 0, summary
    assert summary["kill_points"] > 80  # every store of every kind of publication
    assert summary["lost"] == 0


@pytest.mark.timeout(300)
def test_writer_sigkilled_in_a_tight_loop():
    """Real SIGKILLs at random moments of a tight loop of every kind of write."""
    code, summary = run_python(
        "import sys; from tests.ring._crash import tight_loop; tight_loop(*sys.argv[1:])",
        _driver_path("tight"),
        "30",
        "20260101",
        timeout=280,
    )
    assert code == 0, summary
    # Exact accounting is checked inside; a block-mode consumer lost nothing at any
    # kill. (Readers may be lapped while a writer that never waits runs: not a loss.)
    assert summary["kills"] == 30


def _driver_path(name: str) -> str:
    from tests.conftest import SHM_DIR, SHM_TEST_PREFIX

    base = SHM_DIR if SHM_DIR is not None else Path("/tmp")
    return str(base / f"{SHM_TEST_PREFIX}{name}")
