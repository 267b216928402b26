"""HDF5 names: column names that are not safe HDF5 link names, columns that would share a
dataset, file and stream metadata that must not land on a stream's datasets; every
refusal comes before anything is created."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import h5py
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.errors import InvalidName, SchemaMismatch, UnsupportedData
from daq_storage.writers import Hdf5Writer


def _tree(path: Path) -> dict[str, list[str]]:
    """Every group of the file and what it holds."""
    tree: dict[str, list[str]] = {}
    with h5py.File(path, "r") as f:
        tree["/"] = sorted(f)
        f.visititems(lambda name, item: tree.update({name: sorted(item)})
                     if isinstance(item, h5py.Group) else None)  # fmt: skip
    return tree


def test_column_names_are_escaped_never_paths(tmp_path: Path):
    """``/evil`` stays in its stream, ``a/b`` is no group, ``.`` is a name; the schema
    keeps every original name, which ``unquote`` gives back from the dataset's."""
    path = tmp_path / "names.h5"
    stored = {"/evil": "%2Fevil", "a/b": "a%2Fb", ".": "%2E", "..": "..", "50%": "50%25",
              "%2F": "%252F", "ok": "ok"}  # fmt: skip
    names = list(stored)
    batch = pa.RecordBatch.from_arrays([pa.array([i, i + 1]) for i in range(len(names))],
                                       names=names)  # fmt: skip
    with Hdf5Writer(path) as writer:
        writer.write_batch("s", batch)
        writer.write_batch("s", batch)
    tree = _tree(path)
    assert tree["/"] == ["s"]
    assert tree["s"] == sorted(stored.values())
    with h5py.File(path, "r") as f:
        group = f["s"]
        for i, name in enumerate(names):
            assert unquote(stored[name]) == name
            assert list(group[stored[name]][:]) == [i, i + 1, i, i + 1], name
        assert [field["name"] for field in json.loads(group.attrs["schema"])["fields"]] == names


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        (pa.RecordBatch.from_arrays([pa.array([1])], names=["a\x00b"]), InvalidName, "NUL"),
        (pa.RecordBatch.from_arrays([pa.array([1])], names=[""]), InvalidName, "empty name"),
        (pa.RecordBatch.from_arrays([pa.array([1]), pa.array([2])], names=["x", "x"]),
         SchemaMismatch, "'x' appears twice"),
        (pa.RecordBatch.from_arrays([pa.array([{"b": 1}]), pa.array([2])], names=["a", "a.b"]),
         SchemaMismatch, "'a.b' appears twice"),
        (pa.RecordBatch.from_arrays([pa.array([1, None]), pa.array([True, False])],
                                    names=["x", "x.valid"]),
         SchemaMismatch, "'x.valid' would be stored where column 'x' keeps its null mask"),
        (pa.RecordBatch.from_arrays([pa.array([1]), pa.array([2])], names=["ok", "x\x00"]),
         InvalidName, "NUL"),
    ],
    ids=["nul", "empty", "duplicate", "struct-field-vs-column", "mask-clash", "second-bad"],
)  # fmt: skip
def test_bad_column_names_are_refused_before_anything_is_made(
    tmp_path: Path, batch: pa.RecordBatch, error: type[Exception], match: str
):
    path = tmp_path / "bad.h5"
    with Hdf5Writer(path) as writer:
        with pytest.raises(error, match=match) as info:
            writer.write_batch("s", batch)
        assert "stream 's'" in str(info.value)
        writer.write_batch("other", pa.record_batch({"v": [1.0]}))  # the writer goes on
    assert _tree(path) == {"/": ["other"], "other": ["v"]}


def test_a_column_on_another_columns_mask_is_refused_in_a_batch_and_parted_across(
    tmp_path: Path,
):
    """A batch holding both ``x`` (which may get nulls any time) and ``x.valid`` is
    refused; ``x`` after an earlier batch's ``x.valid`` (or the other way round) starts a
    new part, where the name is free."""
    path = tmp_path / "later.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch("a", pa.record_batch({"x": [1, 2]}))
        for call in (writer.check_batch, writer.write_batch):
            with pytest.raises(SchemaMismatch, match="null mask"):
                call("a", pa.record_batch({"x": [3], "x.valid": [True]}))
        writer.write_batch("b", pa.record_batch({"x.valid": [True]}))
        assert writer.check_batch("b", pa.record_batch({"x": [0.5]})).kind == "new_columns"
        writer.write_batch("b", pa.record_batch({"x": pa.array([None, 1.0])}))
        writer.write_batch("a", pa.record_batch({"x": pa.array([None, 4])}))  # a real mask
        parts = writer.describe("b").parts
    assert [(part.key, part.first) for part in parts] == [("/b", 0), ("/b__part0002", 1)]
    with h5py.File(path, "r") as f:
        assert list(f["a/x"][:]) == [1, 2, 0, 4]
        assert list(f["a/x.valid"][:]) == [True, True, False, True]
        assert sorted(f["b"]) == ["x.valid"]
        assert list(f["b/x.valid"][:]) == [True]
        assert sorted(f["b__part0002"]) == ["x", "x.valid"]
        assert list(f["b__part0002/x.valid"][:]) == [False, True]
        assert f["b__part0002/x"][1] == 1.0
        assert json.loads(f["b"].attrs["parts"]) == [
            {"key": "/b", "first": 0}, {"key": "/b__part0002", "first": 1}]  # fmt: skip


