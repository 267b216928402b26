"""Zarr and the writer contract: every kind of schema change read back with xarray (parts
recorded in the groups' attributes), visibility only at flush(), describe(), and stats
that walk no directory."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr
import zarr

from daq_storage.errors import StorageIOError
from daq_storage.testing import fill_disk, null_to_none
from daq_storage.writers import StreamPart, ZarrWriter


def _read_group(path: Path, key: str) -> dict[str, list[Any]]:
    """Each column of group ``key`` as xarray reads it, nulls (``.valid`` False) as None."""
    dataset = xr.open_zarr(path, group=key)
    columns: dict[str, list[Any]] = {}
    for name in dataset.data_vars:
        if str(name).endswith(".valid"):
            continue
        values = dataset[name].values.tolist()
        mask = f"{name}.valid"
        if mask in dataset.data_vars:
            values = [v if ok else None for v, ok in zip(values, dataset[mask].values, strict=True)]
        columns[str(name)] = values
    return columns


def read_stream(path: Path, stream: str) -> tuple[list[dict[str, list[Any]]], list[Any]]:
    """Every part of ``stream``, found through its first group's ``parts`` attribute (a
    stream of one part has none), each part's ``part_of`` and ``first`` checked."""
    first = xr.open_zarr(path, group=stream).attrs
    parts = first.get("parts", [{"key": stream, "first": 0}])
    assert parts[0] == {"key": stream, "first": 0}
    tables = [_read_group(path, part["key"]) for part in parts]
    rows = 0
    for part, table in zip(parts, tables, strict=True):
        assert part["first"] == rows
        if part["key"] != stream:
            attributes = xr.open_zarr(path, group=part["key"]).attrs
            assert (attributes["part_of"], attributes["first"]) == (stream, rows)
            assert "parts" not in attributes
        rows += len(next(iter(table.values())))
    return tables, parts


