"""docs/architecture.md's writer-contract table says what the writer classes declare."""

from __future__ import annotations

from pathlib import Path

import pytest

from daq_storage.writers import available_writers, get_writer_class

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _contract_rows() -> dict[str, dict[str, str]]:
    lines = DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| writer | tables |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


@pytest.mark.parametrize("name", available_writers()[:6])
def test_the_contract_table_matches_the_writer_class(name: str):
    row = _contract_rows()[name]
    cls = get_writer_class(name)
    assert row["tables"] == ("yes" if cls.supports_tables else "no")
    assert row["frames"] == ("yes" if cls.supports_frames else "no")
    for kind in ("on_widening", "on_new_columns", "on_incompatible"):
        assert row[kind] == (getattr(cls, kind) if cls.supports_tables else "-"), kind
    keys = ", ".join(f"`{key}`" for key in sorted(cls.config_keys)) or "none"
    assert row["`config_keys`"] == keys
    remote = row["`s3://`"]
    assert remote.startswith("yes") if cls.supports_object_storage else remote == "no"
    assert "TBD" not in row.values()


def test_the_table_names_every_built_in_writer():
    assert sorted(_contract_rows()) == sorted(available_writers()[:6])
