"""What the actor writes, read back with each format's own reader: seed 003's HDF5
layout point by point, the other table formats through the same actor, and batches in
both Arrow IPC formats and as Arrow objects."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest

from daq_storage.actor import (
    Flush,
    GetStats,
    SetInstrumentMetadata,
    SetMetadata,
    StorageActor,
    WriteBatch,
)
from daq_storage.sim import POWER_METER_SCHEMA
from tests.actor._helpers import STREAM, config, ipc_file, ipc_stream, meter_batches, run


def _write(tmp_path: Path, backend: str, payloads: list[object]) -> Path:
    async def main() -> Path:
        async with StorageActor(config(tmp_path, default_backend=backend)) as actor:
            await actor.call(SetMetadata("experiment_id", "EXP_001_2025-11-16"))
            for payload in payloads:
                await actor.call(WriteBatch(payload, STREAM))
            await actor.call(SetInstrumentMetadata(STREAM, "wavelength_nm", "633.0"))
            await actor.call(Flush())
            stats = await actor.call(GetStats())
        assert stats.file_path is not None
        return stats.file_path

    return run(main())


def test_hdf5_file_has_seed_003s_structure_point_by_point(tmp_path: Path) -> None:
    batches = meter_batches(3)
    before_ns = int(datetime.now().timestamp() * 1e9)
    path = _write(tmp_path, "hdf5", [ipc_stream(b) for b in batches])
    expected = pa.Table.from_batches(batches)
    # Named {experiment}_{date}_{time}_v{N}.h5 in output_dir.
    assert path.parent == tmp_path
    assert path.name.startswith("experiment_")
    assert path.name.endswith("_v1.h5")
    with h5py.File(path, "r") as f:
        # Root attributes: created_at (ISO 8601 text), created_timestamp_ns (u64),
        # application (text).
        created = f.attrs["created_at"]
        assert isinstance(created, str)
        assert datetime.fromisoformat(created).tzinfo is not None
        stamp = f.attrs["created_timestamp_ns"]
        assert stamp.dtype == np.uint64
        assert before_ns - 10**9 <= int(stamp) <= int(datetime.now().timestamp() * 1e9)
        assert abs(datetime.fromisoformat(created).timestamp() - int(stamp) / 1e9) < 1
        assert f.attrs["application"].startswith("daq-storage ")
        # Session metadata (SetMetadata) on the root.
        assert f.attrs["experiment_id"] == "EXP_001_2025-11-16"
        # A group per instrument, with instrument_id and created_at.
        assert list(f) == [STREAM]
        group = f[STREAM]
        assert isinstance(group, h5py.Group)
        assert group.attrs["instrument_id"] == STREAM
        datetime.fromisoformat(group.attrs["created_at"])
        # Instrument metadata (SetInstrumentMetadata) on the group.
        assert group.attrs["wavelength_nm"] == "633.0"
        # The Arrow schema as JSON on the group, each column's on its dataset.
        schema = json.loads(group.attrs["schema"])
        assert [field["name"] for field in schema["fields"]] == POWER_METER_SCHEMA.names
        # A dataset per column holding the column's values. Text with few distinct
        # values is stored as codes with a dataset of categories beside it (the HDF5
        # writer's choice, not seed 003's: see docs/actor.md).
        helpers = {name for name in group if name.endswith((".categories", ".valid"))}
        assert set(group) - helpers == set(POWER_METER_SCHEMA.names)
        for field in POWER_METER_SCHEMA:
            dataset = group[field.name]
            assert isinstance(dataset, h5py.Dataset)
            assert json.loads(dataset.attrs["schema"])["name"] == field.name
            assert dataset.shape == (expected.num_rows,)
        np.testing.assert_array_equal(group["value"][:], expected["value"].to_numpy())
        np.testing.assert_array_equal(
            group["timestamp_ns"][:], expected["timestamp_ns"].cast(pa.int64()).to_numpy()
        )
        assert _text(group, "channel") == expected["channel"].to_pylist()
        assert _text(group, "unit") == expected["unit"].to_pylist()


def _text(group: h5py.Group, column: str) -> list[str]:
    """A text column as a scientist reads it: variable-length strings, or codes into
    the categories dataset the column's ``categories`` attribute names."""
    dataset = group[column]
    if dataset.attrs.get("encoding") == "dictionary":
        categories = group[dataset.attrs["categories"]].asstr()[:]
        return [str(categories[code]) for code in dataset[:]]
    return [str(text) for text in dataset.asstr()[:]]


