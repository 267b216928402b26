"""``daq-storage demo``: the main job in miniature, with its summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from daq_storage.cli._common import (
    EXIT_DATA_LOST,
    config_option,
    console,
    error_line,
    reports_errors,
)
from daq_storage.config import StorageConfig

if TYPE_CHECKING:
    from daq_storage.demo import DemoResult

__all__ = ["demo"]


@click.command()
@config_option
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
@reports_errors
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
                error_line(
                    f"data lost: {s.stream} stored {s.stored:,} of {s.produced:,} "
                    f"{'frames' if s.kind == 'frames' else 'rows'} ({s.lost:,} lost)"
                )
        if result.lost_records:
            error_line(
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
