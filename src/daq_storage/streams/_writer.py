"""The multi-channel stream writer (seed 001's ``ComediStreamWriter``)."""

from __future__ import annotations

import contextlib
import math
import operator
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import ConfigError, SchemaMismatch, WriterClosedError, describe_value
from daq_storage.streams._channels import ChannelConfig, check_channels
from daq_storage.streams._layout import (
    DATA,
    channel_columns,
    channels_batch,
    data_schema,
    file_metadata,
)
from daq_storage.streams._timebase import Timebase
from daq_storage.writers import Writer

if TYPE_CHECKING:
    from daq_storage.ring import Record, RingReader
    from daq_storage.streams._builder import StreamWriterBuilder

__all__ = ["COMPRESSIONS", "STORAGE_FORMATS", "STORES", "Gap", "StreamStats", "StreamWriter"]

STORAGE_FORMATS = ("hdf5", "arrow", "both")
COMPRESSIONS = ("lz4", "gzip", "zstd", None)
STORES = ("counts", "volts")
_HDF5_SUFFIXES = (".h5", ".hdf5")
#: Samples per chunk unless told: 128 KiB of an int16 channel, 512 KiB of timestamps.
DEFAULT_CHUNK = 65_536


@dataclass(frozen=True, slots=True)
class Gap:
    """Samples that never reached the writer: ``count`` samples from index ``first``."""

    first: int
    count: int


@dataclass(frozen=True, slots=True)
class StreamStats:
    """What a :class:`StreamWriter` has done (a snapshot).

    Attributes:
        samples: samples (per channel) written.
        samples_flushed: of those, how many the last flush made readable.
        blocks: write calls that stored samples.
        gaps: gaps recorded.
        missing_samples: samples the gaps skip.
        flushes: flushes (:meth:`StreamWriter.flush`, and the one of ``close``).
        next_sample: the index the next block continues at (``None`` before the first).
        files: the outputs (the HDF5 file, the Arrow IPC directory).
    """

    samples: int
    samples_flushed: int
    blocks: int
    gaps: int
    missing_samples: int
    flushes: int
    next_sample: int | None
    files: tuple[Path, ...]


