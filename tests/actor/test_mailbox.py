"""The mailbox holds at most its bounds: a producer faster than the disk waits, and
messages are handled in the order they were sent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import h5py
import pytest

from daq_storage.actor import Flush, GetStats, StorageActor, WriteBatch
from daq_storage.actor._mailbox import Mailbox
from tests.actor._helpers import STREAM, config, ipc_stream, meter_batches, run


def test_a_producer_faster_than_the_disk_waits_and_the_bounds_hold(tmp_path: Path) -> None:
    """Durable flushes and gzip 9 make the writer slow for real; the producer sends
    ready-made IPC bytes as fast as the mailbox takes them."""
    payloads = [ipc_stream(b) for b in meter_batches(4, rows=5_000)]
    size = len(payloads[0])
    max_bytes = 3 * size + size // 2  # room for three batches, not four
    sent = 40

    async def main() -> tuple[int, int]:
        actor = await StorageActor.start(
            config(tmp_path, compression_level=9), max_messages=8, max_bytes=max_bytes
        )
        try:
            for i in range(sent):
                await actor.tell(WriteBatch(payloads[i % 4], STREAM))
                if i % 5 == 4:
                    await actor.tell(Flush(durable=True))
                box = actor.mailbox
                assert box.messages <= 8
                assert box.bytes <= max_bytes
            stats = await actor.call(GetStats())  # after every message sent before it
        finally:
            await actor.stop()
        box = actor.mailbox
        assert box.peak_messages <= 8
        assert box.peak_bytes <= max_bytes
        # The bound was reached: the producer did wait for the writer.
        assert box.peak_bytes > max_bytes - size
        return stats.batches_written, box.peak_messages

    written, _ = run(main())
    assert written == sent
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path, "r") as f:
        assert f[STREAM]["value"].shape == (sent * 5_000,)


def test_several_producers_share_the_bounds_and_every_batch_is_stored(tmp_path: Path) -> None:
    payload = ipc_stream(meter_batches(1, rows=2_000)[0])

    async def main() -> int:
        async with StorageActor(config(tmp_path), max_messages=3) as actor:

            async def produce(stream: str) -> None:
                for _ in range(10):
                    await actor.call(WriteBatch(payload, stream))

            await asyncio.gather(*(produce(f"meter_{i}") for i in range(5)))
            assert actor.mailbox.peak_messages <= 3
            return (await actor.call(GetStats())).batches_written

    assert run(main()) == 50
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path, "r") as f:
        assert sorted(f) == [f"meter_{i}" for i in range(5)]
        assert {f[g]["value"].shape[0] for g in f} == {20_000}


def test_get_stats_and_flush_are_answered_in_order(tmp_path: Path) -> None:
    payload = ipc_stream(meter_batches(1, rows=1_000)[0])

    async def main() -> None:
        async with StorageActor(config(tmp_path)) as actor:
            told = 0
            for n in range(1, 6):
                for _ in range(n):
                    await actor.tell(WriteBatch(payload, STREAM))
                    told += 1
                # GetStats comes after every batch told before it: it counts them all.
                stats = await actor.call(GetStats())
                assert stats.batches_written == told
                await actor.tell(WriteBatch(payload, STREAM))
                told += 1
                await actor.call(Flush())  # after that batch too: a reader sees it
                assert stats.file_path is not None
                with h5py.File(stats.file_path, "r") as f:
                    assert f[STREAM]["value"].shape == (1_000 * told,)

    run(main())


def test_a_batch_larger_than_the_byte_bound_alone_is_taken_when_the_mailbox_is_empty(
    tmp_path: Path,
) -> None:
    big = ipc_stream(meter_batches(1, rows=10_000)[0])

    async def main() -> None:
        async with StorageActor(config(tmp_path), max_bytes=1024) as actor:
            for _ in range(3):
                await actor.tell(WriteBatch(big, STREAM))
            stats = await actor.call(GetStats())
            assert stats.batches_written == 3
            assert actor.mailbox.peak_bytes == len(big)  # alone each time
            assert actor.mailbox.peak_messages == 1

    run(main())


def test_the_mailbox_is_first_come_first_served() -> None:
    """A large message waiting for room is not overtaken by small ones sent after it."""

    async def main() -> list[str]:
        box: Mailbox[str] = Mailbox(max_messages=10, max_bytes=100)
        assert await box.put("first", 60)
        big = asyncio.create_task(box.put("big", 90))  # waits: 60 + 90 > 100
        await asyncio.sleep(0)  # let it queue (an ordering point, not a wait for time)
        small = asyncio.create_task(box.put("small", 10))  # would fit, but comes after
        await asyncio.sleep(0)
        assert not big.done()
        assert not small.done()
        order = []
        for _ in range(3):
            taken = await box.get()
            assert taken is not None
            order.append(taken[0])
            box.release(taken[1])
            await asyncio.sleep(0)
        await asyncio.gather(big, small)
        assert box.stats.peak_bytes <= 100
        return order

    assert run(main()) == ["first", "big", "small"]


def test_a_closed_mailbox_admits_nothing_and_wakes_its_waiters() -> None:
    async def main() -> None:
        box: Mailbox[str] = Mailbox(max_messages=1, max_bytes=100)
        assert await box.put("a", 1)
        waiting = asyncio.create_task(box.put("b", 1))
        await asyncio.sleep(0)
        assert box.close() == ["a"]
        assert await waiting is False
        assert await box.put("c", 1) is False
        assert box.stats.messages == 0

    run(main())


@pytest.mark.parametrize("bound", [0, -1, 1.5, True, "8"])
def test_mailbox_bounds_are_positive_integers(bound: object) -> None:
    from daq_storage.errors import ConfigError

    with pytest.raises(ConfigError, match="must be an integer >= 1"):
        Mailbox(max_messages=bound, max_bytes=10)  # type: ignore[arg-type]
