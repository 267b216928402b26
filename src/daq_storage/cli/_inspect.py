"""``daq-storage inspect``: a tree of what a file, a run or a directory of runs holds."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from daq_storage.cli._common import EXIT_DATA_LOST, console, error_line, reports_errors

if TYPE_CHECKING:
    from rich.status import Status

    from daq_storage.location import S3Location
    from daq_storage.tools import Node

__all__ = ["inspect", "render"]

#: Children shown per node (the JSON holds them all).
SHOWN_CHILDREN = 40
#: Characters of an attribute's value shown (the JSON holds it whole).
SHOWN_VALUE = 100

_EXAMPLES = """\b
Examples:
  daq-storage inspect data/lab_2026-03-01_12-00-00_v1.h5
  daq-storage inspect data/                  # every run and format in a folder
  daq-storage inspect run_parquet/power.parquet
  daq-storage inspect run.zarr --json | jq '.children[0].facts'
  daq-storage inspect s3://lab-data/runs/    # AWS_* variables / profile say where
"""


@click.command("inspect", epilog=_EXAMPLES)
@click.argument("path")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the tree as JSON (every fact, in full)."
)
@click.option(
    "--no-attributes",
    "hide_attributes",
    is_flag=True,
    help="Leave out the attributes (metadata) of files, groups and datasets.",
)
@click.option(
    "--progress-after",
    type=float,
    default=1.0,
    hidden=True,
    help="Seconds before the activity line shows.",
)
@reports_errors
def inspect(path: str, as_json: bool, hide_attributes: bool, progress_after: float) -> None:
    """Show what PATH holds: an HDF5 file, a Zarr store, a run directory of Arrow IPC,
    Parquet, CSV or TIFF files, the rotated versions of a run, a folder of runs, or one
    stream's file; or an s3://bucket/prefix: a Zarr store, a Parquet or Arrow IPC output
    (its part objects per stream), or a prefix of such outputs, reached with the AWS_*
    variables and ~/.aws profiles (no credentials on the command line).

    For each run: the loss ledger (records the Recorder lost), the run's metadata, each
    stream's kind, rows or frames, columns and metadata. For each file, its layout:
    HDF5 groups and datasets (shape, dtype, chunks, codec and compression ratio,
    attributes), Zarr arrays (dimension names, chunks, codecs, ratio), Parquet schema
    and row groups, Arrow IPC schema and batches, CSV columns and rows, TIFF pages.

    Exits with status 3 when a file could not be read or a conversion into a bucket
    was interrupted (each named on stderr), 2 on an error.
    """
    from daq_storage.tools import inspect_path

    activity = _Activity(progress_after)
    try:
        tree = inspect_path(path, progress=activity.update)
    finally:
        activity.stop()
    if as_json:
        click.echo(json.dumps(tree.to_dict(), indent=2))
    else:
        console.print(render(tree, attributes=not hide_attributes))
        for node in tree.walk():
            if node.kind == "output" and node.facts.get("lost_records"):
                console.print(
                    Text(
                        f"{node.name}: {node.facts['lost_records']:,} records were "
                        "lost while recording (see its loss ledger)",
                        style="bold red",
                    )
                )
    problems = tree.problems
    for node in problems:
        error_line(f"{node.name}: {node.problem}")
    if problems:
        sys.exit(EXIT_DATA_LOST)


class _Activity:
    """A spinner on stderr naming what is being read, shown once inspecting has taken
    ``after`` seconds, and only on a terminal."""

    def __init__(self, after: float) -> None:
        self.began = time.monotonic()
        self.after = after
        self.console = Console(stderr=True)
        self.status: Status | None = None

    def update(self, where: Path | S3Location) -> None:
        if not self.console.is_terminal:
            return
        if self.status is None:
            if time.monotonic() - self.began < self.after:
                return
            self.status = self.console.status(f"inspecting {where.name}")
            self.status.start()
        else:
            self.status.update(f"inspecting {where.name}")

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()


def _label(node: Node) -> Text:
    label = Text(node.name, style="bold")
    if node.summary:
        style = "dim" if node.kind in ("column", "file") else ""
        if node.kind == "loss_ledger":
            style = "bold red" if node.facts.get("lost_records") else "green"
        elif node.kind == "output" and node.facts.get("lost_records"):
            style = "bold red"
        label.append("  " + node.summary, style=style)
    if node.problem:
        label.append(f"  unreadable: {node.problem}", style="bold red")
    return label


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= SHOWN_VALUE else text[: SHOWN_VALUE - 1] + "…"


def render(node: Node, *, attributes: bool = True, tree: Tree | None = None) -> Tree:
    """``node`` and its descendants as a rich ``Tree`` (long lists and values cut)."""
    branch = Tree(_label(node)) if tree is None else tree.add(_label(node))
    if attributes:
        shown = dict(node.facts.get("attributes") or {})
        if node.kind in ("run", "stream"):
            shown = dict(node.facts.get("metadata") or {})
        for key, value in shown.items():
            branch.add(Text(f"{key} = {_value(value)}", style="cyan"))
    for child in node.children[:SHOWN_CHILDREN]:
        render(child, attributes=attributes, tree=branch)
    if len(node.children) > SHOWN_CHILDREN:
        branch.add(Text(f"… {len(node.children) - SHOWN_CHILDREN} more (see --json)", style="dim"))
    return branch
