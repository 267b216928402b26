"""Real processes: lapped and paused readers, block mode, and killed processes.

Processes meet at events, never after a sleep: a loaded machine (two CPU hogs on two
cores) only makes the tests slower, never wrong."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from daq_storage.errors import RingFull
from daq_storage.ring import RingBuffer, RingReader
from tests.ring import _workers

CTX = multiprocessing.get_context("spawn")


@pytest.fixture
def procs() -> Iterator[list[multiprocessing.process.BaseProcess]]:
    started: list[multiprocessing.process.BaseProcess] = []
    yield started
    for proc in started:
        if proc.is_alive():
            os.kill(proc.pid or 0, signal.SIGCONT)
            proc.kill()
        proc.join(10)


def run_stress(
    shm_path: Path,
    tmp_path: Path,
    procs: list[multiprocessing.process.BaseProcess],
    total: int,
    capacity: int,
) -> list[dict[str, int]]:
    RingBuffer.create(shm_path, capacity_bytes=capacity).close()
    results = [tmp_path / f"reader{i}.json" for i in range(4)]
    attached = [CTX.Event() for _ in range(4)]
    # (consumer, pause_every, pause_s) of each reader: anonymous, registered, slow, paused
    kinds = [(None, 0, 0.0), ("recorder", 0, 0.0), (None, 5000, 0.002), (None, 0, 0.0)]
    readers = [
        CTX.Process(
            target=_workers.read_records,
            args=(str(shm_path), total, str(result), *kind, event),
        )
        for result, kind, event in zip(results, kinds, attached, strict=True)
    ]
    for proc in readers:
        proc.start()
        procs.append(proc)
    for event in attached:  # every reader sees the ring from its first record
        assert event.wait(120), "a reader never attached"
    # The last reader is stopped (attached, so it holds its place) while the writer
    # writes a quarter of the records, many times the ring: it is lapped for certain.
    # At each milestone the writer waits until the reader has been continued or stopped
    # again, so the laps do not depend on how fast either process runs.
    paused = readers[3]
    os.kill(paused.pid or 0, signal.SIGSTOP)
    actions = [signal.SIGCONT, signal.SIGSTOP, signal.SIGCONT]
    milestones = [(total * (i + 1) // 4, CTX.Event(), CTX.Event()) for i in range(len(actions))]
    writer = CTX.Process(
        target=_workers.write_records, args=(str(shm_path), total, 2000, milestones)
    )
    writer.start()
    procs.append(writer)
    for (_, reached, go), action in zip(milestones, actions, strict=True):
        assert reached.wait(300), "the writer never reached its milestone"
        os.kill(paused.pid or 0, action)
        go.set()
    writer.join(300)
    assert writer.exitcode == 0
    for proc in readers:
        proc.join(600)
        assert proc.exitcode == 0
    shm_path.unlink()
    return [json.loads(r.read_text()) for r in results]


@pytest.mark.parametrize(
    ("total", "capacity"),
    [
        # 100k records of every size through a 128 KiB ring wrap it some 130 times (1M
        # through 1 MiB: 170) and lap the paused reader some 30 times; the long runs
        # repeat that in stress.
        pytest.param(100_000, 128 << 10, id="100k-records-128KiB-ring"),
        pytest.param(1_000_000, 1 << 20, id="1M-records-1MiB-ring", marks=pytest.mark.stress),
        pytest.param(10_000_000, 4 << 20, id="10M-records-4MiB-ring", marks=pytest.mark.stress),
    ],
)
@pytest.mark.timeout(600)
def test_one_writer_four_readers_lossless_accounting(
    shm_path: Path,
    tmp_path: Path,
    procs: list[multiprocessing.process.BaseProcess],
    total: int,
    capacity: int,
):
    results = run_stress(shm_path, tmp_path, procs, total, capacity)
    for i, result in enumerate(results):
        assert result["corrupt"] == 0, f"reader {i} got corrupt records: {result}"
        assert result["last_seq"] == total - 1, f"reader {i} did not reach the end: {result}"
        assert result["received"] == result["delivered"], f"reader {i}: {result}"
        assert result["received"] + result["lost"] == total, f"reader {i}: {result}"
    assert results[3]["laps"] >= 2  # the paused reader was lapped twice...
    assert results[3]["lost"] > 0
    assert results[3]["retries"] >= 2  # ...and found out after reading a stale header


def test_block_mode_slow_consumer_loses_nothing(
    shm_path: Path, tmp_path: Path, procs: list[multiprocessing.process.BaseProcess]
):
    total = 30_000
    RingBuffer.create(
        shm_path, capacity_bytes=64 * 1024, overflow="block", block_timeout=10
    ).close()
    result_file = tmp_path / "slow.json"
    registered = CTX.Event()
    reader = CTX.Process(
        target=_workers.read_records,
        args=(str(shm_path), total, str(result_file), "slow", 3000, 0.05, registered),
    )
    reader.start()
    procs.append(reader)
    assert registered.wait(120), "the consumer never registered"
    with RingBuffer.open(shm_path, block_timeout=10) as ring:
        assert [slot.name for slot in ring.stats().readers] == ["slow"]
        for seq in range(total):
            ring.write(_workers.record_payload(seq), stream="s")
        stats = ring.stats()
    reader.join(60)
    result = json.loads(result_file.read_text())
    assert result == result | {"delivered": total, "lost": 0, "corrupt": 0}
    assert stats.dropped == 0
    shm_path.unlink()


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_block_mode_evicts_dead_or_silent_consumer(
    shm_path: Path, procs: list[multiprocessing.process.BaseProcess], how: str
):
    ring = RingBuffer.create(
        shm_path,
        capacity_bytes=64 * 1024,
        overflow="block",
        block_timeout=10,
        heartbeat_timeout=0.5,
    )
    ready = CTX.Event()
    stalled = CTX.Process(target=_workers.hold_consumer_slot, args=(str(shm_path), ready))
    stalled.start()
    procs.append(stalled)
    ring.write(b"hello", stream="s")
    assert ready.wait(120), "the consumer never read its first record"
    if how == "kill":
        stalled.kill()
        stalled.join(10)
    else:
        os.kill(stalled.pid or 0, signal.SIGSTOP)
    # ~1 MB through a 64 KiB ring: needs the stalled slot gone before block_timeout
    # (else RingFull), however slowly the machine runs.
    for seq in range(2000):
        ring.write(_workers.record_payload(seq), stream="s")
    stats = ring.stats()
    assert stats.evictions == 1
    assert stats.dropped == 0
    (slot,) = stats.readers
    assert slot.state == "evicted"
    assert slot.name == "stalled"
    ring.close()
    ring.unlink()


def test_block_mode_timeout_raises_ring_full_and_counts_the_drop(ring_block: RingBuffer):
    with RingReader.open(ring_block.path, consumer="never_reads"):
        payload = b"x" * 1000
        for _ in range(63):  # fills the 64 KiB ring (63 records of 1032 bytes)
            ring_block.write(payload, stream="s")
        with pytest.raises(RingFull, match=r"after 0\.2 s.*record dropped"):
            ring_block.write(payload, stream="s")
        assert ring_block.stats().dropped == 1
    ring_block.write(payload, stream="s")  # the consumer left: room again


@pytest.fixture
def ring_block(shm_path: Path) -> Iterator[RingBuffer]:
    ring = RingBuffer.create(
        shm_path, capacity_bytes=64 * 1024, overflow="block", block_timeout=0.2
    )
    yield ring
    ring.close()
    ring.unlink()


def test_anonymous_reader_never_blocks_the_writer(ring_block: RingBuffer):
    with RingReader.open(ring_block.path) as reader:
        for _ in range(500):
            ring_block.write(b"y" * 1000, stream="s")
        records = reader.read_many(1000)
        assert reader.lost + reader.delivered == 500
        assert records[-1].seq == 499


def test_writer_killed_mid_run_leaves_no_partial_record(
    shm_path: Path, procs: list[multiprocessing.process.BaseProcess]
):
    RingBuffer.create(shm_path, capacity_bytes=8 << 20).close()
    ready = CTX.Event()
    with RingReader.open(shm_path, consumer="viewer") as reader:
        camera = CTX.Process(target=_workers.write_frames_forever, args=(str(shm_path), ready))
        camera.start()
        procs.append(camera)
        assert ready.wait(120), "the camera never wrote 50 frames"
        seen = 0
        for _ in range(200):
            for record in reader.read_many(100, timeout=0.01):
                frame = record.array()
                assert (frame == record.frame_number % 65_000).all()  # never torn
                seen += 1
        camera.kill()  # SIGKILL, wherever it is: possibly inside a frame copy
        camera.join(10)
        assert not reader.writer_alive
        # Drained, then returned (a hang would be the test's timeout).
        while (more := reader.read_next(timeout=0.2)) is not None:
            record = more
            assert (record.array() == record.frame_number % 65_000).all()
            seen += 1
        latest = reader.read_latest("camera_1")
        assert latest is not None
        assert (latest.array() == latest.frame_number % 65_000).all()
        assert seen > 0
        assert reader.delivered + reader.lost == reader.next_seq
    # The stale writer lock is recoverable, and writing continues where it stopped.
    with RingBuffer.open(shm_path) as writer:
        seq = writer.write_frame(np.zeros((480, 640), np.uint16), stream="camera_1")
        assert seq == reader.next_seq or seq > 0
    shm_path.unlink()
