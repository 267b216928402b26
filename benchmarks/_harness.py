"""Small timing harness shared by the benchmark modules.

Every figure is printed next to a reference measured in the same run (the physical
limit such as memcpy or a raw file write, or the raw library doing the same work),
so a reader sees ratios, not absolute numbers from another day. Where our writer is
tuned beyond the library's defaults, a second reference tuned the same way is printed
beside the one with defaults: a ratio over 1.0 against defaults alone is no result.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(highlight=False, width=None if sys.stdout.isatty() else 180)


def best_time(fn: Callable[[], object], *, repeat: int = 5, min_time: float = 0.0) -> float:
    """Best wall time in seconds of ``fn()`` over ``repeat`` runs (at least ``min_time`` total)."""
    best = float("inf")
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter()
        runs = 0
        while runs < repeat or time.perf_counter() - started < min_time:
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
            runs += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return best


@dataclass
class Row:
    name: str
    value: float
    unit: str
    reference: str = ""
    ratio: float | None = None
    note: str = ""
    tuned: str = ""  # a reference tuned as our writer is (where it differs from defaults)
    tuned_ratio: float | None = None


@dataclass
class Report:
    """Rows of one benchmark section, printed as a table."""

    title: str
    rows: list[Row] = field(default_factory=list)

    def add(
        self,
        name: str,
        value: float,
        unit: str,
        *,
        reference: str = "",
        ratio: float | None = None,
        note: str = "",
        tuned: str = "",
        tuned_ratio: float | None = None,
    ) -> Row:
        row = Row(name, value, unit, reference, ratio, note, tuned, tuned_ratio)
        self.rows.append(row)
        return row

    def print(self) -> None:
        table = Table(title=self.title, title_justify="left")
        with_tuned = any(row.tuned for row in self.rows)
        columns = ["measurement", "value", "unit", "vs", "ratio"]
        if with_tuned:
            columns += ["vs tuned alike", "ratio "]
        for column in [*columns, "note"]:
            table.add_column(column, justify="right" if column.startswith(("value", "ratio"))
                             else "left")  # fmt: skip
        for row in self.rows:
            cells = [
                row.name,
                f"{row.value:,.3g}" if row.value < 1000 else f"{row.value:,.0f}",
                row.unit,
                row.reference,
                _ratio(row.ratio),
            ]
            if with_tuned:
                cells += [row.tuned, _ratio(row.tuned_ratio)]
            table.add_row(*cells, row.note)
        console.print(table)


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def machine_line() -> str:
    """One line describing where and when the figures were measured (the load average
    says how busy the shared machine was: figures from a busy one are noisy)."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores, {os.uname().machine}, {os.uname().sysname} "
        f"{os.uname().release}; {time.strftime('%Y-%m-%d %H:%M')}, commit {_commit()}, "
        f"load average {load}"
    )


def load_line() -> str:
    """The load average now (1, 5, 15 minutes)."""
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        found = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                               capture_output=True, text=True, check=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return found.stdout.strip() or "unknown"


@contextlib.contextmanager
def scratch_directory() -> Iterator[Path]:
    """A fresh directory for a benchmark's files, on the disk ``DAQ_BENCH_DIR`` names
    (default: the system's temporary directory), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="daq_storage_bench_", dir=os.environ.get("DAQ_BENCH_DIR")))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
