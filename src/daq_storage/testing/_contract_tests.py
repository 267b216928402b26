"""The conformance suite, part three: the writer contract a caller that fans one stream
out to several writers relies on (the Recorder, the documents layer).

Schema evolution by the writer's declared policy, ``check_batch`` / ``check_all`` that
answer truthfully before anything is written, ``visible`` against ``accepted`` and what
a reader finds after ``flush()``, durable flushes, output readable after ``kill -9``,
refused writes (bad input, a full disk) that change nothing, stats snapshots that walk
no directory, and ``describe()`` that agrees with the reader.
"""

from __future__ import annotations

import dataclasses
import errno
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daq_storage.errors import (
    DaqStorageError,
    SchemaMismatch,
    StorageIOError,
    UnknownStream,
    UnsupportedData,
)
from daq_storage.schema import CHANGE_KINDS, EVOLUTIONS
from daq_storage.testing._hooks import (
    child_environment,
    fill_disk,
    null_to_none,
    stats_without_walking,
    tree_size,
)
from daq_storage.testing._kill import kill_when, line_starting
from daq_storage.testing._memory import MemoryWriter, StrictMemoryWriter
from daq_storage.testing._roundtrip import FIXTURES, RoundTripTests
from daq_storage.testing.strategies import evolving_batches
from daq_storage.writers import StreamPart, Writer, WriterOptions, WriterStats, check_all

__all__ = ["ContractTests", "EVOLUTION_CASES"]

#: A schema change of each kind: the case's name -> (its kind, a first batch, a second).
EVOLUTION_CASES = ["widening", "new column", "missing column", "incompatible"]


def _evolution(case: str, text: str) -> tuple[str, pa.RecordBatch, pa.RecordBatch]:
    if case == "widening":  # 2**40 does not fit the stream's int32
        first = pa.record_batch({"v": pa.array([0, 1, 2], pa.int32())})
        return "widening", first, pa.record_batch({"v": pa.array([3, 2**40, 5], pa.int64())})
    if case == "new column":
        first = pa.record_batch({"v": [0.0, 1.0, 2.0]})
        return "new_columns", first, pa.record_batch({"v": [3.0, 4.0], "w": [0.5, 1.5]})
    if case == "missing column":
        first = pa.record_batch({"v": [0.0, 1.0, 2.0], "w": [0.5, 1.5, 2.5]})
        return "new_columns", first, pa.record_batch({"v": [3.0, 4.0]})
    first = pa.record_batch({"v": pa.array([0, 1, 2], pa.int64())})
    return "incompatible", first, pa.record_batch({"v": [f"{text}x", f"{text}y"]})


def _columns(*batches: pa.RecordBatch) -> dict[str, list[Any]]:
    """The batches as one stream's columns, a column a batch lacks as nulls."""
    names = list(dict.fromkeys(name for batch in batches for name in batch.schema.names))
    return {
        name: [
            value
            for batch in batches
            for value in (
                batch.column(name).to_pylist()
                if name in batch.schema.names
                else [None] * batch.num_rows
            )
        ]
        for name in names
    }


def _counters(stats: WriterStats) -> tuple[int, int, int, int]:
    return stats.batches, stats.rows, stats.frames, stats.bytes_written


_KILL_SCRIPT = """
import ast, signal, sys
import numpy as np, pyarrow as pa
from daq_storage.writers import open_writer

name, target, options, kind = sys.argv[1], sys.argv[2], ast.literal_eval(sys.argv[3]), sys.argv[4]
writer = open_writer(name, target, **options)

def write(start, n):
    values = np.arange(start, start + n, dtype=np.float64)
    if kind == "tables":
        writer.write_batch("s", pa.record_batch({"v": values}))
    else:  # one 8x8 float32 frame per value, filled with it
        writer.write_frames("s", np.repeat(values.astype(np.float32), 64).reshape(n, 8, 8))

write(0, 10)
writer.flush()
write(10, 5)
writer.flush(durable=True)
print("flushed 15", flush=True)
write(15, 7)  # accepted, never flushed
print("written 22", flush=True)
signal.pause()  # until the parent's SIGKILL
"""


