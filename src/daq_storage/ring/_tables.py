"""The writer's side of a ring's stream and schema tables: both append-only, each new
entry complete before the count that publishes it."""

from __future__ import annotations

import pyarrow as pa

from daq_storage.errors import (
    InvalidName,
    RingFull,
    SchemaMismatch,
    UnsupportedData,
    describe_value,
)
from daq_storage.ring import _format as f
from daq_storage.ring._arrow import stored_schema
from daq_storage.ring._mapping import RingFile
from daq_storage.ring._platform import fence

__all__ = ["StreamTables"]


class StreamTables:
    """Stream ids and schema slots of the ring open as ``ring``, as its writer sees them."""

    def __init__(self, ring: RingFile) -> None:
        self._ring = ring
        self.ids: dict[str, int] = {}  # name -> stream id
        self.kinds: dict[int, int] = {}  # stream id -> record kind
        self._schema_slots: dict[tuple[int, bytes], int] = {}
        self._schema_of_stream: dict[int, pa.Schema] = {}
        self._schema_of_stream_id: dict[int, tuple[int, pa.Schema | None]] = {}
        for name in ring.streams:
            sid = ring.stream_id(name)
            assert sid is not None
            self.ids[name] = sid

    def declare(self, name: str, kind: int) -> int:
        """The id of stream ``name``, declaring it (kind ``kind``) if it is new.

        Raises:
            InvalidName: ``name`` is not a non-empty UTF-8 string without NUL of at most
                48 bytes.
            SchemaMismatch: the stream exists with records of another kind.
            RingFull: every stream slot is taken.
        """
        if not isinstance(name, str) or not name or "\x00" in name:
            raise InvalidName(
                f"stream name {describe_value(name)} must be a non-empty string without NUL"
            )
        sid = self.ids.get(name)
        if sid is not None:
            existing = self.kinds.get(sid)
            if existing is None:
                existing = self._ring.buf[self._ring.stream_slot(sid) + f.STREAM_KIND]
                self.kinds[sid] = existing
            if existing != kind:
                raise SchemaMismatch(
                    f"stream {name!r} carries {f.KIND_NAMES.get(existing, existing)} records; "
                    f"cannot write {f.KIND_NAMES[kind]} records to it"
                )
            return sid
        try:
            encoded = name.encode()
        except UnicodeEncodeError:
            raise InvalidName(f"stream name {name!r} cannot be encoded as UTF-8") from None
        if len(encoded) > f.STREAM_NAME_MAX:
            raise InvalidName(
                f"stream name {describe_value(name)} is {len(encoded)} bytes; "
                f"at most {f.STREAM_NAME_MAX}"
            )
        sid = self._ring.u64(f.OFF_STREAM_COUNT)
        if sid >= self._ring.geometry.max_streams:
            raise RingFull(
                f"ring {self._ring.path} has no free stream slot for {name!r} "
                f"(max_streams={self._ring.geometry.max_streams})"
            )
        slot = self._ring.stream_slot(sid)
        buf = self._ring.buf
        buf[slot : slot + f.STREAM_SLOT_SIZE] = bytes(f.STREAM_SLOT_SIZE)
        buf[slot + f.STREAM_KIND] = kind
        buf[slot + f.STREAM_NAME_LEN] = len(encoded)
        buf[slot + f.STREAM_NAME : slot + f.STREAM_NAME + len(encoded)] = encoded
        fence()  # the slot is complete before the count that publishes it
        self._ring.set_u64(f.OFF_STREAM_COUNT, sid + 1)
        self.ids[name] = sid
        self.kinds[sid] = kind
        return sid

    def schema_id(self, sid: int, schema: pa.Schema) -> tuple[int, pa.Schema | None]:
        """The schema slot for batches of ``schema`` on stream ``sid``, storing the
        schema if it is new, and the schema to cast such batches to first (``None``: as
        they are; see :func:`~daq_storage.ring._arrow.stored_schema`).

        Raises:
            UnsupportedData: the schema has a list view.
            RingFull: the schema table or heap is full.
        """
        cached = self._schema_of_stream.get(sid)
        if cached is not None and (cached is schema or cached.equals(schema, check_metadata=True)):
            return self._schema_of_stream_id[sid]
        target = stored_schema(schema)
        serialized = (schema if target is None else target).serialize().to_pybytes()
        key = (sid, serialized)
        schema_id = self._schema_slots.get(key)
        if schema_id is None:
            g = self._ring.geometry
            count = self._ring.u64(f.OFF_SCHEMA_COUNT)
            used = self._ring.u64(f.OFF_SCHEMA_HEAP_USED)
            if count >= g.max_schemas or used + len(serialized) > g.schema_heap_size:
                raise RingFull(
                    f"ring {self._ring.path} schema table is full ({count} schemas, {used} of "
                    f"{g.schema_heap_size} heap bytes); create the ring with more room"
                )
            start = g.heap_offset + used
            buf = self._ring.buf
            buf[start : start + len(serialized)] = serialized
            slot = g.schemas_offset + count * f.SCHEMA_SLOT_SIZE
            f.SCHEMA_SLOT.pack_into(buf, slot, used, len(serialized), sid)
            self._ring.set_u64(f.OFF_SCHEMA_HEAP_USED, used + f.align(len(serialized)))
            fence()
            self._ring.set_u64(f.OFF_SCHEMA_COUNT, count + 1)
            schema_id = self._schema_slots[key] = count
        self._schema_of_stream[sid] = schema
        self._schema_of_stream_id[sid] = (schema_id, target)
        return schema_id, target

    def stored(self, sid: int, batch: pa.RecordBatch, stream: str) -> tuple[int, pa.RecordBatch]:
        """The schema slot of ``batch`` on stream ``sid`` and the batch as it is stored.

        Raises:
            UnsupportedData: the batch cannot be converted to the stored schema.
            RingFull: the schema table or heap is full.
        """
        schema_id, target = self.schema_id(sid, batch.schema)
        if target is None:
            return schema_id, batch
        try:
            return schema_id, batch.cast(target)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise UnsupportedData(
                f"stream {stream!r}: its batches are stored as {target}, and this one "
                f"cannot be converted: {exc}"
            ) from None
