"""A mapped ring file and its stream / schema tables, shared by writer and readers."""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from daq_storage.errors import RingCorrupt, StorageIOError, UnsupportedData, WriterClosedError
from daq_storage.ring import _format as f
from daq_storage.ring._arrow import needs_full_validation, read_schema, stored_schema
from daq_storage.ring._attach import open_attached
from daq_storage.ring._space import check_room, no_room_error
from daq_storage.ring._trust import ring_path

_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def allocated(st: os.stat_result) -> bool:
    """Whether every byte of the file has its block (a sparse file has holes)."""
    return st.st_blocks * 512 >= st.st_size


def prefault(mm: mmap.mmap, start: int, length: int) -> None:
    """Fault in every page of ``mm[start:start+length]`` for writing, now.

    First-touch faults in a fresh /dev/shm mapping made copies several times slower;
    paying them at create/open keeps the first lap of a run as fast as the rest.

    Raises:
        OSError: a page could not be provided (the kernel's answer instead of SIGBUS).
    """
    try:
        mm.madvise(_MADV_POPULATE_WRITE, start, length)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        # Linux < 5.14 has no MADV_POPULATE_WRITE: touch one byte per page instead
        # (the caller has reserved every page, so no touch can fault).
    else:
        return
    view = memoryview(mm)
    try:
        for offset in range(start, start + length, mmap.PAGESIZE):
            view[offset] = view[offset]
    finally:
        view.release()


