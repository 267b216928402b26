"""The ring's single writer: :class:`RingBuffer`."""

from __future__ import annotations

import json
import mmap
import os
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import InvalidName, RingBusy, RingCorrupt, RingFull, SchemaMismatch
from daq_storage.ring import _format as f
from daq_storage.ring._mapping import RingFile, prefault
from daq_storage.ring._platform import (
    fence,
    lock_byte,
    lock_holder_alive,
    monotonic_ns,
    unlock_byte,
)

__all__ = ["ReaderStats", "RingBuffer", "RingStats"]

Overflow = Literal["discard_oldest", "block"]
_WRITER_LOCK_BYTE = 0
_DEFAULT_HEARTBEAT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class ReaderStats:
    """One registered reader as the ring sees it."""

    slot: int
    name: str
    pid: int
    state: str  # "active" or "evicted"
    lag_bytes: int
    delivered: int
    lost: int
    alive: bool


@dataclass(frozen=True, slots=True)
class RingStats:
    """Counters of a ring (see :meth:`RingBuffer.stats`)."""

    path: Path
    capacity: int
    overflow: str
    written: int  # records
    bytes: int  # payload bytes
    dropped: int  # records refused by block-mode timeouts
    evictions: int
    used_bytes: int  # bytes between the oldest retained position and the tail
    streams: list[str]
    readers: list[ReaderStats]


def _frame_dtype(array: np.ndarray) -> bytes:
    code = array.dtype.str.encode()
    if array.dtype.hasobject or array.dtype.fields is not None or len(code) > 8:
        raise SchemaMismatch(f"frame dtype {array.dtype} cannot be stored in the ring")
    return code.ljust(8, b"\x00")


