"""``convert``: a run copied into another format, stream by stream, in chunks of bounded
size (a run larger than memory converts), read with :func:`~daq_storage.read.open_run`
and written with :func:`~daq_storage.writers.open_writer`.

The output is made under a hidden temporary name beside its own
(``.<name>.<pid>.<hex>.tmp/``, which no reader lists and ``daq-storage repair`` knows)
and takes its name only once complete: a conversion that fails or is interrupted leaves
no output, and an existing path is never replaced. Into an object store, which has no
rename, see ``_convert_s3``.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from daq_storage.errors import (
    ConfigError,
    StorageIOError,
    UnsupportedData,
    describe_value,
)
from daq_storage.location import S3Location, S3Options, is_remote, parse_location
from daq_storage.read import Run, StreamInfo, open_run
from daq_storage.schema import METADATA_CHANGES, decode_metadata
from daq_storage.tools._convert_s3 import check_object_target, convert_into_objects
from daq_storage.writers import Writer, available_writers, get_writer_class, open_writer

__all__ = ["CHUNK_BYTES", "ConvertResult", "StreamCopy", "convert_run", "plan_conversion"]

#: Bytes of payload read and written at a time (a batch of rows, a block of frames).
CHUNK_BYTES = 16 << 20
#: Payload written between two flushes: what a writer may hold in its buffers.
FLUSH_BYTES = 64 << 20
#: Metadata a conversion writes itself (the run's ledger over every version).
_LEDGER_KEYS = ("loss_ledger", "lost_records")
#: Bytes assumed per value of a column of variable width (text, lists).
_VARIABLE_WIDTH = 64

#: ``progress(done, total, stream)``: rows and frames copied so far, of ``total``.
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class StreamCopy:
    """One stream as converted: its name, kind and the rows (frames) copied."""

    stream: str
    kind: str
    rows: int


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert_run` made.

    Attributes:
        source: the run read. target: the output made (complete): a local path, or
            the prefix in an object store.
        source_format, format: the formats read and written.
        streams: each stream copied, in order.
        lost_records: records the source run's loss ledger records (carried over).
        seconds: how long it took.
    """

    source: Path | S3Location
    target: Path | S3Location
    source_format: str
    format: str
    streams: tuple[StreamCopy, ...]
    lost_records: int
    seconds: float

    @property
    def rows(self) -> int:
        """Table rows copied in all."""
        return sum(s.rows for s in self.streams if s.kind == "table")

    @property
    def frames(self) -> int:
        """Frames copied in all."""
        return sum(s.rows for s in self.streams if s.kind == "frames")


def target_format(target: Path | S3Location, format: str | None) -> str:
    """``format`` (checked), else the format ``target``'s suffix names (``.h5``:
    hdf5, ``.zarr``: zarr).

    Raises:
        ConfigError: an unknown format, or none given for a name without such a suffix.
    """
    if format is not None:
        return get_writer_class(format).name
    for name in available_writers():
        suffix = get_writer_class(name).path_suffix
        if suffix and target.name.lower().endswith(suffix) and len(target.name) > len(suffix):
            return name
    raise ConfigError(
        f"cannot tell the format of {target.name!r} from its name (.h5: hdf5, "
        f".zarr: zarr); give one of {available_writers()} (--format)"
    )


def _holders(kind: str) -> list[str]:
    attribute = "supports_tables" if kind == "table" else "supports_frames"
    return [n for n in available_writers() if getattr(get_writer_class(n), attribute)]


def plan_conversion(
    run: Run, format: str, streams: Sequence[str] | None = None
) -> list[StreamInfo]:
    """The streams of ``run`` a conversion to ``format`` copies (``streams``, in that
    order, or all of them), each checked to be one the format can hold.

    Raises:
        UnknownStream: a stream the run lacks (the message lists those it has).
        UnsupportedData: a stream the format cannot hold (frames to CSV, a table to
            TIFF), naming the stream, the format and those that can.
        ConfigError: no stream to convert.
    """
    cls = get_writer_class(format)
    if streams is None:
        chosen = list(run.streams.values())
    else:
        if isinstance(streams, str):
            streams = [streams]
        chosen = [run.stream(name) for name in dict.fromkeys(streams)]
    if not chosen:
        raise ConfigError(f"run {run.path} has no stream to convert")
    for info in chosen:
        can = cls.supports_tables if info.kind == "table" else cls.supports_frames
        if not can:
            what = (
                f"a table ({info.rows:,} rows)"
                if info.kind == "table"
                else (f"frames ({info.rows:,} x {'x'.join(map(str, info.frame_shape))})")
            )
            holds = "tables" if cls.supports_tables else "frames"
            raise UnsupportedData(
                f"cannot convert stream {info.name!r} of {run.path} to {cls.name}: it holds "
                f"{what} and {cls.name} holds {holds} only; convert it to one of "
                f"{_holders(info.kind)}, or leave it out (--streams)"
            )
    return chosen


