"""The Recorder's frame path: large frames read zero-copy from the ring, copied straight
into a recycled ``(frames_per_write, *shape)`` group, checked against a lap after the copy.

The loop is driven step by step in this process (thread-mode settings, no thread), so
that the ring can be lapped between a read and the copy of what it handed out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from daq_storage.recorder import Recorder, RecorderStats
from daq_storage.recorder._loop import DrainLoop
from daq_storage.ring import RingBuffer
from tests.recorder._helpers import (
    CAMERA,
    Producer,
    check_frames,
    format_outputs,
    read_frames,
    read_ledger,
    ring_at,
)

#: 128 KiB frames: large enough to be read zero-copy.
_BIG = (256, 256)


class _StopNow:
    """A control that asks the loop to stop at once: it drains what the ring holds."""

    stopping = True
    aborting = False
    signalled = False

    def poll(self) -> list[tuple[bool | None, Callable[[str | None], None]]]:
        return []


@pytest.fixture
def big_ring(shm_path: Path) -> Iterator[RingBuffer]:
    # ~7 frames of 128 KiB: a few more frames lap the oldest
    with ring_at(shm_path, capacity_bytes=1 << 20, overflow="discard_oldest") as ring:
        yield ring


def _loop(ring: RingBuffer, tmp_path: Path, formats: list[str], **options: object) -> DrainLoop:
    recorder = Recorder(ring.path, formats=formats, output_dir=tmp_path, mode="thread",
                        **options)  # type: ignore[arg-type]  # fmt: skip
    loop = DrainLoop(recorder._settings())
    loop.open()
    return loop


def _stored(stats: RecorderStats, name: str, shape: tuple[int, int]) -> list[int]:
    """The frame indices format ``name`` holds, each checked pixel by pixel."""
    (output,) = format_outputs(stats, name)
    frames = read_frames(name, output, CAMERA)
    indices = sorted(int(n) - 1000 for n in frames.frame_numbers)
    check_frames(frames, indices, f"{name} {output}", shape)  # pixels == its own index
    return indices


@pytest.mark.parametrize("formats", [["hdf5"], ["hdf5", "zarr"]], ids=["hdf5", "hdf5+zarr"])
def test_a_frame_lapped_before_its_copy_is_not_stored_and_is_in_the_ledger(
    big_ring: RingBuffer, tmp_path: Path, formats: list[str]
) -> None:
    producer = Producer(big_ring, frame_shape=_BIG)
    loop = _loop(big_ring, tmp_path, formats, frames_per_write=4)
    producer.write_frames(5)
    assert loop.reader is not None
    records = loop.reader.read_many_views(16, min_view_bytes=1 << 16)
    assert [r.seq for r in records] == [0, 1, 2, 3, 4]
    assert all(r.zero_copy for r in records)
    # the producer laps the oldest views before the loop copies them
    while loop.reader.still_valid(records[1]):
        producer.write_frames(1)
    torn = [r.seq for r in records if not loop.reader.still_valid(r)]
    assert torn[:2] == [0, 1], torn
    assert len(torn) < len(records), torn
    loop._take(records)
    stats = loop.run(_StopNow())

    assert stats.state == "stopped", stats
    assert stats.lost == len(torn) == loop.reader.lost  # the ring's count agrees
    assert [(g.first_seq, g.last_seq, g.count) for g in stats.gaps] == [
        (torn[0], torn[-1], len(torn))
    ]
    assert stats.records + stats.lost == producer.frames
    kept = [i for i in range(producer.frames) if i not in torn]
    for name in formats:
        assert _stored(stats, name, _BIG) == kept, name
        (output,) = format_outputs(stats, name)
        ledger, lost = read_ledger(name, output)
        assert lost == stats.lost, (name, ledger)
        assert ledger == [g.to_dict() for g in stats.gaps], name


def test_frames_overwritten_while_the_loop_drains_are_never_stored_torn(
    big_ring: RingBuffer, tmp_path: Path
) -> None:
    """Reads and laps interleaved at every step: what is stored is intact, what is not
    is counted lost, and the two add up to what was written."""
    producer = Producer(big_ring, frame_shape=_BIG)
    loop = _loop(big_ring, tmp_path, ["hdf5"], frames_per_write=4)
    assert loop.reader is not None
    for step in range(30):
        producer.write_frames(3)
        records = loop.reader.read_many_views(2 + step % 3, min_view_bytes=1 << 16)
        producer.write_frames(step % 4)  # laps some of the views just read
        loop._take(records)
    stats = loop.run(_StopNow())
    assert stats.lost > 0, "the test did not lap the loop"
    assert stats.lost == sum(g.count for g in stats.gaps) == loop.reader.lost
    stored = _stored(stats, "hdf5", _BIG)
    lost = {s for g in stats.gaps for s in range(g.first_seq, g.last_seq + 1)}
    assert sorted(set(stored) | lost) == list(range(producer.frames))
    assert not set(stored) & lost
    for before, after in zip(stats.gaps, stats.gaps[1:], strict=False):
        # a ring gap and the views lapped next to it are one run: one gap
        assert after.first_seq > before.last_seq + 1, stats.gaps


@pytest.mark.parametrize("formats", [["hdf5"], ["hdf5", "parquet"]], ids=["hdf5", "hdf5+parquet"])
def test_frame_groups_are_reused_and_never_change_what_a_writer_holds(
    shm_path: Path, tmp_path: Path, formats: list[str]
) -> None:
    """A group returns to its pool once every format wrote it, and is reused only when no
    writer kept a view of it (Parquet holds its row group's batches until a flush)."""
    with ring_at(shm_path, capacity_bytes=4 << 20) as ring:
        producer = Producer(ring, frame_shape=_BIG)
        loop = _loop(ring, tmp_path, formats, frames_per_write=4)
        assert loop.reader is not None
        for step in range(12):
            producer.write_frames(4)
            loop._take(loop.reader.read_many_views(4, min_view_bytes=1 << 16))
            if step % 3 == 2 or formats == ["hdf5"]:
                loop._flush_now(False)  # every group written (and Parquet's released)
            else:  # every format wrote the group: it is back in the pool, held or not
                _idle(loop)
        groups = loop.frame_groups()
        stats = loop.run(_StopNow())
    allocated, reused = groups[CAMERA]
    assert allocated + reused == 12
    assert reused > 0, groups
    if formats == ["hdf5"]:
        assert allocated == 1, groups
    assert stats.lost == 0, stats
    assert stats.complete, stats
    for name in formats:
        assert _stored(stats, name, _BIG) == list(range(producer.frames)), name


def _idle(loop: DrainLoop) -> None:
    """Wait until every sink has taken all it was given (no flush: Parquet keeps its
    buffered batches, and with them views of their groups)."""
    for sink in loop.sinks.values():
        reply = sink.check("idle_check", pa.record_batch({"x": [1]}))
        reply.wait(loop.heartbeat)
