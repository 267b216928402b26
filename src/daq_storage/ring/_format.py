"""The ring file's byte layout: the versioned contract of ``docs/ring-format.md``.

Everything is little-endian. All offsets here are from the start of the file.
"""

from __future__ import annotations

import struct
import sys
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from daq_storage.errors import ConfigError, RingCorrupt, SchemaMismatch

MAGIC = b"DAQRING\x00"
VERSION = 1
ENDIAN_MARK = 0x01020304
ALIGN = 8
PAGE = 4096
RECORD_HEADER_SIZE = 32
CHECKPOINTS = 64
READER_SLOT_SIZE = 128
STREAM_SLOT_SIZE = 64
SCHEMA_SLOT_SIZE = 16
STREAM_NAME_MAX = 48
MIN_CAPACITY = 64 * 1024
MAX_CAPACITY = 1 << 44  # 16 TiB: far beyond any machine's shared memory
# Positions and counters stay below this: a file claiming more is corrupt, and no
# writer arithmetic on accepted values can overflow the 64-bit words.
POSITION_LIMIT = 1 << 63
MAX_RECORD = 0xFFFFFFF8  # the largest aligned record: its length is a u32
MAX_READERS = 1024
MAX_STREAMS = 4096
MAX_SCHEMAS = 65536

# --- identity block (offset 0, written once at create) ---
IDENTITY = struct.Struct("<8sIIQQIIIIQQ")  # 64 bytes used of 128
# magic, version, endian_mark, header_size, capacity, max_readers, max_streams,
# max_schemas, flags, schema_heap_size, created_ns
OFF_IDENTITY = 0

# --- publish block (offset 128): written by the writer for every record ---
OFF_TAIL_INTENT = 128  # u64: end position of the record being written (stored first)
OFF_TAIL = 136  # u64: end position of the last complete record (stored last)
OFF_LATEST = 144  # u64: start position of the last complete record
OFF_NEXT_SEQ = 152  # u64: sequence number the next record will get

# --- counters block (offset 256) ---
OFF_RECORDS_WRITTEN = 256  # u64
OFF_BYTES_WRITTEN = 264  # u64 payload bytes
OFF_DROPPED = 272  # u64 records refused (block-mode timeouts)
OFF_WRITER_PID = 280  # u64
OFF_WRITER_HEARTBEAT = 288  # u64 CLOCK_MONOTONIC ns
OFF_STREAM_COUNT = 296  # u64
OFF_SCHEMA_COUNT = 304  # u64
OFF_SCHEMA_HEAP_USED = 312  # u64
OFF_EVICTIONS = 320  # u64
OFF_OVERFLOW = 328  # u64: 0 discard_oldest, 1 block
OFF_WRITER_GENERATION = 336  # u64: incremented by each writer that attaches

# --- checkpoints (offset 512): start positions of records, one per 1/64 of the ring ---
OFF_CHECKPOINTS = 512

# --- reader slots (offset 1024) ---
OFF_READERS = 1024
# Reader slot fields (offsets inside a slot).
SLOT_STATE = 0  # u64: 0 free, 1 active, 2 evicted
SLOT_PID = 8  # u64
SLOT_CURSOR = 16  # u64: every record before this position is consumed
SLOT_HEARTBEAT = 24  # u64 CLOCK_MONOTONIC ns
SLOT_DELIVERED = 32  # u64
SLOT_LOST = 40  # u64
SLOT_NAME = 64  # 64 bytes, NUL-padded utf-8
STATE_FREE, STATE_ACTIVE, STATE_EVICTED = 0, 1, 2

# Stream slot fields.
STREAM_LATEST = 0  # u64: start position of the stream's newest record + 1 (0: none)
STREAM_KIND = 8  # u8
STREAM_NAME_LEN = 9  # u8
STREAM_NAME = 16  # 48 bytes

# Schema slot: heap offset u64, length u32, stream id u32.
SCHEMA_SLOT = struct.Struct("<QII")

# Record kinds.
KIND_PADDING = 0
KIND_RAW = 1
KIND_FRAME = 2
KIND_ARROW = 3
KIND_NAMES = {KIND_RAW: "raw", KIND_FRAME: "frame", KIND_ARROW: "arrow"}

# Record header: length u32 (header + payload, unaligned), kind u16, stream u16,
# seq u64, timestamp_ns u64, aux u32 (arrow: schema id), crc32 u32 (0 = none).
RECORD_HEADER = struct.Struct("<IHHQQII")
FLAG_CRC = 1  # identity flags: records carry a CRC-32 of the payload

# Frame payload header: dtype (8 ascii bytes, numpy dtype.str), ndim u32,
# metadata length u32, frame_number u64, then 8 x u64 shape = 88 bytes.
FRAME_HEADER = struct.Struct("<8sIIQ8Q")
FRAME_MAX_DIMS = 8

# Words that another process reads while they change (positions, counters, cursors) are
# accessed through a numpy uint64 view: an aligned single 8-byte load or store. Never use
# struct.pack_into for them: CPython zero-fills the target before packing, so a
# concurrent reader can see a transient 0.
if sys.byteorder != "little":  # pragma: no cover - no big-endian CI machine
    raise ImportError("daq_storage.ring supports little-endian machines only")


def align(n: int) -> int:
    """``n`` rounded up to the record alignment."""
    return (n + ALIGN - 1) & ~(ALIGN - 1)