#: name -> (first batch, second batch, change kind, the parts' columns as read back)
_CHANGES: dict[str, tuple[pa.RecordBatch, pa.RecordBatch, str, list[dict[str, list[Any]]]]] = {
    "widen int32 to int64": (
        pa.record_batch({"v": pa.array([0, 1, 2], pa.int32())}),
        pa.record_batch({"v": pa.array([3, 2**40], pa.int64())}),
        "widening",
        [{"v": [0, 1, 2]}, {"v": [3, 2**40]}],
    ),
    "widen int16 to float32": (
        pa.record_batch({"v": pa.array([-7, 8], pa.int16())}),
        pa.record_batch({"v": pa.array([0.5], pa.float32())}),
        "widening",
        [{"v": [-7, 8]}, {"v": [0.5]}],
    ),
    "new column": (
        pa.record_batch({"v": [0.0, 1.0]}),
        pa.record_batch({"v": [2.0], "w": pa.array([7], pa.int32())}),
        "new_columns",
        [{"v": [0.0, 1.0, 2.0], "w": [None, None, 7]}],
    ),
    "missing column": (
        pa.record_batch({"v": [0.0, 1.0], "w": ["a", "b"]}),
        pa.record_batch({"v": [2.0]}),
        "new_columns",
        [{"v": [0.0, 1.0, 2.0], "w": ["a", "b", None]}],
    ),
    "incompatible int to string": (
        pa.record_batch({"v": pa.array([1, 2], pa.int64())}),
        pa.record_batch({"v": ["x", "y", "z"]}),
        "incompatible",
        [{"v": [1, 2]}, {"v": ["x", "y", "z"]}],
    ),
    "struct child added": (
        pa.record_batch({"p": pa.array([{"a": 1}, {"a": 2}], pa.struct([("a", pa.int32())]))}),
        pa.record_batch({"p": pa.array([{"a": 3, "b": 0.5}],
                                       pa.struct([("a", pa.int32()), ("b", pa.float64())]))}),
        "new_columns",
        [{"p.a": [1, 2, 3], "p.b": [None, None, 0.5]}],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(_CHANGES))
def test_every_kind_of_change_reads_back_as_one_stream(tmp_path: Path, case: str):
    """New and missing columns stay in the stream's group (nulls marked in ``.valid``);
    a widened or changed type continues in ``s__part0002``, recorded in the first
    group's ``parts`` and the part's ``part_of`` / ``first``; describe() lists the same
    parts; every row of every part reads back."""
    first, second, kind, expected = _CHANGES[case]
    path = tmp_path / "e.zarr"
    with ZarrWriter(path) as writer:
        writer.write_batch("s", first)
        assert writer.check_batch("s", second).kind == kind
        writer.write_batch("s", second)
        writer.write_batch("s", second)  # the same schema again: the same part
        writer.flush()
        rows = first.num_rows + 2 * second.num_rows
        assert writer.visible("s") == writer.accepted("s") == rows
        described = writer.describe("s")
    doubled = [dict(part) for part in expected]
    for name, values in doubled[-1].items():  # the second batch came twice
        tail = values[len(values) - second.num_rows :]
        doubled[-1][name] = values + tail
    tables, parts = read_stream(path, "s")
    assert [null_to_none(list(column)) for table in tables for column in table.values()] == [
        null_to_none(list(column)) for table in doubled for column in table.values()
    ]
    assert [list(table) for table in tables] == [list(table) for table in doubled]
    expected_parts = (
        (StreamPart(path, "s", 0),)
        if len(expected) == 1
        else (StreamPart(path, "s", 0), StreamPart(path, "s__part0002", first.num_rows))
    )
    assert described.parts == expected_parts
    assert [(p["key"], p["first"]) for p in parts] == [(p.key, p.first) for p in expected_parts]
    if len(expected) == 2:  # the part's arrays have the new type
        array = zarr.open_array(path / "s__part0002" / "v", mode="r")
        assert str(array.attrs["arrow_type"]) == str(second.schema.field("v").type)


def test_the_documented_join_reads_a_widened_stream_as_one(tmp_path: Path):
    """The module docstring's snippet: the parts of a widened stream, joined by xarray."""
    store = tmp_path / "j.zarr"
    with ZarrWriter(store) as writer:
        writer.write_batch("s", pa.record_batch({"v": pa.array([1, 2], pa.int16())}))
        writer.write_batch("s", pa.record_batch({"v": pa.array([0.5], pa.float32())}))
        writer.write_batch("s", pa.record_batch({"v": pa.array([2**40], pa.int64())}))
    parts = xr.open_zarr(store, group="s").attrs.get("parts", [{"key": "s"}])
    table = xr.concat([xr.open_zarr(store, group=p["key"]) for p in parts], dim="row")
    assert table["v"].values.tolist() == [1.0, 2.0, 0.5, 2.0**40]
    assert len(parts) == 3


def test_narrower_values_go_into_the_wider_column_of_the_same_part(tmp_path: Path):
    """int32 values into an int64 column, int16 into float64: no change (the values are
    cast exactly), no new part."""
    path = tmp_path / "n.zarr"
    with ZarrWriter(path, chunk_size=3) as writer:
        writer.write_batch("s", pa.record_batch({"i": pa.array([2**40], pa.int64()),
                                                 "f": pa.array([0.25])}))  # fmt: skip
        narrow = pa.record_batch({"i": pa.array([-5, 6], pa.int32()),
                                  "f": pa.array([-3, 4], pa.int16())})  # fmt: skip
        assert writer.check_batch("s", narrow).kind == "same"
        for _ in range(3):
            writer.write_batch("s", narrow)
        assert len(writer.describe("s").parts) == 1
    dataset = xr.open_zarr(path, group="s")
    assert (dataset["i"].dtype, dataset["f"].dtype) == (np.int64, np.float64)
    assert dataset["i"].values.tolist() == [2**40, -5, 6, -5, 6, -5, 6]
    assert dataset["f"].values.tolist() == [0.25, -3.0, 4.0, -3.0, 4.0, -3.0, 4.0]


def test_parts_continue_part_after_part_and_earlier_parts_are_final(tmp_path: Path):
    """Types flip back and forth: each change opens the next part, numbered on; rows of
    an earlier part still pending when the next one starts are stored in it (whole
    chunks or not), and a reader sees the parts only from the next flush."""
    path = tmp_path / "p.zarr"
    kinds = [pa.int16(), pa.int32(), pa.utf8(), pa.int64(), pa.int64(), pa.float64()]
    with ZarrWriter(path, chunk_size=4) as writer:
        for i, kind in enumerate(kinds):
            values = [str(10 * i + j) if kind == pa.utf8() else 10 * i + j for j in range(5)]
            writer.write_batch("s", pa.record_batch({"v": pa.array(values, kind)}))
            if i == 2:
                assert writer.visible("s") == 0  # three parts on disk, none published
                assert "s" not in zarr.open_group(path, mode="r")
                writer.flush()
        assert writer.visible("s") == 15
        writer.flush()
        assert writer.visible("s") == writer.accepted("s") == 30
        keys = [part.key for part in writer.describe("s").parts]
    assert keys == ["s", "s__part0002", "s__part0003", "s__part0004", "s__part0005"]
    tables, _ = read_stream(path, "s")
    values = [value for table in tables for value in table["v"]]
    assert [int(v) for v in values] == [10 * i + j for i in range(6) for j in range(5)]
    assert [len(table["v"]) for table in tables] == [5, 5, 5, 10, 5]


def test_a_batch_refused_for_room_starts_no_part(small_disk: Path):
    """The disk is full when a type change would start a part: the batch is refused up
    front (ENOSPC), no part is recorded or made, and the stream goes on once there is
    room."""
    path = small_disk / "r.zarr"
    rng = np.random.default_rng(0)
    with ZarrWriter(path, compression="none") as writer:
        writer.write_batch("s", pa.record_batch({"v": pa.array([1, 2], pa.int32())}))
        writer.flush()
        filler = small_disk / "filler"
        fill_disk(filler.parent, leave=0)  # another process fills the disk
        wide = pa.record_batch({"v": pa.array(rng.integers(0, 2**40, 1 << 20), pa.int64())})
        with pytest.raises(StorageIOError) as info:
            writer.write_batch("s", wide)
        assert info.value.errno == errno.ENOSPC
        assert writer.describe("s").parts == (StreamPart(path, "s", 0),)
        assert not (path / "s__part0002").exists()
        filler.unlink()
        writer.write_batch("s", pa.record_batch({"v": pa.array([3, 2**40], pa.int64())}))
    tables, parts = read_stream(path, "s")
    assert [p["key"] for p in parts] == ["s", "s__part0002"]
    assert [table["v"] for table in tables] == [[1, 2], [3, 2**40]]


# ---------------------------------------------------------------------- visibility
def test_chunks_and_shards_are_written_as_they_fill_but_seen_only_after_flush(tmp_path: Path):
    """Memory stays bounded (whole chunks, shards and id chunks go to disk between
    flushes, however many frames come), yet nothing is published: visible() stays at the
    last flush and so does every reader, consolidated or not."""
    path = tmp_path / "v.zarr"
    frames = np.arange(5000 * 2 * 3, dtype=np.uint16).reshape(5000, 2, 3)
    with ZarrWriter(path, shard_frames=8, chunk_size=100) as writer:
        writer.write_batch("t", pa.record_batch({"x": np.arange(5)}))
        writer.write_frames("cam", frames[:5])
        writer.flush()
        root_document = (path / "zarr.json").read_bytes()
        for start in range(5, 5000, 499):
            writer.write_frames("cam", frames[start : start + 499])
        writer.write_batch("t", pa.record_batch({"x": np.arange(5, 1005)}))
        shards = list((path / "cam" / "frames" / "c").iterdir())
        assert len(shards) >= 600  # 5,000 frames in shards of 8, on disk
        assert (path / "cam" / "frame_number" / "c" / "0").exists()  # ids: 4,096 a chunk
        assert len(list((path / "t" / "x" / "c").iterdir())) == 10
        assert (writer.visible("cam"), writer.accepted("cam")) == (5, 5000)
        assert (writer.visible("t"), writer.accepted("t")) == (5, 1005)
        assert (path / "zarr.json").read_bytes() == root_document
        for consolidated in (None, False):
            assert xr.open_zarr(path, group="cam", consolidated=consolidated).sizes["frame"] == 5
            assert xr.open_zarr(path, group="t", consolidated=consolidated).sizes["row"] == 5
        writer.flush()
        assert writer.visible("cam") == writer.describe("cam").visible == 5000
        np.testing.assert_array_equal(xr.open_zarr(path, group="cam")["frames"].values, frames)
        assert xr.open_zarr(path, group="t")["x"].values.tolist() == list(range(1005))


# ---------------------------------------------------------------------- describe
@pytest.mark.parametrize("shard_frames", [None, 4])
def test_describe_frames_names_the_arrays_a_reader_opens(tmp_path: Path, shard_frames: Any):
    path = tmp_path / "d.zarr"
    options: dict[str, Any] = {"frames_per_chunk": 2, "shard_frames": shard_frames}
    with ZarrWriter(path, compression="zstd", compression_level=3, **options) as writer:
        writer.write_frames("cam", np.ones((5, 6, 7), np.int16))
        described = writer.describe("cam")
        assert (described.visible, described.accepted) == (0, 5)
        writer.flush()
        described = writer.describe("cam")
    assert (described.kind, described.mimetype, described.path) == ("frames", "application/x-zarr",
                                                                    path)  # fmt: skip
    assert (described.dtype, described.shape, described.compression) == ("int16", (6, 7), "zstd")
    assert described.chunk_shape == ((shard_frames or 2), 6, 7)
    assert described.parts == (StreamPart(path, "cam/frames", 0),)
    frames = zarr.open_array(path / described.key, mode="r")
    assert frames.shape == (described.visible, *described.shape)
    assert (frames.shards or frames.chunks) == described.chunk_shape
    for key in described.extra_keys.values():
        assert zarr.open_array(path / key, mode="r").shape == (5,)
    assert set(described.extra_keys) == {"timestamps_ns", "frame_numbers"}
    resource = described.stream_resource()
    assert resource["uri"] == path.absolute().as_uri()
    assert resource["parameters"] == {"chunk_shape": [shard_frames or 2, 6, 7],
                                      "dataset": "cam/frames", "compression": "zstd"}  # fmt: skip


def test_describe_a_table_lists_its_columns_chunks_and_parts(tmp_path: Path):
    path = tmp_path / "d.zarr"
    struct = pa.array([{"a": 1.5}], pa.struct([("a", pa.float64())]))
    with ZarrWriter(path, chunk_size=1000, compression="none") as writer:
        writer.write_batch("s", pa.record_batch({"n": pa.array([1], pa.int32()), "p": struct}))
        writer.write_batch("s", pa.record_batch({"n": pa.array([2**40], pa.int64())}))
        writer.flush()
        described = writer.describe("s")
    assert (described.kind, described.key, described.compression) == ("table", "s", None)
    assert described.chunk_shape == (1000,)
    assert described.columns == {"n": "int64"}  # the current part's
    assert described.parts == (StreamPart(path, "s", 0), StreamPart(path, "s__part0002", 1))
    parameters = described.stream_resource()["parameters"]
    assert [part["key"] for part in parameters["parts"]] == ["s", "s__part0002"]


# ---------------------------------------------------------------------- stats
def _files_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def test_stats_count_the_store_as_written_without_walking_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Chunks rewritten at flushes (partial chunks, partial shards), shards written whole,
    documents replaced at each flush: the byte count follows what the store holds, and
    taking it lists no directory."""
    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(1)
    with ZarrWriter(path, shard_frames=4, chunk_size=500) as writer:
        sizes = []
        for step in range(6):
            writer.write_batch("t", pa.record_batch({"x": rng.random(333),
                                                     "label": ["abc"] * 333}))  # fmt: skip
            writer.write_frames("cam", rng.integers(0, 900, (3, 16, 16), dtype=np.uint16))
            if step % 2:
                writer.flush()
            with monkeypatch.context() as patch:
                for owner, name in _LISTINGS:
                    patch.setattr(owner, name, _refuse)
                stats = writer.stats
            sizes.append(stats.file_size)
            assert stats.file_size == _files_size(path), step
            assert stats.files == (path,)
    assert sizes == sorted(sizes)
    assert writer.stats.file_size == _files_size(path)  # closed: plain documents


_LISTINGS: list[tuple[Any, str]] = [
    (os, "walk"), (os, "scandir"), (os, "listdir"), (Path, "rglob"), (Path, "glob"),
    (Path, "iterdir"),
]  # fmt: skip


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("stats listed a directory")
