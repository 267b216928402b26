"""File I/O never runs on the event loop: while the actor writes 100 MB, another
coroutine keeps being scheduled. The bound is very generous (a loaded machine must not
fail it); what is asserted is mainly that the loop kept ticking during the write."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from daq_storage.actor import GetStats, StorageActor, WriteBatch
from tests.actor._helpers import STREAM, config, ipc_stream, meter_batches, run

TICK_S = 0.005


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "megabytes"),
    [
        ("thread", 100),  # the default mode
        ("process", 20),
        pytest.param("process", 100, marks=pytest.mark.stress),
    ],
)
def test_the_loop_keeps_running_while_the_actor_writes_100_mb(
    tmp_path: Path, mode: str, megabytes: int
) -> None:
    payloads = [ipc_stream(b) for b in meter_batches(8, rows=10_000)]
    target = megabytes * 10**6
    count = target // len(payloads[0]) + 1

    async def main() -> tuple[list[float], int, int]:
        delays: list[float] = []
        writing = True

        async def ticker() -> None:
            while writing:
                before = time.perf_counter()
                await asyncio.sleep(TICK_S)
                delays.append(time.perf_counter() - before - TICK_S)

        async with StorageActor(config(tmp_path), mode=mode) as actor:  # type: ignore[arg-type]
            ticks = asyncio.create_task(ticker())
            for i in range(count):
                await actor.tell(WriteBatch(payloads[i % len(payloads)], STREAM))
            stats = await actor.call(GetStats())
            writing = False
            await ticks
        return delays, stats.bytes_written, stats.batches_written

    delays, written, batches = run(main())
    assert batches == count
    assert written >= target * 0.9  # Arrow payload bytes (IPC adds framing)
    assert len(delays) >= 20, f"the loop ticked only {len(delays)} times during the write"
    assert max(delays) < 1.0, f"the loop was held for {max(delays):.3f} s"
