"""The actor as the ``[storage]`` configuration describes it, from a file or from the
``DAQ_STORAGE_*`` variables (seed 003's overrides, with this project's prefix)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import h5py
import pyarrow.parquet as pq

from daq_storage.actor import GetStats, StorageActor, WriteBatch
from daq_storage.config import StorageConfig
from tests.actor._helpers import STREAM, ipc_stream, meter_batches, run


def _level(path: Path) -> int:
    with h5py.File(path, "r") as f:
        plist = f[STREAM]["value"].id.get_create_plist()
        filters = {
            plist.get_filter(i)[0]: plist.get_filter(i)[2] for i in range(plist.get_nfilters())
        }
    return int(filters[1][0])  # gzip (filter 1) and its level


def test_the_actor_honours_the_storage_environment_variables(tmp_path: Path) -> None:
    batches = meter_batches(2, rows=20_000)
    environ = {
        "DAQ_STORAGE_DEFAULT_BACKEND": "hdf5",
        "DAQ_STORAGE_OUTPUT_DIR": str(tmp_path / "from_env"),
        "DAQ_STORAGE_COMPRESSION_LEVEL": "9",
        "DAQ_STORAGE_AUTO_FLUSH_INTERVAL_SECS": "0.05",
        "DAQ_STORAGE_EXPERIMENT": "laser_run",
    }
    config = StorageConfig.load(environ=environ)

    async def main() -> Path:
        async with StorageActor(config) as actor:
            for batch in batches:
                await actor.call(WriteBatch(ipc_stream(batch), STREAM))
            path = (await actor.call(GetStats())).file_path
            assert path is not None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the auto flush, with no Flush message
                with h5py.File(path, "r") as f:
                    if f[STREAM]["value"].shape[0] == 40_000:
                        break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("no auto flush within 30 s")
        return path

    path = run(main())
    assert path.parent == tmp_path / "from_env"
    assert path.name.startswith("laser_run_")
    assert path.suffix == ".h5"
    assert _level(path) == 9
    with h5py.File(path, "r") as f:
        assert f.attrs["experiment"] == "laser_run"


def test_a_toml_file_with_an_env_override_picks_the_format(tmp_path: Path) -> None:
    toml = tmp_path / "daq.toml"
    toml.write_text(f'[storage]\ndefault_backend = "hdf5"\noutput_dir = "{tmp_path / "out"}"\n')
    config = StorageConfig.load(toml, environ={"DAQ_STORAGE_DEFAULT_BACKEND": "parquet"})

    async def main() -> Path | None:
        async with StorageActor(config) as actor:
            await actor.call(WriteBatch(meter_batches(1, rows=10)[0], STREAM))
            return (await actor.call(GetStats())).file_path

    path = run(main())
    assert path is not None
    assert path.parent == tmp_path / "out"
    assert pq.read_table(path / f"{STREAM}.parquet").num_rows == 10
