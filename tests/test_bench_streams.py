"""The stream writer's benchmark runs at a tiny size and prints every row.

Figures are not checked (tests never assert timings): every run ran and printed its
best and median rows with a ratio."""

from __future__ import annotations

import re

import pytest
from benchmarks import bench_streams
from benchmarks._harness import console

RUNS = [
    "StreamWriter -> HDF5 lz4, write(block)",
    "h5py, same layout and filters, per block",
    "h5py, same layout and filters, whole chunks (tuned alike)",
    "our HDF5 writer alone, the same samples in whole-chunk batches",
    "memcpy of the samples (numpy copy)",
]


@pytest.mark.slow
def test_bench_streams_prints_every_row(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 1000)  # no row name wrapped over two lines
    bench_streams.main(bench_streams.Sizes(samples=70_000, block=10_000, repeats=2))
    out = capsys.readouterr().out
    for run in RUNS:
        for stat in ("best", "median"):
            assert f"{run} ({stat})" in out, out
    assert len(re.findall(r"M samples/s +│ StreamWriter +│ \d+\.\d\dx", out)) == 8, out
