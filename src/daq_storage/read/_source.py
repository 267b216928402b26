"""What every format reader gives a :class:`~daq_storage.read.Run`: the streams it
holds, their metadata, batches of a table stream's rows and a frame stream's frames.

A format reader reads one output (an HDF5 file, a Zarr store, a directory of one file
per stream); the Run joins outputs of rotated versions, stream by stream.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import ConfigError, DaqStorageError, ReadError
from daq_storage.location import S3Location

__all__ = [
    "read_errors",
    "FrameSource",
    "LossRange",
    "PartInfo",
    "Reader",
    "StreamInfo",
    "check_columns",
    "column_batches",
    "json_values",
    "losses_of",
    "select",
]

#: Metadata keys a reader keeps out of a stream's metadata: they describe the layout
#: (a part's place in its stream, a group's schema), not the measurement.
LAYOUT_KEYS = frozenset({"schema", "parts", "part_of", "first", "rows",
                         "daq_storage.part_of", "daq_storage.first_row"})  # fmt: skip


@dataclass(frozen=True)
class PartInfo:
    """One part of a stream: the file (``path``), the place inside it (``key``: an HDF5
    or Zarr group; empty for a file of its own), the stream's index of its first row
    (frame) within its output, and how many rows (frames) it holds."""

    path: Path | S3Location
    key: str
    first: int
    rows: int


@dataclass(frozen=True)
class StreamInfo:
    """What a run holds of one stream.

    Attributes:
        name: the stream's name.
        kind: ``"table"`` or ``"frames"``.
        rows: rows (frames) over every part and every rotated version.
        schema: the Arrow schema of a table (the first part's; later parts may differ,
            see ``parts``), or of a frame stream's columns (``timestamp_ns``,
            ``frame_number``).
        metadata: the stream's metadata (the file's as well where a format keeps both
            in one place), values decoded (numbers, text, lists, dicts).
        parts: every part in order, over every version.
        frame_shape: the shape of one frame (frame streams), else ``()``.
        dtype: the frames' numpy dtype (frame streams), else ``None``.
    """

    name: str
    kind: Literal["table", "frames"]
    rows: int
    schema: pa.Schema
    metadata: dict[str, Any]
    parts: tuple[PartInfo, ...]
    frame_shape: tuple[int, ...] = ()
    dtype: np.dtype[Any] | None = None
    files: tuple[Path | S3Location, ...] = field(default=(), repr=False)

    @property
    def columns(self) -> list[str]:
        """The columns of a table stream (of every part, in order of appearance)."""
        return list(self.schema.names)


@dataclass(frozen=True)
class LossRange:
    """Records a Recorder lost (the ring lapped it), as its files' ``loss_ledger``
    records them: sequence numbers ``first`` to ``last`` (inclusive), ``count`` records,
    the timestamps around the gap (``after_ns``, ``before_ns``; ``None`` when not
    known), and the file that recorded it."""

    first: int
    last: int
    count: int
    after_ns: int | None
    before_ns: int | None
    detected_ns: int | None
    file: Path | S3Location


class FrameSource(Protocol):
    """A frame stream's frames, read on request."""

    shape: tuple[int, ...]  # (frames, *frame_shape)
    dtype: np.dtype[Any]

    def read(self, index: slice | npt.NDArray[np.intp]) -> npt.NDArray[Any]:
        """Frames at ``index``: a slice with a positive step, or sorted unique indices."""

    def timestamps_ns(self) -> npt.NDArray[np.uint64]: ...

    def frame_numbers(self) -> npt.NDArray[np.uint64]: ...


class Reader(Protocol):
    """One output of one format (what every format module implements)."""

    format: str

    @property
    def path(self) -> Path | S3Location:
        """The output: a file or directory, or an ``s3://`` prefix."""

    def streams(self) -> dict[str, StreamInfo]: ...

    def metadata(self) -> dict[str, Any]: ...

    def iter_batches(self, stream: str, columns: Sequence[str] | None, batch_rows: int,
                     part: int | None = None) -> Iterator[pa.RecordBatch]:  # fmt: skip
        """The stream's rows (of one part, or of every part in turn) in batches of at
        most ``batch_rows``, with ``columns`` only (in that order; a part lacking one
        gives nulls)."""

    def frames(self, stream: str) -> FrameSource: ...

    def close(self) -> None: ...