class ContractTests(RoundTripTests):
    """The writer contract (see the module docstring)."""

    # --- what the class declares ---
    def test_the_class_declares_its_contract(self) -> None:
        cls = self.writer_class
        assert isinstance(cls.mimetype, str)
        assert "/" in cls.mimetype, cls.mimetype
        assert isinstance(cls.supports_tables, bool)
        assert isinstance(cls.supports_frames, bool)
        if cls.supports_tables:
            assert set(cls.evolution_policy()) == set(CHANGE_KINDS)
            assert set(cls.evolution_policy().values()) <= set(EVOLUTIONS)
        assert issubclass(cls.Options, WriterOptions)
        for key, option in cls.config_keys.items():
            assert option in cls.Options.model_fields, (key, option)
        cls.validate_options(**self.options)

    def test_an_unknown_stream_is_named(self, tmp_path: Path) -> None:
        with self.open(tmp_path) as writer:
            self.write_something(writer, "s")
            for ask in (writer.visible, writer.accepted, writer.describe):
                with pytest.raises(UnknownStream, match="'t'"):
                    ask("t")
            assert writer.streams == ["s"]

    # --- evolution ---
    @pytest.mark.parametrize("case", EVOLUTION_CASES)
    def test_a_schema_change_follows_the_declared_policy(self, tmp_path: Path, case: str) -> None:
        """in_place: one stream, read back with nulls and widened values; new_part: a
        second part, recorded in describe() and readable; refuse: SchemaMismatch from
        check_batch and write_batch, and nothing changed."""
        self.requires_tables()
        kind, first, second = _evolution(case, self.text_prefix)
        action = self.writer_class.evolution_policy()[kind]
        with self.open(tmp_path) as writer:
            writer.write_batch("s", first)
            if action == "refuse":
                for call in (writer.check_batch, writer.write_batch):
                    with pytest.raises(SchemaMismatch, match=rf"stream 's'.*{kind}"):
                        call("s", second)
            else:
                change = writer.check_batch("s", second)
                assert change.kind == kind, str(change)
                assert writer.accepted("s") == first.num_rows  # asking wrote nothing
                writer.write_batch("s", second)
            writer.flush()
            rows = first.num_rows + (0 if action == "refuse" else second.num_rows)
            assert writer.visible("s") == writer.accepted("s") == rows
            parts = writer.describe("s").parts
        path = tmp_path / self.target
        table = self.read_table(path, "s")  # the stream's first part, by its own name
        if action == "new_part":
            assert [part.first for part in parts] == [0, first.num_rows]
            assert len({(part.path, part.key) for part in parts}) == 2
            for part, batch in zip(parts, (first, second), strict=True):
                self.assert_columns(self.read_part(part), _columns(batch))
            self.assert_columns(table, _columns(first))
        elif action == "refuse":
            assert len(parts) == 1
            self.assert_columns(table, _columns(first))
        elif kind == "incompatible":  # in place: how the values read is the format's own
            assert len(parts) == 1
            assert table.num_rows == rows
        else:
            assert len(parts) == 1
            self.assert_columns(table, _columns(first, second))

    def assert_columns(self, table: pa.Table, expected: dict[str, list[Any]]) -> None:
        """``table`` holds exactly ``expected`` (nulls as ``None``, however the reader
        decodes them)."""
        assert set(table.column_names) == set(expected), table.column_names
        for name, values in expected.items():
            got = null_to_none(table.column(name).to_pylist())
            assert got == values, name

    @settings(max_examples=12, deadline=None, suppress_health_check=FIXTURES)
    @given(st.data())
    def test_check_batch_agrees_with_write_batch(
        self, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
    ) -> None:
        """Whatever the changes, check_batch's answer is what write_batch does, and the
        parts a stream is split into hold every row accepted."""
        self.requires_tables()
        batches = data.draw(evolving_batches(text_prefix=self.text_prefix), label="batches")
        stored = 0
        with self.open(tmp_path_factory.mktemp("agree")) as writer:
            for batch in batches:
                try:
                    writer.check_batch("s", batch)
                except (SchemaMismatch, UnsupportedData) as exc:
                    with pytest.raises(type(exc)):
                        writer.write_batch("s", batch)
                else:
                    writer.write_batch("s", batch)
                    stored += batch.num_rows
                if stored:
                    assert writer.accepted("s") == stored
            if not stored:
                return  # every batch refused: nothing to read (a refuse-all policy)
            writer.flush()
            assert writer.visible("s") == writer.accepted("s") == stored
            parts = writer.describe("s").parts
        counts = [self.read_part(part).num_rows for part in parts]
        assert sum(counts) == stored
        assert [part.first for part in parts] == [sum(counts[:i]) for i in range(len(counts))]

    def test_check_all_refuses_before_any_writer_stores(self, tmp_path: Path) -> None:
        """A batch one writer refuses is refused by check_all before any stores it,
        naming the writer that refused, in either order."""
        self.requires_tables()
        first = pa.record_batch({"v": pa.array([1, 2], pa.int32())})
        widened = pa.record_batch({"v": pa.array([3, 2**40], pa.int64())})
        same = pa.record_batch({"v": pa.array([7], pa.int32())})
        strict = StrictMemoryWriter(tmp_path / "strict")
        with self.open(tmp_path) as writer:
            assert check_all([writer, strict], "s", first).kind == "same"
            for each in (writer, strict):
                each.write_batch("s", first)
            for order in ([writer, strict], [strict, writer]):
                with pytest.raises(SchemaMismatch, match="stream 's'") as info:
                    check_all(order, "s", widened)
                refusers = "\n".join(info.value.__notes__)
                assert "strict-memory writer" in refusers or f"{writer.name} writer" in refusers
            assert check_all([writer, strict], "s", same).kind == "same"
            for each in (writer, strict):
                each.write_batch("s", same)
                assert each.accepted("s") == 3
        assert self.read_table(tmp_path / self.target, "s").column("v").to_pylist() == [1, 2, 7]

    @pytest.mark.parametrize("case", EVOLUTION_CASES)
    def test_check_all_refuses_what_this_writer_refuses(self, tmp_path: Path, case: str) -> None:
        """A change this writer's policy refuses is refused before a partner that takes
        it stores anything."""
        self.requires_tables()
        kind, first, second = _evolution(case, self.text_prefix)
        if self.writer_class.evolution_policy()[kind] != "refuse":
            self.skip(f"{self.writer_name} takes a change of kind {kind!r}")
        partner = MemoryWriter(tmp_path / "memory")
        with self.open(tmp_path) as writer:
            for each in (partner, writer):
                each.write_batch("s", first)
            with pytest.raises(SchemaMismatch, match=f"{writer.name} writer"):
                check_all([partner, writer], "s", second)
            assert partner.accepted("s") == writer.accepted("s") == first.num_rows

    # --- visibility ---
    def test_tables_are_visible_after_flush(self, tmp_path: Path) -> None:
        """visible <= accepted at every step; after flush() they are equal, and a reader
        opening the output then finds exactly the visible rows."""
        self.requires_tables()
        path = tmp_path / self.target
        total = 0
        with self.open(tmp_path) as writer:
            for i, n in enumerate((3, 7, 1, 20, 2)):
                writer.write_batch("s", pa.record_batch({"v": np.arange(total, total + n, 1.0)}))
                total += n
                assert 0 <= writer.visible("s") <= writer.accepted("s") == total
                self.assert_reader_sees_visible(writer, path, "s")
                if i % 2:
                    writer.flush()
                    assert writer.visible("s") == writer.describe("s").visible == total
                    assert self.read_values(path, "s") == list(range(total))
        assert self.read_values(path, "s") == list(range(total))

    def test_frames_are_visible_after_flush(self, tmp_path: Path) -> None:
        self.requires_frames()
        path = tmp_path / self.target
        total = 0
        with self.open(tmp_path) as writer:
            for i, n in enumerate((3, 7, 1, 9, 2)):
                frames = np.arange(total, total + n, dtype=np.uint16)[:, None, None]
                writer.write_frames("cam", np.ascontiguousarray(np.tile(frames, (1, 6, 8))))
                total += n
                assert 0 <= writer.visible("cam") <= writer.accepted("cam") == total
                self.assert_reader_sees_visible(writer, path, "cam", frames=True)
                if i % 2:
                    writer.flush()
                    assert writer.visible("cam") == writer.describe("cam").visible == total
                    got, _, numbers = self.read_frames(path, "cam")
                    assert got[:, 0, 0].tolist() == list(range(total))
                    assert [int(n) for n in numbers] == list(range(total))
        assert self.read_values(path, "cam", frames=True) == list(range(total))

    def assert_reader_sees_visible(
        self, writer: Writer, path: Path, stream: str, *, frames: bool = False
    ) -> None:
        """A reader opening the output now finds at least the visible rows (frames), and
        they are the first ones written (each value its index)."""
        visible = writer.visible(stream)
        if visible:
            values = self.read_values(path, stream, frames=frames)
            assert len(values) >= visible, (len(values), visible)
            assert values[:visible] == list(range(visible))

    @pytest.mark.parametrize("kind", ["tables", "frames"])
    def test_a_durable_flush_makes_everything_visible(self, tmp_path: Path, kind: str) -> None:
        self.requires(kind)
        frames = kind == "frames"
        path = tmp_path / self.target
        with self.open(tmp_path) as writer:
            self.write_values(writer, "s", np.arange(3000, dtype=np.float64), frames=frames)
            writer.flush(durable=True)
            assert writer.visible("s") == writer.accepted("s")
            assert self.read_all_values(path, frames=frames) == list(range(3000))
            more = np.arange(3000, 4000, dtype=np.float64)
            self.write_values(writer, "s", more, frames=frames)
            writer.flush(durable=True)
            writer.flush(durable=True)  # nothing new: still fine
            assert self.read_all_values(path, frames=frames) == list(range(4000))

    @pytest.mark.parametrize("kind", ["tables", "frames"])
    def test_readable_after_kill_following_a_flush(self, tmp_path: Path, kind: str) -> None:
        """A child writes, flushes (durably the second time), writes more and is killed
        (SIGKILL): a reader finds at least every row or frame flushed, values in order."""
        self.requires(kind)
        self.first_class_of_format()
        target = tmp_path / self.target
        killed = kill_when(_KILL_SCRIPT, line_starting("written"), self.writer_name, str(target),
                           repr(self.options), kind, env=child_environment())  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert killed.flushed == ["flushed 15"]
        values = self.read_values(target, "s", frames=kind == "frames")
        assert 15 <= len(values) <= 22, values
        assert values == list(range(len(values)))

    def requires(self, kind: str) -> None:
        """Skip unless the writer takes ``kind`` (``"tables"`` or ``"frames"``)."""
        if kind == "tables":
            self.requires_tables()
        else:
            self.requires_frames()

    # --- refused writes ---
    def test_a_refused_batch_changes_nothing(self, tmp_path: Path) -> None:
        """Not a table, a table without columns, a change the policy refuses: the
        stream, its counts and the stats stay as they were."""
        self.requires_tables()
        with self.open(tmp_path) as writer:
            writer.write_batch("s", pa.record_batch({"v": [0.0, 1.0]}))
            before = _counters(writer.stats)
            refused: list[Any] = [{"v": [2.0]}, pa.table({"v": [2.0]}).drop_columns(["v"])]
            for kind, case in (("incompatible", "incompatible"), ("new_columns", "new column")):
                if self.writer_class.evolution_policy()[kind] == "refuse":
                    refused.append(_evolution(case, self.text_prefix)[2])
            for batch in refused:
                with pytest.raises(DaqStorageError):
                    writer.write_batch("s", batch)
                assert writer.accepted("s") == 2
                assert _counters(writer.stats) == before
            writer.write_batch("s", pa.record_batch({"v": [2.0]}))
        assert self.read_values(tmp_path / self.target, "s") == [0.0, 1.0, 2.0]

    @pytest.mark.parametrize("kind", ["tables", "frames"])
    def test_a_write_refused_for_room_changes_nothing(self, small_disk: Path, kind: str) -> None:
        """A disk another process filled: the write is refused up front (ENOSPC), the
        counts, stats and default frame numbers stay as they were (ids read 0, 1, 2, 3,
        never 0, 1, 4, 5), and once room is freed the stream goes on."""
        self.requires(kind)
        self.first_class_of_format()
        frames = kind == "frames"
        path = small_disk / self.target
        with self.open(small_disk) as writer:
            self.write_small(writer, 0, frames=frames)
            writer.flush()
            before, accepted = _counters(writer.stats), writer.accepted("s")
            filler = fill_disk(small_disk, leave=1 << 20)
            # 1.5 MiB of incompressible rows, or frames: half as much again as is free
            random = np.random.default_rng(0)
            big = (
                random.random((96, 64, 64)).astype(np.float32) if frames else random.random(3 << 16)
            )
            with pytest.raises(StorageIOError) as info:
                self.write_big(writer, big)
            assert info.value.errno in (errno.ENOSPC, errno.EFBIG), info.value
            assert writer.accepted("s") == accepted
            assert _counters(writer.stats) == before
            filler.unlink()
            self.write_small(writer, 2, frames=frames)
        assert self.read_values(path, "s", frames=frames) == [0, 1, 2, 3]
        if frames:
            assert [int(n) for n in self.read_frames(path, "s")[2]] == [0, 1, 2, 3]

    def write_big(self, writer: Writer, values: np.ndarray) -> None:
        if values.ndim == 1:
            writer.write_batch("s", pa.record_batch({"v": values}))
        else:
            writer.write_frames("s", values)

    def write_small(self, writer: Writer, start: int, *, frames: bool) -> None:
        """Two rows of ``v`` (two 64x64 frames of float32, default numbers), from ``start``."""
        values = np.arange(start, start + 2, dtype=np.float64)
        if frames:
            writer.write_frames(
                "s", np.repeat(values.astype(np.float32), 64 * 64).reshape(2, 64, 64)
            )
        else:
            writer.write_batch("s", pa.record_batch({"v": values}))

    # --- stats ---
    def test_stats_are_a_frozen_snapshot(self, tmp_path: Path) -> None:
        with self.open(tmp_path) as writer:
            self.write_something(writer, "s")
            snapshot = writer.stats
            with pytest.raises(dataclasses.FrozenInstanceError):
                snapshot.rows = 5  # type: ignore[misc]
            counted = _counters(snapshot)
            self.write_something(writer, "s")
            assert _counters(snapshot) == counted
            assert _counters(writer.stats) != counted
            assert isinstance(snapshot.files, tuple)

    def test_stats_walk_no_directory(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Taking stats costs a stat per file: no directory is listed, and file_size
        agrees with the files on disk."""
        with self.open(tmp_path) as writer:
            for start in (0, 4000):
                self.write_values(writer, "s", np.arange(start, start + 4000, dtype=np.float64))
                writer.flush()
            stats = stats_without_walking(writer, monkeypatch)
            assert stats.files
            on_disk = tree_size(stats.files)
            regular = tree_size(path for path in stats.files if path.is_file())
            assert stats.file_size >= regular
            # A store counts what it writes into its directory: near what is there.
            assert on_disk / 2 <= stats.file_size <= on_disk * 2, (stats.file_size, on_disk)

    # --- description ---
    def test_describe_agrees_with_the_reader(self, tmp_path: Path) -> None:
        cls = self.writer_class
        stream = "s" if self.tables_supported else "cam"
        with self.open(tmp_path) as writer:
            if self.tables_supported:
                batch = pa.record_batch({"v": [0.5, 1.5, 2.5], "n": pa.array([1, 2, 3], pa.int32()),
                                         "label": [f"{self.text_prefix}x"] * 3})  # fmt: skip
                writer.write_batch(stream, batch)
            else:
                writer.write_frames(stream, np.arange(3 * 6 * 8, dtype=np.uint16).reshape(3, 6, 8))
            writer.flush()
            described = writer.describe(stream)
        assert (described.stream, described.format, described.mimetype) == (
            stream, cls.name, cls.mimetype
        )  # fmt: skip
        assert described.visible == described.accepted == 3
        assert described.parts == (StreamPart(described.path, described.key, 0),)
        path = described.path
        assert isinstance(path, Path)  # (a local output: this suite writes to tmp_path)
        assert path.exists()
        assert path == writer.path or writer.path in path.parents
        assert described.uri == path.absolute().as_uri()
        resource = described.stream_resource()
        assert (resource["uri"], resource["mimetype"]) == (described.uri, cls.mimetype)
        if self.tables_supported:
            assert described.kind == "table"
            assert set(described.columns) == {"v", "n", "label"}
            assert described.columns["v"] == "double"
            table = self.read_part(described.parts[0])
            assert set(table.column_names) == set(described.columns)
            assert table.num_rows == described.visible
            assert len(described.chunk_shape) <= 1
        else:
            assert described.kind == "frames"
            frames, _, _ = self.read_frames(tmp_path / self.target, stream)
            assert np.dtype(described.dtype) == frames.dtype
            assert described.shape == frames.shape[1:] == (6, 8)
            assert len(frames) == described.visible
            assert len(described.chunk_shape) in (0, 1 + len(described.shape))
