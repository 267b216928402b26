"""Process entry points for the multi-process ring tests (importable by spawned children)."""

from __future__ import annotations

import json
import mmap
import os
import resource
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from daq_storage.errors import StorageIOError
from daq_storage.ring import RingBuffer, RingReader
from tests.ring.conftest import run_python


def record_size(seq: int) -> int:
    """Sizes derived from the sequence number: mostly small, sometimes large."""
    if seq % 997 == 0:
        return 20_000 + seq % 5_000
    return (seq * 2_654_435_761 >> 7) % 241


def record_payload(seq: int) -> bytes:
    size = record_size(seq)
    return (seq.to_bytes(8, "little") * (size // 8 + 1))[:size]


def write_records(
    path: str, total: int, batch: int, milestones: Sequence[tuple[int, Any, Any]] = ()
) -> None:
    """The stress writer: ``total`` records of sizes derived from their seq, in batches.

    ``milestones``: ``(seq, reached, go)``: once ``seq`` records are written, set the
    event ``reached`` and wait for the event ``go`` (the test acts on a reader meanwhile).
    """
    pending = sorted(milestones, key=lambda m: m[0])
    assert all(0 < m[0] <= total for m in pending), "milestones must lie in 1..total"
    with RingBuffer.open(path) as ring:
        seq = 0
        while seq < total:
            count = min(batch, total - seq, *(m[0] - seq for m in pending[:1]))
            ring.write_many([record_payload(s) for s in range(seq, seq + count)], stream="s")
            seq += count
            if pending and seq == pending[0][0]:
                _, reached, go = pending.pop(0)
                reached.set()
                if not go.wait(300):
                    raise TimeoutError(f"the test never let the writer go on at {seq}")


def read_records(
    path: str,
    total: int,
    result_file: str,
    consumer: str | None = None,
    pause_every: int = 0,
    pause_s: float = 0.0,
    ready: Any = None,
) -> None:
    """A verifying reader: checks every record's payload, reports its accounting.
    ``ready`` (an event) is set once attached."""
    corrupt = 0
    received = 0  # counted here, independently of the reader's own accounting
    last_seq = -1
    with RingReader.open(path, consumer=consumer) as reader:
        if ready is not None:
            ready.set()
        deadline = time.monotonic() + 600
        while last_seq < total - 1 and time.monotonic() < deadline:
            for record in reader.read_many(4096, timeout=0.05):
                received += 1
                if record.seq <= last_seq or record.data != record_payload(record.seq):
                    corrupt += 1
                last_seq = record.seq
                if pause_every and record.seq % pause_every == 0:
                    time.sleep(pause_s)  # a slow consumer, not a synchronisation
        result: dict[str, Any] = {
            "received": received,
            "delivered": reader.delivered,
            "lost": reader.lost,
            "retries": reader.retries,
            "laps": reader.laps,
            "corrupt": corrupt,
            "last_seq": last_seq,
        }
    Path(result_file).write_text(json.dumps(result))


def hold_consumer_slot(path: str, ready: Any) -> None:
    """Register as a consumer, read the first record, set ``ready``, then stall until
    killed (or stopped)."""
    with RingReader.open(path, consumer="stalled") as reader:
        if reader.read_next(timeout=60) is None:
            raise TimeoutError("no record to read")
        ready.set()
        while True:
            signal.pause()


def write_frames_forever(path: str, ready: Any) -> None:
    """A camera process that writes frames until it is killed; ``ready`` is set after
    frame 50."""
    with RingBuffer.open(path) as ring:
        frame = np.zeros((480, 640), np.uint16)
        number = 0
        while True:
            frame[...] = number % 65_000
            ring.write_frame(frame, stream="camera_1", frame_number=number)
            if number == 50:
                ready.set()
            number += 1


# --- ring creation in a child process: a SIGBUS or the OOM killer takes only the child ---


def _shmem_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssShmem:"):
            return int(line.split()[1])
    return 0


def _limit_address_space(headroom: int) -> None:
    """Refuse any mapping beyond ``headroom`` more bytes: if ring creation ever tried to
    map a huge ring again, the test would fail instead of exhausting the machine."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            limit = int(line.split()[1]) * 1024 + headroom
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _attempt(path: str, capacity: int, **options: Any) -> dict[str, Any]:
    before = _shmem_kb()
    try:
        RingBuffer.create(path, capacity_bytes=capacity, **options).close()
    except StorageIOError as exc:
        outcome: dict[str, Any] = {"errno": exc.errno, "message": str(exc)}
    else:
        outcome = {"created": True}
        Path(path).unlink()
    outcome["shmem_growth_kb"] = _shmem_kb() - before
    outcome["left"] = sorted(os.listdir(os.path.dirname(path)))
    return outcome


def create_once(path: str, capacity: str, force: str = "") -> None:
    """Create (and remove) one ring; print what happened as JSON."""
    _limit_address_space(1 << 30)
    print(json.dumps(_attempt(path, int(capacity), force=bool(force))))


def replace_while_mapped(path: str, capacity: str) -> None:
    """Replace a ring that a lockless reader still maps: its pages stay allocated, so
    the room counted before the old file is removed is not there when reserving."""
    RingBuffer.create(path, capacity_bytes=int(capacity)).close()
    fd = os.open(path, os.O_RDONLY)
    mapping = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    outcome = _attempt(path, int(capacity), exist_ok=True)
    mapping.close()
    os.close(fd)
    print(json.dumps(outcome))


def second_ring(first: str, second: str, capacity: str) -> None:
    """Create a ring, then a second one that does not fit next to it."""
    with RingBuffer.create(first, capacity_bytes=int(capacity)) as ring:
        ring.write(b"kept", stream="s")
        outcome = _attempt(second, int(capacity))
        with RingReader.open(first) as reader:
            outcome["first_ring"] = [r.tobytes().decode() for r in reader.read_many()]
    Path(first).unlink()
    print(json.dumps(outcome))


def run_child(function: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Run one of the functions above in a fresh interpreter."""
    script = f"import sys; from tests.ring._workers import {function}; {function}(*sys.argv[1:])"
    return run_python(script, *args)


def attach_and_read(path: str, consumer: str, ready: Any, proceed: Any, result_file: str) -> None:
    """Attach (anonymously when ``consumer`` is empty), read what is there, say so, wait
    for ``proceed``, read what came since and report both."""
    with RingReader.open(path, consumer=consumer or None) as reader:
        before = [r.tobytes().decode() for r in reader.read_many()]
        ready.set()
        proceed.wait(120)
        after = [r.tobytes().decode() for r in reader.read_many(timeout=10)]
    Path(result_file).write_text(json.dumps({"before": before, "after": after}))
