"""Attaching to rings: one writer at a time, crash recovery, and corrupt files."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daq_storage.errors import DaqStorageError, RingBusy, RingCorrupt
from daq_storage.ring import RingBuffer, RingReader
from daq_storage.ring import _format as f
from tests.ring.conftest import SMALL, payload_for


def test_second_writer_is_refused_while_first_is_alive(ring: RingBuffer):
    with pytest.raises(RingBusy, match=f"already has a live writer \\(pid {os.getpid()}\\)"):
        RingBuffer.open(ring.path)
    with pytest.raises(RingBusy, match="live writer"):
        RingBuffer.create(ring.path, capacity_bytes=SMALL, exist_ok=True)
    with pytest.raises(FileExistsError):
        RingBuffer.create(ring.path, capacity_bytes=SMALL)


def test_writer_can_reattach_after_clean_close(ring: RingBuffer):
    ring.write(b"first", stream="s")
    ring.close()
    with RingBuffer.open(ring.path) as again:
        assert again.write(b"second", stream="s") == 1
        assert again.streams == ["s"]
    with RingReader.open(ring.path) as reader:
        assert [r.tobytes() for r in reader.read_many()] == [b"first", b"second"]


def test_dead_writers_lock_is_recovered_and_its_partial_record_skipped(shm_path: Path):
    # A child creates the ring, publishes 3 records, reserves a 4th and dies mid-copy.
    script = textwrap.dedent(
        f"""
        import os, signal
        from daq_storage.ring import RingBuffer
        ring = RingBuffer.create({str(shm_path)!r}, capacity_bytes={SMALL})
        for i in range(3):
            ring.write(bytes([i]) * 100, stream="s")
        ring._reserve(4000)  # tail_intent moves; the record is never published
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert result.returncode == -signal.SIGKILL
    with RingReader.open(shm_path) as reader:
        assert not writer_alive(reader)
        assert [r.tobytes()[0] for r in reader.read_many()] == [0, 1, 2]
        with RingBuffer.open(shm_path) as writer:  # the kernel dropped the dead lock
            assert writer_alive(reader)
            writer.write(b"after", stream="s")
        record = reader.read_next()
        assert record is not None
        assert (record.seq, record.tobytes()) == (3, b"after")
        assert reader.lost == 0
    shm_path.unlink()


def writer_alive(reader: RingReader) -> bool:
    return reader.writer_alive


def test_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no ring buffer"):
        RingReader.open(tmp_path / "absent")


def corrupt(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(data)


@pytest.mark.parametrize(
    ("offset", "data", "match"),
    [
        (0, b"NOTARING", "bad magic"),
        (8, struct.pack("<I", 99), "format version 99"),
        (12, struct.pack(">I", f.ENDIAN_MARK), "byte-order mark"),
        (24, struct.pack("<Q", 12345), "invalid geometry.*capacity"),
        (24, struct.pack("<Q", 1 << 40), "is .* bytes; its header says"),
        (16, struct.pack("<Q", 8192), "declares header_size 8192"),
        (32, struct.pack("<I", 0), "max_readers"),
        (f.OFF_TAIL_INTENT, struct.pack("<Q", 10), "tail_intent 10 is behind tail 136"),
    ],
)
def test_corrupt_headers_raise_ring_corrupt(ring: RingBuffer, offset: int, data: bytes, match: str):
    ring.write(b"x" * 100, stream="s")
    corrupt(ring.path, offset, data)
    with pytest.raises(RingCorrupt, match=match):
        RingReader.open(ring.path)


def test_truncated_and_empty_files(tmp_path: Path, ring: RingBuffer):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(RingCorrupt, match="too small"):
        RingReader.open(empty)
    os.truncate(ring.path, ring.capacity)
    with pytest.raises(RingCorrupt, match="bytes; its header says"):
        RingReader.open(ring.path)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        (0, 8, "length 8 outside"),  # shorter than a header
        (0, 1 << 31, "length .* outside"),  # past the end of the ring
        (0, 60_000, "extends past the published tail"),
        (4, 77, "unknown kind 77"),
    ],
)
def test_corrupt_record_headers_raise_ring_corrupt(
    ring: RingBuffer, field: int, value: int, match: str
):
    ring.write(b"x" * 100, stream="s")
    fmt = "<I" if field == 0 else "<H"
    corrupt(ring.path, ring._ring.data_offset + field, struct.pack(fmt, value))
    with RingReader.open(ring.path) as reader, pytest.raises(RingCorrupt, match=match):
        reader.read_next()


