"""The example plug-in (``daq_plugin_example``, source in this folder) installed as a
real distribution: a ``.dist-info`` with entry points in ``daq_storage.writers``, on
``sys.path`` for the test (and for the children it starts, see
:func:`daq_storage.testing.child_environment`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).with_name("daq_plugin_example.py")

ENTRY_POINTS = """
[daq_storage.writers]
jsonl = daq_plugin_example:JsonLinesWriter
csv = daq_plugin_example:JsonLinesWriter
dict = daq_plugin_example:NotAWriter
gone = daq_plugin_missing:Writer
"""


def install_plugin(
    site: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    entry_points: str = ENTRY_POINTS,
    modules: dict[str, str] | None = None,
) -> Path:
    """Install the distribution ``daq-plugin-example`` in ``site`` with
    ``entry_points``, and the modules ``modules`` (name -> source; by default the
    example plug-in, with ``NotAWriter = dict`` beside it). The caller removes the
    modules from ``sys.modules`` afterwards (see :func:`forget_plugin`)."""
    info = site / "daq_plugin_example-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: daq-plugin-example\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(entry_points)
    if modules is None:
        modules = {"daq_plugin_example": SOURCE.read_text() + "\n\nNotAWriter = dict\n"}
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(site))
    return site


def forget_plugin() -> None:
    """Unload the plug-in modules, so the next test imports its own copy."""
    for name in [n for n in sys.modules if n.startswith("daq_plugin_")]:
        del sys.modules[name]
