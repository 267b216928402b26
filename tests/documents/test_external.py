"""ExternalData: resource / datum / stream_resource / stream_datum documents made with
event-model's compose helpers, against real files written with h5py, tifffile and numpy.

The sink here is a plain recorder of what ExternalData hands over (rows and frames), so
each test sees exactly what the run's writers would receive.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import event_model
import h5py
import numpy as np
import pytest
import tifffile

from daq_storage.documents._external import ExternalData, ExternalSink
from daq_storage.errors import DaqStorageError, DocumentError
from daq_storage.writers import Hdf5Writer, TiffWriter

HDF5 = "application/x-hdf5"
TIFF = "multipart/related;type=image/tiff"


class RecordingSink:
    """Keeps every reference row and every frame block it is given."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.frames: list[tuple[str, str, tuple[int, int], np.ndarray]] = []

    def record_reference(self, table: str, row: Mapping[str, Any]) -> None:
        assert table in ("resources", "datums", "stream_datums")
        for value in row.values():
            assert isinstance(value, (str, int, float, bool)), row
        self.rows.setdefault(table, []).append(dict(row))

    def write_external_frames(
        self, descriptor_uid: str, data_key: str, seq_nums: tuple[int, int], frames: np.ndarray
    ) -> None:
        assert frames.shape[0] == seq_nums[1] - seq_nums[0]
        self.frames.append((descriptor_uid, data_key, seq_nums, frames.copy()))


def _sink_type_checks(sink: RecordingSink) -> ExternalSink:
    return sink  # mypy: RecordingSink satisfies the protocol


@pytest.fixture
def run() -> event_model.ComposeRunBundle:
    return event_model.compose_run(metadata={"plan_name": "count"})


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


def _h5(path: Path, dataset: str, data: np.ndarray) -> Path:
    with h5py.File(path, "w") as file:
        file.create_dataset(dataset, data=data, chunks=(1, *data.shape[1:]))
    return path


def _frames(count: int, shape: tuple[int, ...] = (4, 5), dtype: str = "u2") -> np.ndarray:
    size = count * int(np.prod(shape))
    return np.arange(size, dtype=dtype).reshape(count, *shape)


def _descriptor(
    run: event_model.ComposeRunBundle, shapes: Mapping[str, list[int]]
) -> dict[str, Any]:
    data_keys = {
        key: {"source": "sim", "dtype": "array", "shape": shape, "external": "STREAM:"}
        for key, shape in shapes.items()
    }
    bundle = run.compose_descriptor(name="primary", data_keys=data_keys)
    return dict(bundle.descriptor_doc)


def _seq(start: int, stop: int) -> dict[str, int]:
    return {"start": start, "stop": stop}


# -- resource / datum ------------------------------------------------------------------


def test_references_recorded_without_copy(run: Any, sink: RecordingSink, tmp_path: Path) -> None:
    data = ExternalData(_sink_type_checks(sink), copy=False)
    resource = run.compose_resource(
        spec="AD_HDF5",
        root=str(tmp_path),
        resource_path="det.h5",
        resource_kwargs={"frame_per_point": 2},
    )
    data.resource(resource.resource_doc)
    datum = resource.compose_datum(datum_kwargs={"point_number": 0})
    data.datum(datum)
    assert sink.rows["resources"] == [
        {
            "uid": resource.resource_doc["uid"],
            "kind": "resource",
            "spec": "AD_HDF5",
            "root": str(tmp_path),
            "resource_path": "det.h5",
            "resource_kwargs": '{"frame_per_point": 2}',
            "path_semantics": "posix",
            "uri": "",
            "mimetype": "",
            "data_key": "",
            "parameters": "",
            "run_start": run.start_doc["uid"],
        }
    ]
    assert sink.rows["datums"] == [
        {
            "datum_id": datum["datum_id"],
            "resource": resource.resource_doc["uid"],
            "datum_kwargs": '{"point_number": 0}',
        }
    ]
    # the file does not even exist: without copy nothing is read
    assert data.fill(datum["datum_id"]) is None
    assert sink.frames == []


