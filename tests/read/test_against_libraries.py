"""open_run against each format's own library: the same tables and frames written by
the real writers read back equal (h5py, pyarrow, polars, pyarrow.csv, zarr, tifffile).
This is the one place the project's reader is checked against independent readers; the
conformance suite then reads every writer through open_run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import tifffile
import zarr

from daq_storage.read import open_run
from tests.read.helpers import FRAMES, TABLES, TARGETS, frames_block, write_run

STREAMS = ["power", "rich"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One run per format, written once for the module."""
    root = tmp_path_factory.mktemp("libraries")
    out = {}
    for name, target in TARGETS.items():
        write_run(name, root / target)
        out[name] = root / target
    return out


def _plain(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with NaN as None and times as ints (what every reader agrees on)."""
    rows = []
    for row in table.to_pylist():
        clean = {}
        for key, value in row.items():
            if isinstance(value, float) and value != value:
                value = None
            if hasattr(value, "timestamp") and hasattr(value, "tzinfo"):
                value = round(value.timestamp() * 1e6)  # us: Python datetimes
            clean[key] = value
        rows.append(clean)
    return rows


# ------------------------------------------------------------------------------ tables
def _h5py_table(path: Path, stream: str) -> pa.Table:
    columns = {}
    with h5py.File(path, "r") as f:
        group = f[stream]
        for name in json.loads(group.attrs["schema"])["fields"]:
            dataset = group[name["name"]]
            values = dataset[()]
            if h5py.check_string_dtype(dataset.dtype) is not None:
                values = [v.decode() for v in values]
            elif dataset.attrs.get("encoding") == "dictionary":  # codes of categories
                categories = group[dataset.attrs["categories"]].asstr()[()]
                values = [str(categories[code]) for code in values]
            valid = group.get(f"{name['name']}.valid")
            mask = None if valid is None else ~valid[()]
            kind = pa.timestamp("ns", "UTC") if "calendar" in dataset.attrs else None
            columns[name["name"]] = pa.array(values, kind, mask=mask)
    return pa.table(columns)


def _zarr_table(path: Path, stream: str) -> pa.Table:
    group = zarr.open_group(path / stream, mode="r")
    columns = {}
    for name, array in group.arrays():
        if name.endswith(".valid"):
            continue
        values = np.asarray(array[:])
        if values.dtype.kind in "OTU":
            values = values.astype(object)
        valid = f"{name}.valid"
        mask = (
            None
            if valid not in group
            else ~np.asarray(zarr.open_array(path / stream / valid, mode="r")[:], bool)
        )
        kind = pa.timestamp("ns", "UTC") if "calendar" in array.attrs else None
        columns[name] = pa.array(values, kind, mask=mask)
    return pa.table(columns)


def _library_table(name: str, path: Path, stream: str) -> pa.Table:
    if name == "hdf5":
        return _h5py_table(path, stream)
    if name == "arrow":
        return pa.ipc.open_stream(path / f"{stream}.arrows").read_all()
    if name == "parquet":
        return pq.read_table(path / f"{stream}.parquet")
    if name == "csv":
        options = pacsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False)
        return pacsv.read_csv(path / f"{stream}.csv", convert_options=options)
    return _zarr_table(path, stream)


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("name", TABLES)
def test_tables_equal_the_library_readers(runs: dict[str, Path], name: str, stream: str):
    expected = _library_table(name, runs[name], stream)
    with open_run(runs[name]) as run:
        got = run.table(stream)
        assert run.streams[stream].rows == expected.num_rows
    assert got.column_names == expected.column_names
    assert _plain(got) == _plain(expected)
    if name in ("arrow", "parquet"):  # the same types too
        assert got.schema.remove_metadata() == expected.schema.remove_metadata()


@pytest.mark.parametrize("name", ["arrow", "parquet", "csv"])
def test_polars_equals_polars_reading_the_file(runs: dict[str, Path], name: str):
    path = runs[name]
    if name == "arrow":
        expected = pl.read_ipc_stream(path / "power.arrows")
    elif name == "parquet":
        expected = pl.read_parquet(path / "power.parquet")
    else:
        expected = pl.read_csv(path / "power.csv", try_parse_dates=True)
    with open_run(path) as run:
        got = run.polars("power")
    assert got.columns == expected.columns
    assert got["value"].to_list() == expected["value"].to_list()
    assert got["channel"].to_list() == expected["channel"].to_list()
    stamps = got["timestamp_ns"].dt.epoch("ns").to_list()
    assert stamps == expected["timestamp_ns"].dt.epoch("ns").to_list()


def test_every_table_format_reads_the_same_rows(runs: dict[str, Path]):
    """One reader, six layouts: the same values whichever format wrote them."""
    tables = {}
    for name in TABLES:
        with open_run(runs[name]) as run:
            tables[name] = _plain(run.table("rich"))
    for name in TABLES:
        assert tables[name] == tables["arrow"], name


# ------------------------------------------------------------------------------ frames
def _library_frames(name: str, path: Path) -> tuple[np.ndarray, list[int], list[int]]:
    if name == "hdf5":
        with h5py.File(path, "r") as f:
            g = f["camera"]
            return g["frames"][()], g["timestamp_ns"][()].tolist(), g["frame_number"][()].tolist()
    if name == "zarr":

        def read(array: str) -> np.ndarray:
            return np.asarray(zarr.open_array(path / "camera" / array, mode="r")[:])

        return read("frames"), read("timestamp_ns").tolist(), read("frame_number").tolist()
    if name == "tiff":
        with tifffile.TiffFile(path / "camera.tif") as tif:
            ids = [json.loads(tif.pages[i].description) for i in range(len(tif.pages))]  # type: ignore[union-attr]
            frames = tif.asarray()
        return frames, [i["timestamp_ns"] for i in ids], [i["frame_number"] for i in ids]
    table = (pa.ipc.open_stream(path / "camera.arrows").read_all() if name == "arrow"
             else pq.read_table(path / "camera.parquet"))  # fmt: skip
    frames = table.column("frame").combine_chunks().to_numpy_ndarray()
    stamps = table.column("timestamp_ns").cast(pa.int64()).to_pylist()
    return frames, stamps, table.column("frame_number").to_pylist()


@pytest.mark.parametrize("name", FRAMES)
def test_frames_equal_the_library_readers(runs: dict[str, Path], name: str):
    frames, stamps, numbers = _library_frames(name, runs[name])
    block = frames_block()
    np.testing.assert_array_equal(frames, block.frames)  # the library reads what was written
    with open_run(runs[name]) as run:
        got = run.frames("camera")
        assert got.shape == frames.shape
        assert got.dtype == frames.dtype
        np.testing.assert_array_equal(np.asarray(got), frames)
        np.testing.assert_array_equal(got[3:9:2], frames[3:9:2])
        np.testing.assert_array_equal(got[[7, 2, 2]], frames[[7, 2, 2]])
        assert got.timestamps_ns.tolist() == stamps
        assert got.frame_numbers.tolist() == numbers
        info = run.streams["camera"]
        assert (info.kind, info.rows, info.frame_shape) == ("frames", 12, frames.shape[1:])


@pytest.mark.parametrize("name", [*TABLES, "tiff"])
def test_metadata_equals_what_the_library_finds(runs: dict[str, Path], name: str):
    path = runs[name]
    stream = "camera" if name == "tiff" else "power"
    if name == "hdf5":
        with h5py.File(path, "r") as f:
            expected = f[stream].attrs["wavelength_nm"] if name != "tiff" else None
            file_level = f.attrs["experiment"]
    elif name == "zarr":
        expected = zarr.open_group(path / stream, mode="r").attrs["wavelength_nm"]
        file_level = zarr.open_group(path, mode="r").attrs["experiment"]
    elif name == "csv":
        document = json.loads((path / "metadata.json").read_text())
        expected = document["streams"][stream]["wavelength_nm"]
        file_level = document["file"]["experiment"]
    elif name == "tiff":
        with tifffile.TiffFile(path / "camera.tif") as tif:
            first = json.loads(tif.pages.first.description)["metadata"]
        expected, file_level = None, first["experiment"]
    elif name == "arrow":  # the documented recipe: schema metadata, then each batch's
        reader = pa.ipc.open_stream(path / "power.arrows")
        metadata = dict(reader.schema.metadata)
        for _, custom in reader.iter_batches_with_custom_metadata():
            metadata.update(custom or {})
        expected = json.loads(metadata[b"wavelength_nm"])
        file_level = json.loads(metadata[b"experiment"])
    else:
        schema = pq.read_schema(path / "power.parquet")
        expected = json.loads(schema.metadata[b"wavelength_nm"])
        file_level = json.loads(schema.metadata[b"experiment"])
    with open_run(path) as run:
        assert run.metadata["experiment"] == file_level == "readback"
        if expected is not None:
            assert run.streams[stream].metadata["wavelength_nm"] == expected == 633.0