def convert_run(
    source: str | os.PathLike[str] | S3Location,
    target: str | os.PathLike[str] | S3Location,
    *,
    format: str | None = None,
    streams: Sequence[str] | None = None,
    source_format: str | None = None,
    run: str | None = None,
    options: dict[str, Any] | None = None,
    progress: Progress | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    storage_options: S3Options | Mapping[str, Any] | None = None,
) -> ConvertResult:
    """Copy the run at ``source`` into a new output at ``target`` in ``format``.

    Tables are copied in batches and frames in blocks of about ``chunk_bytes``, so memory
    stays bounded whatever the run's size. Carried over: the run's metadata, each
    stream's metadata (and each column's: units, scale factors), every row and column
    (a stream's later parts continue as the target format's evolution rules say),
    frames with their timestamps and frame numbers, and the loss ledger of every
    version (``loss_ledger``, ``lost_records``). ``converted_from`` records the source's
    name and format.

    Args:
        source: what :func:`~daq_storage.read.open_run` opens (``source_format`` and
            ``run`` choose where a directory holds several formats or runs).
        target: the output to make; never an existing path.
        format: the target format (default: from ``target``'s suffix, ``.h5`` or
            ``.zarr``).
        streams: the streams to copy (default: all).
        options: the target writer's options (``{"compression": "zstd"}``).
        progress: called as ``progress(done, total, stream)`` after each chunk.
        chunk_bytes: the payload read and written at a time.
        storage_options: how to reach the store of an ``s3://`` ``source`` or ``target``
            (:class:`~daq_storage.location.S3Options` or a mapping of its fields; unset:
            the ``AWS_*`` environment and profiles). Pass an
            :class:`~daq_storage.location.S3Location` for a side reached otherwise.

    An ``s3://bucket/prefix`` ``target`` (Zarr, Parquet, Arrow IPC) is written straight
    into the prefix, which the writer claims (a prefix holding any object is refused);
    its ``_daq_storage_conversion.json`` says ``"converting"``, then ``"complete"``. A
    conversion that fails or is interrupted removes what it put; one killed outright
    leaves complete objects and the document saying ``"converting"`` (``inspect``
    reports it). See docs/tools.md.

    Raises:
        StorageIOError: ``target`` exists (a prefix holding objects), or its directory
            does not; the object store failed (named).
        UnsupportedData: a stream the format cannot hold (before anything is written).
        UnknownStream: a stream the run lacks. ConfigError: a bad format or option, or
            a format that cannot write to object storage for an ``s3://`` target.
        RunNotFound, ReadError: as :func:`~daq_storage.read.open_run`.
    """
    began = time.monotonic()
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise ConfigError(f"chunk_bytes must be an int >= 1, got {describe_value(chunk_bytes)}")
    out = parse_location(target, storage_options if is_remote(target) else None)
    src = parse_location(source, storage_options if is_remote(source) else None)
    kind = target_format(out, format)
    if isinstance(out, S3Location):
        check_object_target(out, kind)
    else:
        _check_local_target(out)
    with open_run(src, format=source_format, run=run) as opened:
        chosen = plan_conversion(opened, kind, streams)

        copies: list[StreamCopy] = []

        def fill(writer: Writer) -> dict[str, int]:
            copies.extend(_copy(opened, chosen, writer, progress, chunk_bytes))
            return {c.stream: c.rows for c in copies}

        if isinstance(out, S3Location):
            described = {"name": opened.path.name, "format": opened.format, "source": str(src)}
            convert_into_objects(kind, out, options or {}, fill, described)
        else:
            staging = _staging(out)
            try:
                with open_writer(kind, staging / out.name, **(options or {})) as writer:
                    fill(writer)
                _publish(staging / out.name, out)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return ConvertResult(
            src,
            out,
            opened.format,
            kind,
            tuple(copies),
            opened.lost_records,
            time.monotonic() - began,
        )


