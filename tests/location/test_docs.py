"""Every Python block of docs/object-storage.md runs as written, in order, in one fresh
interpreter, against an S3 server of its own (moto on loopback) reached through the
standard ``AWS_*`` variables, as a user's machine would reach its store."""

from __future__ import annotations

from pathlib import Path

import pytest

from daq_storage.testing import s3_server
from tests.doc_snippets import blocks, check_each_asserts, run_in_order

PAGE = "object-storage.md"


def test_every_block_checks_its_results() -> None:
    check_each_asserts(blocks(PAGE), 5, PAGE)


def test_blocks_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with s3_server() as server:
        server.create_bucket("lab-data")
        for name, value in server.environ().items():
            monkeypatch.setenv(name, value)
        run_in_order(blocks(PAGE), tmp_path, PAGE)
