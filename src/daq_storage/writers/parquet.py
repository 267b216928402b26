"""Parquet: one file per stream, large row groups, a complete file after every row group.

A Parquet file is readable only through its footer, which lists every row group and
is normally written once, at close. Here every row group is committed on its own:

1. the row group is encoded by a short-lived ``pyarrow.parquet.ParquetWriter`` into
   memory; pyarrow writes files only from offset 0, so the absolute file offsets in
   its metadata are shifted to where the row group will sit in the file;
2. the row-group bytes and a new footer (the stream's key-value metadata, every row
   group so far; merged by pyarrow's ``FileMetaData.append_row_groups``) are written
   over the previous footer;
3. the new footer and the length of the data before it are saved, with a checksum,
   in a hidden recovery file next to the Parquet file (``.s.parquet.recovery``),
   removed at close.

Between row groups the file is therefore a complete Parquet file holding every row
group written so far. A process killed *during* step 2 leaves an incomplete tail;
:func:`repair_parquet` cuts it off and restores the last footer from the recovery file
(a recovery file left in a directory also stops ``polars.read_parquet(directory)``,
which reads every file in it; a glob such as ``directory/*.parquet`` is unaffected). A
file that is complete is never cut, whatever its recovery file says (see
``_parquet_recovery``). This guards against a killed process; ``flush(durable=True)``
also fsyncs the files (Parquet and recovery) and the directory, against power loss.

The footer grows with every row group and is rewritten (twice: file and recovery
file) after each one, so a stream continues in a new part file
(``s__part0002.parquet``, ...) once its footer reaches ``max_footer_bytes``.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from daq_storage.errors import DaqStorageError, StorageIOError, UnsupportedData
from daq_storage.location import S3Location, S3Options, parse_location
from daq_storage.writers._arrow_batches import ArrowBatchWriter
from daq_storage.writers._base import WriterOptions, finish_all, pwrite_all, storage_errors
from daq_storage.writers._parquet_footer import FooterShift, check_shift
from daq_storage.writers._parquet_options import Codec, ParquetOptions
from daq_storage.writers._parquet_recovery import (
    MAGIC,
    read_footer,
    recovery_path,
    repair_parquet,
    repair_parquet_file,
    write_recovery,
)

__all__ = ["Codec", "ParquetWriter", "repair_parquet", "repair_parquet_file"]


def _footer_block(metadata: Any) -> bytes:
    """``metadata`` as the end of a Parquet file: Thrift footer, its length, magic."""
    sink = pa.BufferOutputStream()
    metadata.write_metadata_file(sink)  # magic + footer + length + magic
    return bytes(sink.getvalue().to_pybytes()[len(MAGIC) :])


def _raise(error: Exception) -> None:
    raise error


# ---------------------------------------------------------------------- the writer
@dataclass
class _Open:
    stream: str
    path: Path
    fd: int
    recovery_fd: int  # the recovery file, rewritten after every row group
    schema: pa.Schema  # the batches' schema
    header: pa.Buffer  # an empty Parquet file carrying the file's key-value metadata
    metadata: dict[str, str]  # the key-value metadata in ``header``
    data_end: int  # where the footer starts: PAR1 and every row group before it
    footer: bytes  # the committed footer block (Thrift, length, magic)
    part_keys: dict[str, str]  # daq_storage.part_of / first_row of a later part
    row_groups: Any = None  # FileMetaData of every committed row group
    intact: bool = True  # False when a failed write could not be undone (see recovery file)
    pending: list[pa.RecordBatch] = field(default_factory=list)
    pending_rows: int = 0
    pending_bytes: int = 0


class ParquetWriter(ArrowBatchWriter):
    """Parquet files, one per stream, in the directory ``path``.

    Batches are buffered into row groups of ``row_group_size`` rows (large groups
    write faster and compress better; ``row_group_bytes`` bounds their memory). After
    every row group the file is a complete Parquet file with all rows written so far:
    :meth:`visible` counts them; buffered rows are accepted, not visible, until their
    row group is written, at the latest by :meth:`flush` (the one point where the
    caller makes everything visible: the writer keeps no timer) or :meth:`close`. A
    killed process loses only the rows still buffered; if it dies while a row group is
    being written, :func:`repair_parquet` restores the file to the row group before.
    A call the disk has no room for is refused up front, as in every writer, although
    its rows would only be buffered. A row group the disk refuses all the same (another
    process filled it) leaves the file as it was and its rows buffered, for a later
    :meth:`flush` (at :meth:`close`, the error says they are lost); the ``write_batch``
    call that filled the group is refused, and its own rows are not taken. Frames are
    stored as a ``fixed_shape_tensor`` column ``frame`` beside ``timestamp_ns`` and
    ``frame_number``.

    Schema evolution: a Parquet file has one schema, so every kind of change (a
    widened type, a new or missing column, an incompatible type) continues the stream
    in a new part file, ``<stream>__part0002.parquet``, ``__part0003``, ..., as does a
    footer that has grown to ``max_footer_bytes``. Each later part's key-value metadata
    (footer and Arrow schema) records ``daq_storage.part_of`` (the stream's name) and
    ``daq_storage.first_row`` (the stream's index of its first row), JSON text as all
    metadata; :meth:`describe` lists the parts. Each part reads on its own
    (``pl.read_parquet``, ``pq.read_table``); ``pyarrow.dataset`` reads them together,
    given the unified schema where it changed.

    ``flush(durable=True)`` fsyncs the open files and their recovery files, the files
    completed since the last durable flush, and the directory.

    On an object store (``path`` an ``s3://bucket/prefix`` URL, or an
    :class:`~daq_storage.location.S3Location`), which has no appends, each flush
    uploads each stream's new rows as one complete Parquet file,
    ``<prefix>/<stream>/part-000001.parquet``, ``part-000002``, ... (a stream's prefix
    reads as one dataset: ``pyarrow.dataset.dataset``, ``polars.scan_parquet(".../*.parquet")``);
    rows are also uploaded once ``row_group_size`` rows or ``row_group_bytes`` are
    pending. A flush with no new rows uploads nothing. See ``_object_parts`` for the
    layout, the metadata of the parts and what a failed upload leaves.

    Args:
        path: output directory, or an ``s3://bucket/prefix`` URL.
        compression: ``snappy`` (default), ``gzip``, ``zstd``, ``lz4``, ``brotli`` or
            ``none`` (``[storage] compression``).
        compression_level: codec level (``gzip`` 1-9, ``zstd`` up to 22, ``lz4`` 1-12,
            ``brotli`` 0-11), ``None`` for the codec's default
            (``[storage] compression_level``).
        row_group_size: rows per row group (batches are not split, so a group can hold
            up to one batch more; ``[storage] chunk_size``).
        row_group_bytes: a row group is also written once this many payload bytes are
            buffered (default 64 MiB: bounds the memory taken by frame streams; row
            groups are encoded in memory, and much larger ones wrote slower here).
        max_footer_bytes: footer size at which the stream continues in a new part file.
            The footer (about 100 bytes per column per row group) is rewritten after
            each row group, so this bounds that cost in long runs.
        storage_options: how to reach an ``s3://`` URL (an
            :class:`~daq_storage.location.S3Options` or a dict of its fields; unset
            fields from the ``AWS_*`` variables and profiles).
    """

    name: ClassVar[str] = "parquet"
    supports_object_storage: ClassVar[bool] = True
    suffixes: ClassVar[tuple[str, ...]] = (".parquet",)
    supports_frames: ClassVar[bool] = True
    supports_tables: ClassVar[bool] = True
    mimetype: ClassVar[str] = "application/x-parquet"
    on_widening: ClassVar[str] = "new_part"
    on_new_columns: ClassVar[str] = "new_part"
    on_incompatible: ClassVar[str] = "new_part"
    Options: ClassVar[type[WriterOptions]] = ParquetOptions
    config_keys: ClassVar[Mapping[str, str]] = {
        "compression": "compression",
        "compression_level": "compression_level",
        "chunk_size": "row_group_size",
    }

    def __init__(
        self,
        path: str | os.PathLike[str] | S3Location,
        *,
        compression: Codec = "snappy",
        compression_level: int | None = None,
        row_group_size: int = 1_000_000,
        row_group_bytes: int = 64 << 20,
        max_footer_bytes: int = 1 << 20,
        storage_options: S3Options | Mapping[str, Any] | None = None,
    ) -> None:
        options = self.validate_options(
            compression=compression,
            compression_level=compression_level,
            row_group_size=row_group_size,
            row_group_bytes=row_group_bytes,
            max_footer_bytes=max_footer_bytes,
            storage_options=storage_options,
        )
        assert isinstance(options, ParquetOptions)
        super().__init__(parse_location(path, storage_options))
        self.options = options
        self.compression = options.compression
        self.compression_level = options.compression_level
        self.row_group_size = options.row_group_size
        self.row_group_bytes = options.row_group_bytes
        self.max_footer_bytes = options.max_footer_bytes
        self._open: dict[str, _Open] = {}
        self._schemas_checked: dict[str, pa.Schema] = {}  # per stream: the last one Parquet takes
        #: Errors of work a write call did after storing its rows (metadata a footer
        #: could not take, a part that could not be closed): raised by the next flush.
        self._deferred: list[Exception] = []

    # ------------------------------------------------------------------ object stores
    def _encode_part(
        self, stream: str, schema: pa.Schema, batches: Sequence[pa.RecordBatch]
    ) -> pa.Buffer:
        sink = pa.BufferOutputStream()
        table = pa.Table.from_batches(batches, schema=schema)
        with self._encoding_errors(stream), pq.ParquetWriter(sink, schema, **self._options()) as w:
            w.write_table(table, row_group_size=self.row_group_size)
        return sink.getvalue()

    def _part_limits(self) -> tuple[int, int]:
        return self.row_group_size, self.row_group_bytes

    # ------------------------------------------------------------------ contract
    @property
    def _compression(self) -> str | None:
        return None if self.compression == "none" else self.compression

    def _unseen(self, stream: str) -> int:
        opened = self._open.get(stream)
        return 0 if opened is None else opened.pending_rows

    def _open_fds(self) -> list[int]:
        return [fd for opened in self._open.values() for fd in (opened.fd, opened.recovery_fd)]

    def _chunk_shape(self, stream: str, frames: bool) -> tuple[int, ...]:
        """The row-group size aimed at (batches are not split; a flush writes what is
        buffered)."""
        if not frames:
            return (self.row_group_size,)
        dtype, shape = self._frame_specs[stream]
        frame_bytes = math.prod(shape) * dtype.itemsize + 16  # + timestamp, frame number
        return (min(self.row_group_size, -(-self.row_group_bytes // frame_bytes)), *shape)

    def _check_batch(self, stream: str, batch: Any) -> pa.RecordBatch:
        batch = super()._check_batch(stream, batch)
        for declared, column in zip(batch.schema, batch.columns, strict=True):
            if not declared.nullable and column.null_count:  # Parquet would refuse the group
                raise UnsupportedData(
                    f"stream {stream!r} column {declared.name!r} is declared non-nullable but "
                    f"holds {column.null_count} nulls"
                )
        return batch

    def _check_table_schema(self, stream: str, schema: pa.Schema) -> None:
        """Refuse a type Parquet has no mapping for (intervals of months, days and
        nanoseconds, unions, run-end encoded arrays) before anything is written."""
        checked = self._schemas_checked.get(stream)
        if checked is not None and checked.equals(schema):
            return
        with self._encoding_errors(stream):
            pq.ParquetWriter(pa.BufferOutputStream(), schema.remove_metadata(),
                             **self._options()).close()  # fmt: skip
        self._schemas_checked[stream] = schema

    # ------------------------------------------------------------------ files
    def _writer_for(self, stream: str, schema: pa.Schema, new_part: bool) -> tuple[_Open, bool]:
        """The stream's open file, or a new one (and whether it is new)."""
        current = self._open.get(stream)
        if current is not None and not new_part and current.schema.equals(schema):
            return current, False
        if current is not None:  # a new part: this one's rows written and the file closed
            self._drain(current, "(they stay buffered; the call that starts a new part was "
                        "not taken)")  # fmt: skip
            del self._open[stream]
            try:
                self._finish(current)
            except Exception as exc:  # its rows are in it: the new part still starts
                self._deferred.append(exc)
        path = self._stream_path(stream, new_part=stream in self._part_index)
        try:
            part_keys = self._part_keys(stream)
            metadata = {**self._metadata_for(stream, schema), **part_keys}
            header = self._empty_file(stream, schema, metadata)
        except BaseException:
            self._forget_file(stream, path)
            raise
        fd, recovery_fd = self._create(stream, path, header)
        opened = _Open(stream, path, fd, recovery_fd, schema, header, metadata, len(MAGIC),
                       header.to_pybytes()[len(MAGIC) :], part_keys)  # fmt: skip
        self._open[stream] = opened
        return opened, True

    def _check_new_file(self, stream: str, path: Path) -> None:
        if recovery_path(path).exists():
            raise StorageIOError(errno.EEXIST, _waiting_for_repair(path), str(path))
        super()._check_new_file(stream, path)

    def _create(self, stream: str, path: Path, header: pa.Buffer) -> tuple[int, int]:
        """Start ``path`` as an empty Parquet file and its recovery file (both new: the
        recovery file first, ``O_EXCL``; the Parquet file published with its header, see
        :meth:`_create_file`); their fds."""
        recovery = recovery_path(path)
        try:
            recovery_fd = os.open(recovery, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                  0o666)  # fmt: skip
        except FileExistsError:
            self._forget_file(stream, path)
            raise StorageIOError(errno.EEXIST, _waiting_for_repair(path), str(path)) from None
        except OSError as exc:
            self._forget_file(stream, path)
            raise StorageIOError(exc.errno, f"cannot create Parquet recovery file: "
                                 f"{exc.strerror}", str(recovery)) from exc  # fmt: skip

        def prepare(fd: int) -> None:
            # Before the file has its name: no kill leaves a Parquet file without its
            # header. (Its recovery record follows: repair keeps a file whose recovery
            # file is still empty, and drops an empty recovery file without its file.)
            with storage_errors(path, "cannot create Parquet file"):
                # Held while writing: repair_parquet refuses a file a live writer owns.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                pwrite_all(fd, [header], 0)

        try:
            fd = self._create_file(stream, path, prepare)
        except BaseException:
            os.close(recovery_fd)
            recovery.unlink(missing_ok=True)
            raise
        try:
            with storage_errors(path, "cannot create Parquet file"):
                write_recovery(recovery_fd, len(MAGIC), header.to_pybytes()[len(MAGIC) :])
        except BaseException:
            os.close(recovery_fd)
            recovery.unlink(missing_ok=True)
            self._abandon_file(stream, path, fd)
            raise
        return fd, recovery_fd

    def _empty_file(self, stream: str, schema: pa.Schema, metadata: dict[str, str]) -> pa.Buffer:
        full = schema.with_metadata(metadata)
        sink = pa.BufferOutputStream()
        with self._encoding_errors(stream):
            pq.ParquetWriter(sink, full, **self._options()).close()
        return sink.getvalue()

    def _options(self) -> dict[str, Any]:
        return {"compression": self.compression, "compression_level": self.compression_level}

    @contextmanager
    def _encoding_errors(self, stream: str) -> Iterator[None]:
        try:
            yield
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise UnsupportedData(
                f"stream {stream!r}: Parquet cannot store this data: {exc}"
            ) from exc

    def _drop_empty(self, target: _Open) -> None:
        """Remove a file started by a write that was refused: it holds no row."""
        del self._open[target.stream]
        try:
            os.close(target.recovery_fd)
            recovery_path(target.path).unlink(missing_ok=True)
        except OSError:
            pass  # the error that brought us here is the one to report
        self._abandon_file(target.stream, target.path, target.fd)

    # ------------------------------------------------------------------ writing
    def _write(self, stream: str, batch: pa.RecordBatch, *, new_part: bool) -> None:
        nbytes = batch.nbytes
        # Buffered rows need the disk later: a call the disk has no room for is refused
        # now, while nothing of it is taken (the row group is checked again).
        current = self._open.get(stream)
        self._ensure_room(nbytes, f"stream {stream!r}", self.path if current is None
                          else current.path)  # fmt: skip
        target, fresh = self._writer_for(stream, batch.schema, new_part)
        target.pending.append(batch)
        target.pending_rows += batch.num_rows
        target.pending_bytes += nbytes
        if (
            target.pending_rows >= self.row_group_size
            or target.pending_bytes >= self.row_group_bytes
        ):
            try:
                self._drain(target, f"(this call's {batch.num_rows} rows were not taken; rows "
                            "buffered before them stay buffered for the next flush)")  # fmt: skip
            except BaseException:  # the call is refused: its rows leave the buffer
                target.pending.pop()
                target.pending_rows -= batch.num_rows
                target.pending_bytes -= nbytes
                if fresh and target.row_groups is None and not target.pending:
                    self._drop_empty(target)
                raise
            if len(target.footer) >= self.max_footer_bytes:  # the next write: a new part
                del self._open[stream]
                try:
                    self._finish(target)
                except Exception as exc:  # the call's rows are stored: said at the next flush
                    self._deferred.append(exc)
        self._stats.bytes_written += nbytes

    def _drain(self, target: _Open, after: str, *, headroom: bool = True) -> None:
        """Write the buffered rows as one row group. When that fails, nothing changed:
        the file keeps its row groups and the rows stay buffered (the error names them,
        then says ``after``)."""
        if not target.pending_rows:
            target.pending = []  # empty batches: the file already has the schema
            return
        table = pa.Table.from_batches(target.pending, schema=target.schema)
        what = f"{target.pending_rows} buffered rows of stream {target.stream!r} {after}"
        data, row_group = self._encode(target, table)
        unstored = self._commit(target, data, row_group, what, headroom=headroom)
        target.pending, target.pending_rows, target.pending_bytes = [], 0, 0
        try:
            self._record(target)
        except DaqStorageError as exc:  # the rows are in the file: said at the next flush
            self._deferred.append(exc)
        if unstored is not None:
            self._deferred.append(unstored)

    def _encode(self, target: _Open, table: pa.Table) -> tuple[pa.Buffer, Any]:
        """``table`` as one row group's bytes, and its metadata with the file offsets it
        will have at ``target.data_end``."""
        sink = pa.BufferOutputStream()
        collected: list[Any] = []
        with self._encoding_errors(target.stream):
            # store_schema=False: the Arrow schema goes into the merged footer only.
            writer = pq.ParquetWriter(sink, target.schema, store_schema=False,
                                      metadata_collector=collected, **self._options())  # fmt: skip
            try:
                writer.write_table(table, row_group_size=max(1, table.num_rows))
            finally:
                writer.close()
        encoded = sink.getvalue()
        footer_length = int.from_bytes(encoded[-8:-4].to_pybytes(), "little")
        footer_start = len(encoded) - 8 - footer_length
        delta = target.data_end - len(MAGIC)
        try:
            shifted = FooterShift(encoded[footer_start:-8].to_pybytes(), delta).run()
            row_group = read_footer(shifted + len(shifted).to_bytes(4, "little") + MAGIC)
            check_shift(collected[0], row_group, delta)
        except (ValueError, pa.ArrowException) as exc:
            raise StorageIOError(
                errno.EIO,
                f"cannot place a row group of stream {target.stream!r}: unexpected Parquet "
                f"footer from pyarrow {pa.__version__} ({exc}); nothing was written",
                str(target.path),
            ) from exc
        return encoded.slice(len(MAGIC), footer_start - len(MAGIC)), row_group

    def _commit(
        self,
        target: _Open,
        data: pa.Buffer | bytes,
        row_group: Any,
        what: str,
        *,
        headroom: bool = True,
    ) -> UnsupportedData | None:
        """Write ``data`` and a footer listing every row group (and ``row_group``) over
        the current footer; :meth:`_record` then saves the new state. With ``headroom``
        the disk is checked up front for room to spare (see :meth:`_ensure_room`);
        without (the last write of a file being closed: nothing may come later), the
        write is tried and a failure puts the previous footer back.

        Metadata that cannot go into the footer never costs the rows: they are written
        with the metadata the file holds, and the error is returned, to be raised once
        the rows are recorded.
        """
        header, metadata, unstored, merged = target.header, target.metadata, None, None
        try:
            wanted = self._wanted_metadata(target)
            if wanted != target.metadata:  # set_metadata since the header was made
                candidate = self._empty_file(target.stream, target.schema, wanted)
                merged = read_footer(candidate)  # a footer pyarrow cannot read is refused
                header, metadata = candidate, wanted
        except (DaqStorageError, pa.ArrowException) as exc:
            unstored = UnsupportedData(
                f"stream {target.stream!r}: metadata not stored in {target.path.name} ({exc}); "
                "its rows were"
            )
        if merged is None:
            merged = read_footer(header)
        if target.row_groups is not None:
            merged.append_row_groups(target.row_groups)
        if row_group is not None:
            merged.append_row_groups(row_group)
        block = _footer_block(merged)
        if headroom:
            self._ensure_room(len(data) + len(block), what, target.path)
        old_end = target.data_end + len(target.footer)
        with storage_errors(target.path, f"cannot write {what}; the file keeps every "
                            "row group before"):  # fmt: skip
            try:
                end = pwrite_all(target.fd, [data, block], target.data_end)
                if end < old_end:  # a shorter footer (metadata replaced by shorter values)
                    os.ftruncate(target.fd, end)
            except OSError:
                self._restore(target)
                raise
        target.data_end += len(data)
        target.footer = block
        target.row_groups = merged
        target.header, target.metadata = header, metadata  # only once they are in the file
        return unstored

    def _record(self, target: _Open) -> None:
        """Save the committed state in the recovery file."""
        with storage_errors(recovery_path(target.path), "cannot update Parquet recovery file"):
            write_recovery(target.recovery_fd, target.data_end, target.footer)

    def _wanted_metadata(self, target: _Open) -> dict[str, str]:
        """The key-value metadata ``target``'s footer should hold now."""
        return {**self._metadata_for(target.stream), **target.part_keys}

    def _rewrite_footer(self, target: _Open, *, headroom: bool = True) -> None:
        """Put metadata set since the last footer into the file."""
        if self._wanted_metadata(target) != target.metadata:
            unstored = self._commit(target, b"", None, f"the footer of {target.path.name}",
                                    headroom=headroom)  # fmt: skip
            self._record(target)
            if unstored is not None:
                raise unstored

    def _restore(self, target: _Open) -> None:
        """Put the committed footer back after a failed write (it fits: it was there)."""
        try:
            os.ftruncate(target.fd, target.data_end)
            pwrite_all(target.fd, [target.footer], target.data_end)
        except OSError:
            target.intact = False  # repair_parquet restores it from the recovery file

    # ------------------------------------------------------------------ public API
    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        """File key-value metadata (JSON values), also in the Arrow schema of the file,
        beside the stream's own metadata (the schema metadata of its first batch and
        ``metadata_changes``, see :meth:`Writer.write_batch`).

        Files already open get it with their next footer: the next row group,
        :meth:`flush` or :meth:`close` (as do changes of the stream's metadata).
        """
        super().set_metadata(key, value, stream=stream)

    def flush(self, *, durable: bool = False) -> None:
        """Write buffered rows as row groups and late metadata into the footers; every
        file is then complete and readable, and :meth:`visible` equals :meth:`accepted`
        (one stream's failure stops no other; rows the disk refused stay buffered).
        ``durable=True`` then fsyncs the files and the directory."""
        self._check_open()
        if self._remote is not None:  # uploads are durable once confirmed
            finish_all([functools.partial(self._flush_remote, self._remote),
                        self._raise_deferred])  # fmt: skip
            return
        steps: list[Callable[[], object]] = [
            functools.partial(self._flush_one, opened) for opened in self._open.values()
        ]
        if durable:
            steps.append(self._sync)
        steps.append(self._raise_deferred)
        finish_all(steps)

    def _flush_one(self, opened: _Open) -> None:
        self._drain(opened, "(they stay buffered: the next flush writes them)")
        self._rewrite_footer(opened)

    def _raise_deferred(self) -> None:
        errors, self._deferred = self._deferred, []
        finish_all(functools.partial(_raise, error) for error in errors)

    def _finish(self, opened: _Open) -> None:
        try:
            # The file's last writes: tried without the headroom kept for later ones.
            self._drain(opened, "(lost: the file is being closed)", headroom=False)
            self._rewrite_footer(opened, headroom=False)
        finally:
            with storage_errors(opened.path, "cannot close Parquet file"):
                try:
                    os.close(opened.fd)
                finally:
                    os.close(opened.recovery_fd)
                    self._completed(opened.path)
                if opened.intact:
                    recovery_path(opened.path).unlink(missing_ok=True)

    def _close(self) -> None:
        finish_all([super()._close, self._raise_deferred])


def _waiting_for_repair(path: Path) -> str:
    return (
        f"{path.name} has a recovery file: its writer is still running or did not close; "
        "run daq_storage.writers.parquet.repair_parquet on it or write elsewhere"
    )
