"""HDF5 outputs (see :mod:`daq_storage.writers.hdf5` for the layout): a group per
stream, a dataset per column (struct fields as ``parent.child``, nulls in ``.valid``
masks), frames in ``frames`` beside ``timestamp_ns`` and ``frame_number``, parts in
``<stream>__part0002``...; also dictionary-coded text columns (codes, and a
``<column>.categories`` dataset) and Arrow IPC files kept in ``/arrow_data/<stream>``.

A file another process is writing is opened read-only without HDF5's file lock and in
SWMR mode (which also reads files written without SWMR): the reader sees what the
writer's last commit holds, every dataset of a stream at one length.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import h5py
import hdf5plugin  # noqa: F401  (registers the lz4, zstd, blosc filters the writer uses)
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import ReadError, UnknownStream
from daq_storage.read._source import (
    LAYOUT_KEYS,
    PartInfo,
    StreamInfo,
    column_batches,
    json_values,
    select,
)
from daq_storage.read._types import arrow_array, parse_type

__all__ = ["Hdf5Reader"]

_FRAME_SCHEMA = pa.schema([("timestamp_ns", pa.timestamp("ns", "UTC")),
                           ("frame_number", pa.uint64())])  # fmt: skip
_STORED = re.compile(r"^<stored in (/.+)>$")
_IPC_NAME = re.compile(r"^\d{8}$")
ARROW_GROUP = "arrow_data"


def _dataset_name(column: str) -> str:
    name = column.replace("%", "%25").replace("/", "%2F")
    return "%2E" if name == "." else name


def _leaves(name: str, kind: pa.DataType) -> Iterator[str]:
    if pa.types.is_struct(kind):
        for i in range(kind.num_fields):
            yield from _leaves(f"{name}.{kind.field(i).name}", kind.field(i).type)
    else:
        yield name


class _Column:
    """One stored column of a part: its dataset, mask and how it reads as Arrow."""

    def __init__(self, group: h5py.Group, key: str) -> None:
        self.dataset: h5py.Dataset = group[key]
        self.name = unquote(key)
        attrs = self.dataset.attrs
        text = attrs.get("arrow_type")
        self.type: pa.DataType | None = parse_type(str(text)) if text is not None else None
        self.valid: h5py.Dataset | None = group.get(f"{key}.valid")
        self.categories: pa.Array | None = None
        if attrs.get("encoding") == "dictionary":
            holder = group.get(str(attrs.get("categories", f"{key}.categories")))
            if holder is None:
                raise ReadError(f"{group.file.filename}: {self.dataset.name} is dictionary-"
                                f"coded but its categories dataset is missing")  # fmt: skip
            self.categories = pa.array(holder.asstr()[()], pa.string())
        if self.type is None:
            self.type = _numpy_type(self.dataset)
        metadata: dict[str, str] = {}
        if "schema" in attrs:
            with _json_attr(group, "schema"):
                described = json.loads(attrs["schema"])
                if described.get("name") == self.name:
                    metadata = described.get("metadata") or {}
        self.field = pa.field(self.name, self.type, metadata=metadata or None)

    def read(self, start: int, stop: int) -> pa.Array:
        mask = None if self.valid is None else self.valid[start:stop]
        if self.categories is not None:
            codes = self.dataset[start:stop]
            indices = pa.array(codes, mask=None if mask is None else ~mask)
            array = pa.DictionaryArray.from_arrays(indices, self.categories)
            if pa.types.is_dictionary(self.type):
                return array.cast(self.type)
            return array.dictionary_decode().cast(self.type)
        if h5py.check_string_dtype(self.dataset.dtype) is not None:
            values = self.dataset[start:stop]  # UTF-8 bytes: cast in Arrow, not one by one
            binary = pa.array(values, pa.binary(), mask=None if mask is None else ~mask)
            if isinstance(binary, pa.ChunkedArray):
                binary = binary.combine_chunks()
            text = binary.cast(pa.string())
            if pa.types.is_dictionary(self.type):
                return text.dictionary_encode().cast(self.type)
            return text if self.type in (None, pa.string()) else text.cast(self.type)
        return arrow_array(self.dataset[start:stop], self.type, mask)


def _numpy_type(dataset: h5py.Dataset) -> pa.DataType:
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return pa.string()
    if dataset.ndim > 1:
        value = pa.from_numpy_dtype(dataset.dtype)
        if dataset.ndim == 2:
            return pa.list_(value, int(dataset.shape[1]))
        return pa.fixed_shape_tensor(value, list(dataset.shape[1:]))
    if h5py.check_vlen_dtype(dataset.dtype) is not None:
        return pa.list_(pa.from_numpy_dtype(h5py.check_vlen_dtype(dataset.dtype)))
    return pa.from_numpy_dtype(dataset.dtype)


class _json_attr:  # a context manager naming the attribute at fault
    def __init__(self, group: h5py.Group, key: str) -> None:
        self.where = f"{group.file.filename}: attribute {key!r} of {group.name}"

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, ValueError | TypeError):
            raise ReadError(f"{self.where} is not the JSON this reader knows: {exc}") from exc


class _Part:
    """A table part's columns (an HDF5 group)."""

    def __init__(self, group: h5py.Group) -> None:
        self.group = group
        keys = [k for k in group if not k.endswith((".valid", ".categories"))
                and isinstance(group[k], h5py.Dataset)]  # fmt: skip
        order: list[str] = []
        if "schema" in group.attrs:
            with _json_attr(group, "schema"):
                described = json.loads(group.attrs["schema"])
                for field in described.get("fields", []):
                    kind = parse_type(field["type"])
                    order += [_dataset_name(leaf) for leaf in _leaves(field["name"], kind)]
        ordered = [k for k in order if k in keys]
        ordered += [k for k in keys if k not in ordered]
        self.columns = {unquote(k): _Column(group, k) for k in ordered}
        lengths = [len(c.dataset) for c in self.columns.values()]
        lengths += [len(c.valid) for c in self.columns.values() if c.valid is not None]
        self.rows = min(lengths) if lengths else 0
        self.schema = pa.schema([c.field for c in self.columns.values()])

    def batches(self, columns: Sequence[str] | None, batch_rows: int,
                schema: pa.Schema) -> Iterator[pa.RecordBatch]:  # fmt: skip
        def read(name: str, start: int, stop: int) -> tuple[pa.Array, pa.Field] | None:
            column = self.columns.get(name)
            return None if column is None else (column.read(start, stop), column.field)

        names = list(self.columns) if columns is None else list(columns)
        return column_batches(self.rows, names, batch_rows, schema, read)


