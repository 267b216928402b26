"""Parquet footers moved to another file offset.

A footer is Thrift compact protocol (parquet.thrift). pyarrow has no API to move a row
group's metadata to another offset, so the few i64 fields that hold absolute file
offsets are rewritten here; everything else is copied byte for byte.
"""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["FooterShift", "check_shift"]

_T_STOP, _T_TRUE, _T_FALSE, _T_I8, _T_I16, _T_I32, _T_I64, _T_DOUBLE = range(8)
_T_BINARY, _T_LIST, _T_SET, _T_MAP, _T_STRUCT, _T_UUID = range(8, 14)

#: Per Thrift struct, the field ids holding file offsets (``None``) or structs to enter.
_Fields: TypeAlias = "dict[int, _Fields | list[_Fields] | None]"
# ColumnMetaData: data_page_offset, index_page_offset, dictionary_page_offset,
# bloom_filter_offset. Page indexes (ColumnChunk 4 and 6) hold offsets in the data
# too, so the writer never writes them; they are shifted here for completeness only.
_COLUMN_META_DATA: _Fields = {9: None, 10: None, 11: None, 14: None}
_COLUMN_CHUNK: _Fields = {2: None, 3: _COLUMN_META_DATA, 4: None, 6: None}
_ROW_GROUP: _Fields = {1: [_COLUMN_CHUNK], 5: None}  # columns, file_offset
_FILE_META_DATA: _Fields = {4: [_ROW_GROUP]}  # row_groups


class FooterShift:
    """Copy a serialized ``FileMetaData`` with every non-zero file offset moved by ``delta``."""

    def __init__(self, footer: bytes, delta: int) -> None:
        self.data = footer
        self.delta = delta
        self.pos = 0
        self.copied = 0
        self.out = bytearray()

    def run(self) -> bytes:
        try:
            self.struct(_FILE_META_DATA)
        except IndexError:
            raise ValueError("Parquet footer ends inside a field") from None
        if self.pos != len(self.data):
            raise ValueError(f"Parquet footer has {len(self.data) - self.pos} trailing bytes")
        self.out += self.data[self.copied :]
        return bytes(self.out)

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def zigzag(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def struct(self, fields: _Fields) -> None:
        field_id = 0
        while True:
            head = self.data[self.pos]
            self.pos += 1
            kind = head & 0x0F
            if kind == _T_STOP:
                return
            field_id = field_id + (head >> 4) if head >> 4 else self.zigzag()
            if field_id not in fields:
                self.skip(kind, in_container=False)
                continue
            inner = fields[field_id]
            if inner is None:
                self.shift_i64(kind, field_id)
            elif isinstance(inner, list):
                size, element = self.list_header(kind, field_id)
                if element != _T_STRUCT:
                    raise ValueError(f"Parquet footer field {field_id} is not a list of structs")
                for _ in range(size):
                    self.struct(inner[0])
            elif kind == _T_STRUCT:
                self.struct(inner)
            else:
                raise ValueError(f"Parquet footer field {field_id} has type {kind}, not struct")

    def shift_i64(self, kind: int, field_id: int) -> None:
        if kind != _T_I64:
            raise ValueError(f"Parquet footer offset field {field_id} has type {kind}, not i64")
        start = self.pos
        value = self.zigzag()
        if value == 0:  # unset (ColumnChunk.file_offset is deprecated and written as 0)
            return
        self.out += self.data[self.copied : start]
        self.out += _varint(_to_zigzag(value + self.delta))
        self.copied = self.pos

    def list_header(self, kind: int, field_id: int) -> tuple[int, int]:
        if kind not in (_T_LIST, _T_SET):
            raise ValueError(f"Parquet footer field {field_id} has type {kind}, not list")
        head = self.data[self.pos]
        self.pos += 1
        size = head >> 4
        return (self.varint() if size == 15 else size), head & 0x0F

    def skip(self, kind: int, *, in_container: bool) -> None:
        if kind in (_T_TRUE, _T_FALSE):
            self.pos += 1 if in_container else 0  # a bool field's value is in its type
        elif kind == _T_I8:
            self.pos += 1
        elif kind in (_T_I16, _T_I32, _T_I64):
            self.varint()
        elif kind == _T_DOUBLE:
            self.pos += 8
        elif kind == _T_BINARY:
            length = self.varint()
            self.pos += length
        elif kind == _T_UUID:
            self.pos += 16
        elif kind in (_T_LIST, _T_SET):
            size, element = self.list_header(kind, -1)
            for _ in range(size):
                self.skip(element, in_container=True)
        elif kind == _T_MAP:
            size = self.varint()
            if size:
                types = self.data[self.pos]
                self.pos += 1
                for _ in range(size):
                    self.skip(types >> 4, in_container=True)
                    self.skip(types & 0x0F, in_container=True)
        elif kind == _T_STRUCT:
            self.struct({})
        else:
            raise ValueError(f"unknown Thrift type {kind} in Parquet footer")
        if self.pos > len(self.data):
            raise ValueError("Parquet footer ends inside a field")


def _to_zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def check_shift(original: Any, shifted: Any, delta: int) -> None:
    """The moved metadata must point exactly ``delta`` bytes further, column by column."""
    for group in range(original.num_row_groups):
        for column in range(original.num_columns):
            before = original.row_group(group).column(column)
            after = shifted.row_group(group).column(column)
            if after.data_page_offset != before.data_page_offset + delta or (
                before.has_dictionary_page
                and after.dictionary_page_offset != before.dictionary_page_offset + delta
            ):
                raise ValueError(f"column {column} of row group {group} was not moved")
