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
    "StorageActor -> HDF5, IPC bytes in, mode=thread",
    "StorageActor -> HDF5, IPC bytes in, mode=process",
    "h5py defaults (auto chunks, no compression)",
    "h5py, same dtypes, chunks and filters (gzip 4, shuffle True",
    "our HDF5 writer alone, same batches",
    *(
        f"loop delay {stat}, mode={mode}"
        for mode in ("thread", "process")
        for stat in ("p50", "p99", "max")
    ),
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
    ticks = re.findall(r"([\d,]+) ticks", out)
    assert len(ticks) == 2, out  # one run per mode
    assert all(int(t.replace(",", "")) > 0 for t in ticks), out
    for mode in ("thread", "process"):
        assert re.search(rf"IPC bytes in, mode={mode} .* M rows/s .*\d\.\d\dx", out), out
