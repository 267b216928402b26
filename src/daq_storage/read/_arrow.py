"""Arrow IPC outputs: a directory of one file per stream, streaming format
(``.arrows``) or file format (``.arrow``), parts in ``<stream>__part0002...``; frames as a
``fixed_shape_tensor`` column ``frame``.

Files are memory-mapped: batches are read without copying, and only the batches an
index needs are turned into frames. A streaming file a writer is appending to ends with
its end-of-stream marker after its last complete batch (see
:mod:`daq_storage.writers._arrow_files`): the reader stops there. A file-format file not
completed yet (no footer) is read as the stream it starts with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import ReadError, UnknownStream
from daq_storage.location import S3Location
from daq_storage.read._files import SUFFIXES, common_metadata, metadata_document, stream_files
from daq_storage.read._frames import segments
from daq_storage.read._object_files import (
    Source,
    object_metadata_document,
    object_stream_files,
    open_source,
)
from daq_storage.read._source import LAYOUT_KEYS, PartInfo, StreamInfo, select
from daq_storage.schema import decode_metadata

__all__ = ["ArrowReader", "TableFrames", "frame_info"]

_MAGIC = b"ARROW1"


class _File:
    """One IPC file's batches (memory-mapped) and its metadata."""

    def __init__(self, path: Source) -> None:
        self.path = path
        self.source = open_source(path)
        self.batches: list[pa.RecordBatch] = []
        self._raw: dict[bytes, bytes] | None = None  # schema + batches' custom metadata
        self._metadata: dict[str, Any] | None = None
        try:
            schema = self._read()
        except (pa.ArrowInvalid, OSError) as exc:
            raise ReadError(f"{path}: not an Arrow IPC file this reader can open ({exc})") from exc
        self._schema_metadata = dict(schema.metadata or {})
        self.schema = schema.remove_metadata()
        self.rows = sum(b.num_rows for b in self.batches)
        self.starts = np.cumsum([0] + [b.num_rows for b in self.batches])

    @property
    def metadata(self) -> dict[str, Any]:
        """The file's metadata: its schema's, updated by each batch's custom metadata.
        Gathered when first asked for: that walks every batch in Python, which a table
        read does not need."""
        if self._metadata is None:
            if self._raw is None:
                raw = dict(self._schema_metadata)
                with contextlib.suppress(pa.ArrowInvalid, OSError):  # listed: readable
                    self._stream(self._stream_source(), raw, keep=False)
                self._raw = raw
            self._metadata = decode_metadata(self._raw)
        return self._metadata

    def _stream_source(self) -> Any:
        """The file's messages as a stream (after the magic of a file-format one)."""
        self.source.seek(0)
        buffer = self.source.read_buffer()
        magic = buffer.slice(0, len(_MAGIC)).to_pybytes() == _MAGIC
        return pa.BufferReader(buffer.slice(8) if magic else buffer)

    def _read(self) -> pa.Schema:
        head = self.source.read(8)
        self.source.seek(0)
        if head.startswith(_MAGIC):
            try:
                reader = pa.ipc.open_file(self.source)
            except pa.ArrowInvalid:  # being written: no footer yet, a stream after the magic
                return self._stream_all(self._stream_source())
            raw = dict(reader.schema.metadata or {})
            for i in range(reader.num_record_batches):
                batch, custom = reader.get_batch_with_custom_metadata(i)
                raw.update(custom or {})
                self.batches.append(batch)
            self._raw = raw
            return reader.schema
        return self._stream_all(self.source)

    def _stream_all(self, source: Any) -> pa.Schema:
        """Every complete batch of a stream at once (pyarrow's ``read_all``); a stream
        whose last message is still being published is read message by message."""
        position = source.tell()
        reader = pa.ipc.open_stream(source)
        try:
            table = reader.read_all()
        except (pa.ArrowInvalid, OSError):
            source.seek(position)
            raw: dict[bytes, bytes] = {}
            schema = self._stream(source, raw, keep=True)
            self._raw = {**(schema.metadata or {}), **raw}
            return schema
        self.batches = [batch for batch in table.to_batches() if batch.num_rows]
        return reader.schema

    def _stream(self, source: Any, metadata: dict[bytes, bytes], *, keep: bool) -> pa.Schema:
        reader = pa.ipc.open_stream(source)
        while True:
            try:
                batch, custom = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):
                break  # a message being published past what was there when mapped
            metadata.update(custom or {})
            if keep and batch.num_rows:
                self.batches.append(batch)
        return reader.schema

    def close(self) -> None:
        self.source.close()


_FRAME_COLUMNS = ("timestamp_ns", "frame_number")