class _IpcPart:
    """A stream (part) kept as Arrow IPC files in uint8 datasets
    (``/arrow_data/<stream>``), read in dataset-name order; a later dataset may widen a
    type or add a column (joined as ``concat_tables(promote_options="permissive")``)."""

    def __init__(self, group: h5py.Group) -> None:
        self.group = group
        self.names = sorted(k for k in group if _IPC_NAME.match(k))
        self.rows = 0
        fields: dict[str, pa.Field] = {}
        for name in self.names:
            for field in self._schema_of(name):
                fields.setdefault(field.name, field)
            rows = group[name].attrs.get("rows")
            if rows is None:
                reader = self._open(name)
                count = reader.num_record_batches
                rows = sum(reader.get_batch(i).num_rows for i in range(count))
            self.rows += int(rows)
        self.schema = pa.schema(list(fields.values()))

    def _open(self, name: str) -> pa.ipc.RecordBatchFileReader:
        data = np.asarray(self.group[name][()], np.uint8)
        try:
            return pa.ipc.open_file(pa.py_buffer(data.tobytes()))
        except pa.ArrowInvalid as exc:
            raise ReadError(
                f"{self.group.file.filename}: {self.group.name}/{name} is not an Arrow IPC "
                f"file ({exc})"
            ) from exc

    def _schema_of(self, name: str) -> pa.Schema:
        """A dataset's schema, from its first bytes (the schema message after the magic)
        when they hold it, so listing streams reads no data."""
        dataset = self.group[name]
        head = np.asarray(dataset[: min(len(dataset), 1 << 16)], np.uint8).tobytes()
        if head.startswith(b"ARROW1"):
            with contextlib.suppress(pa.ArrowInvalid, OSError):
                return pa.ipc.read_schema(pa.py_buffer(head[8:])).remove_metadata()
        return self._open(name).schema.remove_metadata()

    def batches(
        self, columns: Sequence[str] | None, batch_rows: int, schema: pa.Schema
    ) -> Iterator[pa.RecordBatch]:
        for name in self.names:
            reader = self._open(name)
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i).replace_schema_metadata(None)
                for start in range(0, batch.num_rows, batch_rows):
                    yield select(batch.slice(start, batch_rows), columns, schema)


