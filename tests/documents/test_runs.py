"""Real bluesky runs (a RunEngine, ophyd's simulated devices) through the document
writer into every format, read back with h5py, polars, pyarrow, tifffile, xarray and
``open_run``, and compared to the documents the RunEngine emitted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import h5py
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import tifffile
import xarray as xr
from bluesky import RunEngine
from bluesky.plans import count, grid_scan, scan
from ophyd.sim import SynAxis, SynSignal, det, det1, motor, motor1, motor2

from daq_storage.documents import DocumentWriter, Hdf5DocumentWriter, ParquetDocumentWriter
from daq_storage.errors import ConfigError
from daq_storage.read import list_runs, open_run
from tests.documents.conftest import Document, events, of_kind

Record = Callable[..., list[Document]]
TABLE_FORMATS = ("hdf5", "zarr", "arrow", "parquet", "csv")


def _by_format(writer: DocumentWriter, uid: str) -> dict[str, Path]:
    return {spec.name: path for spec, path in zip(writer.formats, writer.files[uid], strict=True)}


def _listed(value: Any) -> Any:
    """As JSON keeps it: arrays as lists (tuples already are)."""
    return value.tolist()


def _check_table(path: Path, docs: list[Document], keys: list[str]) -> None:
    """The ``primary`` stream of ``path`` (through open_run) holds every event of the
    documents: seq_num, time, each key's values and timestamps."""
    evs = events(docs)
    with open_run(path) as run:
        table = run.polars("primary")
        assert table["seq_num"].to_list() == [e["seq_num"] for e in evs]
        assert table["time"].to_list() == [e["time"] for e in evs]
        for key in keys:
            assert table[key].to_list() == [e["data"][key] for e in evs], key
            assert table[f"{key}__timestamp"].to_list() == [e["timestamps"][key] for e in evs]
        start = of_kind(docs, "start")[0]
        stop = of_kind(docs, "stop")[0]
        assert run.metadata["uid"] == start["uid"]
        assert run.metadata["plan_name"] == start["plan_name"]
        assert run.metadata["exit_status"] == stop["exit_status"]
        assert run.metadata["num_events"] == stop["num_events"]
        stream = run.streams["primary"].metadata
        descriptor = of_kind(docs, "descriptor")[0]
        for key in keys:
            assert stream["data_keys"][key]["source"] == descriptor["data_keys"][key]["source"]
        assert stream["descriptors"][0]["uid"] == descriptor["uid"]
        as_json = json.loads(json.dumps(descriptor["configuration"], default=_listed))
        assert stream["descriptors"][0]["configuration"] == as_json


def test_count_in_every_table_format(record: Record, tmp_path: Path) -> None:
    writer = DocumentWriter(tmp_path, TABLE_FORMATS, batch_size=16)
    docs = record(count([det], num=50), writer)
    uid = of_kind(docs, "start")[0]["uid"]
    paths = _by_format(writer, uid)
    for path in paths.values():
        _check_table(path, docs, ["det"])
    evs = events(docs)
    values = [e["data"]["det"] for e in evs]
    # Each format's own reader, as a scientist opens it.
    with h5py.File(paths["hdf5"], "r") as f:
        assert f["primary/det"][()].tolist() == values
        assert f["primary/seq_num"][()].tolist() == list(range(1, 51))
        assert f.attrs["plan_name"] == "count"
    assert pl.read_parquet(paths["parquet"] / "primary.parquet")["det"].to_list() == values
    assert pl.read_ipc_stream(paths["arrow"] / "primary.arrows")["det"].to_list() == values
    assert pl.read_csv(paths["csv"] / "primary.csv")["det"].to_list() == pytest.approx(values)
    group = xr.open_zarr(paths["zarr"], group="primary")
    assert group["det"].values.tolist() == values
    # The default name: the plan and scan id, then the naming convention.
    assert paths["hdf5"].name.startswith(f"count_{of_kind(docs, 'start')[0]['scan_id']}_")
    assert paths["hdf5"].name.endswith("_v1.h5")


@pytest.mark.parametrize("fmt", ["hdf5", "zarr", "arrow", "parquet", "tiff"])
def test_scan_with_an_image_detector(record: Record, cam: SynSignal, tmp_path: Path,
                                     fmt: str) -> None:  # fmt: skip
    writer = DocumentWriter(tmp_path, fmt, batch_size=2)
    docs = record(scan([det, cam], motor, -1, 1, 5), writer)
    (path,) = writer.files[of_kind(docs, "start")[0]["uid"]]
    evs = events(docs)
    frames = np.stack([e["data"]["cam"] for e in evs])
    assert frames.shape == (5, 3, 4)
    if fmt != "tiff":
        _check_table(path, docs, ["det", "motor"])
    if fmt == "hdf5":
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(f["primary.cam/frames"][()], frames)
            assert f["primary.cam/frame_number"][()].tolist() == [1, 2, 3, 4, 5]
            assert f["primary/cam__timestamp"][()].tolist() == [e["timestamps"]["cam"] for e in evs]
    elif fmt in ("arrow", "parquet"):  # a tensor column of the event table
        with open_run(path) as run:
            column = run.table("primary", ["cam"])["cam"].combine_chunks()
        np.testing.assert_array_equal(column.to_numpy_ndarray(), frames)
        if fmt == "parquet":
            table = pq.read_table(path / "primary.parquet")
            np.testing.assert_array_equal(table["cam"].combine_chunks().to_numpy_ndarray(), frames)
    elif fmt == "tiff":
        np.testing.assert_array_equal(tifffile.imread(path / "primary.cam.tif"), frames)
    if fmt in ("hdf5", "zarr", "tiff"):
        with open_run(path) as run:
            np.testing.assert_array_equal(run.frames("primary.cam")[:], frames)
            assert run.streams["primary.cam"].metadata["data_key"]["shape"] == [3, 4]


