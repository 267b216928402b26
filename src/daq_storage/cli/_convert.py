"""``daq-storage convert``: a run copied into another format."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from daq_storage.cli._common import console, reports_errors
from daq_storage.errors import ConfigError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from daq_storage.tools import ConvertResult

__all__ = ["convert"]

_EXAMPLES = """\b
Examples:
  daq-storage convert run.h5 run.zarr                   # format from the suffix
  daq-storage convert run.h5 run_parquet --format parquet
  daq-storage convert run.h5 power_csv --format csv --streams power_meter_01
  daq-storage convert data/ camera.zarr --from hdf5 --streams camera_1
  daq-storage convert run_arrow run.h5 --option compression=lz4
  daq-storage convert run.h5 s3://lab-data/converted/run.zarr   # AWS_* say where
"""


@click.command("convert", epilog=_EXAMPLES)
@click.argument("source")
@click.argument("target")
@click.option(
    "--format",
    "-f",
    "target_format",
    default=None,
    help="Format to write: hdf5, arrow, parquet, csv, zarr or tiff (default: from "
    "TARGET's suffix, .h5 or .zarr).",
)
@click.option(
    "--streams",
    "-s",
    "streams",
    multiple=True,
    help="Streams to convert (repeat, or separate by commas; default: all).",
)
@click.option(
    "--from",
    "source_format",
    default=None,
    help="Format to read where SOURCE holds the run in several.",
)
@click.option(
    "--run",
    "run_name",
    default=None,
    help="Run to read where SOURCE holds several (its name without _v{N}).",
)
@click.option(
    "--option",
    "-o",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the target's writer (repeatable; VALUE as JSON or text), "
    "e.g. compression=zstd.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@click.option(
    "--progress-after",
    type=float,
    default=1.0,
    hidden=True,
    help="Seconds before the progress bar shows.",
)
@reports_errors
def convert(
    source: str,
    target: str,
    target_format: str | None,
    streams: tuple[str, ...],
    source_format: str | None,
    run_name: str | None,
    options: tuple[str, ...],
    quiet: bool,
    progress_after: float,
) -> None:
    """Copy the run at SOURCE into a new output TARGET in another format.

    Tables convert between HDF5, Arrow IPC, Parquet, CSV and Zarr; frames between HDF5,
    Zarr, TIFF and Arrow / Parquet tensor columns. A stream the target cannot hold
    (frames to CSV, a table to TIFF) is refused before anything is written. The run's
    metadata, each stream's and column's metadata, timestamps, frame numbers and the
    loss ledger are carried over; rows and frames are copied in chunks of a few MB, so
    a run larger than memory converts. TARGET must not exist: nothing is ever
    overwritten, and a conversion that fails leaves no TARGET behind.

    SOURCE and TARGET may be s3://bucket/prefix URLs (a Zarr store, a Parquet or Arrow
    IPC output), reached with the AWS_* variables and ~/.aws profiles. A TARGET prefix
    holding any object is refused; the conversion writes into it directly, its state in
    _daq_storage_conversion.json ("converting", then "complete"); a failure removes what
    it wrote, and inspect reports a conversion killed outright.

    This replaces the post-hoc CSV export script of the design notes:
    `daq-storage convert run.h5 run_csv --format csv --streams power_meter_01`.
    """
    from daq_storage.tools import convert_run

    chosen = [s.strip() for given in streams for s in given.split(",") if s.strip()]
    bar = _Bar(progress_after, enabled=not quiet)
    try:
        result = convert_run(
            source,
            target,
            format=target_format,
            streams=chosen or None,
            source_format=source_format,
            run=run_name,
            options=_options(options),
            progress=bar.update,
        )
    finally:
        bar.stop()
    if not quiet:
        _summary(result)


def _options(given: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in given:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option takes KEY=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out[key.strip()] = value
    return out


class _Bar:
    """A rich progress bar on stderr, shown once a conversion has taken
    ``after`` seconds, and only on a terminal."""

    def __init__(self, after: float, *, enabled: bool) -> None:
        self.began = time.monotonic()
        self.after = after
        self.console = Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def update(self, done: int, total: int, stream: str) -> None:
        if not self.enabled:
            return
        if self.progress is None:
            if time.monotonic() - self.began < self.after:
                return
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("converting", total=total)
        assert self.task is not None
        self.progress.update(self.task, completed=done, description=f"converting {stream}")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _summary(result: ConvertResult) -> None:
    table = Table(title_justify="left")
    table.add_column("stream")
    table.add_column("kind")
    table.add_column("rows / frames", justify="right")
    for copy in result.streams:
        table.add_row(copy.stream, copy.kind, f"{copy.rows:,}")
    console.print(table)
    lost = (
        (
            f"; the source lost {result.lost_records:,} records while recording (loss "
            "ledger carried over)"
        )
        if result.lost_records
        else ""
    )
    console.print(
        f"converted {result.source} ({result.source_format}) -> {result.target} "
        f"({result.format}): {len(result.streams)} stream{'s' * (len(result.streams) != 1)}, "
        f"{result.rows:,} rows, "
        f"{result.frames:,} frames in {result.seconds:.1f} s{lost}",
        soft_wrap=True,
    )
