"""The Flight benchmark runs at a tiny size and prints every row (figures unchecked)."""

from __future__ import annotations

import pytest
from benchmarks import bench_flight
from benchmarks._harness import console


def test_bench_flight_prints_every_row(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(console, "width", 1000)
    bench_flight.main(bench_flight.Sizes(frames=8, shape=(24, 32), latency_frames=20,
                                         subscribers=(0, 1), repeats=1))  # fmt: skip
    out = capsys.readouterr().out
    for row in ("Flight DoGet (loopback), 8 frames 32x24 uint16", "local RingReader",
                "memcpy of the same frames", "writer p99 write_frame, 0 remote",
                "writer p99 write_frame, 1 remote"):  # fmt: skip
        assert row in out, out
