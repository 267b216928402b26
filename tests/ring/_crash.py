"""Writers killed at every step, run in a driver process of their own (see test_recovery).

The driver forks each writer, so a child starts in an instant with everything imported,
and the test process itself never forks. A child dies by SIGKILL: no cleanup, no flush,
the file left exactly as the kill found it.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import signal
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from daq_storage.ring import Record, RingBuffer, RingReader
from daq_storage.ring._mapping import RingFile

SMALL = 64 * 1024
_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_SEQ = struct.Struct("<Q")


class StoppingWords:
    """Stands in for a writer's header words: calls ``stop()`` instead of the first
    store for which ``at(index)`` holds (``stop`` kills the process, or raises)."""

    def __init__(self, words: Any, at: Callable[[int], bool], stop: Callable[[], None]) -> None:
        self._words = words
        self._at = at
        self._stop = stop

    def __setitem__(self, index: int, value: int) -> None:
        if self._at(index):
            self._stop()
        self._words[index] = value

    def __getitem__(self, index: int) -> Any:
        return self._words[index]

    def item(self, index: int) -> int:
        value: int = self._words.item(index)
        return value


def stop_writer(writer: RingBuffer, at: Callable[[int], bool], stop: Callable[[], None]) -> None:
    """Make ``writer`` call ``stop()`` just before the first store to a shared word of
    the header for which ``at(word index)`` holds."""
    stopping = StoppingWords(writer._words, at, stop)
    writer._words = stopping  # type: ignore[assignment]
    writer._ring.words = stopping  # type: ignore[assignment]


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_store(writer: RingBuffer, n: int) -> None:
    """Make ``writer`` die by SIGKILL just before its ``n``-th store to a shared word."""
    stores = iter(range(n + 1))
    stop_writer(writer, lambda _index: next(stores, n) == n, _sigkill)


def kill_at_set_u64(n: int) -> None:
    """Make this process die before its ``n``-th ``RingFile.set_u64`` (recovery's
    stores go through it)."""
    original = RingFile.set_u64
    left = [n]

    def crashing(ring: RingFile, offset: int, value: int) -> None:
        if left[0] == 0:
            _sigkill()
        left[0] -= 1
        original(ring, offset, value)

    RingFile.set_u64 = crashing  # type: ignore[method-assign,assignment]


def payload(seq: int, size: int) -> bytes:
    """Bytes that carry their record's sequence number (a reused number shows)."""
    return (_SEQ.pack(seq) * (size // 8 + 1))[: max(size, 8)]


def write_mixed(ring: RingBuffer, rounds: int) -> None:
    """Every kind of record and every publish path: new streams, a new schema, a
    write_many that crosses the end of the data region, frames, and small records."""
    for _ in range(rounds):
        ring.write(payload(ring._seq, 300), stream="raw")
        ring.write(payload(ring._seq, 40), stream="raw2")
        first = ring._seq
        ring.write_many([payload(first + i, 100) for i in range(40)], stream="raw")
        seq = ring._seq
        ring.write_frame(np.full((16, 16), seq % 65_000, np.uint16), stream="cam",
                         frame_number=seq)  # fmt: skip
        # from_buffers: pa.array() would import pandas in every forked writer
        seqs = pa.Array.from_buffers(pa.uint64(), 1, [None, pa.py_buffer(_SEQ.pack(ring._seq))])
        ring.write_batch(pa.RecordBatch.from_arrays([seqs], names=["seq"]), stream="table")
        sizes = [8 + (ring._seq + i) % 50 for i in range(5)]
        first = ring._seq
        ring.write_many([payload(first + i, n) for i, n in enumerate(sizes)], stream="raw2")


def check(record: Record) -> None:
    """The record carries its own sequence number, whatever its kind."""
    if record.kind == "raw":
        carried = _SEQ.unpack_from(record.data)[0]
    elif record.kind == "frame":
        assert record.frame_number == record.seq
        carried = int(record.array()[0, 0]) + record.seq // 65_000 * 65_000
    else:
        carried = record.batch().column(0)[0].as_py()
    assert carried == record.seq, f"record {record.seq} carries {carried}"


def drain(reader: RingReader, seen: list[int]) -> None:
    """Read everything published, checking each record and the order."""
    while records := reader.read_many(500):
        for record in records:
            check(record)
            assert not seen or record.seq > seen[-1], f"{record.seq} after {seen[-1]}"
            seen.append(record.seq)


@contextmanager
def readers(path: Path) -> Iterator[dict[str, tuple[RingReader, list[int]]]]:
    """An anonymous reader and a registered consumer, attached before the kills."""
    attached: dict[str, tuple[RingReader, list[int]]] = {
        "anonymous": (RingReader.open(path), []),
        "consumer": (RingReader.open(path, consumer="recorder"), []),
    }
    try:
        yield attached
    finally:
        for reader, _seen in attached.values():
            reader.close()


def start(work: Callable[[], None]) -> int:
    """Run ``work`` in a forked child that dies with this process; its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            work()
            code = 0
        finally:
            os._exit(code)
    return pid


def fork(work: Callable[[], None]) -> int:
    """Run ``work`` in a forked child; its wait status (0: it finished)."""
    return os.waitpid(start(work), 0)[1]


def verify(path: Path, attached: dict[str, tuple[RingReader, list[int]]]) -> dict[str, int]:
    """After one more writer: every reader attached from the start saw each record at
    most once and in order, and counted exactly the ones it missed; a new reader,
    read_latest and the counters agree. Returns what each reader lost."""
    with RingBuffer.open(path) as writer:
        write_mixed(writer, 1)
        final = writer._seq
        assert writer.stats().written == final
    lost = {}
    for name, (reader, seen) in attached.items():
        drain(reader, seen)
        assert seen[-1] == final - 1, f"{name} ended at {seen[-1]}, not {final - 1}"
        assert (reader.delivered, reader.next_seq) == (len(seen), final), name
        assert reader.delivered + reader.lost == final, f"{name}: accounting is not exact"
        lost[name] = reader.lost
    with RingReader.open(path) as fresh:
        seen = []
        drain(fresh, seen)
        assert seen == list(range(seen[0], final))
    with RingReader.open(path, start="latest") as latest:
        record = latest.read_next()
        assert record is not None
        assert record.seq == final - 1
        newest = latest.read_latest()
        assert newest is not None
        assert newest.seq == final - 1
        for stream in latest.streams:
            other = latest.read_latest(stream)
            assert other is not None
            check(other)
    return lost


def _prefilled(path: Path) -> None:
    """A fresh 64 KiB ring with records up to a few KiB before its end."""
    with RingBuffer.create(path, capacity_bytes=SMALL) as ring:
        while ring._tail < SMALL - 3000:
            ring.write(payload(ring._seq, 400), stream="raw")


def sweep(path_text: str) -> None:
    """Kill a writer before each of its stores in turn; after each kill, kill the next
    writer inside recovery (before its ``n % 8``-th store) for good measure; then check
    everything with :func:`verify`. Prints a JSON summary."""
    path = Path(path_text)
    n = points = lost = 0
    while True:
        _prefilled(path)
        with readers(path) as attached:
            for reader, seen in attached.values():
                drain(reader, seen)

            def crash(store: int = n) -> None:
                with RingBuffer.open(path) as writer:
                    kill_at_store(writer, store)
                    write_mixed(writer, 1)

            status = fork(crash)
            if status != 0:
                assert os.WIFSIGNALED(status), f"store {n}: writer failed, status {status}"
                points += 1

                def crash_recovery(store: int = n % 8) -> None:
                    kill_at_set_u64(store)
                    RingBuffer.open(path).close()

                recovery = fork(crash_recovery)
                assert recovery == 0 or os.WIFSIGNALED(recovery), f"recovery failed: {recovery}"
            for reader, seen in attached.values():
                drain(reader, seen)  # reading on between the writers
            lost += sum(verify(path, attached).values())
        path.unlink()
        if status == 0:  # the writer got through: every store has had its kill
            break
        n += 1
    print(json.dumps({"kill_points": points, "lost": lost}))


def tight_loop(path_text: str, kills: str, seed: str) -> None:
    """SIGKILL a writer in a tight loop of every kind of write ``kills`` times, at
    random moments, with readers attached throughout. Every other writer runs in block
    mode, where the consumer must lose nothing; the others never wait, so their kills
    land anywhere in the write path. Prints a JSON summary."""
    path = Path(path_text)
    rng = random.Random(int(seed))
    RingBuffer.create(path, capacity_bytes=4 << 20, block_timeout=30).close()
    with readers(path) as attached:
        reader, seen = attached["consumer"]
        for kill in range(int(kills)):
            target = len(seen) + rng.randint(20, 5000)
            overflow = "block" if kill % 2 else "discard_oldest"
            lost_before = reader.lost

            def forever(overflow: Any = overflow) -> None:
                with RingBuffer.open(path, overflow=overflow) as writer:
                    while True:  # mostly the smallest records: the most publishes
                        for _ in range(200):
                            writer.write(_SEQ.pack(writer._seq), stream="raw")
                        write_mixed(writer, 1)

            pid = start(forever)
            try:
                while len(seen) < target:  # no sleep: the reader waits for records
                    records = reader.read_many(500, timeout=10)
                    assert records or os.waitpid(pid, os.WNOHANG)[0] == 0, "the writer died"
                    for record in records:
                        check(record)
                        assert not seen or record.seq > seen[-1]
                        seen.append(record.seq)
            finally:
                os.kill(pid, signal.SIGKILL)
            status = os.waitpid(pid, 0)[1]
            assert os.WIFSIGNALED(status), f"the writer ended by itself: {status}"
            for other, other_seen in attached.values():
                drain(other, other_seen)
            if overflow == "block":
                assert reader.lost == lost_before, "a block-mode consumer lost records"
        lost = verify(path, attached)
    path.unlink()
    print(json.dumps({"kills": int(kills), "lost": lost}))
