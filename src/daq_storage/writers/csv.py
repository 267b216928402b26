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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import field_validator

from daq_storage.errors import StorageIOError, UnsupportedData
from daq_storage.schema import conform_batch, decode_metadata, evolved_schema
from daq_storage.writers._base import (
    StreamDescription,
    StreamPart,
    WriterOptions,
    finish_all,
    fsync_paths,
    pwrite_all,
    storage_errors,
)
from daq_storage.writers._csv_schema import (
    csv_columns,
    csv_leaves,
    csv_type,
    flat_batch,
    is_binary,
)
from daq_storage.writers._csv_text import (
    MetadataDocument,
    null_lines_quoted,
    repair_csv,
    single_column_nulls,
)
from daq_storage.writers._per_stream import PerStreamWriter

__all__ = ["CsvWriter", "repair_csv"]

# Rows turned into text per chunk: pyarrow's default (1,024) makes 10k-row batches
# about 15% slower; 16k rows of text stay a few MB.
_CHUNK_ROWS = 16_384
_ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"  # %S carries the unit's sub-second digits
_ISO_NAIVE = "%Y-%m-%dT%H:%M:%S"
_INT64_MAX = 2**63 - 1


@dataclass
class _CsvFile:
    """One file (part) of a stream: its header is fixed once written."""

    path: Path
    fd: int  # -1 until the file is created, with its first rows
    end: int  # bytes of complete lines in the file
    first: int  # the stream's row index of the file's first row
    #: The file's columns (flat names, CSV types; widened in place as batches arrive).
    columns: pa.Schema
    #: ``(index, kind)`` of columns written as ISO-8601 text.
    iso: tuple[tuple[int, str], ...]
    #: The schema the text is made from (``columns`` with ISO columns as strings).
    written: pa.Schema
    widened: bool = False  # a column's type widened after the file's first rows

    def types(self) -> dict[str, str]:
        """Column -> the Arrow type its text reads back as (an ISO column: a UTC
        timestamp, or a timestamp without zone)."""
        types = {field.name: str(field.type) for field in self.columns}
        for index, kind in self.iso:
            field = self.columns.field(index)
            if kind == "epoch_ns":
                types[field.name] = "timestamp[ns, tz=UTC]"
            elif kind == "utc":
                types[field.name] = str(pa.timestamp(field.type.unit, "UTC"))
        return types


class _Options(WriterOptions):
    iso_timestamps: bool = False
    delimiter: str = ","

    @field_validator("delimiter")
    @classmethod
    def _one_plain_character(cls, value: str) -> str:
        if len(value) != 1 or value in '"\r\n':
            raise ValueError("must be one character other than a quote or a line break")
        return value


