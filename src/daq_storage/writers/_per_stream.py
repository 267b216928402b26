"""Shared logic of the formats that keep one file per stream (Arrow IPC, Parquet, CSV, TIFF).

``path`` names a plain directory (no suffix: a directory named ``run.parquet`` makes
pandas, pyarrow and polars read every stream in it as one table); stream ``s`` goes to
``path/s.<suffix>``. When a stream's schema changes incompatibly (or its file cannot
take more), the writer continues in ``path/s__part0001.<suffix>`` and so on, so nothing
already written is rewritten or lost.

Nothing is ever overwritten:

- every stream file is created with ``O_EXCL``: one that exists (an earlier run in the
  same directory) is refused with ``StorageIOError`` (``EEXIST``), with no window
  between a check and the creation;
- the writer holds an exclusive lock on the directory while it is open, so a second
  writer on the same directory, in this process or another, is refused
  (``StorageIOError``, ``EBUSY``, naming the holder's pid); the kernel drops the lock of
  a killed writer;
- part files are named ``<stream>__partNNNN``: a stream name is sanitised
  (:func:`~daq_storage.naming.sanitize_name`) into one that never holds two underscores
  in a row, so no stream's file can be another stream's part (stream ``pp.part0001``
  writes ``pp.part0001.<suffix>``, stream ``pp``'s first part is ``pp__part0001``).
  Sorted by name, a stream's files come in part order.
"""

from __future__ import annotations

import errno
import functools
import json
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import ConfigError, StorageIOError
from daq_storage.schema import METADATA_CHANGES, decode_metadata
from daq_storage.writers._base import Writer, finish_all, json_value, storage_errors
from daq_storage.writers._tensor import frames_to_batch

__all__ = ["ArrowBatchWriter", "PerStreamWriter"]


