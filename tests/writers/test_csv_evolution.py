"""CSV and the writer contract: every kind of schema change by CSV's policy (widening in
place, new parts for new, missing and incompatible columns), parts recorded in
metadata.json and describe(), durable flushes; read back with polars and pandas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from daq_storage.testing import child_environment
from daq_storage.writers import CsvWriter, StreamDescription, StreamPart


def read_joined(directory: Path, stream: str) -> pl.DataFrame:
    """A stream's parts, as metadata.json lists them, read and joined (the recipe of the
    writer's docstring); a stream of one unwidened file has no entry."""
    document = json.loads((directory / "metadata.json").read_text())
    parts = document["parts"][stream]
    frames = [pl.read_csv(directory / part["file"], infer_schema_length=None) for part in parts]
    assert [part["first"] for part in parts] == [
        sum(f.height for f in frames[:i]) for i in range(len(frames))
    ]
    return pl.concat(frames, how="diagonal_relaxed")


def i32(values: list[int]) -> pa.Array:
    return pa.array(values, pa.int32())


def point(xs: list[float], *, z: bool = False) -> pa.Array:
    return pa.array([{"x": x, "y": -x, **({"z": 2 * x} if z else {})} for x in xs])


# case -> (kind, first batch, second batch, files, the joined columns)
CASES: dict[str, tuple[str, pa.RecordBatch, pa.RecordBatch, int, dict[str, list[Any]]]] = {
    "int32 -> int64": (
        "widening",
        pa.record_batch({"v": i32([1, 2]), "w": [0.5, 1.5]}),
        pa.record_batch({"w": [2.5], "v": pa.array([2**40], pa.int64())}),  # order: no change
        1,
        {"v": [1, 2, 2**40], "w": [0.5, 1.5, 2.5]},
    ),
    "int16 -> float32": (
        "widening",
        pa.record_batch({"v": pa.array([1, 2], pa.int16())}),
        pa.record_batch({"v": pa.array([2.5], pa.float32())}),
        1,
        {"v": [1.0, 2.0, 2.5]},
    ),
    "new column": (
        "new_columns",
        pa.record_batch({"v": i32([1, 2])}),
        pa.record_batch({"v": i32([3]), "w": ["sx"]}),
        2,
        {"v": [1, 2, 3], "w": [None, None, "sx"]},
    ),
    "missing column": (
        "new_columns",
        pa.record_batch({"v": i32([1, 2]), "w": ["sa", "sb"]}),
        pa.record_batch({"v": i32([3])}),
        2,
        {"v": [1, 2, 3], "w": ["sa", "sb", None]},
    ),
    "int -> string": (
        "incompatible",
        pa.record_batch({"v": i32([1, 2]), "w": [0.5, 1.5]}),
        pa.record_batch({"v": ["sx"], "w": [2.5]}),
        2,
        {"v": ["1", "2", "sx"], "w": [0.5, 1.5, 2.5]},
    ),
    "struct child added": (
        "new_columns",
        pa.record_batch({"pos": point([1.0, 2.0]), "v": i32([1, 2])}),
        pa.record_batch({"pos": point([3.0], z=True), "v": i32([3])}),
        2,
        {"pos.x": [1.0, 2.0, 3.0], "pos.y": [-1.0, -2.0, -3.0], "pos.z": [None, None, 6.0],
         "v": [1, 2, 3]},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_every_kind_of_change_reads_back(tmp_path: Path, case: str):
    kind, first, second, files, expected = CASES[case]
    directory = tmp_path / "c"
    with CsvWriter(directory) as writer:
        writer.write_batch("s", first)
        change = writer.check_batch("s", second)
        assert change.kind == kind, str(change)
        assert writer.accepted("s") == first.num_rows  # asking wrote nothing
        writer.write_batch("s", second)
        writer.flush()
        described = writer.describe("s")
    names = ["s.csv", "s__part0002.csv"][:files]
    assert sorted(p.name for p in directory.glob("*.csv")) == names
    assert described.parts == tuple(
        StreamPart(directory / name, "", first_row)
        for name, first_row in zip(names, (0, first.num_rows), strict=False)
    )
    assert described.visible == described.accepted == 3
    joined = read_joined(directory, "s")
    assert joined.select(sorted(expected)).to_dict(as_series=False) == dict(
        sorted(expected.items())
    )
    # pandas reads each part, too.
    rows = sum(len(pd.read_csv(directory / name)) for name in names)
    assert rows == 3


def test_a_struct_column_is_one_column_per_field(tmp_path: Path):
    """A null struct is nulls in each of its fields; nested structs are a.b.c."""
    nested = pa.array([{"a": {"b": 1, "c": "sx"}}, None, {"a": None}])
    with CsvWriter(tmp_path / "c") as writer:
        writer.write_batch("s", pa.record_batch({"n": nested, "v": [1, 2, 3]}))
        assert writer.describe("s").columns == {"n.a.b": "int64", "n.a.c": "string", "v": "int64"}
    frame = pl.read_csv(tmp_path / "c" / "s.csv")
    assert frame.to_dict(as_series=False) == {
        "n.a.b": [1, None, None], "n.a.c": ["sx", None, None], "v": [1, 2, 3]
    }  # fmt: skip


def test_parts_metadata_and_column_descriptions(tmp_path: Path):
    """metadata.json lists each part with its first row and the types of its text;
    later parts add their columns' field metadata; the description agrees."""
    directory = tmp_path / "c"
    volts = pa.field("u", pa.float64(), metadata={"units": "V"})
    amps = pa.field("i", pa.float64(), metadata={"units": "A"})
    first = pa.schema([("timestamp_ns", pa.int32()), volts])
    third = pa.schema([("timestamp_ns", pa.int64()), amps])
    with CsvWriter(directory, iso_timestamps=True) as writer:
        writer.write_batch("s", pa.record_batch([[1, 2], [0.5, 1.0]], schema=first))
        widened = pa.record_batch({"timestamp_ns": pa.array([3], pa.int64()), "u": [2.0]})
        writer.write_batch("s", widened)
        writer.write_batch("s", pa.record_batch([[4], [0.1]], schema=third))  # new columns
        described = writer.describe("s")
    iso = "timestamp[ns, tz=UTC]"
    document = json.loads((directory / "metadata.json").read_text())
    assert document["parts"] == {
        "s": [
            {"file": "s.csv", "first": 0, "types": {"timestamp_ns": iso, "u": "double"}},
            {"file": "s__part0002.csv", "first": 3, "types": {"timestamp_ns": iso, "i": "double"}},
        ]
    }
    assert document["columns"] == {"s": {"u": {"units": "V"}, "i": {"units": "A"}}}
    assert described == StreamDescription(
        stream="s", kind="table", format="csv", mimetype="text/csv", path=directory / "s.csv",
        key="", parts=(StreamPart(directory / "s.csv", "", 0),
                       StreamPart(directory / "s__part0002.csv", "", 3)),
        visible=4, accepted=4, columns={"timestamp_ns": iso, "i": "double"},
    )  # fmt: skip
    stamps = pl.read_csv(directory / "s.csv")["timestamp_ns"].str.to_datetime(time_unit="ns")
    assert stamps.dt.epoch("ns").to_list() == [1, 2, 3]  # widened in place, as ISO text


def test_flush_rewrites_metadata_only_when_it_changed_and_durably(tmp_path: Path):
    directory = tmp_path / "c"
    path = directory / "metadata.json"
    with CsvWriter(directory) as writer:
        writer.write_batch("s", pa.record_batch({"v": [1]}))
        writer.flush(durable=True)
        assert not path.exists()  # nothing to say yet
        writer.write_batch("s", pa.record_batch({"v": ["sx"]}))  # a new part
        writer.flush(durable=True)
        inode = path.stat().st_ino
        writer.flush(durable=True)
        writer.flush()
        assert path.stat().st_ino == inode  # unchanged: not replaced
        writer.set_metadata("operator", "ada")
        writer.flush(durable=True)
        assert path.stat().st_ino != inode  # replaced whole
        assert writer.visible("s") == writer.accepted("s") == 2
    assert json.loads(path.read_text())["file"] == {"operator": "ada"}
    assert read_joined(directory, "s")["v"].to_list() == ["1", "sx"]


_REFUSED_PART = """
import os, resource, signal, sys
import pyarrow as pa
from daq_storage.errors import StorageIOError
from daq_storage.writers import CsvWriter

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full file: EFBIG, not a kill
writer = CsvWriter(sys.argv[1])
writer.write_batch("s", pa.record_batch({"v": [1, 2]}))
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (4, hard))  # no room for the new part's header
try:
    writer.write_batch("s", pa.record_batch({"v": [3], "w": ["sx"]}))
except StorageIOError as exc:
    print("REFUSED", exc.errno, writer.accepted("s"), len(writer.describe("s").parts),
          sorted(os.listdir(sys.argv[1])), flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))
writer.write_batch("s", pa.record_batch({"v": [4], "w": ["sy"]}))
writer.close()
"""


def test_a_new_part_the_disk_refuses_changes_nothing(tmp_path: Path):
    """The new part cannot be started (the file-size limit): no part file is left, the
    stream keeps its one part and its count; the next batch starts the part."""
    directory = tmp_path / "c"
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(_REFUSED_PART), str(directory)],
                            capture_output=True, text=True, timeout=120, check=False,
                            env=child_environment())  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("REFUSED 27 2 1 ['s.csv']"), result.stdout
    assert sorted(os.listdir(directory)) == ["metadata.json", "s.csv", "s__part0002.csv"]
    assert read_joined(directory, "s").to_dict(as_series=False) == {
        "v": [1, 2, 4], "w": [None, None, "sy"]
    }  # fmt: skip
