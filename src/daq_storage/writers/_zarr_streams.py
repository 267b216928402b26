"""A Zarr stream's arrays and what waits for them: rows short of whole chunks, frames
short of whole shards."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr

from daq_storage.schema import Column, FrameBlock
from daq_storage.writers._chunks import FrameIds

__all__ = ["FrameArrays", "TableArrays", "filled", "rows_of", "storage_kind"]


@dataclass
class FrameArrays:
    """A frame stream's arrays (handles kept: looking them up costs more than a shard)
    and the frames on their way to them."""

    folder: Path  # the frames array's chunk folder
    frames: zarr.Array[Any]
    timestamps: zarr.Array[Any]
    numbers: zarr.Array[Any]
    length: int = 0  # frames stored in the store, visible or not
    #: frames short of a whole shard (or chunk), copied: the caller may reuse its array
    partial: FrameBlock | None = None
    #: compressed shards waiting for their file write: (shard index, inner chunk bytes)
    encoded: list[tuple[int, list[bytes]]] = field(default_factory=list)
    #: ids of stored frames not yet in the id arrays
    ids: FrameIds = field(default_factory=lambda: FrameIds(0))


@dataclass
class TableArrays:
    """A table stream's arrays and the rows waiting to fill whole chunks."""

    group: zarr.Group
    arrays: dict[str, zarr.Array[Any]] = field(default_factory=dict)
    masks: dict[str, zarr.Array[Any]] = field(default_factory=dict)
    #: the column's storage dtype, inner shape and attributes, fixed by its first batch
    kinds: dict[str, tuple[np.dtype[Any], tuple[int, ...], dict[str, Any]]] = field(
        default_factory=dict
    )
    rows: int = 0  # rows in the arrays
    pending: list[tuple[int, dict[str, Column]]] = field(default_factory=list)
    pending_rows: int = 0

    def merged_pending(
        self,
    ) -> dict[str, tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]]:
        """Every column's pending rows as one array (missing columns filled) and its
        validity (``None`` when the column has no nulls, gaps or mask)."""
        merged: dict[str, tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]] = {}
        for name, (dtype, inner, _) in self.kinds.items():
            parts: list[npt.NDArray[Any]] = [filled(0, dtype, inner)]
            valid: list[npt.NDArray[np.bool_]] = [np.ones(0, bool)]
            gaps = False
            for rows, columns in self.pending:
                column = columns.get(name)
                if column is None:
                    parts.append(filled(rows, dtype, inner))
                    valid.append(np.zeros(rows, bool))
                    gaps = True
                else:
                    parts.append(column.values.astype(dtype, copy=False))
                    valid.append(np.ones(rows, bool) if column.valid is None else column.valid)
                    gaps = gaps or column.valid is not None
            merged[name] = (
                np.concatenate(parts) if len(parts) > 2 else parts[-1],
                np.concatenate(valid) if gaps or name in self.masks else None,
            )
        return merged


def storage_kind(column: Column) -> tuple[np.dtype[Any], tuple[int, ...]]:
    dtype = np.dtype(object) if column.kind == "string" else column.values.dtype
    return dtype, tuple(column.values.shape[1:])


def filled(rows: int, dtype: np.dtype[Any], inner: tuple[int, ...]) -> npt.NDArray[Any]:
    if dtype.kind == "O":
        return np.full((rows, *inner), "", dtype=object)
    return np.full((rows, *inner), np.nan if dtype.kind == "f" else 0, dtype=dtype)


def rows_of(
    kind: tuple[np.dtype[Any], tuple[int, ...], dict[str, str]],
    values: npt.NDArray[Any],
    valid: npt.NDArray[np.bool_] | None,
    start: int,
) -> Column:
    """Rows ``start:`` of a merged column, as a pending column."""
    dtype = kind[0]
    return Column("", values[start:], None if valid is None else valid[start:],
                  "string" if dtype.kind == "O" else "fixed", kind[2])  # fmt: skip
