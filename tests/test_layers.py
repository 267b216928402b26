"""The package's import direction (docs/architecture.md): each module imports only from
layers below its own, and never another package's private modules or names.

Also: the ring stands alone (errors and the shared file locks only), nothing but the CLI
imports the CLI, and inside the ring the reader and the writer never import each other.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "daq_storage"

#: Top-level modules and packages by layer; a module may import only lower layers.
LAYERS: list[set[str]] = [
    {"errors", "_version", "_file_locks"},
    {"config", "naming", "schema", "ring", "location"},
    {"sim"},
    {"writers", "acquisition"},
    {"recorder", "actor", "read", "documents", "streams", "flight"},
    {"repair", "testing", "daemon", "tools"},
    {"demo"},
    {"cli"},
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}
#: What the ring may import of the package besides itself: a ring-only process (a C
#: reader's Python peer, a camera driver) must not pay for pydantic, h5py or zarr.
RING_MAY_IMPORT = {"errors", "_file_locks"}


def _part(module: str) -> str:
    """The top-level module or package ``daq_storage.<part>...`` belongs to."""
    return module.split(".")[1] if module.count(".") else "__init__"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str | None = None) -> list[str]:
    """Every ``daq_storage`` module a file imports, and ``module.name`` for each name of a
    ``from module import name`` (a submodule or not: a private one is caught either way).
    Relative imports are resolved as if the file were module ``name``."""
    name = _module_name(path) if name is None else name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [m for m in found if m == "daq_storage" or m.startswith("daq_storage.")]


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found.append((parts[0] if len(parts) > 1 or parts[0] != "__init__" else "__init__", path))
    return found


def test_every_top_level_module_has_a_layer():
    parts = {part for part, _ in _modules()} - {"__init__"}
    assert parts <= set(LAYER), f"give these a layer: {sorted(parts - set(LAYER))}"


def _private(module: str) -> bool:
    """Whether ``module`` reaches below a package's public face (``daq_storage.x._y``)."""
    return any(p.startswith("_") and not p.startswith("__") for p in module.split(".")[2:])


def _violations(part: str, path: Path, name: str | None = None) -> list[str]:
    """What module ``path`` (of top-level ``part``) imports against the rules."""
    wrong = []
    for module in dict.fromkeys(_imports(path, name)):
        target = _part(module)
        if target == part:
            continue
        if target == "cli":
            wrong.append(f"{module}: the CLI")
            continue
        if part == "__init__":  # the facade re-exports anything but the CLI
            continue
        if target == "__init__" or LAYER[target] >= LAYER[part]:
            wrong.append(f"{module}: a layer not below that of {part}")
        if part == "ring" and target not in RING_MAY_IMPORT:
            wrong.append(f"{module}: the ring imports only {sorted(RING_MAY_IMPORT)}")
        if _private(module):
            wrong.append(f"{module}: another package's private module")
    return wrong


@pytest.mark.parametrize(("part", "path"), _modules(), ids=lambda v: str(v))
def test_imports_go_down_and_never_into_another_package_s_privates(part: str, path: Path):
    assert _violations(part, path) == [], path.name


def test_the_check_sees_a_wrong_import(tmp_path: Path):
    """Upward imports, the CLI, another package's private module or name (also through
    ``from package import _module`` and a relative import), and the ring reaching for
    config or the writers are all caught."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from daq_storage.cli import main\n"
        "from daq_storage.ring._platform import fence\n"
        "from daq_storage.ring import _format\n"
        "from ..ring import _args\n"
    )
    assert _violations("writers", bad, "daq_storage.writers.bad") == [
        "daq_storage.cli: the CLI",
        "daq_storage.cli.main: the CLI",
        "daq_storage.ring._platform: another package's private module",
        "daq_storage.ring._platform.fence: another package's private module",
        "daq_storage.ring._format: another package's private module",
        "daq_storage.ring._args: another package's private module",
    ]
    ring = tmp_path / "ring_module.py"
    ring.write_text("from daq_storage.config import StorageConfig\nimport daq_storage.writers\n")
    only = "the ring imports only ['_file_locks', 'errors']"
    assert _violations("ring", ring, "daq_storage.ring.ring_module") == [
        "daq_storage.config: a layer not below that of ring",
        f"daq_storage.config: {only}",
        "daq_storage.config.StorageConfig: a layer not below that of ring",
        f"daq_storage.config.StorageConfig: {only}",
        "daq_storage.writers: a layer not below that of ring",
        f"daq_storage.writers: {only}",
    ]


def test_nothing_but_the_cli_imports_the_cli():
    importers = [
        str(path.relative_to(PACKAGE))
        for part, path in _modules()
        if part != "cli" and any(_part(m) == "cli" for m in _imports(path))
    ]
    assert importers == []


def _ring_closure(start: str) -> set[str]:
    """The ring's modules that ``ring/<start>.py`` imports, directly or not."""
    ring = PACKAGE / "ring"
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        for module in _imports(ring / f"{name}.py"):
            parts = module.split(".")
            if parts[:2] == ["daq_storage", "ring"] and len(parts) > 2:
                target = parts[2]
                if (ring / f"{target}.py").exists() and target not in seen:
                    seen.add(target)
                    todo.append(target)
    return seen


