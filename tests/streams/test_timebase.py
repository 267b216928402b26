"""sample_index and timestamps stay exactly consistent with the sample count over any
blocks and flushes: every time computed from its index in integers."""

from __future__ import annotations

import json
import tempfile
from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from daq_storage.streams import ChannelConfig, StreamWriter, Timebase

RATES = st.sampled_from([100_000.0, 44_100.0, 3.0, 1 / 3, 0.7, 1e9, 1e-6, 12_345.678, 2.5e6])
#: Rates whose times stay in int64 for the file test's samples (1e-6 would not).
FILE_RATES = st.sampled_from([100_000.0, 44_100.0, 1 / 3, 0.7, 12_345.678, 1e9])
START = st.integers(0, 1_800_000_000 * 10**9)


def _exact(rate: float, start: int, index: int) -> int:
    """start + round(index * 1e9 / rate), halves up, in exact rational arithmetic."""
    t = Fraction(index) * 10**9 / Fraction(rate)
    return start + int(t + Fraction(1, 2)) if t >= 0 else 0


@settings(max_examples=200)
@given(rate=RATES, start=START, first=st.integers(0, 10**12), n=st.integers(0, 300))
def test_times_equal_the_exact_formula(rate: float, start: int, first: int, n: int):
    timebase = Timebase(rate, start)
    assume(_exact(rate, start, first + n) < 1 << 63)  # later times are refused
    times = timebase.times(first, n)
    assert times.dtype == np.int64
    assert times.tolist() == [_exact(rate, start, first + k) for k in range(n)]


@settings(max_examples=100)
@given(rate=RATES, cuts=st.lists(st.integers(0, 2000), min_size=1, max_size=8))
def test_times_do_not_depend_on_where_blocks_are_cut(rate: float, cuts: list[int]):
    timebase = Timebase(rate, 10**18)
    total = sum(cuts)
    assume(_exact(rate, 10**18, total) < 1 << 63)  # later times are refused
    whole = timebase.times(0, total)
    pieces, first = [], 0
    for n in cuts:
        pieces.append(timebase.times(first, n))
        first += n
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rate=FILE_RATES,
    steps=st.lists(st.tuples(st.integers(0, 3000), st.booleans(), st.integers(0, 2)),
                   min_size=1, max_size=8),
    chunk=st.sampled_from([7, 1000, 4096]),
)  # fmt: skip
def test_files_hold_one_consistent_timebase_over_writes_and_flushes(
    rate: float, steps: list[tuple[int, bool, int]], chunk: int
):
    """Blocks of any size (empty ones too), flushes anywhere, a jump now and then: the
    file's sample_index is every written index in order, each time that index's, each
    channel what was written; the gaps are the jumps."""
    channel = ChannelConfig(0, "AI0", -1.0, 1.0)
    start = 1_700_000_000 * 10**9
    expected: list[int] = []
    gaps: list[dict[str, int]] = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.h5"
        with StreamWriter(path, channels=[channel], sample_rate=rate, chunk_size=chunk,
                          compression="lz4", start_ns=start) as writer:  # fmt: skip
            for n, flush, jump in steps:
                first = expected[-1] + 1 + jump * 17 if expected else 0
                if expected and jump and n:
                    gaps.append({"first": expected[-1] + 1, "count": jump * 17})
                block = (np.arange(first, first + n) % 30011 - 15000).astype(np.int16)[:, None]
                writer.write(block, first_sample=first if n else None)
                expected += range(first, first + n)
                if flush:
                    writer.flush()
                    assert writer.stats.samples_flushed == len(expected)
        with h5py.File(path, "r") as f:
            if not expected:
                assert "data" not in f
                return
            index = f["data/sample_index"][()]
            times = f["data/timestamps"][()]
            values = f["data/AI0"][()]
            stored_gaps = json.loads(f["data"].attrs.get("gaps", "[]"))
    assert index.tolist() == expected
    timebase = Timebase(rate, start)
    assert times.tolist() == [timebase.at(i) for i in expected]
    np.testing.assert_array_equal(values, index.astype(np.int64) % 30011 - 15000)
    assert stored_gaps == gaps
