"""ExternalData, stream_resource / stream_datum: references recorded, and frames copied
from HDF5 and TIFF files (this project's writers' own included) into the sink, or a
DocumentError naming the document and the file."""

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import tifffile

from daq_storage.documents._external import ExternalData
from daq_storage.errors import DocumentError
from daq_storage.writers import Hdf5Writer, TiffWriter
from tests.documents.external import (
    HDF5,
    TIFF,
    RecordingSink,
    _descriptor,
    _frames,
    _h5,
    _seq,
    _stream,
)

# -- stream_resource / stream_datum ----------------------------------------------------


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
