"""A descriptor's ``data_keys`` as a stream schema: which keys are scalar columns, which
are arrays (frames, tensor columns), which are references to external data."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from daq_storage.errors import DocumentError

__all__ = ["KeySpec", "StreamSchema", "doc_name", "frame_dims"]

#: Suffix of the column holding a data key's timestamps (``det`` -> ``det__timestamp``).
TIMESTAMP_SUFFIX = "__timestamp"
#: Columns every event table starts with.
EVENT_COLUMNS = ("seq_num", "time")

_JSON_TYPES: dict[str, pa.DataType] = {
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
}
#: Descriptor fields kept as stream metadata, per data key.
DATA_KEY_FIELDS = ("dtype", "dtype_numpy", "shape", "units", "source", "dims", "external",
                   "object_name", "precision", "limits", "choices")  # fmt: skip


def doc_name(kind: str, doc: Mapping[str, Any]) -> str:
    """``"<kind> document (uid '...')"`` for an error message (a page: its first uid and
    how many rows it has)."""
    uid = doc.get("uid", doc.get("datum_id")) if isinstance(doc, Mapping) else None
    if isinstance(uid, list):
        first = uid[0] if uid else None
        return f"{kind} document (uid {first!r} and {len(uid) - 1} more)"
    return f"{kind} document (uid {uid!r})"


def frame_dims(key: str, spec: Mapping[str, Any], ndim: int) -> list[str]:
    """The names of a frame's dimensions: the data key's ``dims`` when it has one per
    dimension, else ``y, x`` (images), ``x`` (spectra) or ``dim_0, ...``."""
    dims = spec.get("dims") or []
    if len(dims) == ndim and all(isinstance(d, str) and d for d in dims):
        return list(dims)
    if ndim == 2:
        return ["y", "x"]
    if ndim == 1:
        return ["x"]
    return [f"dim_{i}" for i in range(ndim)]


@dataclass
class KeySpec:
    """One data key.

    ``kind``: ``"scalar"`` (a column), ``"array"`` (frames / a tensor column),
    ``"datum"`` (an external reference in the event: a text column holding the datum
    id, and frames when they are copied in) or ``"stream"`` (external data announced
    by ``stream_datum`` documents: never in an event).
    """

    name: str
    kind: Literal["scalar", "array", "datum", "stream"]
    spec: dict[str, Any]
    #: A scalar's Arrow type; ``None`` until the first value for an ``integer`` key
    #: without ``dtype_numpy`` (ophyd's simulated motors say ``integer`` and move to
    #: fractional positions: the first values decide between int64 and float64).
    arrow_type: pa.DataType | None = None
    #: An array's dtype and shape (``None`` until the first value where the
    #: descriptor leaves them open).
    dtype: np.dtype[Any] | None = None
    shape: tuple[int | None, ...] = ()

    @classmethod
    def from_data_key(cls, name: str, spec: Mapping[str, Any], where: str) -> KeySpec:
        shape = tuple(spec.get("shape") or ())
        external = str(spec.get("external") or "")
        numpy_dtype = _numpy_dtype(spec.get("dtype_numpy"), name, where)
        if external.startswith("STREAM"):
            return cls(name, "stream", dict(spec), dtype=numpy_dtype, shape=shape)
        if external:
            return cls(name, "datum", dict(spec), arrow_type=pa.string(), dtype=numpy_dtype,
                       shape=shape)  # fmt: skip
        if shape:
            return cls(name, "array", dict(spec), dtype=numpy_dtype, shape=shape)
        arrow_type: pa.DataType | None
        if numpy_dtype is not None and numpy_dtype.kind in "biuf":
            arrow_type = pa.from_numpy_dtype(numpy_dtype)
        elif numpy_dtype is not None and numpy_dtype.kind in "US":
            arrow_type = pa.string()
        else:
            arrow_type = _JSON_TYPES.get(str(spec.get("dtype")))
        return cls(name, "scalar", dict(spec), arrow_type=arrow_type)

    def check_frames(self, frames: np.ndarray, where: str) -> np.ndarray:
        """``frames`` (``(n, *shape)``) checked against the key's shape; the dtype and
        the open dimensions are fixed by the first frames."""
        if frames.dtype.kind not in "biuf":
            raise DocumentError(
                f"{where}: data key {self.name!r} holds {frames.dtype} values; an array "
                "key must hold numbers"
            )
        got = frames.shape[1:]
        if len(got) != len(self.shape) or any(
            want is not None and want != size for want, size in zip(self.shape, got, strict=False)
        ):
            raise DocumentError(
                f"{where}: data key {self.name!r} has shape {list(self.shape)} in its "
                f"descriptor; the value has shape {list(got)}"
            )
        if None in self.shape:
            self.shape = got
        if self.dtype is None:
            self.dtype = frames.dtype
        return frames.astype(self.dtype, copy=False)

    def resolve_scalar(self, values: Sequence[Any]) -> pa.DataType:
        """The scalar column's Arrow type, fixed from ``values`` when still open."""
        if self.arrow_type is None:
            integral = all(
                isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)
                for v in values
            )
            declared = self.spec.get("dtype")
            if declared == "integer":
                self.arrow_type = pa.int64() if integral else pa.float64()
            else:  # "array" with shape [] or an unknown type: as Arrow infers it
                self.arrow_type = pa.array(list(values)).type
                if pa.types.is_null(self.arrow_type):
                    self.arrow_type = pa.float64()
        return self.arrow_type