def test_grid_scan_lands_as_one_nd_array_with_dimension_names(
    record: Record, cam: SynSignal, tmp_path: Path
) -> None:
    """Seed 001's nested scan: wavelength x position x y x x, in Zarr, as xarray shows it;
    the snaking axis puts each frame where its motors were."""
    wavelength, position = SynAxis(name="wavelength"), SynAxis(name="position")
    spectrum = SynSignal(func=lambda: np.linspace(0.0, 1.0, 5), name="spectrum")
    writer = DocumentWriter(tmp_path, ("zarr", "hdf5"), batch_size=4)
    plan = grid_scan([cam, spectrum], wavelength, 500, 600, 3, position, 0, 1, 2,
                     snake_axes=True)  # fmt: skip
    docs = record(plan, writer)
    paths = _by_format(writer, of_kind(docs, "start")[0]["uid"])
    dataset = xr.open_zarr(paths["zarr"])
    array = dataset["cam"]
    assert array.dims == ("wavelength", "position", "y", "x")
    assert array.shape == (3, 2, 3, 4)
    # The motors' positions are xarray coordinates: select a frame by where it was taken.
    assert dataset["wavelength"].values.tolist() == [500.0, 550.0, 600.0]
    assert dataset["position"].values.tolist() == [0.0, 1.0]
    for e in events(docs):
        at = array.sel(wavelength=e["data"]["wavelength"], position=e["data"]["position"])
        np.testing.assert_array_equal(at.values, e["data"]["cam"])
    assert dataset.attrs["plan_name"] == "grid_scan"
    # A second array key: its own dims where a name would clash (x of 4 and x of 5).
    assert dataset["spectrum"].dims == ("wavelength", "position", "spectrum_x")
    assert dataset["spectrum"].shape == (3, 2, 5)
    # Every frame in acquisition order too (HDF5 and Zarr alike).
    frames = np.stack([e["data"]["cam"] for e in events(docs)])
    with h5py.File(paths["hdf5"], "r") as f:
        np.testing.assert_array_equal(f["primary.cam/frames"][()], frames)
    with open_run(paths["zarr"]) as run:
        np.testing.assert_array_equal(run.frames("primary.cam")[:], frames)


def test_two_runs_in_a_row_get_their_own_files(record: Record, tmp_path: Path) -> None:
    writer = Hdf5DocumentWriter(tmp_path, batch_size=8)
    first = record(count([det], num=3), writer)
    second = record(scan([det1], motor1, 0, 1, 4), writer)
    (a,) = writer.files[of_kind(first, "start")[0]["uid"]]
    (b,) = writer.files[of_kind(second, "start")[0]["uid"]]
    assert a != b
    assert writer.open_runs == []
    _check_table(a, first, ["det"])
    _check_table(b, second, ["det1", "motor1"])
    with pytest.raises(ConfigError, match="several runs"):
        open_run(tmp_path)
    base = b.name.split("_v")[0]
    with open_run(tmp_path, run=base) as run:
        assert run.streams["primary"].rows == 4


def test_runs_in_several_directory_formats_are_listed_as_one_run_each(
    record: Record, tmp_path: Path
) -> None:
    """Arrow IPC, Parquet and CSV runs are directories: each format of a run takes the
    next version of the run's one name (as the Recorder names its outputs), so
    list_runs and open_run see one run in three formats, not three runs."""
    writer = DocumentWriter(tmp_path, formats=("arrow", "parquet", "csv"))
    first = record(count([det], num=3), writer)
    second = record(count([det1], num=5), writer)
    listings = list_runs(tmp_path)
    assert len(listings) == 2
    for docs, listing in zip((first, second), listings, strict=True):
        uid = of_kind(docs, "start")[0]["uid"]
        assert listing.formats == ("arrow", "csv", "parquet")
        assert sorted((p for paths in listing.outputs.values() for p in paths), key=str) == sorted(
            writer.files[uid]
        )
        for fmt in listing.formats:
            with open_run(tmp_path, run=listing.name, format=fmt) as run:
                assert run.table("primary").num_rows == len(of_kind(docs, "event"))
                assert run.metadata["uid"] == uid


