"""The Recorder benchmark runs end to end at a tiny size and prints every row.

Figures are not checked (tests never assert timings); what is checked is that each
section ran through real processes, a real ring and real files: every row is printed,
no block-mode run lost a frame, and the loss ledger agrees with the producer's log.
"""

from __future__ import annotations

import sys

import pytest
from benchmarks import bench_recorder
from benchmarks._harness import console

ROWS = [
    "HDF5 blosc-lz4 writer alone",
    "Arrow IPC writer alone",
    "Recorder -> HDF5 blosc-lz4, block mode",
    "Recorder -> HDF5 + Arrow IPC, block mode",
    "write_frame p50, Recorder draining",
    "write_frame p99, Recorder draining",
    "write_frame max, Recorder draining",
    "frames lost, Recorder draining",
    *(
        [f"write_frame {stat}, Recorder at nice 10" for stat in ("p50", "p99", "max")]
        + ["frames lost, Recorder at nice 10"]
        if sys.platform == "linux"
        else []
    ),
    "lost (Recorder stats)",
    "loss ledger in the files",
    "gaps the producer's seq log implies",
]


@pytest.mark.slow
def test_bench_recorder_prints_every_row(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 1000)  # no row name wrapped over two lines
    # A 4 MiB ring holds 6 frames: 120 unpaced frames lap a Recorder that writes to disk.
    sizes = bench_recorder.Sizes(frames=32, ring_mb=16, latency_frames=32, latency_fps=1000,
                                 latency_rounds=1, loss_frames=120, loss_ring_mb=4,
                                 repeats=1)  # fmt: skip
    bench_recorder.main(sizes)
    out = capsys.readouterr().out
    missing = [row for row in ROWS if row not in out]
    assert not missing, out
    assert "INCOMPLETE" not in out, out  # block mode: every frame reached every format
    assert "ranges identical in stats, ledger and log: yes" in out, out
    assert "written == stored + lost: yes" in out, out
    assert "torn frames 0" in out, out
    assert "files on " in out, out
