"""CSV: one file per stream with a header row, via ``pyarrow.csv``. Tables only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from daq_storage.errors import SchemaMismatch, UnsupportedData
from daq_storage.writers._base import storage_errors
from daq_storage.writers._per_stream import PerStreamWriter

__all__ = ["CsvWriter"]


class CsvWriter(PerStreamWriter):
    """CSV files, one per stream, in the directory ``path``.

    Args:
        path: output directory.
        iso_timestamps: write ``timestamp`` columns, and integer columns named
            ``timestamp_ns`` / ``*_ns``, as ISO-8601 text instead of numbers.
        delimiter: field separator.
    """

    name: ClassVar[str] = "csv"
    suffixes: ClassVar[tuple[str, ...]] = (".csv",)
    supports_frames: ClassVar[bool] = False
    supports_tables: ClassVar[bool] = True

    def __init__(
        self, path: str | os.PathLike[str], *, iso_timestamps: bool = False, delimiter: str = ","
    ) -> None:
        super().__init__(path)
        self.iso_timestamps = iso_timestamps
        self.delimiter = delimiter
        self._writers: dict[str, tuple[Path, pa.NativeFile, pacsv.CSVWriter, pa.Schema]] = {}

    def _convert(self, stream: str, batch: pa.RecordBatch) -> pa.RecordBatch:
        columns, fields = [], []
        for field, column in zip(batch.schema, batch.columns, strict=True):
            kind = field.type
            if pa.types.is_dictionary(kind):
                column, kind = column.dictionary_decode(), kind.value_type
            if pa.types.is_nested(kind) or isinstance(kind, pa.ExtensionType):
                raise UnsupportedData(
                    f"CSV cannot hold column {field.name!r} of type {field.type} "
                    f"(stream {stream!r})"
                )
            if self.iso_timestamps:
                if pa.types.is_integer(kind) and field.name.endswith("_ns"):
                    column = pc.cast(pc.cast(column, pa.int64()), pa.timestamp("ns", "UTC"))
                if pa.types.is_timestamp(column.type):
                    column = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S", locale="C")
            columns.append(column)
            fields.append(pa.field(field.name, column.type, field.nullable))
        return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))

    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        batch = self._convert(stream, self._check_batch(stream, batch))
        entry = self._writers.get(stream)
        if entry is not None and not entry[3].equals(batch.schema):
            if entry[3].names != batch.schema.names:
                raise SchemaMismatch(
                    f"stream {stream!r}: CSV columns {entry[3].names} cannot change to "
                    f"{batch.schema.names}"
                )
            batch = batch.cast(entry[3]) if _castable(batch.schema, entry[3]) else None
            if batch is None:
                raise SchemaMismatch(f"stream {stream!r}: column types changed incompatibly")
        if entry is None:
            path = self._stream_path(stream)
            with storage_errors(path, "cannot create CSV file"):
                sink = pa.OSFile(str(path), "wb")
                options = pacsv.WriteOptions(include_header=True, delimiter=self.delimiter)
                writer = pacsv.CSVWriter(sink, batch.schema, write_options=options)
            entry = self._writers[stream] = (path, sink, writer, batch.schema)
        # Text takes more room than the binary values: assume three times as much.
        self._ensure_room(3 * batch.nbytes, f"stream {stream!r}", entry[0])
        with storage_errors(entry[0], "cannot write CSV rows"):
            entry[2].write_batch(batch)
        self._stats.batches += 1
        self._stats.rows += batch.num_rows
        self._stats.bytes_written += batch.nbytes

    def write_frames(self, stream: str, frames: Any, **_: Any) -> None:
        self._check_open()
        raise UnsupportedData(
            f"CSV cannot store frames (stream {stream!r}); use hdf5, zarr or tiff"
        )

    def flush(self) -> None:
        self._check_open()
        self._write_metadata_sidecar()
        for path, sink, _, _ in self._writers.values():
            with storage_errors(path, "cannot flush CSV file"):
                sink.flush()

    def _write_metadata_sidecar(self) -> None:
        """CSV has no place for metadata: it goes to ``metadata.json`` beside the files."""
        if not self._file_metadata and not self._stream_metadata:
            return
        document = {
            "file": {k: json.loads(v) for k, v in self._file_metadata.items()},
            "streams": {
                self._safe_stream(stream): {k: json.loads(v) for k, v in values.items()}
                for stream, values in self._stream_metadata.items()
            },
        }
        path = self.path / "metadata.json"
        with storage_errors(path, "cannot write CSV metadata"):
            path.write_text(json.dumps(document, indent=2))
        self._add_file(path)

    def _close(self) -> None:
        self._write_metadata_sidecar()
        for path, sink, writer, _ in self._writers.values():
            with storage_errors(path, "cannot close CSV file"):
                try:
                    writer.close()
                finally:
                    sink.close()
        self._writers.clear()


def _castable(source: pa.Schema, target: pa.Schema) -> bool:
    try:
        pa.RecordBatch.from_pylist([], schema=source).cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
        return False
    return True
