"""Arrow IPC: one streaming-format file per stream (``.arrows``), file format optional."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa

from daq_storage.errors import ConfigError
from daq_storage.writers._base import storage_errors
from daq_storage.writers._per_stream import ArrowBatchWriter

__all__ = ["ArrowWriter"]


@dataclass
class _Open:
    path: Path
    sink: pa.NativeFile
    writer: pa.ipc.RecordBatchStreamWriter | pa.ipc.RecordBatchFileWriter
    schema: pa.Schema
    metadata: dict[str, str]
    metadata_version: int = 0


class ArrowWriter(ArrowBatchWriter):
    """Arrow IPC files, one per stream, in the directory ``path``.

    The streaming format (default) is appended batch by batch and survives a killed
    process: a reader gets every batch up to the last complete one. ``ipc_format="file"``
    writes the random-access file format (readable only after :meth:`close`).
    Frames are stored as a ``fixed_shape_tensor`` column ``frame`` beside
    ``timestamp_ns`` and ``frame_number``.

    Args:
        path: output directory.
        ipc_format: ``"stream"`` (``.arrows``) or ``"file"`` (``.arrow``).
        compression: ``None``, ``"lz4"`` or ``"zstd"`` IPC buffer compression.
    """

    name: ClassVar[str] = "arrow"
    suffixes: ClassVar[tuple[str, ...]] = (".arrows", ".arrow")
    supports_frames: ClassVar[bool] = True
    supports_tables: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ipc_format: Literal["stream", "file"] = "stream",
        compression: Literal["lz4", "zstd"] | None = None,
    ) -> None:
        if ipc_format not in ("stream", "file"):
            raise ConfigError(f"arrow ipc_format must be 'stream' or 'file', got {ipc_format!r}")
        if compression not in (None, "none", "lz4", "zstd"):
            raise ConfigError(
                f"arrow compression must be None, 'lz4' or 'zstd', got {compression!r}"
            )
        super().__init__(path)
        self.ipc_format = ipc_format
        self._suffix = ".arrows" if ipc_format == "stream" else ".arrow"
        self._options = pa.ipc.IpcWriteOptions(
            compression=None if compression in (None, "none") else compression
        )
        self._open: dict[str, _Open] = {}

    def _writer_for(self, stream: str, schema: pa.Schema) -> _Open:
        current = self._open.get(stream)
        if current is not None and current.schema.equals(schema):
            return current
        if current is not None:  # schema changed: finish this part, start the next
            self._finish(current)
        path = self._stream_path(stream, new_part=current is not None)
        metadata = self._metadata_for(stream)
        full = schema.with_metadata({**(schema.metadata or {}), **metadata})
        with storage_errors(path, "cannot create Arrow IPC file"):
            sink = pa.OSFile(str(path), "wb")
            if self.ipc_format == "stream":
                writer: Any = pa.ipc.new_stream(sink, full, options=self._options)
            else:
                writer = pa.ipc.new_file(sink, full, options=self._options)
        opened = self._open[stream] = _Open(
            path, sink, writer, schema, dict(metadata), self._metadata_version
        )
        return opened

    def _write(self, stream: str, batch: pa.RecordBatch) -> None:
        target = self._writer_for(stream, batch.schema)
        nbytes = batch.nbytes
        self._ensure_room(nbytes, f"stream {stream!r}", target.path)
        late: dict[str, str] = {}
        if target.metadata_version != self._metadata_version:  # set_metadata was called
            metadata = self._metadata_for(stream)
            late = {k: v for k, v in metadata.items() if target.metadata.get(k) != v}
            target.metadata.update(late)
            target.metadata_version = self._metadata_version
        try:
            if late:
                target.writer.write_batch(batch, custom_metadata=late)
            else:
                target.writer.write_batch(batch)
        except OSError:
            with storage_errors(target.path, "cannot write Arrow IPC batch"):
                raise
        self._stats.batches += 1
        self._stats.bytes_written += nbytes

    def flush(self) -> None:
        self._check_open()
        for opened in self._open.values():
            with storage_errors(opened.path, "cannot flush Arrow IPC file"):
                opened.sink.flush()

    def _finish(self, opened: _Open) -> None:
        with storage_errors(opened.path, "cannot close Arrow IPC file"):
            try:
                opened.writer.close()
            finally:
                opened.sink.close()