class Hdf5FrameSource:
    """A frame stream's datasets."""

    def __init__(self, group: h5py.Group) -> None:
        self.group = group
        self.data: h5py.Dataset = group["frames"]
        length = min(len(self.data), len(group["timestamp_ns"]), len(group["frame_number"]))
        self.shape = (length, *self.data.shape[1:])
        self.dtype = self.data.dtype

    def read(self, index: slice | npt.NDArray[np.intp]) -> npt.NDArray[Any]:
        if isinstance(index, slice):
            if index.step in (None, 1):
                out = np.empty((max(0, index.stop - index.start), *self.shape[1:]), self.dtype)
                if len(out):
                    self.data.read_direct(out, np.s_[index.start : index.stop])
                return out
            return np.asarray(self.data[index])
        return np.asarray(self.data[index])

    def timestamps_ns(self) -> npt.NDArray[np.uint64]:
        return np.asarray(self.group["timestamp_ns"][: self.shape[0]]).astype(np.uint64)

    def frame_numbers(self) -> npt.NDArray[np.uint64]:
        return np.asarray(self.group["frame_number"][: self.shape[0]]).astype(np.uint64)


def _holds_streams(group: h5py.Group) -> bool:
    """``/arrow_data`` of the Arrow IPC layout (a group per stream), not a stream of
    that name."""
    return all(isinstance(g, h5py.Group) for g in group.values())