@pytest.mark.parametrize("fmt", ["stream", "file", "buffer", "record_batch", "table"])
def test_batches_in_either_ipc_format_or_as_arrow_objects(tmp_path: Path, fmt: str) -> None:
    batches = meter_batches(2, rows=500)
    pack = {
        "stream": ipc_stream,
        "file": ipc_file,
        "buffer": lambda b: pa.py_buffer(ipc_stream(b)),
        "record_batch": lambda b: b,
        "table": lambda b: pa.Table.from_batches([b]),
    }[fmt]
    path = _write(tmp_path, "hdf5", [pack(b) for b in batches])
    with h5py.File(path, "r") as f:
        values = f[STREAM]["value"][:]
    expected = np.concatenate([b["value"].to_numpy() for b in batches])
    np.testing.assert_array_equal(values, expected)


def test_an_ipc_message_of_several_batches_is_one_write(tmp_path: Path) -> None:
    batches = meter_batches(3, rows=100)
    table = pa.Table.from_batches(batches)  # three record batches in one IPC stream

    async def main() -> tuple[int, Path]:
        async with StorageActor(config(tmp_path)) as actor:
            await actor.call(WriteBatch(ipc_stream(table), STREAM))
            stats = await actor.call(GetStats())
        assert stats.file_path is not None
        return stats.batches_written, stats.file_path

    written, path = run(main())
    assert written == 1
    with h5py.File(path, "r") as f:
        assert f[STREAM]["value"].shape == (300,)


def test_parquet_through_the_same_actor(tmp_path: Path) -> None:
    batches = meter_batches(3)
    path = _write(tmp_path, "parquet", [ipc_stream(b) for b in batches])
    assert path.is_dir()  # a directory of one file per instrument
    table = pq.read_table(path / f"{STREAM}.parquet")
    assert table.column("value").to_pylist() == pa.Table.from_batches(batches)["value"].to_pylist()
    metadata = pq.read_schema(path / f"{STREAM}.parquet").metadata or {}
    assert json.loads(metadata[b"wavelength_nm"]) == "633.0"


def test_arrow_ipc_through_the_same_actor_read_by_polars(tmp_path: Path) -> None:
    batches = meter_batches(2)
    path = _write(tmp_path, "arrow", [ipc_file(b) for b in batches])
    files = sorted(path.iterdir())
    assert [f.name for f in files if not f.name.startswith(".")] == [f"{STREAM}.arrows"]
    frame = pl.read_ipc_stream(path / f"{STREAM}.arrows")
    assert frame.height == 2000
    assert frame["value"].to_list() == pa.Table.from_batches(batches)["value"].to_pylist()


def test_csv_and_zarr_through_the_same_actor(tmp_path: Path) -> None:
    import zarr

    batches = meter_batches(2, rows=200)
    csv_dir = _write(tmp_path / "csv", "csv", [ipc_stream(b) for b in batches])
    frame = pl.read_csv(csv_dir / f"{STREAM}.csv")
    assert frame.height == 400
    store = _write(tmp_path / "zarr", "zarr", [ipc_stream(b) for b in batches])
    group = zarr.open_group(store, mode="r")
    values = np.asarray(group[STREAM]["value"][:])  # type: ignore[index]
    np.testing.assert_array_equal(values, pa.Table.from_batches(batches)["value"].to_numpy())
