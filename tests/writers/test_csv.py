"""CSV specifics: column types that change mid-stream, ISO-8601 timestamps, stats, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from daq_storage.errors import ConfigError, StorageIOError, UnsupportedData
from daq_storage.sim import SimulatedPowerMeter
from daq_storage.writers import CsvWriter, StreamPart

T0 = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z


def column(values: list[object], kind: pa.DataType) -> pa.RecordBatch:
    return pa.record_batch({"n": pa.array(values, kind)})


def test_frames_and_columns_without_text_are_refused_up_front(tmp_path: Path):
    """check_batch answers for the types and values CSV cannot hold, before anything is
    written: no file is started for them."""
    with CsvWriter(tmp_path / "c") as writer:
        for frames in (np.zeros((1, 2, 2)), [np.zeros((2, 2))]):
            with pytest.raises(
                UnsupportedData, match=r"csv writer cannot store frames \(stream 'cam'\)"
            ):
                writer.write_frames("cam", frames)
        gap = pa.record_batch({"gap": pa.array([None], pa.month_day_nano_interval())})
        not_text = pa.record_batch({"raw": pa.array([b"\xff\xfe"], pa.binary())})
        refused = [
            (pa.record_batch({"xs": [[1, 2]]}), r"column 'xs'.*list"),
            (gap, r"column 'gap'.*month_day_nano_interval"),
            (pa.record_batch({"m": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64()))}),
             r"column 'm'.*map"),
            (not_text, r"binary column 'raw' holds bytes that are not UTF-8"),
            (pa.record_batch({"a.b": [1], "a": pa.array([{"b": 2}])}),
             r"two columns would be named 'a.b'"),
        ]  # fmt: skip
        for batch, message in refused:
            for call in (writer.check_batch, writer.write_batch):
                with pytest.raises(UnsupportedData, match=message):
                    call("s", batch)
        writer.write_batch("s", pa.record_batch({"v": [1]}))
        with pytest.raises(UnsupportedData, match=r"column 'xs'.*list"):
            writer.check_batch("s", pa.record_batch({"v": [2], "xs": [[1]]}))
        assert writer.accepted("s") == 1
    assert pl.read_csv(tmp_path / "c" / "s.csv")["v"].to_list() == [1]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["s.csv"]


@pytest.mark.parametrize(
    ("first", "then", "old", "new"),
    [
        (column([1, 2], pa.int64()), column(["x"], pa.string()), "int64", "string"),
        (column([1, 2], pa.int64()), column([0.5], pa.float64()), "int64", "double"),
        (column([1, 2], pa.int32()), column([0.5], pa.float32()), "int32", "float"),
        (column([1.5, 2.5], pa.float64()), column([3], pa.int64()), "double", "int64"),
        (column([1.5, 2.5], pa.float64()), column(["x"], pa.string()), "double", "string"),
        (column(["a", "b"], pa.string()), column([3], pa.int64()), "string", "int64"),
        (column([True, False], pa.bool_()), column([1], pa.int8()), "bool", "int8"),
        (column([1, 2], pa.int64()), column([2**64 - 1], pa.uint64()), "int64", "uint64"),
        (
            column([T0, T0], pa.timestamp("ns", "UTC")),
            column([T0 // 1000], pa.timestamp("us", "UTC")),
            r"timestamp\[ns, tz=UTC\]",
            r"timestamp\[us, tz=UTC\]",
        ),
    ],
)
def test_a_column_that_changes_kind_continues_in_a_new_part(
    tmp_path: Path, first: pa.RecordBatch, then: pa.RecordBatch, old: str, new: str
):
    """An incompatible change (by the one rule of schema.classify_change) keeps the
    file as it was and starts ``probe__part0002.csv``; going back starts a third part.
    Every part reads on its own, and metadata.json lists them with their first rows."""
    directory = tmp_path / "c"
    with CsvWriter(directory) as writer:
        writer.write_batch("probe", first)
        writer.flush()
        before = (directory / "probe.csv").read_bytes()
        change = writer.check_batch("probe", then)
        assert change.kind == "incompatible"
        assert re.search(f"from {old} to {new}", str(change)), str(change)
        writer.write_batch("probe", then)
        writer.write_batch("probe", first)
        assert writer.visible("probe") == writer.accepted("probe") == 5
        parts = writer.describe("probe").parts
    assert (directory / "probe.csv").read_bytes() == before  # the first part untouched
    names = ["probe.csv", "probe__part0002.csv", "probe__part0003.csv"]
    assert [part.path for part in parts] == [directory / name for name in names]
    assert [part.first for part in parts] == [0, 2, 3]
    document = json.loads((directory / "metadata.json").read_text())
    assert [(p["file"], p["first"]) for p in document["parts"]["probe"]] == [
        (name, part.first) for name, part in zip(names, parts, strict=True)
    ]
    values = [
        pl.read_csv(directory / name, infer_schema_length=None)["n"].to_list() for name in names
    ]
    if pa.types.is_timestamp(first.schema.field(0).type):
        assert [len(v) for v in values] == [2, 1, 2]
    else:
        expected = [first.column(0).to_pylist(), then.column(0).to_pylist()]
        assert values == [*expected, expected[0]]


@pytest.mark.parametrize(
    ("first", "then", "polars_type", "recorded"),
    [
        (column([1, 2], pa.int32()), column([2**40], pa.int64()), pl.Int64, "int64"),
        (column([2**40], pa.int64()), column([1, 2], pa.int32()), pl.Int64, None),
        (column([7], pa.int16()), column([0.5], pa.float32()), pl.Float64, "float"),
        (column([7], pa.uint8()), column([-300], pa.int16()), pl.Int64, "int16"),
        (column([0.25], pa.float32()), column([1e300], pa.float64()), pl.Float64, "double"),
        (column([1e300], pa.float64()), column([0.25], pa.float32()), pl.Float64, None),
        (column(["a"], pa.string()), column(["b"], pa.large_string()), pl.String, None),
    ],
)
def test_a_widening_goes_on_in_the_same_file(
    tmp_path: Path,
    first: pa.RecordBatch,
    then: pa.RecordBatch,
    polars_type: pl.DataType,
    recorded: str | None,
):
    """A safe widening (or narrower values, or string/large_string: no change at all)
    stays in one file under one header; metadata.json records the type a widened
    column's text now reads as."""
    directory = tmp_path / "c"
    with CsvWriter(directory) as writer:
        writer.write_batch("s", first)
        writer.write_batch("s", then)
        writer.write_batch("s", first)  # narrower again: no change
        described = writer.describe("s")
    assert described.parts == (StreamPart(directory / "s.csv", "", 0),)
    assert sorted(p.name for p in directory.iterdir()) == (
        ["s.csv"] if recorded is None else ["metadata.json", "s.csv"]
    )
    if recorded is not None:
        document = json.loads((directory / "metadata.json").read_text())
        assert document["parts"] == {"s": [{"file": "s.csv", "first": 0, "types": {"n": recorded}}]}
        assert described.columns == {"n": recorded}
    frame = pl.read_csv(directory / "s.csv", infer_schema_length=None)
    assert frame.columns == ["n"]  # one header row
    assert frame.schema["n"] == polars_type
    expected = [*first.column(0).to_pylist(), *then.column(0).to_pylist()]
    expected += first.column(0).to_pylist()
    got = frame["n"].to_list()
    if polars_type == pl.Float64:
        np.testing.assert_array_equal(np.array(got), np.array(expected, np.float64))
    else:
        assert got == expected