@dataclass(frozen=True, slots=True)
class Geometry:
    """Where everything is in a ring file of given parameters."""

    capacity: int
    max_readers: int
    max_streams: int
    max_schemas: int
    schema_heap_size: int

    @property
    def streams_offset(self) -> int:
        return OFF_READERS + self.max_readers * READER_SLOT_SIZE

    @property
    def schemas_offset(self) -> int:
        return self.streams_offset + self.max_streams * STREAM_SLOT_SIZE

    @property
    def heap_offset(self) -> int:
        return self.schemas_offset + self.max_schemas * SCHEMA_SLOT_SIZE

    @property
    def header_size(self) -> int:
        end = self.heap_offset + self.schema_heap_size
        return (end + PAGE - 1) // PAGE * PAGE

    @property
    def file_size(self) -> int:
        return self.header_size + self.capacity

    @property
    def segment_size(self) -> int:
        return self.capacity // CHECKPOINTS


def check_geometry(
    capacity: int, max_readers: int, max_streams: int, max_schemas: int, heap: int
) -> Geometry:
    """Validate creation parameters (ints); raises :class:`ConfigError` naming the bad one."""
    if not MIN_CAPACITY <= capacity <= MAX_CAPACITY or capacity % PAGE:
        raise ConfigError(
            f"ring capacity must be a multiple of {PAGE} bytes in {MIN_CAPACITY}.."
            f"{MAX_CAPACITY}, got {capacity}"
        )
    if not 1 <= max_readers <= MAX_READERS:
        raise ConfigError(f"max_readers must be in 1..{MAX_READERS}, got {max_readers}")
    if not 1 <= max_streams <= MAX_STREAMS:
        raise ConfigError(f"max_streams must be in 1..{MAX_STREAMS}, got {max_streams}")
    if not 1 <= max_schemas <= MAX_SCHEMAS:
        raise ConfigError(f"max_schemas must be in 1..{MAX_SCHEMAS}, got {max_schemas}")
    if heap < 0 or heap % ALIGN:
        raise ConfigError(f"schema heap size must be a multiple of {ALIGN}, got {heap}")
    return Geometry(capacity, max_readers, max_streams, max_schemas, heap)


def read_geometry(buf: memoryview | bytes, file_size: int, path: str) -> tuple[Geometry, int]:
    """Validate a ring file's identity block; returns its geometry and flags.

    Raises:
        RingCorrupt: bad magic, version, byte order or geometry, naming the field.
    """
    if file_size < IDENTITY.size or len(buf) < IDENTITY.size:
        raise RingCorrupt(f"ring file {path} is too small ({file_size} bytes) to be a ring")
    (magic, version, endian, header_size, capacity, max_readers, max_streams, max_schemas,
     flags, heap, _created) = IDENTITY.unpack_from(buf, OFF_IDENTITY)  # fmt: skip
    if magic != MAGIC:
        raise RingCorrupt(f"ring file {path} has bad magic {magic!r} (expected {MAGIC!r})")
    if endian != ENDIAN_MARK:
        raise RingCorrupt(
            f"ring file {path} has byte-order mark {endian:#010x} "
            f"(expected {ENDIAN_MARK:#010x}: written by a big-endian machine?)"
        )
    if version != VERSION:
        raise RingCorrupt(f"ring file {path} has format version {version}; this reads {VERSION}")
    try:
        geometry = check_geometry(capacity, max_readers, max_streams, max_schemas, heap)
    except ConfigError as exc:
        raise RingCorrupt(f"ring file {path} has invalid geometry: {exc}") from None
    if header_size != geometry.header_size:
        raise RingCorrupt(
            f"ring file {path} declares header_size {header_size}, "
            f"but its geometry implies {geometry.header_size}"
        )
    if file_size != geometry.file_size:
        raise RingCorrupt(
            f"ring file {path} is {file_size} bytes; its header says {geometry.file_size} "
            f"(header {header_size} + capacity {capacity})"
        )
    return geometry, flags


def frame_dtype_code(array: npt.NDArray[Any]) -> bytes:
    """The 8-byte dtype field of a frame header for ``array``."""
    code = array.dtype.str.encode()
    if (
        array.dtype.hasobject
        or array.dtype.fields is not None
        or array.dtype.itemsize == 0
        or len(code) > 8
    ):
        raise SchemaMismatch(f"frame dtype {array.dtype} cannot be stored in the ring")
    return code.ljust(8, b"\x00")


def raw_records(
    rows: npt.NDArray[np.uint8],
    stream_id: int,
    first_seq: int,
    stamps: npt.NDArray[np.uint64],
    *,
    crc: bool,
) -> npt.NDArray[np.uint8]:
    """Raw records of equal-length payloads (one per row), laid out as in the ring:
    one row of ``align(RECORD_HEADER_SIZE + payload)`` bytes per record."""
    n, size = rows.shape
    length = RECORD_HEADER_SIZE + size
    block = np.zeros((n, align(length)), np.uint8)
    header = block[:, :RECORD_HEADER_SIZE]
    header[:, 0:4] = np.frombuffer(np.uint32(length).tobytes(), np.uint8)
    header[:, 4:6] = np.frombuffer(np.uint16(KIND_RAW).tobytes(), np.uint8)
    header[:, 6:8] = np.frombuffer(np.uint16(stream_id).tobytes(), np.uint8)
    seqs = np.arange(first_seq, first_seq + n, dtype=np.uint64)
    header[:, 8:16] = seqs.view(np.uint8).reshape(n, 8)
    header[:, 16:24] = stamps.view(np.uint8).reshape(n, 8)
    if crc:
        crcs = np.fromiter((zlib.crc32(r.data) for r in rows), np.uint32, n)
        header[:, 28:32] = crcs.view(np.uint8).reshape(n, 4)
    block[:, RECORD_HEADER_SIZE:length] = rows
    return block