def test_npy_seq_datums_filled(run: Any, sink: RecordingSink, tmp_path: Path) -> None:
    images = _frames(3, dtype="f8")
    for i, image in enumerate(images):
        np.save(tmp_path / f"abc123_{i}.npy", image)
    data = ExternalData(sink, copy=True)
    resource = run.compose_resource(
        spec="NPY_SEQ", root=str(tmp_path), resource_path="abc123", resource_kwargs={}
    )
    data.resource(resource.resource_doc)
    ids = []
    for i in range(3):
        datum = resource.compose_datum(datum_kwargs={"index": i})
        data.datum(datum)
        ids.append(datum["datum_id"])
    for i, datum_id in enumerate(ids):
        np.testing.assert_array_equal(data.fill(datum_id), images[i])
    filled = data.fill(ids[1], shape=[1, 4, 5])
    assert filled is not None
    assert filled.shape == (1, 4, 5)
    with pytest.raises(DocumentError, match=r"shape is \[3, 3\]"):
        data.fill(ids[1], shape=[3, 3])


def test_ad_hdf5_datums_slice_frames_per_point(
    run: Any, sink: RecordingSink, tmp_path: Path
) -> None:
    frames = _frames(6)
    _h5(tmp_path / "det.h5", "/entry/data/data", frames)
    data = ExternalData(sink, copy=True)
    resource = run.compose_resource(
        spec="AD_HDF5",
        root=str(tmp_path),
        resource_path="det.h5",
        resource_kwargs={"frame_per_point": 2},
    )
    data.resource(resource.resource_doc)
    page = resource.compose_datum_page(datum_kwargs={"point_number": [0, 1, 2]})
    data.datum_page(page)
    assert [row["datum_kwargs"] for row in sink.rows["datums"]] == [
        '{"point_number": 0}',
        '{"point_number": 1}',
        '{"point_number": 2}',
    ]
    second = data.fill(page["datum_id"][1])
    np.testing.assert_array_equal(second, frames[2:4])  # (frame_per_point, y, x)
    third = data.fill(page["datum_id"][2], shape=[2, 4, 5])
    np.testing.assert_array_equal(third, frames[4:6])


def test_ad_tiff_datums(run: Any, sink: RecordingSink, tmp_path: Path) -> None:
    frames = _frames(3)
    for i, frame in enumerate(frames):
        tifffile.imwrite(tmp_path / f"img_{i:06d}.tiff", frame)
    data = ExternalData(sink, copy=True)
    resource = run.compose_resource(
        spec="AD_TIFF",
        root=str(tmp_path.parent),
        resource_path=tmp_path.name,
        resource_kwargs={"template": "%s%s_%6.6d.tiff", "filename": "img", "frame_per_point": 1},
    )
    data.resource(resource.resource_doc)
    datums = [resource.compose_datum(datum_kwargs={"point_number": i}) for i in range(3)]
    for datum in datums:
        data.datum(datum)
    for i, datum in enumerate(datums):
        np.testing.assert_array_equal(data.fill(datum["datum_id"]), frames[i])


def test_hdf5_and_tiff_specs(run: Any, sink: RecordingSink, tmp_path: Path) -> None:
    frames = _frames(4)
    _h5(tmp_path / "any.h5", "/scan/images", frames)
    _h5(tmp_path / "ad.h5", "/entry/data/data", frames)
    tifffile.imwrite(tmp_path / "one.tiff", frames[0])
    data = ExternalData(sink, copy=True)
    cases = [
        ("HDF5", "any.h5", {"key": "/scan/images"}, {"point_number": 3}, frames[3:4]),
        ("AD_HDF5_SWMR", "ad.h5", {"frame_per_point": 2}, {"point_number": 1}, frames[2:4]),
        ("TIFF", "one.tiff", {}, {}, frames[0]),
    ]
    for spec, name, resource_kwargs, datum_kwargs, expected in cases:
        resource = run.compose_resource(
            spec=spec, root=str(tmp_path), resource_path=name, resource_kwargs=resource_kwargs
        )
        data.resource(resource.resource_doc)
        datum = resource.compose_datum(datum_kwargs=datum_kwargs)
        data.datum(datum)
        np.testing.assert_array_equal(data.fill(datum["datum_id"]), expected)


