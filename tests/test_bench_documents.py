"""The document writer's benchmark runs at a tiny size and prints its ratio lines.

Figures are not checked (tests never assert timings): each row is printed with a rate
and a ratio against the format writer alone.
"""

from __future__ import annotations

import re

import pytest
from benchmarks import bench_documents
from benchmarks._harness import console


@pytest.mark.slow
def test_bench_documents_prints_the_ratio_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 1000)  # no row name wrapped over two lines
    bench_documents.main(bench_documents.Sizes(rows=3_000, page_rows=1_000, repeats=1))
    out = capsys.readouterr().out
    for fmt in bench_documents.FORMATS:
        assert re.search(
            rf"DocumentWriter -> {fmt}, event pages .* M rows/s .* the {fmt} writer alone, "
            r"same columns and batches .* \d+\.\d\dx",
            out,
        ), out
