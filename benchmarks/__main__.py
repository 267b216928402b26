"""Run every ``benchmarks/bench_*.py`` (or those named on the command line)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks
from benchmarks._harness import console, load_line, machine_line


def main(argv: list[str]) -> int:
    names = sorted(
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    wanted = [a if a.startswith("bench_") else f"bench_{a}" for a in argv]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        console.print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}")
        return 2
    console.print(f"daq-storage benchmarks on {machine_line()}")
    for name in wanted or names:
        module = importlib.import_module(f"benchmarks.{name}")
        started = time.perf_counter()
        module.main()
        console.print(f"[dim]{name}: {time.perf_counter() - started:.1f} s; {load_line()}[/dim]\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