def test_a_failed_run_is_stored_with_its_exit_status(record: Record, tmp_path: Path) -> None:
    def failing() -> Any:
        yield from bps.trigger_and_read([det])
        yield from bps.trigger_and_read([det])
        raise RuntimeError("the sample fell off")

    writer = ParquetDocumentWriter(tmp_path)
    with pytest.raises(RuntimeError, match="fell off"):
        record(bpp.run_wrapper(failing(), md={"sample": "Si"}), writer)
    (path,) = writer.files[next(iter(writer.files))]
    with open_run(path) as run:
        assert run.metadata["exit_status"] == "fail"
        assert "fell off" in run.metadata["reason"]
        assert run.metadata["sample"] == "Si"
        assert run.streams["primary"].rows == 2


def test_baseline_readings_are_their_own_stream(RE: RunEngine, record: Record,
                                                tmp_path: Path) -> None:  # fmt: skip
    from bluesky.preprocessors import SupplementalData

    supplemental = SupplementalData(baseline=[motor1, motor2])
    RE.preprocessors.append(supplemental)
    try:
        writer = DocumentWriter(tmp_path, ("hdf5", "csv"))
        docs = record(count([det], num=4), writer)
    finally:
        RE.preprocessors.remove(supplemental)
    baseline = events(docs, "baseline")
    assert len(baseline) == 2  # before and after
    for path in writer.files[of_kind(docs, "start")[0]["uid"]]:
        with open_run(path) as run:
            assert set(run.streams) == {"primary", "baseline"}
            table = run.polars("baseline")
            assert table["motor1"].to_list() == [e["data"]["motor1"] for e in baseline]
            assert table["motor2__timestamp"].to_list() == [
                e["timestamps"]["motor2"] for e in baseline
            ]
            assert run.polars("primary").height == 4


def test_csv_keeps_scalars_beside_a_format_holding_the_images(
    record: Record, cam: SynSignal, tmp_path: Path
) -> None:
    writer = DocumentWriter(tmp_path, ("csv", "hdf5"))
    docs = record(count([det, cam], num=3), writer)
    csv_path, h5_path = writer.files[of_kind(docs, "start")[0]["uid"]]
    table = pl.read_csv(csv_path / "primary.csv")
    assert "cam" not in table.columns
    assert table["det"].to_list() == pytest.approx([e["data"]["det"] for e in events(docs)])
    assert "cam__timestamp" in table.columns
    with h5py.File(h5_path, "r") as f:
        assert f["primary.cam/frames"].shape == (3, 3, 4)


@pytest.mark.parametrize("copy", [True, False])
def test_external_images_are_copied_in_or_referenced(record: Record, tmp_path: Path,
                                                     copy: bool) -> None:  # fmt: skip
    """ophyd's ``img`` saves each frame to a .npy file and emits resource / datum
    documents; the frames copied in equal what event-model's Filler reads from them."""
    from event_model import Filler
    from ophyd.sim import NumpySeqHandler, img

    writer = DocumentWriter(tmp_path, ("hdf5", "parquet"), copy_external=copy)
    docs = record(count([img], num=3), writer)
    with Filler({"NPY_SEQ": NumpySeqHandler}, inplace=False) as filler:
        filled = [filler(name, doc)[1] for name, doc in docs]
    expected = np.stack([d["data"]["img"] for d in filled if "descriptor" in d and "seq_num" in d])
    datum_ids = [e["data"]["img"] for e in events(docs)]
    for path in writer.files[of_kind(docs, "start")[0]["uid"]]:
        with open_run(path) as run:
            assert run.polars("primary")["img"].to_list() == datum_ids
            datums = run.polars("external.datums")
            assert datums["datum_id"].to_list() == datum_ids
            resources = run.polars("external.resources")
            assert resources["spec"].to_list() == ["NPY_SEQ"]
            if copy:
                np.testing.assert_array_equal(run.frames("primary.img")[:], expected)
                assert run.frames("primary.img").frame_numbers.tolist() == [1, 2, 3]
            else:
                assert "primary.img" not in run.streams


def test_events_filled_beforehand_keep_their_data_and_datum_ids(
    record: Record, tmp_path: Path
) -> None:
    """Documents that went through event-model's Filler first (the image in the event,
    the datum id in ``filled``): stored as frames, the ids kept, nothing read again."""
    from event_model import Filler
    from ophyd.sim import NumpySeqHandler, img

    docs = record(count([img], num=2))
    with Filler({"NPY_SEQ": NumpySeqHandler}, inplace=False) as filler:
        filled = [filler(name, doc) for name, doc in docs]
    writer = DocumentWriter(tmp_path, "hdf5", copy_external=False)
    for name, doc in filled:
        writer(name, doc)
    evs = [doc for name, doc in filled if name == "event"]
    (path,) = writer.files[of_kind(docs, "start")[0]["uid"]]
    with open_run(path) as run:
        np.testing.assert_array_equal(
            run.frames("primary.img")[:], np.stack([e["data"]["img"] for e in evs])
        )
        assert run.polars("primary")["img"].to_list() == [e["filled"]["img"] for e in evs]
