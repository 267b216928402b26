"""``daq-storage tail``: a ring's live view, what ``status`` shows refreshed a few times
a second, with each stream's newest record (scalar values, frame shape and number)."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from daq_storage.cli._common import config_option, console, reports_errors
from daq_storage.cli._service import (
    RATE_SAMPLE_S,
    no_ring,
    ring_info,
    ring_path,
    status_renderables,
)
from daq_storage.config import default_ring_dir
from daq_storage.errors import RingNotFound

if TYPE_CHECKING:
    import pyarrow as pa

    from daq_storage.ring import Record, RingReader, RingStats

__all__ = ["tail"]

#: The writer's rate is measured over the last this many seconds of refreshes.
RATE_WINDOW_S = 2.0
#: Scalar columns shown per table stream (the first ones, ``timestamp_ns`` aside).
MAX_VALUES = 10
#: Piped output (no terminal to redraw): one snapshot at most this often.
PLAIN_EVERY_S = 1.0


def resolve_ring(ring: str | None, config_file: Path | None) -> Path:
    """RING as a path, or a bare name in the rings' directory (``/dev/shm``); none:
    the daemon's ring of ``--config`` (or of the environment), as ``status`` finds it."""
    if ring is None:
        return ring_path(None, config_file)
    if config_file is not None:
        raise click.UsageError("give RING or --config, not both")
    path = Path(ring)
    if path.exists() or os.sep in ring or (os.altsep and os.altsep in ring):
        return path
    return default_ring_dir() / ring


class _Identity:
    """Which file a path names (device, inode), to see the ring removed or replaced
    under an attached reader (its mapping outlives the file's name)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key = self._key()

    def _key(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def check(self) -> None:
        key = self._key()
        if key is None:
            raise RingNotFound(f"ring {self.path} was removed (its daemon or demo stopped)")
        if key != self.key:
            raise RingNotFound(
                f"ring {self.path} was replaced by a new ring (a restarted daemon?): run "
                "daq-storage tail again"
            )


class _Rate:
    """The writer's records/s and MB/s over the last :data:`RATE_WINDOW_S` seconds."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, RingStats]] = deque()

    def add(self, stats: RingStats) -> tuple[RingStats, float]:
        """Record ``stats`` now; returns the oldest sample in the window and its age."""
        now = time.monotonic()
        self.samples.append((now, stats))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW_S:
            self.samples.popleft()
        then, first = self.samples[0]
        return first, now - then