def test_root_map_moves_a_resource(run: Any, sink: RecordingSink, tmp_path: Path) -> None:
    image = _frames(1)[0]
    np.save(tmp_path / "moved_0.npy", image)
    data = ExternalData(sink, copy=True, root_map={"/beamline/data": str(tmp_path)})
    resource = run.compose_resource(
        spec="NPY_SEQ", root="/beamline/data", resource_path="moved", resource_kwargs={}
    )
    data.resource(resource.resource_doc)
    datum = resource.compose_datum(datum_kwargs={"index": 0})
    data.datum(datum)
    np.testing.assert_array_equal(data.fill(datum["datum_id"]), image)
    assert sink.rows["resources"][0]["root"] == "/beamline/data"  # as the document says


def test_unknown_spec_is_recorded_not_filled(run: Any, sink: RecordingSink) -> None:
    data = ExternalData(sink, copy=True)
    resource = run.compose_resource(
        spec="AD_SPE", root="/nowhere", resource_path="x", resource_kwargs={}
    )
    data.resource(resource.resource_doc)
    datum = resource.compose_datum(datum_kwargs={"point_number": 0})
    data.datum(datum)
    assert data.fill(datum["datum_id"]) is None
    assert len(sink.rows["datums"]) == 1
    assert data.unread == {}


