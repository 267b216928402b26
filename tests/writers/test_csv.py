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

from daq_storage.errors import ConfigError, SchemaMismatch, StorageIOError, UnsupportedData
from daq_storage.sim import SimulatedPowerMeter
from daq_storage.writers import CsvWriter

T0 = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z


def column(values: list[object], kind: pa.DataType) -> pa.RecordBatch:
    return pa.record_batch({"n": pa.array(values, kind)})


def test_frames_and_nested_columns_are_refused_at_once(tmp_path: Path):
    with CsvWriter(tmp_path / "c") as writer:
        with pytest.raises(UnsupportedData, match="CSV cannot store frames"):
            writer.write_frames("cam", np.zeros((1, 2, 2)))
        with pytest.raises(UnsupportedData, match=r"column 'xs'.*list"):
            writer.write_batch("s", pa.record_batch({"xs": [[1, 2]]}))
        gap = pa.record_batch({"gap": pa.array([None], pa.month_day_nano_interval())})
        with pytest.raises(UnsupportedData, match=r"column 'gap'.*month_day_nano_interval"):
            writer.write_batch("i", gap)
        writer.write_batch("s", pa.record_batch({"v": [1]}))
        with pytest.raises(SchemaMismatch, match=r"stream 's': CSV columns \['v'\].*\['w'\]"):
            writer.write_batch("s", pa.record_batch({"w": [1]}))
    assert pl.read_csv(tmp_path / "c" / "s.csv")["v"].to_list() == [1]
    assert not (tmp_path / "c" / "xs.csv").exists()


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
def test_a_column_that_changes_kind_is_refused_and_the_file_kept(
    tmp_path: Path, first: pa.RecordBatch, then: pa.RecordBatch, old: str, new: str
):
    path = tmp_path / "c" / "probe.csv"
    with CsvWriter(tmp_path / "c") as writer:
        writer.write_batch("probe", first)
        writer.flush()
        before = path.read_bytes()
        with pytest.raises(SchemaMismatch) as caught:
            writer.write_batch("probe", then)
        assert path.read_bytes() == before  # nothing of the batch was written
        writer.write_batch("probe", first)  # the stream goes on
    message = str(caught.value)
    assert f"stream 'probe': column 'n' of {path} holds " in message
    assert re.search(f"holds {old}, got {new};", message), message
    values = pl.read_csv(path, infer_schema_length=None)["n"].to_list()
    if pa.types.is_timestamp(first.schema.field(0).type):
        assert len(values) == 4
    else:
        assert values == first.column(0).to_pylist() * 2


@pytest.mark.parametrize(
    ("first", "then", "polars_type"),
    [
        (column([1, 2], pa.int32()), column([2**40], pa.int64()), pl.Int64),  # the stream widens
        (column([2**40], pa.int64()), column([1, 2], pa.int32()), pl.Int64),
        (column([7], pa.int16()), column([65_535], pa.uint16()), pl.Int64),
        (column([0.25], pa.float32()), column([1e300], pa.float64()), pl.Float64),
        (column([1e300], pa.float64()), column([0.25], pa.float32()), pl.Float64),
        (column(["a"], pa.string()), column(["b"], pa.large_string()), pl.String),
        (
            column(["a"], pa.string()),
            pa.record_batch({"n": pa.array(["b", "b"]).dictionary_encode()}),
            pl.String,
        ),
        (
            pa.record_batch({"n": pa.array(["a", "b"]).dictionary_encode()}),
            column(["c"], pa.string()),
            pl.String,
        ),
        (column([None], pa.null()), column([3], pa.int64()), pl.Int64),
        (column([3], pa.int64()), column([None], pa.null()), pl.Int64),
    ],
)
def test_lossless_widening_is_accepted(
    tmp_path: Path, first: pa.RecordBatch, then: pa.RecordBatch, polars_type: pl.DataType
):
    with CsvWriter(tmp_path / "c") as writer:
        writer.write_batch("s", first)
        writer.write_batch("s", then)
        writer.write_batch("s", first)
    # A one-column stream writes a null as "": polars reads it as null when told so.
    frame = pl.read_csv(tmp_path / "c" / "s.csv", infer_schema_length=None, null_values="")
    assert frame.columns == ["n"]  # one header row
    assert frame.schema["n"] == polars_type
    expected = [*first.column(0).to_pylist(), *then.column(0).to_pylist()]
    expected += first.column(0).to_pylist()
    got = frame["n"].to_list()
    if polars_type == pl.Float64:
        np.testing.assert_array_equal(np.array(got), np.array(expected, np.float64))
    else:
        assert got == expected


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
        assert stats.files == [directory / "power.csv", directory / "other.csv"]
        writer.set_metadata("operator", "ada")
        writer.set_metadata("wavelength_nm", 633.0, stream="power")
    assert writer.stats.files[-1] == directory / "metadata.json"
    assert writer.stats.file_size == sum(p.stat().st_size for p in writer.stats.files)
    document = json.loads((directory / "metadata.json").read_text())
    assert document == {
        "file": {"operator": "ada"},
        "streams": {"power": {"wavelength_nm": 633.0}},
        "columns": {"power": {"value": {"units": "W"}}},  # the field metadata
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
        with pytest.raises(ConfigError, match="csv delimiter must be one character"):
            CsvWriter(tmp_path / "d", delimiter=bad)


def test_unwritable_directory():
    with pytest.raises(StorageIOError, match="cannot create output directory"):
        CsvWriter("/proc/daq_storage_test_dir")
