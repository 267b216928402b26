"""Shared logic of the formats that keep one file per stream (Arrow IPC, Parquet, CSV, TIFF).

``path`` names a directory; stream ``s`` goes to ``path/s.<suffix>``. When a stream's
schema changes incompatibly, the writer continues in ``path/s.part0001.<suffix>`` and
so on, so nothing already written is rewritten or lost.
"""

from __future__ import annotations

import functools
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy.typing as npt
import pyarrow as pa

from daq_storage.writers._base import Writer, finish_all, json_value, storage_errors
from daq_storage.writers._tensor import frames_to_batch

__all__ = ["ArrowBatchWriter", "PerStreamWriter"]


class PerStreamWriter(Writer):
    """A writer whose streams are separate files in one directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        with storage_errors(self.path, "cannot create output directory"):
            self.path.mkdir(parents=True, exist_ok=True)
            if not os.access(self.path, os.W_OK):
                raise PermissionError(13, "Permission denied")
        self._file_metadata: dict[str, str] = {}
        self._stream_metadata: dict[str, dict[str, str]] = {}
        self._parts: dict[str, int] = {}
        self._suffix = self.suffixes[0]
        self._metadata_version = 0  # bumped by set_metadata, so writers notice late values

    def _stream_path(self, stream: str, *, new_part: bool = False) -> Path:
        safe = self._safe_stream(stream)
        part = self._parts.get(stream, 0) + (1 if new_part else 0)
        self._parts[stream] = part
        name = safe if part == 0 else f"{safe}.part{part:04d}"
        path = self.path / f"{name}{self._suffix}"
        self._add_file(path)
        return path

    def _metadata_for(self, stream: str) -> dict[str, str]:
        return {**self._file_metadata, **self._stream_metadata.get(stream, {})}

    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        """Stored as key-value metadata (JSON values) of the stream's file(s).

        Metadata set before a stream's first write lands in its file header; later
        values are kept for the next file part; each format documents where they go in
        a file already open.
        """
        self._check_open()
        text = json_value(value, what=f"metadata {key!r}")
        self._metadata_version += 1
        if stream is None:
            self._file_metadata[key] = text
        else:
            self._safe_stream(stream)
            self._stream_metadata.setdefault(stream, {})[key] = text


class ArrowBatchWriter(PerStreamWriter):
    """A per-stream writer whose files take Arrow record batches (Arrow IPC, Parquet):
    frames arrive as a ``fixed_shape_tensor`` column beside ``timestamp_ns`` and
    ``frame_number``."""

    @abstractmethod
    def _write(self, stream: str, batch: pa.RecordBatch) -> None:
        """Append ``batch`` to the stream's current file."""

    _open: dict[str, Any]  # stream -> its open file (format-specific)

    @abstractmethod
    def _finish(self, opened: Any) -> None:
        """Complete and close one stream's open file."""

    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        batch = self._check_batch(stream, batch)
        self._write(stream, batch)
        self._stats.batches += 1  # write_batch calls only, as in every format
        self._stats.rows += batch.num_rows

    def write_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any],
        *,
        timestamps_ns: npt.ArrayLike | None = None,
        frame_numbers: npt.ArrayLike | None = None,
    ) -> None:
        block = self._check_frames(stream, frames, timestamps_ns, frame_numbers)
        self._write(stream, frames_to_batch(block))
        self._stats.frames += len(block.frames)

    def _close(self) -> None:
        try:
            finish_all(functools.partial(self._finish, opened) for opened in self._open.values())
        finally:
            self._open.clear()
