"""The conformance suite, part one: what a new user meets first, in every format.

Output named as what it is, stream metadata and units a reader can find, times that
read back as dates, the tables users have (pandas, polars, any Arrow library), no
leftovers from a writer that stored nothing, and a single frame named as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from daq_storage.errors import (
    ConfigError,
    InvalidName,
    SchemaMismatch,
    StorageIOError,
    UnsupportedData,
)
from daq_storage.sim import SimulatedCamera, SimulatedDaqCard
from daq_storage.testing._hooks import ConformanceBase
from daq_storage.writers import get_writer_class, open_writer

__all__ = ["FIRST_METADATA", "START_NS", "TABLE_KINDS", "FirstUseTests", "users_table"]

START_NS = 1_700_000_000_000_000_000
FIRST_METADATA = {"sample_rate": "100000.0", "start_ns": str(START_NS), "label": "V"}


def _values(start: int, metadata: dict[str, str] | None = None) -> pa.RecordBatch:
    """Ten rows of ``v`` (``start`` ...), with schema ``metadata``."""
    return pa.record_batch({"v": np.arange(start, start + 10, dtype=np.float64)},
                           metadata=metadata)  # fmt: skip


class _ArrowArrayOnly:
    """A table from another Arrow library: only the C data interface."""

    def __init__(self, batch: pa.RecordBatch) -> None:
        self._batch = batch

    def __arrow_c_array__(self, requested_schema: Any = None) -> Any:
        return self._batch.__arrow_c_array__(requested_schema)


class _ArrowStreamOnly:
    """A table from another Arrow library: only the C stream interface."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self._table.__arrow_c_stream__(requested_schema)


