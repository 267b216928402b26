"""``inspect`` of an ``s3://`` prefix: each output found by listing (a Zarr store, a
Parquet or Arrow IPC output of part objects per stream), the run as the reader sees it,
and its objects as their formats lay them out, read over the store (a Parquet part's
footer only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from daq_storage.errors import DaqStorageError, RunNotFound
from daq_storage.location import S3Location, s3_errors
from daq_storage.read import list_runs, open_run
from daq_storage.tools._convert_s3 import CONVERSION
from daq_storage.tools._layouts import arrow_layout, json_layout, parquet_layout, zarr_layout
from daq_storage.tools._node import Node, human_bytes
from daq_storage.tools._run_tree import count, output_node

__all__ = ["inspect_location"]


#: ``progress(where)``: what the walk reads next.
Progress = Callable[[Path | S3Location], None]


def inspect_location(location: S3Location, progress: Progress) -> Node:
    """The tree of the output at ``location``, or of every output under its prefix.

    Raises:
        RunNotFound: no output at or under ``location``.
        StorageIOError: the bucket cannot be listed (named, with the cause).
    """
    found = [
        (kind, output)
        for listing in list_runs(location)
        for kind, outputs in listing.outputs.items()
        for output in outputs
    ]
    if not found:
        raise RunNotFound(
            f"nothing to inspect at {location.url}: no Zarr store, Parquet or Arrow IPC "
            "output there or right under it"
        )
    if len(found) == 1 and isinstance(found[0][1], S3Location) and found[0][1] == location:
        return _output(location, found[0][0], progress)
    node = Node(location.name or location.url, "directory")
    for kind, output in found:
        assert isinstance(output, S3Location)
        node.add(_output(output, kind, progress))
    node.facts = {"entries": len(node.children), "outputs": len(node.children)}
    node.summary = f"prefix · {count(len(node.children), 'output')}"
    return node


def _objects(location: S3Location) -> dict[str, int]:
    """Key under ``location`` -> size, of every object there."""
    import obstore

    with s3_errors(location, "list"):
        return {
            o["path"]: int(o["size"])
            for chunk in obstore.list(location.object_store())
            for o in chunk
        }


def _output(location: S3Location, kind: str, progress: Progress) -> Node:
    progress(location)
    objects = _objects(location)
    total = sum(objects.values())
    files = Node("files", "files", facts={"count": len(objects), "bytes": total})
    files.summary = f"{count(len(objects), 'object')} · {human_bytes(total)}"
    if kind == "zarr":
        files.add(_zarr(location, total))
        for key in sorted(k for k in objects if k.startswith("_")):
            files.add(_object(location.child(key), objects[key], progress))
    else:
        files.add(_per_stream(location, objects, progress))
    try:
        with open_run(location) as run:
            node = output_node(location.name, run, files, total)
    except DaqStorageError as exc:
        node = Node(location.name, "output", children=[files], facts={"format": kind})
        node.problem = f"{type(exc).__name__}: {exc}"
    node.facts.update(url=location.url, objects=len(objects))
    if CONVERSION in objects:
        state = _conversion_state(files)
        node.facts["conversion"] = state
        if state != "complete":
            node.problem = (
                f"incomplete conversion: {CONVERSION} says {state!r}, not 'complete' (the "
                "conversion was killed); delete the prefix and convert again"
            )
    return node


def _conversion_state(files: Node) -> str:
    """The ``state`` of the conversion document among the output's file nodes."""
    for node in files.walk():
        if node.name == CONVERSION:
            content = node.facts.get("content")
            state = content.get("state") if isinstance(content, dict) else None
            return str(state) if state is not None else "unreadable"
    return "unreadable"


def _zarr(location: S3Location, total: int) -> Node:
    import zarr

    try:
        with s3_errors(location, "read"):
            group = zarr.open_group(store=location.zarr_store(read_only=True), mode="r")
            return zarr_layout(location.name, total, group)
    except Exception as exc:  # the library's failure is this store's verdict, not the tree's
        node = Node(location.name, "file", facts={"format": "zarr", "bytes": total})
        node.problem = f"{type(exc).__name__}: {exc}"
        return node


def _per_stream(location: S3Location, objects: dict[str, int], progress: Progress) -> Node:
    """The output's objects: its documents (the writer's claim...), then a folder of part
    objects per stream."""
    top = Node(location.name, "directory", facts={"bytes": sum(objects.values())})
    folders: dict[str, Node] = {}
    for key in sorted(objects):
        folder = key.rpartition("/")[0]
        parent = top
        if folder:
            if folder not in folders:
                folders[folder] = top.add(Node(folder, "directory", facts={"bytes": 0}))
            parent = folders[folder]
            parent.facts["bytes"] += objects[key]
        parent.add(_object(location.child(key), objects[key], progress))
    for stream in folders.values():
        parts = count(len(stream.children), "part")
        stream.summary = f"stream prefix · {parts} · {human_bytes(stream.facts['bytes'])}"
    top.summary = f"prefix · {count(len(objects), 'object')} · {human_bytes(top.facts['bytes'])}"
    return top


def _object(location: S3Location, size: int, progress: Progress) -> Node:
    """One object as its format lays it out (a Parquet part: its footer only)."""
    progress(location)
    suffix = location.name.rpartition(".")[2].lower()
    filesystem = location.arrow_filesystem()
    try:
        with s3_errors(location, "read"):
            if suffix == "parquet":
                with filesystem.open_input_file(location.arrow_path) as source:
                    return parquet_layout(location.name, size, source)
            if suffix in ("arrow", "arrows"):
                with filesystem.open_input_file(location.arrow_path) as source:
                    return arrow_layout(location.name, size, pa.BufferReader(source.read_buffer()))
            if suffix == "json":
                with filesystem.open_input_file(location.arrow_path) as source:
                    return json_layout(location.name, source.read())
    except Exception as exc:  # the library's failure is this object's verdict, not the tree's
        return Node(
            location.name, "file", facts={"format": suffix, "bytes": size}, problem=f"{exc}"
        )
    return Node(location.name, "file", human_bytes(size), {"bytes": size})
