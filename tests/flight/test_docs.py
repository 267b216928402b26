"""docs/flight.md: its Python block runs as written and checks what it shows."""

from __future__ import annotations

from pathlib import Path

from tests.doc_snippets import blocks, check_each_asserts, run_in_order

PAGE = "flight.md"


def test_every_block_checks_its_results() -> None:
    check_each_asserts(blocks(PAGE), 1, PAGE)


def test_blocks_run_as_written(tmp_path: Path) -> None:
    run_in_order(blocks(PAGE), tmp_path, PAGE)
