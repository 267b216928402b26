"""Per-stream outputs (Parquet, Arrow IPC) in an object store: a stream's files are its
part objects ``<prefix>/<stream>/part-NNNNNN.<suffix>``, one per flush of the writer
(see ``daq_storage.writers._object_parts``), read through ``pyarrow.fs``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from daq_storage.errors import ReadError
from daq_storage.location import S3Location, s3_errors

__all__ = ["Source", "arrow_source", "object_metadata_document", "object_stream_files",
           "open_source"]  # fmt: skip

#: A stream file: a local path, or a part object.
Source = Path | S3Location

_PART = re.compile(r"^part-(?P<number>\d+)$")


def object_stream_files(location: S3Location, suffixes: Iterable[str]) -> dict[str, list[Source]]:
    """Stream -> its part objects in order (other objects, the writer's marker among
    them, are left out)."""
    import obstore

    ends = tuple(suffixes)
    found: dict[str, list[tuple[int, Source]]] = {}
    with s3_errors(location, "list"):
        listed = [o["path"] for chunk in obstore.list(location.object_store()) for o in chunk]
    for key in listed:
        stream, _, name = key.partition("/")
        if "/" in name or not name.endswith(ends):
            continue
        suffix = next(s for s in ends if name.endswith(s))
        match = _PART.match(name[: -len(suffix)])
        if match is not None:
            found.setdefault(stream, []).append((int(match["number"]), location.child(key)))
    return {stream: [p for _, p in sorted(parts)] for stream, parts in sorted(found.items())}


def object_metadata_document(location: S3Location) -> dict[str, Any]:
    """The prefix's ``metadata.json`` (what a writer with no stream left), or ``{}``."""
    import obstore
    import obstore.exceptions

    target = location.child("metadata.json")
    try:
        with s3_errors(target, "read"):
            data = bytes(obstore.get(location.object_store(), "metadata.json").bytes())
    except Exception as exc:
        if isinstance(exc.__cause__, obstore.exceptions.NotFoundError):
            return {}
        raise
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ReadError(f"{target}: not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise ReadError(f"{target}: not a JSON object")
    return document


def arrow_source(path: Source) -> tuple[str, pafs.FileSystem]:
    """``path`` as pyarrow names it, and the filesystem holding it."""
    if isinstance(path, S3Location):
        return path.arrow_path, path.arrow_filesystem()
    return str(path), pafs.LocalFileSystem()


def open_source(path: Source) -> pa.NativeFile:
    """A local file memory-mapped; an object read whole into memory (a part is one
    flush's rows)."""
    if isinstance(path, S3Location):
        with (
            s3_errors(path, "read"),
            path.arrow_filesystem().open_input_file(path.arrow_path) as source,
        ):
            return pa.BufferReader(source.read_buffer())
    return pa.memory_map(str(path))