@pytest.mark.parametrize("struct_first", [True, False])
def test_a_struct_field_and_a_column_of_one_name_go_to_parts_across_batches(
    tmp_path: Path, struct_first: bool
):
    """Field ``b`` of struct ``a`` and a column ``a.b`` in different batches would share
    a dataset: the later batch starts a new part (each part's schema says which it
    holds); in one batch they are refused, naming the column."""
    path = tmp_path / "struct.h5"
    struct = pa.record_batch({"a": pa.array([{"b": 1}, {"b": 2}])})
    flat = pa.record_batch({"a.b": pa.array([10, 20])})
    first, second = (struct, flat) if struct_first else (flat, struct)
    with Hdf5Writer(path) as writer:
        writer.write_batch("s", first)
        writer.write_batch("s", second)
        writer.write_batch("s", second)  # the part goes on
        both = pa.RecordBatch.from_arrays([struct.column(0), flat.column(0)], ["a", "a.b"])
        with pytest.raises(SchemaMismatch) as info:
            writer.check_batch("t", both)
        message = str(info.value)
        assert "stream 't'" in message
        assert "column 'a.b' appears twice" in message
        writer.flush()
        assert writer.visible("s") == writer.accepted("s") == 6
    firsts = [1, 2] if struct_first else [10, 20]
    seconds = [10, 20] if struct_first else [1, 2]
    with h5py.File(path, "r") as f:
        assert sorted(f["s"]) == sorted(f["s__part0002"]) == ["a.b"]
        assert list(f["s/a.b"][:]) == firsts
        assert list(f["s__part0002/a.b"][:]) == seconds * 2
        assert (f["s__part0002"].attrs["part_of"], f["s__part0002"].attrs["first"]) == ("s", 2)
        names = [
            [field["name"] for field in json.loads(f[group].attrs["schema"])["fields"]]
            for group in ("s", "s__part0002")
        ]
        assert names == ([["a"], ["a.b"]] if struct_first else [["a.b"], ["a"]])


def test_no_stream_takes_the_metadata_groups(tmp_path: Path):
    """Sanitised stream names never start with ``_``: a stream named ``_metadata`` is
    the group ``metadata``, and the large-value groups stay apart."""
    path = tmp_path / "reserved.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch("_metadata", pa.record_batch({"v": [7]}))
        writer.write_batch("_stream_metadata", pa.record_batch({"w": [8]}))
        writer.set_metadata("v", "y" * 70_000)
        writer.set_metadata("w", "y" * 70_000, stream="_stream_metadata")
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["_metadata", "_stream_metadata", "metadata", "stream_metadata"]
        assert list(f["metadata/v"][:]) == [7]
        assert list(f["stream_metadata/w"][:]) == [8]
        assert sorted(f["_stream_metadata"]) == ["stream_metadata"]


def test_large_metadata_never_lands_on_stream_data(tmp_path: Path):
    path = tmp_path / "meta.h5"
    big, bigger = "y" * 70_000, "z" * 80_000
    with Hdf5Writer(path) as writer:
        writer.write_batch("metadata", pa.record_batch({"x": [1, 2, 3]}))
        writer.write_batch("s", pa.record_batch({"x": [4]}))
        writer.set_metadata("x", big)  # file level, named like both streams' column
        writer.set_metadata("x", bigger, stream="metadata")
        writer.set_metadata("metadata", big)  # file level, named like a stream
        writer.set_metadata("s", big, stream="s")
        writer.set_metadata("a/b", big)  # a key with a slash: escaped, never a path
        writer.set_metadata("x", bigger)  # replaced: the new value only
    with h5py.File(path, "r") as f:
        assert list(f["metadata/x"][:]) == [1, 2, 3]
        assert list(f["s/x"][:]) == [4]
        assert f.attrs["x"] == "<stored in /_metadata/x>"
        assert f["_metadata/x"][()].decode() == bigger
        assert f["_metadata/metadata"][()].decode() == big
        assert f["_metadata/a%2Fb"][()].decode() == big
        assert f.attrs["a/b"] == "<stored in /_metadata/a%2Fb>"
        assert f["metadata"].attrs["x"] == "<stored in /_stream_metadata/metadata/x>"
        assert f["_stream_metadata/metadata/x"][()].decode() == bigger
        assert f["_stream_metadata/s/s"][()].decode() == big
        assert sorted(f) == ["_metadata", "_stream_metadata", "metadata", "s"]
        assert sorted(f["_metadata"]) == ["a%2Fb", "metadata", "x"]


