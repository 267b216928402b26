"""The ``daq-storage`` command."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.table import Table

from daq_storage._version import __version__
from daq_storage.config import StorageConfig
from daq_storage.errors import DaqStorageError

P = ParamSpec("P")
R = TypeVar("R")

# Pipes and CI logs get wide tables rather than names cut at 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (default: $DAQ_STORAGE_CONFIG, else built-in defaults).",
)


def _reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn our own errors into one clear line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DaqStorageError as exc:
            err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="daq-storage")
def cli() -> None:
    """Store laboratory acquisition data: ring buffer, recorder, format writers."""


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


def _display(value: Any) -> str:
    return "" if value is None else str(value)


@config_group.command("show")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_reports_errors
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
        table.add_row(v.key, _display(v.value), v.source, style=style)
    console.print(table)


@cli.command()
@_config_option
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for the files (default: storage.output_dir, ./data).",
)
@click.option(
    "--frames",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Camera frames to record.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Seconds of power-meter and DAQ data to record.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Simulator seed.")
@_reports_errors
def demo(
    config_file: Path | None, output_dir: Path | None, frames: int, seconds: float, seed: int
) -> None:
    """Record a short run of simulated instruments and print a summary."""
    from daq_storage.demo import run_demo

    config = StorageConfig.load(config_file)
    if output_dir is not None:
        config = config.model_copy(
            update={"storage": config.storage.model_copy(update={"output_dir": output_dir})}
        )
    result = run_demo(config, frames=frames, seconds=seconds, seed=seed)
    console.print(f"daq-storage demo: {result.backend} -> {result.path} in {result.seconds:.2f} s")
    table = Table()
    for column in ("stream", "kind", "records", "raw MB", "note"):
        table.add_column(column, justify="right" if column in ("records", "raw MB") else "left")
    for s in result.streams:
        table.add_row(s.stream, s.kind, f"{s.records:,}", f"{s.raw_bytes / 1e6:.1f}", s.skipped)
    console.print(table)
    raw = sum(s.raw_bytes for s in result.streams)
    console.print(
        f"{result.path}: {result.file_bytes / 1e6:.1f} MB on disk for {raw / 1e6:.1f} MB of data"
        + (f" ({result.file_bytes / raw:.0%})" if raw else "")
    )
    console.print(
        f"ring {result.ring_path}: {result.ring_records:,} records through shared memory, "
        f"{result.lost} lost, {result.dropped} dropped"
    )


@cli.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@_reports_errors
def repair(path: Path) -> None:
    """Restore files whose writer was killed (Parquet: cut back to the last complete row
    group). PATH is a file or a directory of them."""
    from daq_storage.writers import repair_parquet

    repaired = repair_parquet(path)
    for target in repaired:
        console.print(f"repaired {target}")
    if not repaired:
        console.print(f"{path}: nothing to repair")


def main() -> None:
    """Entry point of the ``daq-storage`` console script."""
    cli()


if __name__ == "__main__":
    main()
