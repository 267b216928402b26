"""Group attributes and consolidated metadata of a Zarr V3 store, written at each flush.

xarray opens a group through its consolidated metadata (one read, no listing; without
it, ``xr.open_zarr`` warns on every open). zarr-python's own ``consolidate_metadata``
sorts the children by name (``ai0, ai1, ai10, ai2``), so the writer writes it itself,
children in the order it gives (a table's schema order), in the layout zarr-python
reads: the group's ``zarr.json`` holds ``consolidated_metadata`` with every node below
it, keyed by its path from the group. Each ``zarr.json`` is replaced whole (written to
a temporary file, then renamed), so a reader sees the metadata of one flush or of the
next, never a mix: shapes in it never pass what that flush wrote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["write_group_metadata"]

_METADATA = "zarr.json"


def write_group_metadata(
    root: Path,
    attributes: Mapping[str, Mapping[str, Any]],
    order: Mapping[str, Sequence[str]],
) -> None:
    """Rewrite every group's ``zarr.json`` under ``root`` (the store): its attributes
    updated with ``attributes[path]`` (``""`` is the root group) and the consolidated
    metadata of every node below it, children listed in ``order[path]`` first and the
    rest by name."""
    _write_group(root, "", attributes, order)


def _read(folder: Path) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads((folder / _METADATA).read_bytes())
    except FileNotFoundError:
        return None
    return document


def _write_group(
    folder: Path,
    path: str,
    attributes: Mapping[str, Mapping[str, Any]],
    order: Mapping[str, Sequence[str]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the group at ``folder``; return its document and the flat metadata of the
    nodes below it."""
    document = _read(folder)
    if document is None:
        raise FileNotFoundError(2, "no Zarr group metadata", str(folder / _METADATA))
    names = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    first = [name for name in order.get(path, ()) if name in names]
    flat: dict[str, Any] = {}
    for name in [*first, *(name for name in names if name not in first)]:
        child = _read(folder / name)
        if child is None:
            continue  # not a node (a chunk folder, or not yet written)
        if child.get("node_type") == "group":
            child, below = _write_group(folder / name, f"{path}/{name}".lstrip("/"),
                                        attributes, order)  # fmt: skip
            # A group below keeps its attributes here; its own children follow it.
            flat[name] = {**child, "consolidated_metadata": _consolidated({})}
            flat.update({f"{name}/{key}": value for key, value in below.items()})
        else:
            flat[name] = child
    document["attributes"] = {**document.get("attributes", {}), **attributes.get(path, {})}
    document["consolidated_metadata"] = _consolidated(flat)
    target = folder / _METADATA
    temporary = folder / f".{_METADATA}.partial"
    temporary.write_text(json.dumps(document, indent=2, allow_nan=True))
    temporary.replace(target)
    return document, flat


def _consolidated(metadata: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "inline", "must_understand": False, "metadata": metadata}
