"""The stream writer's outputs (:mod:`daq_storage.streams`) read back: its ``data``
stream's int16 counts converted to values (``counts * scale_factor + add_offset``, the
CF rule, in float64), the file's ``metadata`` and ``channels`` groups folded into the
``data`` stream's metadata (with ``gaps``: the samples that never reached the writer).

A reader of the format (HDF5, Arrow IPC) does the reading; this one wraps it when the
output says it is a stream writer's (``layout = "daq_storage.streams"``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from daq_storage.location import S3Location
from daq_storage.read._source import FrameSource, Reader, StreamInfo

__all__ = ["ChannelReader", "channel_reader"]

LAYOUT = "daq_storage.streams"  # daq_storage.streams.LAYOUT (read/ does not import it)
_DATA = "data"
_HIDDEN = ("metadata", "channels")  # HDF5 groups describing ``data``: no streams of their own
_SCALE = ("scale_factor", "add_offset")


def channel_reader(reader: Reader) -> Reader:
    """``reader`` wrapped in a :class:`ChannelReader` when its output is a stream
    writer's, else ``reader`` itself (checked cheaply: one HDF5 attribute; for Arrow
    IPC, whether a ``data.arrows`` file is there, then its metadata)."""
    if reader.format == "hdf5":
        held = getattr(reader, "file").get("metadata")  # noqa: B009  (an Hdf5Reader's)
        marked = getattr(held, "attrs", {}).get("layout") == LAYOUT
    else:
        marked = False
        where = reader.path
        # (the stream writer writes local files only: an s3:// output is never its)
        if isinstance(where, Path) and (where / f"{_DATA}.arrows").is_file():
            data = reader.streams().get(_DATA)
            marked = data is not None and data.metadata.get("layout") == LAYOUT
    return ChannelReader(reader) if marked else reader


def _scaled(field: pa.Field) -> tuple[float, float] | None:
    """The field's (scale_factor, add_offset) when it holds counts, else ``None``."""
    metadata = field.metadata or {}
    if b"scale_factor" not in metadata or not pa.types.is_integer(field.type):
        return None
    return float(metadata[b"scale_factor"]), float(metadata.get(b"add_offset", b"0"))


def _value_field(field: pa.Field) -> pa.Field:
    metadata = {k: v for k, v in (field.metadata or {}).items() if k.decode() not in _SCALE}
    metadata[b"stored_as"] = f"{field.type} counts".encode()
    return pa.field(field.name, pa.float64(), field.nullable, metadata=metadata)


class ChannelReader:
    """A stream writer's output: every stream of the wrapped reader but ``metadata`` and
    ``channels`` (folded into ``data``'s metadata); ``data``'s counts read as values."""

    def __init__(self, inner: Reader) -> None:
        self._inner = inner
        self.path: Path | S3Location = inner.path
        self.format: str = inner.format
        self._infos: dict[str, StreamInfo] | None = None
        self._scales: dict[str, tuple[float, float]] = {}

    def streams(self) -> dict[str, StreamInfo]:
        if self._infos is None:
            inner = self._inner.streams()
            infos = {n: i for n, i in inner.items() if n not in _HIDDEN}
            data = infos.get(_DATA)
            if data is not None:
                metadata = dict(data.metadata)
                if "metadata" in inner:
                    metadata.update(inner["metadata"].metadata)
                metadata.setdefault("gaps", [])
                fields = []
                for field in data.schema:
                    scale = _scaled(field)
                    if scale is not None:
                        self._scales[field.name] = scale
                        field = _value_field(field)
                    fields.append(field)
                infos[_DATA] = StreamInfo(data.name, data.kind, data.rows, pa.schema(fields),
                                          metadata, data.parts, data.frame_shape, data.dtype,
                                          files=data.files)  # fmt: skip
            self._infos = infos
        return self._infos

    def metadata(self) -> dict[str, Any]:
        return self._inner.metadata()

    def iter_batches(self, stream: str, columns: Sequence[str] | None, batch_rows: int,
                     part: int | None = None) -> Iterator[pa.RecordBatch]:  # fmt: skip
        infos = self.streams()
        batches = self._inner.iter_batches(stream, columns, batch_rows, part)
        if stream != _DATA or not self._scales:
            yield from batches
            return
        schema = infos[_DATA].schema
        for batch in batches:
            arrays, fields = [], []
            for name, array in zip(batch.schema.names, batch.columns, strict=True):
                scale = self._scales.get(name)
                if scale is not None and pa.types.is_integer(array.type):
                    counts = array.to_numpy(zero_copy_only=False)
                    values = counts * scale[0] + scale[1]  # float64: exact for int16
                    array = pa.array(values, pa.float64(), mask=None if array.null_count == 0
                                     else ~np.asarray(array.is_valid()))  # fmt: skip
                    fields.append(schema.field(name))
                else:
                    fields.append(batch.schema.field(name))
                arrays.append(array)
            yield pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))

    def frames(self, stream: str) -> FrameSource:
        return self._inner.frames(stream)

    def close(self) -> None:
        self._inner.close()
