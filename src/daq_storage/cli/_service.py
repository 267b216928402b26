"""The service commands: ``daemon``, ``simulate`` and ``status``."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from daq_storage.cli._common import (
    EXIT_DATA_LOST,
    EXIT_ERROR,
    config_option,
    console,
    error_line,
    reports_errors,
)
from daq_storage.config import StorageConfig, daemon_ring_path
from daq_storage.errors import DaqStorageError, RingNotFound

if TYPE_CHECKING:
    from daq_storage.acquisition import AcquisitionResult
    from daq_storage.recorder import RecorderStats
    from daq_storage.ring import RingStats

__all__ = [
    "no_ring",
    "recorder_renderables",
    "register_service_commands",
    "ring_info",
    "ring_path",
    "status_renderables",
]

#: ``status`` measures the producer's rate over this long (a measurement, not a wait
#: for anything).
RATE_SAMPLE_S = 0.5


def register_service_commands(group: click.Group) -> None:
    """Add the service commands to ``group``."""
    group.add_command(daemon)
    group.add_command(simulate)
    group.add_command(status)


def ring_path(ring: Path | None, config_file: Path | None) -> Path:
    """``--ring``, else the daemon's ring of ``--config`` (or of the environment)."""
    if ring is not None and config_file is not None:
        raise click.UsageError("give --ring or --config, not both")
    if ring is not None:
        return ring
    return daemon_ring_path(StorageConfig.load(config_file))


def no_ring(path: Path, given: str = "--ring / --config") -> RingNotFound:
    """The error for no ring at ``path``: what to start, or what to give (``given``)."""
    return RingNotFound(
        f"no ring at {path}: no daemon is running on it (start one with "
        f"`daq-storage daemon`), or give the right {given}"
    )


