"""The package's import direction (docs/architecture.md): each module imports only from
layers below its own, and never another package's private modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "daq_storage"

#: Top-level modules and packages by layer; a module may import only lower layers.
LAYERS: list[set[str]] = [
    {"errors", "_version", "_file_locks"},
    {"config", "naming", "schema", "ring"},
    {"sim"},
    {"writers"},
    {"repair", "demo"},
    {"cli"},
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str:
    """The top-level module or package ``daq_storage.<part>...`` belongs to."""
    return module.split(".")[1] if module.count(".") else "__init__"


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return [name for name in names if name.startswith("daq_storage.")]


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found.append((parts[0] if len(parts) > 1 or parts[0] != "__init__" else "__init__", path))
    return found


def test_every_top_level_module_has_a_layer():
    parts = {part for part, _ in _modules()} - {"__init__"}
    assert parts <= set(LAYER), f"give these a layer: {sorted(parts - set(LAYER))}"


def _violations(part: str, path: Path) -> list[str]:
    """What module ``path`` (of top-level ``part``) imports against the rules."""
    wrong = []
    for module in _imports(path):
        target = _part(module)
        if target == part:
            continue
        if part == "__init__":  # the facade re-exports anything but the CLI
            wrong += [f"{module}: the CLI"] if target == "cli" else []
            continue
        if LAYER[target] >= LAYER[part]:
            wrong.append(f"{module}: a layer not below that of {part}")
        if any(name.startswith("_") for name in module.split(".")[2:]):
            wrong.append(f"{module}: another package's private module")
    return wrong


@pytest.mark.parametrize(("part", "path"), _modules(), ids=lambda v: str(v))
def test_imports_go_down_and_never_into_another_package_s_privates(part: str, path: Path):
    assert _violations(part, path) == [], path.name


def test_the_check_sees_a_wrong_import(tmp_path: Path):
    """An upward import and another package's private module are both caught."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from daq_storage.cli import main\nfrom daq_storage.ring._platform import fence\n"
    )
    assert _violations("writers", bad) == [
        "daq_storage.cli: a layer not below that of writers",
        "daq_storage.ring._platform: another package's private module",
    ]