class Hdf5Reader:
    """One HDF5 file."""

    format = "hdf5"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.file = h5py.File(path, "r", locking=False, swmr=True)
        except OSError as exc:
            raise ReadError(f"{path}: cannot be opened as HDF5 ({exc})") from exc
        self._infos: dict[str, StreamInfo] | None = None
        self._single: dict[str, StreamInfo | None] = {}  # streams read one by one
        self._parts: dict[str, list[_Part | _IpcPart]] = {}

    def close(self) -> None:
        self.file.close()

    def _attrs(self, target: h5py.Group) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, value in target.attrs.items():
            if isinstance(value, str) and (match := _STORED.match(value)):
                held = self.file.get(match.group(1))
                if isinstance(held, h5py.Dataset):
                    value = held.asstr()[()] if h5py.check_string_dtype(held.dtype) else held[()]
            values[key] = value
        return json_values(values)

    def metadata(self) -> dict[str, Any]:
        return self._attrs(self.file)

    def streams(self) -> dict[str, StreamInfo]:
        if self._infos is None:
            infos: dict[str, StreamInfo] = {}
            for name, group in self.file.items():
                if not isinstance(group, h5py.Group) or name.startswith("_"):
                    continue
                if name == ARROW_GROUP and _holds_streams(group):
                    for stream, held in group.items():
                        info = self._info(stream, held)
                        if info is not None:
                            infos[stream] = info
                    continue
                info = self._info(name, group)
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
        if name in self._single:
            return self._single[name]
        info = None
        if name and not name.startswith("_") and "/" not in name:
            group = self.file.get(name)
            arrow = self.file.get(ARROW_GROUP)
            layout = isinstance(arrow, h5py.Group) and _holds_streams(arrow)
            if isinstance(group, h5py.Group) and not (name == ARROW_GROUP and layout):
                info = self._info(name, group)
            elif layout and name in arrow:
                info = self._info(name, arrow[name])
        self._single[name] = info
        return info

    def _info(self, name: str, group: Any) -> StreamInfo | None:
        """The stream held in ``group`` (``None``: a later part of another stream)."""
        if not isinstance(group, h5py.Group) or "part_of" in group.attrs:
            return None
        if group.parent.name != f"/{ARROW_GROUP}" and "frames" in group \
                and "schema" not in group.attrs:  # fmt: skip
            return self._frames(name, group)
        return self._table(name, group, self._table_parts(name, group))

    def _table_parts(self, name: str, group: h5py.Group) -> list[_Part | _IpcPart]:
        keys = [group.name]
        if "parts" in group.attrs:
            with _json_attr(group, "parts"):
                keys = [str(p["key"]) for p in json.loads(group.attrs["parts"])]
        parts: list[_Part | _IpcPart] = []
        for key in keys:
            held = self.file.get(key)
            if not isinstance(held, h5py.Group):
                break  # recorded before its group was committed: the rows are not there
            ipc = held.parent.name == f"/{ARROW_GROUP}" and any(_IPC_NAME.match(k) for k in held)
            parts.append(_IpcPart(held) if ipc else _Part(held))
        return parts

    def _table(self, name: str, group: h5py.Group,
               parts: list[_Part | _IpcPart]) -> StreamInfo:  # fmt: skip
        fields: dict[str, pa.Field] = {}
        for part in parts:
            for field in part.schema:
                fields.setdefault(field.name, field)
        infos, first = [], 0
        for part in parts:
            infos.append(PartInfo(self.path, part.group.name, first, part.rows))
            first += part.rows
        metadata = {k: v for k, v in self._attrs(group).items() if k not in LAYOUT_KEYS}
        self._parts[name] = parts
        return StreamInfo(name, "table", first, pa.schema(list(fields.values())), metadata,
                          tuple(infos), files=(self.path,))  # fmt: skip

    def _frames(self, name: str, group: h5py.Group) -> StreamInfo:
        source = Hdf5FrameSource(group)
        metadata = {k: v for k, v in self._attrs(group).items() if k not in LAYOUT_KEYS}
        return StreamInfo(
            name, "frames", source.shape[0], _FRAME_SCHEMA, metadata,
            (PartInfo(self.path, group.name, 0, source.shape[0]),),
            tuple(source.shape[1:]), np.dtype(source.dtype), files=(self.path,),
        )  # fmt: skip

    def iter_batches(self, stream: str, columns: Sequence[str] | None, batch_rows: int,
                     part: int | None = None) -> Iterator[pa.RecordBatch]:  # fmt: skip
        info = self._one(stream)
        if info is None:
            raise UnknownStream(f"{self.path}: no stream {stream!r}")
        if info.kind == "frames":
            source = self.frames(stream)
            group = source.group
            for start in range(0, source.shape[0], batch_rows):
                stop = min(source.shape[0], start + batch_rows)
                batch = pa.record_batch({
                    "timestamp_ns": arrow_array(group["timestamp_ns"][start:stop],
                                                pa.timestamp("ns", "UTC")),
                    "frame_number": pa.array(group["frame_number"][start:stop], pa.uint64()),
                })  # fmt: skip
                yield select(batch, columns)
            return
        parts = self._parts[stream] if part is None else [self._parts[stream][part]]
        for held in parts:
            yield from held.batches(columns, batch_rows, info.schema)

    def frames(self, stream: str) -> Hdf5FrameSource:
        info = self._one(stream)
        if info is None or info.kind != "frames":
            raise UnknownStream(f"{self.path}: no frame stream {stream!r}")
        return Hdf5FrameSource(self.file[stream])
