"""Each writer through the conformance suite, read back with the reader a scientist uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr
import zarr

from tests.writers.conformance import WriterConformance


def _maybe_json(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


class TestHdf5(WriterConformance):
    writer_name = "hdf5"
    target = "run.h5"

    def read_table(self, path: Path, stream: str) -> pa.Table:
        columns = {}
        with h5py.File(path, "r") as f:
            group = f[stream]
            for name, dataset in group.items():
                if name.endswith(".valid"):
                    continue
                values = dataset[()]
                if h5py.check_string_dtype(dataset.dtype) is not None:
                    values = [v.decode() for v in values]
                columns[name] = values
        return pa.table(columns)

    def read_frames(self, path: Path, stream: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with h5py.File(path, "r") as f:
            g = f[stream]
            return g["frames"][()], g["timestamp_ns"][()], g["frame_number"][()]

    def read_metadata(self, path: Path, stream: str | None) -> dict[str, Any]:
        with h5py.File(path, "r") as f:
            target = f if stream is None else f[stream]
            return {k: _maybe_json(v) for k, v in target.attrs.items()}


class TestHdf5Blosc(TestHdf5):
    options: ClassVar[dict[str, Any]] = {"compression": "blosc-lz4", "frames_per_chunk": 2}


class TestArrow(WriterConformance):
    writer_name = "arrow"
    target = "run_arrow"

    def _read(self, path: Path, stream: str) -> pa.Table:
        with pa.OSFile(str(path / f"{stream}.arrows")) as source:
            return pa.ipc.open_stream(source).read_all()

    def read_table(self, path: Path, stream: str) -> pa.Table:
        return self._read(path, stream)

    def read_frames(self, path: Path, stream: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        table = self._read(path, stream)
        frames = table.column("frame").combine_chunks().to_numpy_ndarray()
        return (frames, table.column("timestamp_ns").to_numpy(),
                table.column("frame_number").to_numpy())  # fmt: skip

    def read_metadata(self, path: Path, stream: str | None) -> dict[str, Any]:
        name = stream or "power_meter_01"
        metadata = self._read(path, name).schema.metadata or {}
        return {k.decode(): _maybe_json(v) for k, v in metadata.items()}


class TestParquet(WriterConformance):
    writer_name = "parquet"
    target = "run_parquet"

    def read_table(self, path: Path, stream: str) -> pa.Table:
        return pl.read_parquet(path / f"{stream}.parquet").to_arrow()

    def read_frames(self, path: Path, stream: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        table = pq.read_table(path / f"{stream}.parquet")
        frames = table.column("frame").combine_chunks().to_numpy_ndarray()
        return (frames, table.column("timestamp_ns").to_numpy(),
                table.column("frame_number").to_numpy())  # fmt: skip

    def read_metadata(self, path: Path, stream: str | None) -> dict[str, Any]:
        metadata = pq.read_schema(path / f"{stream or 'power_meter_01'}.parquet").metadata or {}
        return {k.decode(): _maybe_json(v) for k, v in metadata.items()}


class TestCsv(WriterConformance):
    writer_name = "csv"
    target = "run_csv"
    frames_supported = False
    text_prefix = "s"

    def read_table(self, path: Path, stream: str) -> pa.Table:
        frame = pl.read_csv(path / f"{stream}.csv", infer_schema_length=None)
        # CSV cannot tell an empty string from a missing one; the writer has no nulls here.
        return frame.with_columns(pl.col(pl.String).fill_null("")).to_arrow()

    def read_metadata(self, path: Path, stream: str | None) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((path / "metadata.json").read_text())
        section: dict[str, Any] = (
            document["file"] if stream is None else document["streams"][stream]
        )
        return section


class TestZarr(WriterConformance):
    writer_name = "zarr"
    target = "run.zarr"
    options: ClassVar[dict[str, Any]] = {"frames_per_chunk": 2, "shard_frames": 4}
    file_size_limit_applies = False

    def read_table(self, path: Path, stream: str) -> pa.Table:
        dataset = xr.open_zarr(path, group=stream, consolidated=False)
        return pa.table({name: np.asarray(dataset[name].values) for name in dataset.data_vars})

    def read_frames(self, path: Path, stream: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dataset = xr.open_zarr(path, group=stream, consolidated=False)
        assert dataset["frames"].dims == ("frame", "y", "x")
        return (dataset["frames"].values, dataset["timestamp_ns"].values,
                dataset["frame_number"].values)  # fmt: skip

    def read_metadata(self, path: Path, stream: str | None) -> dict[str, Any]:
        group = zarr.open_group(path, mode="r")
        node = group if stream is None else group[stream]
        return dict(node.attrs)
