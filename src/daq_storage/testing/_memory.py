"""Writers that keep tables in memory: partners for a writer under test where a test
needs a second writer with a known policy (:func:`daq_storage.writers.check_all`)."""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

import pyarrow as pa

from daq_storage.errors import UnsupportedData
from daq_storage.writers import StreamDescription, StreamPart, Writer

__all__ = ["MemoryWriter", "StrictMemoryWriter"]


class MemoryWriter(Writer):
    """Tables in memory, one list of batches per part of a stream; everything it
    accepts is visible at once. Widening and new columns evolve in place, an
    incompatible change starts a new part (``<stream>__part0002``, ...).

    It is not registered under its name: create it directly.
    """

    name: ClassVar[str] = "memory"
    suffixes: ClassVar[tuple[str, ...]] = ("",)
    supports_tables: ClassVar[bool] = True
    supports_frames: ClassVar[bool] = False
    mimetype: ClassVar[str] = "application/vnd.apache.arrow.stream"
    on_widening: ClassVar[str] = "in_place"
    on_new_columns: ClassVar[str] = "in_place"
    on_incompatible: ClassVar[str] = "new_part"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.options = self.validate_options()
        #: Per stream: its parts, each a list of the batches stored in it.
        self.tables: dict[str, list[list[pa.RecordBatch]]] = {}
        self.metadata: dict[str | None, dict[str, str]] = {}

    def write_batch(self, stream: str, batch: Any) -> None:
        batch = self._check_batch(stream, batch)
        _, action = self._plan_change(stream, batch.schema)
        parts = self.tables.setdefault(stream, [[]])
        if action == "new_part":
            if stream not in self._parts:
                self._add_part(stream, StreamPart(self.path, stream, 0))
            first = self._table_metadata[stream].rows
            key = f"{stream}__part{len(parts) + 1:04d}"
            self._add_part(stream, StreamPart(self.path, key, first))
            parts.append([])
        parts[-1].append(batch)
        self._stats.batches += 1
        self._stats.rows += batch.num_rows
        self._stats.bytes_written += batch.nbytes
        self._observe_metadata(stream, batch)

    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        self._check_open()
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise UnsupportedData(f"metadata {key!r}: {exc}") from None
        self.metadata.setdefault(stream, {})[key] = text
        self._stored = True

    def flush(self, *, durable: bool = False) -> None:
        self._check_open()

    def visible(self, stream: str) -> int:
        return self.accepted(stream)

    def describe(self, stream: str) -> StreamDescription:
        self._known_stream(stream)
        schema = self._table_schemas[stream]
        return StreamDescription(
            stream=stream,
            kind="table",
            format=self.name,
            mimetype=self.mimetype,
            path=self.path,
            key=stream,
            parts=self._stream_parts(stream, StreamPart(self.path, stream, 0)),
            visible=self.visible(stream),
            accepted=self.accepted(stream),
            columns={field.name: str(field.type) for field in schema},
        )

    def _close(self) -> None:
        return


class StrictMemoryWriter(MemoryWriter):
    """A :class:`MemoryWriter` that refuses every schema change."""

    name: ClassVar[str] = "strict-memory"
    on_widening: ClassVar[str] = "refuse"
    on_new_columns: ClassVar[str] = "refuse"
    on_incompatible: ClassVar[str] = "refuse"