def test_a_refused_zero_size_frame_call_makes_nothing(tmp_path: Path):
    path = tmp_path / "zero.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch("s", pa.record_batch({"v": [1]}))
        for shape in ((2, 0, 4), (2, 4, 0), (1, 0)):
            with pytest.raises(UnsupportedData, match="stream 'cam'"):
                writer.write_frames("cam", np.zeros(shape, np.uint16))
        assert sorted(h5py.File(path, "r")) == ["s"]  # not even an empty group
        writer.write_frames("cam", np.ones((2, 3, 4), np.uint16))  # the stream is free
    with h5py.File(path, "r") as f:
        assert f["cam/frames"].shape == (2, 3, 4)


def test_many_metadata_keys_use_an_index_and_all_read_back(tmp_path: Path):
    """Group attributes are in dense storage from the start (a B-tree name index, not a
    list scanned at every key: thousands of keys cost in proportion)."""
    path = tmp_path / "keys.h5"
    with Hdf5Writer(path) as writer:
        for i in range(3000):
            writer.set_metadata(f"key_{i}", i)
            writer.set_metadata(f"key_{i}", f"value {i}", stream="s")
    with h5py.File(path, "r") as f:
        for target in (f["/"], f["s"]):
            assert target.id.get_create_plist().get_attr_phase_change() == (0, 0)
            assert h5py.h5o.get_info(target.id).hdr.version == 2  # holds dense storage
        assert [f.attrs[f"key_{i}"] for i in (0, 1234, 2999)] == [0, 1234, 2999]
        assert f["s"].attrs["key_2999"] == "value 2999"
        assert len(f.attrs) == 3003


@pytest.mark.parametrize(
    ("key", "value", "error", "named"),
    [("nul", "a\x00b", UnsupportedData, "'nul'"),
     ("k" * 100_000, 1, InvalidName, "100000 bytes"),
     ("x" * 5000, "v" * 70_000, InvalidName, "5000 bytes")],
    ids=["nul-value", "huge-key", "long-key-large-value"],
)  # fmt: skip
@pytest.mark.parametrize("stream", [None, "tab"])
def test_metadata_hdf5_cannot_hold_is_refused_and_the_writer_goes_on(
    tmp_path: Path, key: str, value: object, error: type[Exception], named: str,
    stream: str | None,
):  # fmt: skip
    path = tmp_path / "m.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch("tab", pa.record_batch({"x": [1, 2]}))
        writer.flush()
        with pytest.raises(error, match=named):
            writer.set_metadata(key, value, stream=stream)
        writer.set_metadata("note", {"text": "a\x00b"}, stream=stream)  # JSON-escaped
        writer.write_batch("tab", pa.record_batch({"x": [3]}))
    with h5py.File(path, "r") as f:
        assert f["tab/x"][()].tolist() == [1, 2, 3]
        holder = f if stream is None else f["tab"]
        assert json.loads(holder.attrs["note"]) == {"text": "a\x00b"}
        assert key not in holder.attrs


@pytest.mark.parametrize("metadata", [{b"\xff": b"v"}, {b"units": b"\xfe"}, {b"u": b"a\x00"}])
def test_field_metadata_hdf5_cannot_hold_is_refused_and_the_writer_goes_on(
    tmp_path: Path, metadata: dict[bytes, bytes]
):
    path = tmp_path / "f.h5"
    odd = pa.schema([pa.field("x", pa.int64(), metadata=metadata)])
    with Hdf5Writer(path) as writer:
        writer.write_batch("tab", pa.record_batch({"y": [1]}))
        with pytest.raises(UnsupportedData, match=r"stream 'odd' column 'x'"):
            writer.write_batch("odd", pa.RecordBatch.from_arrays([pa.array([1])], schema=odd))
        writer.write_batch("tab", pa.record_batch({"y": [2]}))
    with h5py.File(path, "r") as f:
        assert list(f) == ["tab"]
        assert f["tab/y"][()].tolist() == [1, 2]
