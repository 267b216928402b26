"""A real RunEngine, real simulated detectors, the DocumentWriter subscribed to it.

ophyd-async's ``SimBlobDetector`` writes its frames to an HDF5 file (SWMR) and emits
``stream_resource`` / ``stream_datum`` documents; ophyd's ``SynSignalWithRegistry``
(``ophyd.sim.img``'s class) writes one NPY file per frame and emits ``resource`` /
``datum`` documents. The frames the DocumentWriter copied into the run are compared with
the detector's own files (h5py, numpy) and read back with ``open_run``: step scans
(``bp.count``) and a fly scan with two detector frames per event.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.run_engine import RunEngineResult
from ophyd.sim import SynSignalWithRegistry
from ophyd_async.core import (
    StaticFilenameProvider,
    StaticPathProvider,
    TriggerInfo,
    init_devices,
)
from ophyd_async.sim import SimBlobDetector

from daq_storage.documents import DocumentWriter
from daq_storage.read import open_run

FRAME_SHAPE = (240, 320)  # ophyd_async.sim's blob frames


@pytest.fixture(scope="module")
def engine() -> RunEngine:
    # one RunEngine for the module (its event loop thread is bluesky's, shared)
    return RunEngine(call_returns_result=True)


def _blob_detector(directory: Path, name: str = "bdet") -> SimBlobDetector:
    directory.mkdir(parents=True, exist_ok=True)
    provider = StaticPathProvider(StaticFilenameProvider(name), directory)
    with init_devices():
        bdet = SimBlobDetector(provider)
    # init_devices names devices after their variable
    assert bdet.name == "bdet"
    return bdet


def _run_with(
    engine: RunEngine,
    writer: DocumentWriter,
    plan: Any,
    documents: list[tuple[str, dict[str, Any]]] | None = None,
) -> tuple[str, list[Path]]:
    """Run ``plan`` with ``writer`` subscribed (and ``documents`` collecting what the
    RunEngine emits); the run's uid and files."""
    tokens = [engine.subscribe(writer)]
    if documents is not None:
        tokens.append(engine.subscribe(lambda name, doc: documents.append((name, doc))))
    try:
        result = engine(plan)
    finally:
        for token in tokens:
            engine.unsubscribe(token)
    assert isinstance(result, RunEngineResult)  # call_returns_result=True
    assert result.exit_status == "success"
    uid = result.run_start_uids[0]
    return uid, list(writer.files[uid])


def test_blob_detector_frames_copied_into_the_run(engine: RunEngine, tmp_path: Path) -> None:
    bdet = _blob_detector(tmp_path / "detector")
    formats = ("hdf5", "zarr", "arrow", "parquet")
    writer = DocumentWriter(tmp_path / "runs", formats=formats)
    documents: list[tuple[str, dict[str, Any]]] = []
    _, paths = _run_with(engine, writer, bp.count([bdet], num=5), documents)
    kinds = [name for name, _ in documents]
    assert kinds.count("stream_resource") == 2  # bdet and bdet-sum
    assert kinds.count("stream_datum") == 10
    assert len(paths) == len(formats)
    with h5py.File(tmp_path / "detector" / "bdet.h5", "r") as source:
        expected = source["/entry/data/data"][()]
        sums = source["/entry/sum"][()]
    assert expected.shape == (5, *FRAME_SHAPE)

    for path in paths:
        with open_run(path) as run:
            frames = np.asarray(run.frames("primary.bdet")[:])
            assert frames.shape == (5, 1, *FRAME_SHAPE), path  # the data key's [1, y, x]
            assert frames.dtype == np.uint8
            np.testing.assert_array_equal(frames[:, 0], expected)
            np.testing.assert_array_equal(run.frames("primary.bdet").frame_numbers, range(1, 6))
            np.testing.assert_array_equal(np.asarray(run.frames("primary.bdet-sum")[:])[:, 0], sums)
            resources = run.table("external.resources").to_pylist()
            assert {r["data_key"] for r in resources} == {"bdet", "bdet-sum"}
            assert {r["mimetype"] for r in resources} == {"application/x-hdf5"}
            by_key = {r["data_key"]: json.loads(r["parameters"]) for r in resources}
            assert by_key["bdet"]["dataset"] == "/entry/data/data"
            datums = run.table("external.stream_datums").to_pylist()
            assert len(datums) == 10
            assert sorted((d["seq_num_start"], d["seq_num_stop"]) for d in datums if
                          d["data_key"] == "bdet") == [(i, i + 1) for i in range(1, 6)]  # fmt: skip

    # the run's HDF5 file, with h5py alone
    (hdf5,) = [path for path in paths if path.suffix == ".h5"]
    with h5py.File(hdf5, "r") as file:
        np.testing.assert_array_equal(file["primary.bdet/frames"][:, 0], expected)
        np.testing.assert_array_equal(file["primary.bdet/frame_number"], range(1, 6))


