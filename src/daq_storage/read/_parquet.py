"""Parquet outputs: a directory of one file per stream, parts in
``<stream>__part0002.parquet``...; frames as a ``fixed_shape_tensor`` column ``frame``.

A file a writer is appending to is a complete Parquet file between row groups, its
footer rewritten after each one (see :mod:`daq_storage.writers.parquet`); a footer
caught while it is rewritten is read again. A time range skips the row groups whose
``timestamp_ns`` statistics lie outside it; frames read only the row groups an index
needs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from daq_storage.errors import ReadError, UnknownStream
from daq_storage.location import S3Location, s3_errors
from daq_storage.read._arrow import TableFrames, table_stream_info
from daq_storage.read._files import SUFFIXES, common_metadata, metadata_document, stream_files
from daq_storage.read._object_files import (
    Source,
    arrow_source,
    object_metadata_document,
    object_stream_files,
)
from daq_storage.read._source import StreamInfo, select
from daq_storage.read._time import TIME_COLUMN
from daq_storage.schema import decode_metadata

__all__ = ["ParquetReader"]

_RETRIES = 20  # a footer being rewritten takes a few milliseconds


def _open(path: Source) -> pq.ParquetFile:
    if isinstance(path, S3Location):  # a part object is complete: no footer being rewritten
        with s3_errors(path, "read"):
            return pq.ParquetFile(path.arrow_path, filesystem=path.arrow_filesystem())
    for attempt in range(_RETRIES):
        try:
            return pq.ParquetFile(str(path), memory_map=True)
        except (pa.ArrowInvalid, OSError) as exc:
            if attempt == _RETRIES - 1:
                raise ReadError(f"{path}: not a Parquet file this reader can open ({exc})") \
                    from exc  # fmt: skip
            time.sleep(0.005 * (attempt + 1))  # the writer is rewriting the footer
    raise AssertionError("unreachable")


class _File:
    def __init__(self, path: Source) -> None:
        self.path = path
        self.file = _open(path)
        meta = self.file.metadata
        self.schema = self.file.schema_arrow.remove_metadata()
        raw = {k: v for k, v in (meta.metadata or {}).items() if k != b"ARROW:schema"}
        self.metadata = decode_metadata(raw)
        self.rows = meta.num_rows
        self.groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]

    def row_groups(self, start: int | None, stop: int | None) -> list[int]:
        """The row groups that may hold times in ``[start, stop)``."""
        keep = list(range(len(self.groups)))
        if (start is None and stop is None) or TIME_COLUMN not in self.schema.names:
            return keep
        kind = self.schema.field(TIME_COLUMN).type
        scale = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}.get(
            getattr(kind, "unit", "ns"), 1)  # fmt: skip
        column = self.schema.get_field_index(TIME_COLUMN)
        out = []
        meta = self.file.metadata
        for i in keep:
            stats = meta.row_group(i).column(column).statistics
            if stats is None or not stats.has_min_max:
                out.append(i)
                continue
            low, high = (_ns(stats.min) * scale, _ns(stats.max) * scale)
            if (stop is None or low < stop) and (start is None or high >= start):
                out.append(i)
        return out


def _whole(file: _File, columns: list[str] | None) -> pa.Table:
    """The whole file as ``pyarrow.parquet.read_table`` reads it (its dataset scan
    decodes row groups in parallel: a few % faster than ``ParquetFile.read``); the file as
    it was opened when a writer has appended since, or is rewriting its footer."""
    where, filesystem = arrow_source(file.path)
    try:
        table = pq.read_table(where, columns=columns, filesystem=filesystem)
    except (pa.ArrowInvalid, OSError):
        table = None
    if table is None or table.num_rows != file.rows:
        table = file.file.read(columns=columns)
    return table


def _ns(value: Any) -> int:
    if isinstance(value, int):
        return value
    if hasattr(value, "value"):  # pandas Timestamp
        return int(value.value)
    return int(np.datetime64(value, "ns").astype(np.int64))


class ParquetReader:
    """A directory of Parquet files, or a prefix of part objects in an object store."""

    format = "parquet"

    def __init__(self, path: Source) -> None:
        self.path = path
        found: Mapping[str, Sequence[Source]]
        if isinstance(path, S3Location):
            found = object_stream_files(path, SUFFIXES["parquet"])
        else:
            found = stream_files(path, SUFFIXES["parquet"])
        self._files = {stream: [_File(p) for p in paths] for stream, paths in found.items()}
        self._infos: dict[str, StreamInfo] | None = None

    def close(self) -> None:
        for files in self._files.values():
            for file in files:
                file.file.close()

    def streams(self) -> dict[str, StreamInfo]:
        if self._infos is None:
            found = self._files.items()
            self._infos = {name: table_stream_info(name, files) for name, files in found}
        return self._infos

    def metadata(self) -> dict[str, Any]:
        if not self._files:
            if isinstance(self.path, S3Location):
                return dict(object_metadata_document(self.path).get("file", {}))
            return dict(metadata_document(self.path).get("file", {}))
        # a stream's last part object holds its newest metadata (parts are never rewritten)
        last = -1 if isinstance(self.path, S3Location) else 0
        return common_metadata(f[last].metadata for f in self._files.values())

    def table(self, stream: str, columns: Sequence[str] | None, start: int | None,
              stop: int | None, part: int | None = None) -> pa.Table | None:  # fmt: skip
        """Every row group that may hold the time range, read at once (pyarrow reads
        the columns on its threads)."""
        info = self.streams()[stream]
        files = self._files[stream] if part is None else [self._files[stream][part]]
        tables = []
        for file in files:
            wanted = _present(columns, file.schema)
            groups = file.row_groups(start, stop)
            if len(groups) == len(file.groups):
                table = _whole(file, wanted)
            else:
                table = file.file.read_row_groups(groups, columns=wanted)
            tables.append(table.replace_schema_metadata(None))
        if not tables:
            return None
        tables = [select(t, columns, info.schema) for t in tables]
        if len(tables) == 1:
            return tables[0]
        return pa.concat_tables(tables, promote_options="permissive")

    def polars(self, stream: str, columns: Sequence[str] | None,
               part: int | None = None) -> Any:  # fmt: skip
        """The stream read by polars' own Parquet reader (its threads, its types), or
        ``None`` where polars cannot join the parts as pyarrow would."""
        import polars as pl

        files = self._files[stream] if part is None else [self._files[stream][part]]
        if any(f.schema != files[0].schema for f in files):
            return None
        if columns is not None and any(c not in files[0].schema.names for c in columns):
            return None
        options = None
        if isinstance(self.path, S3Location):
            options = self.path.polars_options()
        return pl.read_parquet([str(f.path) for f in files], columns=None if columns is None
                               else list(columns), use_pyarrow=False,
                               storage_options=options)  # fmt: skip

    def iter_batches(self, stream: str, columns: Sequence[str] | None, batch_rows: int,
                     part: int | None = None, start: int | None = None,
                     stop: int | None = None) -> Iterator[pa.RecordBatch]:  # fmt: skip
        info = self.streams()[stream]
        files = self._files[stream] if part is None else [self._files[stream][part]]
        for file in files:
            wanted = _present(columns, file.schema)
            groups = file.row_groups(start, stop)
            if not groups:
                continue
            for batch in file.file.iter_batches(batch_rows, row_groups=groups, columns=wanted):
                yield select(batch, columns, info.schema)

    def frames(self, stream: str) -> TableFrames:
        info = self.streams().get(stream)
        if info is None or info.kind != "frames":
            raise UnknownStream(f"{self.path}: no frame stream {stream!r}")
        groups = [(f, i) for f in self._files[stream] for i in range(len(f.groups))]

        def load(k: int) -> pa.Array:
            file, i = groups[k]
            return file.file.read_row_group(i, columns=["frame"]).column(0)

        def load_many(pieces: list[int]) -> dict[int, Any]:
            """The row groups of each file read in one call (decoded on pyarrow's
            threads), then cut back into row groups."""
            by_file: dict[int, list[int]] = {}
            for k in pieces:
                by_file.setdefault(id(groups[k][0]), []).append(k)
            loaded = {}
            for ks in by_file.values():
                file = groups[ks[0]][0]
                # a dataset fragment decodes row groups in parallel (ParquetFile by column)
                where, filesystem = arrow_source(file.path)
                fragment = pads.ParquetFileFormat().make_fragment(where, filesystem=filesystem)
                subset = fragment.subset(row_group_ids=[groups[k][1] for k in ks])
                column = subset.to_table(columns=["frame"]).column(0)
                offset = 0
                for k in ks:
                    rows = file.groups[groups[k][1]]
                    loaded[k] = column.slice(offset, rows)
                    offset += rows
            return loaded

        def ids(name: str) -> pa.Array:
            parts = [f.file.read(columns=[name]).column(0) for f in self._files[stream]]
            return pa.chunked_array([c for p in parts for c in p.chunks],
                                    info.schema.field(name).type).combine_chunks()  # fmt: skip

        counts = [f.groups[i] for f, i in groups]
        return TableFrames(counts, info.frame_shape, info.dtype or np.dtype("uint8"), load, ids,
                           load_many)  # fmt: skip


def _present(columns: Sequence[str] | None, schema: pa.Schema) -> list[str] | None:
    """The ``columns`` a file has; when it has none of them, its first column (read for
    its row count: the rest are nulls)."""
    if columns is None:
        return None
    present = [c for c in columns if c in schema.names]
    return present or schema.names[:1]
