"""CSV: one file per stream with a header row, via ``pyarrow.csv``. Tables only.

Each batch is turned into text in memory first, then written with one system call at
the end of the complete lines: a batch that cannot be written as text changes nothing,
and a write the disk refuses is cut off again, so the file always ends with a complete
line. Only a process killed inside that call can leave part of a line at the end;
:func:`repair_csv` (and ``daq-storage repair``) cuts it off.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from daq_storage.errors import ConfigError, SchemaMismatch, StorageIOError, UnsupportedData
from daq_storage.schema import METADATA_CHANGES, decode_metadata
from daq_storage.writers._base import finish_all, pwrite_all, storage_errors
from daq_storage.writers._csv_text import null_lines_quoted, repair_csv, single_column_nulls
from daq_storage.writers._per_stream import PerStreamWriter

__all__ = ["CsvWriter", "repair_csv"]

# Rows turned into text per chunk: pyarrow's default (1,024) makes 10k-row batches
# about 15% slower; 16k rows of text stay a few MB.
_CHUNK_ROWS = 16_384
_ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"  # %S carries the unit's sub-second digits
_ISO_NAIVE = "%Y-%m-%dT%H:%M:%S"


@dataclass
class _CsvFile:
    path: Path
    fd: int
    end: int  # bytes of complete lines in the file
    #: The stream's column types (dictionaries decoded, widened as batches arrive).
    columns: pa.Schema
    #: The last batch schema found compatible with ``columns``.
    accepted: pa.Schema
    #: Batches of schema ``accepted`` must be cast to ``columns``.
    cast: bool
    #: ``(index, kind)`` of columns written as ISO-8601 text.
    iso: tuple[tuple[int, str], ...]
    #: The schema the text is made from (``columns`` with ISO columns as strings).
    written: pa.Schema


class CsvWriter(PerStreamWriter):
    """CSV files, one per stream, in the directory ``path``; metadata in ``metadata.json``:

    ```
    {"file": {<set_metadata values>},
     "streams": {<stream>: {<its schema metadata>, "metadata_changes": [...],
                            <set_metadata values>}},
     "columns": {<stream>: {<column>: {<its field metadata: units, long_name, ...>}}}}
    ```

    ``metadata.json`` is written at :meth:`flush` and :meth:`close` (replaced whole);
    one that the directory holds already (an earlier run's) is never overwritten: the
    writer refuses the directory.

    Nulls are empty fields. In a stream of one column, where an empty field would be an
    empty line (which pyarrow and pandas skip), a null is written as ``""``: pyarrow and
    pandas read it as null, polars with ``null_values=""`` (CSV does not tell an empty
    string from a null). Binary columns are written as text and must hold UTF-8.

    A column keeps its kind for the life of a stream, so every reader infers one type
    for it: a batch whose column types differ is cast when that is a lossless widening
    (``int32`` -> ``int64``, ``uint16`` -> ``int32``, ``float32`` -> ``float64``,
    ``string`` -> ``large_string``, a dictionary to its values, an all-null column) and
    refused with :class:`SchemaMismatch` otherwise (an integer column cannot take
    ``0.5`` or text).

    Args:
        path: output directory.
        iso_timestamps: write timestamp columns, and integer columns named
            ``timestamp_ns`` or ``*_timestamp_ns`` (nanoseconds since the Unix epoch), as
            ISO-8601 text with the unit's sub-second digits, in UTC with a ``Z`` suffix
            (``2023-11-14T22:13:20.123456789Z``) so pandas and polars parse them as UTC.
            Timestamps without a time zone are written without a suffix.
        delimiter: field separator.
    """

    name: ClassVar[str] = "csv"
    writes_metadata_json: ClassVar[bool] = True
    suffixes: ClassVar[tuple[str, ...]] = (".csv",)
    supports_frames: ClassVar[bool] = False
    supports_tables: ClassVar[bool] = True

    def __init__(
        self, path: str | os.PathLike[str], *, iso_timestamps: bool = False, delimiter: str = ","
    ) -> None:
        if len(delimiter) != 1 or delimiter in '"\r\n':
            raise ConfigError(
                f"csv delimiter must be one character other than a quote or a "
                f"line break, got {delimiter!r}"
            )
        super().__init__(path)
        if os.path.lexists(self.path / "metadata.json"):
            self._release_output()
            raise StorageIOError(
                errno.EEXIST,
                f"{self.path} already holds a metadata.json (of an earlier run; never "
                "overwritten): write to a new directory",
                str(self.path / "metadata.json"),
            )
        self.iso_timestamps = iso_timestamps
        self.delimiter = delimiter
        self._sidecar_made = False  # metadata.json is ours: replaced from now on
        self._files: dict[str, _CsvFile] = {}
        #: Per stream, per column: the field metadata of the column's first batch.
        self._columns_metadata: dict[str, dict[str, dict[str, Any]]] = {}

    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        given = batch = self._check_batch(stream, batch)
        opened = self._files.get(stream)
        if opened is None:
            opened = self._new_stream(stream, batch.schema)
        elif not batch.schema.equals(opened.accepted):
            self._accept(stream, opened, batch.schema)
        nbytes = batch.nbytes
        rows = batch.num_rows
        if opened.cast:
            batch = batch.cast(opened.columns)
        if opened.iso:
            batch = self._to_iso(stream, batch, opened)
        text = self._text(stream, batch, header=False)
        where = opened.path if opened.fd >= 0 else self.path
        self._ensure_room(len(text), f"stream {stream!r}", where)
        if opened.fd < 0:
            self._create(stream, opened)
        self._append(stream, opened, text)
        self._observe_metadata(stream, given)
        self._stats.batches += 1
        self._stats.rows += rows
        self._stats.bytes_written += nbytes

    def write_frames(self, stream: str, frames: Any, **_: Any) -> None:
        self._check_open()
        raise UnsupportedData(
            f"CSV cannot store frames (stream {stream!r}); use hdf5, zarr, tiff, arrow or parquet"
        )

    # ------------------------------------------------------------------ text and files
    def _text(self, stream: str, batch: pa.RecordBatch, *, header: bool) -> pa.Buffer:
        """``batch`` as CSV lines (with the header line when ``header``), in memory.

        Raises:
            UnsupportedData: a value has no CSV text (binary that is not UTF-8, ...).
        """
        quote_null_lines = False
        if batch.num_columns == 1 and batch.column(0).null_count:
            batch, quote_null_lines = single_column_nulls(batch)
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if _is_binary(column.type):
                try:
                    column.cast(pa.large_binary()).cast(pa.large_string())
                except pa.ArrowInvalid:
                    raise UnsupportedData(
                        f"stream {stream!r}: binary column {name!r} holds bytes that are not "
                        "UTF-8 text, which CSV cannot hold; nothing of this batch was written"
                    ) from None
        options = pacsv.WriteOptions(
            include_header=header, delimiter=self.delimiter, batch_size=_CHUNK_ROWS
        )
        sink = pa.BufferOutputStream()
        try:
            pacsv.write_csv(batch, sink, write_options=options)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise UnsupportedData(
                f"stream {stream!r}: CSV cannot hold this batch as text ({exc}); nothing of "
                "it was written"
            ) from None
        buffer: pa.Buffer = sink.getvalue()
        if quote_null_lines:
            buffer = pa.py_buffer(null_lines_quoted(buffer.to_pybytes()))
        return buffer

    def _new_stream(self, stream: str, schema: pa.Schema) -> _CsvFile:
        """The stream's columns; its file is created with the first rows written."""
        columns = pa.schema([pa.field(f.name, _csv_type(stream, f.name, f.type)) for f in schema])
        iso, written = self._text_schema(columns)
        opened = self._files[stream] = _CsvFile(
            self.path, -1, 0, columns, schema, _needs_cast(schema, columns), iso, written
        )
        described = {f.name: decode_metadata(f.metadata) for f in schema if f.metadata}
        if described:
            self._columns_metadata[stream] = described
        return opened

    def _create(self, stream: str, opened: _CsvFile) -> None:
        """Create the stream's file (never an existing one) with its header line."""
        empty = pa.RecordBatch.from_pylist([], schema=opened.written)
        header = self._text(stream, empty, header=True)
        path = self._stream_path(stream)
        fd = self._create_file(stream, path)
        try:
            with storage_errors(path, "cannot create CSV file"):
                pwrite_all(fd, [header], 0)
        except BaseException:
            self._abandon_file(stream, path, fd)
            raise
        opened.path, opened.fd, opened.end = path, fd, len(header)

    def _append(self, stream: str, opened: _CsvFile, text: pa.Buffer) -> None:
        """Write complete lines after the last ones; on failure cut them off again."""
        try:
            pwrite_all(opened.fd, [text], opened.end)
        except OSError as exc:
            with contextlib.suppress(OSError):  # repair_csv cuts what is left, if anything
                os.ftruncate(opened.fd, opened.end)
            raise StorageIOError(
                exc.errno if exc.errno is not None else errno.EIO,
                f"cannot write CSV rows of stream {stream!r}: {exc.strerror or exc}; "
                f"{opened.path.name} keeps every row before (nothing of this batch)",
                str(opened.path),
            ) from exc
        opened.end += len(text)

    def _accept(self, stream: str, opened: _CsvFile, schema: pa.Schema) -> None:
        """Make batches of ``schema`` writable to ``opened``, widening its columns if
        need be, or raise :class:`SchemaMismatch` leaving the file as it was."""
        if schema.names != opened.columns.names:
            raise SchemaMismatch(
                f"stream {stream!r}: CSV columns {opened.columns.names} of {opened.path} "
                f"cannot change to {schema.names}"
            )
        fields = []
        for old, new in zip(opened.columns, schema, strict=True):
            incoming = _csv_type(stream, new.name, new.type)
            common = _common_type(old.type, incoming)
            if common is None:
                raise SchemaMismatch(
                    f"stream {stream!r}: column {new.name!r} of {opened.path} holds {old.type}, "
                    f"got {new.type}; CSV takes only a lossless widening (such as int32 -> "
                    "int64) so readers see one type per column. Nothing was written"
                )
            fields.append(pa.field(old.name, common))
        columns = pa.schema(fields)
        if not columns.equals(opened.columns):
            # Same file, same header: only the text of later rows comes from wider types.
            iso, written = self._text_schema(columns)
            opened.columns, opened.iso, opened.written = columns, iso, written
        opened.accepted = schema
        opened.cast = _needs_cast(schema, opened.columns)

    def _text_schema(self, columns: pa.Schema) -> tuple[tuple[tuple[int, str], ...], pa.Schema]:
        if not self.iso_timestamps:
            return (), columns
        iso: list[tuple[int, str]] = []
        for index, field in enumerate(columns):
            if pa.types.is_timestamp(field.type):
                iso.append((index, "utc" if field.type.tz is not None else "naive"))
            elif pa.types.is_integer(field.type) and (
                field.name == "timestamp_ns" or field.name.endswith("_timestamp_ns")
            ):
                iso.append((index, "epoch_ns"))
        written = columns
        for index, _ in iso:
            written = written.set(index, pa.field(columns.field(index).name, pa.string()))
        return tuple(iso), written

    def _to_iso(self, stream: str, batch: pa.RecordBatch, opened: _CsvFile) -> pa.RecordBatch:
        arrays = list(batch.columns)
        for index, kind in opened.iso:
            column = arrays[index]
            if kind == "epoch_ns":
                try:
                    column = pc.cast(column, pa.int64()).cast(pa.timestamp("ns", "UTC"))
                except pa.ArrowInvalid as exc:
                    raise UnsupportedData(
                        f"stream {stream!r}: column {batch.schema.names[index]!r} holds a value "
                        f"that is no time since the epoch in nanoseconds ({exc}); nothing of "
                        "this batch was written"
                    ) from None
            elif kind == "utc":
                column = column.cast(pa.timestamp(column.type.unit, "UTC"))
            fmt = _ISO_NAIVE if kind == "naive" else _ISO_UTC
            arrays[index] = pc.strftime(column, format=fmt, locale="C")
        return pa.RecordBatch.from_arrays(arrays, schema=opened.written)

    # ------------------------------------------------------------------ files
    def flush(self) -> None:
        """Write ``metadata.json``; the rows are in their files already (in the operating
        system's hands: nothing is fsynced)."""
        self._check_open()
        self._write_metadata_sidecar()

    def _write_metadata_sidecar(self) -> None:
        """CSV has no place for metadata: it goes to ``metadata.json`` beside the files
        (replaced whole: a reader never sees half of it)."""
        streams: dict[str, dict[str, Any]] = {}
        for stream in dict.fromkeys([*self._table_metadata, *self._stream_metadata]):
            tracked = self._table_metadata.get(stream)
            entry = dict(tracked.first or {}) if tracked is not None else {}
            if tracked is not None and tracked.changes:
                entry[METADATA_CHANGES] = tracked.changes
            for key, text in self._stream_metadata.get(stream, {}).items():
                entry[key] = json.loads(text)
            if entry:
                streams[self._safe_stream(stream)] = entry
        if not (self._file_metadata or streams or self._columns_metadata):
            return
        document = {
            "file": {k: json.loads(v) for k, v in self._file_metadata.items()},
            "streams": streams,
            "columns": {self._safe_stream(s): c for s, c in self._columns_metadata.items()},
        }
        path = self.path / "metadata.json"
        temporary = path.with_name(f".{path.name}.partial")
        with storage_errors(path, "cannot write CSV metadata"):
            temporary.write_text(json.dumps(document, indent=2, allow_nan=True))
            if self._sidecar_made:
                temporary.replace(path)
            else:
                try:
                    os.link(temporary, path)  # the first time: never over an existing file
                except FileExistsError:
                    temporary.unlink()
                    raise StorageIOError(
                        errno.EEXIST,
                        f"cannot write CSV metadata: {path.name} already exists in {self.path} "
                        "(never overwritten)",
                        str(path),
                    ) from None
                temporary.unlink()
                self._sidecar_made = True
        self._add_file(path)

    def _close(self) -> None:
        try:
            closing = [_closer(f) for f in self._files.values() if f.fd >= 0]
            finish_all([self._write_metadata_sidecar, *closing])
        finally:
            self._files.clear()


def _closer(opened: _CsvFile) -> Any:
    def close() -> None:
        with storage_errors(opened.path, "cannot close CSV file"):
            os.close(opened.fd)

    return close


def _is_binary(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
    )


def _csv_type(stream: str, column: str, kind: pa.DataType) -> pa.DataType:
    """The type ``column`` is written as, or :class:`UnsupportedData`."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string_view(kind):
        return pa.large_string()  # pyarrow.csv does not write views; the text is the same
    if pa.types.is_binary_view(kind):
        return pa.large_binary()
    # Extension, nested and interval types have no CSV text (pyarrow refuses them).
    if (
        pa.types.is_null(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or (pa.types.is_temporal(kind) and not pa.types.is_interval(kind))
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
    ):
        return kind
    raise UnsupportedData(f"CSV cannot hold column {column!r} of type {kind} (stream {stream!r})")


def _needs_cast(schema: pa.Schema, columns: pa.Schema) -> bool:
    return any(f.type != c.type for f, c in zip(schema, columns, strict=True))


_INT_BITS = {
    pa.int8(): (8, True),
    pa.int16(): (16, True),
    pa.int32(): (32, True),
    pa.int64(): (64, True),
    pa.uint8(): (8, False),
    pa.uint16(): (16, False),
    pa.uint32(): (32, False),
    pa.uint64(): (64, False),
}
_FLOAT_ORDER = [pa.float16(), pa.float32(), pa.float64()]


def _common_type(old: pa.DataType, new: pa.DataType) -> pa.DataType | None:
    """The narrowest type holding every value of ``old`` and ``new`` with the same kind of
    CSV text, or ``None``: integers stay integers, floats floats, text text."""
    if old == new or pa.types.is_null(new):
        return old
    if pa.types.is_null(old):
        return new
    if old in _INT_BITS and new in _INT_BITS:
        (old_bits, old_signed), (new_bits, new_signed) = _INT_BITS[old], _INT_BITS[new]
        if old_signed == new_signed:
            return old if old_bits >= new_bits else new
        # Mixed signs: a signed type twice as wide as the unsigned one holds both.
        unsigned_bits = new_bits if old_signed else old_bits
        signed_bits = old_bits if old_signed else new_bits
        bits = max(signed_bits, 2 * unsigned_bits)
        return {16: pa.int16(), 32: pa.int32(), 64: pa.int64()}.get(bits)
    if old in _FLOAT_ORDER and new in _FLOAT_ORDER:
        return max(old, new, key=_FLOAT_ORDER.index)
    for narrow, wide in ((pa.string(), pa.large_string()), (pa.binary(), pa.large_binary())):
        if {old, new} <= {narrow, wide}:
            return wide
    return None
