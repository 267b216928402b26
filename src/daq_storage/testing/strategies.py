"""Hypothesis strategies for what writers take: record batches, sequences of batches
whose schema changes (every kind of :func:`daq_storage.schema.classify_change`), and
frame blocks with their ids.

>>> from hypothesis import given
>>> from daq_storage.testing.strategies import frame_blocks, record_batches
>>> @given(record_batches())
... def test_my_writer(batch): ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from daq_storage.schema import FrameBlock

__all__ = [
    "EVOLVING_TYPES",
    "FRAME_DTYPES",
    "evolving_batches",
    "frame_blocks",
    "record_batches",
    "split_rows",
    "texts",
]


def texts(prefix: str = "", *, max_size: int = 12) -> st.SearchStrategy[str]:
    """Any valid text without NUL, after ``prefix`` (CSV needs one so "1" or "nan" is not
    read back as a number)."""
    characters = st.characters(codec="utf-8", exclude_characters="\x00")
    return st.text(characters, max_size=max_size).map(lambda text: prefix + text)


@st.composite
def record_batches(
    draw: st.DrawFn, *, min_rows: int = 1, max_rows: int = 40, text_prefix: str = ""
) -> pa.RecordBatch:
    """A batch of columns ``i`` (int32, full range), ``f`` (float64, any finite value),
    ``s`` (text) and ``b`` (bool)."""
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(-(2**31), 2**31 - 1),
                st.floats(allow_nan=False, width=64),
                texts(text_prefix),
                st.booleans(),
            ),
            min_size=min_rows,
            max_size=max_rows,
        )
    )
    return pa.record_batch(
        {
            "i": pa.array([r[0] for r in rows], pa.int32()),
            "f": pa.array([r[1] for r in rows], pa.float64()),
            "s": pa.array([r[2] for r in rows], pa.utf8()),
            "b": pa.array([r[3] for r in rows], pa.bool_()),
        }
    )


def split_rows(batch: pa.RecordBatch | pa.Table, parts: int) -> list[pa.RecordBatch]:
    """``batch`` cut into ``parts`` consecutive non-empty batches (fewer when it has
    fewer rows)."""
    cuts = np.array_split(np.arange(batch.num_rows), max(1, min(parts, batch.num_rows)))
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    return [
        table.slice(int(cut[0]), len(cut)).combine_chunks().to_batches()[0]
        for cut in cuts
        if len(cut)
    ]


#: Column types of :func:`evolving_batches`: widenings among the numbers (int16 ->
#: int32 -> int64, int16 -> float32 -> float64), incompatible changes between numbers
#: and text, or int64 -> float64.
EVOLVING_TYPES: tuple[pa.DataType, ...] = (
    pa.int16(), pa.int32(), pa.int64(), pa.float32(), pa.float64(), pa.utf8(),
)  # fmt: skip


def _values(draw: st.DrawFn, kind: pa.DataType, rows: int, text_prefix: str) -> pa.Array:
    if pa.types.is_string(kind):
        # Text that no reader takes for a number or a date.
        words = st.text("xyz", min_size=1, max_size=4).map(lambda t: f"{text_prefix}{t}")
        return pa.array(draw(st.lists(words, min_size=rows, max_size=rows)), kind)
    if pa.types.is_integer(kind):
        numbers = st.integers(-(2**15), 2**15 - 1)  # fits every integer type of the pool
        return pa.array(draw(st.lists(numbers, min_size=rows, max_size=rows)), kind)
    halves = st.integers(-1000, 1000).map(lambda n: n / 2)  # exact in float32 too
    return pa.array(draw(st.lists(halves, min_size=rows, max_size=rows)), kind)


@st.composite
def evolving_batches(
    draw: st.DrawFn,
    *,
    names: Sequence[str] = ("a", "b", "c"),
    types: Sequence[pa.DataType] = EVOLVING_TYPES,
    min_batches: int = 2,
    max_batches: int = 5,
    max_rows: int = 5,
    text_prefix: str = "",
) -> list[pa.RecordBatch]:
    """Batches for one stream, each with a non-empty subset of ``names`` (in any order),
    each column of a type from ``types``: between them, every kind of schema change
    (widening, new and missing columns, incompatible) and none."""
    batches = []
    for _ in range(draw(st.integers(min_batches, max_batches))):
        columns = draw(st.lists(st.sampled_from(list(names)), min_size=1, unique=True))
        rows = draw(st.integers(1, max_rows))
        arrays = [_values(draw, draw(st.sampled_from(list(types))), rows, text_prefix)
                  for _ in columns]  # fmt: skip
        batches.append(pa.RecordBatch.from_arrays(arrays, names=columns))
    return batches


#: Frame dtypes of :func:`frame_blocks` (what cameras give, and floats).
FRAME_DTYPES: tuple[np.dtype[Any], ...] = tuple(
    np.dtype(name) for name in ("uint8", "uint16", "int16", "int32", "float32", "float64")
)


@st.composite
def frame_blocks(
    draw: st.DrawFn,
    *,
    dtypes: Sequence[np.dtype[Any]] = FRAME_DTYPES,
    min_frames: int = 1,
    max_frames: int = 6,
    max_side: int = 12,
    ndim: int = 2,
) -> FrameBlock:
    """A block of ``ndim``-dimensional frames of one dtype (any values; NaN and the
    infinities included for floats), with timestamps in the range readers decode as
    dates (0 to 2**63 - 1) and frame numbers from 0 to 2**64 - 1."""
    dtype = draw(st.sampled_from(list(dtypes)))
    n = draw(st.integers(min_frames, max_frames))
    shape = draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=max_side))
    frames = draw(hnp.arrays(dtype, (n, *shape)))
    stamps = draw(st.lists(st.integers(0, 2**63 - 1), min_size=n, max_size=n))
    numbers = draw(st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n))
    return FrameBlock(frames, np.array(stamps, np.uint64), np.array(numbers, np.uint64))