@pytest.mark.parametrize(
    ("first", "then"),
    [
        (column([7], pa.int16()), column([65_535], pa.uint16())),
        (column(["a"], pa.string()), pa.record_batch({"n": pa.array(["b"]).dictionary_encode()})),
        (pa.record_batch({"n": pa.array(["a"]).dictionary_encode()}), column(["c"], pa.string())),
        (column([None], pa.null()), column([3], pa.int64())),
        (column([3], pa.int64()), column([None], pa.null())),
    ],
)  # fmt: skip
def test_types_without_a_safe_widening_go_on_in_a_new_part(
    tmp_path: Path, first: pa.RecordBatch, then: pa.RecordBatch
):
    """Changes the one rule calls incompatible (mixed signs, dictionary and plain text,
    the null type) lose nothing: the values are in the second part."""
    directory = tmp_path / "c"
    with CsvWriter(directory) as writer:
        writer.write_batch("s", first)
        assert writer.check_batch("s", then).kind == "incompatible"
        writer.write_batch("s", then)
    # A one-column stream writes a null as "": polars reads it as null when told so.
    values = [
        pl.read_csv(directory / name, infer_schema_length=None, null_values="")["n"].to_list()
        for name in ("s.csv", "s__part0002.csv")
    ]
    assert values == [first.column(0).to_pylist(), then.column(0).to_pylist()]


