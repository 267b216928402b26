"""The ``daq-storage`` command."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.table import Table

from daq_storage._version import __version__
from daq_storage.config import CODEC_KEYS, StorageConfig
from daq_storage.errors import DaqStorageError

if TYPE_CHECKING:
    from daq_storage.demo import DemoResult

P = ParamSpec("P")
R = TypeVar("R")

# Exit statuses: 0 done, 2 an error (bad input, config, I/O), 3 finished but data is
# missing or damaged (a run that lost records; files that need repair).
EXIT_ERROR = 2
EXIT_DATA_LOST = 3

# User text (paths, config sections like "[storage]") is printed literally: no rich
# markup. Pipes and CI logs get wide tables rather than names cut at 80 columns.
console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 160)

_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (default: $DAQ_STORAGE_CONFIG, else built-in defaults).",
)


def _error_line(text: str) -> None:
    """One line on stderr, never wrapped or interpreted (log readers grep for it)."""
    click.echo("error: " + " ".join(text.split("\n")), err=True)


def _reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn our own errors into one clear line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DaqStorageError as exc:
            _error_line(f"{type(exc).__name__}: {exc}")
            sys.exit(EXIT_ERROR)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="daq-storage")
def cli() -> None:
    """Store laboratory acquisition data: ring buffer, recorder, format writers."""


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


def _display(value: Any, key: str = "") -> str:
    if value is None:  # an unset codec key leaves each format its own choice
        return "(format default)" if key.removeprefix("storage.") in CODEC_KEYS else ""
    return str(value)


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
        table.add_row(v.key, _display(v.value, v.key), v.source, style=style)
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
    "--format",
    "backend",
    default=None,
    metavar="FORMAT",
    help="hdf5, arrow, parquet, csv, zarr or tiff (default: storage.default_backend).",
)
@click.option(
    "--frames",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Camera frames to record (100 frames/s).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Seconds of power-meter and DAQ data to record.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Simulator seed.")
@click.option(
    "--paced/--unpaced",
    default=True,
    show_default=True,
    help="Run the simulated instruments at their real rates, or as fast as they can.",
)
@_reports_errors
def demo(
    config_file: Path | None,
    output_dir: Path | None,
    backend: str | None,
    frames: int,
    seconds: float,
    seed: int,
    paced: bool,
) -> None:
    """Record a short run of simulated instruments and print a summary.

    Exits with status 3 when any frame or row was lost on the way.
    """
    from daq_storage.demo import run_demo

    config = StorageConfig.load(config_file)
    if output_dir is not None:
        config = config.model_copy(
            update={"storage": config.storage.model_copy(update={"output_dir": output_dir})}
        )
    result = run_demo(
        config, frames=frames, seconds=seconds, seed=seed, backend=backend, paced=paced
    )
    _print_demo(result)
    if not result.complete:
        for s in result.streams:
            if s.lost:
                _error_line(
                    f"data lost: {s.stream} stored {s.stored:,} of {s.produced:,} "
                    f"{'frames' if s.kind == 'frames' else 'rows'} ({s.lost:,} lost)"
                )
        if result.lost_records:
            _error_line(
                f"data lost: the ring overwrote {result.lost_records:,} records before they "
                'were read; use a bigger ring or overflow = "block"'
            )
        sys.exit(EXIT_DATA_LOST)


def _print_demo(result: DemoResult) -> None:
    from daq_storage.demo import how_to_open

    console.print(f"daq-storage demo: {result.backend} -> {result.path} in {result.seconds:.2f} s")
    table = Table()
    for column in ("stream", "kind", "produced", "stored", "lost", "raw MB", "note"):
        numeric = column in ("produced", "stored", "lost", "raw MB")
        table.add_column(column, justify="right" if numeric else "left")
    for s in result.streams:
        note = s.skipped or ("LOST DATA" if s.lost else "")
        if not s.skipped and not s.stored:
            note = "NOTHING STORED"
        if s.dropped:
            note += f" ({s.dropped:,} refused by the full ring)"
        table.add_row(s.stream, s.kind, f"{s.produced:,}", f"{s.stored:,}", f"{s.lost:,}",
                      f"{s.raw_bytes / 1e6:.1f}", note)  # fmt: skip
    console.print(table)
    raw = sum(s.raw_bytes for s in result.streams)
    console.print(
        f"{result.path}: {result.file_bytes / 1e6:.1f} MB on disk for {raw / 1e6:.1f} MB of data"
        + (f" ({result.file_bytes / raw:.0%})" if raw else "")
    )
    console.print(
        f"ring {result.ring_path} ({result.ring_capacity >> 20} MiB, {result.overflow}): "
        f"{result.ring_records:,} records through shared memory, {result.lost_records} lost, "
        f"{result.dropped_records} dropped"
    )
    console.print(
        f"flushed {result.flushes} times while recording (storage.flush_interval_ms), "
        "then at the end"
    )
    console.print("open with:")
    for s in result.streams:
        line = how_to_open(result.backend, result.path, s)
        if line and not s.skipped:
            console.print(f"  {s.stream}: {line}", soft_wrap=True)


@cli.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@_reports_errors
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
            _error_line(f"{check.status}: {check.path}: {check.detail}")
        sys.exit(EXIT_DATA_LOST)


def main() -> None:
    """Entry point of the ``daq-storage`` console script."""
    cli()


if __name__ == "__main__":
    main()