@dataclass
class StreamSchema:
    """The data keys of one descriptor name (``primary``, ``baseline``, ...)."""

    name: str
    keys: dict[str, KeySpec] = field(default_factory=dict)
    data_keys: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_descriptor(cls, doc: Mapping[str, Any]) -> StreamSchema:
        where = doc_name("descriptor", doc)
        name = doc.get("name") or "primary"
        if not isinstance(name, str):
            raise DocumentError(f"{where}: name must be text, got {name!r}")
        data_keys = doc["data_keys"]
        keys = {k: KeySpec.from_data_key(k, v, where) for k, v in data_keys.items()}
        for key in keys:
            if key in EVENT_COLUMNS or key.endswith(TIMESTAMP_SUFFIX):
                raise DocumentError(
                    f"{where}: data key {key!r} clashes with the event table's own columns "
                    f"({', '.join(EVENT_COLUMNS)}, <key>{TIMESTAMP_SUFFIX})"
                )
        return cls(name, keys, json.loads(json.dumps(dict(data_keys), default=str)))

    def same_keys(self, other: StreamSchema) -> bool:
        """Both describe the same keys with the same dtype and shape."""
        if self.keys.keys() != other.keys.keys():
            return False
        return all(_signature(self.keys[k]) == _signature(other.keys[k]) for k in self.keys)

    def in_events(self) -> list[KeySpec]:
        """The keys every event carries (all but stream-resource keys)."""
        return [k for k in self.keys.values() if k.kind != "stream"]

    def key_metadata(self) -> dict[str, dict[str, Any]]:
        """Per data key, its descriptor fields (dtype, dtype_numpy, shape, units, ...)."""
        return {
            key: {f: value[f] for f in DATA_KEY_FIELDS if f in value}
            for key, value in self.data_keys.items()
        }


def _signature(key: KeySpec) -> tuple[Any, ...]:
    spec = key.spec
    return (key.kind, spec.get("dtype"), spec.get("dtype_numpy"), tuple(spec.get("shape") or ()))


def _numpy_dtype(value: Any, key: str, where: str) -> np.dtype[Any] | None:
    if not value:
        return None
    if not isinstance(value, str):  # a structured dtype: not stored as numbers
        raise DocumentError(
            f"{where}: data key {key!r} has a structured dtype_numpy {value!r}; only plain "
            "numeric, boolean and text dtypes can be stored"
        )
    try:
        return np.dtype(value)
    except TypeError:
        raise DocumentError(
            f"{where}: data key {key!r}: dtype_numpy {value!r} is not a numpy dtype"
        ) from None