def test_blob_detector_two_runs_two_files(engine: RunEngine, tmp_path: Path) -> None:
    bdet = _blob_detector(tmp_path / "detector")
    writer = DocumentWriter(tmp_path / "runs", formats=("hdf5",))
    first, (first_path,) = _run_with(engine, writer, bp.count([bdet], num=2))
    with h5py.File(tmp_path / "detector" / "bdet.h5", "r") as source:
        first_frames = source["/entry/data/data"][()]
    second, (second_path,) = _run_with(engine, writer, bp.count([bdet], num=3))
    with h5py.File(tmp_path / "detector" / "bdet.h5", "r") as source:
        second_frames = source["/entry/data/data"][()]  # the detector rewrote its file
    assert first != second
    assert first_path != second_path
    for path, expected in ((first_path, first_frames), (second_path, second_frames)):
        with open_run(path) as run:
            frames = np.asarray(run.frames("primary.bdet")[:])
            np.testing.assert_array_equal(frames.reshape(expected.shape), expected)


def test_copy_external_off_keeps_references_only(engine: RunEngine, tmp_path: Path) -> None:
    bdet = _blob_detector(tmp_path / "detector")
    writer = DocumentWriter(tmp_path / "runs", formats=("hdf5",), copy_external=False)
    _, (path,) = _run_with(engine, writer, bp.count([bdet], num=2))
    with open_run(path) as run:
        assert len(run.table("external.stream_datums")) == 4
        assert "primary.bdet" not in run.streams or run.stream("primary.bdet").rows == 0


def test_ophyd_registry_signal_filled_from_npy_files(engine: RunEngine, tmp_path: Path) -> None:
    calls = itertools.count()  # the signal is also read once when it is made
    base = np.arange(6 * 8, dtype="f8").reshape(6, 8)
    img = SynSignalWithRegistry(
        func=lambda: base + 100 * next(calls), name="img", save_path=str(tmp_path / "npy")
    )
    (tmp_path / "npy").mkdir()
    writer = DocumentWriter(tmp_path / "runs", formats=("hdf5",))
    documents: list[tuple[str, dict[str, Any]]] = []
    _, (path,) = _run_with(engine, writer, bp.count([img], num=3), documents)
    (resource,) = [doc for name, doc in documents if name == "resource"]
    assert resource["spec"] == "NPY_SEQ"
    stem = Path(resource["root"]) / resource["resource_path"]
    expected = np.stack([np.load(f"{stem}_{i}.npy") for i in range(3)])
    assert len({float(frame[0, 0]) for frame in expected}) == 3  # three distinct frames
    datum_ids = [doc["datum_id"] for name, doc in documents if name == "datum"]
    with open_run(path) as run:
        frames = np.asarray(run.frames("primary.img")[:])
        np.testing.assert_array_equal(frames.reshape(expected.shape), expected)
        events = run.table("primary").to_pydict()
        assert events["img"] == datum_ids  # the event keeps the reference too
        datums = run.table("external.datums").to_pylist()
        assert [d["datum_id"] for d in datums] == datum_ids
        assert [json.loads(d["datum_kwargs"]) for d in datums] == [{"index": i} for i in range(3)]


