"""Documents made with event-model's compose helpers: event pages, descriptors that
repeat a name, interleaved runs, the seeds' one-argument ``consume_document``, file-name
templates, and every malformed or out-of-order document refused by name while earlier
runs stay readable."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import event_model
import h5py
import numpy as np
import pytest

from daq_storage.documents import (
    ArrowDocumentWriter,
    CsvDocumentWriter,
    DocumentWriter,
    Hdf5DocumentWriter,
    ParquetDocumentWriter,
    TiffDocumentWriter,
    ZarrDocumentWriter,
    document_kind,
)
from daq_storage.errors import ConfigError, DaqStorageError, DocumentError
from daq_storage.read import open_run

KEYS = {
    "x": {"dtype": "number", "shape": [], "source": "sim:x", "units": "mm"},
    "n": {"dtype": "integer", "shape": [], "source": "sim:n"},
    "label": {"dtype": "string", "shape": [], "source": "sim:label"},
}
IMAGE = {"img": {"dtype": "array", "dtype_numpy": "<u2", "shape": [2, 3], "source": "sim:img",
                 "dims": ["row", "col"]}}  # fmt: skip


def _page(descriptor: Any, n: int, offset: int = 0) -> dict[str, Any]:
    now = time.time()
    data = {
        "x": [0.5 * (i + offset) for i in range(n)],
        "n": [i + offset for i in range(n)],
        "label": [f"p{i + offset}" for i in range(n)],
    }
    stamps = {k: [now + i for i in range(n)] for k in data}
    seq = [offset + i + 1 for i in range(n)]
    times = [now + i for i in range(n)]
    page: dict[str, Any] = descriptor.compose_event_page(
        data=data, timestamps=stamps, seq_num=seq, time=times
    )
    return page


def _run(when: float | None = None, **md: Any) -> Any:
    return event_model.compose_run(time=when, metadata={"plan_name": "manual", "scan_id": 7, **md})


def test_event_pages_and_events_mix_in_one_stream(tmp_path: Path) -> None:
    bundle = _run()
    desc = bundle.compose_descriptor(name="primary", data_keys=KEYS)
    writer = DocumentWriter(tmp_path, ("hdf5", "parquet"), batch_size=64)
    writer("start", bundle.start_doc)
    writer("descriptor", desc.descriptor_doc)
    pages = [_page(desc, 100, 0), _page(desc, 100, 101)]
    writer("event_page", pages[0])
    event = desc.compose_event(
        data={"x": 50.0, "n": 100, "label": "one"},
        timestamps={"x": 1.0, "n": 2.0, "label": 3.0},
        seq_num=101,
    )
    writer("event", event)
    writer("event_page", pages[1])
    writer("stop", bundle.compose_stop())
    expected_x = pages[0]["data"]["x"] + [50.0] + pages[1]["data"]["x"]
    expected_n = pages[0]["data"]["n"] + [100] + pages[1]["data"]["n"]
    for path in writer.files[bundle.start_doc["uid"]]:
        with open_run(path) as run:
            table = run.polars("primary")
            assert table["seq_num"].to_list() == list(range(1, 202))
            assert table["x"].to_list() == expected_x
            assert table["n"].to_list() == expected_n  # integer stays integer
            assert str(table["n"].dtype) == "Int64"
            assert table["label"][100] == "one"
            assert table["n__timestamp"][100] == 2.0
            assert run.streams["primary"].metadata["data_keys"]["x"]["units"] == "mm"
            assert run.metadata["exit_status"] == "success"


def test_a_second_descriptor_of_one_name_continues_the_stream(tmp_path: Path) -> None:
    bundle = _run()
    first = bundle.compose_descriptor(name="primary", data_keys=KEYS,
                                      configuration={"det": {"data": {"gain": 1}}})  # fmt: skip
    writer = ParquetDocumentWriter(tmp_path, batch_size=4)
    writer("start", bundle.start_doc)
    writer("descriptor", first.descriptor_doc)
    writer("event_page", _page(first, 3))
    # Bluesky sends a new descriptor of the same name when a configuration changes.
    second = bundle.compose_descriptor(name="primary", data_keys=KEYS,
                                       configuration={"det": {"data": {"gain": 2}}})  # fmt: skip
    writer("descriptor", second.descriptor_doc)
    writer("event_page", _page(second, 2, offset=3))
    writer("stop", bundle.compose_stop())
    (path,) = writer.files[bundle.start_doc["uid"]]
    with open_run(path) as run:
        assert run.streams["primary"].rows == 5
        descriptors = run.streams["primary"].metadata["descriptors"]
        assert [d["uid"] for d in descriptors] == [
            first.descriptor_doc["uid"], second.descriptor_doc["uid"]
        ]  # fmt: skip
        assert [d["first_seq_num"] for d in descriptors] == [1, 4]
        assert descriptors[1]["configuration"] == {"det": {"data": {"gain": 2}}}


def test_interleaved_runs_are_routed_by_uid(tmp_path: Path) -> None:
    a, b = _run(sample="a"), _run(sample="b")
    writer = DocumentWriter(tmp_path, "hdf5", file_template="{sample}")
    writer("start", a.start_doc)
    writer("start", b.start_doc)
    da = a.compose_descriptor(name="primary", data_keys=KEYS)
    db = b.compose_descriptor(name="primary", data_keys=KEYS)
    writer("descriptor", da.descriptor_doc)
    writer("descriptor", db.descriptor_doc)
    writer("event_page", _page(db, 2))
    writer("event_page", _page(da, 5))
    assert sorted(writer.open_runs) == sorted([a.start_doc["uid"], b.start_doc["uid"]])
    writer("stop", b.compose_stop())
    writer("stop", a.compose_stop())
    (path_a,) = writer.files[a.start_doc["uid"]]
    (path_b,) = writer.files[b.start_doc["uid"]]
    assert path_a.name.startswith("a_")
    assert path_b.name.startswith("b_")
    with h5py.File(path_a, "r") as fa, h5py.File(path_b, "r") as fb:
        assert len(fa["primary/x"]) == 5
        assert len(fb["primary/x"]) == 2
        assert fa.attrs["sample"] == "a"


def test_the_seeds_one_argument_consume_document(tmp_path: Path) -> None:
    """ArrowDocumentWriter(directory, batch_size) and consume_document(doc) (seed 001)."""
    bundle = _run()
    desc = bundle.compose_descriptor(name="primary", data_keys=KEYS)
    event = desc.compose_event(data={"x": 1.5, "n": 3, "label": "a"},
                               timestamps={"x": 1.0, "n": 1.0, "label": 1.0})  # fmt: skip
    page = _page(desc, 3, offset=1)
    stop = bundle.compose_stop()
    docs = [bundle.start_doc, desc.descriptor_doc, event, page, stop]
    assert [document_kind(d) for d in docs] == [
        "start",
        "descriptor",
        "event",
        "event_page",
        "stop",
    ]
    writer = ArrowDocumentWriter(tmp_path, 1024)
    for doc in docs:
        writer.consume_document(doc)
    with open_run(writer.files[bundle.start_doc["uid"]][0]) as run:
        assert run.polars("primary")["x"].to_list() == [1.5, 0.5, 1.0, 1.5]
    with pytest.raises(DocumentError, match="cannot tell the kind"):
        writer.consume_document({"what": "is this"})
    with pytest.raises(DocumentError, match="needs the document"):
        writer.consume_document("start")


def test_array_keys_in_every_format(tmp_path: Path) -> None:
    frames = np.arange(4 * 6, dtype=np.uint16).reshape(4, 2, 3)
    for cls in (Hdf5DocumentWriter, ZarrDocumentWriter, ArrowDocumentWriter,
                ParquetDocumentWriter, TiffDocumentWriter):  # fmt: skip
        bundle = _run()
        desc = bundle.compose_descriptor(name="primary", data_keys=IMAGE)
        writer = cls(tmp_path / cls.format, batch_size=3)
        writer("start", bundle.start_doc)
        writer("descriptor", desc.descriptor_doc)
        for frame in frames:
            writer("event", desc.compose_event(data={"img": frame}, timestamps={"img": 1.0}))
        writer("stop", bundle.compose_stop())
        with open_run(writer.files[bundle.start_doc["uid"]][0]) as run:
            if cls.format in ("arrow", "parquet"):
                column = run.table("primary", ["img"])["img"].combine_chunks()
                got = column.to_numpy_ndarray()
            else:
                got = run.frames("primary.img")[:]
        np.testing.assert_array_equal(got, frames, err_msg=cls.format)


def test_csv_alone_refuses_array_keys_by_name(tmp_path: Path) -> None:
    bundle = _run()
    desc = bundle.compose_descriptor(name="primary", data_keys={**KEYS, **IMAGE})
    writer = CsvDocumentWriter(tmp_path)
    writer("start", bundle.start_doc)
    with pytest.raises(DocumentError, match=r"array data keys \['img'\].*csv cannot hold"):
        writer("descriptor", desc.descriptor_doc)
    writer.close()


def test_file_template_and_versions(tmp_path: Path) -> None:
    writer = DocumentWriter(tmp_path, "hdf5", file_template="{sample}-{plan_name}")
    names = []
    for _ in range(2):  # same sample, same second: _v1 then _v2, nothing overwritten
        bundle = _run(when=1_800_000_000.0, sample="Si 111")
        writer("start", bundle.start_doc)
        writer("stop", bundle.compose_stop())
        names.append(writer.files[bundle.start_doc["uid"]][0].name)
    assert names[0].startswith("Si_111-manual_")
    assert names[0].endswith("_v1.h5")
    assert names[1].endswith("_v2.h5")
    with pytest.raises(DocumentError, match=r"cannot be filled.*sample"):
        DocumentWriter(tmp_path, "hdf5", file_template="{sample}")("start", _run().start_doc)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"formats": ("nope",)}, "unknown writer"),
        ({"formats": ()}, "each format once"),
        ({"formats": ("hdf5", "hdf5")}, "each format once"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"file_template": "{}"}, "names a start-document key"),
        ({"file_template": "{oops"}, "not a valid template"),
        ({"writer_options": {"parquet": {}}}, "not in formats"),
        ({"writer_options": {"hdf5": {"no_such_option": 1}}}, "no_such_option"),
        ({"copy_external": "yes"}, "copy_external"),
        ({"flush_interval": -1}, "flush_interval"),
        ({"flush_interval": float("nan")}, "flush_interval"),
    ],
)
def test_bad_configuration_is_refused(tmp_path: Path, options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DocumentWriter(tmp_path, **options)


class TestRefusedDocuments:
    """Each refusal is a DocumentError (a DaqStorageError and a ValueError) naming the
    document's kind and uid; the run goes on, and earlier runs stay readable."""

    @pytest.fixture
    def writer(self, tmp_path: Path) -> Any:
        writer = DocumentWriter(tmp_path, ("hdf5", "arrow"))
        earlier = _run()
        desc = earlier.compose_descriptor(name="primary", data_keys=KEYS)
        writer("start", earlier.start_doc)
        writer("descriptor", desc.descriptor_doc)
        writer("event_page", _page(desc, 3))
        writer("stop", earlier.compose_stop())
        paths = writer.files[earlier.start_doc["uid"]]
        yield writer
        writer.close()
        for path in paths:  # the run before the refusals: whole
            with open_run(path) as run:
                assert run.polars("primary")["x"].to_list() == [0.0, 0.5, 1.0]

    @pytest.fixture
    def bundle(self, writer: Any) -> Any:
        bundle = _run()
        writer("start", bundle.start_doc)
        return bundle

    def _refused(self, writer: Any, name: str, doc: Any, match: str) -> DocumentError:
        with pytest.raises(DocumentError, match=match) as info:
            writer(name, doc)
        assert isinstance(info.value, DaqStorageError)
        assert isinstance(info.value, ValueError)
        if isinstance(doc, dict) and "uid" in doc and isinstance(doc["uid"], str):
            assert doc["uid"] in str(info.value)
        return info.value

    def test_event_before_its_descriptor(self, writer: Any, bundle: Any) -> None:
        desc = bundle.compose_descriptor(name="primary", data_keys=KEYS)
        event = desc.compose_event(data={"x": 1.0, "n": 1, "label": "a"},
                                   timestamps={"x": 1.0, "n": 1.0, "label": 1.0})  # fmt: skip
        self._refused(writer, "event", event, "event document .* unknown descriptor")
        self._refused(
            writer, "event_page", _page(desc, 2), "event_page document .* unknown descriptor"
        )
        writer("descriptor", desc.descriptor_doc)  # then the run goes on
        writer("event", event)
        writer("stop", bundle.compose_stop())

    def test_missing_and_unknown_data_keys(self, writer: Any, bundle: Any) -> None:
        desc = bundle.compose_descriptor(name="primary", data_keys=KEYS)
        writer("descriptor", desc.descriptor_doc)
        event = desc.compose_event(data={"x": 1.0, "n": 1, "label": "a"},
                                   timestamps={"x": 1.0, "n": 1.0, "label": 1.0})  # fmt: skip
        missing = {**event, "data": {"x": 1.0, "n": 1}, "timestamps": {"x": 1.0, "n": 1.0}}
        self._refused(writer, "event", missing, r"missing data keys \['label'\]")
        extra = {
            **event,
            "data": {**event["data"], "y": 1},
            "timestamps": {**event["timestamps"], "y": 1},
        }
        self._refused(writer, "event", extra, r"unknown data keys \['y'\]")
        self._refused(writer, "event", {**event, "data": {**event["data"], "x": "text"}}, "'x'")
        page = _page(desc, 3)
        page["data"]["n"] = [1, 2]
        self._refused(writer, "event_page", page, "must hold 3 values")

    def test_wrong_shape(self, writer: Any, bundle: Any) -> None:
        desc = bundle.compose_descriptor(name="primary", data_keys=IMAGE)
        writer("descriptor", desc.descriptor_doc)
        event = desc.compose_event(
            data={"img": np.zeros((3, 2), np.uint16)}, timestamps={"img": 1.0}
        )
        self._refused(writer, "event", event, r"shape \[2, 3\].* shape \[3, 2\]")

    def test_malformed_documents_fail_event_models_schema(self, writer: Any, bundle: Any) -> None:
        self._refused(writer, "start", {"uid": "u-1"}, "start document .* schema.*'time'")
        self._refused(writer, "descriptor", {"uid": "d-1", "time": 1.0, "run_start": "x"},
                      "descriptor document .* schema")  # fmt: skip
        self._refused(writer, "nonsense", {"uid": "n-1"}, "unknown document name")

    def test_stop_or_descriptor_of_an_unknown_run(self, writer: Any, bundle: Any) -> None:
        other = _run()
        self._refused(writer, "stop", other.compose_stop(), "stop document .* not started")
        desc = other.compose_descriptor(name="primary", data_keys=KEYS)
        self._refused(writer, "descriptor", desc.descriptor_doc, "not started")
        stop = bundle.compose_stop()
        writer("stop", stop)
        self._refused(writer, "stop", {**stop, "uid": "stop-2"}, "already stopped")

    def test_a_changed_schema_under_one_name(self, writer: Any, bundle: Any) -> None:
        writer(
            "descriptor", bundle.compose_descriptor(name="primary", data_keys=KEYS).descriptor_doc
        )
        other = bundle.compose_descriptor(name="primary", data_keys=IMAGE, validate=False)
        other = other.descriptor_doc
        self._refused(writer, "descriptor", other, "must describe the same keys")

    def test_a_start_uid_twice(self, writer: Any, bundle: Any) -> None:
        self._refused(writer, "start", bundle.start_doc, "already started")


@pytest.mark.parametrize("fmt", ["hdf5", "zarr", "arrow", "parquet", "csv"])
def test_every_event_readable_while_the_run_goes_on(tmp_path: Path, fmt: str) -> None:
    """``flush_interval=0``: each event is flushed, and a reader sees it before the stop;
    ``close()`` without a stop leaves the run readable, without an exit status."""
    bundle = _run()
    desc = bundle.compose_descriptor(name="primary", data_keys=KEYS)
    with DocumentWriter(tmp_path, fmt, flush_interval=0) as writer:
        writer("start", bundle.start_doc)
        writer("descriptor", desc.descriptor_doc)
        (path,) = writer.files[bundle.start_doc["uid"]]
        for i in range(3):
            event = desc.compose_event(data={"x": float(i), "n": i, "label": "a"},
                                       timestamps={"x": 1.0, "n": 1.0, "label": 1.0})  # fmt: skip
            writer("event", event)
            with open_run(path) as run:
                assert run.streams["primary"].rows == i + 1
        writer("event", event | {"uid": "last", "seq_num": 4})
    assert writer.open_runs == []
    with open_run(path) as run:
        assert run.streams["primary"].rows == 4
        assert "exit_status" not in run.metadata
