"""HDF5 and the writer contract: every kind of schema change (in place, or a new part
group recorded in the file), what check_batch promises, what a reader sees (visible)
and where each stream lives (describe), read back with h5py."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.errors import SchemaMismatch, UnknownStream, UnsupportedData
from daq_storage.writers import Hdf5Writer, StreamPart


def _ints(values: list[int], kind: pa.DataType) -> pa.RecordBatch:
    return pa.record_batch({"v": pa.array(values, kind)})


@pytest.mark.parametrize(
    ("old", "new", "dtype"),
    [(pa.int32(), pa.int64(), np.int64), (pa.int16(), pa.float32(), np.float32)],
)
def test_a_widening_rewrites_the_column_in_place(
    tmp_path: Path, old: pa.DataType, new: pa.DataType, dtype: type
):
    path = tmp_path / "widen.h5"
    big = 2**40 if new == pa.int64() else 0.5
    with Hdf5Writer(path, chunk_size=4) as writer:
        writer.write_batch("s", _ints([1, 2, 3, 4, 5], old))  # a whole chunk and a rest
        second = pa.record_batch({"v": pa.array([big, 7], new)})
        change = writer.check_batch("s", second)
        assert (change.kind, change.widened) == ("widening", ("v",))
        assert writer.accepted("s") == 5
        writer.write_batch("s", second)
        writer.write_batch("s", _ints([8], old))  # narrower values: cast on append
        writer.flush()
        described = writer.describe("s")
    assert (described.parts, described.columns) == ((StreamPart(path, "/s", 0),), {"v": str(new)})
    with h5py.File(path, "r") as f:
        assert list(f) == ["s"]
        assert f["s/v"].dtype == dtype
        assert f["s/v"].attrs["arrow_type"] == str(new)
        assert list(f["s/v"][:]) == [1, 2, 3, 4, 5, big, 7, 8]
        assert [field["type"] for field in json.loads(f["s"].attrs["schema"])["fields"]] == [
            str(new)
        ]


def test_new_and_missing_columns_and_struct_children_evolve_in_place(tmp_path: Path):
    path = tmp_path / "columns.h5"
    point = pa.struct([("x", pa.float64())])
    point_z = pa.struct([("x", pa.float64()), ("z", pa.int32())])
    batches = [
        pa.record_batch({"a": [1, 2], "p": pa.array([{"x": 0.5}, {"x": 1.5}], point)}),
        pa.record_batch({"a": [3], "b": ["new"], "p": pa.array([{"x": 2.5, "z": 7}], point_z)}),
        pa.record_batch({"b": ["only b"]}),
    ]
    kinds = []
    with Hdf5Writer(path) as writer:
        for batch in batches:
            kinds.append(writer.check_batch("s", batch))
            writer.write_batch("s", batch)
        writer.flush()
        described = writer.describe("s")
    assert [change.kind for change in kinds] == ["same", "new_columns", "new_columns"]
    assert kinds[1].added == ("b", "p.z")
    assert set(kinds[2].missing) == {"a", "p.x", "p.z"}
    assert len(described.parts) == 1
    assert described.columns == {"a": "int64", "p.x": "double", "p.z": "int32", "b": "string"}
    with h5py.File(path, "r") as f:
        g = f["s"]
        assert list(g["a"][:]) == [1, 2, 3, 0]
        assert list(g["a.valid"][:]) == [True, True, True, False]
        assert [v.decode() for v in g["b"][:]] == ["", "", "new", "only b"]
        assert list(g["b.valid"][:]) == [False, False, True, True]
        np.testing.assert_array_equal(g["p.x"][:], [0.5, 1.5, 2.5, np.nan])
        assert list(g["p.z"][:]) == [0, 0, 7, 0]
        assert list(g["p.z.valid"][:]) == [False, False, True, False]


def test_an_incompatible_change_continues_in_a_new_part_group(tmp_path: Path):
    """int -> text starts ``s__part0002``, text -> int ``s__part0003``; the first group
    lists the parts, each later one names its stream and first row; the stream's
    metadata stays on the first group; a widening inside a part stays in place."""
    path = tmp_path / "parts.h5"
    batches = [
        pa.record_batch({"v": pa.array([1, 2, 3], pa.int64())},
                        metadata={"units": "V", "gain": "2"}),
        pa.record_batch({"v": ["x", "y"], "w": pa.array([1, 2], pa.int16())}),
        pa.record_batch({"v": ["z"], "w": pa.array([2**20], pa.int32())}),
        pa.record_batch({"v": pa.array([4.5], pa.float64())}),
    ]  # fmt: skip
    with Hdf5Writer(path, chunk_size=2) as writer:
        writer.write_batch("s", batches[0])
        change = writer.check_batch("s", batches[1])
        assert (change.kind, change.incompatible, change.added) == ("incompatible", ("v",), ("w",))
        assert (writer.accepted("s"), writer.visible("s")) == (3, 2)  # a chunk of 2 is in
        for batch in batches[1:]:
            writer.write_batch("s", batch)
        assert writer.visible("s") == 6  # the parts before the last are all in the file
        writer.flush()
        assert writer.visible("s") == writer.accepted("s") == 7
        described = writer.describe("s")
    expected = [("/s", 0), ("/s__part0002", 3), ("/s__part0003", 6)]
    assert [(part.key, part.first) for part in described.parts] == expected
    assert {part.path for part in described.parts} == {path}
    assert described.columns == {"v": "double"}  # the current part's
    resource = described.stream_resource()
    assert [p["key"] for p in resource["parameters"]["parts"]] == [key for key, _ in expected]
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["s", "s__part0002", "s__part0003"]
        assert json.loads(f["s"].attrs["parts"]) == [
            {"key": key, "first": first} for key, first in expected
        ]
        assert (f["s"].attrs["units"], f["s"].attrs["gain"]) == ("V", 2)
        for key, first in expected[1:]:
            group = f[key]
            assert (group.attrs["part_of"], group.attrs["first"]) == ("s", first)
            assert "units" not in group.attrs
        assert list(f["s/v"][:]) == [1, 2, 3]
        assert [v.decode() for v in f["s__part0002/v"][:]] == ["x", "y", "z"]
        assert f["s__part0002/w"].dtype == np.int32  # widened in its part
        assert list(f["s__part0002/w"][:]) == [1, 2, 2**20]
        assert list(f["s__part0003/v"][:]) == [4.5]
        fields = json.loads(f["s__part0003"].attrs["schema"])["fields"]
        assert [(field["name"], field["type"]) for field in fields] == [("v", "double")]


def test_a_struct_child_changing_type_starts_a_part(tmp_path: Path):
    path = tmp_path / "struct.h5"
    old = pa.record_batch({"p": pa.array([{"x": 1}], pa.struct([("x", pa.int64())]))})
    new = pa.record_batch({"p": pa.array([{"x": "one"}], pa.struct([("x", pa.string())]))})
    with Hdf5Writer(path) as writer:
        writer.write_batch("s", old)
        assert writer.check_batch("s", new).incompatible == ("p.x",)
        writer.write_batch("s", new)
    with h5py.File(path, "r") as f:
        assert list(f["s/p.x"][:]) == [1]
        assert [v.decode() for v in f["s__part0002/p.x"][:]] == ["one"]


@pytest.mark.parametrize(
    ("column", "problem"),
    [
        (pa.array([0], pa.date32()), "date32"),
        (pa.array([b"raw"], pa.binary()), "binary"),
        (pa.array([None], pa.null()), "null"),
        (pa.array([["a"]], pa.list_(pa.string())), "list<item: string>"),
        (pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())), "map"),
        (pa.array([{}], pa.struct([])), "struct<>"),
    ],
)
def test_types_hdf5_cannot_store_are_refused_by_check_batch(
    tmp_path: Path, column: pa.Array, problem: str
):
    """check_batch refuses what write_batch would, before anything is written: a new
    stream, and an existing one (where a new part would otherwise start)."""
    path = tmp_path / "types.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch("kept", pa.record_batch({"bad": [1.0]}))
        for stream in ("new", "kept"):
            batch = pa.record_batch({"ok": [1.0], "bad": column})
            for call in (writer.check_batch, writer.write_batch):
                with pytest.raises(UnsupportedData, match=rf"column 'bad'.*{problem}"):
                    call(stream, batch)
        assert writer.streams == ["kept"]
    with h5py.File(path, "r") as f:
        assert list(f) == ["kept"]


def test_check_batch_refuses_text_with_nul_as_write_batch_does(tmp_path: Path):
    with Hdf5Writer(tmp_path / "nul.h5") as writer:
        writer.write_batch("s", pa.record_batch({"t": ["a"]}))
        for call in (writer.check_batch, writer.write_batch):
            with pytest.raises(UnsupportedData, match="NUL"):
                call("s", pa.record_batch({"t": ["a\x00b"]}))
        assert writer.accepted("s") == 1


def test_swmr_refuses_a_new_part_up_front(tmp_path: Path):
    """SWMR cannot add a group once it has started: a change that needs a part is
    refused by check_batch and write_batch alike, and the stream goes on."""
    path = tmp_path / "swmr.h5"
    with Hdf5Writer(path, swmr=True) as writer:
        writer.write_batch("s", _ints([1], pa.int64()))
        writer.flush()
        for call in (writer.check_batch, writer.write_batch):
            with pytest.raises(UnsupportedData, match="SWMR mode has started"):
                call("s", pa.record_batch({"v": ["text"]}))
        writer.write_batch("s", _ints([2], pa.int64()))
    with h5py.File(path, "r") as f:
        assert list(f) == ["s"]
        assert list(f["s/v"][:]) == [1, 2]


def _rows_seen(path: Path, key: str) -> int:
    with h5py.File(path, "r") as f:
        return len(f[key]) if key in f else 0


def test_visible_rows_are_what_a_reader_opening_the_file_finds(tmp_path: Path):
    """Whole chunks reach the file as they fill, but a reader sees rows only once a
    commit (a flush, a new dataset) points at them: visible counts those."""
    path = tmp_path / "visible.h5"
    with Hdf5Writer(path, chunk_size=100) as writer:
        seen = []
        for step in range(6):
            values = np.arange(step * 70, step * 70 + 70)
            batch = {"v": values} if step != 3 else {"v": values, "late": values * 0.5}
            writer.write_batch("s", pa.record_batch(batch))
            assert writer.visible("s") == _rows_seen(path, "s/v") <= writer.accepted("s")
            seen.append(writer.visible("s"))
            if step == 4:
                writer.flush()
                assert writer.visible("s") == _rows_seen(path, "s/late") == 350
        # the new column's commit shows 210 rows (its datasets brought to one length)
        assert seen == [0, 0, 0, 210, 210, 350]
        writer.flush()
        assert writer.visible("s") == writer.accepted("s") == _rows_seen(path, "s/v") == 420


def test_visible_frames_are_what_a_reader_opening_the_file_finds(tmp_path: Path):
    path = tmp_path / "frames.h5"
    frames = np.arange(11 * 6, dtype=np.uint16).reshape(11, 2, 3)
    with Hdf5Writer(path, frames_per_chunk=4, compression="blosc-lz4") as writer:
        writer.write_frames("cam", frames[:3])  # the datasets' creation commits nothing yet
        assert writer.visible("cam") == _rows_seen(path, "cam/frames") == 0
        writer.write_frames("cam", frames[3:9])
        assert writer.visible("cam") == 0 < writer.accepted("cam") == 9
        writer.flush()
        assert writer.visible("cam") == _rows_seen(path, "cam/frame_number") == 9
        writer.write_frames("cam", list(frames[9:]))  # a sequence of frames
        writer.flush(durable=True)
        assert writer.visible("cam") == writer.accepted("cam") == 11
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["cam/frames"][:], frames)
        assert list(f["cam/frame_number"][:]) == list(range(11))


def test_describe_says_where_each_stream_lives(tmp_path: Path):
    path = tmp_path / "describe.h5"
    frames = np.zeros((5, 6, 8), np.uint16)
    with Hdf5Writer(path, compression="zstd", frames_per_chunk=2) as writer:
        writer.write_frames("cam", frames)
        writer.write_batch("s", pa.record_batch({"v": [1.0, 2.0], "t": ["a", "b"]}))
        with pytest.raises(UnknownStream, match="'nothing'"):
            writer.describe("nothing")
        cam, table = writer.describe("cam"), writer.describe("s")
        writer.flush()
        assert writer.describe("cam").visible == 5
    assert (cam.kind, cam.format, cam.mimetype, cam.path) == (
        "frames", "hdf5", "application/x-hdf5", path)  # fmt: skip
    assert (cam.key, cam.dtype, cam.shape, cam.chunk_shape) == ("/cam/frames", "uint16", (6, 8),
                                                                (2, 6, 8))  # fmt: skip
    assert (cam.compression, cam.accepted, cam.visible) == ("zstd", 5, 4)
    assert cam.extra_keys == {"timestamps_ns": "/cam/timestamp_ns",
                              "frame_numbers": "/cam/frame_number"}  # fmt: skip
    assert cam.stream_resource() == {
        "uri": path.absolute().as_uri(), "mimetype": "application/x-hdf5",
        "parameters": {"chunk_shape": [2, 6, 8], "dataset": "/cam/frames",
                       "compression": "zstd"},
    }  # fmt: skip
    assert (table.kind, table.key, table.columns) == ("table", "/s", {"v": "double", "t": "string"})
    assert table.chunk_shape == ()  # text and numbers are chunked differently by default
    with h5py.File(path, "r") as f:
        assert f[cam.key].chunks == cam.chunk_shape
        assert f[cam.key].dtype == np.dtype(cam.dtype)
        for key in cam.extra_keys.values():
            assert len(f[key]) == 5
        assert set(f[table.key]) == set(table.columns)


def test_describe_gives_the_rows_per_chunk_when_they_are_one(tmp_path: Path):
    with Hdf5Writer(tmp_path / "chunks.h5", chunk_size=500, compression="none") as writer:
        writer.write_batch("s", pa.record_batch({"v": [1.0], "t": ["a"]}))
        described = writer.describe("s")
    assert (described.chunk_shape, described.compression) == ((500,), None)


def test_frames_and_tables_keep_to_their_streams_in_check_batch(tmp_path: Path):
    with Hdf5Writer(tmp_path / "mix.h5") as writer:
        writer.write_frames("cam", np.zeros((1, 2, 2), np.uint8))
        with pytest.raises(SchemaMismatch, match="holds frames"):
            writer.check_batch("cam", pa.record_batch({"v": [1]}))