def _value(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = str(value)
    return text if len(text) <= 24 else text[:23] + "…"


def _named(field: pa.Field, value: Any) -> str:
    """``name=value``; raw counts with a ``scale_factor`` (the DAQ card's) in their
    units: ``ai0=5.755 V``."""
    meta = field.metadata or {}
    units = meta.get(b"units", b"").decode(errors="replace")
    if b"scale_factor" in meta and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            value = value * float(meta[b"scale_factor"]) + float(meta.get(b"add_offset", 0))
        except ValueError:
            units = ""  # a scale that is no number: the raw value, without units
    return f"{field.name}={_value(value)}" + (f" {units}" if units else "")


def _latest(record: Record) -> str:
    """What a stream's newest record holds, in one cell."""
    if record.kind == "frame":
        array = record.array()
        return f"frame {record.frame_number}: {array.shape} {array.dtype}"
    if record.kind == "arrow":
        batch = record.batch()
        if batch.num_rows == 0:
            return "(empty batch)"
        last = batch.slice(batch.num_rows - 1, 1).to_pylist()[0]
        values = [_named(batch.schema.field(k), v) for k, v in last.items() if k != "timestamp_ns"]
        more = len(values) - MAX_VALUES
        shown = values[:MAX_VALUES] + ([f"(+{more} more)"] if more > 0 else [])
        return f"{batch.num_rows:,} rows; last: " + "  ".join(shown)
    return f"{len(record):,} bytes"


def streams_table(reader: RingReader) -> Table:
    """Each stream's newest record (``read_latest``: the reader does not move)."""
    table = Table(title="streams (newest record)", title_justify="left")
    for column in ("stream", "kind", "seq", "age", "latest"):
        table.add_column(column, justify="right" if column in ("seq", "age") else "left",
                         overflow="fold")  # fmt: skip
    now_ns = time.time_ns()
    for stream in reader.streams:
        record = reader.read_latest(stream)
        if record is None:
            table.add_row(stream, "", "", "", "(nothing yet)")
            continue
        age = max(0, now_ns - record.timestamp_ns) / 1e9
        table.add_row(stream, record.kind, f"{record.seq:,}", f"{age:.1f} s", _latest(record))
    return table


def snapshot(
    path: Path, reader: RingReader, first: RingStats, seconds: float
) -> list[RenderableType]:
    """The whole view: ``status``'s ring line and consumers, the streams' newest
    records, then each Recorder."""
    from daq_storage.recorder import list_stats

    second = reader.stats()
    info = ring_info(path, first, second, seconds, writer_alive=reader.writer_alive)
    consumers = [dataclasses.asdict(r) for r in second.readers]
    parts = status_renderables(info, consumers, list_stats(path))
    parts.insert(2, streams_table(reader))
    return parts


def _print(parts: list[RenderableType]) -> None:
    """A snapshot printed for a pipe or a log: lines whole (a reader greps them, as
    ``status``'s), tables fitted to the width."""
    for part in parts:
        console.print(part, soft_wrap=isinstance(part, Text))


@click.command()
@click.argument("ring", required=False)
@config_option
@click.option("--once", is_flag=True, help="Print one snapshot and exit (no live view).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=0.25,
    show_default=True,
    help="Seconds between two refreshes.",
)
@reports_errors
def tail(ring: str | None, config_file: Path | None, once: bool, interval: float) -> None:
    """Watch a ring live: the writer's rate (records/s, MB/s), its fill, each reader's
    lag and lost records, each Recorder's formats, and every stream's newest record
    (scalar values of a table, a frame's number and shape). Ctrl-C ends it.

    RING is the ring's file, or its name in /dev/shm; without it, the daemon's ring of
    --config. Exits with status 2 when there is no ring, or when it is removed while
    watched.

    \b
    Examples:
      daq-storage tail daq_storage_lab           # the ring /dev/shm/daq_storage_lab
      daq-storage tail --config examples/lab.toml
      daq-storage tail /dev/shm/my_ring --once   # one snapshot, e.g. in a script
    """
    from daq_storage.ring import RingReader

    path = resolve_ring(ring, config_file)
    try:
        reader = RingReader.open(path)
    except RingNotFound:
        raise no_ring(path, "RING / --config") from None
    identity = _Identity(path)
    with reader:
        rate = _Rate()
        rate.add(reader.stats())
        if once:
            time.sleep(RATE_SAMPLE_S)  # the rate is measured over this interval
            first, seconds = rate.add(reader.stats())
            _print(snapshot(path, reader, first, seconds))
            return
        try:
            _follow(path, reader, identity, rate, interval)
        except KeyboardInterrupt:
            return  # Ctrl-C is how a live view ends: status 0


def _follow(
    path: Path, reader: RingReader, identity: _Identity, rate: _Rate, interval: float
) -> None:
    if not console.is_terminal:
        interval = max(interval, PLAIN_EVERY_S)
    live = Live(console=console, auto_refresh=False, transient=False) if console.is_terminal \
        else None  # fmt: skip
    try:
        if live is not None:
            live.start()
        while True:
            time.sleep(interval)  # the refresh period (the view waits for nothing)
            identity.check()
            first, seconds = rate.add(reader.stats())
            view = snapshot(path, reader, first, seconds)
            if live is not None:
                live.update(Group(*view), refresh=True)
            else:
                _print(view)
                console.print(Text(""))
    finally:
        if live is not None:
            live.stop()