def test_corrupt_frame_header_is_detected(ring: RingBuffer):
    ring.write_frame(np.zeros((10, 10), np.uint16), stream="cam")
    body = ring._ring.data_offset + f.RECORD_HEADER_SIZE
    with RingReader.open(ring.path) as reader:
        corrupt(ring.path, body + 16, struct.pack("<Q", 5))  # frame_number: harmless
        corrupt(ring.path, body + 24, struct.pack("<Q", 1 << 40))  # shape[0]: lies
        record = reader.read_next()
        assert record is not None
        with pytest.raises(RingCorrupt, match=r"shape \(1099511627776, 10\)"):
            record.array()
        corrupt(ring.path, body, b"zz\x00\x00\x00\x00\x00\x00")
        record = reader.read_latest("cam")
        assert record is not None
        with pytest.raises(RingCorrupt, match="invalid dtype"):
            record.array()


def test_corrupt_stream_name_is_detected(ring: RingBuffer):
    ring.write(b"x", stream="s")
    slot = ring._ring.stream_slot(0)
    corrupt(ring.path, slot + f.STREAM_NAME_LEN, bytes([200]))
    with RingReader.open(ring.path) as reader:
        record = reader.read_next()
        assert record is not None
        with pytest.raises(RingCorrupt, match="name length 200"):
            _ = record.stream


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=SMALL + 70_000), st.binary(min_size=1, max_size=16)
        ),
        min_size=1,
        max_size=8,
    )
)
def test_fuzzed_files_never_crash_hang_or_read_out_of_bounds(
    shm_path: Path, edits: list[tuple[int, bytes]]
):
    """Random bytes anywhere (header, tables, records): only RingCorrupt or valid records
    for readers, only DaqStorageError for a writer re-attaching."""
    with RingBuffer.create(
        shm_path, capacity_bytes=SMALL, max_streams=4, schema_heap_bytes=4096
    ) as ring:
        for seq in range(40):
            ring.write(payload_for(seq, 1 + seq * 37 % 3000), stream=("a", "b")[seq % 2])
        ring.write_frame(np.ones((8, 8), np.uint16), stream="cam")
    size = shm_path.stat().st_size
    for offset, data in edits:
        corrupt(shm_path, offset % size, data[: size - offset % size])
    try:
        with RingReader.open(shm_path) as reader:
            for _ in range(200):  # bounded: a reader must not loop forever on garbage
                records = reader.read_many(50)
                if not records:
                    break
                for record in records:
                    _ = record.stream
                    if record.kind == "frame":
                        record.array()
                    assert len(record.data) <= SMALL
            reader.read_latest()
            reader.stats()
    except RingCorrupt:
        pass
    try:  # a writer re-attaching walks the records to recover: no crash, no hang
        with RingBuffer.open(shm_path) as writer:
            writer.write(b"after", stream="a")
    except DaqStorageError:
        pass
    finally:
        shm_path.unlink()


# The publish block and the counters most often, any header word now and then.
WORDS = st.sampled_from(range(f.OFF_TAIL_INTENT // 8, f.OFF_CHECKPOINTS // 8)) | st.integers(
    min_value=0, max_value=(f.OFF_READERS + 4 * f.READER_SLOT_SIZE) // 8 - 1
)
VALUES = st.sampled_from([0, 1, 8, 4096, SMALL, SMALL + 8, 2**62, 2**63, 2**64 - 8, 2**64 - 1]) | (
    st.integers(min_value=0, max_value=2**64 - 1)
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(WORDS, VALUES), min_size=1, max_size=6))
def test_fuzzed_header_words_never_crash_hang_or_overflow(
    shm_path: Path, edits: list[tuple[int, int]]
):
    """Any 8-byte word of the identity, publish, counter, checkpoint and reader-slot
    blocks set to anything (near 2**64 included): readers, a re-attaching writer and its
    writes raise RingCorrupt (or another DaqStorageError) or work."""
    with RingBuffer.create(shm_path, capacity_bytes=SMALL, max_readers=4) as ring:
        for seq in range(30):
            ring.write(payload_for(seq, 1 + seq * 53 % 2000), stream=("a", "b")[seq % 2])
        ring.write_frame(np.ones((8, 8), np.uint16), stream="cam", metadata={"k": 1})
    with shm_path.open("r+b") as handle:
        for word, value in edits:
            handle.seek(word * 8)
            handle.write(struct.pack("<Q", value))
    try:
        try:
            with RingReader.open(shm_path, start="latest") as latest:
                latest.read_latest()
                latest.read_latest("cam")
            with RingReader.open(shm_path) as reader:
                for _ in range(100):
                    records = reader.read_many(50)
                    if not records:
                        break
                    for record in records:
                        if record.kind == "frame":
                            _ = (record.array(), record.metadata, record.frame_number)
                reader.stats()
        except DaqStorageError:
            pass
        try:
            with RingBuffer.open(shm_path, block_timeout=0.01) as writer:
                writer.write(b"after", stream="a")
                writer.write_many([b"x" * 10] * 3, stream="b")
                writer.write_frame(np.ones((8, 8), np.uint16), stream="cam")
                writer.stats()
        except DaqStorageError:
            pass
    finally:
        shm_path.unlink()