def json_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as Python values: numpy scalars as numbers, JSON text (lists, dicts,
    as HDF5 keeps them) decoded."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "backslashreplace")
        if isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, str) and value[:1] in ("[", "{"):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        out[key] = value
    return out


def losses_of(metadata: Mapping[str, Any], file: Path | S3Location) -> list[LossRange]:
    """The loss ledger a file's metadata holds (``loss_ledger``), as ranges."""
    ledger = metadata.get("loss_ledger")
    if isinstance(ledger, str):
        try:
            ledger = json.loads(ledger)
        except ValueError as exc:
            raise ReadError(f"{file}: its loss_ledger is not JSON: {ledger[:80]!r}") from exc
    if not ledger:
        return []

    def number(entry: Mapping[str, Any], *keys: str) -> int | None:
        for key in keys:
            if entry.get(key) is not None:
                return int(entry[key])
        return None

    out = []
    for entry in ledger:
        first = number(entry, "first_seq", "first")
        last = number(entry, "last_seq", "last")
        count = number(entry, "count")
        if first is None or last is None:
            raise ReadError(f"{file}: a loss_ledger entry without first/last: {entry!r}")
        out.append(LossRange(first, last, count if count is not None else last - first + 1,
                             number(entry, "after_ns"), number(entry, "before_ns"),
                             number(entry, "detected_ns"), file))  # fmt: skip
    return out


def check_columns(stream: str, schema: pa.Schema, columns: Sequence[str] | None,
                  run: str) -> list[str] | None:  # fmt: skip
    """``columns`` as a list, each one a column of the stream.

    Raises:
        ConfigError: a name the stream has no column of (named, with the stream's).
    """
    if columns is None:
        return None
    if isinstance(columns, str):
        columns = [columns]
    names = list(columns)
    known = set(schema.names)
    for name in names:
        if not isinstance(name, str) or name not in known:
            raise ConfigError(f"run {run}: stream {stream!r} has no column {name!r}; "
                              f"its columns are {schema.names}")  # fmt: skip
    return names


def select(data: Any, columns: Sequence[str] | None, schema: pa.Schema | None = None) -> Any:
    """``data`` (a ``RecordBatch`` or a ``Table``) with ``columns`` only, in that order;
    a column it lacks is all null (of its type in ``schema``)."""
    if columns is None:
        return data
    arrays, fields = [], []
    for name in columns:
        index = data.schema.get_field_index(name)
        if index >= 0:
            arrays.append(data.column(index))
            fields.append(data.schema.field(index))
        else:
            known = schema is not None and name in schema.names
            kind = schema.field(name).type if known else pa.null()  # type: ignore[union-attr]
            arrays.append(pa.nulls(data.num_rows, kind))
            fields.append(pa.field(name, kind))
    return type(data).from_arrays(arrays, schema=pa.schema(fields))


def column_batches(
    rows: int,
    names: Sequence[str],
    batch_rows: int,
    schema: pa.Schema,
    read: Callable[[str, int, int], tuple[pa.Array, pa.Field] | None],
) -> Iterator[pa.RecordBatch]:
    """Rows ``[0, rows)`` of a stream kept a column at a time (HDF5, Zarr), in batches
    of ``batch_rows``: ``read(name, start, stop)`` gives a column's slice and field, or
    ``None`` for a column this part lacks (all null, of its type in ``schema``)."""
    for start in range(0, rows, batch_rows):
        stop = min(rows, start + batch_rows)
        arrays, fields = [], []
        for name in names:
            found = read(name, start, stop)
            if found is None:
                kind = schema.field(name).type
                found = pa.nulls(stop - start, kind), pa.field(name, kind)
            arrays.append(found[0])
            fields.append(found[1])
        yield pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


@contextlib.contextmanager
def read_errors(what: str) -> Iterator[None]:
    """A library's I/O or decoding failure while reading ``what`` (a file cut short, a
    filter missing, bytes that do not decode) as a :class:`ReadError` naming it."""
    try:
        yield
    except DaqStorageError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise ReadError(f"{what} could not be read: {exc}") from exc
