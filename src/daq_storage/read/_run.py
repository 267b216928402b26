"""A run as one thing to read: its streams, metadata and loss ledger, over every
rotated version of one format's output."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import pyarrow as pa

from daq_storage.errors import (
    ConfigError,
    ReadError,
    UnknownStream,
    WriterClosedError,
    describe_value,
)
from daq_storage.location import S3Location, S3Options, parse_location
from daq_storage.read._discover import Output, find_outputs
from daq_storage.read._discover_s3 import S3_FORMATS
from daq_storage.read._frames import ChainedFrames, FrameArray, check_stream_kind
from daq_storage.read._source import (
    LossRange,
    PartInfo,
    Reader,
    StreamInfo,
    check_columns,
    losses_of,
    read_errors,
    select,
)
from daq_storage.read._time import TIME_COLUMN, TimeLike, in_range, time_column, to_ns

if TYPE_CHECKING:
    import polars

__all__ = ["Run", "open_run"]

#: Rows per batch of :meth:`Run.iter_batches` unless told.
BATCH_ROWS = 65_536
#: Rows per batch when table() reads a part through its batches: large (few calls), and
#: small enough that a text column's batch stays under Arrow's 2 GiB of offsets.
_WHOLE = 1 << 22


def _local(output: Output) -> Path:
    """The output's path, for a reader of local files only."""
    if isinstance(output.path, S3Location):
        raise ReadError(f"{output.path.url}: {output.format} outputs are read from local "
                        f"files only (object storage holds {', '.join(S3_FORMATS)})")  # fmt: skip
    return output.path


def _reader(output: Output) -> Reader:
    kind = output.format
    if kind == "hdf5":
        from daq_storage.read._channels import channel_reader
        from daq_storage.read._hdf5 import Hdf5Reader

        return channel_reader(Hdf5Reader(_local(output)))
    if kind == "zarr":
        from daq_storage.read._zarr import ZarrReader

        return ZarrReader(output.path)
    if kind == "parquet":
        from daq_storage.read._parquet import ParquetReader

        return ParquetReader(output.path)
    if kind == "csv":
        from daq_storage.read._csv import CsvReader

        return CsvReader(_local(output))
    if kind == "tiff":
        from daq_storage.read._tiff import TiffReader

        return TiffReader(_local(output))
    from daq_storage.read._arrow import ArrowReader  # also a directory of metadata only
    from daq_storage.read._channels import channel_reader

    return channel_reader(ArrowReader(output.path))


def open_run(path: str | os.PathLike[str] | S3Location, *, format: str | None = None,
             run: str | None = None,
             storage_options: S3Options | Mapping[str, Any] | None = None) -> Run:  # fmt: skip
    """Open what a writer or a Recorder wrote, to read it back.

    Args:
        path: one output (an ``.h5`` file, a ``.zarr`` store, a directory of one file per
            stream), a directory of rotated versions of one run (``..._v1``, ``..._v2``,
            read one after the other), a Recorder's output directory, or a run's name
            without ``_v{N}`` in its directory.
        format: which format to read where the run was written in several
            (``"hdf5"``, ``"arrow"``, ``"parquet"``, ``"csv"``, ``"zarr"``, ``"tiff"``).
        run: which run to read (its name without ``_v{N}``) where a directory holds
            several.
        storage_options: for an ``s3://bucket/prefix`` path (a Zarr store, a Parquet or
            Arrow IPC output, or a Recorder's prefix), how to reach the store
            (:class:`~daq_storage.location.S3Options` or a mapping of its fields; unset:
            the ``AWS_*`` environment and profiles).

    Raises:
        RunNotFound: nothing this project writes at ``path``.
        ConfigError: several formats or runs and no choice (the message lists them).
        ReadError: a file that cannot be read back (named).
        StorageIOError: the object store cannot be reached or listed (named).
    """
    if not isinstance(path, str | os.PathLike | S3Location):
        raise ConfigError(f"path must be a path, got {describe_value(path)}")
    where = parse_location(path, storage_options)
    outputs = find_outputs(where, format, run)
    readers: list[Reader] = []
    try:
        for output in outputs:
            readers.append(_reader(output))
        return Run(where, outputs, readers)
    except BaseException:
        for reader in readers:
            reader.close()
        raise


