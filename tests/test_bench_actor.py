"""The storage actor's benchmark runs at a tiny size and prints every row.

Figures are not checked (tests never assert timings): every row is printed, each
reference ran, and the loop-delay section has ticks from the actor's run.
"""

from __future__ import annotations

import re

import pytest
from benchmarks import bench_actor
from benchmarks._harness import console

ROWS = [
    "StorageActor -> HDF5, IPC bytes in",
    "h5py defaults (auto chunks, no compression)",
    "h5py, same chunks and filters (gzip 4, shuffle True)",
    "our HDF5 writer alone, same batches",
    "loop delay p50, actor writing",
    "loop delay p99, actor writing",
    "loop delay max, actor writing",
    "idle loop p99",
]


@pytest.mark.slow
def test_bench_actor_prints_every_row(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 1000)  # no row name wrapped over two lines
    bench_actor.main(bench_actor.Sizes(rows=30_000, batch_rows=10_000, repeats=1))
    out = capsys.readouterr().out
    missing = [row for row in ROWS if row not in out]
    assert not missing, out
    ticks = re.search(r"([\d,]+) ticks", out)
    assert ticks is not None, out
    assert int(ticks.group(1).replace(",", "")) > 0, out
    assert re.search(r"StorageActor -> HDF5, IPC bytes in .* M rows/s .*\d\.\d\dx", out), out
