"""``daq-storage demo``: the real path in miniature, a live progress display, the summary."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.live import Live
from rich.table import Table
from rich.text import Text

from daq_storage.cli._common import (
    EXIT_DATA_LOST,
    config_option,
    console,
    error_line,
    reports_errors,
)
from daq_storage.config import StorageConfig

if TYPE_CHECKING:
    from daq_storage.demo import DemoProgress, DemoResult

__all__ = ["demo"]

#: Plain progress lines (stdout not a terminal): the first update, then one a second.
PLAIN_PROGRESS_EVERY_S = 1.0


def _split_formats(values: tuple[str, ...]) -> list[str] | None:
    """``--format a --format b,c`` -> ``["a", "b", "c"]``; ``None`` when not given."""
    names = [name.strip() for value in values for name in value.split(",")]
    if not values:
        return None
    if not all(names):
        raise click.BadParameter(
            f"empty format name in {','.join(values)!r}", param_hint="--format"
        )
    return names


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
    "formats",
    multiple=True,
    metavar="FORMAT[,FORMAT]",
    help="hdf5, arrow, parquet, csv, zarr or tiff; repeat it or give a comma list "
    "(default: storage.formats, else hdf5 and arrow).",
)
@click.option(
    "--frames",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Camera frames to record (100 frames/s, at most --seconds worth).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Seconds of data from each instrument.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Simulator seed.")
@click.option(
    "--paced/--unpaced",
    default=True,
    show_default=True,
    help="Run the simulated instruments at their real rates, or as fast as they can.",
)
@click.option("--no-progress", is_flag=True, help="No progress display, only the summary.")
@reports_errors
def demo(
    config_file: Path | None,
    output_dir: Path | None,
    formats: tuple[str, ...],
    frames: int,
    seconds: float,
    seed: int,
    paced: bool,
    no_progress: bool,
) -> None:
    """Record simulated instruments through the ring and the Recorder, and print a summary.

    The instruments and the Recorder run in processes of their own; this one shows their
    progress (frames/s, MB/s, ring fill, lag, lost) and then what each format stored.
    Exits with status 3 when any frame or row was lost on the way.
    """
    from daq_storage.demo import run_demo

    config = StorageConfig.load(config_file)
    if output_dir is not None:
        config = config.model_copy(
            update={"storage": config.storage.model_copy(update={"output_dir": output_dir})}
        )
    with _progress_display(frames, enabled=not no_progress) as on_progress:
        result = run_demo(
            config, frames=frames, seconds=seconds, seed=seed, formats=_split_formats(formats),
            paced=paced, on_progress=on_progress,
        )  # fmt: skip
    _print_demo(result)
    if not result.complete:
        _print_losses(result)
        sys.exit(EXIT_DATA_LOST)


# --------------------------------------------------------------------- progress
def _progress_line(p: DemoProgress, frames: int) -> str:
    camera = p.acquisition.streams.get("camera_1")
    produced = f"{camera.produced:,}/{frames:,} frames produced, " if camera else ""
    return (
        f"{p.elapsed_s:5.1f} s  {produced}{p.frames:,} recorded  {p.frames_per_s:,.0f} frames/s"
        f"  {p.mb_per_s:,.1f} MB/s  ring {p.ring_fill:.0%}  lag {p.lag_records:,} records"
        f" ({p.lag_seconds:.2f} s)  lost {p.lost:,}  dropped {p.dropped:,}"
    )


def _progress_table(p: DemoProgress, frames: int) -> Table:
    table = Table(title="recording", title_justify="left")
    for column in ("elapsed", "frames", "frames/s", "MB/s", "ring", "lag", "lost"):
        table.add_column(column, justify="right", no_wrap=True)
    camera = p.acquisition.streams.get("camera_1")
    produced = camera.produced if camera else 0
    table.add_row(
        f"{p.elapsed_s:.1f} s",
        f"{p.frames:,}/{produced:,}/{frames:,}",
        f"{p.frames_per_s:,.0f}",
        f"{p.mb_per_s:,.1f}",
        f"{p.ring_fill:.0%}",
        f"{p.lag_records:,} ({p.lag_seconds:.1f} s)",
        Text(f"{p.lost + p.dropped:,}", style="bold red" if p.lost or p.dropped else ""),
    )
    table.caption = "frames: recorded/produced/asked"
    return table


@contextmanager
def _progress_display(
    frames: int, *, enabled: bool
) -> Iterator[Callable[[DemoProgress], None] | None]:
    """The progress callback: a live table on a terminal, a line a second otherwise."""
    if not enabled:
        yield None
        return
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            yield lambda p: live.update(_progress_table(p, frames))
        return
    last = [-PLAIN_PROGRESS_EVERY_S]

    def plain(p: DemoProgress) -> None:
        now = time.monotonic()
        if p.done or now - last[0] >= PLAIN_PROGRESS_EVERY_S:
            last[0] = now
            click.echo(("done   " if p.done else "       ") + _progress_line(p, frames))

    yield plain


# --------------------------------------------------------------------- the summary
def _print_demo(result: DemoResult) -> None:
    from daq_storage.demo import how_to_open

    names = ", ".join(f.format for f in result.formats) or "no format"
    console.print(
        f"daq-storage demo: {names} -> {result.output_dir} in {result.seconds:.2f} s",
        soft_wrap=True,
    )
    table = Table()
    for column in ("stream", "format", "kind", "produced", "stored", "lost", "MB", "note"):
        numeric = column in ("produced", "stored", "lost", "MB")
        table.add_column(column, justify="right" if numeric else "left")
    for s in result.streams:
        unit_mb = s.raw_bytes / s.taken / 1e6 if s.taken else 0.0
        for fmt in s.formats or ("-",):
            stored = s.stored.get(fmt)
            lost = s.lost_in(fmt) if s.formats else s.produced
            note = _note(result, s.stream, fmt, stored, lost)
            if s.dropped:
                note += f" ({s.dropped:,} refused by the full ring)"
            if not s.formats and not s.produced:
                stored = 0  # nothing to store is not a loss
            table.add_row(
                s.stream, fmt, s.kind, f"{s.produced:,}",
                "?" if stored is None else f"{stored:,}", "?" if lost is None else f"{lost:,}",
                f"{(stored or 0) * unit_mb:.1f}", note.strip(),
            )  # fmt: skip
    console.print(table)
    for f in result.formats:
        state = "" if f.state == "closed" else f" [{f.state}{': ' + f.error if f.error else ''}]"
        where = f.path if f.path is not None else "(no file)"
        console.print(
            f"{f.format}: {where}: {f.bytes_on_disk / 1e6:.1f} MB on disk, {len(f.files)} "
            f"file(s), {f.flushes} flushes, {f.rotations} rotations{state}",
            soft_wrap=True,
        )
    console.print(
        f"ring {result.ring_path} ({result.ring_capacity >> 20} MiB, {result.overflow}): "
        f"{result.ring_records:,} records through shared memory, {result.lost_records} lost, "
        f"{result.dropped_records} dropped",
        soft_wrap=True,
    )
    console.print("open with:")
    for f in result.formats:
        if f.path is None:
            continue
        for s in result.streams:
            line = how_to_open(f.format, f.path, s) if f.format in s.formats else ""
            if line:
                console.print(f"  {f.format} {s.stream}: {line}", soft_wrap=True)


def _note(result: DemoResult, stream: str, fmt: str, stored: int | None, lost: int | None) -> str:
    if fmt == "-":
        return "NO FORMAT HOLDS IT" if lost else "none produced"
    if stored == 0:
        return "NOTHING STORED"
    if lost is None:
        return f"{fmt} is missing {result.format(fmt).missing:,} of its frames/rows"
    return "LOST DATA" if lost else ""


def _print_losses(result: DemoResult) -> None:
    for s in result.streams:
        if s.lost:
            where = ", ".join(
                f"{fmt} {'?' if n is None else f'{n:,}'}" for fmt, n in s.stored.items()
            )
            error_line(
                f"data lost: {s.stream} produced {s.produced:,} "
                f"{'frames' if s.kind == 'frames' else 'rows'}, stored "
                f"{where or 'nowhere'} ({s.lost:,} lost)"
            )
    for f in result.formats:
        if f.state == "failed":
            error_line(f"format {f.format} failed: {f.error}")
        elif f.missing:
            error_line(f"format {f.format} is missing {f.missing:,} frames/rows it was given")
    if result.lost_records:
        error_line(
            f"data lost: the ring overwrote {result.lost_records:,} records before the Recorder "
            'read them; use a bigger ring or overflow = "block"'
        )
    for error in result.errors:
        error_line(f"recorder: {error}")
