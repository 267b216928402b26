"""Zarr v3 stores (see :mod:`daq_storage.writers.zarr` for the layout): a group per
stream, an array per column along ``row`` (struct fields as ``parent.child``, nulls in
``.valid`` arrays), frames in ``frames`` beside ``timestamp_ns`` and ``frame_number``,
parts in ``<stream>__part0002``...

The store is opened through its consolidated metadata, which a writer publishes whole
at each flush: a reader sees every stream as of one flush. A store in a bucket (an
:class:`~daq_storage.location.S3Location`) is read through zarr-python's ``ObjectStore``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import zarr

from daq_storage.errors import ReadError, UnknownStream
from daq_storage.location import S3Location
from daq_storage.read._source import (
    LAYOUT_KEYS,
    PartInfo,
    StreamInfo,
    column_batches,
    json_values,
    select,
)
from daq_storage.read._types import arrow_array, parse_type

__all__ = ["ZarrReader"]

_FRAME_SCHEMA = pa.schema([("timestamp_ns", pa.timestamp("ns", "UTC")),
                           ("frame_number", pa.uint64())])  # fmt: skip


def _numpy(values: Any) -> npt.NDArray[Any]:
    # numpy's StringDType (zarr's text) goes to Arrow as it is: 5x faster than objects
    return np.asarray(values)


class _Part:
    def __init__(self, group: zarr.Group) -> None:
        self.group = group
        self.arrays: dict[str, zarr.Array[Any]] = {}
        self.valid: dict[str, zarr.Array[Any]] = {}
        for key, array in group.arrays():
            if key.endswith(".valid"):
                self.valid[key[: -len(".valid")]] = array
                continue
            name = str(array.attrs.get("original_name", key))
            self.arrays[name] = array
        fields = []
        for name, array in self.arrays.items():
            text = array.attrs.get("arrow_type")
            kind = parse_type(str(text)) if text else _numpy_type(array)
            # The writer's CF time attributes describe the stored integers, not the Arrow
            # type; a value column's own units are its metadata.
            timeish = pa.types.is_timestamp(kind) or pa.types.is_duration(kind) \
                or pa.types.is_date(kind)  # fmt: skip
            metadata = {k: v if isinstance(v, str) else str(v) for k, v in array.attrs.items()
                        if k not in ("arrow_type", "original_name", "coordinates", "dtype")
                        and not (timeish and k in ("units", "calendar"))}  # fmt: skip
            fields.append(pa.field(name, kind, metadata=metadata or None))
        self.schema = pa.schema(fields)
        rows = group.attrs.get("rows")
        lengths = [a.shape[0] for a in self.arrays.values()]
        self.rows = int(rows) if isinstance(rows, int | float) else (min(lengths) if lengths else 0)
        self._keys = {name: array.basename for name, array in self.arrays.items()}

    def batches(self, columns: Sequence[str] | None, batch_rows: int,
                schema: pa.Schema) -> Iterator[pa.RecordBatch]:  # fmt: skip
        def read(name: str, start: int, stop: int) -> tuple[pa.Array, pa.Field] | None:
            array = self.arrays.get(name)
            if array is None:
                return None
            field = self.schema.field(name)
            mask = self.valid.get(self._keys[name])
            valid = None if mask is None else np.asarray(mask[start:stop], bool)
            return arrow_array(_numpy(array[start:stop]), field.type, valid), field

        names = list(self.arrays) if columns is None else list(columns)
        return column_batches(self.rows, names, batch_rows, schema, read)


def _numpy_type(array: zarr.Array[Any]) -> pa.DataType:
    dtype = np.dtype(array.dtype) if not str(array.dtype).startswith("<U") else np.dtype(object)
    if dtype.kind in "OTU":
        return pa.string()
    value = pa.from_numpy_dtype(dtype)
    if len(array.shape) == 2:
        return pa.list_(value, int(array.shape[1]))
    if len(array.shape) > 2:
        return pa.fixed_shape_tensor(value, list(array.shape[1:]))
    return value


class ZarrFrameSource:
    def __init__(self, group: zarr.Group) -> None:
        self.group = group
        self.data: zarr.Array[Any] = group["frames"]  # type: ignore[assignment]
        self.shape = tuple(int(n) for n in self.data.shape)
        self.dtype = np.dtype(self.data.dtype)

    def read(self, index: slice | npt.NDArray[np.intp]) -> npt.NDArray[Any]:
        if isinstance(index, slice):
            if index.step in (None, 1):  # zarr's plain-slice path
                return np.asarray(self.data[index.start : index.stop])
            return np.asarray(self.data[index])
        return np.asarray(self.data.oindex[index])

    def timestamps_ns(self) -> npt.NDArray[np.uint64]:
        return np.asarray(self.group["timestamp_ns"][: self.shape[0]]).astype(np.uint64)  # type: ignore[index]

    def frame_numbers(self) -> npt.NDArray[np.uint64]:
        return np.asarray(self.group["frame_number"][: self.shape[0]]).astype(np.uint64)  # type: ignore[index]


class ZarrReader:
    """One Zarr store."""

    format = "zarr"

    def __init__(self, path: Path | S3Location) -> None:
        self.path = path
        try:
            if isinstance(path, S3Location):
                self.root = zarr.open_group(store=path.zarr_store(read_only=True), mode="r")
            else:
                self.root = zarr.open_group(str(path), mode="r")
        except Exception as exc:  # zarr raises many kinds for a store it cannot open
            raise ReadError(f"{path}: cannot be opened as a Zarr store ({exc})") from exc
        self._infos: dict[str, StreamInfo] | None = None
        self._single: dict[str, StreamInfo | None] = {}  # streams read one by one
        self._parts: dict[str, list[_Part]] = {}
        self._sources: dict[str, ZarrFrameSource] = {}

    def close(self) -> None:
        self._parts.clear()
        self._sources.clear()

    def metadata(self) -> dict[str, Any]:
        return json_values(dict(self.root.attrs))

    def streams(self) -> dict[str, StreamInfo]:
        if self._infos is None:
            infos = {}
            for name, group in self.root.groups():
                info = self._single[name] if name in self._single else self._info(name, group)
                if info is not None:
                    infos[name] = info
            self._infos = infos
        return self._infos

    def catalog_entry(self, name: str) -> tuple[str, pa.Schema, int] | None:
        """One stream's (kind, schema, parts), reading that stream's group alone."""
        info = self._one(name)
        return None if info is None else (info.kind, info.schema, len(info.parts))

    def _one(self, name: str) -> StreamInfo | None:
        if self._infos is not None:
            return self._infos.get(name)
        if name not in self._single:
            info = None
            if name and "/" not in name:
                try:
                    group = self.root[name]
                except KeyError:
                    group = None
                if isinstance(group, zarr.Group):
                    info = self._info(name, group)
            self._single[name] = info
        return self._single[name]

    def _info(self, name: str, group: zarr.Group) -> StreamInfo | None:
        if "part_of" in group.attrs:
            return None
        metadata = {k: v for k, v in json_values(dict(group.attrs)).items()
                    if k not in LAYOUT_KEYS}  # fmt: skip
        if "frames" in group and "rows" not in group.attrs:
            source = self._sources[name] = ZarrFrameSource(group)
            return StreamInfo(
                name,
                "frames",
                source.shape[0],
                _FRAME_SCHEMA,
                metadata,
                (PartInfo(self.path, name, 0, source.shape[0]),),
                source.shape[1:],
                source.dtype,
                files=(self.path,),
            )
        recorded: Any = group.attrs.get("parts", [{"key": name}])
        keys = [str(p["key"]) for p in recorded]
        parts = []
        for key in keys:
            try:
                parts.append(_Part(self.root[key]))  # type: ignore[arg-type]
            except KeyError:
                break  # recorded, not yet published
        fields: dict[str, pa.Field] = {}
        infos, first = [], 0
        for key, part in zip(keys, parts, strict=False):
            infos.append(PartInfo(self.path, key, first, part.rows))
            first += part.rows
            for field in part.schema:
                fields.setdefault(field.name, field)
        self._parts[name] = parts
        return StreamInfo(name, "table", first, pa.schema(list(fields.values())), metadata,
                          tuple(infos), files=(self.path,))  # fmt: skip

    def iter_batches(self, stream: str, columns: Sequence[str] | None, batch_rows: int,
                     part: int | None = None) -> Iterator[pa.RecordBatch]:  # fmt: skip
        info = self._one(stream)
        if info is None:
            raise UnknownStream(f"{self.path}: no stream {stream!r}")
        if info.kind == "frames":
            source = self.frames(stream)
            stamps, numbers = source.timestamps_ns(), source.frame_numbers()
            for start in range(0, len(stamps), batch_rows):
                batch = pa.record_batch({
                    "timestamp_ns": arrow_array(stamps[start : start + batch_rows],
                                                pa.timestamp("ns", "UTC")),
                    "frame_number": pa.array(numbers[start : start + batch_rows]),
                })  # fmt: skip
                yield select(batch, columns)
            return
        parts = self._parts[stream] if part is None else [self._parts[stream][part]]
        for held in parts:
            yield from held.batches(columns, batch_rows, info.schema)

    def frames(self, stream: str) -> ZarrFrameSource:
        info = self._one(stream)
        if info is None or info.kind != "frames":
            raise UnknownStream(f"{self.path}: no frame stream {stream!r}")
        source = self._sources.get(stream)
        return source if source is not None else ZarrFrameSource(self.root[stream])  # type: ignore[arg-type]