def test_unreadable_datum_file_is_not_filled(
    run: Any, sink: RecordingSink, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = ExternalData(sink, copy=True)
    resource = run.compose_resource(
        spec="AD_HDF5", root=str(tmp_path), resource_path="absent.h5", resource_kwargs={}
    )
    data.resource(resource.resource_doc)
    datum = resource.compose_datum(datum_kwargs={"point_number": 0})
    data.datum(datum)
    with caplog.at_level(logging.WARNING, logger="daq_storage.documents"):
        assert data.fill(datum["datum_id"]) is None
    assert "absent.h5" in data.unread[datum["datum_id"]]
    assert "absent.h5" in caplog.text


def test_malformed_and_unknown_datums(run: Any, sink: RecordingSink, tmp_path: Path) -> None:
    _h5(tmp_path / "det.h5", "/entry/data/data", _frames(2))
    data = ExternalData(sink, copy=True)
    resource = run.compose_resource(
        spec="AD_HDF5", root=str(tmp_path), resource_path="det.h5", resource_kwargs={}
    )
    data.resource(resource.resource_doc)
    with pytest.raises(DocumentError, match="arrived twice"):
        data.resource(resource.resource_doc)
    datum = resource.compose_datum(datum_kwargs={"frame": 0})  # AD_HDF5 wants point_number
    data.datum(datum)
    with pytest.raises(DocumentError, match=f"{datum['datum_id']}.*point_number"):
        data.fill(datum["datum_id"])
    with pytest.raises(DocumentError, match="never announced"):
        data.fill("no-such-datum")
    orphan = {"datum_id": "r/0", "resource": "no-such-resource", "datum_kwargs": {}}
    with pytest.raises(DocumentError, match="no-such-resource"):
        data.datum(orphan)
    with pytest.raises(DocumentError, match="'datum_kwargs' missing"):
        data.datum({"datum_id": "x/0", "resource": resource.resource_doc["uid"]})
    with pytest.raises(DocumentError, match="same length"):
        data.datum_page(
            {"resource": resource.resource_doc["uid"], "datum_id": ["a", "b"],
             "datum_kwargs": {"point_number": [0]}}
        )  # fmt: skip
    assert isinstance(DocumentError("x"), DaqStorageError)
    assert len(sink.rows["datums"]) == 1  # only the datum that was well formed


# -- stream_resource / stream_datum ----------------------------------------------------


def _stream(
    run: Any, path: Path, data_key: str, parameters: dict[str, Any], mimetype: str = HDF5
) -> Any:
    return run.compose_stream_resource(
        mimetype=mimetype, uri=path.absolute().as_uri(), data_key=data_key, parameters=parameters
    )


def test_hdf5_stream_frames_copied(run: Any, sink: RecordingSink, tmp_path: Path) -> None:
    frames = _frames(5)
    sums = frames.sum(axis=(1, 2))
    path = _h5(tmp_path / "det.h5", "/entry/data/data", frames)
    with h5py.File(path, "a") as file:
        file["/entry/sum"] = sums
    # ophyd-async's data keys: one frame per event, declared with a leading axis of 1
    descriptor = _descriptor(run, {"det": [1, 4, 5], "det-sum": [1]})
    data = ExternalData(sink, copy=True)
    data.descriptor(descriptor)
    image = _stream(run, path, "det", {"dataset": "/entry/data/data", "chunk_shape": [1, 4, 5]})
    total = _stream(run, path, "det-sum", {"dataset": "/entry/sum", "chunk_shape": [1024]})
    data.stream_resource(image.stream_resource_doc)
    data.stream_resource(total.stream_resource_doc)
    for start, stop in ((0, 2), (2, 5)):
        for bundle in (image, total):
            doc = bundle.compose_stream_datum(
                indices=_seq(start, stop),
                seq_nums=_seq(start + 1, stop + 1),
                descriptor=descriptor,
            )
            data.stream_datum(doc)
    uid = descriptor["uid"]
    assert [(d, k, s) for d, k, s, _ in sink.frames] == [
        (uid, "det", (1, 3)),
        (uid, "det-sum", (1, 3)),
        (uid, "det", (3, 6)),
        (uid, "det-sum", (3, 6)),
    ]
    images = np.concatenate([f for _, k, _, f in sink.frames if k == "det"])
    np.testing.assert_array_equal(images, frames[:, np.newaxis])
    assert images.dtype == np.uint16
    totals = np.concatenate([f for _, k, _, f in sink.frames if k == "det-sum"])
    np.testing.assert_array_equal(totals, sums[:, np.newaxis])
    rows = sink.rows["stream_datums"]
    assert rows[0] == {
        "uid": f"{image.stream_resource_doc['uid']}/0",
        "stream_resource": image.stream_resource_doc["uid"],
        "descriptor": uid,
        "data_key": "det",
        "indices_start": 0,
        "indices_stop": 2,
        "seq_num_start": 1,
        "seq_num_stop": 3,
    }
    resource_row = sink.rows["resources"][0]
    assert resource_row["kind"] == "stream_resource"
    assert resource_row["uri"] == path.absolute().as_uri()
    assert resource_row["mimetype"] == HDF5
    assert json.loads(resource_row["parameters"]) == {
        "dataset": "/entry/data/data",
        "chunk_shape": [1, 4, 5],
    }


def test_several_frames_per_event(run: Any, sink: RecordingSink, tmp_path: Path) -> None:
    frames = _frames(6)
    path = _h5(tmp_path / "burst.h5", "/entry/data/data", frames)
    descriptor = _descriptor(run, {"det": [3, 4, 5]})
    data = ExternalData(sink, copy=True)
    data.descriptor(descriptor)
    bundle = _stream(run, path, "det", {"dataset": "/entry/data/data", "chunk_shape": [1, 4, 5]})
    data.stream_resource(bundle.stream_resource_doc)
    doc = bundle.compose_stream_datum(
        indices=_seq(0, 2), seq_nums=_seq(1, 3), descriptor=descriptor
    )
    data.stream_datum(doc)
    (_, _, seq_nums, copied), = sink.frames  # fmt: skip
    assert seq_nums == (1, 3)
    np.testing.assert_array_equal(copied, frames.reshape(2, 3, 4, 5))


def test_stream_without_descriptor_and_with_multiplier(
    run: Any, sink: RecordingSink, tmp_path: Path
) -> None:
    frames = _frames(4)
    path = _h5(tmp_path / "det.h5", "/data", frames)
    data = ExternalData(sink, copy=True)  # the router never told it the descriptor
    plain = _stream(run, path, "det", {"dataset": "/data"})
    paired = _stream(run, path, "pairs", {"dataset": "/data", "multiplier": 2})
    data.stream_resource(plain.stream_resource_doc)
    data.stream_resource(paired.stream_resource_doc)
    data.stream_datum(plain.compose_stream_datum(indices=_seq(1, 3), seq_nums=_seq(2, 4)))
    data.stream_datum(paired.compose_stream_datum(indices=_seq(0, 2), seq_nums=_seq(1, 3)))
    np.testing.assert_array_equal(sink.frames[0][3], frames[1:3])
    np.testing.assert_array_equal(sink.frames[1][3], frames.reshape(2, 2, 4, 5))


def test_tiff_sequence_frames_copied(run: Any, sink: RecordingSink, tmp_path: Path) -> None:
    frames = _frames(4)
    for i, frame in enumerate(frames):
        tifffile.imwrite(tmp_path / f"det_{i:06d}.tiff", frame)
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    for i in range(2):  # two pages per file
        pages = frames[2 * i : 2 * i + 2]
        tifffile.imwrite(stacks / f"det_{i:06d}.tiff", pages, photometric="minisblack")
    descriptor = _descriptor(run, {"det": [1, 4, 5], "stacked": [1, 4, 5]})
    data = ExternalData(sink, copy=True)
    data.descriptor(descriptor)
    single = _stream(
        run, tmp_path, "det", {"template": "det_{:06d}.tiff", "chunk_shape": [1, 4, 5]}, TIFF
    )
    paged = _stream(
        run,
        stacks,
        "stacked",
        {"template": "%s%s_%6.6d.tiff", "filename": "det", "chunk_shape": [2, 4, 5]},
        TIFF,
    )
    for bundle in (single, paged):
        data.stream_resource(bundle.stream_resource_doc)
        data.stream_datum(
            bundle.compose_stream_datum(
                indices=_seq(1, 4), seq_nums=_seq(2, 5), descriptor=descriptor
            )
        )
    for _, _, seq_nums, copied in sink.frames:
        assert seq_nums == (2, 5)
        np.testing.assert_array_equal(copied, frames[1:4, np.newaxis])


def test_root_map_moves_a_stream_resource(run: Any, sink: RecordingSink, tmp_path: Path) -> None:
    frames = _frames(2)
    (tmp_path / "moved" / "scan").mkdir(parents=True)
    _h5(tmp_path / "moved" / "scan" / "det.h5", "/d", frames)
    data = ExternalData(sink, copy=True, root_map={"/beamline/data": str(tmp_path / "moved")})
    bundle = run.compose_stream_resource(
        mimetype=HDF5,
        uri="file://localhost/beamline/data/scan/det.h5",
        data_key="det",
        parameters={"dataset": "/d"},
    )
    data.stream_resource(bundle.stream_resource_doc)
    data.stream_datum(bundle.compose_stream_datum(indices=_seq(0, 2), seq_nums=_seq(1, 3)))
    np.testing.assert_array_equal(sink.frames[0][3], frames)
    assert sink.rows["resources"][0]["uri"] == "file://localhost/beamline/data/scan/det.h5"


def test_streams_of_daq_storage_writers_copied(
    run: Any, sink: RecordingSink, tmp_path: Path
) -> None:
    # this project's writers describe their frame streams as stream resources too
    frames = _frames(5, (6, 8))
    with Hdf5Writer(tmp_path / "ours.h5") as writer:
        writer.write_frames("cam", frames)
        writer.flush()
        from_hdf5 = writer.describe("cam").stream_resource()
    with TiffWriter(tmp_path / "tiff") as writer:
        writer.write_frames("cam", frames)
        writer.flush()
        from_tiff = writer.describe("cam").stream_resource()
    assert (from_hdf5["mimetype"], from_tiff["mimetype"]) == (HDF5, "image/tiff")
    descriptor = _descriptor(run, {"h5": [6, 8], "tif": [6, 8]})
    data = ExternalData(sink, copy=True)
    data.descriptor(descriptor)
    for key, resource in (("h5", from_hdf5), ("tif", from_tiff)):
        bundle = run.compose_stream_resource(data_key=key, **resource)
        data.stream_resource(bundle.stream_resource_doc)
        data.stream_datum(
            bundle.compose_stream_datum(
                indices=_seq(1, 5), seq_nums=_seq(1, 5), descriptor=descriptor
            )
        )
    assert [(key, seq) for _, key, seq, _ in sink.frames] == [("h5", (1, 5)), ("tif", (1, 5))]
    for *_, copied in sink.frames:
        np.testing.assert_array_equal(copied, frames[1:5])


def test_stream_continued_over_parts(run: Any, sink: RecordingSink, tmp_path: Path) -> None:
    frames = _frames(7)
    _h5(tmp_path / "a.h5", "/cam/frames", frames[:3])
    _h5(tmp_path / "b.h5", "/cam__part0002/frames", frames[3:])
    tifffile.imwrite(tmp_path / "cam.tif", frames[:4], photometric="minisblack")
    tifffile.imwrite(tmp_path / "cam__part0002.tif", frames[4:], photometric="minisblack")
    hdf5_parts = [
        {"uri": (tmp_path / "a.h5").as_uri(), "key": "/cam/frames", "first": 0},
        {"uri": (tmp_path / "b.h5").as_uri(), "key": "/cam__part0002/frames", "first": 3},
    ]
    tiff_parts = [
        {"uri": (tmp_path / "cam.tif").as_uri(), "key": "", "first": 0},
        {"uri": (tmp_path / "cam__part0002.tif").as_uri(), "key": "", "first": 4},
    ]
    data = ExternalData(sink, copy=True)
    bundles = [
        _stream(run, tmp_path / "a.h5", "h5", {"dataset": "/cam/frames", "parts": hdf5_parts}),
        _stream(run, tmp_path / "cam.tif", "tif", {"parts": tiff_parts}, "image/tiff"),
    ]
    for bundle in bundles:
        data.stream_resource(bundle.stream_resource_doc)
        for start, stop in ((0, 2), (2, 7)):  # the second range spans both parts
            data.stream_datum(
                bundle.compose_stream_datum(indices=_seq(start, stop), seq_nums=_seq(start, stop))
            )
    for key in ("h5", "tif"):
        copied = np.concatenate([f for _, k, _, f in sink.frames if k == key])
        np.testing.assert_array_equal(copied, frames)
    broken = _stream(run, tmp_path / "a.h5", "x", {"dataset": "/d", "parts": [{"uri": 3}]})
    data.stream_resource(broken.stream_resource_doc)
    with pytest.raises(DocumentError, match="'parts' must list local parts"):
        data.stream_datum(broken.compose_stream_datum(indices=_seq(0, 1), seq_nums=_seq(0, 1)))
    short = _stream(run, tmp_path / "cam.tif", "tif", {"parts": tiff_parts}, "image/tiff")
    data.stream_resource(short.stream_resource_doc)
    with pytest.raises(DocumentError, match=r"cam__part0002\.tif holds 3 pages, pages 0:4"):
        data.stream_datum(short.compose_stream_datum(indices=_seq(4, 8), seq_nums=_seq(4, 8)))


def test_unknown_mimetype_and_remote_uri_recorded_only(
    run: Any, sink: RecordingSink, tmp_path: Path
) -> None:
    data = ExternalData(sink, copy=True)
    csv = _stream(run, tmp_path / "x.csv", "det", {}, "text/csv;header=absent")
    remote = run.compose_stream_resource(
        mimetype=HDF5,
        uri="https://example.org/det.h5",
        data_key="det",
        parameters={"dataset": "/d"},
    )
    for bundle in (csv, remote):
        data.stream_resource(bundle.stream_resource_doc)
        data.stream_datum(bundle.compose_stream_datum(indices=_seq(0, 3), seq_nums=_seq(1, 4)))
    assert len(sink.rows["stream_datums"]) == 2
    assert sink.frames == []


def test_stream_errors_name_the_document_and_file(
    run: Any, sink: RecordingSink, tmp_path: Path
) -> None:
    path = _h5(tmp_path / "det.h5", "/entry/data/data", _frames(3))
    descriptor = _descriptor(run, {"det": [1, 4, 5]})
    data = ExternalData(sink, copy=True)
    data.descriptor(descriptor)
    bundle = _stream(run, path, "det", {"dataset": "/entry/data/data"})
    data.stream_resource(bundle.stream_resource_doc)
    good = bundle.compose_stream_datum(
        indices=_seq(0, 2), seq_nums=_seq(1, 3), descriptor=descriptor
    )
    data.stream_datum(good)
    before = (len(sink.frames), len(sink.rows["stream_datums"]))

    short = bundle.compose_stream_datum(
        indices=_seq(2, 5), seq_nums=_seq(3, 6), descriptor=descriptor
    )
    with pytest.raises(DocumentError) as info:
        data.stream_datum(short)
    assert short["uid"] in str(info.value)
    assert str(path) in str(info.value)
    assert "holds 3 rows" in str(info.value)

    missing = _stream(run, tmp_path / "gone.h5", "det", {"dataset": "/entry/data/data"})
    data.stream_resource(missing.stream_resource_doc)
    doc = missing.compose_stream_datum(
        indices=_seq(0, 1), seq_nums=_seq(6, 7), descriptor=descriptor
    )
    with pytest.raises(DocumentError, match=f"{doc['uid']}.*gone.h5"):
        data.stream_datum(doc)

    no_dataset = _stream(run, path, "det", {"chunk_shape": [1]})
    data.stream_resource(no_dataset.stream_resource_doc)
    with pytest.raises(DocumentError, match="no 'dataset'"):
        data.stream_datum(
            no_dataset.compose_stream_datum(
                indices=_seq(0, 1), seq_nums=_seq(6, 7), descriptor=descriptor
            )
        )
    wrong_key = _stream(run, path, "other", {"dataset": "/entry/data/data"})
    data.stream_resource(wrong_key.stream_resource_doc)
    with pytest.raises(DocumentError, match="no data key 'other'"):
        data.stream_datum(
            wrong_key.compose_stream_datum(
                indices=_seq(0, 1), seq_nums=_seq(6, 7), descriptor=descriptor
            )
        )
    with pytest.raises(DocumentError, match="differ in length"):
        data.stream_datum(
            bundle.compose_stream_datum(
                indices=_seq(0, 2), seq_nums=_seq(6, 7), descriptor=descriptor
            )
        )
    with pytest.raises(DocumentError, match="not announced"):
        data.stream_datum({**good, "uid": "u", "stream_resource": "nope"})
    with pytest.raises(DocumentError, match="indices"):
        data.stream_datum({**good, "uid": "v", "indices": {"start": 3, "stop": 1}})
    with pytest.raises(DocumentError, match="'seq_nums' missing"):
        data.stream_datum({k: v for k, v in good.items() if k != "seq_nums"})
    assert (len(sink.frames), len(sink.rows["stream_datums"])) == before


def test_copy_off_records_stream_references_only(
    run: Any, sink: RecordingSink, tmp_path: Path
) -> None:
    data = ExternalData(sink, copy=False)
    bundle = _stream(run, tmp_path / "never-written.h5", "det", {"dataset": "/d"})
    data.stream_resource(bundle.stream_resource_doc)
    data.stream_datum(bundle.compose_stream_datum(indices=_seq(0, 4), seq_nums=_seq(1, 5)))
    assert sink.rows["stream_datums"][0]["indices_stop"] == 4
    assert sink.frames == []


# -- a detector still writing its file -------------------------------------------------

_WRITER = """
import sys, h5py, numpy as np
path, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
frames = np.arange(count * 20, dtype="u2").reshape(count, 4, 5)
if mode == "swmr":
    f = h5py.File(path, "w", libver="latest")
    d = f.create_dataset("/entry/data/data", shape=(0, 4, 5), maxshape=(None, 4, 5),
                         dtype="u2", chunks=(1, 4, 5))
    f.swmr_mode = True
    for i in range(count):
        d.resize(i + 1, axis=0)
        d[i] = frames[i]
        d.flush()
else:
    f = h5py.File(path, "w")
    f["/entry/data/data"] = frames
    f.flush()
print("written", flush=True)
sys.stdin.readline()
f.close()
"""


@pytest.fixture
def writing_file(tmp_path: Path) -> Iterator[Any]:
    """Start a real process that writes frames and keeps its file open until told."""
    processes: list[subprocess.Popen[str]] = []

    def start(mode: str, count: int) -> Path:
        path = tmp_path / f"{mode}.h5"
        process = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), mode, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        assert process.stdout.readline() == "written\n"
        return path

    yield start
    for process in processes:
        process.communicate("\n", timeout=30)  # closes both pipes
        assert process.returncode == 0


