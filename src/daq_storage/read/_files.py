"""The files of a format that keeps one file per stream (Arrow IPC, Parquet, CSV, TIFF):
``<stream>.<suffix>``, then its parts ``<stream>__part0002.<suffix>``, ... (see
:mod:`daq_storage.writers._per_stream`), and what they share."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from daq_storage.errors import ReadError
from daq_storage.read._source import LAYOUT_KEYS

__all__ = ["SUFFIXES", "common_metadata", "metadata_document", "stream_files"]

#: Each per-stream format's file suffixes.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "arrow": (".arrows", ".arrow"),
    "parquet": (".parquet",),
    "csv": (".csv",),
    "tiff": (".tif", ".tiff"),
}
_PART = re.compile(r"^(?P<stream>.+?)__part(?P<number>\d{4,})$")


def stream_files(directory: Path, suffixes: Iterable[str]) -> dict[str, list[Path]]:
    """Stream -> its files in part order. Hidden files (a writer's temporaries) and
    other files are left out."""
    ends = tuple(suffixes)
    found: dict[str, list[tuple[int, Path]]] = {}
    for path in directory.iterdir():
        name = path.name
        if name.startswith(".") or not name.endswith(ends) or not path.is_file():
            continue
        suffix = next(s for s in ends if name.endswith(s))
        stem = name[: -len(suffix)]
        if stem.endswith(".frames"):  # an ImageJ stack's ids beside it
            continue
        match = _PART.match(stem)
        stream, number = (match["stream"], int(match["number"])) if match else (stem, 1)
        found.setdefault(stream, []).append((number, path))
    return {stream: [p for _, p in sorted(files)] for stream, files in sorted(found.items())}


def metadata_document(directory: Path) -> dict[str, Any]:
    """The directory's ``metadata.json`` (CSV's, or what a per-stream writer with no
    stream file left), or ``{}``."""
    path = directory / "metadata.json"
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReadError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise ReadError(f"{path}: not a JSON object")
    return document


def common_metadata(per_stream: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The key-value pairs every stream's metadata holds alike: where a format keeps the
    file's metadata in each stream's file, what they share is the file's (its layout
    keys aside: which stream a part belongs to and where it starts are no run's)."""
    common: dict[str, Any] | None = None
    for metadata in per_stream:
        if common is None:
            common = {k: v for k, v in metadata.items() if k not in LAYOUT_KEYS}
        else:
            common = {k: v for k, v in common.items() if k in metadata and metadata[k] == v}
    return common or {}
