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
``_parquet_recovery``). Nothing is fsynced: this guards against a killed process, not
against power loss.

The footer grows with every row group and is rewritten (twice: file and recovery
file) after each one, so a stream continues in a new part file
(``s__part0001.parquet``, ...) once its footer reaches ``max_footer_bytes``.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from daq_storage.errors import ConfigError, DaqStorageError, StorageIOError, UnsupportedData
from daq_storage.writers._base import finish_all, pwrite_all, storage_errors
from daq_storage.writers._parquet_footer import FooterShift, check_shift
from daq_storage.writers._parquet_recovery import (
    MAGIC,
    read_footer,
    recovery_path,
    repair_parquet,
    repair_parquet_file,
    write_recovery,
)
from daq_storage.writers._per_stream import ArrowBatchWriter

__all__ = ["ParquetWriter", "repair_parquet", "repair_parquet_file"]

_CODECS = ("none", "snappy", "gzip", "zstd", "lz4", "brotli")
_CODECS_WITHOUT_LEVEL = ("none", "snappy")


def _footer_block(metadata: Any) -> bytes:
    """``metadata`` as the end of a Parquet file: Thrift footer, its length, magic."""
    sink = pa.BufferOutputStream()
    metadata.write_metadata_file(sink)  # magic + footer + length + magic
    return bytes(sink.getvalue().to_pybytes()[len(MAGIC) :])


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
    row_groups: Any = None  # FileMetaData of every committed row group
    intact: bool = True  # False when a failed write could not be undone (see recovery file)
    pending: list[pa.RecordBatch] = field(default_factory=list)
    pending_rows: int = 0
    pending_bytes: int = 0
    oldest: float = 0.0  # monotonic time of the oldest buffered batch


