"""The seeds' N-d array builder (seed 001): arrays of any shape, chunks and shards in a
Zarr store, filled chunk by chunk (a scan's wavelength x position x y x x, say).

:class:`ZarrArrayBuilder` is the part of :class:`~daq_storage.writers.ZarrWriter` that
offers it: ``writer.create_array(...)`` then ``writer.write_chunk(...)``. The arrays are
ordinary Zarr arrays beside the writer's stream groups, listed in the root's
consolidated metadata at each flush.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr

from daq_storage.errors import InvalidName, SchemaMismatch
from daq_storage.location import S3Location
from daq_storage.writers._base import Writer, json_value
from daq_storage.writers._zarr_limits import zarr_errors
from daq_storage.writers._zarr_streams import grid

__all__ = ["ZarrArrayBuilder", "check_attribute_key"]


def check_attribute_key(key: Any) -> str:
    """``key``, when it can name a Zarr attribute.

    Raises:
        InvalidName: it is not a non-empty string without NUL.
    """
    if not isinstance(key, str) or not key or "\x00" in key:
        raise InvalidName(f"zarr: metadata key {key!r} must be a non-empty string without NUL")
    return key


class ZarrArrayBuilder(Writer):
    """:meth:`create_array` and :meth:`write_chunk` on a writer's Zarr store (the
    subclass opens ``_root`` and chooses the default ``_compressors``)."""

    _root: zarr.Group
    _compressors: Any
    _target: Path | S3Location  # what errors name
    _builder_used: bool  # nodes made here: the root's metadata looks for them

    def create_array(
        self,
        name: str,
        shape: Sequence[int],
        chunks: Sequence[int],
        *,
        shards: Sequence[int] | None = None,
        dimension_names: Sequence[str] | None = None,
        dtype: npt.DTypeLike = np.uint16,
        compressors: Any = "default",
        fill_value: Any = 0,
        attributes: dict[str, Any] | None = None,
    ) -> zarr.Array[Any]:
        """Create an N-d array (e.g. wavelength, position, y, x) for :meth:`write_chunk`;
        ``compressors="default"`` takes the writer's codec.

        Raises:
            InvalidName: ``name`` (each ``/``-separated part is a name) or an attribute
                key cannot be used, or a stream's group has the name.
            SchemaMismatch: shape, chunks or shards do not fit together, or zarr refuses
                the dtype or fill value.
        """
        self._check_open()
        path = self._node_path(name)
        for key in attributes or {}:
            check_attribute_key(key)
        if attributes is not None:
            attributes = json.loads(json_value(attributes, what=f"attributes of array {name!r}"))
        sizes = grid(name, shape, chunks, shards)
        self._stored = self._builder_used = True
        with zarr_errors(self._target, f"cannot create array {name!r}"):
            try:
                return self._root.create_array(
                    path, shape=sizes[0], chunks=sizes[1], shards=sizes[2], dtype=dtype,
                    dimension_names=None if dimension_names is None else list(dimension_names),
                    compressors=self._compressors if compressors == "default" else compressors,
                    fill_value=fill_value, attributes=attributes or {},
                )  # fmt: skip
            except (ValueError, TypeError) as exc:  # zarr's checks of the arguments
                raise SchemaMismatch(f"zarr: cannot create array {name!r}: {exc}") from None

    def write_chunk(self, name: str, coords: Sequence[int], data: npt.ArrayLike) -> None:
        """Write ``data`` into array ``name`` starting at element ``coords`` (readers see
        it at once: the array's shape is fixed when it is created).

        Raises:
            SchemaMismatch: no such array, or ``data`` does not fit at ``coords``.
        """
        self._check_open()
        path = self._node_path(name)
        try:
            array = self._root[path]
            start = [operator.index(c) for c in coords]
            values = np.asarray(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaMismatch(f"zarr: cannot write to array {name!r}: {exc!r}") from None
        if not isinstance(array, zarr.Array):
            raise SchemaMismatch(f"zarr node {name!r} is a group, not an array")
        if len(start) != array.ndim or values.ndim != array.ndim:
            raise SchemaMismatch(
                f"array {name!r} has {array.ndim} dimensions; got coords {start} and "
                f"data of shape {values.shape}"
            )
        region = tuple(slice(c, c + s) for c, s in zip(start, values.shape, strict=True))
        if any(r.start < 0 or r.stop > n for r, n in zip(region, array.shape, strict=True)):
            raise SchemaMismatch(
                f"array {name!r} of shape {array.shape}: data {values.shape} at {start} "
                "does not fit"
            )
        self._ensure_room(values.nbytes, f"array {name!r}", self.path)
        with zarr_errors(self._target, f"cannot write to array {name!r}"):
            try:
                array[region] = values
            except (ValueError, TypeError) as exc:
                raise SchemaMismatch(f"zarr: array {name!r} refused the data: {exc}") from None
        self._stats.bytes_written += values.nbytes

    def _node_path(self, name: str) -> str:
        if not isinstance(name, str):
            raise InvalidName(f"zarr: array name must be a string, got {name!r}")
        return "/".join(self._safe_stream(part) for part in name.split("/"))
