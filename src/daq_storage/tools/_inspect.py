"""``inspect``: what an output holds, as a tree of :class:`Node` (JSON-able): the run as
the reader sees it (streams, metadata, the loss ledger) and each file as its format lays
it out."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from daq_storage.errors import ConfigError, DaqStorageError, RunNotFound, describe_value
from daq_storage.location import S3Location, S3Options, parse_location
from daq_storage.read import Run, open_run
from daq_storage.tools._inspect_s3 import inspect_location
from daq_storage.tools._layouts import LAYOUTS, layout_of, size_of
from daq_storage.tools._node import Node, human_bytes
from daq_storage.tools._run_tree import count, output_node

__all__ = ["inspect_path"]

#: ``progress(path)``: what the walk reads next (a local path or an object's location).
Progress = Callable[[Path | S3Location], None]

#: How deep ``inspect`` walks into folders that are no output themselves.
MAX_DEPTH = 4


def inspect_path(
    path: str | os.PathLike[str] | S3Location,
    *,
    progress: Progress | None = None,
    storage_options: S3Options | Mapping[str, Any] | None = None,
) -> Node:
    """A tree of what this project wrote at ``path``: an output (an HDF5 file, a Zarr
    store, a directory of stream files), the rotated versions of a run, a directory of
    several runs or formats (each its own node), or one stream's file; or at an
    ``s3://bucket/prefix`` URL (reached with ``storage_options``, unset: the ``AWS_*``
    environment and profiles), a Zarr store, a Parquet or Arrow IPC output of part
    objects per stream, or a prefix of such outputs (each its own node).

    An output's node holds a ``run`` node (what :func:`~daq_storage.read.open_run` reads:
    the loss ledger first, the run's metadata, each stream's kind, rows or frames,
    columns and metadata) and a ``files`` node (each file as its format lays it out:
    HDF5 groups and datasets with chunks, codec and ratio; Zarr arrays with dimension
    names and codecs; Parquet row groups; Arrow batches; CSV columns; TIFF pages). A
    file that cannot be read is a node with a ``problem``; the tree goes on.

    In a bucket, each part object is a file node (a Parquet part's footer: rows, row
    groups, codecs), under a folder per stream; the output's facts add its ``url`` and
    ``objects``. An output ``convert`` was killed making (its
    ``_daq_storage_conversion.json`` not ``"complete"``) has a ``problem`` saying so.

    ``progress(path)`` is called before each output or file is read (a long walk can
    say where it is).

    Raises:
        RunNotFound: nothing at ``path``.
        ConfigError: ``path`` is not a path or ``s3://`` URL.
        StorageIOError: the bucket cannot be listed (named, with the cause).
    """
    if not isinstance(path, str | os.PathLike | S3Location):
        raise ConfigError(f"path must be a path, got {describe_value(path)}")
    where = parse_location(path, storage_options)
    if isinstance(where, S3Location):
        return inspect_location(where, progress or _quiet)
    if not where.exists():
        raise RunNotFound(f"nothing to inspect at {where}: it does not exist")
    return _any(where, 0, progress or _quiet, top=True)


def _any(path: Path, depth: int, progress: Progress, *, top: bool = False) -> Node:
    progress(path)
    try:
        run = open_run(path)
    except (ConfigError, RunNotFound):
        pass  # several runs or formats, or no output: walk it
    except DaqStorageError as exc:
        if top and path.is_file() and path.suffix.lower() not in LAYOUTS:
            raise
        node = layout_of(path) if path.is_file() else Node(path.name, "output")
        node.problem = node.problem or f"{type(exc).__name__}: {exc}"
        return node
    else:
        with run:
            return _output(path, run, progress)
    if path.is_dir() and (path / "zarr.json").is_file():
        return layout_of(path)
    if path.is_dir():
        return _directory(path, depth, progress)
    if top and path.suffix.lower() not in LAYOUTS:
        raise RunNotFound(
            f"{path}: not a file this project writes (HDF5, Zarr, Parquet, Arrow IPC, CSV, TIFF)"
        )
    return layout_of(path)


def _quiet(path: Path | S3Location) -> None:
    """No progress reported."""


def _directory(path: Path, depth: int, progress: Progress) -> Node:
    node = Node(path.name or str(path), "directory")
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir() and depth + 1 >= MAX_DEPTH:
            node.add(Node(child.name, "directory", "not walked (too deep)"))
            continue
        node.add(_any(child, depth + 1, progress))
    runs = sum(c.kind == "output" for c in node.walk())
    node.facts = {"entries": len(node.children), "outputs": runs}
    node.summary = f"directory · {len(node.children)} entries · {runs} outputs"
    return node


def _output(path: Path, run: Run, progress: Progress) -> Node:
    """An output (or the rotated versions of one run): the run, then its files."""
    files = Node("files", "files")
    local = [f for f in run.files if isinstance(f, Path)]  # inspect opens local paths only
    for output in local:
        if output.is_dir() and not (output / "zarr.json").is_file():
            folder = files.add(Node(output.name, "directory"))
            for child in sorted(output.iterdir()):
                if not child.name.startswith("."):
                    progress(child)
                    folder.add(layout_of(child))
            folder.facts = {"bytes": size_of(output)}
            folder.summary = f"directory · {count(len(folder.children), 'file')} · " + human_bytes(
                folder.facts["bytes"]
            )
        else:
            progress(output)
            files.add(layout_of(output))
    total = sum(size_of(f) for f in local)
    files.facts = {"count": len(local), "bytes": total}
    files.summary = f"{count(len(local), 'output')} · {human_bytes(total)}"
    return output_node(path.name or str(path), run, files, total)
