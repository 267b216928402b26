"""The tree ``inspect`` builds: nodes holding facts, every value plain JSON."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Node", "human_bytes", "plain"]


@dataclass
class Node:
    """One thing ``inspect`` found: a directory, a run, a stream, a file, an HDF5
    group or dataset, a Zarr array, a Parquet column...

    Attributes:
        name: what it is called (a file name, a stream name, a dataset's name).
        kind: what it is: ``"directory"``, ``"output"``, ``"run"``, ``"loss_ledger"``,
            ``"loss"``, ``"streams"``, ``"stream"``, ``"column"``, ``"files"``,
            ``"file"``, ``"group"``, ``"dataset"``, ``"array"``, ``"row_groups"``.
        summary: one line saying what matters most (shape, rows, codec, ratio...).
        facts: everything known about it, as plain JSON values (numbers, text, lists,
            dicts); ``attributes`` holds a group's, dataset's or file's own metadata.
        children: what it holds.
        problem: why it (or part of it) could not be read, else ``None``.
    """

    name: str
    kind: str
    summary: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    problem: str | None = None

    def add(self, child: Node) -> Node:
        """Append ``child`` and return it."""
        self.children.append(child)
        return child

    def child(self, *names: str) -> Node:
        """The descendant reached by ``names`` (a child's name, then its child's...).

        Raises:
            KeyError: no child of that name (the message lists those there are).
        """
        node = self
        for name in names:
            found = next((c for c in node.children if c.name == name), None)
            if found is None:
                raise KeyError(
                    f"{node.name!r} has no child {name!r}; its children are "
                    f"{[c.name for c in node.children]}"
                )
            node = found
        return node

    def walk(self) -> Iterator[Node]:
        """This node and every descendant, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def problems(self) -> list[Node]:
        """Every node of the tree (this one included) whose reading failed."""
        return [node for node in self.walk() if node.problem is not None]

    def to_dict(self) -> dict[str, Any]:
        """The tree as JSON-able dicts: ``name``, ``kind``, ``summary``, ``facts``,
        ``children`` (and ``problem`` where there is one)."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "summary": self.summary,
            "facts": plain(self.facts),
        }
        if self.problem is not None:
            out["problem"] = self.problem
        out["children"] = [c.to_dict() for c in self.children]
        return out


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it: numpy scalars and arrays as numbers and lists,
    bytes as text, paths as text, tuples as lists, NaN and infinities as text; anything
    else as its ``str``."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def human_bytes(count: int | float) -> str:
    """``count`` bytes as people read them: ``"512 B"``, ``"7.98 MB"`` (powers of 1000,
    as the README's figures)."""
    if count < 1000:
        return f"{int(count)} B"
    for unit in ("kB", "MB", "GB", "TB"):
        count /= 1000
        if count < 1000 or unit == "TB":
            return f"{count:.3g} {unit}" if count < 100 else f"{count:.0f} {unit}"
    raise AssertionError("unreachable")