def _check_local_target(out: Path) -> None:
    if os.path.lexists(out):
        raise StorageIOError(
            errno.EEXIST,
            f"{out} exists; convert never replaces an output (choose a new name)",
            str(out),
        )
    if not out.parent.is_dir():
        raise StorageIOError(
            errno.ENOENT,
            f"cannot convert into {out}: directory {out.parent} does not exist",
            str(out.parent),
        )


def _staging(out: Path) -> Path:
    """A new hidden directory beside ``out`` (a name :func:`daq_storage.writers.leftover`
    knows: ``daq-storage repair`` tells a killed conversion's from a running one's)."""
    while True:
        staging = out.with_name(f".{out.name}.{os.getpid()}.{os.urandom(8).hex()}.tmp")
        try:
            staging.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise StorageIOError(
                exc.errno,
                f"cannot create {staging.name} beside {out}: {exc.strerror}",
                str(out.parent),
            ) from exc
        return staging


def _publish(made: Path, out: Path) -> None:
    """``made`` takes the name ``out``, never replacing what is there."""
    try:
        if made.is_dir():
            if os.path.lexists(out):  # rename() would replace an empty directory
                raise FileExistsError(errno.EEXIST, "exists", str(out))
            os.rename(made, out)
        else:
            os.link(made, out)  # a hard link fails on an existing name
    except FileExistsError:
        raise StorageIOError(
            errno.EEXIST,
            f"{out} appeared while converting; convert never "
            f"replaces an output (the conversion is discarded)",
            str(out),
        ) from None
    except OSError as exc:
        raise StorageIOError(
            exc.errno, f"cannot give the converted output its name {out}: {exc.strerror}", str(out)
        ) from exc


def _copy(
    run: Run,
    chosen: list[StreamInfo],
    writer: Writer,
    progress: Progress | None,
    chunk_bytes: int,
) -> list[StreamCopy]:
    total = sum(info.rows for info in chosen)
    counter = _Counter(total, progress)
    for info in chosen:  # every table checked before anything is written
        if info.kind == "table":
            writer.check_batch(info.name, _empty(info.schema))
    _file_metadata(run, writer)
    # A format of one file per stream keeps the run's metadata in each stream's file:
    # what they all hold alike is the run's, the rest the stream's own. (With one
    # stream it cannot be told apart: it goes to both.)
    per_stream = run.format not in ("hdf5", "zarr") and len(run.streams) > 1
    shared = run.metadata if per_stream else {}
    copies = []
    for info in chosen:
        for key, value in info.metadata.items():
            if key in _LEDGER_KEYS or key == METADATA_CHANGES:
                continue  # the ledger: the run's; the changes: replayed with the rows
            if not (key in shared and shared[key] == value):
                writer.set_metadata(key, value, stream=info.name)
        if info.kind == "table":
            rows = _tables(run, info, writer, counter, chunk_bytes)
        else:
            rows = _frames(run, info, writer, counter, chunk_bytes)
        copies.append(StreamCopy(info.name, info.kind, rows))
    return copies


def _file_metadata(run: Run, writer: Writer) -> None:
    for key, value in run.metadata.items():
        if key not in _LEDGER_KEYS:
            writer.set_metadata(key, value)
    losses = run.losses
    if losses or "loss_ledger" in run.metadata:
        ledger = [
            {
                "first_seq": loss.first,
                "last_seq": loss.last,
                "count": loss.count,
                "after_ns": loss.after_ns or 0,
                "before_ns": loss.before_ns or 0,
                "detected_ns": loss.detected_ns or 0,
            }
            for loss in losses
        ]
        writer.set_metadata("loss_ledger", ledger)
        writer.set_metadata("lost_records", sum(loss.count for loss in losses))
    writer.set_metadata("converted_from", {"name": run.path.name, "format": run.format})


