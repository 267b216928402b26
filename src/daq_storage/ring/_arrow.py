"""Arrow records and schemas read from a ring, checked before they are handed out.

A record batch is a list of offsets into its body; Arrow trusts them when values are
read, so a batch whose offsets point outside its body crashes the process that reads
it. Every batch is therefore validated before :meth:`Record.batch` returns it: fully
(offsets, dictionary indices, UTF-8) when its schema has any column that is not of
fixed width, else with the cheap size checks, which cover every access to such columns.
UTF-8 is checked too because invalid text is undefined behaviour for some readers
(polars hands Arrow strings to Rust as they are). Compressed bodies are refused before
reading: their headers state the decompressed size, which is allocated as stated.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from daq_storage.errors import RingCorrupt, UnsupportedData

__all__ = ["needs_full_validation", "read_batch", "read_schema", "stored_schema"]

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")
_TWO_U16 = struct.Struct("<HH")
_PREFIX = struct.Struct("<Ii")
_CONTINUATION = 0xFFFFFFFF
# Message fields: version 0, header_type 1, header 2 (vtable offsets 4, 6, 8);
# RecordBatch fields: length 0, nodes 1, buffers 2, compression 3 (vtable offset 10).
_RECORD_BATCH = 3  # MessageHeader union: Schema 1, DictionaryBatch 2, RecordBatch 3
_LISTS = ((pa.types.is_list, pa.list_), (pa.types.is_large_list, pa.large_list))
_FIXED_WIDTH = (
    pa.types.is_null,
    pa.types.is_boolean,
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_temporal,
    pa.types.is_decimal,
    pa.types.is_fixed_size_binary,
)
# Any error Arrow (or a registered extension type) raises on bytes it cannot read.
_DECODE_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError, LookupError, MemoryError)


def needs_full_validation(schema: pa.Schema) -> bool:
    """Whether batches of ``schema`` have offsets, children or text to check."""
    return not all(any(test(field.type) for test in _FIXED_WIDTH) for field in schema)


class _NotCarried(Exception):
    """A type the ring neither carries nor converts."""


def _plain(t: pa.DataType) -> pa.DataType:
    """``t`` with dictionary-encoded and binary view types replaced by their plain
    equivalents; list views raise :class:`_NotCarried` (Arrow's cast of them to lists
    makes invalid arrays)."""
    if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        raise _NotCarried(t)
    if pa.types.is_dictionary(t):
        return _plain(t.value_type)
    if pa.types.is_string_view(t):
        return pa.large_string()
    if pa.types.is_binary_view(t):
        return pa.large_binary()
    if pa.types.is_map(t):
        return pa.map_(_plain(t.key_type), t.item_field.with_type(_plain(t.item_type)),
                       keys_sorted=t.keys_sorted)  # fmt: skip
    for test, make in _LISTS:
        if test(t):
            return make(t.value_field.with_type(_plain(t.value_type)))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(t.value_field.with_type(_plain(t.value_type)), t.list_size)
    if pa.types.is_struct(t):
        return pa.struct(
            [t.field(i).with_type(_plain(t.field(i).type)) for i in range(t.num_fields)]
        )
    if pa.types.is_union(t):
        fields = [t.field(i).with_type(_plain(t.field(i).type)) for i in range(t.num_fields)]
        return pa.union(fields, t.mode, t.type_codes)
    return t


def stored_schema(schema: pa.Schema) -> pa.Schema | None:
    """The schema a ring stores batches of ``schema`` as: dictionary-encoded columns
    decoded, ``string_view`` as ``large_string``, ``binary_view`` as ``large_binary``;
    ``None`` when that is ``schema`` itself.

    A dictionary is not part of a batch's message, and Arrow's validation of view types
    skips null slots that some of its kernels then read: the ring carries neither.

    Raises:
        UnsupportedData: a column holds a list view, which is neither carried nor
            converted.
    """
    fields = []
    for field in schema:
        try:
            fields.append(field.with_type(_plain(field.type)))
        except _NotCarried as exc:
            raise UnsupportedData(
                f"column {field.name!r} holds {exc.args[0]}: the ring does not carry list "
                "views; store the column as a list"
            ) from None
    plain = pa.schema(fields, metadata=schema.metadata)
    return None if plain.equals(schema, check_metadata=True) else plain


def _compressed(payload: memoryview) -> bool:
    """Whether the IPC record-batch message ``payload`` has a compressed body: the
    ``compression`` field of its RecordBatch table, found through the flatbuffer's
    vtables (a flatbuffer table starts with the offset back to its vtable, a vtable with
    its size and then one u16 offset per field).

    Raises:
        struct.error: the message metadata is not where its header says (corrupt).
    """
    first, size = _PREFIX.unpack_from(payload, 0)
    start = 8
    if first != _CONTINUATION:  # the pre-1.0 framing: no continuation marker
        start, size = 4, first
    meta = payload[start : start + max(size, 0)]
    u16, i32 = _U16.unpack_from, _I32.unpack_from
    root = _U32.unpack_from(meta, 0)[0]  # the Message table
    vtable = root - i32(meta, root)[0]
    if vtable < 0 or u16(meta, vtable)[0] < 10:  # no header_type and header fields
        raise struct.error("not a record batch message")
    header_type, header = _TWO_U16.unpack_from(meta, vtable + 6)
    if not header_type or not header or meta[root + header_type] != _RECORD_BATCH:
        raise struct.error("not a record batch message")
    table = root + header
    table += _U32.unpack_from(meta, table)[0]  # the RecordBatch table
    vtable = table - i32(meta, table)[0]
    if vtable < 0:
        raise struct.error("vtable before the metadata")
    compression: int = u16(meta, vtable + 10)[0] if u16(meta, vtable)[0] >= 12 else 0
    return compression != 0


def read_batch(
    payload: Any, schema: pa.Schema, full: bool, where: Callable[[], str]
) -> pa.RecordBatch:
    """The record batch in ``payload``, validated (``full``: see the module docstring).

    Raises:
        RingCorrupt: the message is compressed, unreadable, or its batch is invalid
            (the message starts with ``where()``).
    """
    view = memoryview(payload)
    try:
        if _compressed(view):
            raise RingCorrupt(f"{where()} has a compressed body (never written by a ring)")
    except (struct.error, IndexError):
        raise RingCorrupt(f"{where()} is not an Arrow record batch message") from None
    try:
        batch = pa.ipc.read_record_batch(pa.py_buffer(view), schema)
        batch.validate(full=full)
    except _DECODE_ERRORS as exc:
        raise RingCorrupt(f"{where()} is unreadable: {exc}") from None
    return batch


def read_schema(data: bytes, where: str) -> pa.Schema:
    """The schema in an IPC schema message.

    Raises:
        RingCorrupt: it cannot be read.
    """
    try:
        return pa.ipc.read_schema(pa.py_buffer(data))
    except _DECODE_ERRORS as exc:
        raise RingCorrupt(f"{where} is unreadable: {exc}") from None
