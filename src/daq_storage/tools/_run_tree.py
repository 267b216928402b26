"""The part of ``inspect``'s tree every output has, wherever it is stored: the run as
:func:`~daq_storage.read.open_run` reads it (the loss ledger first, the run's metadata,
each stream's kind, rows or frames, columns and metadata)."""

from __future__ import annotations

from typing import Any

from daq_storage.read import LossRange, Run, StreamInfo
from daq_storage.tools._node import Node, human_bytes, plain

__all__ = ["count", "output_node"]


def output_node(name: str, run: Run, files: Node, total: int) -> Node:
    """An output's node: the run's, then ``files`` (its layout, ``total`` bytes)."""
    run_node = _run(run)
    lost = run_node.facts["lost_records"]
    node = Node(
        name,
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
            count(node.facts["streams"], "stream"),
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
    streams.summary = count(len(streams.children), "stream")
    node.summary = f"{run.format} · {run.name} · {count(len(run.files), 'version')}"
    return node


def count(number: int, what: str) -> str:
    return f"{number:,} {what}" + ("" if number == 1 else "s")


def _ledger(losses: list[LossRange]) -> Node:
    lost = sum(loss.count for loss in losses)
    node = Node("loss ledger", "loss_ledger", facts={"lost_records": lost, "gaps": len(losses)})
    if not losses:
        node.summary = "no records lost"
        return node
    node.summary = f"{lost:,} RECORDS LOST in {count(len(losses), 'gap')}"
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
