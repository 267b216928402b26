"""Shared logic of the formats that keep one file per stream (Arrow IPC, Parquet, CSV, TIFF).

``path`` names a plain directory (no suffix: a directory named ``run.parquet`` makes
pandas, pyarrow and polars read every stream in it as one table); stream ``s`` goes to
``path/s.<suffix>``. When a stream continues in a new file (a schema change the format
cannot take in place, or a file that cannot take more), its parts are
``path/s__part0002.<suffix>``, ``path/s__part0003.<suffix>`` and so on (the first part
keeps the plain name, as the parts of HDF5 and Zarr streams do), so nothing already
written is rewritten or lost. The writer lists them in :meth:`Writer.describe`; each
format records them in its files (see :data:`PART_OF`).

Nothing is ever overwritten:

- every stream file is born complete: made under a hidden temporary name beside it
  (:func:`create_hidden`), given what its reader needs to open it, then published
  under its name with a hard link (:func:`publish`), which never replaces a file: one
  that exists (an earlier run in the same directory) is refused with
  ``StorageIOError`` (``EEXIST``), with no window between a check and the creation, and
  a kill at any instant leaves either no file under the name or one a reader opens
  (the temporary name of a killed writer is removed by ``daq-storage repair``);
- the writer holds an exclusive lock on the directory while it is open, so a second
  writer on the same directory, in this process or another, is refused
  (``StorageIOError``, ``EBUSY``, naming the holder's pid); the kernel drops the lock of
  a killed writer;
- part files are named ``<stream>__partNNNN``: a stream name is sanitised
  (:func:`~daq_storage.naming.sanitize_name`) into one that never holds two underscores
  in a row, so no stream's file can be another stream's part (stream ``pp.part0002``
  writes ``pp.part0002.<suffix>``, stream ``pp``'s second part is ``pp__part0002``).
  Sorted by name, a stream's files come in part order.

On an object store (Parquet, Arrow IPC) the prefix takes the directory's place: it is
claimed with a marker object instead of a lock, and each flush adds complete part
objects (see ``_object_parts``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from daq_storage.errors import ConfigError, StorageIOError
from daq_storage.location import S3Location, is_remote
from daq_storage.schema import METADATA_CHANGES, decode_metadata
from daq_storage.writers._base import StreamPart, Writer, json_value, storage_errors
from daq_storage.writers._object_parts import claim_prefix, put_document, release_prefix

__all__ = ["FIRST_ROW", "PART_OF", "PerStreamWriter", "create_hidden", "leftover", "publish"]

#: Metadata key of a stream's second and later part files: the stream's name (JSON text).
PART_OF = "daq_storage.part_of"
#: Metadata key beside :data:`PART_OF`: the stream's index (row, or frame) of the part's
#: first row; the parts, sorted by it (or by name), join into the stream.
FIRST_ROW = "daq_storage.first_row"

#: The temporary name of an output being born: ``.<name>.<pid>.<16 hex>.tmp`` (then,
#: for HDF5, its commit journal ``<that>.journal``).
_HIDDEN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{16}\.tmp(?:\.journal)?$")


def create_hidden(path: Path) -> tuple[Path, int]:
    """A new, empty file under a temporary name beside ``path`` (a name no reader lists
    and no other writer takes) and its descriptor, open for reading and writing; give
    it what makes it openable, then :func:`publish` it."""
    while True:
        hidden = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(8).hex()}.tmp")
        try:
            return hidden, os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                   0o666)  # fmt: skip
        except FileExistsError:  # 64 random bits taken: draw again
            continue


def publish(hidden: Path, path: Path) -> None:
    """Give the file at ``hidden`` its name ``path`` and drop the temporary name: a hard
    link, so an existing ``path`` is never replaced (``FileExistsError``; the temporary
    is then removed). Descriptors open on the file keep writing to it.

    Raises:
        FileExistsError: ``path`` exists.
        OSError: the link failed (the temporary is removed).
    """
    try:
        os.link(hidden, path)
    finally:
        with contextlib.suppress(OSError):  # a leftover only: repair removes it
            os.unlink(hidden)


def leftover(name: str) -> tuple[str, int] | None:
    """For a temporary name of :func:`create_hidden` (or its HDF5 journal): the name of
    the output it was to become and the pid of the process that made it; else ``None``."""
    found = _HIDDEN.match(name)
    return None if found is None else (found["name"], int(found["pid"]))


class PerStreamWriter(Writer):
    """A writer whose streams are separate files in one directory.

    Raises:
        ConfigError: ``path`` ends in one of the stream files' suffixes.
    """

    path_suffix: ClassVar[str] = ""
    removes_unused_output: ClassVar[bool] = True

    def __init__(self, path: str | os.PathLike[str] | S3Location) -> None:
        if is_remote(path) and not self.supports_object_storage:
            raise ConfigError(f"the {self.name} writer writes local files only, not {path}")
        super().__init__(path)
        name = self.location.name if self.location is not None else self.path.name
        for suffix in self.suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                raise ConfigError(
                    f"{self.name} writes one file per stream ({', '.join(self.suffixes)}) into "
                    f"the directory {self.destination}; name the directory without the "
                    f"{suffix!r} suffix (such as {name[: -len(suffix)]}): readers take a "
                    "directory named like a file for one"
                )
        if self.location is not None:  # objects under a prefix: see _object_parts
            claim_prefix(self.location, self.name)
        else:
            with storage_errors(self.path, "cannot create output directory"):
                self._claim_directory(self.path)
                if not os.access(self.path, os.W_OK):
                    raise PermissionError(13, "Permission denied")
            self._lock_output(self.path)
        self._file_metadata: dict[str, str] = {}
        self._stream_metadata: dict[str, dict[str, str]] = {}
        self._part_index: dict[str, int] = {}  # stream -> its current file: 0 the first
        self._suffix = self.suffixes[0]
        self._metadata_version = 0  # bumped by set_metadata, so writers notice late values

    def _part_path(self, stream: str, part: int) -> Path:
        """The file of the stream's part ``part`` (0: the first, plain name; then
        ``__part0002``, ...: see the module docstring)."""
        safe = self._safe_stream(stream)
        name = safe if part == 0 else f"{safe}__part{part + 1:04d}"
        return self.path / f"{name}{self._suffix}"

    def _stream_path(self, stream: str, *, new_part: bool = False) -> Path:
        """The path of the stream's next file (its first, or a new part), checked to be
        free; the file itself is made by :meth:`_create_file` (or the format). A new
        part is recorded (see :meth:`Writer.describe`) as starting at the rows or frames
        the stream has taken so far; :meth:`_forget_file` takes it back."""
        part = self._part_index.get(stream, 0) + (1 if new_part else 0)
        path = self._part_path(stream, part)
        self._check_new_file(stream, path)
        self._part_index[stream] = part
        self._add_file(path)
        if part:
            self._add_part(stream, StreamPart(self._part_path(stream, 0), "", 0))
            self._add_part(stream, StreamPart(path, "", self._taken(stream)))
        return path

    def _taken(self, stream: str) -> int:
        """Rows (a table stream) or frames the stream has taken (0 for a new one)."""
        metadata = self._table_metadata.get(stream)
        return metadata.rows if metadata is not None else self._frames_seen.get(stream, 0)

    def _add_part(self, stream: str, part: StreamPart) -> None:
        """Record ``part`` once (a format may record the parts it makes itself)."""
        if all(known.path != part.path for known in self._parts.get(stream, ())):
            super()._add_part(stream, part)

    def _part_keys(self, stream: str) -> dict[str, str]:
        """Metadata keys (JSON text) of the stream's current file: :data:`PART_OF` and
        :data:`FIRST_ROW` for a second or later part, none for the first."""
        parts = self._parts.get(stream)
        if not self._part_index.get(stream) or not parts:
            return {}
        return {PART_OF: json.dumps(stream), FIRST_ROW: json.dumps(parts[-1].first)}

    def _check_new_file(self, stream: str, path: Path) -> None:
        """Refuse to start ``path`` when it exists: nothing is overwritten."""
        if os.path.lexists(path):
            raise _exists(stream, path, self.path)

    def _create_file(
        self, stream: str, path: Path, prepare: Callable[[int], object] | None = None
    ) -> int:
        """Create ``path`` (never an existing file) for reading and writing; on failure the
        stream is left as if :meth:`_stream_path` had not been called.

        ``prepare`` writes, through the descriptor it is given, what makes the file
        openable (its header): the file is made under a temporary name, prepared, then
        published (:func:`publish`), so that no kill leaves a file under ``path`` that a
        reader cannot open. Without ``prepare`` the file is created empty under its name
        (``O_EXCL``) and the caller writes its header: a kill in between leaves it empty.
        """
        if prepare is not None:
            return self._born_file(stream, path, prepare)
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            self._forget_file(stream, path)
            raise _exists(stream, path, self.path) from None
        except OSError as exc:
            self._forget_file(stream, path)
            raise StorageIOError(exc.errno, f"cannot create the file of stream {stream!r}: "
                                 f"{exc.strerror}", str(path)) from exc  # fmt: skip

    def _born_file(self, stream: str, path: Path, prepare: Callable[[int], object]) -> int:
        """:meth:`_create_file` with a ``prepare``: made hidden, prepared, published."""
        try:
            hidden, fd = create_hidden(path)
        except OSError as exc:
            self._forget_file(stream, path)
            raise StorageIOError(exc.errno, f"cannot create the file of stream {stream!r}: "
                                 f"{exc.strerror}", str(path)) from exc  # fmt: skip
        try:
            prepare(fd)
            publish(hidden, path)
        except FileExistsError:
            os.close(fd)
            self._forget_file(stream, path)
            raise _exists(stream, path, self.path) from None
        except BaseException as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                hidden.unlink(missing_ok=True)
            self._forget_file(stream, path)
            if isinstance(exc, OSError) and not isinstance(exc, StorageIOError):
                raise StorageIOError(exc.errno, f"cannot create the file of stream "
                                     f"{stream!r}: {exc.strerror}", str(path)) from exc  # fmt: skip
            raise
        return fd

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
        part = self._part_index.get(stream)
        if part is not None and path == self._part_path(stream, part):
            if part == 0:
                del self._part_index[stream]
            else:
                self._part_index[stream] = part - 1
        parts = [p for p in self._parts.get(stream, ()) if p.path != path]
        if len(parts) > 1:
            self._parts[stream] = parts
        else:  # the first part alone: the stream has no recorded parts
            self._parts.pop(stream, None)

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
        orphaned = not (self._stats.files or self.streams) and (
            self._file_metadata or self._stream_metadata
        )
        if not self.closed and orphaned and not self.writes_metadata_json:
            document = {
                "file": {k: json.loads(v) for k, v in self._file_metadata.items()},
                "streams": {
                    self._safe_stream(stream): {k: json.loads(v) for k, v in values.items()}
                    for stream, values in self._stream_metadata.items()
                },
            }
            if self.location is not None:
                put_document(self.location, "metadata.json", document)
                super().close()
                return
            path = self.path / "metadata.json"
            with storage_errors(path, "cannot write the run's metadata"):
                self._check_new_file("(metadata)", path)
                with open(path, "x", encoding="utf-8") as file:  # "x": never an existing one
                    file.write(json.dumps(document, indent=2, allow_nan=True))
            self._add_file(path)
        super().close()

    def _discard_unused(self) -> None:
        if self.location is not None:
            release_prefix(self.location)
        else:
            super()._discard_unused()

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


def _exists(stream: str, path: Path, folder: Path) -> StorageIOError:
    return StorageIOError(
        errno.EEXIST,
        f"cannot start stream {stream!r}: {path.name} already exists in {folder} "
        "(never overwritten); write to a new directory",
        str(path),
    )