class _Counter:
    """Rows and frames copied, for ``progress``; and payload since the last flush."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress
        self.unflushed = 0

    def step(self, stream: str, rows: int, nbytes: int, writer: Writer) -> None:
        self.done += rows
        self.unflushed += nbytes
        if self.unflushed >= FLUSH_BYTES:  # a writer's buffers stay bounded too
            writer.flush()
            self.unflushed = 0
        if self.progress is not None:
            self.progress(self.done, self.total, stream)


def _tables(run: Run, info: StreamInfo, writer: Writer, counter: _Counter, chunk_bytes: int) -> int:
    batch_rows = max(1, min(1 << 20, chunk_bytes // _row_bytes(info.schema)))
    # The stream's metadata was set above; its later changes are replayed as the
    # schema metadata of the batches from their rows on (the writer records them).
    changes = sorted(_changes(info), key=lambda change: int(change["row"]))
    in_force: dict[bytes, bytes] = {}
    rows = 0
    for batch in run.iter_batches(info.name, batch_rows=batch_rows):
        batch = _described(batch.replace_schema_metadata(None), info.schema)
        stop = rows + batch.num_rows
        cuts = sorted({int(c["row"]) for c in changes if rows < int(c["row"]) < stop})
        for first, last in itertools.pairwise([rows, *cuts, stop]):
            while changes and int(changes[0]["row"]) <= first:
                change = changes.pop(0)
                key = str(change["key"])
                in_force[key.encode()] = _encoded(key, change["value"])
            piece = batch.slice(first - rows, last - first)
            writer.write_batch(info.name, piece.replace_schema_metadata(in_force or None))
        rows = stop
        counter.step(info.name, batch.num_rows, batch.nbytes, writer)
    if not rows:  # a stream of no rows keeps its columns
        writer.write_batch(info.name, _empty(info.schema))
    return rows


def _changes(info: StreamInfo) -> list[dict[str, Any]]:
    found = info.metadata.get(METADATA_CHANGES) or []
    return [c for c in found if isinstance(c, dict) and {"row", "key", "value"} <= set(c)]


def _encoded(key: str, value: Any) -> bytes:
    """``value`` as the schema metadata of a batch gives it (what
    :func:`~daq_storage.schema.decode_metadata` reads back as ``value``)."""
    for raw in (json.dumps(value).encode(), str(value).encode()):
        if decode_metadata({key.encode(): raw}).get(key) == value:
            return raw
    return json.dumps(value).encode()


def _frames(run: Run, info: StreamInfo, writer: Writer, counter: _Counter, chunk_bytes: int) -> int:
    frames = run.frames(info.name)
    count = frames.shape[0]
    stamps, numbers = frames.timestamps_ns, frames.frame_numbers
    frame_bytes = max(1, math.prod(frames.shape[1:]) * frames.dtype.itemsize)
    step = max(1, chunk_bytes // frame_bytes)
    for start in range(0, count, step):
        stop = min(count, start + step)
        block = frames[start:stop]
        writer.write_frames(
            info.name, block, timestamps_ns=stamps[start:stop], frame_numbers=numbers[start:stop]
        )
        counter.step(info.name, stop - start, block.nbytes, writer)
        del block
    return count


def _described(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with each column's metadata (units, scale factors) from the stream's
    schema where the batch has none: some readers give it only there (CSV)."""
    fields, changed = [], False
    for field in batch.schema:
        index = schema.get_field_index(field.name)
        known = schema.field(index).metadata if index >= 0 else None
        if known and not field.metadata:
            field, changed = field.with_metadata(known), True
        fields.append(field)
    if not changed:
        return batch
    return pa.RecordBatch.from_arrays(batch.columns, schema=pa.schema(fields))


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    """No rows of ``schema`` (``Schema.empty_table`` would import pandas)."""
    return pa.RecordBatch.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)


def _row_bytes(schema: pa.Schema) -> int:
    return max(1, sum(_width(field.type) for field in schema))


def _width(kind: pa.DataType) -> int:
    """Bytes a value of ``kind`` takes (a guess for those of variable width)."""
    if isinstance(kind, pa.ExtensionType):
        return _width(kind.storage_type)
    if pa.types.is_fixed_size_list(kind):
        return int(kind.list_size) * _width(kind.value_type)
    if pa.types.is_struct(kind):
        return sum(_width(kind.field(i).type) for i in range(kind.num_fields)) or 1
    with contextlib.suppress(ValueError):
        return max(1, int(kind.bit_width) // 8)
    return _VARIABLE_WIDTH