def test_frames_read_while_a_swmr_writer_holds_the_file(
    run: Any, sink: RecordingSink, writing_file: Any
) -> None:
    path = writing_file("swmr", 3)
    descriptor = _descriptor(run, {"det": [1, 4, 5]})
    data = ExternalData(sink, copy=True)
    data.descriptor(descriptor)
    bundle = _stream(run, path, "det", {"dataset": "/entry/data/data"})
    data.stream_resource(bundle.stream_resource_doc)
    data.stream_datum(
        bundle.compose_stream_datum(indices=_seq(0, 3), seq_nums=_seq(1, 4), descriptor=descriptor)
    )
    np.testing.assert_array_equal(sink.frames[0][3], np.arange(60, dtype="u2").reshape(3, 1, 4, 5))
    # a frame the writer has not flushed yet: a clear error, nothing recorded
    ahead = bundle.compose_stream_datum(
        indices=_seq(3, 4), seq_nums=_seq(4, 5), descriptor=descriptor
    )
    with pytest.raises(DocumentError, match=f"{ahead['uid']}.*holds 3 rows"):
        data.stream_datum(ahead)
    assert len(sink.frames) == 1
    assert len(sink.rows["stream_datums"]) == 1


def test_swmr_parameter_decides_how_the_file_is_opened(
    run: Any, sink: RecordingSink, writing_file: Any
) -> None:
    path = writing_file("swmr", 2)
    data = ExternalData(sink, copy=True)
    bundle = _stream(run, path, "det", {"dataset": "/entry/data/data", "swmr": False})
    data.stream_resource(bundle.stream_resource_doc)
    doc = bundle.compose_stream_datum(indices=_seq(0, 2), seq_nums=_seq(1, 3))
    # told not to use SWMR, the reader cannot open a file a SWMR writer holds
    with pytest.raises(DocumentError, match=f"{doc['uid']}.*cannot open HDF5 file"):
        data.stream_datum(doc)
    assert sink.frames == []


