"""CSV outputs: a directory of one file per stream (tables only), parts in
``<stream>__part0002.csv``..., and ``metadata.json`` holding the file's and each stream's
metadata, the columns' attributes and each part's column types.

Each file is read as its types say (times as ``timestamp``, ``duration``, ...), up to its
last complete line (a writer appends whole lines: a reader never sees part of one). A
null is an empty field; an empty text is ``""``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from daq_storage.errors import ReadError, UnknownStream
from daq_storage.read._files import SUFFIXES, metadata_document, stream_files
from daq_storage.read._source import FrameSource, PartInfo, StreamInfo, select
from daq_storage.read._types import parse_type

__all__ = ["CsvReader"]

_BLOCK = 1 << 20  # bytes pyarrow parses at a time: its default (a block per thread)


class _File:
    def __init__(self, path: Path, types: dict[str, str], attributes: dict[str, Any]) -> None:
        self.path = path
        source = pa.memory_map(str(path))
        data = source.read_buffer()
        source.close()
        self.data = data.slice(0, _complete(data))
        inferred = pa.schema([])
        try:  # the header, and the types pyarrow infers from the first block
            header = pacsv.open_csv(
                pa.BufferReader(self.data),
                read_options=self._read_options(1 << 16),
                parse_options=self._parse_options(),
                convert_options=self._convert(types, None),
            )
            inferred = header.schema
        except (pa.ArrowInvalid, StopIteration):
            pass
        self.types = {name: parse_type(types[name]) for name in inferred.names if name in types}
        #: whether every column's type was recorded (a file without metadata.json: no)
        self.typed = len(self.types) == len(inferred.names)
        fields = []
        for field in inferred:
            kind = self.types.get(field.name, field.type)
            described = attributes.get(field.name) or {}
            metadata = {k: v if isinstance(v, str) else _json(v) for k, v in described.items()}
            fields.append(pa.field(field.name, kind, metadata=metadata or None))
        self.schema = pa.schema(fields)
        self._rows: int | None = None

    @staticmethod
    def _read_options(block: int = _BLOCK) -> pacsv.ReadOptions:
        return pacsv.ReadOptions(block_size=block)

    @staticmethod
    def _parse_options(line_breaks: bool = True) -> pacsv.ParseOptions:
        # a text value may hold a line break (the writer quotes it): pyarrow then splits
        # the text into blocks more slowly (about 1.5x the parse)
        return pacsv.ParseOptions(newlines_in_values=line_breaks)

    def _convert(
        self, types: dict[str, Any], columns: Sequence[str] | None
    ) -> pacsv.ConvertOptions:
        kinds = {name: parse_type(t) if isinstance(t, str) else t for name, t in types.items()}
        return pacsv.ConvertOptions(
            column_types=kinds,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            include_columns=None if columns is None else list(columns),
        )

    @property
    def rows(self) -> int:
        if self._rows is None:
            self._rows = _count_lines(self.data) - 1 if self.schema.names else 0
        return self._rows

    def _read(self, options: pacsv.ConvertOptions, line_breaks: bool = True) -> pa.Table:
        try:
            return pacsv.read_csv(pa.BufferReader(self.data), read_options=self._read_options(),
                                  parse_options=self._parse_options(line_breaks),
                                  convert_options=options)  # fmt: skip
        except pa.ArrowInvalid as exc:
            raise ReadError(f"{self.path}: cannot be read as the CSV this project writes "
                            f"({exc})") from exc  # fmt: skip

    def table(self, columns: Sequence[str] | None) -> pa.Table:
        wanted = None if columns is None else [c for c in columns if c in self.schema.names]
        options = self._convert(self.types, wanted)
        table = None
        text = [f.name for f in self.schema if _textual(f.type)]
        if wanted is None or set(text) <= set(wanted):
            # Read first as if no value held a line break (pyarrow's fast block split).
            # Where one does, a value read this way holds the break (read whole, or cut
            # where a block ended inside it), or pyarrow fails: then read again, taking
            # line breaks in values into account.
            with contextlib.suppress(ReadError):
                table = self._read(options, line_breaks=False)
            if table is not None and any(_has_break(table.column(n)) for n in text):
                table = None
        if table is None:
            table = self._read(options)
        if not self.typed:
            return table
        return table.cast(pa.schema([self.schema.field(n) for n in table.column_names]))

    def batches(self, columns: Sequence[str] | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
        if not self.schema.names:
            return
        wanted = None if columns is None else [c for c in columns if c in self.schema.names]
        reader = pacsv.open_csv(pa.BufferReader(self.data), read_options=self._read_options(),
                                parse_options=self._parse_options(),
                                convert_options=self._convert(self.types, wanted))  # fmt: skip
        for batch in reader:
            for start in range(0, batch.num_rows, batch_rows):
                yield batch.slice(start, batch_rows)


def _textual(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or pa.types.is_binary(kind) or pa.types.is_large_binary(kind))  # fmt: skip


def _has_break(column: pa.ChunkedArray) -> bool:
    """Whether a text column holds a line break: its value bytes searched at once (a
    byte outside the values, in a shared buffer, can only cause a second read)."""
    for chunk in column.chunks:
        data = chunk.buffers()[2]
        if data is not None:
            raw = data.to_pybytes()
            if b"\n" in raw or b"\r" in raw:
                return True
    return False


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _count_lines(data: pa.Buffer) -> int:
    """Lines of CSV text: the line breaks outside quotes (a quote inside a value is
    doubled, so a break is outside quotes when an even number of quotes precede it)."""
    view = np.frombuffer(data, np.uint8)
    lines = 0
    quoted = 0  # quotes so far, modulo 2
    step = 1 << 24
    for start in range(0, len(view), step):
        chunk = view[start : start + step]
        breaks = np.flatnonzero(chunk == ord("\n"))
        quotes = np.flatnonzero(chunk == ord('"'))
        before = np.searchsorted(quotes, breaks) + quoted
        lines += int(np.count_nonzero(before % 2 == 0))
        quoted = (quoted + len(quotes)) % 2
    return lines


def _complete(data: pa.Buffer) -> int:
    """Bytes of ``data`` up to and with its last newline."""
    size = int(data.size)
    step = 1 << 16
    end = size
    while end > 0:
        start = max(0, end - step)
        chunk = data.slice(start, end - start).to_pybytes()
        at = chunk.rfind(b"\n")
        if at >= 0:
            return int(start + at + 1)
        end = start
    return 0


class CsvReader:
    """A directory of CSV files and its ``metadata.json``."""

    format = "csv"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.document = metadata_document(path)
        files = stream_files(path, SUFFIXES["csv"])
        recorded = self.document.get("parts", {})
        attributes = self.document.get("columns", {})
        self._files: dict[str, list[_File]] = {}
        for stream, paths in files.items():
            types = {
                entry.get("file"): entry.get("types", {}) for entry in recorded.get(stream, [])
            }
            self._files[stream] = [_File(p, types.get(p.name, {}), attributes.get(stream, {}))
                                   for p in paths]  # fmt: skip
        self._infos: dict[str, StreamInfo] | None = None

    def close(self) -> None:
        self._files.clear()

    def streams(self) -> dict[str, StreamInfo]:
        if self._infos is None:
            self._infos = {}
            for stream, files in self._files.items():
                parts, first = [], 0
                fields: dict[str, pa.Field] = {}
                for file in files:
                    parts.append(PartInfo(file.path, "", first, file.rows))
                    first += file.rows
                    for field in file.schema:
                        fields.setdefault(field.name, field)
                metadata = dict(self.document.get("file", {}))
                metadata.update(self.document.get("streams", {}).get(stream, {}))
                self._infos[stream] = StreamInfo(stream, "table", first,
                                                 pa.schema(list(fields.values())), metadata,
                                                 tuple(parts),
                                                 files=tuple(f.path for f in files))  # fmt: skip
        return self._infos

    def metadata(self) -> dict[str, Any]:
        return dict(self.document.get("file", {}))

    def catalog(self) -> dict[str, tuple[str, pa.Schema, int]]:
        """Stream -> (kind, schema, parts) without counting rows (a scan of the text)."""
        out = {}
        for stream, files in self._files.items():
            fields: dict[str, pa.Field] = {}
            for file in files:
                for field in file.schema:
                    fields.setdefault(field.name, field)
            out[stream] = ("table", pa.schema(list(fields.values())), len(files))
        return out

    def table(self, stream: str, columns: Sequence[str] | None, start: int | None,
              stop: int | None, part: int | None = None) -> pa.Table | None:  # fmt: skip
        files = self._files[stream] if part is None else [self._files[stream][part]]
        schema = self.catalog()[stream][1]
        tables = []
        for file in files:
            table = file.table(columns)
            if file._rows is None:  # counted by the parse: no scan of the text later
                file._rows = table.num_rows
            tables.append(select(table, columns, schema))
        if not tables:
            return None
        return (
            tables[0]
            if len(tables) == 1
            else pa.concat_tables(tables, promote_options="permissive")
        )

    def iter_batches(self, stream: str, columns: Sequence[str] | None, batch_rows: int,
                     part: int | None = None) -> Iterator[pa.RecordBatch]:  # fmt: skip
        schema = self.catalog()[stream][1]
        files = self._files[stream] if part is None else [self._files[stream][part]]
        for file in files:
            for batch in file.batches(columns, batch_rows):
                yield select(batch, columns, schema)

    def frames(self, stream: str) -> FrameSource:
        raise UnknownStream(f"{self.path}: CSV holds no frames (stream {stream!r})")
