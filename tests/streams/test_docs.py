"""Every Python snippet of docs/streams.md runs as written and checks its results."""

from __future__ import annotations

from pathlib import Path

from tests.doc_snippets import blocks, check_each_asserts, run_in_order

PAGE = "streams.md"


def test_every_snippet_checks_its_results() -> None:
    check_each_asserts(blocks(PAGE), 3, PAGE)


def test_the_snippets_run_as_written(tmp_path: Path) -> None:
    run_in_order(blocks(PAGE), tmp_path, PAGE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.h5", "scan", "scan.h5"]
