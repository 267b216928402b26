"""The read benchmark runs at a tiny size and prints every row.

Figures are not checked (tests never assert timings): what is checked is that every
format was written by its writer, read back by open_run and by its library, found equal
(the benchmark asserts it), and reported.
"""

from __future__ import annotations

import pytest
from benchmarks import bench_read
from benchmarks._harness import console

ROWS = [
    *(f"{name}: open_run(...).table" for name in ("hdf5", "arrow", "parquet", "csv", "zarr")),
    "parquet: open_run(...).polars",
    *(f"{name}: asarray(open_run(...).frames)"
      for name in ("hdf5", "arrow", "parquet", "zarr", "tiff")),
    *(f"{name}: one frame by index, open_run(...).frames" for name in ("hdf5", "zarr", "tiff")),
]  # fmt: skip
REFERENCES = ["h5py, every dataset", "pyarrow.ipc (mapped)", "pyarrow.parquet", "pyarrow.csv",
              "zarr, every array", "polars.read_parquet", "tifffile"]  # fmt: skip


@pytest.mark.slow
def test_bench_read_prints_every_row(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 1000)  # no row name wrapped over two lines
    bench_read.main(bench_read.Sizes(rows=20_000, frames=12, repeats=1, min_seconds=0,
                                     batch_rows=5_000, frames_per_call=5,
                                     shape=(24, 32)))  # fmt: skip
    out = capsys.readouterr().out
    missing = [row for row in ROWS + REFERENCES if row not in out]
    assert not missing, out
    assert "read: 0.02 M power-meter rows" in out, out
    assert "read: 12 frames 32x24 uint16" in out, out