def test_file_locked_by_a_writer_is_a_clear_error(
    run: Any, sink: RecordingSink, writing_file: Any
) -> None:
    path = writing_file("plain", 2)
    data = ExternalData(sink, copy=True)
    bundle = _stream(run, path, "det", {"dataset": "/entry/data/data"})
    data.stream_resource(bundle.stream_resource_doc)
    doc = bundle.compose_stream_datum(indices=_seq(0, 2), seq_nums=_seq(1, 3))
    with pytest.raises(DocumentError, match=f"{doc['uid']}.*cannot open HDF5 file .*plain.h5"):
        data.stream_datum(doc)
    assert sink.frames == []


# -- docs/documents.md, section "External data" ------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "documents.md"
_SECTION = re.compile(r"^## External data.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _external_blocks() -> list[str]:
    section = _SECTION.search(DOC.read_text())
    assert section is not None, "docs/documents.md has no '## External data' section"
    return _BLOCK.findall(section.group(0))


def test_docs_external_snippets_check_their_results() -> None:
    blocks = _external_blocks()
    assert len(blocks) == 2
    for block in blocks:
        assert "assert" in block, f"a block of the external data section checks nothing:\n{block}"


def test_docs_external_snippets_run_as_written(tmp_path: Path) -> None:
    # in order, in one fresh interpreter, in a scratch directory (as a reader would)
    program = "\n".join(
        f"print('--- block {i}', flush=True)\n{block}" for i, block in enumerate(_external_blocks())
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DAQ_STORAGE_")}
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    last = re.findall(r"--- block (\d+)", result.stdout)
    assert result.returncode == 0, (
        f"docs/documents.md external data block {last[-1] if last else '?'} failed:\n"
        f"{result.stderr}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.h5", "external_runs", "npy"]