class Run:
    """A run read back: use as ``with open_run(path) as run: ...``.

    Attributes:
        path: what was opened.
        format: the format read.
        name: the run's name, without ``_v{N}`` and suffix.
        files: the outputs read, in version order.
    """

    def __init__(self, path: Path | S3Location, outputs: Sequence[Output],
                 readers: Sequence[Reader]) -> None:  # fmt: skip
        self.path = path
        self.files = tuple(o.path for o in outputs)
        self.format = outputs[0].format
        self.name = outputs[0].base
        self._readers = list(readers)
        self._closed = False
        self._streams: dict[str, StreamInfo] | None = None
        #: stream -> [(reader, its part index)] in order
        self._where: dict[str, list[tuple[Reader, int]]] = {}
        #: stream -> (kind, schema): what reading needs, without counting rows
        self._catalog: dict[str, tuple[str, pa.Schema]] | None = None
        #: stream -> (kind, schema) of the streams looked up one by one
        self._entries: dict[str, tuple[str, pa.Schema]] = {}

    # --- lifetime ---
    def close(self) -> None:
        """Close every file the run opened (also at the end of a ``with`` block)."""
        if not self._closed:
            self._closed = True
            for reader in self._readers:
                reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, format={self.format!r}, streams={list(self.streams)})"

    def _check_open(self) -> None:
        if self._closed:
            raise WriterClosedError(f"run {self.path} is closed (and the files it opened)")

    # --- what it holds ---
    @property
    def streams(self) -> dict[str, StreamInfo]:
        """Stream name -> :class:`StreamInfo` (kind, rows or frames, schema, metadata,
        parts), every version joined."""
        self._check_open()
        if self._streams is None:
            merged: dict[str, StreamInfo] = {}
            offsets: dict[str, int] = {}
            for reader in self._readers:
                for name, info in reader.streams().items():
                    before = merged.get(name)
                    if before is None:
                        merged[name] = info
                        offsets[name] = info.rows
                        continue
                    if before.kind != info.kind:
                        raise ReadError(f"{reader.path}: stream {name!r} holds {info.kind}, "
                                        f"an earlier version {before.kind}")  # fmt: skip
                    offset = offsets[name]
                    parts = tuple(PartInfo(p.path, p.key, p.first + offset, p.rows)
                                  for p in info.parts)  # fmt: skip
                    fields = {f.name: f for f in before.schema}
                    for field in info.schema:
                        fields.setdefault(field.name, field)
                    merged[name] = StreamInfo(
                        name, before.kind, before.rows + info.rows,
                        pa.schema(list(fields.values())), {**before.metadata, **info.metadata},
                        before.parts + parts, before.frame_shape, before.dtype,
                        files=before.files + info.files)  # fmt: skip
                    offsets[name] = offset + info.rows
            self._streams = merged
        return self._streams

    @property
    def metadata(self) -> dict[str, Any]:
        """The run's file-level metadata (where a format keeps it in each stream's file:
        what every stream's holds alike), the first version's, updated by later ones."""
        self._check_open()
        out: dict[str, Any] = {}
        for reader in self._readers:
            out.update(reader.metadata())
        return out

    @property
    def losses(self) -> list[LossRange]:
        """Every range of records the Recorder lost (its files' ``loss_ledger``), in the
        order of the files."""
        self._check_open()
        out: list[LossRange] = []
        for reader in self._readers:
            seen: set[tuple[int, int]] = set()
            sources = [reader.metadata()]
            sources += [info.metadata for info in reader.streams().values()]
            for metadata in sources:
                for loss in losses_of(metadata, reader.path):
                    if (loss.first, loss.last) not in seen:
                        seen.add((loss.first, loss.last))
                        out.append(loss)
        return out

    @property
    def lost_records(self) -> int:
        """Records lost in all (the sum of :attr:`losses`)."""
        return sum(loss.count for loss in self.losses)

    def _entry(self, name: str) -> tuple[str, pa.Schema]:
        """A stream's kind and schema (every version), as cheaply as each format gives
        them: that stream's files or groups alone where the format can (reading one
        stream need not open the others), and CSV counts its rows only when asked."""
        self._check_open()
        entry = None
        if self._catalog is not None:
            entry = self._catalog.get(name) if isinstance(name, str) else None
        elif isinstance(name, str):
            entry = self._entries.get(name)
            if entry is None:
                found = [(reader, got) for reader in self._readers
                         if (got := _entry_of(reader, name)) is not None]  # fmt: skip
                if found:
                    entry = _merge(name, found, self._where)
                    self._entries[name] = entry
        if entry is None:
            catalog = self._full_catalog()
            raise UnknownStream(f"run {self.path} has no stream {describe_value(name)}; its "
                                f"streams are {sorted(catalog)}")  # fmt: skip
        return entry

    def _full_catalog(self) -> dict[str, tuple[str, pa.Schema]]:
        if self._catalog is None:
            found: dict[str, list[tuple[Reader, tuple[str, pa.Schema, int]]]] = {}
            for reader in self._readers:
                for stream, got in _catalog_of(reader).items():
                    found.setdefault(stream, []).append((reader, got))
            where: dict[str, list[tuple[Reader, int]]] = {}
            self._catalog = {stream: _merge(stream, entries, where)
                             for stream, entries in found.items()}  # fmt: skip
            self._where = where
        return self._catalog

    def stream(self, name: str) -> StreamInfo:
        """One stream's :class:`StreamInfo`.

        Raises:
            UnknownStream: the run has no stream ``name`` (the message lists those it has).
        """
        self._entry(name)  # names the streams there are when there is no such one
        streams = self.streams
        info = streams.get(name) if isinstance(name, str) else None
        if info is None:
            raise UnknownStream(f"run {self.path} has no stream {describe_value(name)}; its "
                                f"streams are {sorted(streams)}")  # fmt: skip
        return info

    # --- tables ---
    def table(self, stream: str, columns: Sequence[str] | None = None, *,
              start: TimeLike | None = None, stop: TimeLike | None = None,
              part: int | None = None) -> pa.Table:  # fmt: skip
        """A table stream's rows as a ``pyarrow.Table``: every part and version joined
        (types promoted as ``pyarrow.concat_tables(promote_options="permissive")``
        does), ``columns`` only (in that order; a part lacking one gives nulls), the rows
        whose ``timestamp_ns`` is in ``[start, stop)`` (ints in ns, ``numpy.datetime64``,
        ``datetime``, naive meaning UTC), or of one ``part`` (an index into
        ``streams[stream].parts``).

        Raises:
            UnknownStream: no such stream. ConfigError: a frame stream, an unknown
            column, a bad time or part. ReadError: parts whose types do not join.
        """
        kind, schema = self._entry(stream)
        check_stream_kind(kind, "table", stream, str(self.path))
        wanted = check_columns(stream, schema, columns, str(self.path))
        low, high = to_ns(start, "start"), to_ns(stop, "stop")
        reading = _with_time(wanted, low, high, stream, schema)
        tables = []
        for reader, local in self._places(stream, part):
            with read_errors(f"stream {stream!r} of {reader.path}"):
                table = _part_table(reader, stream, reading, local, low, high)
            if low is not None or high is not None:
                table = pa.Table.from_batches(
                    [in_range(b, low, high, stream) for b in table.to_batches()], table.schema
                )
            tables.append(select(table, wanted, schema))
        return _join(tables, stream, schema, wanted)

    def polars(self, stream: str, columns: Sequence[str] | None = None, *,
               start: TimeLike | None = None, stop: TimeLike | None = None,
               part: int | None = None) -> polars.DataFrame:  # fmt: skip
        """:meth:`table` as a ``polars.DataFrame`` (Parquet: read by polars itself)."""
        import polars as pl

        kind, schema = self._entry(stream)
        wanted = check_columns(stream, schema, columns, str(self.path))
        places = self._places(stream, part)
        direct = getattr(places[0][0], "polars", None)
        if kind == "table" and direct is not None and start is None and stop is None \
                and len({reader for reader, _ in places}) == 1:  # fmt: skip
            with read_errors(f"stream {stream!r} of {places[0][0].path}"):
                got = direct(stream, wanted, part)
            if got is not None:
                return got  # type: ignore[no-any-return]
        frame = pl.from_arrow(self.table(stream, columns, start=start, stop=stop, part=part))
        assert isinstance(frame, pl.DataFrame)
        return frame

    def iter_batches(self, stream: str, columns: Sequence[str] | None = None, *,
                     batch_rows: int = BATCH_ROWS, start: TimeLike | None = None,
                     stop: TimeLike | None = None) -> Iterator[pa.RecordBatch]:  # fmt: skip
        """A table stream's rows as ``pyarrow.RecordBatch``es of at most ``batch_rows``,
        read as they are needed (a table larger than memory), part after part (each
        batch has its part's types); ``columns``, ``start`` and ``stop`` as for
        :meth:`table`."""
        kind, schema = self._entry(stream)
        check_stream_kind(kind, "table", stream, str(self.path))
        wanted = check_columns(stream, schema, columns, str(self.path))
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise ConfigError(f"batch_rows must be an int >= 1, got {describe_value(batch_rows)}")
        low, high = to_ns(start, "start"), to_ns(stop, "stop")
        reading = _with_time(wanted, low, high, stream, schema)
        return self._batches(stream, schema, reading, wanted, batch_rows, low, high)

    def _batches(self, stream: str, schema: pa.Schema, reading: list[str] | None,
                 wanted: list[str] | None, batch_rows: int, low: int | None,
                 high: int | None) -> Iterator[pa.RecordBatch]:  # fmt: skip
        for reader, local in self._places(stream, None):
            if reader.format == "parquet":
                batches = reader.iter_batches(stream, reading, batch_rows, local,  # type: ignore[call-arg]
                                              start=low, stop=high)  # fmt: skip
            else:
                batches = reader.iter_batches(stream, reading, batch_rows, local)
            while True:
                self._check_open()  # before the reader touches its files: closed with the run
                with read_errors(f"stream {stream!r} of {reader.path}"):
                    batch = next(batches, None)
                if batch is None:
                    break
                batch = in_range(batch, low, high, stream)
                if batch.num_rows:
                    yield select(batch, wanted, schema)

    def _places(self, stream: str, part: int | None) -> list[tuple[Reader, int]]:
        self._entry(stream)
        places = self._where[stream]
        if part is None:
            return places
        if (
            isinstance(part, bool)
            or not isinstance(part, int)
            or not -len(places) <= part < len(places)
        ):
            raise ConfigError(f"stream {stream!r} has {len(places)} part(s); part must be an "
                              f"index into them, got {describe_value(part)}")  # fmt: skip
        return [places[part]]

    # --- frames ---
    def frames(self, stream: str) -> FrameArray:
        """A frame stream as a lazy :class:`FrameArray` (every version joined)."""
        kind, _ = self._entry(stream)
        check_stream_kind(kind, "frames", stream, str(self.path))
        readers: list[Reader] = []
        for reader, _ in self._places(stream, None):
            if reader not in readers:
                readers.append(reader)
        sources = [reader.frames(stream) for reader in readers]
        shapes = {tuple(s.shape[1:]) for s in sources}
        if len(shapes) > 1:
            raise ReadError(f"run {self.path}: stream {stream!r} has frames of several shapes "
                            f"across its files: {sorted(shapes)}")  # fmt: skip
        source = sources[0] if len(sources) == 1 else ChainedFrames(sources)
        return FrameArray(source, stream, check_open=self._check_open)


