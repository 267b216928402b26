"""The writer contract of the Arrow IPC and Parquet writers: every kind of schema change
continues the stream in a recorded part file, visibility, description, durable flushes,
frames (sequences, and writes refused for room), options. Read back with pyarrow,
polars and pyarrow.dataset."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from daq_storage.errors import ConfigError, StorageIOError, UnknownStream, UnsupportedData
from daq_storage.writers import ArrowWriter, ParquetWriter, StreamPart, check_all, open_writer
from daq_storage.writers._arrow_batches import ArrowBatchWriter
from tests.writers.test_formats import fill

KINDS = ["arrow", "arrow-file", "parquet"]
SUFFIX = {"arrow": ".arrows", "arrow-file": ".arrow", "parquet": ".parquet"}


def open_kind(kind: str, path: Path, **options: Any) -> ArrowBatchWriter:
    if kind == "arrow-file":
        return ArrowWriter(path, ipc_format="file", **options)
    writer = open_writer(kind, path, **options)
    assert isinstance(writer, ArrowBatchWriter)
    return writer


def read_part(kind: str, path: Path) -> pa.Table:
    """One part file as pyarrow reads it; polars must read the same rows."""
    if kind == "arrow":
        table = pa.ipc.open_stream(path).read_all()
        frame = pl.read_ipc_stream(path)
    elif kind == "arrow-file":
        table = pa.ipc.open_file(path).read_all()
        frame = pl.read_ipc(path)
    else:
        table = pq.read_table(path)
        frame = pl.read_parquet(path)
    times = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
    for name in times:  # nanoseconds: compared as integers (Python datetimes hold us)
        assert frame[name].cast(pl.Int64).to_list() == table[name].cast(pa.int64()).to_pylist()
    assert frame.drop(times).to_dicts() == table.drop_columns(times).to_pylist(), path
    return table


def part_metadata(kind: str, path: Path) -> dict[str, Any]:
    if kind == "parquet":
        raw = pq.read_schema(path).metadata or {}
    elif kind == "arrow":
        raw = pa.ipc.open_stream(path).schema.metadata or {}
    else:
        raw = pa.ipc.open_file(path).schema.metadata or {}
    return {k.decode(): json.loads(v) for k, v in raw.items() if not k.startswith(b"ARROW:")}


def stream_files(kind: str, directory: Path, stream: str) -> list[Path]:
    suffix = SUFFIX[kind]
    return [directory / f"{stream}{suffix}", *sorted(directory.glob(f"{stream}__part*{suffix}"))]


def read_parts(kind: str, directory: Path, stream: str) -> list[pa.Table]:
    """Every part of ``stream``, each checked to record where it belongs."""
    tables, rows = [], 0
    for index, path in enumerate(stream_files(kind, directory, stream)):
        metadata = part_metadata(kind, path)
        if index == 0:
            assert "daq_storage.part_of" not in metadata
        else:
            assert path.name == f"{stream}__part{index + 1:04d}{SUFFIX[kind]}"
            assert metadata["daq_storage.part_of"] == stream
            assert metadata["daq_storage.first_row"] == rows
        tables.append(read_part(kind, path))
        rows += tables[-1].num_rows
    return tables


def batch(**columns: pa.Array) -> pa.RecordBatch:
    return pa.record_batch(columns)


POINT = pa.struct([("x", pa.float64())])
POINT_Z = pa.struct([("x", pa.float64()), ("z", pa.int64())])
#: (first batch, a batch changing the stream, kind of change, parts after first, change, first)
CHANGES = {
    "widen int32 to int64": (
        batch(v=pa.array([1, 2], pa.int32())), batch(v=pa.array([2**40], pa.int64())),
        "widening", 2,
    ),
    "widen int16 to float32": (
        batch(v=pa.array([1, -2], pa.int16())), batch(v=pa.array([0.5], pa.float32())),
        "widening", 2,
    ),
    "new column": (
        batch(v=pa.array([1, 2])), batch(v=pa.array([3]), w=pa.array(["x"])), "new_columns", 3,
    ),
    "missing column": (
        batch(v=pa.array([1, 2]), w=pa.array(["a", "b"])), batch(v=pa.array([3])),
        "new_columns", 3,
    ),
    "incompatible int to string": (
        batch(v=pa.array([1, 2])), batch(v=pa.array(["x"])), "incompatible", 3,
    ),
    "struct child added": (
        batch(p=pa.array([{"x": 1.5}, None], POINT)),
        batch(p=pa.array([{"x": 2.5, "z": 7}], POINT_Z)),
        "new_columns", 3,
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(CHANGES))
def test_every_kind_of_change_continues_in_a_recorded_part(tmp_path: Path, kind: str, case: str):
    """A batch that changes the stream goes to ``<stream>__part0002`` (the first batch's
    schema again: to ``__part0003``, unless it fits the second part as it is), each part
    readable on its own and recording the stream and its first row. (The writers named
    the second part ``__part0001`` and recorded nothing.)"""
    first, changed, expected_kind, parts = CHANGES[case]
    directory = tmp_path / "run"
    with open_kind(kind, directory) as writer:
        writer.write_batch("s", first)
        change = writer.check_batch("s", changed)  # asked first: nothing written
        assert change.kind == expected_kind
        assert [p.name for p in directory.glob("s*")] == [f"s{SUFFIX[kind]}"]
        writer.write_batch("s", changed)
        writer.write_batch("s", first)
        description = writer.describe("s")
        assert writer.accepted("s") == 2 * first.num_rows + changed.num_rows
        writer.flush()
        if kind != "arrow-file":
            assert writer.visible("s") == writer.accepted("s")
    files = stream_files(kind, directory, "s")
    assert len(files) == parts
    firsts = [0, first.num_rows, first.num_rows + changed.num_rows][:parts]
    expected_parts = [StreamPart(f, "", n) for f, n in zip(files, firsts, strict=True)]
    assert description.parts == tuple(expected_parts)
    assert description.path == files[0]
    tables = read_parts(kind, directory, "s")
    rows = [row for table in tables for row in table.to_pylist()]
    expected = first.to_pylist() + changed.to_pylist() + first.to_pylist()
    assert rows == expected
    assert tables[1].schema.equals(changed.schema)  # each part keeps its own schema


@pytest.mark.parametrize("kind", KINDS)
def test_a_change_that_is_none_stays_in_the_part_cast_to_its_schema(tmp_path: Path, kind: str):
    """Column order, narrower integers and ``large_string`` change nothing: one file, in
    its first schema."""
    directory = tmp_path / "run"
    first = batch(n=pa.array([1, 2], pa.int64()), t=pa.array(["a", "b"]))
    with open_kind(kind, directory) as writer:
        writer.write_batch("s", first)
        for later in (
            pa.record_batch({"t": ["c"], "n": pa.array([3], pa.int64())}),
            batch(n=pa.array([4], pa.int32()), t=pa.array(["d"], pa.large_string())),
        ):
            assert writer.check_batch("s", later).kind == "same"
            writer.write_batch("s", later)
    (table,) = read_parts(kind, directory, "s")
    assert table.schema.remove_metadata().equals(first.schema)
    assert table.to_pydict() == {"n": [1, 2, 3, 4], "t": ["a", "b", "c", "d"]}


@pytest.mark.parametrize("kind", KINDS)
def test_nulls_for_a_non_nullable_part_go_on_in_a_part_that_takes_them(tmp_path: Path, kind: str):
    directory = tmp_path / "run"
    strict = pa.schema([pa.field("v", pa.int64(), nullable=False)])
    with open_kind(kind, directory) as writer:
        writer.write_batch("s", pa.RecordBatch.from_arrays([pa.array([1, 2])], schema=strict))
        writer.write_batch("s", batch(v=pa.array([3, None])))  # nullability: no change
        writer.write_batch("s", batch(v=pa.array([4])))  # fits the second part
    first, second = read_parts(kind, directory, "s")
    assert first.schema.field("v").nullable is False
    assert first.column("v").to_pylist() == [1, 2]
    assert second.column("v").to_pylist() == [3, None, 4]


def test_check_all_asks_both_formats_and_parquet_refuses_its_unknown_types_up_front(
    tmp_path: Path,
) -> None:
    """A type Parquet has no mapping for is refused by ``check_batch`` before anything is
    written (the Arrow writer stores it), so a fan-out stores the batch in both or none."""
    odd = batch(span=pa.array([pa.MonthDayNano([1, 2, 3])]))
    with ArrowWriter(tmp_path / "a") as arrow, ParquetWriter(tmp_path / "p") as parquet:
        assert arrow.check_batch("odd", odd).kind == "same"
        with pytest.raises(UnsupportedData, match=r"stream 'odd'.*month_day_nano_interval"):
            check_all([arrow, parquet], "odd", odd)
        assert arrow.stats.files == parquet.stats.files == ()
        widened = batch(v=pa.array([1], pa.int64()))
        for writer in (arrow, parquet):
            writer.write_batch("s", batch(v=pa.array([1], pa.int32())))
        assert check_all([arrow, parquet], "s", widened).widened == ("v",)


def test_pyarrow_dataset_reads_the_parts_of_a_directory(tmp_path: Path) -> None:
    """The parts' metadata never stops ``pyarrow.dataset``: parts of one schema (a footer
    that reached its bound) read as they are, widened parts with the unified schema."""
    rotated = tmp_path / "rotated"
    with ParquetWriter(rotated, row_group_size=100, max_footer_bytes=600) as writer:
        for i in range(8):
            writer.write_batch("s", batch(v=pa.array(np.arange(i * 100, (i + 1) * 100))))
        assert len(writer.describe("s").parts) > 2
    assert sorted(ds.dataset(rotated).to_table().column("v").to_pylist()) == list(range(800))
    assert pl.read_parquet(rotated / "s*.parquet")["v"].sort().to_list() == list(range(800))
    for kind, fmt in (("parquet", "parquet"), ("arrow-file", "ipc")):
        widened = tmp_path / kind
        with open_kind(kind, widened) as writer:
            writer.write_batch("s", batch(v=pa.array([1, 2], pa.int32())))
            writer.write_batch("s", batch(v=pa.array([2**40], pa.int64())))
        files = stream_files(kind, widened, "s")
        schemas = [ds.dataset(f, format=fmt).schema for f in files]
        unified = pa.unify_schemas(schemas, promote_options="permissive")
        table = ds.dataset(widened, format=fmt, schema=unified).to_table()
        assert sorted(table.column("v").to_pylist()) == [1, 2, 2**40]


# ---------------------------------------------------------------------- visibility
@pytest.mark.parametrize("kind", KINDS)
def test_visible_is_what_a_reader_opening_the_files_sees(tmp_path: Path, kind: str):
    """Arrow stream files: every write at once; Parquet: complete row groups (flush
    writes the buffered rows); the Arrow file format: files completed (at close, or when
    the stream goes on in a new part), whatever flush does."""
    directory = tmp_path / "run"
    path = directory / f"s{SUFFIX[kind]}"

    def seen() -> int:
        """Rows a reader finds in the stream's files, in order, up to one it cannot open
        (a file-format file before its footer)."""
        rows = 0
        for part in stream_files(kind, directory, "s"):
            try:
                rows += read_part(kind, part).num_rows
            except (pa.ArrowInvalid, OSError):
                break
        return rows

    writer = open_kind(kind, directory, **({"row_group_size": 250} if kind == "parquet" else {}))
    with pytest.raises(UnknownStream, match="no stream 's'"):
        writer.visible("s")
    for i in range(3):
        writer.write_batch("s", batch(v=pa.array(np.arange(i * 100, (i + 1) * 100))))
        assert writer.accepted("s") == (i + 1) * 100
        assert writer.visible("s") == seen()
    assert writer.visible("s") == {"arrow": 300, "arrow-file": 0, "parquet": 300}[kind]
    writer.write_batch("s", batch(v=pa.array([1000])))
    writer.flush()
    assert writer.visible("s") == seen() == (0 if kind == "arrow-file" else 301)
    writer.write_batch("s", batch(v=pa.array(["x"])))  # a new part completes the first
    # (Parquet: the new part's row is buffered; the file format: the first part is complete)
    assert writer.visible("s") == seen() == (302 if kind == "arrow" else 301)
    writer.close()
    assert writer.visible("s") == writer.accepted("s") == seen() == 302
    assert path.exists()


# ---------------------------------------------------------------------- description
@pytest.mark.parametrize("kind", KINDS)
def test_describe_says_where_tables_and_frames_live(tmp_path: Path, kind: str):
    directory = tmp_path / "run"
    frames = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    options: dict[str, Any] = {"compression": "zstd"}
    with open_kind(kind, directory, **options) as writer:
        writer.write_batch("power", batch(v=pa.array([1.5]), p=pa.array([{"x": 1.0}], POINT)))
        writer.write_frames("cam", frames)
        table, cam = writer.describe("power"), writer.describe("cam")
        with pytest.raises(UnknownStream):
            writer.describe("nothing")
    mimetype = {
        "arrow": "application/vnd.apache.arrow.stream",
        "arrow-file": "application/vnd.apache.arrow.file",
        "parquet": "application/x-parquet",
    }[kind]
    assert (table.kind, table.format, table.mimetype) == ("table", writer.name, mimetype)
    assert table.path == directory / f"power{SUFFIX[kind]}"
    assert table.key == ""
    assert table.parts == (StreamPart(table.path, "", 0),)
    assert table.columns == {"v": "double", "p.x": "double"}
    assert table.compression == "zstd"
    assert (cam.kind, cam.dtype, cam.shape, cam.accepted) == ("frames", "uint16", (3, 4), 2)
    assert cam.extra_keys == {"frames": "frame", "timestamps_ns": "timestamp_ns",
                              "frame_numbers": "frame_number"}  # fmt: skip
    resource = cam.stream_resource()
    assert resource["uri"] == (directory / f"cam{SUFFIX[kind]}").absolute().as_uri()
    assert resource["mimetype"] == mimetype
    assert isinstance(cam.path, Path)
    stored = read_part(kind, cam.path)
    np.testing.assert_array_equal(
        stored.column(cam.extra_keys["frames"]).combine_chunks().to_numpy_ndarray(), frames
    )


# ---------------------------------------------------------------------- durability
@pytest.mark.parametrize("kind", KINDS)
def test_durable_flush_leaves_every_part_readable(tmp_path: Path, kind: str):
    directory = tmp_path / "run"
    with open_kind(kind, directory) as writer:
        writer.write_batch("s", batch(v=pa.array([1, 2])))
        writer.write_batch("s", batch(v=pa.array(["x"])))  # the first part is completed
        writer.write_frames("cam", np.ones((2, 8, 8), np.float32))
        writer.flush(durable=True)
        if kind != "arrow-file":
            assert writer.visible("s") == writer.accepted("s") == 3
            assert [t.num_rows for t in read_parts(kind, directory, "s")] == [2, 1]
        writer.flush(durable=True)  # nothing new: still fine
    assert [t.num_rows for t in read_parts(kind, directory, "s")] == [2, 1]
    assert not list(directory.glob(".*"))


# ---------------------------------------------------------------------- frames
@pytest.mark.parametrize("kind", KINDS)
def test_a_sequence_of_frames_is_a_stack(tmp_path: Path, kind: str):
    frames = [np.full((4, 6), i, np.int32) for i in range(5)]
    with open_kind(kind, tmp_path / "run") as writer:
        writer.write_frames("cam", frames[:2])
        writer.write_frames("cam", tuple(frames[2:]), timestamps_ns=[7, 8, 9])
    table = read_part(kind, tmp_path / "run" / f"cam{SUFFIX[kind]}")
    stored = table.column("frame").combine_chunks().to_numpy_ndarray()
    np.testing.assert_array_equal(stored, np.stack(frames))
    assert table.column("frame_number").to_pylist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kind", ["arrow", "parquet", "parquet-buffered"])
def test_frames_refused_for_room_leave_the_numbering_contiguous(
    mount_tmpfs: Callable[[str], Path], kind: str
) -> None:
    """A write refused for room (disk full) changes nothing: the next frames get the
    numbers the refused ones would have had, and frames buffered before it are kept."""
    disk = mount_tmpfs("16m")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 2**16, (7, 512, 512), dtype=np.uint16)  # 512 KiB each
    if kind == "arrow":
        writer: ArrowBatchWriter = ArrowWriter(disk / "run")
    else:  # a row group per write, or one per three frames
        per_group = 1 if kind == "parquet" else 3 * frames[0].nbytes
        writer = ParquetWriter(disk / "run", compression="none", row_group_bytes=per_group)
    writer.write_frames("cam", frames[:2])
    filler = fill(disk, leave=1 << 20)
    with pytest.raises(StorageIOError, match="free on the disk") as refused:
        writer.write_frames("cam", frames[2:6])
    assert refused.value.errno == 28
    assert writer.accepted("cam") == writer.stats.frames == 2
    filler.unlink()
    writer.write_frames("cam", frames[6:7])
    writer.close()
    stored_as = "arrow" if kind == "arrow" else "parquet"
    table = read_part(stored_as, disk / "run" / f"cam{SUFFIX[stored_as]}")
    assert table.column("frame_number").to_pylist() == [0, 1, 2]
    stored = table.column("frame").combine_chunks().to_numpy_ndarray()
    np.testing.assert_array_equal(stored, frames[[0, 1, 6]])


# ---------------------------------------------------------------------- options
def test_options_and_the_config_keys_they_honour(tmp_path: Path) -> None:
    assert ArrowWriter.config_keys == {"compression": "compression",
                                       "compression_level": "compression_level"}  # fmt: skip
    assert ParquetWriter.config_keys == {"compression": "compression",
                                         "compression_level": "compression_level",
                                         "chunk_size": "row_group_size"}  # fmt: skip
    values = batch(n=pa.array(np.arange(200_000) // 7), t=pa.array(["same"] * 200_000))
    sizes = []
    for level in (1, 19):
        with ArrowWriter(tmp_path / str(level), compression="zstd",
                         compression_level=level) as writer:  # fmt: skip
            writer.write_batch("s", values)
            assert writer.options.compression_level == level
        assert pl.read_ipc_stream(tmp_path / str(level) / "s.arrows")["n"].sum() == sum(
            values.column("n").to_pylist()
        )
        sizes.append((tmp_path / str(level) / "s.arrows").stat().st_size)
    assert sizes[1] < sizes[0]  # the level reached the codec
    with pytest.raises(ConfigError, match=r"parquet writer: compression = 'lzf'"):
        open_writer("parquet", tmp_path / "x", compression="lzf")
    with pytest.raises(ConfigError, match="arrow writer: compression = 'snappy'"):
        open_writer("arrow", tmp_path / "x", compression="snappy")
    with pytest.raises(ConfigError, match="flush_interval_s"):
        ParquetWriter.validate_options(flush_interval_s=1.0)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_stats_are_a_snapshot(tmp_path: Path, kind: str):
    with open_kind(kind, tmp_path / "run") as writer:
        writer.write_batch("s", batch(v=pa.array([1, 2])))
        before = writer.stats
        writer.write_batch("s", batch(v=pa.array(["x"])))
        after = writer.stats
    assert (before.rows, before.files) == (2, (tmp_path / "run" / f"s{SUFFIX[kind]}",))
    assert (after.rows, len(after.files)) == (3, 2)
    with pytest.raises(AttributeError):
        before.rows = 5  # type: ignore[misc]
