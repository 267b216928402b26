"""One bluesky run: its writers (one per format), its streams' buffers, its external
data; what each document of the run does to them."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from daq_storage.documents._descriptor import (
    TIMESTAMP_SUFFIX,
    KeySpec,
    StreamSchema,
    doc_name,
    frame_dims,
)
from daq_storage.documents._events import EventBuffer, Rows
from daq_storage.documents._external import ExternalData
from daq_storage.documents._grid import Grid
from daq_storage.documents._naming import open_output, run_name, run_time
from daq_storage.errors import DocumentError
from daq_storage.writers import Writer

__all__ = ["FormatSpec", "RunWriter", "reference_stream"]

log = logging.getLogger("daq_storage.documents")

#: Formats that keep an array key as a tensor column of the event table (the others
#: that hold frames keep it as a frame stream ``<stream>.<key>``).
TENSOR_FORMATS = frozenset({"arrow", "parquet"})
#: Formats that can write the grid of a scan as one N-d array (``create_array``).
GRID_FORMATS = frozenset({"zarr"})


def reference_stream(table: str) -> str:
    """The table stream holding external references of one kind: ``external.resources``,
    ``external.datums``, ``external.stream_datums``."""
    return f"external.{table}"


def frame_stream(stream: str, key: str) -> str:
    """The frame stream of an array key: ``primary.img``."""
    return f"{stream}.{key}"


@dataclass(frozen=True)
class FormatSpec:
    """A format of a run: its writer class and options."""

    name: str
    cls: type[Writer]
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def arrays(self) -> Literal["tensor", "frames"] | None:
        """Where the format keeps array keys: tensor columns, frame streams, or nowhere."""
        if self.name in TENSOR_FORMATS and self.cls.supports_tables:
            return "tensor"
        return "frames" if self.cls.supports_frames else None


def tiff_pages(
    frames: np.ndarray, numbers: np.ndarray, stamps_ns: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Frames of one data key as TIFF pages: a key of shape ``[1, y, x]`` (one detector
    image per event, as ophyd-async declares it) gives a page per event, ``[k, y, x]``
    ``k`` pages per event, each with its event's ``seq_num`` and timestamp; ``None`` for
    a key that is no image (a spectrum, a scalar)."""
    shape = frames.shape[1:]
    while len(shape) > 2 and shape[0] == 1:
        shape = shape[1:]
    rgb = len(shape) == 3 and shape[2] in (3, 4)
    if len(shape) < 2:
        return None
    if len(shape) == 2 or rgb:
        return frames.reshape(len(frames), *shape), numbers, stamps_ns
    if len(shape) == 3:
        per_event = shape[0]
        repeated = None if stamps_ns is None else np.repeat(stamps_ns, per_event)
        return frames.reshape(-1, *shape[1:]), np.repeat(numbers, per_event), repeated
    return frames, numbers, stamps_ns  # the writer names what it cannot hold


@dataclass
class _Output:
    spec: FormatSpec
    writer: Writer
    grids: dict[str, Any] = field(default_factory=dict)  # array name -> its shape
    dim_sizes: dict[str, int] = field(default_factory=dict)  # of the grid arrays' dims


@dataclass
class _Stream:
    schema: StreamSchema
    buffer: EventBuffer
    descriptors: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0  # rows written
    events: int = 0  # events received
    dirty: bool = True  # descriptors changed since the metadata was last written
    frame_streams: set[str] = field(default_factory=set)


