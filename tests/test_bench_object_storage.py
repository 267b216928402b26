"""The object-storage benchmark runs at a tiny size and prints every row (figures are
not checked: tests never assert timings)."""

from __future__ import annotations

import pytest
from benchmarks import bench_object_storage
from benchmarks._harness import console

ROWS = [
    "ours to S3 (ZarrWriter, s3://)",
    "vs the server's limit, 1 thread",
    "vs zarr-python ObjectStore",
    "vs acquire-zarr to the same server",
    "ours to a local directory",
]


@pytest.mark.slow
def test_bench_object_storage_prints_every_row(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 1000)  # no row name wrapped over two lines
    bench_object_storage.main(
        bench_object_storage.Sizes(frames=8, shape=(32, 48), shard_frames=4, repeats=1)
    )
    out = capsys.readouterr().out
    missing = [row for row in ROWS if row not in out]
    assert not missing, out
    assert "8 frames 48x32 uint16" in out, out
