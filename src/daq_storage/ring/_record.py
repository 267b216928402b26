"""One record read from a ring: :class:`Record`.

Everything a record's bytes say (dtype, shape, metadata, Arrow offsets) is checked
before it is used: a damaged or forged record raises :class:`RingCorrupt`, never
crashes the reader or makes it allocate more than the record holds.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import RingCorrupt, UnsupportedData
from daq_storage.ring import _format as f
from daq_storage.ring._args import flag
from daq_storage.ring._arrow import read_batch
from daq_storage.ring._mapping import RingFile

__all__ = ["Record"]


class Record:
    """One record read from the ring.

    Attributes:
        seq: sequence number (0, 1, 2, ... over the ring's life).
        stream: the stream's name.
        kind: ``"raw"``, ``"frame"`` or ``"arrow"``.
        timestamp_ns: the writer's timestamp (ns since the epoch).
        data: the payload (``bytes``-like, read-only).
        zero_copy: ``data`` views the shared mapping itself rather than a private copy;
            valid until the reader's next read (registered block-mode consumers) or
            until the writer laps it (check with :meth:`RingReader.still_valid`).
    """

    __slots__ = ("_ring", "aux", "data", "kind_code", "position", "seq", "stream_id",
                 "timestamp_ns", "zero_copy")  # fmt: skip

    def __init__(self, ring: RingFile, position: int, kind: int, stream_id: int, seq: int,
                 timestamp_ns: int, aux: int, data: Any, zero_copy: bool) -> None:  # fmt: skip
        self._ring = ring
        self.position = position
        self.kind_code = kind
        self.stream_id = stream_id
        self.seq = seq
        self.timestamp_ns = timestamp_ns
        self.aux = aux
        self.data = data
        self.zero_copy = zero_copy

    @property
    def stream(self) -> str:
        return self._ring.stream_name(self.stream_id)

    @property
    def kind(self) -> str:
        return f.KIND_NAMES.get(self.kind_code, str(self.kind_code))

    def __len__(self) -> int:
        return len(self.data)

    def __bool__(self) -> bool:
        # A zero-length payload is still a record: `if reader.read_next():` must hold.
        return True

    def __repr__(self) -> str:
        return (
            f"Record(seq={self.seq}, stream={self.stream!r}, kind={self.kind!r}, "
            f"timestamp_ns={self.timestamp_ns}, nbytes={len(self.data)})"
        )

    def tobytes(self) -> bytes:
        """The payload as ``bytes``."""
        return bytes(self.data)

    def _where(self) -> str:
        return f"ring {self._ring.path}: {self.kind} record {self.seq}"

    def _frame_header(self) -> tuple[np.dtype[Any], tuple[int, ...], int, bytes, int]:
        if self.kind_code != f.KIND_FRAME:
            raise UnsupportedData(f"record {self.seq} of stream {self.stream!r} is not a frame")
        data = self.data
        where = self._where()
        if len(data) < f.FRAME_HEADER.size:
            raise RingCorrupt(f"{where} is {len(data)} bytes, shorter than a frame header")
        code, ndim, meta_len, number, *dims = f.FRAME_HEADER.unpack_from(data, 0)
        if ndim > f.FRAME_MAX_DIMS:
            raise RingCorrupt(f"{where} has {ndim} dimensions (max {f.FRAME_MAX_DIMS})")
        try:
            dtype = np.dtype(code.rstrip(b"\x00").decode("ascii"))
        except (TypeError, ValueError, UnicodeDecodeError, SyntaxError):
            raise RingCorrupt(f"{where} has invalid dtype {code!r}") from None
        # Only what a writer can store: a plain, non-empty, non-object element type.
        if dtype.hasobject or dtype.itemsize == 0 or dtype.shape or dtype.fields is not None:
            raise RingCorrupt(f"{where} has dtype {code!r}, which no ring writer stores")
        shape = tuple(dims[:ndim])
        offset = f.FRAME_HEADER.size + f.align(meta_len)
        if offset > len(data):
            raise RingCorrupt(f"{where} has metadata length {meta_len} beyond the record")
        # math.prod of Python ints cannot overflow; compare before any allocation.
        if math.prod(shape) * dtype.itemsize != len(data) - offset:
            raise RingCorrupt(
                f"{where}: shape {shape} of {dtype} needs {math.prod(shape) * dtype.itemsize} "
                f"bytes but the record holds {len(data) - offset}"
            )
        meta = bytes(data[f.FRAME_HEADER.size : f.FRAME_HEADER.size + meta_len])
        return dtype, shape, number, meta, offset

    def array(self, *, copy: bool = False) -> npt.NDArray[Any]:
        """The frame as an ndarray: a view of :attr:`data` (no copy) unless ``copy``."""
        dtype, shape, _, _, offset = self._frame_header()
        try:
            array = np.frombuffer(self.data, dtype=dtype, offset=offset).reshape(shape)
        except ValueError as exc:  # e.g. a zero-element shape numpy cannot express
            raise RingCorrupt(f"{self._where()}: shape {shape}: {exc}") from None
        return array.copy() if flag(copy, "copy") else array

    @property
    def frame_number(self) -> int:
        return self._frame_header()[2]

    @property
    def metadata(self) -> dict[str, Any]:
        """The frame's metadata (``{}`` when none was written)."""
        raw = self._frame_header()[3]
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise RingCorrupt(f"{self._where()} has invalid metadata JSON") from None
        if not isinstance(value, dict):
            raise RingCorrupt(f"{self._where()} metadata is not a JSON object")
        return value

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of an ``arrow`` record."""
        if self.kind_code != f.KIND_ARROW:
            raise UnsupportedData(f"record {self.seq} of stream {self.stream!r} is not Arrow")
        return self._ring.schema(self.aux)

    def batch(self) -> pa.RecordBatch:
        """The Arrow record batch of an ``arrow`` record, validated.

        The batch refers to :attr:`data` without copying it; for a zero-copy record it
        refers to a private copy instead, so that the writer can never change a batch
        under its reader.

        Raises:
            RingCorrupt: the record is not a valid batch of its schema (its offsets
                point outside it, it is compressed, ...).
        """
        schema = self.schema
        data = bytes(self.data) if self.zero_copy else self.data
        return read_batch(data, schema, self._ring.full_validation(self.aux), self._where)
