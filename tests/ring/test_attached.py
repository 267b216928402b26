"""A ring is never replaced while a writer or any reader is attached to it."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
from pathlib import Path

import pytest

from daq_storage.errors import RingBusy
from daq_storage.ring import RingBuffer, RingReader
from daq_storage.ring._platform import lock_byte, unlock_byte
from tests.ring import _workers
from tests.ring.conftest import SMALL

CTX = multiprocessing.get_context("spawn")


@pytest.mark.parametrize(
    ("consumer", "named"), [("", "an anonymous reader"), ("recorder", "consumer 'recorder'")]
)
def test_ring_with_a_reader_in_another_process_is_not_replaced(
    shm_path: Path, tmp_path: Path, consumer: str, named: str
):
    with RingBuffer.create(shm_path, capacity_bytes=SMALL) as ring:
        ring.write(b"one", stream="s")
    ready, proceed = CTX.Event(), CTX.Event()
    result = tmp_path / "reader.json"
    child = CTX.Process(target=_workers.attach_and_read,
                        args=(str(shm_path), consumer, ready, proceed, str(result)))  # fmt: skip
    child.start()
    try:
        assert ready.wait(60), "the reader never attached"
        with pytest.raises(RingBusy) as info:
            RingBuffer.create(shm_path, capacity_bytes=SMALL, exist_ok=True)
        message = str(info.value)
        assert str(shm_path) in message
        assert named in message
        if consumer:
            assert f"(pid {child.pid})" in message
        with RingBuffer.open(shm_path) as ring:  # the same ring, still there
            ring.write(b"two", stream="s")
    finally:
        proceed.set()
        child.join(60)
    assert child.exitcode == 0
    assert json.loads(result.read_text()) == {"before": ["one"], "after": ["two"]}
    RingBuffer.create(shm_path, capacity_bytes=SMALL, exist_ok=True).close()  # detached now
    shm_path.unlink()


@pytest.mark.parametrize("consumer", ["", "recorder"])
def test_killed_reader_no_longer_keeps_the_ring(shm_path: Path, tmp_path: Path, consumer: str):
    RingBuffer.create(shm_path, capacity_bytes=SMALL).close()
    ready, never = CTX.Event(), CTX.Event()
    args = (str(shm_path), consumer, ready, never, str(tmp_path / "unused"))
    child = CTX.Process(target=_workers.attach_and_read, args=args)
    child.start()
    try:
        assert ready.wait(60), "the reader never attached"
        with pytest.raises(RingBusy):
            RingBuffer.create(shm_path, capacity_bytes=SMALL, exist_ok=True)
    finally:
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(60)
    assert child.exitcode == -signal.SIGKILL
    with RingBuffer.create(shm_path, capacity_bytes=2 * SMALL, exist_ok=True) as ring:
        assert ring.capacity == 2 * SMALL
    shm_path.unlink()


def test_busy_message_names_everyone_attached(ring: RingBuffer):
    with (
        RingReader.open(ring.path, consumer="live_view"),
        RingReader.open(ring.path),
        pytest.raises(RingBusy) as info,
    ):
        RingBuffer.create(ring.path, capacity_bytes=SMALL, exist_ok=True)
    pid = os.getpid()
    assert str(info.value) == (
        f"ring {ring.path} is in use by a live writer (pid {pid}), consumer 'live_view' "
        f"(pid {pid}) and an anonymous reader; it cannot be replaced while they are "
        "attached (stop them, or create the ring at another path)"
    )


def test_reader_waits_out_a_replacement_and_attaches_to_the_new_ring(shm_path: Path):
    old = shm_path.with_name(shm_path.name + "_old")
    new = shm_path.with_name(shm_path.name + "_new")
    with RingBuffer.create(old, capacity_bytes=SMALL) as ring:
        ring.write(b"old", stream="s")
    os.rename(old, shm_path)
    with RingBuffer.create(new, capacity_bytes=SMALL) as ring:
        ring.write(b"new", stream="s")
    replacer = os.open(shm_path, os.O_RDWR)
    assert lock_byte(replacer, 0, 0)  # what a creator replacing the ring holds
    read: list[bytes] = []

    def attach() -> None:
        with RingReader.open(shm_path) as reader:
            read.extend(r.tobytes() for r in reader.read_many())

    thread = threading.Thread(target=attach)
    thread.start()
    try:
        thread.join(0.2)
        assert thread.is_alive(), "a reader attached to a ring that is being replaced"
        os.rename(new, shm_path)
    finally:
        unlock_byte(replacer, 0, 0)
        os.close(replacer)
        thread.join(30)
    assert read == [b"new"]
    shm_path.unlink()