class StreamWriter:
    """Blocks of samples of several channels into HDF5 and / or Arrow IPC.

    Use as a context manager, or :meth:`close` it; build it with :meth:`builder` or with
    keywords. See docs/streams.md for the layout and the formulas.

    Args:
        path: the HDF5 file (``.h5`` or ``.hdf5``; never overwritten). The Arrow IPC
            output (``storage_format="arrow"`` or ``"both"``) is the directory beside it
            named as the file without its suffix (``run.h5`` -> ``run/data.arrows``).
        channels: the channels, in the order of a block's columns.
        sample_rate: samples per second per channel (> 0, at most 1e9).
        chunk_size: samples per HDF5 chunk (default 65,536), also the samples the
            writer gathers before it hands them to the format writers (at most one
            chunk is held in memory; :meth:`flush` stores it).
        compression: ``"gzip"`` (default; any HDF5 reader decodes it), ``"lz4"`` or
            ``"zstd"`` (readers need hdf5plugin's filters; Arrow IPC compresses its
            buffers with either), or ``None``. Arrow IPC has no gzip: refused with
            ``"arrow"`` / ``"both"``.
        compression_level: gzip 0-9, zstd 1-9 (HDF5 only; ``None``: the default).
        storage_format: ``"hdf5"``, ``"arrow"`` or ``"both"`` (the same samples in each).
        store: ``"counts"`` (default): int16 counts, with ``scale_factor`` and
            ``add_offset`` beside them (float blocks are converted to counts; a value
            outside its channel's range is refused); ``"volts"``: float64 values in the
            channels' units (int16 blocks converted on write).
        start_ns: the time of sample 0, ns since the epoch (default: now).

    Raises:
        ConfigError: an argument of the wrong type or value (named in the message).
        InvalidName: a bad channel name, or two channels with one name.
        StorageIOError: the file exists (``EEXIST``: never overwritten), or cannot be
            made.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        channels: Iterable[ChannelConfig],
        sample_rate: float,
        chunk_size: int | None = None,
        compression: str | None = "gzip",
        compression_level: int | None = None,
        storage_format: str = "hdf5",
        store: str = "counts",
        start_ns: int | None = None,
    ) -> None:
        self.channels: tuple[ChannelConfig, ...] = check_channels(channels)
        self.timebase = Timebase(sample_rate, time.time_ns() if start_ns is None else start_ns)
        self.storage_format = _choice(storage_format, STORAGE_FORMATS, "storage_format")
        self.compression = _choice(None if compression == "none" else compression,
                                   COMPRESSIONS, "compression")  # fmt: skip
        self.store = _choice(store, STORES, "store")
        chunk_size = DEFAULT_CHUNK if chunk_size is None else _whole(chunk_size, "chunk_size", 1)
        self._chunk = chunk_size
        if self.compression == "gzip" and self.storage_format != "hdf5":
            raise ConfigError(f"compression 'gzip' is HDF5's; Arrow IPC (storage_format "
                              f"{self.storage_format!r}) compresses with 'lz4' or 'zstd' "
                              "only: choose one of those or None")  # fmt: skip
        hdf5_path, arrow_path = _paths(path, self.storage_format)
        metadata = file_metadata(self.channels, self.timebase.sample_rate,
                                 self.timebase.start_ns, self.store, self.compression,
                                 chunk_size)  # fmt: skip
        self.schema = data_schema(self.channels, metadata, self.store)
        self._writers: list[Writer] = []
        try:
            if hdf5_path is not None:
                self._writers.append(_open_hdf5(hdf5_path, self.channels, metadata,
                                                self.compression, compression_level,
                                                chunk_size))  # fmt: skip
            if arrow_path is not None:
                from daq_storage.writers import ArrowWriter

                codec = self.compression if self.compression != "gzip" else None
                self._writers.append(ArrowWriter(arrow_path, compression=codec))
        except BaseException:
            for writer in self._writers:
                writer.close()
            raise
        self.files: tuple[Path, ...] = tuple(w.path for w in self._writers)
        #: The first output (the HDF5 file, else the Arrow IPC directory).
        self.path: Path = self.files[0]
        self._buffer: list[npt.NDArray[Any]] | None = None  # samples not yet given out
        self._fill = 0
        self._next: int | None = None
        self._gaps: list[Gap] = []
        self._gaps_stored = 0
        self._samples = self._flushed = self._blocks = self._flushes = 0
        self._closed = False

    @classmethod
    def builder(cls) -> StreamWriterBuilder:
        """A :class:`StreamWriterBuilder` (seed 001's builder)."""
        from daq_storage.streams._builder import StreamWriterBuilder

        return StreamWriterBuilder()

    # ------------------------------------------------------------------ writing
    def write(self, block: npt.NDArray[Any], *, first_sample: int | None = None) -> None:
        """Append ``block``: ``(n_samples, n_channels)`` int16 counts or float values,
        its columns in the order of :attr:`channels`.

        ``first_sample``: the index of the block's first sample (default: where the
        previous block ended; 0 for the first). A block that starts after that records
        a :class:`Gap`; the samples are stored with their own indices and times.

        Raises:
            WriterClosedError: after :meth:`close`.
            SchemaMismatch: a block of another shape; a ``first_sample`` before the
                end of the previous block (it would overlap).
            UnsupportedData: a dtype other than int16 or float; with
                ``store="counts"``, a value outside its channel's range.
            ConfigError: a ``first_sample`` that is no int >= 0.
        """
        self._check_open()
        first = self._first(first_sample)
        columns = channel_columns(block, self.channels, self.store, first)
        self._append(first, columns)

    def write_record(self, record: Record) -> None:
        """Append a ring record of a DAQ card stream (an Arrow batch with a
        ``sample_index`` column and an int16 column per channel, named as
        :attr:`channels`; see :meth:`drain`). A jump of ``sample_index`` (before the
        record, or inside it) is recorded as a gap.

        Raises:
            SchemaMismatch: a record lacking a channel's column or ``sample_index``, with
                a column of another type, or whose ``scale_factor`` is not its channel's.
        """
        self._check_open()
        batch = record.batch()
        names = batch.schema.names
        missing = [c.name for c in self.channels if c.name not in names]
        if missing or "sample_index" not in names:
            raise SchemaMismatch(f"ring stream {record.stream!r} record {record.seq}: no "
                                 f"column {(missing or ['sample_index'])[0]!r}; its columns "
                                 f"are {names}")  # fmt: skip
        index = batch.column("sample_index").to_numpy()
        arrays = []
        for channel in self.channels:
            column = batch.column(channel.name)
            if column.type != pa.int16():
                raise SchemaMismatch(f"ring stream {record.stream!r}: column {channel.name!r} "
                                     f"is {column.type}, not int16 counts")  # fmt: skip
            _check_scale(record, batch.schema.field(channel.name), channel)
            arrays.append(column.to_numpy())
        # runs of consecutive indices: each a block of its own (a jump is a gap)
        cuts = np.flatnonzero(np.diff(index.astype(np.int64)) != 1) + 1
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(index)], strict=True):
            if hi > lo:
                first = self._first(int(index[lo]))
                block = np.stack([a[lo:hi] for a in arrays], axis=1)
                self._append(first, channel_columns(block, self.channels, self.store, first))

    def drain(self, reader: RingReader, *, stream: str, timeout: float = 1.0,
              max_samples: int | None = None) -> int:  # fmt: skip
        """Write the records of ``stream`` that ``reader`` reads (others are skipped)
        until none comes for ``timeout`` seconds, the ring's writer is gone and every
        record is read, or ``max_samples`` samples are written; the samples written.
        See :func:`~daq_storage.streams.drain`."""
        from daq_storage.streams._ring import drain

        return drain(self, reader, stream=stream, timeout=timeout, max_samples=max_samples)

    @classmethod
    def from_ring(cls, reader: RingReader, path: str | os.PathLike[str], *, stream: str,
                  timeout: float = 5.0, **options: Any) -> StreamWriter:  # fmt: skip
        """A writer for a DAQ card's ring ``stream``, its channels, rate and start time
        taken from the stream's first record (written at once); see
        :func:`~daq_storage.streams.writer_from_ring`."""
        from daq_storage.streams._ring import writer_from_ring

        return writer_from_ring(reader, path, stream=stream, timeout=timeout, **options)

    def _first(self, first_sample: int | None) -> int:
        if first_sample is None:
            return self._next or 0
        first = _whole(first_sample, "first_sample", 0)
        if self._next is not None and first < self._next:
            raise SchemaMismatch(f"block starting at sample {first} overlaps what was written: "
                                 f"the next sample is {self._next}")  # fmt: skip
        return first

    def _append(self, first: int, columns: Sequence[npt.NDArray[Any]]) -> None:
        """Samples ``first``.. into the buffer; each full buffer (a chunk of every
        dataset) goes to the writers as one batch."""
        n = len(columns[0])
        if n == 0:
            return
        times = self.timebase.times(first, n)  # refuses times past int64 before any change
        if self._next is not None and first > self._next:
            self._gaps.append(Gap(self._next, first - self._next))
        index = np.arange(first, first + n, dtype=np.uint64)
        done = 0
        while done < n:
            take = min(n - done, self._chunk - self._fill)
            if self._fill == 0 and take == self._chunk:  # a whole chunk: no copy to hold
                self._emit(times[done : done + take], index[done : done + take],
                           [c[done : done + take] for c in columns])  # fmt: skip
            else:
                if self._buffer is None:
                    self._buffer = [
                        np.empty(self._chunk, c.dtype) for c in (times, index, *columns)
                    ]
                end = self._fill + take
                for held, values in zip(self._buffer, (times, index, *columns), strict=True):
                    held[self._fill : end] = values[done : done + take]
                self._fill = end
                if end == self._chunk:
                    self._emit_buffer()
            done += take
        self._next = first + n
        self._samples += n
        self._blocks += 1

    def _emit_buffer(self) -> None:
        if self._buffer is not None and self._fill:
            held, fill = self._buffer, self._fill
            # the writers keep what they are given until a chunk fills: a new buffer next
            self._buffer, self._fill = None, 0
            self._emit(held[0][:fill], held[1][:fill], [c[:fill] for c in held[2:]])

    def _emit(self, times: npt.NDArray[np.int64], index: npt.NDArray[np.uint64],
              columns: Sequence[npt.NDArray[Any]]) -> None:  # fmt: skip
        arrays = [pa.array(times.view("datetime64[ns]"), self.schema.field(0).type),
                  pa.array(index)]  # fmt: skip
        arrays += [pa.array(np.ascontiguousarray(c)) for c in columns]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        for writer in self._writers:
            writer.write_batch(DATA, batch)

    # ------------------------------------------------------------------ lifecycle
    @property
    def gaps(self) -> list[Gap]:
        """Every gap recorded, in order."""
        return list(self._gaps)

    @property
    def stats(self) -> StreamStats:
        """A snapshot of what was written (:class:`StreamStats`)."""
        return StreamStats(self._samples, self._flushed, self._blocks, len(self._gaps),
                           sum(g.count for g in self._gaps), self._flushes, self._next,
                           self.files)  # fmt: skip

    def flush(self, *, durable: bool = False) -> None:
        """Make every sample written so far readable (a killed process keeps them), the
        gaps with them; ``durable=True`` also syncs the files to the disk."""
        self._check_open()
        self._emit_buffer()
        self._store_gaps()
        for writer in self._writers:
            writer.flush(durable=durable)
        self._flushed = self._samples
        self._flushes += 1

    def _store_gaps(self) -> None:
        if len(self._gaps) > self._gaps_stored:
            value = [{"first": g.first, "count": g.count} for g in self._gaps]
            for writer in self._writers:
                writer.set_metadata("gaps", value, stream=DATA)
            self._gaps_stored = len(self._gaps)

    def close(self) -> None:
        """Flush and close the files (again: nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._emit_buffer()
            self._store_gaps()
        finally:
            for writer in self._writers:
                writer.close()
        self._flushed = self._samples
        self._flushes += 1

    def _check_open(self) -> None:
        if self._closed:
            raise WriterClosedError(f"stream writer for {self.path} is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def __repr__(self) -> str:
        return (f"StreamWriter({str(self.path)!r}, {len(self.channels)} channels at "
                f"{self.timebase.sample_rate:g}/s, {self.storage_format})")  # fmt: skip


def _check_scale(record: Record, field: pa.Field, channel: ChannelConfig) -> None:
    """Counts whose ``scale_factor`` (field metadata, as a card declares it) is not the
    channel's would be stored as other values: refused."""
    declared = (field.metadata or {}).get(b"scale_factor")
    if declared is None:
        return
    try:
        scale = float(declared)
    except ValueError:
        scale = math.nan
    if not math.isclose(scale, channel.scale_factor, rel_tol=1e-9):
        raise SchemaMismatch(
            f"ring stream {record.stream!r}: column {channel.name!r} has scale_factor "
            f"{declared.decode(errors='replace')} per count, channel {channel.name!r} "
            f"{channel.scale_factor!r} (range [{channel.min_value}, {channel.max_value}]): its "
            "counts would be stored as other values"
        )