def test_ring_reader_and_writer_never_import_each_other():
    """What both need (stats, layout, mapping) lives below both."""
    reader, writer = _ring_closure("_reader"), _ring_closure("_writer")
    assert not reader & {"_writer", "_create", "_block"}, sorted(reader)
    assert not writer & {"_reader", "_record"}, sorted(writer)
    assert "_stats" in reader & writer


# ---------------------------------------------------------------- what a process loads
HEAVY = ("h5py", "zarr", "tifffile", "pydantic", "numcodecs", "hdf5plugin")


def _loaded_by(script: str) -> set[str]:
    """The top-level modules a fresh interpreter has loaded after running ``script``."""
    code = f"{textwrap.dedent(script)}\nimport sys; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", f"import json\n{code}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return {name.partition(".")[0] for name in json.loads(result.stdout.splitlines()[-1])}


def test_a_ring_only_process_loads_no_format_library_and_no_config(tmp_path: Path):
    """Creating, writing and reading a ring loads neither the configuration schema
    (pydantic) nor a format library (h5py, zarr, tifffile and their codecs)."""
    loaded = _loaded_by(f"""
        import numpy as np, pyarrow as pa
        import daq_storage.ring
        from daq_storage.ring import RingBuffer, RingReader
        with RingBuffer.create({str(tmp_path / "ring")!r}, capacity_bytes=1 << 16) as ring:
            ring.write(b"raw", stream="raw")
            ring.write_frame(np.zeros((4, 4), np.uint16), stream="camera")
            ring.write_batch(pa.record_batch({{"x": [1.0]}}), stream="table")
            with RingReader.open(ring.path) as reader:
                records = reader.read_many()
                assert [r.kind for r in records] == ["raw", "frame", "arrow"]
                records[1].array(); records[2].batch()
            ring.stats()
        import daq_storage.config as probe  # the check below must see it when loaded
        del probe
    """)
    assert "pydantic" in loaded  # the probe works: importing config loads pydantic
    ring_only = _loaded_by(f"""
        import numpy as np, pyarrow as pa
        from daq_storage.ring import RingBuffer, RingReader
        with RingBuffer.create({str(tmp_path / "ring2")!r}, capacity_bytes=1 << 16) as ring:
            ring.write_frame(np.zeros((4, 4), np.uint16), stream="camera")
            ring.write_batch(pa.record_batch({{"x": [1.0]}}), stream="table")
            with RingReader.open(ring.path) as reader:
                [r.kind for r in reader.read_many()]
    """)
    assert ring_only & set(HEAVY) == set()


def test_the_package_facade_loads_its_parts_on_first_use():
    """``import daq_storage`` loads the errors only; ``from daq_storage import
    StorageConfig`` still works, and loads the configuration schema then."""
    assert _loaded_by("import daq_storage; daq_storage.ConfigError") & {*HEAVY, "pyarrow"} == set()
    loaded = _loaded_by("from daq_storage import StorageConfig, RingBuffer; StorageConfig()")
    assert "pydantic" in loaded
    assert loaded & {"h5py", "zarr", "tifffile"} == set()


def test_choosing_the_arrow_writer_loads_no_other_format_library():
    loaded = _loaded_by("""
        import daq_storage.writers
        from daq_storage.writers import get_writer_class
        get_writer_class("arrow")
    """)
    assert loaded & {"h5py", "zarr", "tifffile", "hdf5plugin", "numcodecs"} == set()