class _ToArrowOnly:
    """A table from a library that converts itself (``to_arrow()``, as polars and duckdb)."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def to_arrow(self) -> pa.Table:
        return self._table


#: The kinds of table :func:`users_table` makes that hold rows.
TABLE_KINDS = ["table", "polars", "pandas", "c array", "c stream", "to_arrow"]


def users_table(kind: str) -> Any:
    """Three rows of ``v`` (1.5, 2.5, 3.5) and ``name`` (a, b, c) as a user has them
    (``kind``: one of :data:`TABLE_KINDS`), or none of them (``"empty table"``: a table
    sliced to nothing; ``"no chunks"``: a table of no batches; ``"empty stream"``: the
    C stream of a table of no batches)."""
    batch = pa.record_batch({"v": [1.5, 2.5, 3.5], "name": ["a", "b", "c"]})
    table = pa.Table.from_batches([batch.slice(0, 1), batch.slice(1)])  # two chunks
    if kind == "pandas":
        pytest.importorskip("pandas")
        return table.to_pandas()
    if kind == "polars":
        return pl.from_arrow(table)
    no_chunks = pa.Table.from_batches([], schema=batch.schema)
    made: dict[str, Any] = {
        "table": table,
        "c array": _ArrowArrayOnly(batch),
        "c stream": _ArrowStreamOnly(table),
        "to_arrow": _ToArrowOnly(table),
        "empty table": table.slice(0, 0),
        "no chunks": no_chunks,
        "empty stream": _ArrowStreamOnly(no_chunks),
    }
    return made[kind]


class FirstUseTests(ConformanceBase):
    """Tests of :class:`WriterConformance` about first use (see the module docstring)."""

    # --- metadata and units ---
    def test_stream_metadata_is_the_first_batch_s_and_changes_are_recorded(
        self, tmp_path: Path
    ) -> None:
        self.requires_tables()
        changed = {**FIRST_METADATA, "sample_rate": "50000.0", "gain": "2"}
        with self.open(tmp_path) as writer:
            writer.write_batch("daq", _values(0, FIRST_METADATA))
            writer.write_batch("daq", _values(10, FIRST_METADATA))
            writer.write_batch("daq", _values(20, changed))
            writer.write_batch("daq", _values(30, changed))
            writer.write_batch("daq", _values(40))  # no metadata: nothing changes
            writer.write_batch("daq", _values(50, FIRST_METADATA))
        metadata = self.read_metadata(tmp_path / self.target, "daq")
        assert metadata["sample_rate"] == 100000.0
        assert metadata["start_ns"] == START_NS
        assert metadata["label"] == "V"  # not JSON: kept as text
        assert "gain" not in metadata
        assert metadata["metadata_changes"] == [
            {"row": 20, "key": "sample_rate", "value": 50000.0},
            {"row": 20, "key": "gain", "value": 2},
            {"row": 50, "key": "sample_rate", "value": 100000.0},
        ]
        assert self.read_table(tmp_path / self.target, "daq").num_rows == 60

    def test_constant_metadata_records_no_change(self, tmp_path: Path) -> None:
        """The simulated DAQ card: a time base and a scale to volts, the same every block."""
        self.requires_tables()
        card = SimulatedDaqCard(2, sample_rate=1000.0, seed=0, start_ns=START_NS)
        with self.open(tmp_path) as writer:
            for _ in range(3):
                writer.write_batch("daq_card", card.read_block(100).to_record_batch())
        metadata = self.read_metadata(tmp_path / self.target, "daq_card")
        assert metadata["sample_rate"] == 1000.0
        assert metadata["start_ns"] == START_NS
        assert metadata["volts_per_count"] == card.volts_per_count
        assert "metadata_changes" not in metadata

    def test_columns_keep_their_units(self, tmp_path: Path) -> None:
        self.requires_tables()
        schema = pa.schema([
            pa.field("ai0", pa.int16(), metadata={"units": "V", "long_name": "ai0 voltage",
                                                  "scale_factor": "0.5"}),
            pa.field("count", pa.int64(), metadata={"units": "1"}),
            pa.field("plain", pa.float64()),
        ])  # fmt: skip
        batch = pa.record_batch([pa.array([1, 2], pa.int16()), pa.array([3, 4]),
                                 pa.array([0.5, 1.5])], schema=schema)  # fmt: skip
        with self.open(tmp_path) as writer:
            writer.write_batch("daq", batch)
        path = tmp_path / self.target
        ai0 = self.read_column_attributes(path, "daq", "ai0")
        assert (ai0["units"], ai0["long_name"]) == ("V", "ai0 voltage")
        # A number, as xarray needs it to scale the counts.
        assert ai0["scale_factor"] == (0.5 if self.typed_attributes else "0.5")
        assert self.read_column_attributes(path, "daq", "count")["units"] == "1"  # CF text
        assert "units" not in self.read_column_attributes(path, "daq", "plain")

    def test_time_columns_read_back_as_dates(self, tmp_path: Path) -> None:
        self.requires_tables()
        stamps = np.array([START_NS, START_NS + 1_500_000], np.int64)  # CSV readers: us
        batch = pa.record_batch({"time": pa.array(stamps, pa.timestamp("ns", "UTC")),
                                 "v": [1.0, 2.0]})  # fmt: skip
        with self.open(tmp_path) as writer:
            writer.write_batch("pm", batch)
        times = self.read_times(tmp_path / self.target, "pm", "time")
        np.testing.assert_array_equal(times, stamps.astype("datetime64[ns]"))

    def test_frame_times_read_back_as_dates(self, tmp_path: Path) -> None:
        self.requires_frames()
        if not self.frame_times_are_dates:
            self.skip(f"{self.writer_name} keeps frame times as integers, not dates")
        block = SimulatedCamera((8, 8), seed=0, start_ns=START_NS).frames(3)
        with self.open(tmp_path) as writer:
            writer.write_frames("cam", block.frames, timestamps_ns=block.timestamps_ns)
        times = self.read_frame_times(tmp_path / self.target, "cam")
        np.testing.assert_array_equal(times, block.timestamps_ns.astype("datetime64[ns]"))

    def test_frame_times_past_int64_are_refused(self, tmp_path: Path) -> None:
        """A time readers cannot decode as a date (past 2262) is refused, naming it."""
        self.requires_frames()
        with self.open(tmp_path) as writer:
            with pytest.raises(SchemaMismatch, match=r"stream 'cam'.*timestamps_ns.*2262"):
                writer.write_frames("cam", np.zeros((1, 4, 4), np.uint16),
                                    timestamps_ns=[2**63])  # fmt: skip
            writer.write_frames("cam", np.zeros((1, 4, 4), np.uint16), timestamps_ns=[2**63 - 1])
        assert len(self.read_frames(tmp_path / self.target, "cam")[0]) == 1

    # --- what write_batch takes ---
    @pytest.mark.parametrize("kind", [*TABLE_KINDS, "empty table", "no chunks", "empty stream"])
    def test_write_batch_takes_the_tables_users_have(self, tmp_path: Path, kind: str) -> None:
        given = users_table(kind)
        if not self.tables_supported:
            with self.open(tmp_path) as writer, pytest.raises(UnsupportedData, match="'s'"):
                writer.write_batch("s", given)
            assert writer.stats.files == ()
        else:
            with self.open(tmp_path) as writer:
                writer.write_batch("s", given)
                writer.write_batch("s", given)
                empty = kind in ("empty table", "no chunks", "empty stream")
                assert writer.accepted("s") == (0 if empty else 6)
            self.check_users_table(tmp_path, 0 if empty else 3)

    def check_users_table(self, tmp_path: Path, rows: int) -> None:
        got = self.read_table(tmp_path / self.target, "s")
        expected = [1.5, 2.5, 3.5][:rows]
        assert got.column("v").to_pylist() == expected * 2
        assert [str(v) for v in got.column("name").to_pylist()] == [*"abc"[: len(expected)]] * 2

    def test_write_batch_names_what_it_takes(self, tmp_path: Path) -> None:
        self.requires_tables()
        with self.open(tmp_path) as writer:
            for wrong in ({"v": [1]}, [1, 2], np.arange(3)):
                with pytest.raises(UnsupportedData) as info:
                    writer.write_batch("s", wrong)
                message = str(info.value)
                assert type(wrong).__name__ in message
                assert "'s'" in message
                assert "polars or pandas DataFrame" in message
            writer.write_batch("s", _values(0))
        assert self.read_table(tmp_path / self.target, "s").num_rows == 10

    # --- names and leftovers ---
    @pytest.mark.parametrize("kind", ["no columns", "no columns, no rows", "batch, no columns"])
    def test_a_table_without_columns_is_refused_naming_it(self, tmp_path: Path, kind: str) -> None:
        """Rows without a column hold nothing a format can store: refused, saying so,
        and the stream goes on as if the call never came."""
        self.requires_tables()
        given = {
            "no columns": pa.table({"v": [1.0, 2.0]}).drop_columns(["v"]),
            "no columns, no rows": pa.table({}),
            "batch, no columns": pa.record_batch({"v": [1.0]}).drop_columns(["v"]),
        }[kind]
        with self.open(tmp_path) as writer:
            writer.write_batch("s", _values(0))
            with pytest.raises(UnsupportedData, match=r"stream 's'.*no columns"):
                writer.write_batch("s", given)
            assert writer.accepted("s") == 10
        assert self.read_values(tmp_path / self.target, "s") == list(range(10))

    def test_a_directory_named_like_a_stream_file_is_refused(self, tmp_path: Path) -> None:
        cls = get_writer_class(self.writer_name)
        if cls.path_suffix:  # a file or a store: its name takes the suffix
            assert self.target.endswith(cls.path_suffix)
            self.skip(f"{self.writer_name} writes one file or store, named {cls.path_suffix!r}")
        for suffix in cls.suffixes:
            path = tmp_path / f"run{suffix}"
            with pytest.raises(ConfigError, match=rf"one file per stream.*without the '\{suffix}'"):
                open_writer(self.writer_name, path, **self.options)
            assert not path.exists()

    def test_an_existing_stream_file_is_never_overwritten(self, tmp_path: Path) -> None:
        cls = get_writer_class(self.writer_name)
        if cls.path_suffix:
            self.skip(f"{self.writer_name} refuses an existing file or store as a whole")
        target = tmp_path / self.target
        target.mkdir()
        taken = target / f"s{cls.suffixes[0]}"
        taken.write_bytes(b"an earlier run")
        with self.open(tmp_path) as writer:
            with pytest.raises(StorageIOError, match=r"'s'.*already exists.*never overwritten"):
                self.write_something(writer, "s")
            self.write_something(writer, "t")  # the writer goes on
        assert taken.read_bytes() == b"an earlier run"
        assert (target / f"t{cls.suffixes[0]}").exists()

    def test_a_writer_that_stores_nothing_leaves_nothing(self, tmp_path: Path) -> None:
        nested = tmp_path / "new" / "deeper"
        writer = open_writer(self.writer_name, nested / self.target, **self.options)
        with pytest.raises(InvalidName):
            self.write_something(writer, "")
        with pytest.raises(UnsupportedData):
            writer.write_batch("s", {"v": [1]})
        writer.close()
        assert writer.stats.files == ()
        assert not (tmp_path / "new").exists()
        with open_writer(self.writer_name, tmp_path / self.target, **self.options):
            pass
        assert list(tmp_path.iterdir()) == []

    def test_a_claimed_name_is_left_as_it_was(self, tmp_path: Path) -> None:
        """An empty directory (or, for a single file, an empty file) made to claim the
        name stays, as it was, when nothing is stored in it."""
        target = tmp_path / self.target
        if get_writer_class(self.writer_name).path_is_directory:
            target.mkdir()
        else:
            target.touch()
        writer = open_writer(self.writer_name, target, **self.options)
        with writer, pytest.raises(InvalidName):
            self.write_something(writer, "")
        assert target.exists()
        if target.is_dir():
            assert list(target.iterdir()) == []
        else:
            assert target.stat().st_size == 0

    def test_metadata_alone_counts_as_stored(self, tmp_path: Path) -> None:
        with self.open(tmp_path) as writer:
            writer.set_metadata("operator", "ada")
        assert (tmp_path / self.target).exists()

    # --- frames ---
    def test_a_single_frame_is_named_as_such(self, tmp_path: Path) -> None:
        self.requires_frames()
        frames = np.arange(2 * 6 * 8, dtype=np.uint16).reshape(2, 6, 8)
        with self.open(tmp_path) as writer:
            writer.write_frames("cam", frames)
            single = r"'cam'.*\(6, 8\).*looks like a single frame; pass frame\[np.newaxis\]"
            with pytest.raises(SchemaMismatch, match=single):
                writer.write_frames("cam", frames[0])
            writer.write_frames("cam", frames[1][np.newaxis])
        got, _, numbers = self.read_frames(tmp_path / self.target, "cam")
        np.testing.assert_array_equal(got, np.concatenate([frames, frames[1:]]))
        assert list(numbers) == [0, 1, 2]
