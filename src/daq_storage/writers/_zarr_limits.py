"""What a Zarr stream may not do: hold chunks or shards memory cannot, run out of memory
without saying which stream, or store two different columns in one array.

zarr-python writes a chunk (or, with sharding, a shard) that a write covers only in part
by building the whole chunk in memory first, so a geometry whose chunk or shard is larger
than memory accepts every write and fails at the flush. Such geometries are refused at a
stream's first write, before anything is made: a chunk or shard buffer may take at most
:func:`buffer_limit` bytes, a quarter of the machine's physical memory.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from daq_storage.errors import ConfigError, SchemaMismatch, StorageIOError
from daq_storage.location import S3Location, s3_errors
from daq_storage.writers._base import storage_errors

__all__ = [
    "buffer_limit",
    "check_buffer",
    "Origins",
    "column_types",
    "column_paths",
    "out_of_memory",
    "storage_of",
    "zarr_errors",
]

#: The limit where the machine's memory cannot be found.
_FALLBACK_LIMIT = 8 << 30


def buffer_limit() -> int:
    """The most bytes a chunk or shard buffer may take: a quarter of physical memory."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX, or not reported
        return _FALLBACK_LIMIT
    return memory // 4 if memory > 0 else _FALLBACK_LIMIT


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def check_buffer(
    what: str, piece: str, count: int, shape: tuple[int, ...], dtype: np.dtype[Any], option: str
) -> None:
    """Refuse a ``piece`` (chunk, shard) of ``count`` rows or frames (each ``shape`` of
    ``dtype``) whose buffer would take more than :func:`buffer_limit`.

    Raises:
        ConfigError: naming ``what`` (the stream, the column), the size and the limit.
    """
    nbytes = count * math.prod(shape) * dtype.itemsize
    limit = buffer_limit()
    if nbytes > limit:
        each = f"{dtype}" if not shape else f"{dtype} {shape}"
        raise ConfigError(
            f"zarr {what}: a {piece} of {count} x {each} takes {_gib(nbytes)}, and zarr "
            f"builds a {piece} whole in memory to write it; the limit is {_gib(limit)} (a "
            f"quarter of this machine's memory): use a smaller {option}"
        )


def out_of_memory(path: Path | S3Location, action: str, exc: MemoryError) -> StorageIOError:
    """``exc`` as a ``StorageIOError`` (``ENOMEM``) naming ``action`` (the stream)."""
    return StorageIOError(errno.ENOMEM, f"{action}: out of memory ({exc})", str(path))


@contextmanager
def zarr_errors(path: Path | S3Location, action: str) -> Iterator[None]:
    """:func:`storage_errors` (for an object store, :func:`s3_errors`: the URL, endpoint
    and cause), and running out of memory as :func:`out_of_memory`."""
    try:
        if isinstance(path, S3Location):
            with s3_errors(path, action.removeprefix("cannot ")):
                yield
        else:
            with storage_errors(path, action):
                yield
    except MemoryError as exc:
        raise out_of_memory(path, action, exc) from exc


def _walk(path: tuple[str, ...], kind: pa.DataType) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Each leaf column below field ``path`` of type ``kind``: its path and type
    (dictionaries decoded, as :func:`~daq_storage.schema.flatten_batch` does)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_struct(kind):
        for child in kind:
            yield from _walk((*path, child.name), child.type)
    else:
        yield path, kind


def column_types(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    """The columns :func:`~daq_storage.schema.flatten_batch` makes of ``schema``
    (``parent.child`` for struct fields), duplicates included, with their Arrow types."""
    return [(".".join(path), kind) for field in schema
            for path, kind in _walk((field.name,), field.type)]  # fmt: skip


def column_paths(schema: pa.Schema) -> dict[str, tuple[str, ...]]:
    """Each column :func:`~daq_storage.schema.flatten_batch` makes of ``schema``, by name
    (``parent.child``): the field names it comes from (one for a top-level column)."""
    paths: dict[str, tuple[str, ...]] = {}
    for field in schema:
        for path, _ in _walk((field.name,), field.type):
            paths.setdefault(".".join(path), path)
    return paths


def storage_of(kind: pa.DataType) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """The dtype and inner shape a column of Arrow type ``kind`` (a leaf: see
    :func:`column_types`) is stored as, as :func:`~daq_storage.schema.flatten_batch`
    gives its values."""
    if isinstance(kind, pa.FixedShapeTensorType):
        return np.dtype(kind.value_type.to_pandas_dtype()), tuple(kind.shape)
    if pa.types.is_fixed_size_list(kind):
        return np.dtype(kind.value_type.to_pandas_dtype()), (kind.list_size,)
    if pa.types.is_timestamp(kind) or pa.types.is_duration(kind):
        return np.dtype(np.int64), ()
    if pa.types.is_boolean(kind):
        return np.dtype(bool), ()
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return np.dtype(kind.to_pandas_dtype()), ()
    return np.dtype(object), ()  # text


def _describe(path: tuple[str, ...]) -> str:
    if len(path) == 1:
        return f"column {path[0]!r}"
    return f"field {path[-1]!r} of struct column {'.'.join(path[:-1])!r}"


class Origins:
    """The field names each column of a table comes from (a struct's field or a top-level
    column), which must not change: ``a.b`` of a struct and a column ``a.b`` would fill
    one array."""

    def __init__(self) -> None:
        self.paths: dict[str, tuple[str, ...]] = {}
        self._last: tuple[pa.Schema, dict[str, tuple[str, ...]]] | None = None

    def check(self, stream: str, schema: pa.Schema, names: list[str]) -> dict[str, tuple[str, ...]]:
        """The origins of a batch's columns (``names``, flattened from ``schema``), by name.

        Raises:
            SchemaMismatch: a column comes from elsewhere than the column of that name in
                an earlier batch; naming the stream and both columns.
        """
        if not any("." in name for name in names):  # only a dotted name can come from two
            return {}
        if self._last is None or not self._last[0].equals(schema):  # batches share schemas
            self._last = (schema, column_paths(schema))
        new = self._last[1]
        for name, path in new.items():
            stored = self.paths.get(name)
            if stored is not None and stored != path:
                raise SchemaMismatch(
                    f"stream {stream!r}: {_describe(path)} would be stored in the array "
                    f"{name!r} of {_describe(stored)}, written by an earlier batch; rename one "
                    "of them"
                )
        return new

    def add(self, names: list[str], paths: dict[str, tuple[str, ...]]) -> None:
        for name in names:
            self.paths[name] = paths.get(name, (name,))

    def drop(self, names: list[str]) -> None:
        for name in names:
            del self.paths[name]