class RingBuffer:
    """The writing end of a shared-memory ring of variable-length records.

    One writer per ring (enforced with a lock the kernel drops when the process dies);
    any number of :class:`~daq_storage.ring.RingReader` in any process or language.
    Create with :meth:`create`, re-attach with :meth:`open`.
    """

    def __init__(self, ring: RingFile, overflow: Overflow, block_timeout: float,
                 heartbeat_timeout: float) -> None:  # fmt: skip
        self._ring = ring
        self.path = ring.path
        self.capacity = ring.capacity
        self.overflow: Overflow = overflow
        self.block_timeout = float(block_timeout)
        self.heartbeat_timeout = float(heartbeat_timeout)
        g = ring.geometry
        self._buf = ring.buf
        self._data = ring.data_offset
        self._seg_size = g.segment_size
        self._crc = bool(ring.flags & f.FLAG_CRC)
        # Writer state cached locally; the file is the source of truth on open().
        self._tail = ring.u64(f.OFF_TAIL)
        self._seq = ring.u64(f.OFF_NEXT_SEQ)
        self._written = ring.u64(f.OFF_RECORDS_WRITTEN)
        self._bytes = ring.u64(f.OFF_BYTES_WRITTEN)
        self._last_segment = -1
        self._min_cursor_cache = 0
        self._streams: dict[str, int] = {}
        self._stream_kinds: dict[int, int] = {}
        self._schema_ids: dict[tuple[int, bytes], int] = {}
        self._stream_schema: dict[int, pa.Schema] = {}
        self._stream_schema_id: dict[int, int] = {}
        self._frame_specs: dict[int, tuple[str, tuple[int, ...]]] = {}
        self._np = np.frombuffer(ring.buf, dtype=np.uint8)
        self._words = ring.words
        ring.refresh_streams()
        for name in ring.streams:
            sid = ring.stream_id(name)
            assert sid is not None
            self._streams[name] = sid
        ring.set_u64(f.OFF_OVERFLOW, 1 if overflow == "block" else 0)
        ring.set_u64(f.OFF_WRITER_PID, os.getpid())
        ring.set_u64(f.OFF_WRITER_HEARTBEAT, monotonic_ns())

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        capacity_bytes: int = 256 << 20,
        overflow: Overflow = "discard_oldest",
        block_timeout: float = 1.0,
        max_readers: int = 16,
        max_streams: int = 256,
        max_schemas: int = 1024,
        schema_heap_bytes: int = 1 << 20,
        crc: bool = False,
        heartbeat_timeout: float = _DEFAULT_HEARTBEAT_TIMEOUT,
        mode: int = 0o600,
        exist_ok: bool = False,
    ) -> RingBuffer:
        """Create a ring file at ``path`` and attach as its writer.

        Args:
            path: file to create, normally in /dev/shm.
            capacity_bytes: size of the data region, rounded up to a multiple of 4 KiB.
            overflow: ``"discard_oldest"`` (never wait; slow readers lose the oldest
                records, counted) or ``"block"`` (wait for registered consumers up to
                ``block_timeout`` seconds, then raise :class:`RingFull`).
            block_timeout: see ``overflow``.
            max_readers: registered-reader slots.
            max_streams: distinct stream names.
            max_schemas: distinct Arrow schemas over the ring's life.
            schema_heap_bytes: space for serialised Arrow schemas.
            crc: store a CRC-32 of every payload, checked by readers.
            heartbeat_timeout: block mode: a consumer silent this long is evicted.
            mode: file permissions (owner-only by default).
            exist_ok: replace an existing file at ``path`` (its writer must be gone).

        Raises:
            FileExistsError: ``path`` exists and ``exist_ok`` is false.
            RingBusy: ``exist_ok`` and a live writer holds the existing ring.
            ValueError: bad geometry or overflow mode.
        """
        _check_overflow(overflow)
        capacity = max(f.MIN_CAPACITY, (int(capacity_bytes) + f.PAGE - 1) // f.PAGE * f.PAGE)
        geometry = f.check_geometry(
            capacity, max_readers, max_streams, max_schemas, f.align(schema_heap_bytes)
        )
        path = Path(path)
        if exist_ok and path.exists():
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                if not lock_byte(fd, _WRITER_LOCK_BYTE):
                    raise RingBusy(f"ring {path} is held by a live writer; cannot replace it")
            finally:
                os.close(fd)
            path.unlink()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow what was asked
            if not lock_byte(fd, _WRITER_LOCK_BYTE):  # pragma: no cover - O_EXCL just made it
                raise RingBusy(f"ring {path} is held by another writer")
            os.ftruncate(fd, geometry.file_size)
            mm = mmap.mmap(fd, geometry.file_size, mmap.MAP_SHARED)
            prefault(mm, 0, geometry.file_size)
            f.IDENTITY.pack_into(
                mm, f.OFF_IDENTITY, f.MAGIC, f.VERSION, f.ENDIAN_MARK, geometry.header_size,
                geometry.capacity, max_readers, max_streams, max_schemas,
                f.FLAG_CRC if crc else 0, geometry.schema_heap_size, time.time_ns(),
            )  # fmt: skip
            ring = RingFile(path, fd, mm)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return cls(ring, overflow, block_timeout, heartbeat_timeout)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        overflow: Overflow | None = None,
        block_timeout: float = 1.0,
        heartbeat_timeout: float = _DEFAULT_HEARTBEAT_TIMEOUT,
    ) -> RingBuffer:
        """Re-attach as the writer of an existing ring (e.g. after a writer crash).

        Raises:
            RingBusy: another live process (or open) is the writer.
            RingCorrupt: the file is not a valid ring.
        """
        ring = RingFile.open_existing(path, writable=True)
        try:
            if not lock_byte(ring.fd, _WRITER_LOCK_BYTE):
                pid = ring.u64(f.OFF_WRITER_PID)
                raise RingBusy(f"ring {path} already has a live writer (pid {pid})")
            if overflow is None:
                overflow = "block" if ring.u64(f.OFF_OVERFLOW) == 1 else "discard_oldest"
            _check_overflow(overflow)
            _recover_unfinished_record(ring)
            ring.set_u64(f.OFF_WRITER_GENERATION, ring.u64(f.OFF_WRITER_GENERATION) + 1)
            return cls(ring, overflow, block_timeout, heartbeat_timeout)
        except BaseException:
            ring.close()
            raise

    @classmethod
    def from_config(cls, config: Any, *, exist_ok: bool = True) -> RingBuffer:
        """Create the ring described by a :class:`~daq_storage.config.RingBufferConfig`."""
        return cls.create(
            config.path,
            capacity_bytes=config.capacity_bytes,
            overflow=config.overflow,
            block_timeout=config.block_timeout_secs,
            max_readers=config.max_readers,
            exist_ok=exist_ok,
        )

    def close(self) -> None:
        """Detach (the file stays; readers keep reading what is there)."""
        if self._ring.closed:
            return
        unlock_byte(self._ring.fd, _WRITER_LOCK_BYTE)
        self._np = np.empty(0, np.uint8)
        self._words = np.empty(0, np.uint64)
        self._ring.close()

    def unlink(self) -> None:
        """Remove the ring file (attached readers keep their mapping until they close)."""
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._ring.closed

    # ------------------------------------------------------------------ streams
    def _stream(self, name: str, kind: int) -> int:
        sid = self._streams.get(name)
        if sid is not None:
            existing = self._stream_kinds.get(sid)
            if existing is None:
                existing = self._buf[self._ring.stream_slot(sid) + f.STREAM_KIND]
                self._stream_kinds[sid] = existing
            if existing != kind:
                raise SchemaMismatch(
                    f"stream {name!r} carries {f.KIND_NAMES.get(existing, existing)} records; "
                    f"cannot write {f.KIND_NAMES[kind]} records to it"
                )
            return sid
        if not isinstance(name, str) or not name or "\x00" in name:
            raise InvalidName(f"stream name {name!r} must be a non-empty string without NUL")
        encoded = name.encode()
        if len(encoded) > f.STREAM_NAME_MAX:
            raise InvalidName(
                f"stream name {name!r} is {len(encoded)} bytes; at most {f.STREAM_NAME_MAX}"
            )
        sid = len(self._streams)
        if sid >= self._ring.geometry.max_streams:
            raise RingFull(
                f"ring {self.path} has no free stream slot for {name!r} "
                f"(max_streams={self._ring.geometry.max_streams})"
            )
        slot = self._ring.stream_slot(sid)
        self._buf[slot : slot + f.STREAM_SLOT_SIZE] = bytes(f.STREAM_SLOT_SIZE)
        self._buf[slot + f.STREAM_KIND] = kind
        self._buf[slot + f.STREAM_NAME_LEN] = len(encoded)
        self._buf[slot + f.STREAM_NAME : slot + f.STREAM_NAME + len(encoded)] = encoded
        fence()  # the slot is complete before the count that publishes it
        self._ring.set_u64(f.OFF_STREAM_COUNT, sid + 1)
        self._streams[name] = sid
        self._stream_kinds[sid] = kind
        return sid

    def _schema_id(self, sid: int, schema: pa.Schema) -> int:
        cached = self._stream_schema.get(sid)
        if cached is not None and (cached is schema or cached.equals(schema, check_metadata=True)):
            return self._stream_schema_id[sid]
        serialized = schema.serialize().to_pybytes()
        key = (sid, serialized)
        schema_id = self._schema_ids.get(key)
        if schema_id is None:
            g = self._ring.geometry
            count = self._ring.u64(f.OFF_SCHEMA_COUNT)
            used = self._ring.u64(f.OFF_SCHEMA_HEAP_USED)
            if count >= g.max_schemas or used + len(serialized) > g.schema_heap_size:
                raise RingFull(
                    f"ring {self.path} schema table is full ({count} schemas, {used} of "
                    f"{g.schema_heap_size} heap bytes); create the ring with more room"
                )
            start = g.heap_offset + used
            self._buf[start : start + len(serialized)] = serialized
            f.SCHEMA_SLOT.pack_into(
                self._buf, g.schemas_offset + count * f.SCHEMA_SLOT_SIZE, used, len(serialized), sid
            )
            self._ring.set_u64(f.OFF_SCHEMA_HEAP_USED, used + f.align(len(serialized)))
            fence()
            self._ring.set_u64(f.OFF_SCHEMA_COUNT, count + 1)
            schema_id = self._schema_ids[key] = count
        self._stream_schema[sid] = schema
        self._stream_schema_id[sid] = schema_id
        return schema_id

    # ------------------------------------------------------------------ writing
    def _reserve(self, total: int) -> int:
        """Make room for a record of ``total`` aligned bytes; returns its start position.

        Writes a padding record at the wrap. Stores ``tail_intent`` before returning so
        readers can tell that the bytes up to it are being overwritten.
        """
        cap = self.capacity
        if total > cap:
            raise RingFull(f"record of {total} bytes can never fit ring {self.path} of {cap} bytes")
        pos = self._tail
        room = cap - pos % cap
        if room < total:
            end = pos + room + total
        else:
            end = pos + total
            room = 0
        if self.overflow == "block" and end - self._min_cursor_cache > cap:
            self._wait_for_readers(end)
        buf = self._buf
        words = self._words
        if room:
            # Padding to the end of the data region; published on its own so that a
            # writer that dies inside the next record leaves exactly one record to undo.
            words[f.OFF_TAIL_INTENT >> 3] = pos + room
            fence()
            if room >= f.RECORD_HEADER_SIZE:
                f.RECORD_HEADER.pack_into(
                    buf, self._data + pos % cap, room, f.KIND_PADDING, 0, 0, 0, 0, 0
                )
            pos += room
            fence()
            words[f.OFF_TAIL >> 3] = pos
            self._tail = pos
        words[f.OFF_TAIL_INTENT >> 3] = end
        fence()
        segment = pos // self._seg_size
        if segment != self._last_segment:
            self._last_segment = segment
            words[(f.OFF_CHECKPOINTS >> 3) + segment % f.CHECKPOINTS] = pos
        return pos

    def _publish(self, pos: int, end: int, sid: int, records: int, payload_bytes: int) -> None:
        fence()  # the record bytes are visible before the tail that publishes them
        words = self._words
        words[f.OFF_LATEST >> 3] = pos
        words[f.OFF_TAIL >> 3] = end
        self._tail = end
        self._seq += records
        self._written += records
        self._bytes += payload_bytes
        words[f.OFF_NEXT_SEQ >> 3] = self._seq
        words[f.OFF_RECORDS_WRITTEN >> 3] = self._written
        words[f.OFF_BYTES_WRITTEN >> 3] = self._bytes
        words[(self._ring.stream_slot(sid) + f.STREAM_LATEST) >> 3] = pos + 1

    def _header(self, at: int, length: int, kind: int, sid: int, seq: int, ts: int, aux: int,
                payload: Any) -> None:  # fmt: skip
        crc = zlib.crc32(payload) if self._crc else 0
        f.RECORD_HEADER.pack_into(self._buf, at, length, kind, sid, seq, ts, aux, crc)

    def write(
        self, payload: bytes | bytearray | memoryview | np.ndarray, *, stream: str = "raw",
        timestamp_ns: int | None = None,
    ) -> int:  # fmt: skip
        """Append one record of raw bytes; returns its sequence number.

        Raises:
            RingFull: block mode and no room within ``block_timeout`` (counted as
                dropped), or the record is larger than the ring.
            WriterClosedError: after :meth:`close`.
        """
        self._ring.check_open("write")
        sid = self._streams.get(stream)
        if sid is None or self._stream_kinds.get(sid) != f.KIND_RAW:
            sid = self._stream(stream, f.KIND_RAW)
        if isinstance(payload, bytes):
            view: bytes | memoryview = payload
        elif isinstance(payload, np.ndarray):
            view = np.ascontiguousarray(payload).data.cast("B")
        else:
            view = memoryview(payload).cast("B")
        n = len(view)
        length = f.RECORD_HEADER_SIZE + n
        pos = self._reserve(f.align(length))
        at = self._data + pos % self.capacity
        seq = self._seq
        ts = time.time_ns() if timestamp_ns is None else timestamp_ns
        self._header(at, length, f.KIND_RAW, sid, seq, ts, 0, view)
        self._buf[at + f.RECORD_HEADER_SIZE : at + length] = view
        self._publish(pos, pos + f.align(length), sid, 1, n)
        return seq

    def write_many(
        self,
        payloads: Sequence[bytes] | npt.NDArray[Any],
        *,
        stream: str = "raw",
        timestamps_ns: Sequence[int] | npt.NDArray[np.integer[Any]] | None = None,
    ) -> range:
        """Append many raw records at once; returns their sequence numbers.

        A 2-D array (or a list of equal-length ``bytes``) takes the vectorised path: the
        records are laid out with numpy and copied in one block per wrap.
        """
        self._ring.check_open("write_many")
        sid = self._stream(stream, f.KIND_RAW)
        if isinstance(payloads, np.ndarray):
            if payloads.ndim != 2:
                raise SchemaMismatch(f"write_many needs a 2-D array, got shape {payloads.shape}")
            rows = np.ascontiguousarray(payloads).view(np.uint8).reshape(len(payloads), -1)
        else:
            sizes = {len(p) for p in payloads}
            if len(sizes) > 1:
                first = self._seq
                for i, p in enumerate(payloads):
                    ts = None if timestamps_ns is None else int(timestamps_ns[i])
                    self.write(p, stream=stream, timestamp_ns=ts)
                return range(first, self._seq)
            size = sizes.pop() if sizes else 0
            rows = np.frombuffer(b"".join(payloads), np.uint8).reshape(len(payloads), size)
        n, size = rows.shape
        first_seq = self._seq
        if n == 0:
            return range(first_seq, first_seq)
        length = f.RECORD_HEADER_SIZE + size
        stride = f.align(length)
        if timestamps_ns is None:
            stamps = np.full(n, time.time_ns(), np.uint64)
        else:
            stamps = np.asarray(timestamps_ns, np.uint64)
            if stamps.shape != (n,):
                raise SchemaMismatch(f"timestamps_ns has shape {stamps.shape}; expected ({n},)")
        block = np.zeros((n, stride), np.uint8)
        header = block[:, : f.RECORD_HEADER_SIZE]
        header[:, 0:4] = np.frombuffer(np.uint32(length).tobytes(), np.uint8)
        header[:, 4:6] = np.frombuffer(np.uint16(f.KIND_RAW).tobytes(), np.uint8)
        header[:, 6:8] = np.frombuffer(np.uint16(sid).tobytes(), np.uint8)
        seqs = np.arange(first_seq, first_seq + n, dtype=np.uint64)
        header[:, 8:16] = seqs.view(np.uint8).reshape(n, 8)
        header[:, 16:24] = stamps.view(np.uint8).reshape(n, 8)
        if self._crc:
            crcs = np.fromiter((zlib.crc32(r.data) for r in rows), np.uint32, n)
            header[:, 28:32] = crcs.view(np.uint8).reshape(n, 4)
        block[:, f.RECORD_HEADER_SIZE : length] = rows
        # Copy up to one checkpoint segment of whole records at a time, never across
        # the wrap (a chunk that would cross it starts after a padding record instead).
        cap = self.capacity
        per_chunk = max(1, self._seg_size // stride)
        done = 0
        while done < n:
            room = (cap - self._tail % cap) // stride
            take = min(n - done, per_chunk, room) if room else min(n - done, per_chunk)
            nbytes = take * stride
            pos = self._reserve(nbytes)
            at = self._data + pos % cap
            self._np[at : at + nbytes] = block[done : done + take].reshape(-1)
            self._publish(pos + nbytes - stride, pos + nbytes, sid, take, take * size)
            done += take
        return range(first_seq, first_seq + n)

    def write_frame(
        self,
        array: npt.NDArray[Any],
        *,
        stream: str = "camera",
        timestamp_ns: int | None = None,
        frame_number: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one frame (any numeric dtype, up to 8 dimensions); returns its sequence.

        The record carries dtype, shape, frame number and optional JSON metadata, so
        readers rebuild the array with ``record.array()``. A stream keeps one dtype and
        shape; a different one raises :class:`SchemaMismatch`.
        """
        self._ring.check_open("write_frame")
        sid = self._streams.get(stream)
        if sid is None or self._stream_kinds.get(sid) != f.KIND_FRAME:
            sid = self._stream(stream, f.KIND_FRAME)
        if not isinstance(array, np.ndarray):
            raise SchemaMismatch(f"write_frame needs a numpy array, got {type(array).__name__}")
        spec = self._frame_specs.get(sid)
        if spec is None or spec != (array.dtype.str, array.shape):
            if spec is not None:
                raise SchemaMismatch(
                    f"stream {stream!r} carries frames of dtype {spec[0]} shape {spec[1]}; "
                    f"got dtype {array.dtype.str} shape {array.shape}"
                )
            if array.ndim > f.FRAME_MAX_DIMS:
                raise SchemaMismatch(f"frames have at most {f.FRAME_MAX_DIMS} dimensions")
            _frame_dtype(array)
            self._frame_specs[sid] = (array.dtype.str, array.shape)
        meta = b"" if not metadata else json.dumps(metadata, separators=(",", ":")).encode()
        prefix = f.FRAME_HEADER.size + f.align(len(meta))
        nbytes = array.nbytes
        length = f.RECORD_HEADER_SIZE + prefix + nbytes
        pos = self._reserve(f.align(length))
        at = self._data + pos % self.capacity
        seq = self._seq
        number = seq if frame_number is None else frame_number
        shape = list(array.shape) + [0] * (f.FRAME_MAX_DIMS - array.ndim)
        body = at + f.RECORD_HEADER_SIZE
        f.FRAME_HEADER.pack_into(
            self._buf, body, _frame_dtype(array), array.ndim, len(meta), number, *shape
        )
        if meta:
            start = body + f.FRAME_HEADER.size
            self._buf[start : start + len(meta)] = meta
        data_at = body + prefix
        # np.copyto into a view of the mapping: one memcpy, non-contiguous input included.
        np.copyto(
            self._np[data_at : data_at + nbytes].view(array.dtype).reshape(array.shape), array
        )
        ts = time.time_ns() if timestamp_ns is None else timestamp_ns
        payload = self._buf[body : at + length] if self._crc else b""
        self._header(at, length, f.KIND_FRAME, sid, seq, ts, 0, payload)
        self._publish(pos, pos + f.align(length), sid, 1, length - f.RECORD_HEADER_SIZE)
        return seq

    def write_batch(
        self, batch: pa.RecordBatch, *, stream: str = "table", timestamp_ns: int | None = None
    ) -> int:
        """Append an Arrow record batch; returns its sequence number.

        The stream's schema is stored once in the ring's schema table; each record holds
        only the IPC record-batch message, so small batches stay cheap.
        """
        self._ring.check_open("write_batch")
        if isinstance(batch, pa.Table):
            batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else None
            if batch is None:
                raise SchemaMismatch("write_batch got an empty table")
        if not isinstance(batch, pa.RecordBatch):
            raise SchemaMismatch(
                f"write_batch needs a pyarrow RecordBatch, got {type(batch).__name__}"
            )
        sid = self._streams.get(stream)
        if sid is None or self._stream_kinds.get(sid) != f.KIND_ARROW:
            sid = self._stream(stream, f.KIND_ARROW)
        schema_id = self._schema_id(sid, batch.schema)
        message = batch.serialize()
        n = message.size
        length = f.RECORD_HEADER_SIZE + n
        pos = self._reserve(f.align(length))
        at = self._data + pos % self.capacity
        seq = self._seq
        ts = time.time_ns() if timestamp_ns is None else timestamp_ns
        self._np[at + f.RECORD_HEADER_SIZE : at + length] = np.frombuffer(message, np.uint8)
        payload = self._buf[at + f.RECORD_HEADER_SIZE : at + length] if self._crc else b""
        self._header(at, length, f.KIND_ARROW, sid, seq, ts, schema_id, payload)
        self._publish(pos, pos + f.align(length), sid, 1, n)
        return seq

    # ------------------------------------------------------------------ block mode
    def _reader_slots(self) -> Iterable[tuple[int, int]]:
        g = self._ring.geometry
        for i in range(g.max_readers):
            slot = f.OFF_READERS + i * f.READER_SLOT_SIZE
            if self._ring.u64(slot + f.SLOT_STATE) == f.STATE_ACTIVE:
                yield i, slot

    def _min_cursor(self) -> int:
        cursors = [self._ring.u64(slot + f.SLOT_CURSOR) for _, slot in self._reader_slots()]
        return min(cursors, default=self._tail)

    def _evict_dead(self) -> None:
        now = monotonic_ns()
        limit = int(self.heartbeat_timeout * 1e9)
        for _, slot in self._reader_slots():
            dead = not lock_holder_alive(self._ring.fd, slot)
            stale = now - self._ring.u64(slot + f.SLOT_HEARTBEAT) > limit
            if dead or stale:
                self._ring.set_u64(slot + f.SLOT_STATE, f.STATE_EVICTED)
                self._ring.set_u64(f.OFF_EVICTIONS, self._ring.u64(f.OFF_EVICTIONS) + 1)

    def _wait_for_readers(self, end: int) -> None:
        cap = self.capacity
        deadline = time.monotonic() + self.block_timeout
        next_check = 0.0
        sleep = 0.0
        while True:
            fence()
            self._min_cursor_cache = self._min_cursor()
            if end - self._min_cursor_cache <= cap:
                return
            now = time.monotonic()
            if now >= next_check:
                self._evict_dead()
                next_check = now + 0.05
                continue
            if now >= deadline:
                self._ring.set_u64(f.OFF_DROPPED, self._ring.u64(f.OFF_DROPPED) + 1)
                raise RingFull(
                    f"ring {self.path}: no room for {end - self._tail} bytes after "
                    f"{self.block_timeout} s; the slowest consumer is "
                    f"{end - cap - self._min_cursor_cache} bytes behind (record dropped)"
                )
            time.sleep(sleep)
            sleep = min(0.001, sleep + 0.00005)

    # ------------------------------------------------------------------ stats
    def heartbeat(self) -> None:
        """Mark the writer alive (readers show it in ``writer_heartbeat_age``)."""
        self._ring.set_u64(f.OFF_WRITER_HEARTBEAT, monotonic_ns())

    def stats(self) -> RingStats:
        """Counters: records and bytes written, drops, and every registered reader."""
        self._ring.check_open("stats")
        return ring_stats(self._ring, self.overflow)

    @property
    def streams(self) -> list[str]:
        """Stream names declared so far, in id order."""
        return list(self._streams)


def ring_stats(ring: RingFile, overflow: str) -> RingStats:
    """Read a ring's counters and reader slots (works from any attached process)."""
    tail = ring.u64(f.OFF_TAIL)
    readers = []
    for i in range(ring.geometry.max_readers):
        slot = f.OFF_READERS + i * f.READER_SLOT_SIZE
        state = ring.u64(slot + f.SLOT_STATE)
        if state not in (f.STATE_ACTIVE, f.STATE_EVICTED):
            continue
        raw_name = bytes(ring.buf[slot + f.SLOT_NAME : slot + f.SLOT_NAME + 64]).rstrip(b"\x00")
        readers.append(
            ReaderStats(
                slot=i,
                name=raw_name.decode(errors="replace"),
                pid=ring.u64(slot + f.SLOT_PID),
                state="active" if state == f.STATE_ACTIVE else "evicted",
                lag_bytes=max(0, tail - ring.u64(slot + f.SLOT_CURSOR)),
                delivered=ring.u64(slot + f.SLOT_DELIVERED),
                lost=ring.u64(slot + f.SLOT_LOST),
                alive=lock_holder_alive(ring.fd, slot),
            )
        )
    return RingStats(
        path=ring.path,
        capacity=ring.capacity,
        overflow=overflow,
        written=ring.u64(f.OFF_RECORDS_WRITTEN),
        bytes=ring.u64(f.OFF_BYTES_WRITTEN),
        dropped=ring.u64(f.OFF_DROPPED),
        evictions=ring.u64(f.OFF_EVICTIONS),
        used_bytes=min(tail, ring.capacity),
        streams=ring.streams,
        readers=readers,
    )


def _check_overflow(overflow: str) -> None:
    if overflow not in ("discard_oldest", "block"):
        raise ValueError(f"overflow must be 'discard_oldest' or 'block', got {overflow!r}")


def _recover_unfinished_record(ring: RingFile) -> None:
    """Turn the record a dead writer left half-written into padding, and publish it."""
    intent = ring.u64(f.OFF_TAIL_INTENT)
    tail = ring.u64(f.OFF_TAIL)
    if intent == tail:
        return
    if intent < tail or intent - tail > ring.capacity:
        raise RingCorrupt(f"ring {ring.path}: tail_intent {intent} and tail {tail} disagree")
    gap = intent - tail
    at = ring.data_offset + tail % ring.capacity
    f.RECORD_HEADER.pack_into(ring.buf, at, gap, f.KIND_PADDING, 0, 0, 0, 0, 0)
    fence()
    ring.set_u64(f.OFF_TAIL, intent)