def _entry_of(reader: Reader, stream: str) -> tuple[str, pa.Schema, int] | None:
    """One stream's (kind, schema, number of parts) in one reader, or ``None``."""
    one = getattr(reader, "catalog_entry", None)
    if one is not None:
        return one(stream)  # type: ignore[no-any-return]
    return _catalog_of(reader).get(stream)


def _merge(stream: str, found: Sequence[tuple[Reader, tuple[str, pa.Schema, int]]],
           where: dict[str, list[tuple[Reader, int]]]) -> tuple[str, pa.Schema]:  # fmt: skip
    """A stream's kind (its first version's) and schema (every version's fields, first
    seen first) over the readers that hold it; records its places in ``where``."""
    places = where[stream] = []
    fields: dict[str, pa.Field] = {}
    for reader, (_, schema, parts) in found:
        places.extend((reader, i) for i in range(parts))
        for field in schema:
            fields.setdefault(field.name, field)
    return found[0][1][0], pa.schema(list(fields.values()))


def _catalog_of(reader: Reader) -> dict[str, tuple[str, pa.Schema, int]]:
    """Stream -> (kind, schema, number of parts) of one reader."""
    cheap = getattr(reader, "catalog", None)
    if cheap is not None:
        return cheap()  # type: ignore[no-any-return]
    return {name: (info.kind, info.schema, len(info.parts))
            for name, info in reader.streams().items()}  # fmt: skip


