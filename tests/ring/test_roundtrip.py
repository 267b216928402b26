"""Single-process ring behaviour: records of every kind, wrap boundaries, accounting."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from daq_storage.errors import (
    InvalidName,
    RingFull,
    SchemaMismatch,
    UnsupportedData,
    WriterClosedError,
)
from daq_storage.ring import RingBuffer, RingReader
from daq_storage.ring import _format as f
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter
from tests.ring.conftest import SMALL, payload_for

HDR = f.RECORD_HEADER_SIZE


def test_file_is_private_and_prefaulted(ring: RingBuffer):
    mode = stat.S_IMODE(os.stat(ring.path).st_mode)
    assert mode == 0o600
    assert os.stat(ring.path).st_blocks * 512 >= ring.capacity  # pages exist already


def test_raw_records_roundtrip(ring: RingBuffer):
    with RingReader.open(ring.path) as reader:
        assert reader.read_next() is None
        seqs = [
            ring.write(payload_for(i, 100), stream="raw", timestamp_ns=1000 + i) for i in range(5)
        ]
        assert seqs == [0, 1, 2, 3, 4]
        for i in range(5):
            record = reader.read_next()
            assert record is not None
            assert (record.seq, record.stream, record.kind) == (i, "raw", "raw")
            assert record.timestamp_ns == 1000 + i
            assert record.tobytes() == payload_for(i, 100)
            assert not record.zero_copy
        assert reader.read_next() is None
        assert (reader.delivered, reader.lost) == (5, 0)


def test_zero_length_record(ring: RingBuffer):
    ring.write(b"", stream="empty")
    with RingReader.open(ring.path) as reader:
        record = reader.read_next()
        assert record is not None
        assert record.tobytes() == b""
        assert len(record) == 0


def test_frames_roundtrip_with_dtype_shape_and_metadata(ring: RingBuffer, shm_path: Path):
    frame = np.arange(12 * 10, dtype=">i4").reshape(12, 10)  # non-native byte order too
    ring.write_frame(frame, stream="cam", frame_number=41, metadata={"exposure_ms": 2.5})
    ring.write_frame(frame[:, ::2].astype(np.float32).T.copy(), stream="cam2")  # other stream
    with RingReader.open(shm_path) as reader:
        first = reader.read_next()
        assert first is not None
        array = first.array()
        assert array.dtype == np.dtype(">i4")
        np.testing.assert_array_equal(array, frame)
        assert first.frame_number == 41
        assert first.metadata == {"exposure_ms": 2.5}
        assert not array.flags.writeable
        assert first.array(copy=True).flags.writeable
        second = reader.read_next()
        assert second is not None
        assert second.frame_number == 1  # defaults to the sequence number
        assert second.metadata == {}
        np.testing.assert_array_equal(second.array(), frame[:, ::2].astype(np.float32).T)


def test_non_contiguous_frame_is_written_correctly(ring: RingBuffer):
    base = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    view = base[::2, 1::3]
    ring.write_frame(view, stream="cam")
    with RingReader.open(ring.path) as reader:
        record = reader.read_next()
        assert record is not None
        np.testing.assert_array_equal(record.array(), view)


def test_zero_copy_frames_view_the_mapping(ring: RingBuffer):
    frame = SimulatedCamera((64, 80), seed=0, start_ns=0).next_frame().array
    ring.write_frame(frame, stream="cam")
    with RingReader.open(ring.path) as reader:
        record = reader.read_next(copy=False)
        assert record is not None
        assert record.zero_copy
        array = record.array()
        np.testing.assert_array_equal(array, frame)
        assert reader.still_valid(record)
        del array, record


def test_arrow_batches_send_schema_once(ring: RingBuffer):
    meter = SimulatedPowerMeter(seed=0, start_ns=0)
    batches = [meter.read_batch(100) for _ in range(3)]
    for batch in batches:
        ring.write_batch(batch, stream="power_meter_01")
    assert ring._ring.u64(f.OFF_SCHEMA_COUNT) == 1
    other = pa.record_batch({"x": pa.array([1, 2], pa.int64())})
    ring.write_batch(other, stream="power_meter_01")  # schema change: a new schema entry
    assert ring._ring.u64(f.OFF_SCHEMA_COUNT) == 2
    with RingReader.open(ring.path) as reader:
        got = [r.batch() for r in reader.read_many()]
    assert [b.equals(e) for b, e in zip(got, [*batches, other], strict=True)] == [True] * 4
    # Each record holds only the record-batch message, not the schema.
    schema_bytes = len(batches[0].schema.serialize())
    assert ring.stats().bytes < sum(b.serialize().size for b in [*batches, other]) + schema_bytes


def test_dictionary_and_view_columns_are_stored_plain(ring: RingBuffer):
    """The ring carries neither dictionaries nor view types; their values go through."""
    batch = pa.record_batch(
        {
            "d": pa.array(["a", "b", "a"]).dictionary_encode(),
            "v": pa.array(["x", None, "a string longer than twelve"], pa.string_view()),
            "b": pa.array([b"\x00", None, b"y" * 20], pa.binary_view()),
        }
    )
    ring.write_batch(batch, stream="t")
    ring.write_batch(batch, stream="t")
    with RingReader.open(ring.path) as reader:
        first, second = reader.read_many()
        stored = first.batch()
        assert stored.schema.types == [pa.string(), pa.large_string(), pa.large_binary()]
        assert stored.to_pylist() == batch.to_pylist()
    assert second.batch().equals(stored)  # its schema was read before the reader closed
    listed = pa.record_batch({"l": pa.array([[1], [], None], pa.list_view(pa.int32()))})
    with pytest.raises(UnsupportedData, match="column 'l' holds list_view"):
        ring.write_batch(listed, stream="lists")


def test_write_batch_accepts_single_chunk_tables(ring: RingBuffer):
    table = pa.table({"a": [1, 2, 3]})
    ring.write_batch(table, stream="t")
    with RingReader.open(ring.path) as reader:
        record = reader.read_next()
        assert record is not None
        assert record.batch().to_pydict() == {"a": [1, 2, 3]}


@pytest.mark.parametrize("size", [0, 1, 7, 8, 64, 1000])
def test_write_many_equal_sizes(ring: RingBuffer, size: int):
    payloads = [payload_for(i, size) for i in range(300)]  # wraps a 64 KiB ring for size 1000
    with RingReader.open(ring.path) as reader:
        seqs = ring.write_many(payloads, stream="s", timestamps_ns=list(range(300)))
        assert seqs == range(300)
        records = reader.read_many(10_000)
    expected_first = 300 - len(records)
    assert [r.seq for r in records] == list(range(expected_first, 300))
    assert all(r.tobytes() == payload_for(r.seq, size) for r in records)
    assert all(r.timestamp_ns == r.seq for r in records)
    assert reader.lost == expected_first


def test_write_many_from_2d_array_and_variable_sizes(ring: RingBuffer):
    rows = np.arange(50 * 16, dtype=np.uint8).reshape(50, 16)
    ring.write_many(rows, stream="a")
    ring.write_many([b"x", b"yy", b"zzz"], stream="a")
    with RingReader.open(ring.path) as reader:
        records = reader.read_many()
    assert [r.tobytes() for r in records[:50]] == [bytes(r) for r in rows]
    assert [r.tobytes() for r in records[50:]] == [b"x", b"yy", b"zzz"]


@pytest.mark.parametrize(
    "room_left",
    [0, HDR, HDR - 8, 8, 2 * HDR + 8],
    ids=["exactly-to-end", "header-left", "less-than-header", "eight-left", "two-headers"],
)
def test_wrap_boundaries(ring: RingBuffer, room_left: int):
    cap = ring.capacity
    reader = RingReader.open(ring.path)
    # Fill so that exactly `room_left` bytes remain before the end, then cross the wrap.
    first_size = cap - room_left - HDR - 4096
    ring.write(payload_for(0, 4096 - HDR), stream="s")
    ring.write(payload_for(1, first_size), stream="s")
    assert ring._tail % cap == (cap - room_left) % cap
    for seq in range(2, 6):
        ring.write(payload_for(seq, 3000), stream="s")
    with reader:
        records = reader.read_many(100)
        seqs = [r.seq for r in records]
        assert seqs == list(range(seqs[0], 6))
        assert reader.lost == seqs[0]
        assert reader.lost + reader.delivered == 6
        assert all(r.tobytes() == payload_for(r.seq, len(r)) for r in records)


def test_max_record_fills_the_whole_ring(ring: RingBuffer):
    reader = RingReader.open(ring.path)
    ring.write(b"small", stream="s")
    big = payload_for(7, ring.capacity - HDR)
    seq = ring.write(big, stream="s")
    with reader:
        record = reader.read_next()
        assert record is not None
        assert record.seq == seq
        assert record.tobytes() == big
        assert reader.lost == 1  # the small record was overwritten
    with pytest.raises(RingFull, match="can never fit"):
        ring.write(bytes(ring.capacity - HDR + 1), stream="s")


def test_lapped_reader_counts_exactly_what_it_lost(ring: RingBuffer):
    with RingReader.open(ring.path) as reader:
        for seq in range(1000):
            ring.write(payload_for(seq, 500), stream="s")
        records = reader.read_many(10_000)
        assert reader.laps >= 1
        assert reader.lost + reader.delivered == 1000
        assert records[-1].seq == 999
        assert all(r.tobytes() == payload_for(r.seq, 500) for r in records)


def test_start_latest_and_oldest(ring: RingBuffer):
    for seq in range(10):
        ring.write(payload_for(seq, 100), stream="s")
    with RingReader.open(ring.path, start="latest") as latest:
        record = latest.read_next()
        assert record is not None
        assert record.seq == 9
        assert latest.lost == 0
    with RingReader.open(ring.path, start="oldest") as oldest:
        assert [r.seq for r in oldest.read_many()] == list(range(10))
    for seq in range(10, 400):  # lap the ring: "oldest" is now a checkpoint
        ring.write(payload_for(seq, 1000), stream="s")
    with RingReader.open(ring.path, start="oldest") as oldest:
        records = oldest.read_many(1000)
        assert records[-1].seq == 399
        assert records[0].seq > 10
        assert 399 - records[0].seq + 1 > 0.7 * (SMALL // 1032)  # most of the ring is kept


def test_read_latest_per_stream(ring: RingBuffer):
    with RingReader.open(ring.path) as reader:
        assert reader.read_latest() is None
        assert reader.read_latest("cam") is None
        for i in range(3):
            ring.write_frame(np.full((8, 8), i, np.uint8), stream="cam")
            ring.write(b"scalar", stream="meter")
        latest = reader.read_latest("cam")
        assert latest is not None
        assert latest.array()[0, 0] == 2
        newest = reader.read_latest()
        assert newest is not None
        assert newest.stream == "meter"
        assert reader.read_latest("unknown") is None
        # read_latest does not move the reader.
        first = reader.read_next()
        assert first is not None
        assert first.seq == 0


def test_iteration_and_timeouts(ring: RingBuffer):
    for _seq in range(3):
        ring.write(b"x", stream="s")
    with RingReader.open(ring.path) as reader:
        assert [r.seq for r in reader] == [0, 1, 2]
        assert list(reader.iter(timeout=0.01)) == []
        assert reader.read_next(timeout=0.02) is None
        assert reader.read_many(timeout=0.02) == []


def test_stats_report_counts_and_registered_readers(ring: RingBuffer):
    with RingReader.open(ring.path, consumer="hdf5") as consumer:
        for _seq in range(10):
            ring.write(b"0123456789", stream="s")
        consumer.read_many(4)
        consumer.read_next()  # publishes the position reached by read_many
        stats = ring.stats()
        assert (stats.written, stats.bytes, stats.dropped) == (10, 100, 0)
        assert stats.streams == ["s"]
        (entry,) = stats.readers
        assert (entry.name, entry.state, entry.pid, entry.delivered) == (
            "hdf5",
            "active",
            os.getpid(),
            4,
        )
        assert entry.alive
        assert entry.lag_bytes == 6 * f.align(HDR + 10)  # the 5th is held until the next read
    assert ring.stats().readers == []  # the slot is released on close


def test_crc_records_are_checked(shm_path: Path):
    with RingBuffer.create(shm_path, capacity_bytes=SMALL, crc=True) as ring:
        ring.write(b"payload", stream="s")
        ring.write_frame(np.ones((4, 4), np.uint16), stream="cam")
        ring.write_many([b"abc"] * 3, stream="s")
        with RingReader.open(shm_path) as reader:
            assert len(reader.read_many()) == 5
    shm_path.unlink()


def test_bad_input_is_refused_with_clear_errors(ring: RingBuffer):
    ring.write_frame(np.zeros((4, 4), np.uint16), stream="cam")
    with pytest.raises(
        SchemaMismatch, match=r"stream 'cam' carries frames of dtype <u2 shape \(4, 4\)"
    ):
        ring.write_frame(np.zeros((4, 5), np.uint16), stream="cam")
    with pytest.raises(SchemaMismatch, match=r"dtype <u2.*got dtype <f4"):
        ring.write_frame(np.zeros((4, 4), np.float32), stream="cam")
    with pytest.raises(SchemaMismatch, match="carries frame records; cannot write raw"):
        ring.write(b"x", stream="cam")
    with pytest.raises(SchemaMismatch, match="cannot be stored"):
        ring.write_frame(np.array(["a"], dtype=object), stream="objects")
    with pytest.raises(SchemaMismatch, match="numpy array"):
        ring.write_frame([1, 2, 3], stream="list")  # type: ignore[arg-type]
    with pytest.raises(SchemaMismatch, match="RecordBatch"):
        ring.write_batch({"a": 1}, stream="t")
    with pytest.raises(InvalidName, match="non-empty"):
        ring.write(b"x", stream="")
    with pytest.raises(InvalidName, match="NUL"):
        ring.write(b"x", stream="a\x00b")
    with pytest.raises(InvalidName, match="at most 48"):
        ring.write(b"x", stream="s" * 49)
    with RingReader.open(ring.path) as reader:
        record = reader.read_next()
        assert record is not None
        with pytest.raises(UnsupportedData, match="not Arrow"):
            record.batch()
        ring.write(b"x", stream="raw")
        raw = reader.read_next()
        assert raw is not None
        with pytest.raises(UnsupportedData, match="not a frame"):
            raw.array()


def test_stream_table_full(shm_path: Path):
    with RingBuffer.create(shm_path, capacity_bytes=SMALL, max_streams=2) as ring:
        ring.write(b"x", stream="a")
        ring.write(b"x", stream="b")
        with pytest.raises(RingFull, match="no free stream slot for 'c'"):
            ring.write(b"x", stream="c")
    shm_path.unlink()


def test_closed_ring_and_reader_refuse_work(ring: RingBuffer):
    ring.write_batch(pa.record_batch({"x": [1]}), stream="t")
    reader = RingReader.open(ring.path)
    record = reader.read_next()
    assert record is not None
    reader.close()
    reader.close()  # idempotent
    with pytest.raises(WriterClosedError, match="read_next"):
        reader.read_next()
    with pytest.raises(WriterClosedError, match="reading a schema"):
        record.batch()  # its schema was never read while the reader was open
    ring.close()
    with pytest.raises(WriterClosedError, match="write"):
        ring.write(b"x")
    with pytest.raises(WriterClosedError):
        ring.write_frame(np.zeros(3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"overflow": "grow"}, "overflow must be"),
        ({"max_readers": 0}, "max_readers"),
        ({"max_streams": 0}, "max_streams"),
    ],
)
def test_bad_create_parameters(shm_path: Path, kwargs: dict[str, object], match: str):
    with pytest.raises(ValueError, match=match):
        RingBuffer.create(shm_path, capacity_bytes=SMALL, **kwargs)  # type: ignore[arg-type]
    assert not shm_path.exists()


def test_capacity_is_rounded_up_to_pages(shm_path: Path):
    with RingBuffer.create(shm_path, capacity_bytes=100_000) as ring:
        assert ring.capacity == 102_400
        ring.write(payload_for(1, 90_000), stream="s")
        with RingReader.open(shm_path) as reader:
            record = reader.read_next()
            assert record is not None
            assert record.tobytes() == payload_for(1, 90_000)
    shm_path.unlink()


def test_from_config(shm_path: Path):
    from daq_storage.config import RingBufferConfig

    config = RingBufferConfig(path=shm_path, size_mb=1, overflow="block", max_readers=3)
    with RingBuffer.from_config(config) as ring:
        assert ring.capacity == 1 << 20
        assert ring.overflow == "block"
        assert ring._ring.geometry.max_readers == 3
    shm_path.unlink()
