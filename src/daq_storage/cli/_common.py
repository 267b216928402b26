"""What every ``daq-storage`` command shares: the console, exit statuses, error lines."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click
from rich.console import Console

from daq_storage.errors import DaqStorageError

__all__ = [
    "EXIT_DATA_LOST",
    "EXIT_ERROR",
    "config_option",
    "console",
    "debugging",
    "error_line",
    "reports_errors",
]

P = ParamSpec("P")
R = TypeVar("R")

# Exit statuses: 0 done, 2 an error (bad input, config, I/O), 3 finished but data is
# missing or damaged (a run that lost records; files that need repair).
EXIT_ERROR = 2
EXIT_DATA_LOST = 3

# User text (paths, config sections like "[storage]") is printed literally: no rich
# markup. Pipes and CI logs get wide tables rather than names cut at 80 columns.
console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 160)

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (default: $DAQ_STORAGE_CONFIG, else built-in defaults).",
)


def error_line(text: str) -> None:
    """One line on stderr, never wrapped or interpreted (log readers grep for it)."""
    click.echo("error: " + " ".join(text.split("\n")), err=True)


def debugging() -> bool:
    """Whether ``daq-storage --debug`` asked for tracebacks."""
    context = click.get_current_context(silent=True)
    root = context.find_root() if context is not None else None
    return root is not None and isinstance(root.obj, dict) and bool(root.obj.get("debug"))


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn an error into one clear line on stderr and exit status 2: our own errors by
    their message, anything else (a bug) by its type and message. ``--debug`` lets the
    exception and its traceback through instead."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except DaqStorageError as exc:
            if debugging():
                raise
            error_line(f"{type(exc).__name__}: {exc}")
            sys.exit(EXIT_ERROR)
        except Exception as exc:
            if debugging():
                raise
            error_line(f"unexpected {type(exc).__name__}: {exc} (rerun with daq-storage "
                       "--debug for the traceback)")  # fmt: skip
            sys.exit(EXIT_ERROR)

    return wrapper
