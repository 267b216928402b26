"""ExternalData, resource / datum / datum_page: references recorded, and the arrays of
files numpy, h5py and tifffile can read filled in (documents made with event-model's
compose helpers, files written with the real libraries)."""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from daq_storage.documents._external import ExternalData
from daq_storage.errors import DaqStorageError, DocumentError
from tests.documents.external import (
    RecordingSink,
    _frames,
    _h5,
    _sink_type_checks,
)

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
