"""A process running the actor killed with SIGKILL after some flushes: its HDF5 file
opens (after ``repair_hdf5`` when a commit was cut) with every row flushed before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.writers import repair_hdf5
from tests.actor._helpers import STREAM, meter_batches

ROWS = 2_000

# The child: batches from the seeded power meter, a Flush after every third, the rows
# flushed so far printed once the Flush has returned.
CHILD = textwrap.dedent(
    f"""
    import asyncio, sys
    from daq_storage.actor import Flush, StorageActor, WriteBatch
    from daq_storage.config import StorageConfig
    from daq_storage.sim import SimulatedPowerMeter

    async def main():
        config = StorageConfig.load(environ={{"DAQ_STORAGE_OUTPUT_DIR": sys.argv[1]}})
        meter = SimulatedPowerMeter(seed=0, start_ns=0)
        async with StorageActor(config) as actor:
            rows = 0
            while True:
                await actor.call(WriteBatch(meter.read_batch({ROWS}), "{STREAM}"))
                rows += {ROWS}
                if rows % ({ROWS} * 3) == 0:
                    await actor.call(Flush())
                    print(rows, flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("flushes", [1, 4])
def test_a_killed_actor_process_leaves_every_flushed_row(tmp_path: Path, flushes: int) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DAQ_STORAGE_")}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env=environ,
    )  # fmt: skip
    flushed = 0
    try:
        assert child.stdout is not None
        for _ in range(flushes):
            line = child.stdout.readline()
            assert line, "the child ended before its flushes"
            flushed = int(line)
        # At once: the child is somewhere in its next batches, or in its next flush.
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()
    (path,) = (p for p in tmp_path.iterdir() if p.suffix == ".h5")
    repair_hdf5(path)
    with h5py.File(path, "r") as f:
        values = f[STREAM]["value"][:]
        stamps = f[STREAM]["timestamp_ns"][:]
    assert len(values) >= flushed
    expected = pa.Table.from_batches(meter_batches(len(values) // ROWS + 1, rows=ROWS))
    np.testing.assert_array_equal(values, expected["value"].to_numpy()[: len(values)])
    np.testing.assert_array_equal(
        stamps, expected["timestamp_ns"].cast(pa.int64()).to_numpy()[: len(values)]
    )
