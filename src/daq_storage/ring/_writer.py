"""The ring's single writer: :class:`RingBuffer`."""

from __future__ import annotations

import errno
import os
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import (
    ConfigError,
    InvalidName,
    RingFull,
    SchemaMismatch,
    StorageIOError,
    describe_value,
)
from daq_storage.ring import _args as a
from daq_storage.ring import _format as f
from daq_storage.ring._attach import WRITER_BYTE
from daq_storage.ring._block import wait_for_consumers
from daq_storage.ring._create import create_ring
from daq_storage.ring._mapping import RingFile
from daq_storage.ring._platform import (
    LARGE_COPY_BYTES,
    fence,
    monotonic_ns,
    store_fence,
    unlock_byte,
)
from daq_storage.ring._recover import recover
from daq_storage.ring._stats import RingStats, ring_stats
from daq_storage.ring._tables import StreamTables
from daq_storage.ring._trust import ring_path

__all__ = ["RingBuffer"]

Overflow = Literal["discard_oldest", "block"]
_DEFAULT_HEARTBEAT_TIMEOUT = 5.0
# What from_config reads (duck-typed: the ring never imports the config schema).
_CONFIG_FIELDS = ("path", "capacity_bytes", "overflow", "block_timeout_secs", "max_readers")


class RingBuffer:
    """The writing end of a shared-memory ring of variable-length records.

    One writer per ring (enforced with a lock the kernel drops when the process dies);
    any number of :class:`~daq_storage.ring.RingReader` in any process or language.
    Create with :meth:`create`, re-attach with :meth:`open`: a writer may be killed at
    any instruction, and the next one continues the ring where its records end.
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
        self._limit = min(self.capacity, f.MAX_RECORD)  # the largest record
        self._written = ring.u64(f.OFF_RECORDS_WRITTEN)
        self._bytes = ring.u64(f.OFF_BYTES_WRITTEN)
        self._last_segment = -1
        self._min_cursor_cache = 0
        tables = StreamTables(ring)
        self._streams = tables.ids
        self._stream_kinds = tables.kinds
        self._stream = tables.declare
        self._schema_id = tables.schema_id
        self._stored = tables.stored
        self._frame_specs: dict[int, tuple[str, tuple[int, ...]]] = {}
        self._np = np.frombuffer(ring.buf, dtype=np.uint8)
        self._words = ring.words
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
        force: bool = False,
    ) -> RingBuffer:
        """Create a ring file at ``path`` and attach as its writer.

        The whole file is reserved before it is touched, so a ring that does not fit is
        an error, never a SIGBUS; it gets its name only once complete.

        Args:
            path: file to create, normally in /dev/shm.
            capacity_bytes: size of the data region (>= 1), rounded up to a multiple of
                4 KiB and to at least 64 KiB. :func:`~daq_storage.ring.max_ring_bytes`
                tells the largest accepted.
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
            mode: file permissions (owner-only by default). A ring that group or others
                may write is opened again only with ``trust_foreign=True``.
            exist_ok: replace an existing ring at ``path`` if no writer and no reader
                (registered or anonymous) is attached to it. A file of another user's
                is never replaced (:class:`RingNotTrusted`).
            force: on a memory-backed filesystem (tmpfs), allow more than the RAM share
                (half of the smaller of physical memory and the memory cgroup limit, at
                most the memory available now).

        Raises:
            RingExists: ``path`` exists and ``exist_ok`` is false (a
                ``FileExistsError``), or it is not a ring file.
            RingBusy: ``exist_ok`` and a live writer or reader is attached to the
                existing ring (the message names them).
            RingNotTrusted: ``exist_ok`` and ``path`` belongs to another user.
            StorageIOError: ``ENOSPC``: the file does not fit the filesystem;
                ``ENOMEM``: it exceeds the RAM share and ``force`` is false; other
                errnos: the directory is missing, not writable, ...
            ConfigError: bad geometry, overflow mode, timeout, mode or flag (a
                ``ValueError``), naming the argument, the value and what is accepted.
            InvalidName: ``path`` cannot name a file.
        """
        where = ring_path(path)
        a.check_overflow(overflow)
        block_timeout = a.seconds(block_timeout, "block_timeout")
        heartbeat_timeout = a.seconds(heartbeat_timeout, "heartbeat_timeout")
        try:
            geometry = a.geometry(
                capacity_bytes, max_readers, max_streams, max_schemas, schema_heap_bytes
            )
        except ConfigError as exc:
            raise ConfigError(f"ring {where}: {exc}") from None
        return create_ring(
            Path(where),
            geometry,
            lambda ring: cls(ring, overflow, block_timeout, heartbeat_timeout),
            crc=a.flag(crc, "crc"),
            mode=a.file_mode(mode),
            exist_ok=a.flag(exist_ok, "exist_ok"),
            force=a.flag(force, "force"),
        )

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        overflow: Overflow | None = None,
        block_timeout: float = 1.0,
        heartbeat_timeout: float = _DEFAULT_HEARTBEAT_TIMEOUT,
        trust_foreign: bool = False,
    ) -> RingBuffer:
        """Re-attach as the writer of an existing ring (e.g. after a writer crash).

        The previous writer may have died at any instruction: the record it left
        unfinished becomes padding, and sequence numbers, ``latest`` and the counters
        continue from the newest record it published (docs/ring-format.md, *Recovery*).
        Readers attached meanwhile read on without a gap or a repeated sequence number.

        Args:
            path: the ring file.
            overflow: as for :meth:`create`; ``None`` keeps the ring's.
            block_timeout, heartbeat_timeout: as for :meth:`create`.
            trust_foreign: write to a ring made by another user, one that group or
                others may write, or one reached through a symbolic link. By default
                only a regular file of this user's or root's that nobody else may write
                is opened (anyone else could read or forge the acquisition's records).

        Raises:
            RingNotFound: no file at ``path`` (a ``FileNotFoundError``).
            RingBusy: another live process (or open) is the writer.
            RingNotTrusted: see ``trust_foreign`` (a ``PermissionError``).
            RingCorrupt: the file is not a valid ring, or holds positions or counters
                no writer can have stored.
            StorageIOError: the file cannot be opened, mapped or given its pages.
        """
        if overflow is not None:
            a.check_overflow(overflow)
        block_timeout = a.seconds(block_timeout, "block_timeout")
        heartbeat_timeout = a.seconds(heartbeat_timeout, "heartbeat_timeout")
        ring = RingFile.open_existing(
            path,
            writable=True,
            lock=WRITER_BYTE,
            shared=False,
            trust_foreign=a.flag(trust_foreign, "trust_foreign"),
        )
        try:
            if overflow is None:
                overflow = "block" if ring.u64(f.OFF_OVERFLOW) == 1 else "discard_oldest"
            ring.reserve()
            recover(ring)
            ring.set_u64(f.OFF_WRITER_GENERATION, ring.u64(f.OFF_WRITER_GENERATION) + 1)
            return cls(ring, overflow, block_timeout, heartbeat_timeout)
        except BaseException:
            ring.close()
            raise

    @classmethod
    def from_config(
        cls,
        config: Any,
        *,
        path: str | os.PathLike[str] | None = None,
        exist_ok: bool = True,
        force: bool = False,
    ) -> RingBuffer:
        """Create the ring described by a :class:`~daq_storage.config.RingBufferConfig`.

        Args:
            config: ``capacity_bytes``, ``overflow``, ``block_timeout_secs``,
                ``max_readers`` and ``path`` are read from it.
            path: where to create the ring, overriding ``config.path`` (which may be
                ``None``: the caller picks a path of its own for each run).
            exist_ok, force: as for :meth:`create`.

        Raises:
            ConfigError: neither ``path`` nor ``config.path`` is set, ``config`` lacks
                one of the fields above, or a field's value is refused by :meth:`create`.
        """
        try:
            fields = {name: getattr(config, name) for name in _CONFIG_FIELDS}
        except AttributeError as exc:
            raise ConfigError(
                f"RingBuffer.from_config needs a RingBufferConfig (fields "
                f"{', '.join(_CONFIG_FIELDS)}); got {type(config).__name__}: {exc}"
            ) from None
        where = path if path is not None else fields["path"]
        if where is None:
            raise ConfigError(
                "the [ring_buffer] configuration sets no path and none was given: "
                "pass path= (a file on a tmpfs such as /dev/shm)"
            )
        return cls.create(
            where,
            capacity_bytes=fields["capacity_bytes"],
            overflow=fields["overflow"],
            block_timeout=fields["block_timeout_secs"],
            max_readers=fields["max_readers"],
            exist_ok=exist_ok,
            force=force,
        )

    def close(self) -> None:
        """Detach (the file stays; readers keep reading what is there)."""
        if self._ring.closed:
            return
        unlock_byte(self._ring.fd, WRITER_BYTE)
        self._np = np.empty(0, np.uint8)
        self._words = np.empty(0, np.uint64)
        self._ring.close()

    def unlink(self) -> None:
        """Remove the ring file (attached readers keep their mapping until they close).

        Raises:
            StorageIOError: the file cannot be removed.
        """
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageIOError(
                exc.errno or errno.EIO,
                f"cannot remove ring {self.path}: {exc.strerror}",
                str(self.path),
            ) from None

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._ring.closed

    # ------------------------------------------------------------------ streams
    def _sid(self, stream: str) -> int | None:
        """The id of a declared stream (``None``: not declared yet)."""
        try:
            return self._streams.get(stream)
        except TypeError:  # unhashable: certainly no stream name
            raise InvalidName(
                f"stream name {describe_value(stream)} must be a non-empty string"
            ) from None

    # ------------------------------------------------------------------ writing
    def _reserve(self, total: int) -> int:
        """Make room for a record of ``total`` aligned bytes; returns its start position.

        Writes a padding record at the wrap. Stores ``tail_intent`` before returning so
        readers can tell that the bytes up to it are being overwritten.
        """
        cap = self.capacity
        if total > self._limit:
            raise RingFull(
                f"record of {total} bytes can never fit ring {self.path} of {cap} bytes "
                f"(records hold at most {f.MAX_RECORD} bytes)"
            )
        pos = self._tail
        room = cap - pos % cap
        if room < total:
            end = pos + room + total
        else:
            end = pos + total
            room = 0
        if self.overflow == "block" and end - self._min_cursor_cache > cap:
            self._min_cursor_cache = wait_for_consumers(
                self._ring, end, pos, self.block_timeout, self.heartbeat_timeout
            )
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

    def _unreserve(self) -> None:
        """Take back a reservation nothing was written into (the call is refused)."""
        self._words[f.OFF_TAIL_INTENT >> 3] = self._tail

    def _publish(
        self, pos: int, end: int, sid: int, records: int, payload_bytes: int, copied: int
    ) -> None:
        """Publish records ending at ``end`` (the last starts at ``pos``) after ``copied``
        bytes were copied into the ring."""
        # The record bytes are visible before the tail that publishes them. A copy this
        # large may have used non-temporal stores, weakly ordered even on x86-64.
        if copied >= LARGE_COPY_BYTES:
            store_fence()
        else:
            fence()
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
        sid = self._sid(stream)
        if sid is None or self._stream_kinds.get(sid) != f.KIND_RAW:
            sid = self._stream(stream, f.KIND_RAW)
        view = payload if isinstance(payload, bytes) else a.payload_view(payload)
        n = len(view)
        length = f.RECORD_HEADER_SIZE + n
        pos = self._reserve(f.align(length))
        at = self._data + pos % self.capacity
        seq = self._seq
        ts = time.time_ns() if timestamp_ns is None else timestamp_ns
        try:
            self._header(at, length, f.KIND_RAW, sid, seq, ts, 0, view)
        except (struct.error, TypeError):  # checked here, not on every call: nothing written yet
            self._unreserve()
            a.u64(timestamp_ns, "timestamp_ns")
            raise SchemaMismatch(
                f"timestamp_ns {describe_value(timestamp_ns)} cannot be stored"
            ) from None
        self._buf[at + f.RECORD_HEADER_SIZE : at + length] = view
        self._publish(pos, pos + f.align(length), sid, 1, n, length)
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
        if not isinstance(payloads, np.ndarray | list | tuple):
            try:
                payloads = list(payloads)
            except TypeError:
                raise SchemaMismatch(
                    f"write_many needs a sequence of payloads, got {type(payloads).__name__}"
                ) from None
        rows = a.payload_rows(payloads)
        if rows is None:  # lengths differ: one record at a time
            each = None if timestamps_ns is None else a.timestamps(timestamps_ns, len(payloads))
            first = self._seq
            for i, p in enumerate(payloads):
                ts = None if each is None else int(each[i])
                self.write(p, stream=stream, timestamp_ns=ts)
            return range(first, self._seq)
        n, size = rows.shape
        first_seq = self._seq
        if n == 0:
            return range(first_seq, first_seq)
        length = f.RECORD_HEADER_SIZE + size
        stride = f.align(length)
        if timestamps_ns is None:
            stamps = np.full(n, time.time_ns(), np.uint64)
        else:
            stamps = a.timestamps(timestamps_ns, n)
        if stride > self._limit:
            raise RingFull(f"records of {stride} bytes can never fit ring {self.path}")
        block = f.raw_records(rows, sid, first_seq, stamps, crc=self._crc)
        # Copy up to one checkpoint segment of whole records at a time, never across
        # the wrap (a chunk that would cross it starts after a padding record instead).
        cap = self.capacity
        per_chunk = max(1, min(self._seg_size, f.MAX_RECORD) // stride)
        done = 0
        while done < n:
            room = (cap - self._tail % cap) // stride
            take = min(n - done, per_chunk, room) if room else min(n - done, per_chunk)
            nbytes = take * stride
            pos = self._reserve(nbytes)
            at = self._data + pos % cap
            self._np[at : at + nbytes] = block[done : done + take].reshape(-1)
            self._publish(pos + nbytes - stride, pos + nbytes, sid, take, take * size, nbytes)
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
        sid = self._sid(stream)
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
            f.frame_dtype_code(array)
            self._frame_specs[sid] = (array.dtype.str, array.shape)
        meta = a.frame_metadata(metadata)
        number = None if frame_number is None else a.u64(frame_number, "frame_number")
        ts = time.time_ns() if timestamp_ns is None else a.u64(timestamp_ns, "timestamp_ns")
        prefix = f.FRAME_HEADER.size + f.align(len(meta))
        nbytes = array.nbytes
        length = f.RECORD_HEADER_SIZE + prefix + nbytes
        pos = self._reserve(f.align(length))
        at = self._data + pos % self.capacity
        seq = self._seq
        number = seq if number is None else number
        shape = list(array.shape) + [0] * (f.FRAME_MAX_DIMS - array.ndim)
        body = at + f.RECORD_HEADER_SIZE
        f.FRAME_HEADER.pack_into(
            self._buf, body, f.frame_dtype_code(array), array.ndim, len(meta), number, *shape
        )
        if meta:
            start = body + f.FRAME_HEADER.size
            self._buf[start : start + len(meta)] = meta
        data_at = body + prefix
        # np.copyto into a view of the mapping: one memcpy, non-contiguous input included.
        np.copyto(
            self._np[data_at : data_at + nbytes].view(array.dtype).reshape(array.shape), array
        )
        payload = self._buf[body : at + length] if self._crc else b""
        self._header(at, length, f.KIND_FRAME, sid, seq, ts, 0, payload)
        self._publish(pos, pos + f.align(length), sid, 1, length - f.RECORD_HEADER_SIZE, length)
        return seq

    def write_batch(
        self, batch: pa.RecordBatch, *, stream: str = "table", timestamp_ns: int | None = None
    ) -> int:
        """Append an Arrow record batch; returns its sequence number.

        The stream's schema is stored once in the ring's schema table; each record holds
        only the IPC record-batch message, so small batches stay cheap. Dictionary-encoded
        columns are stored decoded, ``string_view`` as ``large_string`` and
        ``binary_view`` as ``large_binary``: readers get those types back.

        Raises:
            SchemaMismatch: ``batch`` is not a RecordBatch (or a non-empty Table).
            UnsupportedData: a column holds a list view, or cannot be converted as above.
            RingFull: as for :meth:`write`, or the schema table is full.
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
        sid = self._sid(stream)
        if sid is None or self._stream_kinds.get(sid) != f.KIND_ARROW:
            sid = self._stream(stream, f.KIND_ARROW)
        schema_id, batch = self._stored(sid, batch, stream)
        ts = time.time_ns() if timestamp_ns is None else a.u64(timestamp_ns, "timestamp_ns")
        message = batch.serialize()
        n = message.size
        length = f.RECORD_HEADER_SIZE + n
        pos = self._reserve(f.align(length))
        at = self._data + pos % self.capacity
        seq = self._seq
        self._np[at + f.RECORD_HEADER_SIZE : at + length] = np.frombuffer(message, np.uint8)
        payload = self._buf[at + f.RECORD_HEADER_SIZE : at + length] if self._crc else b""
        self._header(at, length, f.KIND_ARROW, sid, seq, ts, schema_id, payload)
        self._publish(pos, pos + f.align(length), sid, 1, n, length)
        return seq

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