def _fly(bdet: SimBlobDetector, info: TriggerInfo) -> Any:
    """A fly scan: prepare, kickoff, then collect while the detector completes."""
    yield from bps.stage(bdet)
    yield from bps.open_run()
    yield from bps.prepare(bdet, info, wait=True)
    yield from bps.declare_stream(bdet, name="primary", collect=True)
    yield from bps.kickoff(bdet, wait=True)
    yield from bps.collect_while_completing(flyers=[bdet], dets=[bdet], flush_period=0.05)
    yield from bps.close_run()
    yield from bps.unstage(bdet)


def test_fly_scan_with_two_frames_per_event(engine: RunEngine, tmp_path: Path) -> None:
    bdet = _blob_detector(tmp_path / "detector")
    writer = DocumentWriter(tmp_path / "runs", formats=("hdf5",))
    info = TriggerInfo(number_of_events=4, collections_per_event=2, livetime=0.01, deadtime=0.01)
    documents: list[tuple[str, dict[str, Any]]] = []
    _, (path,) = _run_with(engine, writer, _fly(bdet, info), documents)
    (descriptor,) = [doc for name, doc in documents if name == "descriptor"]
    assert descriptor["data_keys"]["bdet"]["shape"] == [2, *FRAME_SHAPE]
    with h5py.File(tmp_path / "detector" / "bdet.h5", "r") as source:
        expected = source["/entry/data/data"][()]
        sums = source["/entry/sum"][()]
    assert expected.shape == (8, *FRAME_SHAPE)
    with open_run(path) as run:
        frames = run.frames("primary.bdet")
        assert frames.shape == (4, 2, *FRAME_SHAPE)  # an event holds two of the detector's frames
        np.testing.assert_array_equal(np.asarray(frames[:]).reshape(expected.shape), expected)
        np.testing.assert_array_equal(frames.frame_numbers, range(1, 5))
        np.testing.assert_array_equal(
            np.asarray(run.frames("primary.bdet-sum")[:]), sums.reshape(4, 2)
        )


def test_tiff_runs_take_detector_images_as_pages(engine: RunEngine, tmp_path: Path) -> None:
    """ophyd-async declares an image key ``[k, y, x]``: a TIFF run keeps ``k`` pages per
    event, each with its event's seq_num; the detector's sum (shape ``[k]``) is no image
    and stays in the run's other formats."""
    bdet = _blob_detector(tmp_path / "detector")
    writer = DocumentWriter(tmp_path / "runs", formats=("hdf5", "tiff"))
    _, paths = _run_with(engine, writer, bp.count([bdet], num=3))
    with h5py.File(tmp_path / "detector" / "bdet.h5", "r") as source:
        expected = source["/entry/data/data"][()]
    (tiff,) = [path for path in paths if path.suffix != ".h5"]
    with open_run(tiff) as run:
        assert sorted(run.streams) == ["primary.bdet"]
        frames = run.frames("primary.bdet")
        assert frames.shape == (3, *FRAME_SHAPE)
        np.testing.assert_array_equal(np.asarray(frames[:]), expected)
        np.testing.assert_array_equal(frames.frame_numbers, [1, 2, 3])

    bdet = _blob_detector(tmp_path / "fly")
    writer = DocumentWriter(tmp_path / "fly_runs", formats=("tiff",))
    info = TriggerInfo(number_of_events=3, collections_per_event=2, livetime=0.01, deadtime=0.01)
    _, (tiff,) = _run_with(engine, writer, _fly(bdet, info))
    with h5py.File(tmp_path / "fly" / "bdet.h5", "r") as source:
        expected = source["/entry/data/data"][()]
    with open_run(tiff) as run:
        frames = run.frames("primary.bdet")
        assert frames.shape == (6, *FRAME_SHAPE)  # two pages per event
        np.testing.assert_array_equal(np.asarray(frames[:]), expected)
        np.testing.assert_array_equal(frames.frame_numbers, [1, 1, 2, 2, 3, 3])