_ring_option = click.option(
    "--ring",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The ring file (default: the daemon's ring of --config).",
)


# --------------------------------------------------------------------- daemon
@click.command()
@config_option
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@click.option(
    "--record-bytes",
    type=click.IntRange(min=1),
    default=None,
    help="Size of the record [ring_buffer] frames counts (default: one frame of the "
    "simulated 640x480 uint16 camera).",
)
@click.option(
    "--progress-interval",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Seconds between two progress lines.",
)
@reports_errors
def daemon(
    config_file: Path | None, log_json: bool, record_bytes: int | None, progress_interval: float
) -> None:
    """Create the ring and record everything written to it until SIGINT / SIGTERM.

    The ring is [ring_buffer] path, else /dev/shm/daq_storage_<experiment>; a second
    daemon on the same ring is refused (naming the running one's pid); a ring left by a
    killed daemon is replaced. Logs (stderr, timestamped) a "ready" line once producers
    may attach, progress every few seconds, every loss and failure; at the stop,
    drains the ring, closes every file, prints the summary (JSON with --log-json) and
    removes the ring. Exits with status 3 when data was lost, a format failed or the
    Recorder died, 2 when it cannot start.
    """
    from daq_storage.acquisition import stop_on_signals
    from daq_storage.daemon import configure_logging, run_daemon

    configure_logging(log_json=log_json)
    # With --log-json every line on stderr is a JSON object, errors included.
    say = _log_error if log_json else error_line
    try:
        config = StorageConfig.load(config_file)
        with stop_on_signals() as stop:
            final = run_daemon(
                config, record_bytes=record_bytes, stop=stop, progress_interval=progress_interval
            )
    except DaqStorageError as exc:
        say(f"{type(exc).__name__}: {exc}")
        sys.exit(EXIT_ERROR)
    if log_json:
        click.echo(final.to_json())
    else:
        _print_recorder(final)
    if not final.complete:
        say(_incomplete(final))
        sys.exit(EXIT_DATA_LOST)


def _log_error(text: str) -> None:
    logging.getLogger("daq_storage.daemon").error(text)


def _incomplete(stats: RecorderStats) -> str:
    problems = []
    if stats.lost:
        problems.append(f"{stats.lost:,} records overwritten in the ring before they were read")
    failed = [f"{n} ({f.error})" for n, f in stats.formats.items() if f.state == "failed"]
    if failed:
        problems.append("failed formats: " + ", ".join(failed))
    refused = sum(s.refused + s.unroutable for s in stats.streams.values())
    if refused:
        problems.append(f"{refused:,} records refused or unroutable")
    if stats.errors and not failed:
        problems.append(f"{len(stats.errors)} errors (first: {stats.errors[0]})")
    if stats.state != "stopped":
        problems.append(f"recorder {stats.state}")
    return "data lost: " + ("; ".join(problems) or f"recorder {stats.state}")


def _print_recorder(stats: RecorderStats, *, live: bool = False) -> None:
    _print_all(recorder_renderables(stats, live=live))


def _print_all(renderables: list[RenderableType]) -> None:
    for renderable in renderables:
        # Lines carry paths: wrapped by the terminal, never cut (tables fit the width).
        console.print(renderable, soft_wrap=isinstance(renderable, Text))


def recorder_renderables(stats: RecorderStats, *, live: bool = False) -> list[RenderableType]:
    """A Recorder's stats as ``status`` shows them: a line, its streams, its formats,
    its errors (``live``: say so when its process is gone)."""
    state = stats.state
    if live and state in ("starting", "running", "stopping") and not _alive(stats.pid):
        state += " (its process is gone: these are its last stats)"
    out: list[RenderableType] = [
        Text(
            f"recorder {stats.consumer!r} on {stats.ring} (pid {stats.pid}): {state}, "
            f"{stats.records:,} records, {stats.bytes_in / 1e6:.1f} MB in, "
            f"{stats.bytes_on_disk / 1e6:.1f} MB on disk, lag {stats.lag_records:,} records "
            f"({stats.lag_seconds:.2f} s), {stats.lost:,} lost, {stats.dropped:,} dropped, "
            f"{stats.flushes} flushes"
        )
    ]
    streams = Table(title="streams", title_justify="left")
    for column in ("stream", "kind", "records", "frames", "rows", "MB", "formats", "refused"):
        streams.add_column(column, justify="right" if column not in ("stream", "kind",
                           "formats") else "left")  # fmt: skip
    for s in stats.streams.values():
        streams.add_row(s.stream, s.kind, f"{s.records:,}", f"{s.frames:,}", f"{s.rows:,}",
                        f"{s.bytes_in / 1e6:.1f}", ", ".join(s.formats),
                        f"{s.refused + s.unroutable:,}")  # fmt: skip
    out.append(streams)
    formats = Table(title="formats", title_justify="left")
    for column in ("format", "state", "frames", "rows", "MB on disk", "files", "error"):
        formats.add_column(column)
    for f in stats.formats.values():
        formats.add_row(f.format, f.state, f"{f.frames:,}", f"{f.rows:,}",
                        f"{f.bytes_on_disk / 1e6:.1f}", "\n".join(f.files), f.error)  # fmt: skip
    out.append(formats)
    out.extend(Text(f"error: {error}") for error in stats.errors)
    return out


# --------------------------------------------------------------------- simulate
@click.command()
@_ring_option
@config_option
@click.option("--camera", is_flag=True, help="Simulate the camera (camera_1, frames).")
@click.option("--power-meter", is_flag=True, help="Simulate the power meter (table).")
@click.option("--daq", is_flag=True, help="Simulate the DAQ card (8 channels, 100 kS/s).")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=100.0,
    show_default=True,
    help="Camera frames per second.",
)
@click.option(
    "--frames",
    type=click.IntRange(min=0),
    default=None,
    help="Camera frames, at most duration x rate (default: that many).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Seconds of data from each instrument.",
)
@click.option("--unpaced", is_flag=True, help="As fast as the ring takes them, not real rates.")
@click.option(
    "--block-timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Block-mode ring: longest wait for the slowest consumer before a write is "
    "dropped (default: [ring_buffer] block_timeout_secs of --config, else 1 s).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Simulator seed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@reports_errors
def simulate(
    ring: Path | None,
    config_file: Path | None,
    camera: bool,
    power_meter: bool,
    daq: bool,
    rate: float,
    frames: int | None,
    duration: float,
    unpaced: bool,
    block_timeout: float | None,
    seed: int,
    as_json: bool,
) -> None:
    """Write simulated instruments into a ring (the daemon's), as its writer.

    No instrument flag: all three. SIGINT / SIGTERM end it early. Prints what each
    instrument produced; exits with status 3 when the ring refused anything (block
    mode timeouts).
    """
    from daq_storage.acquisition import run_instruments, stop_on_signals

    path = ring_path(ring, config_file)
    if block_timeout is None and config_file is not None:
        block_timeout = StorageConfig.load(config_file).ring_buffer.block_timeout_secs
    everything = not (camera or power_meter or daq)
    if not path.exists():  # (checked again, race-free, when attaching)
        raise no_ring(path)
    with stop_on_signals() as stop:
        result = run_instruments(
            path, camera=camera or everything, power_meter=power_meter or everything,
            daq=daq or everything, camera_fps=rate, frames=frames, duration=duration,
            paced=not unpaced, seed=seed, block_timeout=block_timeout, stop=stop,
        )  # fmt: skip
    if as_json:
        click.echo(result.to_json())
    else:
        _print_acquisition(path, result)
    dropped = {s: c for s, c in result.streams.items() if c.dropped or c.dropped_records}
    if dropped:
        for stream, count in dropped.items():
            unit = "frames" if count.kind == "frames" else "rows"
            error_line(
                f"data dropped: {stream}: the ring refused {count.dropped:,} of "
                f"{count.produced:,} {unit} ({count.dropped_records:,} records)"
            )
        sys.exit(EXIT_DATA_LOST)


def _print_acquisition(path: Path, result: AcquisitionResult) -> None:
    console.print(f"simulated instruments -> {path} in {result.seconds:.2f} s", soft_wrap=True)
    table = Table()
    for column in ("stream", "kind", "produced", "records", "dropped", "MB", "MB/s"):
        table.add_column(column, justify="left" if column in ("stream", "kind") else "right")
    for c in result.streams.values():
        rate = c.bytes / 1e6 / result.seconds if result.seconds > 0 else 0.0
        table.add_row(c.stream, c.kind, f"{c.produced:,}", f"{c.records:,}", f"{c.dropped:,}",
                      f"{c.bytes / 1e6:.1f}", f"{rate:.1f}")  # fmt: skip
    console.print(table)


# --------------------------------------------------------------------- status
@click.command()
@_ring_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@reports_errors
def status(ring: Path | None, config_file: Path | None, as_json: bool) -> None:
    """Show a ring: fill, producer rate, each consumer's lag and losses, and each
    Recorder's formats, files, bytes and errors.

    Exits with status 2 when there is no ring there.
    """
    from daq_storage.recorder import list_stats
    from daq_storage.ring import RingReader

    path = ring_path(ring, config_file)
    try:
        reader = RingReader.open(path)
    except RingNotFound:
        raise no_ring(path) from None
    with reader:
        first, t0 = reader.stats(), time.monotonic()
        time.sleep(RATE_SAMPLE_S)  # the rate is measured over this interval
        second, t1 = reader.stats(), time.monotonic()
        info = ring_info(path, first, second, t1 - t0, writer_alive=reader.writer_alive)
    consumers = [dataclasses.asdict(r) for r in second.readers]
    recorders = list_stats(path)
    if as_json:
        payload = {
            "ring": info,
            "consumers": consumers,
            "recorders": [
                {**json.loads(r.to_json()), "process_alive": _alive(r.pid)} for r in recorders
            ],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    _print_all(status_renderables(info, consumers, recorders))


def ring_info(
    path: Path, first: RingStats, second: RingStats, seconds: float, *, writer_alive: bool
) -> dict[str, Any]:
    """What ``status`` (and ``tail``) say of a ring: its counters at ``second``, the
    producer's rate since ``first`` (``seconds`` earlier), the daemon holding it."""
    from daq_storage.daemon import DaemonLock

    seconds = max(seconds, 1e-9)
    return {
        "path": str(path),
        "capacity": second.capacity,
        "used_bytes": second.used_bytes,
        "fill": second.used_bytes / second.capacity,
        # What the slowest consumer has still to read: how close the ring is to
        # lapping it (discard_oldest) or to making the producer wait (block).
        "unread_bytes": max(
            (r.lag_bytes for r in second.readers if r.state == "active"), default=0
        ),
        "overflow": second.overflow,
        "written": second.written,
        "bytes": second.bytes,
        "dropped": second.dropped,
        "evictions": second.evictions,
        "streams": second.streams,
        "writer_alive": writer_alive,
        "records_per_s": (second.written - first.written) / seconds,
        "mb_per_s": (second.bytes - first.bytes) / 1e6 / seconds,
        "daemon_pid": DaemonLock.holder(path),
    }


def status_renderables(
    ring: dict[str, Any], consumers: list[dict[str, Any]], recorders: list[RecorderStats]
) -> list[RenderableType]:
    """The ring's line, its consumers' table and each Recorder's stats, as ``status``
    prints them and ``tail`` refreshes them."""
    daemon_pid = ring["daemon_pid"]
    line = Text(
        f"ring {ring['path']}: {ring['capacity'] >> 20} MiB, {ring['overflow']}, holds "
        f"{ring['used_bytes'] / 1e6:.1f} MB ({ring['fill']:.0%}), "
        f"{ring['unread_bytes'] / ring['capacity']:.0%} unread; {ring['written']:,} records "
        f"({ring['bytes'] / 1e6:.1f} MB) written, {ring['dropped']:,} dropped; producer "
        + ("attached" if ring["writer_alive"] else "not attached")
        + f", {ring['records_per_s']:,.0f} records/s, {ring['mb_per_s']:.1f} MB/s; daemon "
        + {None: "not running", -1: "starting"}.get(daemon_pid, f"pid {daemon_pid}")
    )
    table = Table(title="consumers", title_justify="left")
    for column in ("name", "pid", "state", "alive", "lag MB", "delivered", "lost"):
        table.add_column(column)
    for c in consumers:
        table.add_row(c["name"], str(c["pid"]), c["state"], "yes" if c["alive"] else "no",
                      f"{c['lag_bytes'] / 1e6:.1f}", f"{c['delivered']:,}",
                      f"{c['lost']:,}")  # fmt: skip
    out: list[RenderableType] = [line, table]
    for stats in recorders:
        out.extend(recorder_renderables(stats, live=True))
    return out


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a Recorder's stats outlive a killed one)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's: it exists
    return True
