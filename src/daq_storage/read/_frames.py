"""A frame stream as a lazy array: numpy indexing reads only the frames it selects; an
xarray view stays lazy through xarray's ``BackendArray``."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from daq_storage.errors import ConfigError
from daq_storage.read._source import FrameSource, read_errors
from daq_storage.read._time import TimeLike, to_ns

if TYPE_CHECKING:
    import xarray

__all__ = ["ChainedFrames", "FrameArray", "segments"]


class ChainedFrames:
    """The frames of several sources (rotated versions, TIFF part files) one after
    another, as one source."""

    def __init__(self, sources: Sequence[FrameSource]) -> None:
        if not sources:
            raise ValueError("no frame source")
        self.sources = list(sources)
        first = self.sources[0]
        self.dtype = first.dtype
        self.frame_shape = tuple(first.shape[1:])
        self.starts = np.cumsum([0] + [s.shape[0] for s in self.sources])
        self.shape = (int(self.starts[-1]), *self.frame_shape)

    def read(self, index: slice | npt.NDArray[np.intp]) -> npt.NDArray[Any]:
        if len(self.sources) == 1:
            return self.sources[0].read(index)
        wanted = np.arange(self.shape[0])[index] if isinstance(index, slice) else index
        out = np.empty((len(wanted), *self.frame_shape), self.dtype)
        for k, first, last in segments(self.starts, wanted):
            local = wanted[first:last] - self.starts[k]
            out[first:last] = self.sources[k].read(_as_slice(local))
        return out

    def timestamps_ns(self) -> npt.NDArray[np.uint64]:
        return np.concatenate([s.timestamps_ns() for s in self.sources]).astype(np.uint64)

    def frame_numbers(self) -> npt.NDArray[np.uint64]:
        return np.concatenate([s.frame_numbers() for s in self.sources]).astype(np.uint64)


def segments(starts: npt.NDArray[Any], wanted: npt.NDArray[np.intp]) -> list[tuple[int, int, int]]:
    """Sorted indices ``wanted`` into pieces ``starts`` (each piece's first index) split:
    ``(piece, first, last)``, ``wanted[first:last]`` lying in ``piece``."""
    if not len(wanted):
        return []
    which = np.searchsorted(starts, wanted, side="right") - 1
    cuts = [0, *(np.flatnonzero(np.diff(which)) + 1).tolist(), len(wanted)]
    return [(int(which[a]), a, b) for a, b in itertools.pairwise(cuts)]


def _as_slice(indices: npt.NDArray[np.intp]) -> slice | npt.NDArray[np.intp]:
    """Sorted indices as a slice when they are evenly spaced (every reader is fastest
    on a slice), else as they are."""
    if len(indices) == 0:
        return slice(0, 0)
    if len(indices) == 1:
        return slice(int(indices[0]), int(indices[0]) + 1)
    steps = np.diff(indices)
    if bool((steps == steps[0]).all()) and steps[0] > 0:
        return slice(int(indices[0]), int(indices[-1]) + 1, int(steps[0]))
    return indices


class FrameArray:
    """A frame stream's frames, read from disk only when indexed.

    ``frames[i]``, ``frames[a:b:c]``, ``frames[[1, 5, 9]]``, ``frames[-1, 10:20, :]``
    follow numpy's rules and read only the frames selected; ``np.asarray(frames)`` reads
    them all. ``timestamps_ns`` and ``frame_numbers`` are the frames' ids;
    :meth:`to_xarray` is a lazy ``xarray.DataArray``; :meth:`sel_time` the frames of a
    time range.

    Attributes:
        frames_read: how many frames were read from disk so far (what indexing costs).
    """

    def __init__(self, source: FrameSource, stream: str,
                 subset: npt.NDArray[np.intp] | None = None,
                 check_open: Callable[[], None] | None = None) -> None:  # fmt: skip
        self._source = source
        self.stream = stream
        #: raises once the run that gave this array is closed (its files with it)
        self._check_open = check_open
        #: the source's frames this array shows (a time selection), or all of them
        self._subset = subset
        self.frames_read = 0
        self._stamps: npt.NDArray[np.uint64] | None = None
        self._numbers: npt.NDArray[np.uint64] | None = None

    # --- what it is ---
    @property
    def shape(self) -> tuple[int, ...]:
        count = self._source.shape[0] if self._subset is None else len(self._subset)
        return (count, *self._source.shape[1:])

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self._source.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"FrameArray(stream={self.stream!r}, shape={self.shape}, dtype={self.dtype})"

    @property
    def timestamps_ns(self) -> npt.NDArray[np.uint64]:
        """Each frame's time, integer nanoseconds since the Unix epoch."""
        if self._stamps is None:
            if self._check_open is not None:
                self._check_open()
            stamps = self._source.timestamps_ns()
            self._stamps = stamps if self._subset is None else stamps[self._subset]
        return self._stamps

    @property
    def frame_numbers(self) -> npt.NDArray[np.uint64]:
        """Each frame's number, as the instrument counted it."""
        if self._numbers is None:
            if self._check_open is not None:
                self._check_open()
            numbers = self._source.frame_numbers()
            self._numbers = numbers if self._subset is None else numbers[self._subset]
        return self._numbers

    # --- reading ---
    def __getitem__(self, key: Any) -> npt.NDArray[Any]:
        first, rest = _split_key(key, self.ndim)
        count = len(self)
        if isinstance(first, slice):
            start, stop, step = first.indices(count)
            if step > 0:
                picked = self._read_positions(slice(start, stop, step), count)
            else:  # read ascending, then reverse
                positions = np.arange(start, stop, step, dtype=np.intp)[::-1]
                picked = self._read_positions(_as_slice(positions), count)[::-1]
            return np.asarray(picked[(slice(None), *rest)] if rest else picked)
        if isinstance(first, (int, np.integer)):
            position = operator.index(first)
            if not -count <= position < count:
                raise IndexError(f"index {position} is out of bounds for stream "
                                 f"{self.stream!r} of {count} frames")  # fmt: skip
            picked = self._read_positions(slice(position % count, position % count + 1), count)
            return np.asarray(picked[(0, *rest)])
        indices = np.asarray(first)
        if indices.dtype == bool:
            if indices.shape != (count,):
                raise IndexError(f"a boolean index of shape {indices.shape} for {count} frames")
            indices = np.flatnonzero(indices)
        if indices.dtype.kind not in "iu":
            raise IndexError(f"frames are indexed by integers, slices or booleans, "
                             f"not {indices.dtype}")  # fmt: skip
        if indices.size and (indices.max() >= count or indices.min() < -count):
            raise IndexError(f"an index is out of bounds for stream {self.stream!r} "
                             f"of {count} frames")  # fmt: skip
        flat = np.where(indices < 0, indices + count, indices).reshape(-1).astype(np.intp)
        unique, inverse = np.unique(flat, return_inverse=True)
        picked = self._read_positions(_as_slice(unique), count)[inverse]
        picked = picked.reshape(*indices.shape, *picked.shape[1:])
        return np.asarray(picked[(Ellipsis, *rest)] if rest else picked)

    def _read_positions(self, positions: slice | npt.NDArray[np.intp], count: int) -> Any:
        if self._check_open is not None:
            self._check_open()
        if self._subset is not None:
            positions = _as_slice(self._subset[positions])
        if isinstance(positions, slice):
            if positions.stop <= positions.start:
                return np.empty((0, *self._source.shape[1:]), self.dtype)
            with read_errors(f"frames of stream {self.stream!r}"):
                got = self._source.read(positions)
        else:
            with read_errors(f"frames of stream {self.stream!r}"):
                got = self._source.read(positions) if len(positions) else \
                    np.empty((0, *self._source.shape[1:]), self.dtype)  # fmt: skip
        self.frames_read += len(got)
        return got

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> npt.NDArray[Any]:
        values = self[:]
        return values if dtype is None else values.astype(dtype, copy=False)

    def __iter__(self) -> Any:
        for i in range(len(self)):
            yield self[i]

    # --- time ---
    def sel_time(self, start: TimeLike | None = None, stop: TimeLike | None = None) -> FrameArray:
        """The frames whose ``timestamp_ns`` is in ``[start, stop)`` (ints in ns,
        ``numpy.datetime64``, ``datetime``; ``None``: unbounded), still lazy."""
        low, high = to_ns(start, "start"), to_ns(stop, "stop")
        stamps = self.timestamps_ns.astype(np.int64)
        keep = np.ones(len(stamps), bool)
        if low is not None:
            keep &= stamps >= low
        if high is not None:
            keep &= stamps < high
        positions = np.flatnonzero(keep)
        subset = positions if self._subset is None else self._subset[positions]
        return FrameArray(self._source, self.stream, subset, self._check_open)

    # --- xarray ---
    def to_xarray(self) -> xarray.DataArray:
        """A lazy ``xarray.DataArray``: dims ``frame``, ``y``, ``x`` (then ``channel``
        for frames with more axes), coordinates ``timestamp`` (``datetime64[ns]``) and
        ``frame_number``; reading a frame of it reads that frame only."""
        import xarray as xr
        from xarray.core import indexing

        names = ["frame", "y", "x", "channel"][: self.ndim]
        if self.ndim > 4:
            names += [f"dim_{i}" for i in range(4, self.ndim)]
        if self.ndim < 3:
            names = ["frame", "x"][: self.ndim]
        data = indexing.LazilyIndexedArray(_Backend(self))
        coords = {
            "timestamp": ("frame", self.timestamps_ns.astype(np.int64).view("datetime64[ns]")),
            "frame_number": ("frame", self.frame_numbers),
        }
        variable = xr.Variable(names, data)
        return xr.DataArray(variable, coords=coords, name=self.stream)


def _split_key(key: Any, ndim: int) -> tuple[Any, tuple[Any, ...]]:
    if not isinstance(key, tuple):
        return key, ()
    if not key:
        return slice(None), ()
    if key[0] is Ellipsis:
        fill = ndim - (len(key) - 1)
        key = (*(slice(None),) * fill, *key[1:])
    if any(k is None for k in key[:1]):
        raise IndexError("np.newaxis before the frame axis is not supported")
    return key[0], tuple(key[1:])


def _backend_class() -> type:
    from xarray.backends import BackendArray
    from xarray.core import indexing

    class Backend(BackendArray):
        def __init__(self, frames: FrameArray) -> None:
            self.frames = frames
            self.shape = frames.shape
            self.dtype = frames.dtype

        def __getitem__(self, key: Any) -> Any:
            return indexing.explicit_indexing_adapter(
                key, self.shape, indexing.IndexingSupport.OUTER, self._raw
            )

        def _raw(self, key: tuple[Any, ...]) -> Any:
            # outer indexing: each axis on its own (numpy would pair index arrays)
            values = self.frames[key[0]]
            axis = 0 if isinstance(key[0], int | np.integer) else 1
            for k in key[1:]:
                if isinstance(k, slice):
                    values = values[(slice(None),) * axis + (k,)]
                else:
                    values = np.take(values, k, axis=axis)
                if not isinstance(k, int | np.integer):
                    axis += 1
            return values

    return Backend


def _Backend(frames: FrameArray) -> Any:  # a class, made on first use
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = _backend_class()
    return _BACKEND(frames)


_BACKEND: Any = None


def check_stream_kind(kind: str, wanted: str, stream: str, run: str) -> None:
    """Raise ConfigError when a table is asked for frames or frames for a table."""
    if kind != wanted:
        what = "frames" if wanted == "frames" else "a table"
        use = "run.table()" if kind == "table" else "run.frames()"
        raise ConfigError(f"run {run}: stream {stream!r} holds {kind}, not {what}; use {use}")
