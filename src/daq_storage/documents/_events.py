"""Events of one stream gathered column by column until they are written: ``event``
documents one row at a time, ``event_page`` documents a column at a time."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from daq_storage.documents._descriptor import TIMESTAMP_SUFFIX, KeySpec, StreamSchema, doc_name
from daq_storage.errors import DocumentError

__all__ = ["EventBuffer", "Rows"]

#: Resolves a datum id to its array in the data key's shape (``None``: not copied in).
Filler = Callable[[str, Sequence[int | None]], np.ndarray | None]


@dataclass
class Rows:
    """Rows taken out of an :class:`EventBuffer`, ready to write."""

    seq_num: np.ndarray
    time: np.ndarray
    #: Scalar and datum-id columns, then every key's ``<key>__timestamp``.
    columns: dict[str, pa.Array]
    #: Array keys: frames ``(n, *shape)``.
    arrays: dict[str, np.ndarray]
    #: Datum keys whose data was copied in: (seq_nums, timestamps, frames).
    filled: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.seq_num)


class _Column:
    """Chunks of Arrow arrays (from pages) and a list of values (from single events),
    kept in arrival order."""

    __slots__ = ("chunks", "pending")

    def __init__(self) -> None:
        self.chunks: list[pa.Array] = []
        self.pending: list[Any] = []

    def add_chunk(self, array: pa.Array, type_: pa.DataType) -> None:
        self._settle(type_)
        self.chunks.append(array)

    def _settle(self, type_: pa.DataType) -> None:
        if self.pending:
            self.chunks.append(pa.array(self.pending, type_))
            self.pending = []

    def take(self, type_: pa.DataType) -> pa.Array:
        self._settle(type_)
        chunks, self.chunks = self.chunks, []
        if len(chunks) == 1:
            return chunks[0]
        return pa.concat_arrays(chunks) if chunks else pa.array([], type_)


class EventBuffer:
    """The rows of one stream not yet written.

    Each value is checked as it arrives (key present, type, shape), so an error names
    the document that carried it.
    """

    def __init__(self, schema: StreamSchema) -> None:
        self.schema = schema
        self.rows = 0
        self._keys = schema.in_events()
        self._names = [k.name for k in self._keys]
        self._seq: list[np.ndarray] = []
        self._time: list[np.ndarray] = []
        self._pending_seq: list[int] = []
        self._pending_time: list[float] = []
        self._values = {k.name: _Column() for k in self._keys if k.kind != "array"}
        self._stamps = {k.name: _Column() for k in self._keys}
        self._frames: dict[str, list[np.ndarray]] = {
            k.name: [] for k in self._keys if k.kind == "array"
        }
        self._filled: dict[str, list[tuple[int, float, np.ndarray]]] = {
            k.name: [] for k in self._keys if k.kind == "datum"
        }

    # ---------------------------------------------------------------- adding
    def _check_keys(self, data: Any, timestamps: Any, where: str) -> None:
        if not isinstance(data, Mapping) or not isinstance(timestamps, Mapping):
            raise DocumentError(f"{where}: data and timestamps must be mappings")
        if data.keys() != timestamps.keys() or len(data) != len(self._names):
            missing = [k for k in self._names if k not in data or k not in timestamps]
            extra = [
                k for k in data if k not in self.schema.keys or self.schema.keys[k].kind == "stream"
            ]
            if missing or extra or data.keys() != timestamps.keys():
                raise DocumentError(
                    f"{where} does not match its descriptor (stream {self.schema.name!r}): "
                    f"missing data keys {missing}, unknown data keys {extra}"
                )

    def add_event(self, doc: Mapping[str, Any], fill: Filler | None) -> None:
        """Add one ``event`` document (already validated by event-model's schema)."""
        where = doc_name("event", doc)
        data, stamps = doc["data"], doc["timestamps"]
        self._check_keys(data, stamps, where)
        values: dict[str, Any] = {}
        frames: dict[str, np.ndarray] = {}
        for key in self._keys:
            value = data[key.name]
            stamp = stamps[key.name]
            if not isinstance(stamp, int | float) or isinstance(stamp, bool):
                raise DocumentError(
                    f"{where}: timestamp of {key.name!r} is {stamp!r}, not a number"
                )
            if key.kind == "array":
                values[key.name] = key.check_frames(_as_array(value, key, where)[np.newaxis], where)
            elif key.kind == "datum":
                frame = None
                if isinstance(value, str):
                    frame = None if fill is None else fill(value, key.shape)
                else:  # filled already (an event through event-model's Filler): the data
                    frame = _as_array(value, key, where)
                    reference = (doc.get("filled") or {}).get(key.name)
                    value = reference if isinstance(reference, str) else ""
                if frame is not None:
                    frames[key.name] = key.check_frames(np.asarray(frame)[np.newaxis], where)[0]
                values[key.name] = value
            else:
                values[key.name] = _check_scalar(key, value, where)
        # Every value checked (and every datum read): the event is taken whole or not at all.
        seq_num = int(doc["seq_num"])
        for key in self._keys:
            name = key.name
            self._stamps[name].pending.append(stamps[name])
            if key.kind == "array":
                self._frames[name].append(values[name])
                continue
            self._values[name].pending.append(values[name])
            if name in frames:
                self._filled[name].append((seq_num, float(stamps[name]), frames[name]))
        self._pending_seq.append(seq_num)
        self._pending_time.append(float(doc["time"]))
        self.rows += 1

    def add_page(self, doc: Mapping[str, Any], fill: Filler | None) -> None:
        """Add one ``event_page`` document (checked here, a column at a time)."""
        where = doc_name("event_page", doc)
        data, stamps = doc["data"], doc["timestamps"]
        self._check_keys(data, stamps, where)
        try:
            seq = np.asarray(doc["seq_num"], dtype=np.int64)
            times = np.asarray(doc["time"], dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise DocumentError(f"{where}: seq_num must be integers and time numbers") from None
        n = len(seq)
        if seq.ndim != 1 or times.shape != (n,) or len(doc.get("uid", ())) != n:
            raise DocumentError(f"{where}: uid, seq_num and time must be lists of one length")
        columns: dict[str, pa.Array] = {}
        stamp_columns: dict[str, pa.Array] = {}
        frames: dict[str, np.ndarray] = {}
        for key in self._keys:
            name = key.name
            value, stamp = data[name], stamps[name]
            if not isinstance(value, Sequence | np.ndarray) or len(value) != n or len(stamp) != n:
                raise DocumentError(
                    f"{where}: data and timestamps of {name!r} must hold {n} values"
                )
            try:
                stamp_columns[name] = pa.array(stamp, pa.float64())
            except (pa.ArrowException, TypeError, ValueError):
                raise DocumentError(f"{where}: timestamps of {name!r} must be numbers") from None
            if key.kind == "array":
                frames[name] = key.check_frames(_as_array(value, key, where, page=True), where)
                continue
            type_ = key.resolve_scalar(list(value[:1000])) if key.kind == "scalar" else pa.string()
            try:
                columns[name] = pa.array(value, type_)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                raise DocumentError(f"{where}: data key {name!r} ({type_}): {exc}") from None
        # Every datum read before anything is kept: the page is taken whole or not at all.
        filled: dict[str, list[tuple[int, float, np.ndarray]]] = {}
        for key in self._keys:
            if key.kind != "datum" or fill is None:
                continue
            for i, datum_id in enumerate(data[key.name]):
                frame = fill(datum_id, key.shape)
                if frame is not None:
                    frame = key.check_frames(np.asarray(frame)[np.newaxis], where)[0]
                    stamp = float(stamps[key.name][i])
                    filled.setdefault(key.name, []).append((int(seq[i]), stamp, frame))
        for key in self._keys:
            name = key.name
            self._stamps[name].add_chunk(stamp_columns[name], pa.float64())
            if key.kind == "array":
                self._frames[name].append(frames[name])
            else:
                self._values[name].add_chunk(columns[name], columns[name].type)
        if self._pending_seq:
            self._settle_index()
        self._seq.append(seq)
        self._time.append(times)
        self.rows += n
        for name, entries in filled.items():
            self._filled[name].extend(entries)

    def _settle_index(self) -> None:
        self._seq.append(np.asarray(self._pending_seq, dtype=np.int64))
        self._time.append(np.asarray(self._pending_time, dtype=np.float64))
        self._pending_seq, self._pending_time = [], []

    # ---------------------------------------------------------------- taking
    def take(self) -> Rows | None:
        """Every row gathered so far (``None`` when there is none); the buffer empties."""
        if not self.rows:
            return None
        if self._pending_seq:
            self._settle_index()
        seq = self._seq[0] if len(self._seq) == 1 else np.concatenate(self._seq)
        times = self._time[0] if len(self._time) == 1 else np.concatenate(self._time)
        self._seq, self._time = [], []
        columns: dict[str, pa.Array] = {}
        arrays: dict[str, np.ndarray] = {}
        for key in self._keys:
            if key.kind == "array":
                parts = self._frames[key.name]
                self._frames[key.name] = []
                arrays[key.name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
            else:
                type_ = key.arrow_type or key.resolve_scalar(self._values[key.name].pending)
                columns[key.name] = self._values[key.name].take(type_)
        for key in self._keys:
            columns[key.name + TIMESTAMP_SUFFIX] = self._stamps[key.name].take(pa.float64())
        filled = {}
        for name, entries in self._filled.items():
            if entries:
                filled[name] = (
                    np.asarray([e[0] for e in entries], dtype=np.int64),
                    np.asarray([e[1] for e in entries], dtype=np.float64),
                    np.stack([e[2] for e in entries]),
                )
            self._filled[name] = []
        self.rows = 0
        return Rows(seq, times, columns, arrays, filled)


def _as_array(value: Any, key: KeySpec, where: str, *, page: bool = False) -> np.ndarray:
    try:
        return np.asarray(value) if key.dtype is None else np.asarray(value, dtype=key.dtype)
    except (TypeError, ValueError, OverflowError):
        what = "values" if page else "value"
        raise DocumentError(
            f"{where}: the {what} of array key {key.name!r} cannot be read as an array of "
            f"shape {list(key.shape)}"
        ) from None


def _check_scalar(key: KeySpec, value: Any, where: str) -> Any:
    """``value`` when the scalar column can hold it (the column's type fixed by it when
    still open)."""
    type_ = key.arrow_type or key.resolve_scalar([value])
    ok: bool
    if isinstance(value, np.generic):
        value = value.item()
    if pa.types.is_floating(type_):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif pa.types.is_integer(type_):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif pa.types.is_boolean(type_):
        ok = isinstance(value, bool)
    elif pa.types.is_string(type_):
        ok = isinstance(value, str)
    else:
        try:
            pa.array([value], type_)
            ok = True
        except (pa.ArrowException, TypeError, ValueError):
            ok = False
    if not ok:
        raise DocumentError(
            f"{where}: data key {key.name!r} holds {type_} values ({key.spec.get('dtype')!r} "
            f"in its descriptor); got {value!r}"
        )
    return value
