"""A DAQ card's blocks from a ring stream into a :class:`StreamWriter`.

The card (:class:`~daq_storage.sim.SimulatedDaqCard`, or a lab's acquisition process)
puts each block into the ring as an Arrow record batch: a ``sample_index`` column, an
int16 column per channel (CF ``units`` and ``scale_factor`` as field metadata), and the
schema metadata ``sample_rate``, ``volts_per_count`` and ``start_ns``.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from daq_storage.errors import ConfigError, SchemaMismatch, describe_value
from daq_storage.streams._channels import ChannelConfig
from daq_storage.streams._writer import StreamWriter

if TYPE_CHECKING:
    from daq_storage.ring import Record, RingReader

__all__ = ["channels_of", "drain", "writer_from_ring"]

_POLL_S = 0.05  # a wait of read_many; the loop's deadlines are checked between waits


def channels_of(schema: pa.Schema, stream: str) -> tuple[list[ChannelConfig], float, int]:
    """The channels (every int16 column), rate and start time a DAQ card's record
    schema declares: a channel's range is ``±32768 * volts_per_count`` (its
    ``scale_factor``), its unit its ``units``.

    Raises:
        SchemaMismatch: a schema without ``sample_index``, int16 columns or the
            ``sample_rate`` / ``start_ns`` / ``volts_per_count`` metadata.
    """
    metadata = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    try:
        rate = float(json.loads(metadata["sample_rate"]))
        start_ns = int(json.loads(metadata["start_ns"]))
        step = float(json.loads(metadata["volts_per_count"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise SchemaMismatch(f"ring stream {stream!r} is no DAQ card stream: its schema "
                             f"metadata lacks sample_rate, start_ns or volts_per_count "
                             f"({exc!r})") from None  # fmt: skip
    channels: list[ChannelConfig] = []
    for field in schema:
        if field.type == pa.int16():
            units = (field.metadata or {}).get(b"units", b"V").decode()
            channels.append(ChannelConfig(len(channels), field.name, -32768 * step,
                                          32768 * step, units))  # fmt: skip
    if not channels or "sample_index" not in schema.names:
        raise SchemaMismatch(f"ring stream {stream!r} is no DAQ card stream: it needs a "
                             f"sample_index column and int16 channels, has "
                             f"{schema.names}")  # fmt: skip
    return channels, rate, start_ns


def _records(reader: RingReader, stream: str, timeout: float) -> Any:
    """``stream``'s records as they come; stops after ``timeout`` s without one, or
    once the ring's writer is gone and nothing is left to read."""
    idle_since = time.monotonic()
    while True:
        records = reader.read_many(timeout=_POLL_S)
        if records:
            idle_since = time.monotonic()
            for record in records:
                if record.stream == stream and record.kind == "arrow":
                    yield record
            continue
        if not reader.writer_alive or time.monotonic() - idle_since >= timeout:
            return


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{name} must be a number of seconds >= 0, got {describe_value(value)}")
    return float(value)


def writer_from_ring(reader: RingReader, path: str | os.PathLike[str], *, stream: str,
                     timeout: float = 5.0, **options: Any) -> StreamWriter:  # fmt: skip
    """A :class:`StreamWriter` at ``path`` for the ring's DAQ card ``stream``: it waits
    (up to ``timeout`` s) for the stream's first record, takes its channels, rate and
    start time (:func:`channels_of`), and writes that record; ``options`` are the
    writer's others (compression, storage_format, ...). Continue with
    :meth:`StreamWriter.drain`.

    Raises:
        SchemaMismatch: no record of ``stream`` came in time, or not a DAQ card's.
    """
    timeout = _seconds(timeout, "timeout")
    first: Record | None = None
    deadline = time.monotonic() + timeout
    while first is None:  # one record at a time: the next ones stay for drain()
        left = deadline - time.monotonic()
        if left < 0:
            break
        record = reader.read_next(timeout=min(left, _POLL_S))
        if record is None and not reader.writer_alive:
            break  # nothing left, and nobody to write more
        if record is not None and record.stream == stream and record.kind == "arrow":
            first = record
    if first is None:
        raise SchemaMismatch(f"no record of ring stream {stream!r} within {timeout:g} s")
    channels, rate, start_ns = channels_of(first.schema, stream)
    writer = StreamWriter(path, channels=channels, sample_rate=rate, start_ns=start_ns,
                          **options)  # fmt: skip
    try:
        writer.write_record(first)
    except BaseException:
        writer.close()
        raise
    return writer


def drain(writer: StreamWriter, reader: RingReader, *, stream: str, timeout: float = 1.0,
          max_samples: int | None = None) -> int:  # fmt: skip
    """Write ``stream``'s records from ``reader`` into ``writer`` until none comes for
    ``timeout`` s, the ring's writer is gone and nothing is left, or ``max_samples``
    samples are written; the samples written. A record lost to the ring (the reader
    lapped) shows as a gap of its samples."""
    timeout = _seconds(timeout, "timeout")
    before = writer.stats.samples
    for record in _records(reader, stream, timeout):
        writer.write_record(record)
        if max_samples is not None and writer.stats.samples - before >= max_samples:
            break
    return writer.stats.samples - before
