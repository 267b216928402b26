"""A plug-in author's tests: the example plug-in, installed by entry point, through the
shipped conformance suite (daq_storage.testing.WriterConformance), read back as its
documentation says a user reads it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest

from daq_storage.testing import WriterConformance
from tests.testing.plugin import forget_plugin, install_plugin


def read_jsonl(path: Path, stream: str) -> pa.Table:
    """A stream (or a part) as the plug-in's documentation says to read it: the lines
    with its name, each column as the Arrow type its metadata names."""
    columns: dict[str, dict[str, str]] = _document(path)["columns"].get(stream, {})
    with path.open(encoding="utf-8") as file:
        rows = [row for row in map(json.loads, file) if row.pop("stream") == stream]
    arrays = {}
    for name, attributes in columns.items():
        values = [row.get(name) for row in rows]
        kind = attributes["arrow_type"]
        if kind.startswith("timestamp["):
            unit, _, zone = kind.removeprefix("timestamp[").rstrip("]").partition(", tz=")
            arrays[name] = pa.array(values, pa.int64()).cast(pa.timestamp(unit, zone or None))
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def _document(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.with_name(path.name + ".meta.json").read_text())
    return document


class TestJsonLinesPlugin(WriterConformance):
    writer_name = "jsonl"
    target = "run.jsonl"
    typed_attributes = False  # field metadata is kept as text

    @pytest.fixture(autouse=True)
    def _installed(
        self, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[None]:
        install_plugin(tmp_path_factory.mktemp("site"), monkeypatch)
        yield
        forget_plugin()

    def read_table(self, path: Path, stream: str) -> pa.Table:
        return read_jsonl(path, stream)

    def read_metadata(self, path: Path, stream: str | None) -> dict[str, Any]:
        document = _document(path)
        section: dict[str, Any] = (
            document["file"] if stream is None else document["streams"][stream]
        )
        return section

    def read_column_attributes(self, path: Path, stream: str, column: str) -> dict[str, Any]:
        attributes: dict[str, Any] = _document(path)["columns"][stream][column]
        return attributes

    def read_times(self, path: Path, stream: str, column: str) -> npt.NDArray[Any]:
        times = read_jsonl(path, stream).column(column).cast(pa.timestamp("ns"))
        return np.asarray(times.to_numpy())