def _choice(value: Any, accepted: Sequence[Any], name: str) -> Any:
    if isinstance(value, str | None) and value in accepted:
        return value
    raise ConfigError(f"{name} must be one of {list(accepted)}, got {describe_value(value)}")


def _whole(value: object, name: str, low: int) -> int:
    number: int | None = None
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError):
            number = operator.index(value)  # type: ignore[arg-type]
    if number is None or number < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {describe_value(value)}")
    return number


def _paths(path: str | os.PathLike[str], storage_format: str) -> tuple[Path | None, Path | None]:
    """The HDF5 file and the Arrow IPC directory (``None``: not written)."""
    try:
        file = Path(path)
    except TypeError:
        raise ConfigError(
            f"path must be a str or os.PathLike, got {describe_value(path)}"
        ) from None
    if file.suffix.lower() not in _HDF5_SUFFIXES:
        if storage_format != "arrow":
            raise ConfigError(f"path {str(file)!r} must name an HDF5 file (.h5 or .hdf5)")
        return None, file
    return (None if storage_format == "arrow" else file,
            None if storage_format == "hdf5" else file.with_suffix(""))  # fmt: skip


def _open_hdf5(path: Path, channels: Sequence[ChannelConfig], metadata: dict[str, Any],
               compression: str | None, level: int | None,
               chunk_size: int | None) -> Writer:  # fmt: skip
    """The HDF5 writer, ``/metadata`` and ``/channels`` written and committed: the file
    says what it holds before its first sample."""
    from daq_storage.writers import Hdf5Writer

    writer = Hdf5Writer(path, compression=compression or "none", compression_level=level,
                        chunk_size=chunk_size)  # fmt: skip
    try:
        for key, value in metadata.items():
            writer.set_metadata(key, value, stream="metadata")
        writer.write_batch("channels", channels_batch(channels))
        writer.flush()
    except BaseException:
        writer.close()
        raise
    return writer