class CsvWriter(PerStreamWriter):
    """CSV files, one per stream, in the directory ``path``; metadata in ``metadata.json``:

    ```
    {"file": {<set_metadata values>},
     "streams": {<stream>: {<its schema metadata>, "metadata_changes": [...],
                            <set_metadata values>}},
     "columns": {<stream>: {<column>: {<its field metadata: units, long_name, ...>}}},
     "parts": {<stream>: [{"file": "<stream>.csv", "first": 0,
                           "types": {<column>: <Arrow type of its text>}}, ...]}}
    ```

    A stream is listed in ``parts`` once it has more than one file or a column widened
    (see below); a directory whose streams need no such entry and that has no metadata
    gets no ``metadata.json``.

    ``metadata.json`` is written at :meth:`flush` and :meth:`close` (replaced whole,
    when it changed); one that the directory holds already (an earlier run's) is never
    overwritten: the writer refuses the directory.

    Schema evolution (:func:`daq_storage.schema.classify_change` decides the kind):

    - a widening (``int32`` -> ``int64``, ``int16`` -> ``float32``) goes on in the same
      file: later rows are the wider type's text, and ``types`` in ``parts`` records the
      new type;
    - a new or a missing column, or an incompatible type (``int64`` -> ``float64`` or
      text), continues the stream in a new file, ``<stream>__part0002.csv``,
      ``__part0003``, ..., with a header of its own: a CSV header is fixed once written.
      ``parts`` lists every file of the stream with the stream's row index of its first
      row; sorted by name they come in part order, and each reads on its own::

          files = [folder / "s.csv", *sorted(folder.glob("s__part*.csv"))]
          frame = pl.concat([pl.read_csv(f) for f in files], how="diagonal_relaxed")

    Values narrower than their column, a column order that differs or ``string`` /
    ``large_string`` change nothing: they are written in the file's order and types.
    Struct columns are written as one column per field, named ``parent.child``.

    Nulls are empty fields. In a stream of one column, where an empty field would be an
    empty line (which pyarrow and pandas skip), a null is written as ``""``: pyarrow and
    pandas read it as null, polars with ``null_values=""`` (CSV does not tell an empty
    string from a null). Binary columns are written as text and must hold UTF-8.

    Every batch is in its file when :meth:`write_batch` returns (:meth:`visible` equals
    :meth:`accepted`); ``flush(durable=True)`` fsyncs the files, ``metadata.json`` and
    the directory.

    Args:
        path: output directory.
        iso_timestamps: write timestamp columns, and integer columns named
            ``timestamp_ns`` or ``*_timestamp_ns`` (nanoseconds since the Unix epoch), as
            ISO-8601 text with the unit's sub-second digits, in UTC with a ``Z`` suffix
            (``2023-11-14T22:13:20.123456789Z``) so pandas and polars parse them as UTC.
            Timestamps without a time zone are written without a suffix.
        delimiter: field separator (one character, not a quote or a line break).
    """

    name: ClassVar[str] = "csv"
    writes_metadata_json: ClassVar[bool] = True
    suffixes: ClassVar[tuple[str, ...]] = (".csv",)
    supports_frames: ClassVar[bool] = False
    supports_tables: ClassVar[bool] = True
    mimetype: ClassVar[str] = "text/csv"
    on_widening: ClassVar[str] = "in_place"
    on_new_columns: ClassVar[str] = "new_part"
    on_incompatible: ClassVar[str] = "new_part"
    Options: ClassVar[type[WriterOptions]] = _Options
    #: No ``[storage]`` key applies: CSV has no codec and no chunks.
    config_keys: ClassVar[dict[str, str]] = {}

    def __init__(
        self, path: str | os.PathLike[str], *, iso_timestamps: bool = False, delimiter: str = ","
    ) -> None:
        options = self.validate_options(iso_timestamps=iso_timestamps, delimiter=delimiter)
        assert isinstance(options, _Options)
        super().__init__(path)
        self.options = options
        self.iso_timestamps = options.iso_timestamps
        self.delimiter = options.delimiter
        try:
            self._document = MetadataDocument(self.path / "metadata.json")
        except BaseException:
            self._release_output()
            raise
        #: Per stream: its files, the current (open) one last.
        self._files: dict[str, list[_CsvFile]] = {}
        #: Per stream, per column: the field metadata of the column's first batch.
        self._columns_metadata: dict[str, dict[str, dict[str, Any]]] = {}
        self._unsynced: list[Path] = []  # files closed since the last durable flush
        self._names_changed = False  # files created since the last durable flush

    # ------------------------------------------------------------------ public API
    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        """Append a table to ``stream`` (see :meth:`Writer.write_batch` and the class
        docstring for schema changes)."""
        given = batch = self._check_batch(stream, batch)
        _, action = self._plan_change(stream, batch.schema)
        files = self._files.get(stream)
        opened = files[-1] if files else None
        if opened is None or action == "new_part":
            target = self._new_file(stream, batch.schema)
        elif action == "in_place":
            target = self._widened(stream, opened, batch.schema)
        else:
            target = opened
        flat = conform_batch(flat_batch(batch), target.columns)
        if target.iso:
            flat = self._to_iso(stream, flat, target)
        text = self._text(stream, flat, header=False)
        header = self._text(stream, _empty(target.written), header=True) if target.fd < 0 else b""
        where = target.path if target.fd >= 0 else self.path
        self._ensure_room(len(text) + len(header), f"stream {stream!r}", where)
        if target.fd < 0:
            self._create(stream, target, header, new_part=opened is not None)
        self._append(stream, target, text)
        if opened is None or action == "new_part":
            self._files.setdefault(stream, []).append(target)
            self._describe_columns(stream, batch.schema)
            if opened is not None:
                self._retire(opened)
        else:
            self._files[stream][-1] = target  # the same file, widened in place (or as it was)
        self._observe_metadata(stream, given)
        self._stats.batches += 1
        self._stats.rows += given.num_rows
        self._stats.bytes_written += given.nbytes

    def visible(self, stream: str) -> int:
        """Every row accepted: each batch is in its file (complete lines) when
        :meth:`write_batch` returns."""
        self._known_stream(stream)
        return self.accepted(stream)

    def describe(self, stream: str) -> StreamDescription:
        """The stream's first file (``key`` ``""``: the file is the part), its parts, and
        the columns of its current part (flat ``parent.child`` names; each the Arrow
        type its text reads back as)."""
        self._known_stream(stream)
        files = self._files[stream]
        first = StreamPart(files[0].path, "", 0)
        return StreamDescription(
            stream=stream,
            kind="table",
            format=self.name,
            mimetype=self.mimetype,
            path=first.path,
            key="",
            parts=tuple(StreamPart(f.path, "", f.first) for f in files),
            visible=self.visible(stream),
            accepted=self.accepted(stream),
            columns=files[-1].types(),
        )

    def flush(self, *, durable: bool = False) -> None:
        """Write ``metadata.json`` (if it changed); the rows are in their files already.
        ``durable=True`` then fsyncs the open files, those closed since the last durable
        flush, ``metadata.json`` and the directory."""
        self._check_open()
        self._write_metadata_sidecar()
        if durable:
            self._sync()

    # ------------------------------------------------------------------ checks
    def _check_batch(self, stream: str, batch: Any) -> pa.RecordBatch:
        """The batch, refused (:class:`UnsupportedData`) when a value has no CSV text:
        so :meth:`check_batch` answers for the values too."""
        batch = super()._check_batch(stream, batch)
        flat = None
        for field in csv_leaves(stream, batch.schema):
            if is_binary(csv_type(stream, field.name, field.type)) or (
                self.iso_timestamps and _is_epoch_ns(field) and pa.types.is_uint64(field.type)
            ):
                flat = flat_batch(batch) if flat is None else flat
                self._check_values(stream, field.name, flat.column(field.name))
        return batch

    def _check_values(self, stream: str, name: str, column: pa.Array) -> None:
        if is_binary(column.type):
            try:
                column.cast(pa.large_binary()).cast(pa.large_string())
            except pa.ArrowInvalid:
                raise UnsupportedData(
                    f"stream {stream!r}: binary column {name!r} holds bytes that are not "
                    "UTF-8 text, which CSV cannot hold; nothing of this batch was written"
                ) from None
        else:
            largest = pc.max(column).as_py()
            if largest is not None and largest > _INT64_MAX:
                raise UnsupportedData(
                    f"stream {stream!r}: column {name!r} holds {largest}, no time since the "
                    "epoch in nanoseconds (at most 2**63 - 1) that ISO-8601 text can show; "
                    "nothing of this batch was written"
                )

    def _check_table_schema(self, stream: str, schema: pa.Schema) -> None:
        """Refuse a type without CSV text (lists, maps, intervals, ...) and two columns
        of one flat name, before anything is written."""
        csv_leaves(stream, schema)

    # ------------------------------------------------------------------ text and files
    def _text(self, stream: str, batch: pa.RecordBatch, *, header: bool) -> pa.Buffer:
        """``batch`` as CSV lines (with the header line when ``header``), in memory.

        Raises:
            UnsupportedData: a value has no CSV text.
        """
        quote_null_lines = False
        if batch.num_columns == 1 and batch.column(0).null_count:
            batch, quote_null_lines = single_column_nulls(batch)
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

    def _new_file(self, stream: str, schema: pa.Schema) -> _CsvFile:
        """A file (the stream's first, or a new part) for batches of ``schema``; created
        with its first rows."""
        columns = csv_columns(stream, schema)
        iso, written = self._text_schema(columns)
        return _CsvFile(self.path, -1, 0, self._taken(stream), columns, iso, written)

    def _describe_columns(self, stream: str, schema: pa.Schema) -> None:
        """Keep the field metadata of columns the stream's new file brings."""
        described = self._columns_metadata.get(stream, {})
        for field in csv_leaves(stream, schema):
            if field.metadata and field.name not in described:
                described[field.name] = decode_metadata(field.metadata)
        if described:
            self._columns_metadata[stream] = described

    def _widened(self, stream: str, opened: _CsvFile, schema: pa.Schema) -> _CsvFile:
        """``opened`` with the types ``schema`` widens (same file, same header: only the
        text of later rows comes from the wider types)."""
        evolved = csv_columns(stream, evolved_schema(self._table_schemas[stream], schema))
        types = {field.name: field.type for field in evolved}
        columns = pa.schema([pa.field(f.name, types[f.name]) for f in opened.columns])
        iso, written = self._text_schema(columns)
        return replace(opened, columns=columns, iso=iso, written=written, widened=True)

    def _create(self, stream: str, target: _CsvFile, header: pa.Buffer, *, new_part: bool) -> None:
        """Create the file (never an existing one) with its header line."""
        path = self._stream_path(stream, new_part=new_part)
        fd = self._create_file(stream, path, lambda fd: pwrite_all(fd, [header], 0))
        target.path, target.fd, target.end = path, fd, len(header)
        self._names_changed = True

    def _append(self, stream: str, opened: _CsvFile, text: pa.Buffer) -> None:
        """Write complete lines after the last ones; on failure cut them off again."""
        try:
            pwrite_all(opened.fd, [text], opened.end)
        except OSError as exc:
            with contextlib.suppress(OSError):  # repair_csv cuts what is left, if anything
                os.ftruncate(opened.fd, opened.end)
            self._recheck_room()
            raise StorageIOError(
                exc.errno if exc.errno is not None else errno.EIO,
                f"cannot write CSV rows of stream {stream!r}: {exc.strerror or exc}; "
                f"{opened.path.name} keeps every row before (nothing of this batch)",
                str(opened.path),
            ) from exc
        opened.end += len(text)

    def _retire(self, opened: _CsvFile) -> None:
        """Close a part the stream has left; a durable flush fsyncs it (and reports what
        the disk refuses: its rows were written, with errors checked, already)."""
        fd, opened.fd = opened.fd, -1
        with contextlib.suppress(OSError):
            os.close(fd)
        self._unsynced.append(opened.path)

    def _text_schema(self, columns: pa.Schema) -> tuple[tuple[tuple[int, str], ...], pa.Schema]:
        if not self.iso_timestamps:
            return (), columns
        iso: list[tuple[int, str]] = []
        for index, field in enumerate(columns):
            if pa.types.is_timestamp(field.type):
                iso.append((index, "utc" if field.type.tz is not None else "naive"))
            elif _is_epoch_ns(field):
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

    # ------------------------------------------------------------------ metadata, close
    def _write_metadata_sidecar(self) -> None:
        """CSV has no place for metadata: it goes to ``metadata.json`` beside the files
        (replaced whole: a reader never sees half of it)."""
        streams: dict[str, dict[str, Any]] = {}
        for stream in dict.fromkeys([*self._table_metadata, *self._stream_metadata]):
            entry = self._stream_entry(stream)
            if entry:
                streams[self._safe_stream(stream)] = entry
        parts = {
            self._safe_stream(stream): [
                {"file": f.path.name, "first": f.first, "types": f.types()} for f in files
            ]
            for stream, files in self._files.items()
            if len(files) > 1 or files[0].widened  # else the file and its header say it all
        }
        if not (self._file_metadata or streams or self._columns_metadata or parts):
            return
        with storage_errors(self._document.path, "cannot write CSV metadata"):
            written = self._document.write(
                {
                    "file": _loaded(self._file_metadata),
                    "streams": streams,
                    "columns": {self._safe_stream(s): c for s, c in self._columns_metadata.items()},
                    "parts": parts,
                }
            )
        if written:
            self._add_file(self._document.path)
            self._names_changed = True  # replaced: a new directory entry

    def _stream_entry(self, stream: str) -> dict[str, Any]:
        tracked = self._table_metadata.get(stream)
        entry = dict(tracked.first or {}) if tracked is not None else {}
        if tracked is not None and tracked.changes:
            entry["metadata_changes"] = tracked.changes
        entry.update(_loaded(self._stream_metadata.get(stream, {})))
        return entry

    def _sync(self) -> None:
        """fsync the open files, the files closed since the last durable flush, and
        ``metadata.json`` and the directory when their entries changed."""
        with storage_errors(self.path, "cannot make the flushed CSV files durable (fsync)"):
            for files in self._files.values():
                if files[-1].fd >= 0:
                    os.fsync(files[-1].fd)
            paths = [p for p in self._unsynced if p.exists()]
            if self._names_changed:
                if self._document.path.exists():
                    paths.append(self._document.path)
                paths.append(self.path)  # its entries (fsync_paths adds its parent's)
            fsync_paths(paths)
        self._unsynced.clear()
        self._names_changed = False

    def _close(self) -> None:
        try:
            closing = [_closer(files[-1]) for files in self._files.values() if files[-1].fd >= 0]
            finish_all([self._write_metadata_sidecar, *closing])
        finally:
            for files in self._files.values():
                files[-1].fd = -1


def _closer(opened: _CsvFile) -> Any:
    def close() -> None:
        with storage_errors(opened.path, "cannot close CSV file"):
            os.close(opened.fd)

    return close


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)


def _is_epoch_ns(field: pa.Field) -> bool:
    named = field.name == "timestamp_ns" or field.name.endswith("_timestamp_ns")
    return named and bool(pa.types.is_integer(field.type))


def _loaded(texts: dict[str, str]) -> dict[str, Any]:
    return {key: json.loads(text) for key, text in texts.items()}
