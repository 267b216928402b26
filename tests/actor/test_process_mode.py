"""``mode="process"``: the writer in a spawned process. The same file as in thread mode,
errors across the process boundary as the same DaqStorageErrors, and a writer process
that dies makes the actor refuse messages with ActorStopped, what it flushed intact."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.actor import Flush, GetStats, SetMetadata, StorageActor, WriteBatch
from daq_storage.actor._worker import ProcessWorker
from daq_storage.errors import ActorStopped, ConfigError, StorageIOError, UnsupportedData
from tests.actor._helpers import STREAM, config, ipc_file, ipc_stream, meter_batches, run


def test_process_mode_writes_the_same_file_and_reports_errors(tmp_path: Path) -> None:
    batches = meter_batches(3, rows=1_000)

    async def main() -> Path:
        async with StorageActor(config(tmp_path), mode="process") as actor:
            await actor.call(SetMetadata("experiment_id", "EXP_001"))
            await actor.call(WriteBatch(ipc_stream(batches[0]), STREAM))
            await actor.call(WriteBatch(ipc_file(batches[1]), STREAM))
            with pytest.raises(UnsupportedData, match="not Arrow IPC data"):
                await actor.call(WriteBatch(b"garbage", STREAM))
            await actor.tell(WriteBatch(batches[2], STREAM))  # an Arrow batch, pickled
            stats = await actor.call(GetStats())
        assert stats.batches_written == 3
        assert stats.num_datasets == 4
        assert stats.file_path is not None
        return stats.file_path

    with h5py.File(run(main()), "r") as f:
        assert f.attrs["experiment_id"] == "EXP_001"
        assert f[STREAM].attrs["instrument_id"] == STREAM
        expected = pa.Table.from_batches(batches)["value"].to_numpy()
        np.testing.assert_array_equal(f[STREAM]["value"][:], expected)


def test_a_writer_process_that_dies_stops_the_actor_and_flushed_rows_stay(
    tmp_path: Path,
) -> None:
    batch = meter_batches(1, rows=1_000)[0]

    async def main() -> None:
        actor = await StorageActor.start(config(tmp_path), mode="process")
        await actor.call(WriteBatch(batch, STREAM))
        await actor.call(Flush())
        worker = actor._worker
        assert isinstance(worker, ProcessWorker)
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        with pytest.raises(ActorStopped, match=r"writer process \(pid \d+\) ended"):
            await actor.call(WriteBatch(batch, STREAM))
        assert not actor.running
        with pytest.raises(ActorStopped, match="failed"):
            await actor.call(GetStats())
        with pytest.raises(ActorStopped, match="failed"):
            await actor.stop()

    run(main())
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path, "r") as f:
        assert f[STREAM]["value"].shape == (1_000,)


def test_a_disk_failure_in_the_writer_process_reaches_the_caller(
    tmp_path: Path, mount_tmpfs: object
) -> None:
    small = mount_tmpfs("8m")  # type: ignore[operator]
    payload = ipc_stream(meter_batches(1, rows=300_000)[0])  # 12 MB: more than the disk has

    async def main() -> None:
        async with StorageActor(config(small), mode="process") as actor:
            await actor.call(WriteBatch(ipc_stream(meter_batches(1, rows=100)[0]), STREAM))
            await actor.call(Flush())

            async def too_much() -> None:
                await actor.call(WriteBatch(payload, STREAM))
                await actor.call(Flush())

            with pytest.raises(StorageIOError, match=r"No space left|room"):
                await too_much()
            assert actor.running  # the next batch would start a new file

    run(main())
    (path,) = small.glob("*.h5")
    with h5py.File(path, "r") as f:  # what was flushed before stays readable
        assert f[STREAM]["value"].shape[0] >= 100


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mode must be 'thread' or 'process'"):
        StorageActor(config(tmp_path), mode="fork")  # type: ignore[arg-type]
