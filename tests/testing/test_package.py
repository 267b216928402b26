"""daq_storage.testing itself: what it exports, that only it needs pytest and
hypothesis, and that its strategies reach every kind of input they promise."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

import daq_storage.testing
from daq_storage.errors import SchemaMismatch, UnknownStream
from daq_storage.schema import classify_change
from daq_storage.testing import MemoryWriter, StrictMemoryWriter, WriterConformance
from daq_storage.testing.strategies import (
    evolving_batches,
    frame_blocks,
    record_batches,
    split_rows,
)
from daq_storage.writers import check_all

PACKAGE = Path(daq_storage.testing.__file__).resolve().parents[1]


def test_only_the_testing_package_imports_pytest_or_hypothesis():
    importers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "testing":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] in ("pytest", "hypothesis") for name in names):
                importers.append(str(path.relative_to(PACKAGE)))
    assert importers == []


def test_using_the_package_loads_neither_pytest_nor_hypothesis():
    script = textwrap.dedent(
        """
        import sys
        import daq_storage, daq_storage.writers, daq_storage.schema, daq_storage.sim
        print(sorted({"pytest", "hypothesis"} & set(sys.modules)))
        import daq_storage.testing
        print(sorted({"pytest", "hypothesis"} & set(sys.modules)))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)  # fmt: skip
    assert result.stdout.split("\n")[:2] == ["[]", "['hypothesis', 'pytest']"]


def test_the_suite_is_not_collected_by_itself():
    """Only a subclass named Test... runs: the base class has no writer."""
    assert not WriterConformance.__name__.startswith("Test")
    assert "WriterConformance" in daq_storage.testing.__all__
    tests = [name for name in dir(WriterConformance) if name.startswith("test_")]
    assert len(tests) >= 50


def test_no_test_of_the_suite_returns_early_as_a_pass():
    """A test that does not apply is skipped, with its reason: no bare ``return`` at the
    top level of a test's body (hypothesis examples may end early)."""
    early = []
    for path in sorted((PACKAGE / "testing").glob("_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                if any(isinstance(d, ast.Call) and getattr(d.func, "id", "") == "given"
                       for d in node.decorator_list):  # fmt: skip
                    continue
                early += [f"{path.name}:{node.name}" for n in ast.walk(node)
                          if isinstance(n, ast.Return) and n.value is None]  # fmt: skip
    assert early == []


KINDS = {"same", "widening", "new_columns", "incompatible"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_evolving_batches_reach_every_kind_of_change(kind: str):
    def has(batches: list[pa.RecordBatch]) -> bool:
        return any(
            classify_change(a.schema, b.schema).kind == kind for a, b in itertools.pairwise(batches)
        )

    # The first example found proves the strategy reaches the kind: no shrinking.
    once = settings(database=None, max_examples=2000, phases=[Phase.generate])
    found = find(evolving_batches(), has, settings=once)
    assert has(found)


@settings(max_examples=30, deadline=None, database=None)
@given(record_batches(text_prefix="p"), st.integers(1, 6))
def test_record_batches_split_into_their_rows(batch: pa.RecordBatch, parts: int):
    pieces = split_rows(batch, parts)
    assert all(piece.num_rows for piece in pieces)
    assert pa.Table.from_batches(pieces).equals(pa.Table.from_batches([batch]))
    assert all(text.startswith("p") for text in batch.column("s").to_pylist())


@settings(max_examples=30, deadline=None, database=None)
@given(frame_blocks(ndim=1))
def test_frame_blocks_hold_ids_readers_decode(block):
    assert block.frames.ndim == 2
    assert len(block.timestamps_ns) == len(block.frame_numbers) == len(block)
    assert int(block.timestamps_ns.max()) < 2**63
    assert block.frame_numbers.dtype == np.uint64


def test_the_memory_writers_follow_their_policies(tmp_path: Path):
    first = pa.record_batch({"v": pa.array([1, 2], pa.int32())})
    text = pa.record_batch({"v": ["a"]})
    with MemoryWriter(tmp_path / "m") as loose, StrictMemoryWriter(tmp_path / "s") as strict:
        check_all([loose, strict], "s", first)
        for writer in (loose, strict):
            writer.write_batch("s", first)
        with pytest.raises(SchemaMismatch, match="strict-memory writer"):
            check_all([loose, strict], "s", text)
        loose.write_batch("s", text)  # a new part
        parts = loose.describe("s").parts
        assert [(part.key, part.first) for part in parts] == [("s", 0), ("s__part0002", 2)]
        assert [sum(b.num_rows for b in part) for part in loose.tables["s"]] == [2, 1]
        assert loose.visible("s") == loose.accepted("s") == 3
        assert strict.accepted("s") == 2
        with pytest.raises(UnknownStream):
            strict.describe("t")
