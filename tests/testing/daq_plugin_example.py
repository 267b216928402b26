"""A third-party writer, installed by the tests as the module ``daq_plugin_example`` of a
distribution with an entry point in ``daq_storage.writers``: one JSON line per row.

Each line is ``{"stream": <stream or part>, <column>: <value>, ...}``; a time column
holds integers in its unit (its Arrow type is in the metadata). Beside ``run.jsonl``,
``run.jsonl.meta.json`` holds the metadata, written at every flush: ``file`` and
``streams`` (each stream's metadata, ``metadata_changes`` included), ``columns`` (per
stream or part: column -> its Arrow type and field metadata as text) and ``parts`` (per
stream of several parts: ``[{"key": ..., "first": row}, ...]``).

Evolution: a widening is taken in place (JSON numbers have no width); new or missing
columns continue the stream in a new part, whose lines carry ``<stream>__part0002``
(...); an incompatible change is refused.
"""

from __future__ import annotations

import errno
import json
import os
from typing import IO, Any, ClassVar

import pyarrow as pa

from daq_storage import Writer
from daq_storage.errors import StorageIOError, UnsupportedData
from daq_storage.writers import StreamDescription, StreamPart, WriterOptions


class JsonLinesWriter(Writer):
    """Tables as JSON lines (see the module docstring)."""

    name: ClassVar[str] = "jsonl"
    suffixes: ClassVar[tuple[str, ...]] = (".jsonl",)
    supports_frames: ClassVar[bool] = False
    supports_tables: ClassVar[bool] = True
    path_is_directory: ClassVar[bool] = False
    mimetype: ClassVar[str] = "application/x-ndjson"
    on_widening: ClassVar[str] = "in_place"
    on_new_columns: ClassVar[str] = "new_part"
    on_incompatible: ClassVar[str] = "refuse"
    removes_unused_output: ClassVar[bool] = True

    class Options(WriterOptions):
        #: Escape every character outside ASCII (``json.dumps``'s ``ensure_ascii``).
        ensure_ascii: bool = False

    def __init__(self, path: str | os.PathLike[str], *, ensure_ascii: bool = False) -> None:
        super().__init__(path)
        self.options = self.validate_options(ensure_ascii=ensure_ascii)
        self._ascii = ensure_ascii
        self._sidecar = self.path.with_name(self.path.name + ".meta.json")
        for taken in (self.path, self._sidecar):
            if taken.exists() and (taken.is_dir() or taken.stat().st_size):
                raise StorageIOError(
                    errno.EEXIST, "the output already exists; it is never overwritten", str(taken)
                )
        self._claim_directory(self.path.parent)
        self._file: IO[str] | None = None  # opened when something is first stored
        self._keys: dict[str, str] = {}  # stream -> the key of its current part
        self._columns: dict[str, dict[str, dict[str, str]]] = {}  # key -> column -> attrs
        self._visible: dict[str, int] = {}
        self._file_metadata: dict[str, Any] = {}
        self._stream_metadata: dict[str, dict[str, Any]] = {}

    # --- writing ---
    def write_batch(self, stream: str, batch: Any) -> None:
        batch = self._check_batch(stream, batch)
        _, action = self._plan_change(stream, batch.schema)
        safe = self._safe_stream(stream)
        key = self._keys.get(stream, safe)
        rows = self._table_metadata[stream].rows if stream in self._table_metadata else 0
        if action == "new_part":
            key = f"{safe}__part{len(self._parts.get(stream, [None])) + 1:04d}"
        text = self._lines(key, batch)
        self._ensure_room(len(text.encode()), f"{batch.num_rows} rows of {stream!r}", self.path)
        try:
            self._open().write(text)
        except OSError as exc:
            raise StorageIOError(
                exc.errno or errno.EIO, f"writing {stream!r}: {exc}", str(self.path)
            ) from exc
        if action == "new_part":
            if stream not in self._parts:
                self._add_part(stream, StreamPart(self.path, safe, 0))
            self._add_part(stream, StreamPart(self.path, key, rows))
        self._keys[stream] = key
        known = self._columns.setdefault(key, {})
        for field in batch.schema:
            attrs = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
            known.setdefault(field.name, {"arrow_type": str(field.type), **attrs})
        self._stats.batches += 1
        self._stats.rows += batch.num_rows
        self._stats.bytes_written += batch.nbytes
        self._observe_metadata(stream, batch)

    def _check_table_schema(self, stream: str, schema: pa.Schema) -> None:
        """Numbers, booleans, text and times: what a JSON line holds (checked before
        anything is written, so check_batch is truthful)."""
        for field in schema:
            t = field.type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                    or pa.types.is_string(t) or pa.types.is_large_string(t)
                    or pa.types.is_timestamp(t) or pa.types.is_null(t)):  # fmt: skip
                raise UnsupportedData(
                    f"jsonl: stream {stream!r}: column {field.name!r} is {t}; JSON lines hold "
                    "numbers, booleans, text and times"
                )

    def _lines(self, key: str, batch: pa.RecordBatch) -> str:
        columns = {}
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if pa.types.is_timestamp(column.type):
                column = column.cast(pa.int64())  # the value in its unit
            columns[name] = column.to_pylist()
        names = list(columns)
        rows = (dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True))
        # NaN and the infinities as Python's json writes and reads them.
        return "".join(
            json.dumps({"stream": key, **row}, ensure_ascii=self._ascii) + "\n" for row in rows
        )

    def _open(self) -> IO[str]:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
            self._add_file(self.path)
            self._add_file(self._sidecar)
        return self._file

    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        self._check_open()
        try:  # the guard checked the key; refuse a value JSON cannot hold
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise UnsupportedData(f"jsonl: metadata {key!r}: {exc}") from None
        if stream is None:
            self._file_metadata[key] = value
        else:
            self._stream_metadata.setdefault(self._safe_stream(stream), {})[key] = value
        self._stored = True

    # --- visibility ---
    def flush(self, *, durable: bool = False) -> None:
        self._check_open()
        if not self._stored:
            return
        file = self._open()
        file.flush()
        self._write_sidecar()
        if durable:
            for path in (self.path, self._sidecar, self.path.parent):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        for stream in self._table_metadata:
            self._visible[stream] = self._table_metadata[stream].rows

    def _write_sidecar(self) -> None:
        streams: dict[str, dict[str, Any]] = {}
        for stream, metadata in self._table_metadata.items():
            section = streams.setdefault(self._safe_stream(stream), {})
            section.update(metadata.first or {})
            if metadata.changes:
                section["metadata_changes"] = metadata.changes
        for safe, values in self._stream_metadata.items():
            streams.setdefault(safe, {}).update(values)
        document = {
            "file": self._file_metadata,
            "streams": streams,
            "columns": self._columns,
            "parts": {
                self._safe_stream(stream): [{"key": p.key, "first": p.first} for p in parts]
                for stream, parts in self._parts.items()
            },
        }
        temporary = self._sidecar.with_name(self._sidecar.name + ".tmp")
        temporary.write_text(json.dumps(document, allow_nan=True), encoding="utf-8")
        temporary.replace(self._sidecar)

    def visible(self, stream: str) -> int:
        self._known_stream(stream)
        return self._visible.get(stream, 0)

    def describe(self, stream: str) -> StreamDescription:
        self._known_stream(stream)
        safe = self._safe_stream(stream)
        return StreamDescription(
            stream=stream,
            kind="table",
            format=self.name,
            mimetype=self.mimetype,
            path=self.path,
            key=safe,
            parts=self._stream_parts(stream, StreamPart(self.path, safe, 0)),
            visible=self.visible(stream),
            accepted=self.accepted(stream),
            columns={f.name: str(f.type) for f in self._table_schemas[stream]},
        )

    def _close(self) -> None:
        if self._stored:
            self.flush()
        if self._file is not None:
            self._file.close()