def frame_info(schema: pa.Schema) -> tuple[tuple[int, ...], np.dtype[Any]] | None:
    """A frame stream's frame shape and dtype, from its ``frame`` column; ``None`` for a
    table."""
    if "frame" not in schema.names:
        return None
    kind = schema.field("frame").type
    if not isinstance(kind, pa.FixedShapeTensorType):
        return None
    return tuple(kind.shape), np.dtype(kind.value_type.to_pandas_dtype())


def _pooled_empty(shape: tuple[int, ...], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """An uninitialised array in memory from Arrow's pool, as pyarrow's own results are:
    a pool keeps freed pages mapped, so reading a stack again does not fault in fresh
    pages for every frame (what ``np.empty`` of a large array does each time)."""
    count = int(np.prod(shape, dtype=np.int64))
    buffer = pa.allocate_buffer(count * dtype.itemsize)
    return np.frombuffer(buffer, dtype, count).reshape(shape)


class TableFrames:
    """Frames held in the ``frame`` column of tables (Arrow IPC batches, Parquet row
    groups), read a piece at a time: ``load_many(pieces)`` gives each piece's ``frame``
    column (by default ``load(k)`` for each)."""

    def __init__(self, counts: Sequence[int], shape: tuple[int, ...], dtype: np.dtype[Any],
                 load: Any, load_ids: Any, load_many: Any = None) -> None:  # fmt: skip
        self.starts = np.cumsum([0, *counts])
        self.shape = (int(self.starts[-1]), *shape)
        self.dtype = dtype
        self._load_many = load_many or (lambda pieces: {k: load(k) for k in pieces})
        self._load_ids = load_ids

    def read(self, index: slice | npt.NDArray[np.intp]) -> npt.NDArray[Any]:
        wanted = np.arange(self.shape[0])[index] if isinstance(index, slice) else index
        out = _pooled_empty((len(wanted), *self.shape[1:]), self.dtype)
        pieces = segments(self.starts, wanted)
        loaded = self._load_many([k for k, _, _ in pieces])
        for k, first, last in pieces:
            self._copy(out[first:last], loaded[k], wanted[first:last] - self.starts[k])
        return out

    def _copy(self, out: npt.NDArray[Any], column: Any, rows: npt.NDArray[np.intp]) -> None:
        """Frames ``rows`` of ``column`` (an array or a chunked array) into ``out``."""
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        starts = np.cumsum([0, *(len(c) for c in chunks)])
        for c, first, last in segments(starts, rows):
            chunk = chunks[c]
            storage = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
            flat = storage.flatten().to_numpy(zero_copy_only=False)  # no copy: no nulls
            block = flat.reshape(len(storage), *self.shape[1:])
            local = rows[first:last] - starts[c]
            if local[-1] - local[0] + 1 == len(local):  # a run of frames: one slice copy
                out[first:last] = block[local[0] : local[-1] + 1]
            else:
                out[first:last] = block[local]

    def timestamps_ns(self) -> npt.NDArray[np.uint64]:
        stamps = self._load_ids("timestamp_ns")
        return np.asarray(stamps.cast(pa.int64()).to_numpy()).astype(np.uint64)

    def frame_numbers(self) -> npt.NDArray[np.uint64]:
        return np.asarray(self._load_ids("frame_number").to_numpy()).astype(np.uint64)


class ArrowReader:
    """A directory of Arrow IPC files, or a prefix of part objects in an object store,
    each opened when one of its streams is read."""

    format = "arrow"

    def __init__(self, path: Source) -> None:
        self.path = path
        self._paths: Mapping[str, Sequence[Source]]
        if isinstance(path, S3Location):
            self._paths = object_stream_files(path, SUFFIXES["arrow"])
        else:
            self._paths = stream_files(path, SUFFIXES["arrow"])
        self._opened: dict[str, list[_File]] = {}
        self._infos: dict[str, StreamInfo] | None = None

    def _files(self, stream: str) -> list[_File]:
        files = self._opened.get(stream)
        if files is None:
            files = self._opened[stream] = [_File(p) for p in self._paths[stream]]
        return files

    def close(self) -> None:
        for files in self._opened.values():
            for file in files:
                file.close()
        self._opened.clear()

    def streams(self) -> dict[str, StreamInfo]:
        if self._infos is None:
            self._infos = {name: table_stream_info(name, self._files(name)) for name in self._paths}
        return self._infos

    def catalog(self) -> dict[str, tuple[str, pa.Schema, int]]:
        """Stream -> (kind, schema, parts), from the files' schemas alone."""
        out = {}
        for stream, paths in self._paths.items():
            if stream in self._opened:
                schemas = [file.schema for file in self._opened[stream]]
            else:
                schemas = [_schema_of(path) for path in paths]
            out[stream] = _entry(schemas)
        return out

    def catalog_entry(self, name: str) -> tuple[str, pa.Schema, int] | None:
        """One stream's (kind, schema, parts): its files opened (what reading it needs
        next), the others' left alone."""
        if name not in self._paths:
            return None
        return _entry([file.schema for file in self._files(name)])

    def metadata(self) -> dict[str, Any]:
        if not self._paths:
            if isinstance(self.path, S3Location):
                return dict(object_metadata_document(self.path).get("file", {}))
            return dict(metadata_document(self.path).get("file", {}))
        # a stream's last part object holds its newest metadata (parts are never rewritten)
        last = -1 if isinstance(self.path, S3Location) else 0
        return common_metadata(self._files(s)[last].metadata for s in self._paths)

    def iter_batches(self, stream: str, columns: Sequence[str] | None, batch_rows: int,
                     part: int | None = None) -> Iterator[pa.RecordBatch]:  # fmt: skip
        files = self._files(stream)
        fields: dict[str, pa.Field] = {}
        for file in files:
            for field in file.schema:
                fields.setdefault(field.name, field)
        schema = pa.schema(list(fields.values()))
        for file in files if part is None else [files[part]]:
            for batch in file.batches:
                for start in range(0, batch.num_rows, batch_rows):
                    yield select(batch.slice(start, batch_rows), columns, schema)

    def table(self, stream: str, columns: Sequence[str] | None, start: int | None,
              stop: int | None, part: int | None = None) -> pa.Table | None:  # fmt: skip
        """One file's batches as a table in one call when they share a schema (the
        time range is applied by the caller); ``None``: several files, or batches of
        several schemas, which :meth:`iter_batches` joins."""
        files = self._files(stream)
        chosen = files if part is None else [files[part]]
        if len(chosen) != 1 or not chosen[0].batches:
            return None
        batches = chosen[0].batches
        first = batches[0].schema
        if any(not batch.schema.equals(first) for batch in batches[1:]):
            return None
        return select(pa.Table.from_batches(batches, first), columns)

    def frames(self, stream: str) -> TableFrames:
        info = self._infos.get(stream) if self._infos is not None else None
        if info is None and stream in self._paths:
            info = table_stream_info(stream, self._files(stream))  # this stream's files alone
        if info is None or info.kind != "frames":
            raise UnknownStream(f"{self.path}: no frame stream {stream!r}")
        batches = [b for f in self._files(stream) for b in f.batches]

        def ids(name: str) -> pa.Array:
            return pa.chunked_array([b.column(name) for b in batches],
                                    info.schema.field(name).type).combine_chunks()  # fmt: skip

        return TableFrames([b.num_rows for b in batches], info.frame_shape,
                           info.dtype or np.dtype("uint8"),
                           lambda k: batches[k].column("frame"), ids)  # fmt: skip


def _entry(schemas: Sequence[pa.Schema]) -> tuple[str, pa.Schema, int]:
    fields: dict[str, pa.Field] = {}
    for schema in schemas:
        for field in schema:
            fields.setdefault(field.name, field)
    joined = pa.schema(list(fields.values()))
    if frame_info(joined) is not None:
        return "frames", joined.remove(joined.get_field_index("frame")), len(schemas)
    return "table", joined, len(schemas)


def _schema_of(path: Source) -> pa.Schema:
    """A file's schema, from its header only."""
    with open_source(path) as source:
        try:
            if source.read(6) == _MAGIC:
                source.seek(8)  # the stream after the magic, in a file being written too
            else:
                source.seek(0)
            return pa.ipc.open_stream(source).schema.remove_metadata()
        except (pa.ArrowInvalid, OSError) as exc:
            raise ReadError(f"{path}: not an Arrow IPC file this reader can open ({exc})") \
                from exc  # fmt: skip


class TableFile(Protocol):
    """What :func:`table_stream_info` needs of one file of a stream (Arrow IPC, Parquet)."""

    @property
    def path(self) -> Source: ...

    @property
    def rows(self) -> int: ...

    @property
    def schema(self) -> pa.Schema: ...

    @property
    def metadata(self) -> dict[str, Any]: ...


def table_stream_info(name: str, files: Sequence[TableFile]) -> StreamInfo:
    """A stream kept in table files, part after part: a frame stream if its schema has a
    tensor ``frame`` column."""
    parts, first = [], 0
    fields: dict[str, pa.Field] = {}
    metadata: dict[str, Any] = {}
    for file in files:
        parts.append(PartInfo(file.path, "", first, file.rows))
        first += file.rows
        for field in file.schema:
            fields.setdefault(field.name, field)
        metadata.update({k: v for k, v in file.metadata.items() if k not in LAYOUT_KEYS})
    schema = pa.schema(list(fields.values()))
    paths = tuple(f.path for f in files)
    frames = frame_info(schema)
    if frames is not None:
        return StreamInfo(name, "frames", first, schema.remove(schema.get_field_index("frame")),
                          metadata, tuple(parts), frames[0], frames[1], files=paths)  # fmt: skip
    return StreamInfo(name, "table", first, schema, metadata, tuple(parts), files=paths)
