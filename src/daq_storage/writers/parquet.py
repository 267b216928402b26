"""Parquet: one file per stream, large row groups, a bounded crash-loss window."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from daq_storage.errors import ConfigError
from daq_storage.writers._base import storage_errors
from daq_storage.writers._per_stream import ArrowBatchWriter

__all__ = ["ParquetWriter"]

_CODECS = ("none", "snappy", "gzip", "zstd", "lz4", "brotli")


@dataclass
class _Open:
    path: Path
    writer: pq.ParquetWriter
    schema: pa.Schema
    pending: list[pa.RecordBatch] = field(default_factory=list)
    pending_rows: int = 0
    oldest: float = 0.0  # monotonic time of the oldest buffered batch


class ParquetWriter(ArrowBatchWriter):
    """Parquet files, one per stream, in the directory ``path``.

    Batches are buffered into row groups of ``row_group_size`` rows (large groups
    write faster and compress better) but never held longer than
    ``flush_interval_s``: at most that much data is lost if the process dies. A
    schema change that Parquet cannot append continues in a new part file.

    Args:
        path: output directory.
        compression: ``snappy`` (default), ``gzip``, ``zstd``, ``lz4``, ``brotli`` or ``none``.
        compression_level: codec level (codec-specific range), ``None`` for the default.
        row_group_size: rows per row group.
        flush_interval_s: longest time a row stays buffered in memory.
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
        flush_interval_s: float = 1.0,
    ) -> None:
        if compression not in _CODECS:
            raise ConfigError(f"parquet compression {compression!r} is not one of {_CODECS}")
        if row_group_size < 1:
            raise ConfigError(f"parquet row_group_size must be >= 1, got {row_group_size}")
        if flush_interval_s < 0:
            raise ConfigError(f"parquet flush_interval_s must be >= 0, got {flush_interval_s}")
        super().__init__(path)
        self.compression = compression
        self.compression_level = compression_level
        self.row_group_size = row_group_size
        self.flush_interval_s = flush_interval_s
        self._open: dict[str, _Open] = {}

    def _writer_for(self, stream: str, schema: pa.Schema) -> _Open:
        current = self._open.get(stream)
        if current is not None and current.schema.equals(schema):
            return current
        if current is not None:
            self._finish(current)
        path = self._stream_path(stream, new_part=current is not None)
        full = schema.with_metadata({**(schema.metadata or {}), **self._metadata_for(stream)})
        with storage_errors(path, "cannot create Parquet file"):
            writer = pq.ParquetWriter(
                str(path),
                full,
                compression=self.compression,
                compression_level=self.compression_level,
            )
        opened = self._open[stream] = _Open(path, writer, schema)
        return opened

    def _write(self, stream: str, batch: pa.RecordBatch) -> None:
        target = self._writer_for(stream, batch.schema)
        if not target.pending:
            target.oldest = time.monotonic()
        target.pending.append(batch)
        target.pending_rows += batch.num_rows
        self._stats.batches += 1
        self._stats.bytes_written += batch.nbytes
        if (
            target.pending_rows >= self.row_group_size
            or time.monotonic() - target.oldest >= self.flush_interval_s
        ):
            self._drain(target)

    def _drain(self, target: _Open) -> None:
        if not target.pending:
            return
        table = pa.Table.from_batches(target.pending, schema=target.schema)
        target.pending, target.pending_rows = [], 0
        # Refused rows are dropped here and reported by the error: they are never retried
        # silently, and the file keeps room for its footer.
        self._ensure_room(table.nbytes, f"{table.num_rows} buffered rows of {target.path.name}",
                          target.path)  # fmt: skip
        with storage_errors(target.path, "cannot write Parquet row group"):
            # One row group per drain: batches are never split across groups.
            target.writer.write_table(table, row_group_size=max(1, table.num_rows))

    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        """File key-value metadata (JSON values); also added to files already open."""
        super().set_metadata(key, value, stream=stream)
        targets = self._open.items() if stream is None else [(stream, self._open.get(stream))]
        for name, opened in targets:
            if opened is not None:
                opened.writer.add_key_value_metadata({key: self._metadata_for(name)[key]})

    def flush(self) -> None:
        """Write buffered rows as row groups (files are complete only after close)."""
        self._check_open()
        for opened in self._open.values():
            self._drain(opened)

    def _finish(self, opened: _Open) -> None:
        try:
            self._drain(opened)
        finally:
            with storage_errors(opened.path, "cannot close Parquet file"):
                opened.writer.close()
