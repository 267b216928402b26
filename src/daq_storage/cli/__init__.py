"""The ``daq-storage`` command: one click group, its commands in the modules beside it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from daq_storage._version import __version__
from daq_storage.cli._common import (
    EXIT_DATA_LOST,
    EXIT_ERROR,
    config_option,
    console,
    error_line,
    reports_errors,
)
from daq_storage.cli._convert import convert
from daq_storage.cli._demo import demo
from daq_storage.cli._inspect import inspect
from daq_storage.cli._plot import plot
from daq_storage.cli._serve import serve
from daq_storage.cli._service import register_service_commands
from daq_storage.cli._tail import tail
from daq_storage.config import CODEC_KEYS, StorageConfig

__all__ = ["EXIT_DATA_LOST", "EXIT_ERROR", "cli", "console", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="daq-storage")
@click.option("--debug", is_flag=True,
              help="Show the traceback of an error instead of one line.")  # fmt: skip
@click.pass_context
def cli(context: click.Context, debug: bool) -> None:
    """Store laboratory acquisition data: ring buffer, recorder, format writers."""
    context.obj = {"debug": debug}


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


def _display(value: Any, key: str = "") -> str:
    if value is None:  # an unset codec key leaves each format its own choice
        return "(format default)" if key.removeprefix("storage.") in CODEC_KEYS else ""
    return str(value)


@config_group.command("show")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@reports_errors
def config_show(config_file: Path | None, as_json: bool) -> None:
    """Print the effective configuration and where each value came from."""
    config = StorageConfig.load(config_file)
    values = list(config.sources())
    if as_json:
        payload = {
            v.key: {
                "value": _display(v.value) if isinstance(v.value, Path) else v.value,
                "source": v.source,
            }
            for v in values
        }
        click.echo(json.dumps(payload, indent=2))
        return
    table = Table(title="daq-storage configuration", title_justify="left")
    table.add_column("key")
    table.add_column("value")
    table.add_column("source")
    for v in values:
        style = "" if v.source == "default" else "bold"
        table.add_row(v.key, _display(v.value, v.key), v.source, style=style)
    console.print(table)


@cli.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@reports_errors
def repair(path: Path) -> None:
    """Check every file under PATH (a file, a run directory or a folder of runs) with
    its format's reader, and restore files whose writer was killed (Parquet: cut back
    to the last complete row group).

    Exits with status 3 when a file is damaged or a live writer still holds it.
    """
    from daq_storage.repair import check_files

    checks = check_files(path)
    for check in checks:
        console.print(f"{check.status:8s} {check.path}: {check.detail}", soft_wrap=True)
    checked = [c for c in checks if c.status != "skipped"]
    problems = [c for c in checks if c.problem]
    console.print(
        f"{path}: {len(checked)} checked, {sum(c.status == 'repaired' for c in checks)} "
        f"repaired, {len(problems)} with problems, {len(checks) - len(checked)} skipped"
    )
    if problems:
        for check in problems:
            error_line(f"{check.status}: {check.path}: {check.detail}")
        sys.exit(EXIT_DATA_LOST)


cli.add_command(demo)
for _command in (inspect, convert, tail, plot, serve):
    cli.add_command(_command)
register_service_commands(cli)


def main() -> None:
    """Entry point of the ``daq-storage`` console script."""
    cli()