class PerStreamWriter(Writer):
    """A writer whose streams are separate files in one directory.

    Raises:
        ConfigError: ``path`` ends in one of the stream files' suffixes.
    """

    path_suffix: ClassVar[str] = ""
    removes_unused_output: ClassVar[bool] = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        name = self.path.name.lower()
        for suffix in self.suffixes:
            if name.endswith(suffix) and len(name) > len(suffix):
                raise ConfigError(
                    f"{self.name} writes one file per stream ({', '.join(self.suffixes)}) into "
                    f"the directory {self.path}; name the directory without the {suffix!r} "
                    f"suffix (such as {self.path.with_name(self.path.name[: -len(suffix)])}): "
                    "readers take a directory named like a file for one"
                )
        with storage_errors(self.path, "cannot create output directory"):
            self._claim_directory(self.path)
            if not os.access(self.path, os.W_OK):
                raise PermissionError(13, "Permission denied")
        self._lock_output(self.path)
        self._file_metadata: dict[str, str] = {}
        self._stream_metadata: dict[str, dict[str, str]] = {}
        self._parts: dict[str, int] = {}
        self._suffix = self.suffixes[0]
        self._metadata_version = 0  # bumped by set_metadata, so writers notice late values

    def _part_path(self, stream: str, part: int) -> Path:
        safe = self._safe_stream(stream)
        name = safe if part == 0 else f"{safe}__part{part:04d}"  # see the module docstring
        return self.path / f"{name}{self._suffix}"

    def _stream_path(self, stream: str, *, new_part: bool = False) -> Path:
        """The path of the stream's next file (its first, or a new part), checked to be
        free; the file itself is made by :meth:`_create_file` (or the format)."""
        part = self._parts.get(stream, 0) + (1 if new_part else 0)
        path = self._part_path(stream, part)
        self._check_new_file(stream, path)
        self._parts[stream] = part
        self._add_file(path)
        return path

    def _check_new_file(self, stream: str, path: Path) -> None:
        """Refuse to start ``path`` when it exists: nothing is overwritten."""
        if os.path.lexists(path):
            raise _exists(stream, path, self.path)

    def _create_file(self, stream: str, path: Path) -> int:
        """Create ``path`` (never an existing file: ``O_EXCL``) for reading and writing;
        on failure the stream is left as if :meth:`_stream_path` had not been called."""
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            self._forget_file(stream, path)
            raise _exists(stream, path, self.path) from None
        except OSError as exc:
            self._forget_file(stream, path)
            raise StorageIOError(exc.errno, f"cannot create the file of stream {stream!r}: "
                                 f"{exc.strerror}", str(path)) from exc  # fmt: skip

    def _abandon_file(self, stream: str, path: Path, fd: int) -> None:
        """Close and remove a file this writer created but could not start (nothing of the
        stream is in it), so that the next write starts it again under the same name."""
        try:
            os.close(fd)
            path.unlink(missing_ok=True)
        except OSError:
            pass  # the error that brought us here is the one to report
        self._forget_file(stream, path)

    def _forget_file(self, stream: str, path: Path) -> None:
        if path in self._stats.files:
            self._stats.files.remove(path)
        part = self._parts.get(stream)
        if part is not None and path == self._part_path(stream, part):
            if part == 0:
                del self._parts[stream]
            else:
                self._parts[stream] = part - 1

    def _metadata_for(self, stream: str, schema: pa.Schema | None = None) -> dict[str, str]:
        """The key-value metadata (JSON text values) of ``stream``'s file: the stream's
        schema metadata (that of ``schema`` while the stream has none), its recorded
        changes, then :meth:`set_metadata` values for every file and for the stream."""
        tracked = self._table_metadata.get(stream)
        if tracked is not None and tracked.first is not None:
            instrument = tracked.first
        else:
            instrument = decode_metadata(None if schema is None else schema.metadata)
        texts = {
            key: json_value(value, what=f"metadata {key!r}") for key, value in instrument.items()
        }
        if tracked is not None and (changes := tracked.changes_json()) is not None:
            texts[METADATA_CHANGES] = changes
        return {**texts, **self._file_metadata, **self._stream_metadata.get(stream, {})}

    #: The format keeps a ``metadata.json`` of its own (CSV).
    writes_metadata_json: ClassVar[bool] = False

    def close(self) -> None:
        """Close every stream file. Metadata set while no stream file was ever started has
        no file header to go to: it is written to ``metadata.json`` in the directory, so it
        is never lost."""
        orphaned = not self._stats.files and (self._file_metadata or self._stream_metadata)
        if not self.closed and orphaned and not self.writes_metadata_json:
            document = {
                "file": {k: json.loads(v) for k, v in self._file_metadata.items()},
                "streams": {
                    self._safe_stream(stream): {k: json.loads(v) for k, v in values.items()}
                    for stream, values in self._stream_metadata.items()
                },
            }
            path = self.path / "metadata.json"
            with storage_errors(path, "cannot write the run's metadata"):
                self._check_new_file("(metadata)", path)
                with open(path, "x", encoding="utf-8") as file:  # "x": never an existing one
                    file.write(json.dumps(document, indent=2, allow_nan=True))
            self._add_file(path)
        super().close()

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
        self._stored = True


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
        self._observe_metadata(stream, batch)
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
        block = self._check_frames(stream, frames, timestamps_ns, frame_numbers, record=False)
        self._write(stream, frames_to_batch(block))
        self._record_frames(stream, block)  # a refused call leaves the stream as it was
        self._stored = True
        self._stats.frames += len(block.frames)

    def _close(self) -> None:
        try:
            finish_all(functools.partial(self._finish, opened) for opened in self._open.values())
        finally:
            self._open.clear()


def _exists(stream: str, path: Path, folder: Path) -> StorageIOError:
    return StorageIOError(
        errno.EEXIST,
        f"cannot start stream {stream!r}: {path.name} already exists in {folder} "
        "(never overwritten); write to a new directory",
        str(path),
    )
