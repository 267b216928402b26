"""A scan's grid (``start["shape"]``, as bluesky's ``grid_scan`` and nested scans set it):
where the event of each ``seq_num`` sits, and the names of the grid's dimensions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Grid"]


@dataclass(frozen=True)
class Grid:
    """The grid of a run's hinted stream (``primary`` unless the hints say otherwise).

    ``dims`` are the motors (outermost first), from ``hints["dimensions"]``, else
    ``motors``, else ``axis_0, ...``; ``snaking`` says which axes reverse on every other
    pass of the axes outside them (bluesky's ``snake_axes``).
    """

    shape: tuple[int, ...]
    dims: tuple[str, ...]
    snaking: tuple[bool, ...]
    stream: str

    @classmethod
    def from_start(cls, start: Mapping[str, Any]) -> Grid | None:
        """The grid ``start`` describes, or ``None`` when it has no usable ``shape``."""
        shape = start.get("shape")
        if not isinstance(shape, list | tuple) or not shape:
            return None
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
            return None
        dims: list[str] = []
        stream = "primary"
        hinted = (start.get("hints") or {}).get("dimensions")
        if isinstance(hinted, list) and len(hinted) == len(shape):
            for entry in hinted:
                if (isinstance(entry, list | tuple) and len(entry) == 2 and entry[0]
                        and isinstance(entry[0][0], str)):  # fmt: skip
                    dims.append(entry[0][0])
                    stream = str(entry[1])
        if len(dims) != len(shape):
            motors = start.get("motors")
            if isinstance(motors, list | tuple) and len(motors) == len(shape):
                dims = [str(m) for m in motors]
            else:
                dims = [f"axis_{i}" for i in range(len(shape))]
        snaking = start.get("snaking")
        snakes = (
            tuple(bool(s) for s in snaking)
            if isinstance(snaking, list | tuple) and len(snaking) == len(shape)
            else (False,) * len(shape)
        )
        return cls(tuple(shape), tuple(dims), snakes, stream)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def index(self, seq_num: int) -> tuple[int, ...] | None:
        """The grid position of event ``seq_num`` (from 1), or ``None`` past the grid."""
        flat = seq_num - 1
        if not 0 <= flat < self.size:
            return None
        raw = [int(i) for i in np.unravel_index(flat, self.shape)]
        position = list(raw)
        for axis in range(1, len(position)):
            if self.snaking[axis]:
                outer = int(np.ravel_multi_index(raw[:axis], self.shape[:axis]))
                if outer % 2:  # an odd pass of the outer axes runs this axis backwards
                    position[axis] = self.shape[axis] - 1 - position[axis]
        return tuple(position)
