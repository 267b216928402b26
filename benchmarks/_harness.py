"""Small timing harness shared by the benchmark modules.

Every figure is printed next to a reference measured in the same run (the physical
limit such as memcpy or a raw file write, or the raw library doing the same work),
so a reader sees ratios, not absolute numbers from another day.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


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
    ) -> Row:
        row = Row(name, value, unit, reference, ratio, note)
        self.rows.append(row)
        return row

    def print(self) -> None:
        table = Table(title=self.title, title_justify="left")
        for column in ("measurement", "value", "unit", "vs", "ratio", "note"):
            table.add_column(column, justify="right" if column in ("value", "ratio") else "left")
        for row in self.rows:
            table.add_row(
                row.name,
                f"{row.value:,.3g}" if row.value < 1000 else f"{row.value:,.0f}",
                row.unit,
                row.reference,
                "" if row.ratio is None else f"{row.ratio:.2f}x",
                row.note,
            )
        console.print(table)


def machine_line() -> str:
    """One line describing where the figures were measured."""
    return (
        f"{os.cpu_count()} cores, {os.uname().machine}, {os.uname().sysname} {os.uname().release}"
    )