class RunWriter:
    """The writers of one run, made at its ``start`` document; implements
    :class:`~daq_storage.documents._external.ExternalSink` for the run's external
    data.

    Files are named ``{name}_{date}_{time}_v{N}`` from the start document (``name``:
    ``template`` filled from it); when a run has several formats that are directories,
    each directory's name ends ``-{format}`` so that none takes another's version.
    """

    def __init__(
        self,
        start: Mapping[str, Any],
        *,
        directory: Path,
        formats: Sequence[FormatSpec],
        batch_size: int,
        flush_interval: float,
        template: str,
        copy_external: bool,
        root_map: Mapping[str, str] | None,
    ) -> None:
        self.uid: str = start["uid"]
        self.start = dict(start)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.closed = False
        self._flushed_at = time.monotonic()
        name = run_name(template, start)
        when = run_time(start)
        self.outputs: list[_Output] = []
        try:
            for fmt in formats:
                # As the Recorder names its outputs: one name, each format under the next
                # free version (two directory formats cannot share one), told apart by
                # what they hold; open_run lists them as one run in several formats.
                writer = open_output(fmt.cls, directory, name, when, fmt.options)
                self.outputs.append(_Output(fmt, writer))
            for output in self.outputs:
                for key, value in start.items():
                    output.writer.set_metadata(key, value)
        except BaseException:
            self._close_writers()
            raise
        self.paths: tuple[Path, ...] = tuple(o.writer.path for o in self.outputs)
        self.external = ExternalData(self, copy=copy_external, root_map=root_map)
        self.grid = Grid.from_start(start)
        #: The grid's motor positions along each axis (the first seen at each index).
        self._coords: dict[str, np.ndarray] = {}
        if self.grid is not None:
            self._coords = {d: np.full(n, np.nan) for d, n in zip(self.grid.dims, self.grid.shape,
                                                                  strict=True)}  # fmt: skip
        self._streams: dict[str, _Stream] = {}
        self._by_descriptor: dict[str, _Stream] = {}
        self._references: dict[str, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------ documents
    def descriptor(self, doc: Mapping[str, Any]) -> None:
        schema = StreamSchema.from_descriptor(doc)
        where = doc_name("descriptor", doc)
        if doc["uid"] in self._by_descriptor:
            raise DocumentError(f"{where}: a descriptor of that uid was already received")
        stream = self._streams.get(schema.name)
        if stream is None:
            arrays = [k.name for k in schema.keys.values() if k.kind == "array"]
            if arrays and not any(o.spec.arrays for o in self.outputs):
                formats = ", ".join(o.spec.name for o in self.outputs)
                raise DocumentError(
                    f"{where}: stream {schema.name!r} has array data keys {arrays}, which "
                    f"{formats} cannot hold; add a format that can (hdf5, zarr, arrow, "
                    "parquet, tiff), e.g. formats=('csv', 'hdf5')"
                )
            stream = self._streams[schema.name] = _Stream(schema, EventBuffer(schema))
        elif not stream.schema.same_keys(schema):
            raise DocumentError(
                f"{where}: stream {schema.name!r} already has data keys "
                f"{sorted(stream.schema.keys)} of other dtypes or shapes; a second descriptor "
                "of one name must describe the same keys"
            )
        stream.descriptors.append({
            "uid": doc["uid"],
            "time": doc["time"],
            "first_seq_num": stream.events + 1,
            "configuration": doc.get("configuration", {}),
            "object_keys": doc.get("object_keys", {}),
            "hints": doc.get("hints", {}),
        })  # fmt: skip
        stream.dirty = True
        self._by_descriptor[doc["uid"]] = stream
        self.external.descriptor(doc)  # the shapes its stream_datum frames come in

    def stream_of(self, descriptor_uid: Any, where: str) -> _Stream:
        stream = self._by_descriptor.get(descriptor_uid)
        if stream is None:
            raise DocumentError(f"{where}: unknown descriptor {descriptor_uid!r} (no descriptor "
                                f"document of that uid in run {self.uid!r})")  # fmt: skip
        return stream

    def event(self, doc: Mapping[str, Any]) -> None:
        stream = self.stream_of(doc["descriptor"], doc_name("event", doc))
        stream.buffer.add_event(doc, self.external.fill)
        stream.events += 1
        self._after_rows(stream)

    def event_page(self, doc: Mapping[str, Any]) -> None:
        stream = self.stream_of(doc["descriptor"], doc_name("event_page", doc))
        stream.buffer.add_page(doc, self.external.fill)
        stream.events += len(doc["seq_num"])
        self._after_rows(stream)

    def _after_rows(self, stream: _Stream) -> None:
        """A full batch to the writers; everything, and a flush, when the last flush is
        ``flush_interval`` old (a slow scan is not held back until its stop)."""
        if time.monotonic() - self._flushed_at >= self.flush_interval:
            self.flush()
        elif stream.buffer.rows >= self.batch_size:
            self._write(stream)

    def stop(self, doc: Mapping[str, Any]) -> None:
        """Write what is buffered, the stop's fields as metadata, and close."""
        self.flush()
        for output in self.outputs:
            writer = output.writer
            writer.set_metadata("exit_status", doc.get("exit_status"))
            writer.set_metadata("reason", doc.get("reason", ""))
            writer.set_metadata("num_events", doc.get("num_events", {}))
            writer.set_metadata("stop", dict(doc))
        self.close()

    # ------------------------------------------------------------ external sink
    def record_reference(self, table: str, row: Mapping[str, Any]) -> None:
        self._references.setdefault(table, []).append(dict(row))

    def write_external_frames(
        self, descriptor_uid: str, data_key: str, seq_nums: tuple[int, int], frames: np.ndarray
    ) -> None:
        where = f"external frames of {data_key!r} (descriptor {descriptor_uid!r})"
        stream = self.stream_of(descriptor_uid, where)
        key = stream.schema.keys.get(data_key)
        if key is None:
            raise DocumentError(f"{where}: stream {stream.schema.name!r} has no data key "
                                f"{data_key!r}")  # fmt: skip
        first, stop = seq_nums
        frames = key.check_frames(np.asarray(frames), where)
        if len(frames) != stop - first:
            raise DocumentError(f"{where}: {len(frames)} frames for seq_num {first}..{stop - 1}")
        self._write_frames(stream, key, np.arange(first, stop, dtype=np.int64), None, frames,
                           tensors=True)  # fmt: skip

    # ------------------------------------------------------------ writing
    def flush(self) -> None:
        """Write every buffered row and reference, and flush every writer: a reader
        (or a run killed after this) sees all of it."""
        for stream in self._streams.values():
            self._write(stream)
        self._flush_writers()

    def _flush_writers(self) -> None:
        self._write_references()
        for output in self.outputs:
            output.writer.flush()
        self._flushed_at = time.monotonic()

    def _write(self, stream: _Stream) -> None:
        rows = stream.buffer.take()
        name = stream.schema.name
        if rows is not None:
            for output in self.outputs:
                if output.spec.cls.supports_tables:
                    tensors = output.spec.arrays == "tensor"
                    output.writer.write_batch(name, _table(stream.schema, rows, tensors))
            for key_name, frames in rows.arrays.items():
                stamps = rows.columns[key_name + TIMESTAMP_SUFFIX].to_numpy()
                key = stream.schema.keys[key_name]
                self._write_frames(stream, key, rows.seq_num, stamps, frames, tensors=False)
            for key_name, (seq, stamps, frames) in rows.filled.items():
                key = stream.schema.keys[key_name]
                self._write_frames(stream, key, seq, stamps, frames, tensors=True)
            stream.rows += len(rows)
            if self.grid is not None and name == self.grid.stream:
                self._observe_positions(rows)
        if self.grid is not None and name == self.grid.stream:
            self._write_coordinates()
        if stream.dirty and (stream.rows or stream.frame_streams):
            self._stream_metadata(stream)

    def _observe_positions(self, rows: Rows) -> None:
        """Each grid motor's position at each index, from the rows' motor columns."""
        grid = self.grid
        assert grid is not None
        indexes = [grid.index(int(s)) for s in rows.seq_num]
        for axis, dim in enumerate(grid.dims):
            column = rows.columns.get(dim)
            if column is None or not (pa.types.is_floating(column.type)
                                      or pa.types.is_integer(column.type)):  # fmt: skip
                continue
            values = column.to_numpy(zero_copy_only=False)
            known = self._coords[dim]
            for index, value in zip(indexes, values, strict=True):
                if index is not None and np.isnan(known[index[axis]]):
                    known[index[axis]] = value

    def _write_coordinates(self) -> None:
        """The motors' positions as 1-d arrays named after their dimension (xarray's
        coordinates), in each output holding a grid array."""
        for output in self.outputs:
            if not output.grids:
                continue
            writer: Any = output.writer
            for dim, values in self._coords.items():
                if np.isnan(values).all():
                    continue
                if f"coordinate {dim}" not in output.grids:
                    writer.create_array(dim, values.shape, values.shape, dimension_names=(dim,),
                                        dtype=np.float64, fill_value=np.nan)  # fmt: skip
                    output.grids[f"coordinate {dim}"] = values.shape
                writer.write_chunk(dim, (0,), values)

    def _write_frames(
        self,
        stream: _Stream,
        key: KeySpec,
        seq: np.ndarray,
        stamps: np.ndarray | None,
        frames: np.ndarray,
        *,
        tensors: bool,
    ) -> None:
        """Frames of one key to every output keeping frames (``tensors``: also those
        keeping in-event arrays as tensor columns, for frames not in the table)."""
        name = frame_stream(stream.schema.name, key.name)
        ns = None if stamps is None else np.round(np.asarray(stamps) * 1e9).astype(np.uint64)
        for output in self.outputs:
            kind = output.spec.arrays
            if kind == "frames" or (tensors and kind == "tensor"):
                held, numbers, stamps_ns = frames, seq.astype(np.uint64), ns
                if output.spec.name == "tiff":
                    pages = tiff_pages(frames, numbers, ns)
                    if pages is None:
                        continue  # TIFF holds images: a spectrum or a scalar is not one
                    held, numbers, stamps_ns = pages
                output.writer.write_frames(name, held, timestamps_ns=stamps_ns,
                                           frame_numbers=numbers)  # fmt: skip
                if name not in stream.frame_streams:
                    stream.frame_streams.add(name)
                    stream.dirty = True
                if self.grid is not None and stream.schema.name == self.grid.stream:
                    self._write_grid(output, key, seq, frames)

    def _write_grid(self, output: _Output, key: KeySpec, seq: np.ndarray,
                    frames: np.ndarray) -> None:  # fmt: skip
        """Frames into the N-d array ``(*grid.shape, *frame_shape)`` named after the key."""
        grid = self.grid
        writer: Any = output.writer
        if (
            grid is None
            or output.spec.name not in GRID_FORMATS
            or not hasattr(writer, "write_chunk")
        ):
            return
        if key.name not in output.grids:
            frame_shape = frames.shape[1:]
            dims = frame_dims(key.name, key.spec, len(frame_shape))
            # A name xarray would see with two sizes (a motor's, another key's) is
            # prefixed with the key: camera_y.
            dims = [
                f"{key.name}_{d}" if d in grid.dims or output.dim_sizes.get(d, size) != size else d
                for d, size in zip(dims, frame_shape, strict=True)
            ]
            output.dim_sizes.update(zip(dims, frame_shape, strict=True))
            fill: Any = np.nan if frames.dtype.kind == "f" else 0
            writer.create_array(
                key.name, (*grid.shape, *frame_shape), (*(1,) * len(grid.shape), *frame_shape),
                dimension_names=(*grid.dims, *dims), dtype=frames.dtype, fill_value=fill,
                attributes={"data_key": key.spec, "stream": grid.stream,
                            "snaking": list(grid.snaking)},
            )  # fmt: skip
            output.grids[key.name] = frame_shape
        zeros = (0,) * (frames.ndim - 1)
        for seq_num, frame in zip(seq.tolist(), frames, strict=True):
            index = grid.index(seq_num)
            if index is not None:
                writer.write_chunk(key.name, (*index, *zeros), frame[(np.newaxis,) * len(index)])

    def _stream_metadata(self, stream: _Stream) -> None:
        schema = stream.schema
        keys = schema.key_metadata()
        for output in self.outputs:
            writer = output.writer
            if output.spec.cls.supports_tables and stream.rows:
                writer.set_metadata("data_keys", keys, stream=schema.name)
                writer.set_metadata("descriptors", stream.descriptors, stream=schema.name)
            for name in sorted(stream.frame_streams):
                if name in writer.streams:
                    key = name[len(schema.name) + 1 :]
                    writer.set_metadata("data_key", keys.get(key, {}), stream=name)
                    writer.set_metadata("descriptors", [d["uid"] for d in stream.descriptors],
                                        stream=name)  # fmt: skip
        stream.dirty = False

    def _write_references(self) -> None:
        for table, rows in self._references.items():
            if not rows:
                continue
            batch = pa.Table.from_pylist(rows)
            for output in self.outputs:
                if output.spec.cls.supports_tables:
                    output.writer.write_batch(reference_stream(table), batch)
            self._references[table] = []

    # ------------------------------------------------------------ closing
    def close(self) -> None:
        """Close every writer (what was flushed stays); idempotent."""
        if self.closed:
            return
        self.closed = True
        self._close_writers()

    def _close_writers(self) -> None:
        errors: list[BaseException] = []
        for output in self.outputs:
            try:
                output.writer.close()
            except Exception as exc:  # every writer gets its close; the first error is raised
                errors.append(exc)
        if errors:
            raise errors[0]

    def abandon(self) -> None:
        """Close without raising (the router's last resort after an error)."""
        with contextlib.suppress(Exception):
            self.close()


def _table(schema: StreamSchema, rows: Rows, tensors: bool) -> pa.RecordBatch:
    """The event table: ``seq_num``, ``time``, a column per key (array keys as
    ``fixed_shape_tensor`` columns when ``tensors``), then ``<key>__timestamp``."""
    arrays: list[pa.Array] = [pa.array(rows.seq_num), pa.array(rows.time)]
    names = ["seq_num", "time"]
    for key in schema.in_events():
        if key.kind == "array":
            if not tensors:
                continue
            arrays.append(_tensor(rows.arrays[key.name]))
        else:
            arrays.append(rows.columns[key.name])
        names.append(key.name)
    for key in schema.in_events():  # an array key's too, wherever its frames are
        names.append(key.name + TIMESTAMP_SUFFIX)
        arrays.append(rows.columns[key.name + TIMESTAMP_SUFFIX])
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _tensor(frames: np.ndarray) -> pa.Array:
    shape = list(frames.shape[1:])
    type_ = pa.fixed_shape_tensor(pa.from_numpy_dtype(frames.dtype), shape)
    flat = pa.array(np.ascontiguousarray(frames).reshape(-1))
    storage = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(shape)))
    return pa.ExtensionArray.from_storage(type_, storage)
