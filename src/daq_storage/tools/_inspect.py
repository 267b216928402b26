"""``inspect``: what an output holds, as a tree of :class:`Node` (JSON-able): the run as
the reader sees it (streams, metadata, the loss ledger) and each file as its format lays
it out."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daq_storage.errors import ConfigError, DaqStorageError, RunNotFound, describe_value
from daq_storage.read import LossRange, Run, StreamInfo, open_run
from daq_storage.tools._layouts import LAYOUTS, layout_of, size_of
from daq_storage.tools._node import Node, human_bytes, plain

__all__ = ["inspect_path"]

#: ``progress(path)``: what the walk reads next.
Progress = Callable[[Path], None]

#: How deep ``inspect`` walks into folders that are no output themselves.
MAX_DEPTH = 4


def inspect_path(path: str | os.PathLike[str], *, progress: Progress | None = None) -> Node:
    """A tree of what this project wrote at ``path``: an output (an HDF5 file, a Zarr
    store, a directory of stream files), the rotated versions of a run, a directory of
    several runs or formats (each its own node), or one stream's file.

    An output's node holds a ``run`` node (what :func:`~daq_storage.read.open_run` reads:
    the loss ledger first, the run's metadata, each stream's kind, rows or frames,
    columns and metadata) and a ``files`` node (each file as its format lays it out:
    HDF5 groups and datasets with chunks, codec and ratio; Zarr arrays with dimension
    names and codecs; Parquet row groups; Arrow batches; CSV columns; TIFF pages). A
    file that cannot be read is a node with a ``problem``; the tree goes on.

    ``progress(path)`` is called before each output or file is read (a long walk can
    say where it is).

    Raises:
        RunNotFound: nothing at ``path``.
        ConfigError: ``path`` is not a path.
    """
    if not isinstance(path, str | os.PathLike):
        raise ConfigError(f"path must be a path, got {describe_value(path)}")
    where = Path(path)
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


def _quiet(path: Path) -> None:
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
    run_node = _run(run)
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
            count = _count(len(folder.children), "file")
            folder.summary = f"directory · {count} · {human_bytes(folder.facts['bytes'])}"
        else:
            progress(output)
            files.add(layout_of(output))
    total = sum(size_of(f) for f in local)
    files.facts = {"count": len(local), "bytes": total}
    files.summary = f"{_count(len(local), 'output')} · {human_bytes(total)}"
    lost = run_node.facts["lost_records"]
    node = Node(
        path.name or str(path),
        "output",
        children=[run_node, files],
        facts={
            "format": run.format,
            "run": run.name,
            "bytes": total,
            "streams": len(run_node.child("streams").children),
            "lost_records": lost,
        },
    )
    node.summary = " · ".join(
        [
            f"{run.format} run {run.name!r}",
            _count(node.facts["streams"], "stream"),
            human_bytes(total),
            f"{lost:,} RECORDS LOST" if lost else "no records lost",
        ]
    )
    return node


def _run(run: Run) -> Node:
    node = Node("run", "run")
    losses = run.losses
    metadata = run.metadata
    node.facts = {
        "name": run.name,
        "format": run.format,
        "files": [f.name for f in run.files],
        "lost_records": sum(loss.count for loss in losses),
        "metadata": plain(metadata),
    }
    node.add(_ledger(losses))
    streams = node.add(Node("streams", "streams"))
    for info in run.streams.values():
        streams.add(_stream(info, metadata))
    streams.summary = _count(len(streams.children), "stream")
    node.summary = f"{run.format} · {run.name} · {_count(len(run.files), 'version')}"
    return node


def _count(number: int, what: str) -> str:
    return f"{number:,} {what}" + ("" if number == 1 else "s")


def _ledger(losses: list[LossRange]) -> Node:
    lost = sum(loss.count for loss in losses)
    node = Node("loss ledger", "loss_ledger", facts={"lost_records": lost, "gaps": len(losses)})
    if not losses:
        node.summary = "no records lost"
        return node
    node.summary = f"{lost:,} RECORDS LOST in {_count(len(losses), 'gap')}"
    for loss in losses:
        facts: dict[str, Any] = {
            "first_seq": loss.first,
            "last_seq": loss.last,
            "count": loss.count,
            "after_ns": loss.after_ns,
            "before_ns": loss.before_ns,
            "detected_ns": loss.detected_ns,
            "file": loss.file.name,
        }
        between = ""
        if loss.after_ns is not None and loss.before_ns is not None:
            between = f" between {_time(loss.after_ns)} and {_time(loss.before_ns)}"
        node.add(
            Node(
                f"records {loss.first}-{loss.last}",
                "loss",
                f"{loss.count:,} lost{between} ({loss.file.name})",
                facts,
            )
        )
    return node


def _time(ns: int) -> str:
    import numpy as np

    if ns <= 0:
        return "start"
    return str(np.datetime64(ns, "ns")).replace("T", " ") + " UTC"


def _stream(info: StreamInfo, run_metadata: dict[str, Any]) -> Node:
    own = {
        k: v for k, v in info.metadata.items() if not (k in run_metadata and run_metadata[k] == v)
    }
    facts: dict[str, Any] = {
        "kind": info.kind,
        "rows": info.rows,
        "metadata": plain(own),
        "parts": [
            {"file": p.path.name, "key": p.key, "first": p.first, "rows": p.rows}
            for p in info.parts
        ],
    }
    node = Node(info.name, "stream", facts=facts)
    if info.kind == "frames":
        facts["frame_shape"] = list(info.frame_shape)
        facts["dtype"] = str(info.dtype)
        shape = "x".join(str(n) for n in info.frame_shape)
        node.summary = f"frames · {info.rows:,} x {shape} {info.dtype}"
    else:
        facts["columns"] = {f.name: str(f.type) for f in info.schema}
        node.summary = f"table · {info.rows:,} rows · {len(info.schema)} columns"
        for field in info.schema:
            units = (field.metadata or {}).get(b"units")
            node.add(
                Node(
                    field.name,
                    "column",
                    str(field.type) + (f" [{units.decode()}]" if units else ""),
                    {"type": str(field.type)},
                )
            )
    if len(info.parts) > 1:
        node.summary += f" · {len(info.parts)} parts"
    return node