class ParquetWriter(ArrowBatchWriter):
    """Parquet files, one per stream, in the directory ``path``.

    Batches are buffered into row groups of ``row_group_size`` rows (large groups
    write faster and compress better) but never held longer than ``flush_interval_s``
    (checked at each write: a stream that goes quiet keeps its rows until its next
    write, :meth:`flush` or :meth:`close`; there is no timer thread). After every row group
    the file is a complete Parquet file with all rows written so far, so a killed
    process loses only the rows still buffered; if it dies while a row group is being
    written, :func:`repair_parquet` restores the file to the row group before. Frames
    are stored as a ``fixed_shape_tensor`` column ``frame`` beside ``timestamp_ns``
    and ``frame_number``. A schema change continues the stream in a new part file, as
    does a footer that has grown to ``max_footer_bytes``.

    Args:
        path: output directory.
        compression: ``snappy`` (default), ``gzip``, ``zstd``, ``lz4``, ``brotli`` or ``none``.
        compression_level: codec level (``gzip`` 1-9, ``zstd`` up to 22, ``lz4`` 1-12,
            ``brotli`` 0-11), ``None`` for the codec's default.
        row_group_size: rows per row group (batches are not split, so a group can hold
            up to one batch more).
        row_group_bytes: a row group is also written once this many payload bytes are
            buffered (default 64 MiB: bounds the memory taken by frame streams; row
            groups are encoded in memory, and much larger ones wrote slower here).
        flush_interval_s: longest time a row stays buffered in memory.
        max_footer_bytes: footer size at which the stream continues in a new part file.
            The footer (about 100 bytes per column per row group) is rewritten after
            each row group, so this bounds that cost in long runs.
    """

    name: ClassVar[str] = "parquet"
    suffixes: ClassVar[tuple[str, ...]] = (".parquet",)
    supports_frames: ClassVar[bool] = True
    supports_tables: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compression: str = "snappy",
        compression_level: int | None = None,
        row_group_size: int = 1_000_000,
        row_group_bytes: int = 64 << 20,
        flush_interval_s: float = 1.0,
        max_footer_bytes: int = 1 << 20,
    ) -> None:
        if compression not in _CODECS:
            raise ConfigError(f"parquet compression {compression!r} is not one of {_CODECS}")
        if compression_level is not None:
            _check_level(compression, compression_level)
        for name, value in (
            ("row_group_size", row_group_size),
            ("row_group_bytes", row_group_bytes),
            ("max_footer_bytes", max_footer_bytes),
        ):
            if value < 1:
                raise ConfigError(f"parquet {name} must be >= 1, got {value}")
        if flush_interval_s < 0:
            raise ConfigError(f"parquet flush_interval_s must be >= 0, got {flush_interval_s}")
        super().__init__(path)
        self.compression = compression
        self.compression_level = compression_level
        self.row_group_size = row_group_size
        self.row_group_bytes = row_group_bytes
        self.flush_interval_s = flush_interval_s
        self.max_footer_bytes = max_footer_bytes
        self._open: dict[str, _Open] = {}

    # ------------------------------------------------------------------ files
    def _writer_for(self, stream: str, schema: pa.Schema) -> _Open:
        current = self._open.get(stream)
        if current is not None and current.schema.equals(schema):
            return current
        if current is not None:  # schema changed: finish this part, start the next
            del self._open[stream]
            self._finish(current)
        metadata = self._metadata_for(stream, schema)
        header = self._empty_file(stream, schema, metadata)
        path = self._stream_path(stream, new_part=stream in self._parts)
        fd, recovery_fd = self._create(stream, path, header)
        opened = _Open(stream, path, fd, recovery_fd, schema, header, metadata, len(MAGIC),
                       header.to_pybytes()[len(MAGIC) :])  # fmt: skip
        self._open[stream] = opened
        return opened

    def _check_new_file(self, stream: str, path: Path) -> None:
        if recovery_path(path).exists():
            raise StorageIOError(errno.EEXIST, _waiting_for_repair(path), str(path))
        super()._check_new_file(stream, path)

    def _create(self, stream: str, path: Path, header: pa.Buffer) -> tuple[int, int]:
        """Start ``path`` as an empty Parquet file and its recovery file (both new:
        ``O_EXCL``, the recovery file first); their fds."""
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
        try:
            fd = self._create_file(stream, path)
        except BaseException:
            os.close(recovery_fd)
            recovery.unlink(missing_ok=True)
            raise
        try:
            with storage_errors(path, "cannot create Parquet file"):
                # Held while writing: repair_parquet refuses a file a live writer owns.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                pwrite_all(fd, [header], 0)
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

    # ------------------------------------------------------------------ writing
    def _write(self, stream: str, batch: pa.RecordBatch) -> None:
        for declared, column in zip(batch.schema, batch.columns, strict=True):
            if not declared.nullable and column.null_count:  # Parquet would refuse the group
                raise UnsupportedData(
                    f"stream {stream!r} column {declared.name!r} is declared non-nullable but "
                    f"holds {column.null_count} nulls"
                )
        target = self._writer_for(stream, batch.schema)
        nbytes = batch.nbytes
        if not target.pending:
            target.oldest = time.monotonic()
        target.pending.append(batch)
        target.pending_rows += batch.num_rows
        target.pending_bytes += nbytes
        self._stats.bytes_written += nbytes
        if (
            target.pending_rows >= self.row_group_size
            or target.pending_bytes >= self.row_group_bytes
            or time.monotonic() - target.oldest >= self.flush_interval_s
        ):
            self._drain(target, uncounted_rows=batch.num_rows)
            if len(target.footer) >= self.max_footer_bytes:
                del self._open[stream]
                self._finish(target)

    def _drain(self, target: _Open, *, uncounted_rows: int = 0) -> None:
        """Write the buffered rows as one row group; on failure they are dropped (the
        error says how many) and taken out of the stats.

        ``uncounted_rows`` of them belong to the ``write_batch`` call under way, which
        counts its rows only when it succeeds.
        """
        if not target.pending_rows:
            target.pending = []  # empty batches: the file already has the schema
            return
        table = pa.Table.from_batches(target.pending, schema=target.schema)
        rows, nbytes = target.pending_rows, target.pending_bytes
        target.pending, target.pending_rows, target.pending_bytes = [], 0, 0
        try:
            data, row_group = self._encode(target, table)
            unstored = self._commit(target, data, row_group, f"{rows} buffered rows of stream "
                                    f"{target.stream!r} (dropped)")  # fmt: skip
        except BaseException:
            counted = rows - uncounted_rows
            if target.stream in self._frame_specs:
                self._stats.frames -= counted
            else:
                self._stats.rows -= counted
            self._stats.bytes_written -= nbytes
            raise
        self._record(target)  # the rows are in the file even if this fails
        if unstored is not None:
            raise unstored

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
        self, target: _Open, data: pa.Buffer | bytes, row_group: Any, what: str
    ) -> UnsupportedData | None:
        """Write ``data`` and a footer listing every row group (and ``row_group``) over
        the current footer; :meth:`_record` then saves the new state.

        Metadata that cannot go into the footer never costs the rows: they are written
        with the metadata the file holds, and the error is returned, to be raised once
        the rows are recorded.
        """
        header, metadata, unstored, merged = target.header, target.metadata, None, None
        try:
            wanted = self._metadata_for(target.stream)
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

    def _rewrite_footer(self, target: _Open) -> None:
        """Put metadata set since the last footer into the file."""
        if self._metadata_for(target.stream) != target.metadata:
            unstored = self._commit(target, b"", None, f"the footer of {target.path.name}")
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

    def flush(self) -> None:
        """Write buffered rows as row groups and late metadata into the footers; every
        file is then complete and readable (one stream's failure stops no other)."""
        self._check_open()
        finish_all([functools.partial(self._flush_one, opened) for opened in self._open.values()])

    def _flush_one(self, opened: _Open) -> None:
        self._drain(opened)
        self._rewrite_footer(opened)

    def _finish(self, opened: _Open) -> None:
        try:
            self._drain(opened)
            self._rewrite_footer(opened)
        finally:
            with storage_errors(opened.path, "cannot close Parquet file"):
                try:
                    os.close(opened.fd)
                finally:
                    os.close(opened.recovery_fd)
                if opened.intact:
                    recovery_path(opened.path).unlink(missing_ok=True)


def _waiting_for_repair(path: Path) -> str:
    return (
        f"{path.name} has a recovery file: its writer is still running or did not close; "
        "run daq_storage.writers.parquet.repair_parquet on it or write elsewhere"
    )


def _check_level(compression: str, level: int) -> None:
    if compression in _CODECS_WITHOUT_LEVEL:
        raise ConfigError(
            f"parquet compression {compression!r} takes no compression_level (got {level}); "
            "levels apply to gzip, zstd, lz4 and brotli"
        )
    low = pa.Codec.minimum_compression_level(compression)
    high = pa.Codec.maximum_compression_level(compression)
    if not low <= level <= high:
        raise ConfigError(
            f"parquet compression_level for {compression!r} must be {low}..{high}, got {level}"
        )