class RingFile:
    """Open file descriptor + shared mapping + validated geometry."""

    def __init__(self, path: str | os.PathLike[str], fd: int, mm: mmap.mmap) -> None:
        self.path = Path(path)
        self._fd = fd
        self._mm = mm
        self.buf = memoryview(mm)
        self.geometry, self.flags = f.read_geometry(self.buf, len(mm), str(self.path))
        g = self.geometry
        self.capacity = g.capacity
        self.data_offset = g.header_size
        # The header as 8-byte words: atomic loads/stores of the shared counters.
        self.words = np.frombuffer(self.buf, np.uint64, count=g.header_size // 8)
        self._stream_names: list[str] = []
        self._stream_ids: dict[str, int] = {}
        self._schemas: dict[int, pa.Schema] = {}
        self._full: dict[int, bool] = {}
        self.closed = False

    @classmethod
    def open_existing(
        cls,
        path: str | os.PathLike[str],
        *,
        writable: bool,
        lock: int,
        shared: bool,
        trust_foreign: bool = False,
    ) -> RingFile:
        """Attach to the ring at ``path`` holding the lock on byte ``lock`` (see
        :func:`~daq_storage.ring._attach.open_attached`), and map it.

        The identity block is checked against the file's size before anything is
        mapped, and pages are pre-faulted only when the file has all of them already:
        a sparse file whose header claims gigabytes costs a reader nothing.
        """
        where = ring_path(path)
        fd = open_attached(
            where, writable=writable, offset=lock, shared=shared, trust_foreign=trust_foreign
        )
        try:
            st = os.fstat(fd)
            f.read_geometry(os.pread(fd, f.IDENTITY.size, 0), st.st_size, where)
            populate = getattr(mmap, "MAP_POPULATE", 0) if allocated(st) else 0
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            try:
                mm = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED | populate, prot)
            except OSError as exc:
                raise StorageIOError(
                    exc.errno or errno.EIO, f"cannot map ring {where}: {exc.strerror}", where
                ) from None
            return cls(where, fd, mm)
        except BaseException:
            os.close(fd)
            raise

    def reserve(self) -> None:
        """Give every page of the file its block before a writer writes to it: a
        write to a hole of a full tmpfs is a SIGBUS. A ring made by ``create`` has them
        all; a sparse file is reserved (and pre-faulted) as ``create`` would.

        Raises:
            StorageIOError: the filesystem has no room for it (``ENOSPC``, ``ENOMEM``).
        """
        st = os.fstat(self._fd)
        if allocated(st):
            return
        check_room(self.path, st.st_size, reclaimable=st.st_blocks * 512)
        try:
            os.posix_fallocate(self._fd, 0, st.st_size)
            prefault(self._mm, 0, st.st_size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise no_room_error(self.path, st.st_size) from None
            raise StorageIOError(
                exc.errno or errno.EIO,
                f"cannot reserve ring {self.path}: {exc.strerror}",
                str(self.path),
            ) from None

    @property
    def fd(self) -> int:
        return self._fd

    def check_open(self, what: str) -> None:
        if self.closed:
            raise WriterClosedError(f"{what} on ring {self.path} after close()")

    # --- header words ---
    def u64(self, offset: int) -> int:
        value: int = self.words.item(offset >> 3)
        return value

    def set_u64(self, offset: int, value: int) -> None:
        self.words[offset >> 3] = value

    # --- stream table ---
    def stream_slot(self, stream_id: int) -> int:
        return self.geometry.streams_offset + stream_id * f.STREAM_SLOT_SIZE

    def refresh_streams(self) -> None:
        """Learn streams declared since the last call (the table is append-only)."""
        self.check_open("reading the stream table")
        count = min(self.u64(f.OFF_STREAM_COUNT), self.geometry.max_streams)
        for stream_id in range(len(self._stream_names), count):
            slot = self.stream_slot(stream_id)
            length = self.buf[slot + f.STREAM_NAME_LEN]
            if not 0 < length <= f.STREAM_NAME_MAX:
                raise RingCorrupt(
                    f"ring file {self.path}: stream {stream_id} has name length {length}"
                )
            raw = bytes(self.buf[slot + f.STREAM_NAME : slot + f.STREAM_NAME + length])
            try:
                name = raw.decode()
            except UnicodeDecodeError:
                raise RingCorrupt(
                    f"ring file {self.path}: stream {stream_id} name {raw!r} is not UTF-8"
                ) from None
            self._stream_names.append(name)
            self._stream_ids[name] = stream_id

    def stream_name(self, stream_id: int) -> str:
        if stream_id >= len(self._stream_names):
            self.refresh_streams()
            if stream_id >= len(self._stream_names):
                raise RingCorrupt(
                    f"ring file {self.path}: record names undeclared stream {stream_id}"
                )
        return self._stream_names[stream_id]

    def stream_id(self, name: str) -> int | None:
        if name not in self._stream_ids:
            self.refresh_streams()
        return self._stream_ids.get(name)

    @property
    def streams(self) -> list[str]:
        self.refresh_streams()
        return list(self._stream_names)

    # --- schema table ---
    def schema(self, schema_id: int) -> pa.Schema:
        schema = self._schemas.get(schema_id)
        if schema is not None:
            return schema
        self.check_open("reading a schema")
        g = self.geometry
        if schema_id >= min(self.u64(f.OFF_SCHEMA_COUNT), g.max_schemas):
            raise RingCorrupt(f"ring file {self.path}: record names undeclared schema {schema_id}")
        offset, length, _stream = f.SCHEMA_SLOT.unpack_from(
            self.buf, g.schemas_offset + schema_id * f.SCHEMA_SLOT_SIZE
        )
        if offset + length > g.schema_heap_size or length == 0:
            raise RingCorrupt(
                f"ring file {self.path}: schema {schema_id} at heap offset {offset} length "
                f"{length} is outside the {g.schema_heap_size}-byte schema heap"
            )
        start = g.heap_offset + offset
        schema = read_schema(
            bytes(self.buf[start : start + length]), f"ring file {self.path}: schema {schema_id}"
        )
        self._schemas[schema_id] = schema
        return schema

    def full_validation(self, schema_id: int) -> bool:
        """Whether batches of schema ``schema_id`` need full validation (``_arrow``).

        Raises:
            RingCorrupt: the schema has types no ring writer stores (dictionaries, views).
        """
        full = self._full.get(schema_id)
        if full is None:
            schema = self.schema(schema_id)
            try:
                plain = stored_schema(schema) is None
            except UnsupportedData:
                plain = False
            if not plain:
                raise RingCorrupt(
                    f"ring file {self.path}: schema {schema_id} has dictionary-encoded or "
                    "view columns, which no ring writer stores"
                )
            full = self._full[schema_id] = needs_full_validation(schema)
        return full

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.words = np.empty(0, np.uint64)
        try:
            self.buf.release()
            self._mm.close()
        except BufferError:
            # A zero-copy record still views the mapping; it is unmapped when released.
            pass
        os.close(self._fd)