def _with_time(wanted: list[str] | None, low: int | None, high: int | None, stream: str,
               schema: pa.Schema) -> list[str] | None:  # fmt: skip
    """The columns to read: ``wanted``, plus the time column a range needs."""
    if low is None and high is None:
        return wanted
    column = time_column(schema)
    if column is None:
        raise ConfigError(f"stream {stream!r} has no column {TIME_COLUMN!r}: a time range "
                          f"needs one; its columns are {schema.names}")  # fmt: skip
    if wanted is None or column in wanted:
        return wanted
    return [*wanted, column]


def _part_table(reader: Reader, stream: str, columns: list[str] | None, part: int,
                low: int | None, high: int | None) -> pa.Table:  # fmt: skip
    whole: Any = getattr(reader, "table", None)
    if whole is not None:
        table = whole(stream, columns, low, high, part)
        if table is not None:
            return table
    batches = list(reader.iter_batches(stream, columns, _WHOLE, part))
    schema = _entry_of(reader, stream)[1]  # type: ignore[index]
    if not batches:
        return pa.schema([schema.field(n) for n in columns or schema.names]).empty_table()
    if all(b.schema == batches[0].schema for b in batches):
        return pa.Table.from_batches(batches)
    return _join([pa.Table.from_batches([b]) for b in batches], stream, schema, columns)


def _join(tables: list[pa.Table], stream: str, schema: pa.Schema,
          wanted: list[str] | None) -> pa.Table:  # fmt: skip
    if len(tables) == 1:
        return tables[0]
    try:
        joined = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ReadError(
            f"stream {stream!r}: its parts' types do not join into one table "
            f"({exc}); read them one by one with table(..., part=i)"
        ) from exc
    names = wanted or [n for n in schema.names if n in joined.column_names]
    return joined.select(names) if names != joined.column_names else joined