def iso_batch() -> pa.RecordBatch:
    stamps = [T0, T0 + 1, -1, 0]
    return pa.record_batch(
        {
            "timestamp_ns": pa.array(stamps, pa.int64()),
            "trigger_timestamp_ns": pa.array([T0] * 4, pa.uint64()),
            "exposure_ns": pa.array([5000] * 4, pa.int64()),  # a duration: stays a number
            "acquired": pa.array([T0, None, T0 + 999, 1], pa.timestamp("ns", "Europe/Berlin")),
            "stage_ms": pa.array([T0 // 10**6] * 4, pa.timestamp("ms", "UTC")),
            "local": pa.array([T0 // 1000] * 4, pa.timestamp("us")),
        }
    )


def test_iso_timestamps_parse_back_to_the_same_instants(tmp_path: Path):
    batch = iso_batch()
    with CsvWriter(tmp_path / "c", iso_timestamps=True) as writer:
        writer.write_batch("events", batch)
    path = tmp_path / "c" / "events.csv"
    lines = path.read_text().splitlines()
    assert lines[1].startswith(
        '"2023-11-14T22:13:20.123456789Z","2023-11-14T22:13:20.123456789Z",5000,'
    )
    text = {name: pl.String for name in batch.schema.names if name != "exposure_ns"}
    frame = pl.read_csv(path, schema_overrides=text)
    assert frame["exposure_ns"].to_list() == [5000] * 4
    expected_ns = {
        "timestamp_ns": [T0, T0 + 1, -1, 0],
        "trigger_timestamp_ns": [T0] * 4,
        "acquired": [T0, None, T0 + 999, 1],
        "stage_ms": [T0 // 10**6 * 10**6] * 4,
    }
    for name, instants in expected_ns.items():
        parsed = frame[name].str.to_datetime(time_unit="ns")
        assert parsed.dtype == pl.Datetime("ns", "UTC"), name
        assert parsed.dt.epoch("ns").to_list() == instants, name
        # pandas reads the same instants, as UTC.
        series = pd.to_datetime(pd.read_csv(path, dtype=str)[name], format="ISO8601")
        assert str(series.dt.tz) == "UTC", name
        assert [None if pd.isna(t) else t.as_unit("ns").value for t in series] == instants, name
    # A timestamp without a time zone is written without one.
    local = frame["local"].str.to_datetime(time_unit="ns")
    assert local.dtype == pl.Datetime("ns")
    assert local.dt.epoch("ns").to_list() == [T0 // 1000 * 1000] * 4


def test_iso_timestamps_refuse_a_value_out_of_range(tmp_path: Path):
    with CsvWriter(tmp_path / "c", iso_timestamps=True) as writer:
        writer.write_batch("s", pa.record_batch({"timestamp_ns": pa.array([T0], pa.uint64())}))
        too_late = pa.record_batch({"timestamp_ns": pa.array([2**64 - 1], pa.uint64())})
        with pytest.raises(UnsupportedData, match=r"stream 's': column 'timestamp_ns'"):
            writer.write_batch("s", too_late)
    assert (tmp_path / "c" / "s.csv").read_text().splitlines()[1:] == [
        '"2023-11-14T22:13:20.123456789Z"'
    ]


def test_stats_and_metadata_sidecar(tmp_path: Path):
    meter = SimulatedPowerMeter(seed=0, start_ns=0)
    batches = [meter.read_batch(300), meter.read_batch(300).slice(10, 50)]
    with CsvWriter(tmp_path / "c") as writer:
        for batch in batches:
            writer.write_batch("power", batch)
        writer.write_batch("other", pa.record_batch({"v": [1]}))
        stats = writer.stats
        assert (stats.batches, stats.rows, stats.frames) == (3, 351, 0)
        assert stats.bytes_written == sum(b.nbytes for b in batches) + 8
        directory = tmp_path / "c"
        assert stats.files == (directory / "power.csv", directory / "other.csv")
        writer.set_metadata("operator", "ada")
        writer.set_metadata("wavelength_nm", 633.0, stream="power")
    assert writer.stats.files[-1] == directory / "metadata.json"
    assert writer.stats.file_size == sum(p.stat().st_size for p in writer.stats.files)
    document = json.loads((directory / "metadata.json").read_text())
    assert document == {
        "file": {"operator": "ada"},
        "streams": {"power": {"wavelength_nm": 633.0}},
        "columns": {"power": {"value": {"units": "W"}}},  # the field metadata
        "parts": {},  # no stream has more than one file, nor a widened column
    }
    frame = pl.read_csv(directory / "power.csv")
    assert frame.height == 350
    assert frame["value"].to_list() == [
        *batches[0].column("value").to_pylist(),
        *batches[1].column("value").to_pylist(),
    ]


def test_delimiter(tmp_path: Path):
    with CsvWriter(tmp_path / "c", delimiter=";") as writer:
        writer.write_batch("s", pa.record_batch({"a": [1, 2], "b": ["x;y", "z"]}))
    frame = pl.read_csv(tmp_path / "c" / "s.csv", separator=";")
    assert frame.to_dict(as_series=False) == {"a": [1, 2], "b": ["x;y", "z"]}
    for bad in (",,", "", '"', "\n"):
        with pytest.raises(ConfigError, match=r"csv writer: delimiter = .*must be one character"):
            CsvWriter(tmp_path / "d", delimiter=bad)


def test_unwritable_directory():
    with pytest.raises(StorageIOError, match="cannot create output directory"):
        CsvWriter("/proc/daq_storage_test_dir")
