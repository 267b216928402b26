"""The conformance suite, part two: write, close, read back with the reader a
scientist uses, and compare; what every writer refuses, and how."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daq_storage.errors import (
    InvalidName,
    SchemaMismatch,
    StorageIOError,
    UnsupportedData,
    WriterClosedError,
)
from daq_storage.schema import FrameBlock
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter
from daq_storage.testing._first_use import FirstUseTests
from daq_storage.testing._hooks import child_environment
from daq_storage.testing.strategies import frame_blocks, record_batches, split_rows
from daq_storage.writers import Writer, WriterBusy

__all__ = ["FIXTURES", "RoundTripTests", "write_in_odd_calls"]

#: Hypothesis health checks a test method with pytest fixtures must suppress.
FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.differing_executors]


def write_in_odd_calls(
    writer: Writer, block: FrameBlock, after_flush: Callable[[int], None]
) -> None:
    """Write ``block`` to stream ``cam`` in calls that line up with no chunk or shard size,
    flushing after frames 3 and 11 and calling ``after_flush(frames so far)``."""
    for start, stop in ((0, 3), (3, 10), (10, 11), (11, 19), (19, 23)):
        writer.write_frames("cam", block.frames[start:stop],
                            timestamps_ns=block.timestamps_ns[start:stop],
                            frame_numbers=block.frame_numbers[start:stop])  # fmt: skip
        if stop in (3, 11):
            writer.flush()
            after_flush(stop)


def _as_ns(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """A time column as int64 nanoseconds (whatever unit and time zone a reader chose)."""
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.timestamp(column.type.unit)).cast(pa.timestamp("ns"))
    return list(column.cast(pa.int64()).to_pylist())


class RoundTripTests(FirstUseTests):
    """Tests of :class:`WriterConformance` that write, close, read back with the
    subclass's reader and compare values, types and metadata."""

    # --- helpers ---
    def compare_tables(self, got: pa.Table, expected: pa.Table) -> None:
        assert got.num_rows == expected.num_rows
        for name in expected.column_names:
            g = got.column(name).to_pylist()
            e = expected.column(name).to_pylist()
            if pa.types.is_timestamp(expected.schema.field(name).type):
                assert _as_ns(got.column(name)) == _as_ns(expected.column(name)), name
            elif pa.types.is_floating(expected.schema.field(name).type):
                np.testing.assert_allclose(np.array(g, float), np.array(e, float), rtol=1e-12)
            else:
                assert g == e, name

    # --- the tests ---
    def test_a_frames_only_writer_refuses_tables(self, tmp_path: Path) -> None:
        """Refused naming the stream, whatever the table; no file is written."""
        if self.tables_supported:
            self.skip(f"{self.writer_name} declares supports_tables = True")
        batch = SimulatedPowerMeter(seed=0, start_ns=0).read_batch(10)
        with self.open(tmp_path) as writer:
            for stream, table in (("power_meter_01", batch), ("s", {"v": [1]})):
                with pytest.raises(UnsupportedData, match=repr(stream)):
                    writer.write_batch(stream, table)
                with pytest.raises(UnsupportedData, match=repr(stream)):
                    writer.check_batch(stream, table)
        assert writer.stats.files == ()
        assert writer.streams == []

    def test_a_tables_only_writer_refuses_frames(self, tmp_path: Path) -> None:
        if self.frames_supported:
            self.skip(f"{self.writer_name} declares supports_frames = True")
        block = SimulatedCamera((8, 8), seed=2, start_ns=1000).frames(2)
        with self.open(tmp_path) as writer:
            with pytest.raises(UnsupportedData, match="'camera_1'"):
                writer.write_frames("camera_1", block.frames)
            with pytest.raises(UnsupportedData, match="'camera_1'"):
                writer.write_frames("camera_1", list(block.frames))
        assert writer.stats.files == ()

    def test_appended_batches_read_back(self, tmp_path: Path) -> None:
        self.requires_tables()
        meter = SimulatedPowerMeter(["pm_a", "pm_b"], seed=1, start_ns=1_700_000_000_000_000_000)
        batches = [meter.read_batch(500) for _ in range(6)]
        with self.open(tmp_path) as writer:
            for batch in batches:
                writer.write_batch("power_meter_01", batch)
            stats = writer.stats
            assert (stats.batches, stats.rows, stats.frames) == (6, 6000, 0)
            assert stats.bytes_written == sum(batch.nbytes for batch in batches)
        self.compare_tables(self.read_table(tmp_path / self.target, "power_meter_01"),
                            pa.Table.from_batches(batches))  # fmt: skip
        assert writer.stats.file_size > 0
        assert writer.stats.files
        assert all(path.exists() for path in writer.stats.files)

    def test_two_streams_stay_separate(self, tmp_path: Path) -> None:
        self.requires_tables()
        a = pa.record_batch({"x": pa.array([1, 2, 3], pa.int32())})
        b = pa.record_batch({"y": pa.array([0.5, 1.5], pa.float64())})
        with self.open(tmp_path) as writer:
            writer.write_batch("first", a)
            writer.write_batch("second", b)
            writer.write_batch("first", a)
        path = tmp_path / self.target
        assert self.read_table(path, "first").column("x").to_pylist() == [1, 2, 3, 1, 2, 3]
        assert self.read_table(path, "second").column("y").to_pylist() == [0.5, 1.5]

    def test_metadata_file_and_stream_level(self, tmp_path: Path) -> None:
        with self.open(tmp_path) as writer:
            writer.set_metadata("experiment", "wavelength_scan")
            writer.set_metadata("wavelength_nm", 633.0, stream="power_meter_01")
            writer.set_metadata("settings", {"gain": 2, "modes": ["a", "b"]})
            if self.tables_supported:
                writer.write_batch(
                    "power_meter_01", SimulatedPowerMeter(seed=0, start_ns=0).read_batch(10)
                )
            else:
                writer.write_frames("power_meter_01", np.zeros((2, 4, 4), np.uint16))
        path = tmp_path / self.target
        file_level = self.read_metadata(path, None)
        assert file_level["experiment"] == "wavelength_scan"
        assert file_level["settings"] == {"gain": 2, "modes": ["a", "b"]}
        assert self.read_metadata(path, "power_meter_01")["wavelength_nm"] == 633.0

    def test_frames_roundtrip(self, tmp_path: Path) -> None:
        self.requires_frames()
        block = SimulatedCamera((48, 64), seed=2, start_ns=1000).frames(7)
        with self.open(tmp_path) as writer:
            writer.write_frames("camera_1", block.frames[:3], timestamps_ns=block.timestamps_ns[:3],
                                frame_numbers=block.frame_numbers[:3])  # fmt: skip
            writer.write_frames("camera_1", block.frames[3:], timestamps_ns=block.timestamps_ns[3:],
                                frame_numbers=block.frame_numbers[3:])  # fmt: skip
            assert (writer.stats.frames, writer.stats.batches, writer.stats.rows) == (7, 0, 0)
            assert writer.stats.bytes_written >= block.frames.nbytes
        assert writer.stats.file_size > 0
        frames, stamps, numbers = self.read_frames(tmp_path / self.target, "camera_1")
        np.testing.assert_array_equal(frames, block.frames)
        assert frames.dtype == np.uint16
        np.testing.assert_array_equal(stamps, block.timestamps_ns)
        np.testing.assert_array_equal(numbers, block.frame_numbers)

    def test_frames_through_flushes_and_odd_calls(self, tmp_path: Path) -> None:
        """What a flush promises is readable at once; calls cross chunks and shards."""
        self.requires_frames()
        block = SimulatedCamera((60, 80), seed=4, start_ns=10).frames(23)
        path = tmp_path / self.target

        def visible(count: int) -> None:
            frames, stamps, numbers = self.read_frames(path, "cam")
            np.testing.assert_array_equal(frames, block.frames[:count])
            np.testing.assert_array_equal(stamps, block.timestamps_ns[:count])
            np.testing.assert_array_equal(numbers, block.frame_numbers[:count])

        with self.open(tmp_path) as writer:
            write_in_odd_calls(writer, block, visible)
        visible(len(block.frames))

    def test_big_endian_frames_keep_their_values(self, tmp_path: Path) -> None:
        """Frames in the other byte order are stored by value, whatever path they take."""
        self.requires_frames()
        block = SimulatedCamera((8, 8), seed=7, start_ns=0).frames(7)
        swapped = block.frames.astype(">u2")
        with self.open(tmp_path) as writer:
            for start, stop in ((0, 3), (3, 4), (4, 7)):  # odd calls: partial chunks joined
                writer.write_frames("cam", swapped[start:stop],
                                    timestamps_ns=block.timestamps_ns[start:stop])  # fmt: skip
        frames, _, _ = self.read_frames(tmp_path / self.target, "cam")
        np.testing.assert_array_equal(frames, block.frames)

    def test_refused_frames_change_nothing(self, tmp_path: Path) -> None:
        """Bad ids or a new dtype/shape are refused; numbering continues as if they never came."""
        self.requires_frames()
        block = SimulatedCamera((8, 8), seed=3, start_ns=0).frames(3)
        with self.open(tmp_path) as writer:
            writer.write_frames("cam", block.frames[:2], timestamps_ns=block.timestamps_ns[:2])
            with pytest.raises(SchemaMismatch, match=r"stream 'cam'.*timestamps_ns"):
                writer.write_frames("cam", block.frames, timestamps_ns=block.timestamps_ns[:2])
            with pytest.raises(SchemaMismatch, match=r"stream 'cam'.*dtype uint16.*float32"):
                writer.write_frames("cam", block.frames.astype(np.float32))
            with pytest.raises(SchemaMismatch, match=r"stream 'cam'.*\(8, 8\).*\(8, 9\)"):
                writer.write_frames("cam", np.zeros((1, 8, 9), np.uint16))
            writer.write_frames("cam", block.frames[2:], timestamps_ns=block.timestamps_ns[2:])
        frames, stamps, numbers = self.read_frames(tmp_path / self.target, "cam")
        np.testing.assert_array_equal(frames, block.frames)
        np.testing.assert_array_equal(stamps, block.timestamps_ns)
        assert list(numbers) == [0, 1, 2]

    def test_unsafe_stream_names_are_escaped_consistently(self, tmp_path: Path) -> None:
        batch = pa.record_batch({"v": [1.0]})
        frame = np.arange(12, dtype=np.uint16).reshape(1, 3, 4)
        path = tmp_path / self.target

        def write(writer: Writer, stream: str) -> None:
            if self.tables_supported:
                writer.write_batch(stream, batch)
            else:
                writer.write_frames(stream, frame)

        def count(stream: str) -> int:
            if self.tables_supported:
                return int(self.read_table(path, stream).num_rows)
            return len(self.read_frames(path, stream)[0])

        with self.open(tmp_path) as writer:
            write(writer, "../x")
            write(writer, "../x")
            write(writer, "a/b")
            with pytest.raises(InvalidName, match="both map to 'x'"):
                write(writer, "x")
            with pytest.raises(InvalidName):
                write(writer, "")
            with pytest.raises(InvalidName, match="NUL"):
                write(writer, "a\x00b")
        assert count("x") == 2
        assert count("a_b") == 1
        assert not (tmp_path / "x").exists()  # nothing escaped the target

    def test_full_disk_refuses_the_write_and_keeps_what_came_before(self, tmp_path: Path) -> None:
        """A file-size limit (EFBIG), in a child process: once per format (a codec variant
        meets a full disk in the real-disk test)."""
        if not self.file_size_limit_applies:
            self.skip(f"{self.writer_name} writes many small files: no single file fills up")
        self.first_class_of_format()
        target = tmp_path / self.target
        # Tables: a column "v"; a frames-only writer gets the values as 10x100 float32
        # frames (a dtype every frame format holds, ImageJ's included).
        if self.tables_supported:
            write = 'writer.write_batch("s", pa.record_batch({"v": values}))'
        else:
            write = 'writer.write_frames("s", values.astype(np.float32).reshape(-1, 10, 100))'
        script = textwrap.dedent(
            f"""
            import resource, signal
            import numpy as np, pyarrow as pa
            from daq_storage.errors import StorageIOError
            from daq_storage.writers import open_writer
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full disk: EFBIG, not a kill
            writer = open_writer({self.writer_name!r}, {str(target)!r}, **{self.options!r})
            values = np.arange(1000, dtype=np.float64)
            {write}
            writer.flush()
            resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))
            try:
                for i in range(1, 200):
                    values = np.random.default_rng(i).random(10_000)  # incompressible
                    {write}
                    writer.flush()
            except StorageIOError as exc:
                print("REFUSED", exc.errno, exc)
            writer.close()
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                timeout=120, check=False, env=child_environment())  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "REFUSED 27" in result.stdout, result.stdout
        values = self.read_all_values(target)
        assert values[:1000] == list(range(1000))
        assert len(values) > 1000  # it kept writing until the limit was near

    def test_real_full_disk_refuses_the_write_and_keeps_what_came_before(
        self, small_disk: Path
    ) -> None:
        """A real filesystem that fills up (an 8 MiB tmpfs): every format, Zarr included."""
        target = small_disk / self.target

        write = self.write_values
        writer = self.open(small_disk)
        write(writer, "s", np.arange(1000, dtype=np.float64))
        writer.flush()
        refused: StorageIOError | None = None
        for i in range(1, 1000):
            try:
                write(writer, "s", np.random.default_rng(i).random(10_000))  # incompressible
                writer.flush()
            except StorageIOError as exc:
                refused = exc
                break
        writer.close()
        assert refused is not None, "the disk never filled up"
        assert refused.errno == errno.ENOSPC
        assert "free on the disk" in str(refused), refused
        values = self.read_all_values(target)
        assert values[:1000] == list(range(1000))
        assert len(values) > 1000 + 10_000  # it kept writing until the disk was nearly full

    def test_writing_after_close_raises(self, tmp_path: Path) -> None:
        writer = self.open(tmp_path)
        writer.close()
        writer.close()  # idempotent
        with pytest.raises(WriterClosedError, match="closed"):
            writer.write_batch("s", pa.record_batch({"v": [1]}))
        with pytest.raises(WriterClosedError, match="closed"):
            writer.write_frames("s", np.zeros((1, 2, 2), np.uint16))
        with pytest.raises(WriterClosedError, match="closed"):
            writer.check_batch("s", pa.record_batch({"v": [1]}))
        with pytest.raises(WriterClosedError):
            writer.flush()
        with pytest.raises(WriterClosedError):
            writer.flush(durable=True)

    def test_non_batch_input_is_refused(self, tmp_path: Path) -> None:
        self.requires_tables()
        with self.open(tmp_path) as writer, pytest.raises(UnsupportedData, match="RecordBatch"):
            writer.write_batch("s", {"v": [1]})

    @settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
    @given(st.data(), st.integers(1, 4))
    def test_generated_batches_roundtrip(
        self, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, parts: int
    ) -> None:
        self.requires_tables()
        batch = data.draw(record_batches(text_prefix=self.text_prefix), label="batch")
        tmp_path = tmp_path_factory.mktemp("gen")
        with self.open(tmp_path) as writer:
            for piece in split_rows(batch, parts):
                writer.write_batch("gen", piece)
        self.compare_tables(self.read_table(tmp_path / self.target, "gen"),
                            pa.Table.from_batches([batch]))  # fmt: skip

    @settings(max_examples=15, deadline=None, suppress_health_check=FIXTURES)
    @given(st.data())
    def test_generated_frames_roundtrip(
        self, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
    ) -> None:
        """Any frames of a dtype the format takes, with any ids, in one or two calls (the
        second a sequence of single frames, as a ring hands them over); a dtype it refuses
        leaves the stream free."""
        self.requires_frames()
        block = data.draw(frame_blocks(), label="block")
        cut = data.draw(st.integers(0, len(block)), label="cut")
        tmp_path = tmp_path_factory.mktemp("frames")
        # One call, or two; the sequence of single frames is what a ring hands over.
        calls = [(0, len(block))] if cut in (0, len(block)) else [(0, cut), (cut, len(block))]
        with self.open(tmp_path) as writer:
            for i, (start, stop) in enumerate(calls):
                frames = block.frames[start:stop]
                try:
                    writer.write_frames("cam", list(frames) if i or not cut else frames,
                                        timestamps_ns=block.timestamps_ns[start:stop],
                                        frame_numbers=block.frame_numbers[start:stop])  # fmt: skip
                except UnsupportedData:
                    assert i == 0
                    assert writer.streams == []  # refused before the stream was fixed
                    refused = True
                    break
            else:
                refused = False
            if refused:  # not a dtype of this format: the stream stayed free
                writer.write_frames("cam", np.ones((1, 2, 2), np.uint8))
                assert writer.accepted("cam") == 1
                return
            assert writer.accepted("cam") == len(block)
        frames, stamps, numbers = self.read_frames(tmp_path / self.target, "cam")
        np.testing.assert_array_equal(frames, block.frames)
        assert frames.dtype == block.frames.dtype
        np.testing.assert_array_equal(stamps, block.timestamps_ns)
        np.testing.assert_array_equal(numbers, block.frame_numbers)

    # --- what every writer refuses through the base class ---

    @pytest.mark.parametrize("key", [5, None, b"key", ("k",), "", "a\x00b", "\ud800"])
    def test_a_bad_metadata_key_is_refused_and_costs_nothing(
        self, tmp_path: Path, key: Any
    ) -> None:
        """Refused at the call, for the file and for a stream; buffered rows (Parquet)
        and the metadata set before reach the file at close."""
        with self.open(tmp_path) as writer:
            writer.set_metadata("operator", "ada", stream="s")
            self.write_something(writer, "s")
            for stream in (None, "s"):
                with pytest.raises(InvalidName, match="metadata key"):
                    writer.set_metadata(key, "value", stream=stream)
        path = tmp_path / self.target
        assert self.count_stored(path, "s") == (10 if self.tables_supported else 1)
        assert self.read_metadata(path, "s")["operator"] == "ada"

    BAD_IDS: ClassVar[list[tuple[str, Any, str]]] = [
        ("frame_numbers", [-1, 2], "-1"),
        ("frame_numbers", np.array([-5, 7]), "-5"),
        ("frame_numbers", [1.7, 2.2], "1.7"),
        ("frame_numbers", np.array([1.0, 2.0]), "float64"),
        ("frame_numbers", [2**64, 1], str(2**64)),
        ("frame_numbers", ["1", "2"], "'1'"),
        ("frame_numbers", [True, False], "bool"),
        ("frame_numbers", [None, 1], "None"),
        ("frame_numbers", [[1], [2, 3]], "must be"),
        ("timestamps_ns", [float("nan"), 1.0], "nan"),
        ("timestamps_ns", np.array([-1, 5]), "-1"),
        ("timestamps_ns", [2**63, 0], "2262"),
        ("timestamps_ns", np.array(["NaT", "NaT"], "datetime64[ns]"), "NaT"),
        ("timestamps_ns", np.array(["1500-01-01", "2000-01-01"], "datetime64[s]"), "1678"),
        ("timestamps_ns", np.array([1, 2], "timedelta64[ns]"), "timedelta64"),
    ]

    def test_frame_ids_are_validated_not_converted(self, tmp_path: Path) -> None:
        """Negative, fractional, NaN, text, too large: refused naming the stream, the
        argument and the value; numbering goes on as if the calls never came."""
        self.requires_frames()
        frames = np.arange(2 * 4 * 4, dtype=np.uint16).reshape(2, 4, 4)
        with self.open(tmp_path) as writer:
            writer.write_frames("cam", frames)
            for label, values, shown in self.BAD_IDS:
                with pytest.raises(SchemaMismatch, match=rf"stream 'cam'.*{label}") as info:
                    writer.write_frames("cam", frames, **{label: values})
                assert shown in str(info.value), (label, values, str(info.value))
            writer.write_frames("cam", frames)  # default numbers: 2, 3
            when = np.array(["2024-01-01T00:00:00.5", "2024-01-01T00:00:01"], "datetime64[ms]")
            writer.write_frames("cam", frames, timestamps_ns=when,
                                frame_numbers=[2**64 - 1, 2**63])  # fmt: skip
        _, stamps, numbers = self.read_frames(tmp_path / self.target, "cam")
        assert [int(n) for n in numbers] == [0, 1, 2, 3, 2**64 - 1, 2**63]
        assert [int(t) for t in stamps[4:]] == when.astype("datetime64[ns]").view(np.int64).tolist()

    @pytest.mark.parametrize("shape", [(2, 0, 4), (1, 4, 0), (0, 0, 4), (3, 0)])
    def test_frames_without_pixels_are_refused_and_leave_the_stream_free(
        self, tmp_path: Path, shape: tuple[int, ...]
    ) -> None:
        """One rule for every format, checked before the stream's frame shape is fixed."""
        self.requires_frames()
        with self.open(tmp_path) as writer:
            with pytest.raises(UnsupportedData, match=r"stream 'cam'.*has no pixels"):
                writer.write_frames("cam", np.zeros(shape, np.uint16))
            writer.write_frames("cam", np.ones((2, 4, 4), np.float32))
        frames, _, numbers = self.read_frames(tmp_path / self.target, "cam")
        np.testing.assert_array_equal(frames, np.ones((2, 4, 4), np.float32))
        assert list(numbers) == [0, 1]

    def test_a_second_thread_is_refused_while_one_is_inside(self, tmp_path: Path) -> None:
        """A writer is used from one thread at a time: while one thread is inside a call
        (held there by the data it passes, on a barrier), any call from another thread
        raises WriterBusy, and nothing is lost or mixed."""
        inside, leave = threading.Barrier(2, timeout=30), threading.Event()
        frames = np.ones((2, 4, 4), np.uint16)

        class Held:
            """Data whose conversion waits until the main thread lets it go."""

            def to_arrow(self) -> pa.Table:
                inside.wait()
                leave.wait(30)
                return pa.table({"v": np.arange(10, dtype=np.float64)})

            def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
                inside.wait()
                leave.wait(30)
                return np.array([5, 6], np.uint64)

        errors: list[BaseException] = []

        def worker(writer: Writer) -> None:
            try:
                if self.tables_supported:
                    writer.write_batch("s", Held())
                else:
                    writer.write_frames("s", frames, timestamps_ns=Held())
            except BaseException as exc:
                errors.append(exc)

        with self.open(tmp_path) as writer:
            thread = threading.Thread(target=worker, args=(writer,), name="worker")
            thread.start()
            try:
                inside.wait()
                calls: list[Callable[[], object]] = [
                    lambda: self.write_something(writer, "s"),
                    lambda: self.write_something(writer, "other"),
                    lambda: writer.set_metadata("k", 1),
                    writer.flush,
                    writer.close,
                ]
                for call in calls:
                    with pytest.raises(WriterBusy, match=r"thread 'worker'.*one thread at a time"):
                        call()
            finally:
                leave.set()
                thread.join(30)
            assert not errors, errors
            self.write_something(writer, "s")  # the caller's own thread again: fine
        path = tmp_path / self.target
        assert self.count_stored(path, "s") == (20 if self.tables_supported else 3)
