"""What ``daq-storage plot`` draws: a run's tables reduced to min/max buckets, a frame as
an image, the figure saved as a PNG (matplotlib's Agg renderer: no display needed).

Tables are read in batches (``Run.iter_batches``) and reduced to the minimum and maximum
of each of at most :data:`BUCKETS` buckets of rows as they come, so a stream of any
length plots in bounded memory and in time linear in its rows.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from rich.progress import Progress

from daq_storage.cli._common import console
from daq_storage.errors import ConfigError, StorageIOError, UnsupportedData

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from daq_storage.read import Run, StreamInfo

__all__ = ["BUCKETS", "FramePick", "Series", "choose", "decimate", "draw", "pick_frame"]

#: A table is drawn as the minimum and maximum of at most this many buckets of rows.
BUCKETS = 2000
#: Rows read at a time.
BATCH_ROWS = 262_144
#: Read progress is shown for tables of more rows than this (on a terminal).
PROGRESS_ROWS = 1_000_000
#: Columns that count rather than measure: not drawn unless asked for.
COUNTERS = frozenset({"sample_index", "frame_number", "seq", "seq_num"})


@dataclass
class Series:
    """One table stream reduced for plotting: per bucket, the first time and each
    column's minimum and maximum (``step`` rows a bucket; 1: the rows themselves)."""

    stream: str
    rows: int
    step: int
    time: npt.NDArray[np.int64]  # ns since the epoch, or the row number (``datetime``)
    low: dict[str, npt.NDArray[np.float64]]
    high: dict[str, npt.NDArray[np.float64]]
    datetime: bool
    units: dict[str, str] = field(default_factory=dict)


def _numeric(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    )


def _text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _time_basis(info: StreamInfo) -> tuple[str | None, float, int]:
    """How a table's rows map to time: (column, ns per unit, offset ns). The column is
    ``timestamp_ns``, else the first of a timestamp type (the stream writer's
    ``timestamps``), else ``sample_index`` with the stream's ``sample_rate`` and
    ``start_ns`` (the DAQ card), else ``None`` (the row number is the axis)."""
    names = info.schema.names
    if "timestamp_ns" in names:
        return "timestamp_ns", 1.0, 0
    stamped = [f.name for f in info.schema if pa.types.is_timestamp(f.type)]
    if stamped:
        return stamped[0], 1.0, 0
    rate, start = info.metadata.get("sample_rate"), info.metadata.get("start_ns")
    if "sample_index" in names and isinstance(rate, int | float) and rate > 0 \
            and isinstance(start, int | float):  # fmt: skip
        return "sample_index", 1e9 / float(rate), int(start)
    return None, 1.0, 0


def _scale(info: StreamInfo, column: str) -> tuple[float, float, str]:
    """A column's ``scale_factor``, ``add_offset`` and ``units`` (field metadata, as
    the DAQ card stores raw counts): plotted values are ``raw * scale + offset``."""
    meta = info.schema.field(column).metadata or {}

    def number(key: bytes, default: float) -> float:
        try:
            return float(meta[key])
        except (KeyError, ValueError):
            return default

    return number(b"scale_factor", 1.0), number(b"add_offset", 0.0), \
        meta.get(b"units", b"").decode(errors="replace")  # fmt: skip


def pick_columns(info: StreamInfo, wanted: list[str] | None, where: str) -> list[str]:
    """The columns to draw: ``wanted`` (each checked), else every numeric one but the
    time basis. Raises ConfigError (no such column), UnsupportedData (text, not numbers)."""
    time_column = _time_basis(info)[0]
    numeric = [f.name for f in info.schema if _numeric(f.type) and f.name != time_column]
    if wanted is None:
        numeric = [c for c in numeric if c not in COUNTERS]
        if not numeric:
            raise UnsupportedData(f"stream {info.name!r} of {where} has no numeric column to "
                                  f"plot; its columns are {info.columns}")  # fmt: skip
        return numeric
    for column in wanted:
        if column not in info.schema.names:
            raise ConfigError(f"stream {info.name!r} of {where} has no column {column!r}; its "
                              f"columns are {info.columns}")  # fmt: skip
        kind = info.schema.field(column).type
        if not _numeric(kind):
            what = "text" if _text(kind) else "values"
            raise UnsupportedData(
                f"column {column!r} of stream {info.name!r} ({where}) holds {what} ({kind}), "
                f"not numbers; its numeric columns are {numeric}"
            )
    return wanted


def _floats(array: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.float64]:
    values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)  # nulls: NaN
    return np.asarray(values, dtype=np.float64)


def _ints(array: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.int64]:
    if pa.types.is_timestamp(array.type) or pa.types.is_duration(array.type):
        array = array.cast(pa.int64())
    return np.asarray(pc.cast(array, pa.int64()).to_numpy(zero_copy_only=False), np.int64)


def decimate(
    run: Run, info: StreamInfo, columns: list[str], *, buckets: int = BUCKETS,
    on_rows: Any = None,
) -> Series:  # fmt: skip
    """Read ``columns`` of table ``info`` batch by batch into :class:`Series`: each
    column's minimum and maximum per bucket of ``ceil(rows / buckets)`` rows (NaN and
    nulls ignored), and each bucket's first time. ``on_rows(n)`` after each batch."""
    time_column, ns_per, offset = _time_basis(info)
    rows = info.rows
    # Two points a bucket: fewer than 2 x buckets rows are drawn as they are.
    step = 1 if rows <= 2 * buckets else math.ceil(rows / buckets)
    count = math.ceil(rows / step)
    scales = {c: _scale(info, c) for c in columns}
    time = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
    low = {c: np.full(count, np.nan) for c in columns}
    high = {c: np.full(count, np.nan) for c in columns}
    reading = columns if time_column is None else [time_column, *columns]
    seen = 0
    for batch in run.iter_batches(info.name, list(dict.fromkeys(reading)), batch_rows=BATCH_ROWS):
        n = batch.num_rows
        if seen + n > rows:  # the file grew while read (a live run): keep what was counted
            n = rows - seen
            batch = batch.slice(0, n)
        if n <= 0:
            break
        ids = (seen + np.arange(n, dtype=np.int64)) // step
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        at = ids[starts]
        if time_column is None:
            first = seen + starts.astype(np.int64)
        elif time_column == "sample_index":
            index = _floats(batch.column(time_column))
            first = np.round(index[starts] * ns_per).astype(np.int64) + offset
        else:
            first = np.minimum.reduceat(_ints(batch.column(time_column)), starts)
        time[at] = np.minimum(time[at], first)
        for column in columns:
            values = _floats(batch.column(column))
            with np.errstate(invalid="ignore"):
                low[column][at] = np.fmin(low[column][at], np.fmin.reduceat(values, starts))
                high[column][at] = np.fmax(high[column][at], np.fmax.reduceat(values, starts))
        seen += n
        if on_rows is not None:
            on_rows(n)
    for column, (scale, add, _) in scales.items():
        low[column] = low[column] * scale + add
        high[column] = high[column] * scale + add
        if scale < 0:
            low[column], high[column] = high[column], low[column]
    return Series(info.name, rows, step, time, low, high, time_column is not None,
                  {c: u for c, (_, _, u) in scales.items() if u})  # fmt: skip


def _draw_series(axes: Axes, series: Series) -> None:
    x: Any = series.time
    if series.datetime:
        x = series.time.astype("datetime64[ns]")
    for column in series.low:
        label = f"{column} [{series.units[column]}]" if column in series.units else column
        if series.step == 1:
            axes.plot(x, series.low[column], label=label, linewidth=0.8)
            continue
        # Each bucket drawn from its minimum to its maximum: a spike of one row shows.
        xs = np.repeat(x, 2)
        ys = np.column_stack([series.low[column], series.high[column]]).reshape(-1)
        axes.plot(xs, ys, label=label, linewidth=0.6)
    note = f"{series.rows:,} rows" + (
        f", min/max of {len(series.time):,} buckets of {series.step:,}" if series.step > 1 else ""
    )
    axes.set_title(f"{series.stream} ({note})", fontsize=10, loc="left")
    units = sorted(set(series.units.values()))
    if len(units) == 1 and len(series.units) == len(series.low):
        axes.set_ylabel(units[0])
    axes.set_xlabel("time (UTC)" if series.datetime else "row")
    axes.grid(True, alpha=0.3)
    if len(series.low) > 1 or series.units:
        axes.legend(loc="upper right", fontsize=8, ncol=min(4, len(series.low)))
    if series.datetime:
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


@dataclass
class FramePick:
    """The frame to draw: stream, index, its number and time, the 2-D image."""

    stream: str
    index: int
    count: int
    number: int
    timestamp_ns: int
    image: npt.NDArray[Any]
    note: str


def pick_frame(run: Run, stream: str, index: int | None, where: str) -> FramePick:
    """Frame ``index`` of ``stream`` (default: the middle one) as a 2-D image (or RGB)."""
    frames = run.frames(stream)
    count = len(frames)
    if count == 0:
        raise UnsupportedData(f"frame stream {stream!r} of {where} is empty: no frame to plot")
    if index is None:
        index = count // 2
    if not -count <= index < count:
        raise ConfigError(f"--frame {index}: stream {stream!r} of {where} has {count:,} frames "
                          f"(0 to {count - 1:,}, or negative from the end)")  # fmt: skip
    index %= count
    image = np.asarray(frames[index])
    note = ""
    while image.ndim > 2 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 3 and image.shape[-1] not in (3, 4):
        note = f", plane 0 of {image.shape[0]}"
        image = image[0]
    while image.ndim > 3 or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        image = image[0]
    if image.ndim == 1:
        image = image[np.newaxis, :]
    if image.ndim == 0:
        raise UnsupportedData(f"frame stream {stream!r} of {where} holds scalars, not images")
    return FramePick(stream, index, count, int(frames.frame_numbers[index]),
                     int(frames.timestamps_ns[index]), image, note)  # fmt: skip


def _draw_frame(figure: Figure, axes: Axes, pick: FramePick) -> None:
    shown = axes.imshow(pick.image, cmap="viridis", interpolation="antialiased", aspect="equal")
    if pick.image.ndim == 2:
        figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
    when = datetime.fromtimestamp(pick.timestamp_ns / 1e9, UTC).isoformat(timespec="milliseconds")
    axes.set_title(
        f"{pick.stream}: frame {pick.number} ({pick.index + 1:,} of {pick.count:,}{pick.note}) "
        f"at {when.replace('+00:00', 'Z')}", fontsize=10, loc="left",
    )  # fmt: skip
    axes.set_xlabel("x (pixel)")
    axes.set_ylabel("y (pixel)")


def _save(figure: Figure, output: Path, dpi: int, *, palette: bool) -> None:
    """The figure as a PNG; ``palette``: an 8-bit PNG of 256 colours."""
    if not palette:
        figure.savefig(output, format="png", dpi=dpi)
        return
    from PIL import Image

    rendered = io.BytesIO()
    figure.savefig(rendered, format="png", dpi=dpi)
    rendered.seek(0)
    with Image.open(rendered) as drawn:
        image = drawn.convert("RGB")
    # The palette's 256 colours from the picture, then each pixel dithered onto them: a
    # colour-mapped frame keeps its smooth gradient instead of bands.
    palette_of = image.quantize(256, method=Image.Quantize.FASTOCTREE)
    quantized = image.quantize(palette=palette_of, dither=Image.Dither.FLOYDSTEINBERG)
    quantized.save(output, format="PNG", optimize=True)


@contextmanager
def _progress(total: int) -> Iterator[Any]:
    """A transient progress bar over ``total`` rows on a terminal (large tables)."""
    if not console.is_terminal or total < PROGRESS_ROWS:
        yield None
        return
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("reading rows", total=total)
        yield lambda n: progress.advance(task, n)


def choose(run: Run, streams: tuple[str, ...], columns: tuple[str, ...],
            frame: int | None, where: str) -> tuple[list[tuple[StreamInfo, list[str]]],
                                                    list[str]]:  # fmt: skip
    """The tables (with their columns) and frame streams to draw."""
    wanted = list(columns) or None
    if streams:
        chosen = [run.stream(name) for name in dict.fromkeys(streams)]
    else:
        everything = list(run.streams.values())
        chosen = [s for s in everything if s.kind == "table"]
        if wanted is not None:
            chosen = [s for s in chosen if any(c in s.schema.names for c in wanted)]
        if wanted is None or frame is not None:
            chosen += [s for s in everything if s.kind == "frames"][:1]
    tables = [s for s in chosen if s.kind == "table"]
    images = [s.name for s in chosen if s.kind == "frames"]
    if wanted is not None:
        if not tables:
            have = {s.name: s.columns for s in run.streams.values() if s.kind == "table"}
            raise ConfigError(f"no table stream of {where} has a column {wanted[0]!r}; its "
                              f"table streams' columns are {have}")  # fmt: skip
        every = {name for s in tables for name in s.schema.names}
        missing = [c for c in wanted if c not in every]
        if missing:
            raise ConfigError(
                f"no column {missing[0]!r} in stream(s) {[s.name for s in tables]} of {where}; "
                f"their columns are {sorted(every)}"
            )
    picked = []
    for info in tables:
        mine = None if wanted is None else [c for c in wanted if c in info.schema.names]
        if mine == []:
            raise ConfigError(f"stream {info.name!r} of {where} has none of the columns "
                              f"{wanted}; its columns are {info.columns}")  # fmt: skip
        if info.rows == 0:
            raise UnsupportedData(f"stream {info.name!r} of {where} is empty (0 rows): "
                                  "nothing to plot")  # fmt: skip
        picked.append((info, pick_columns(info, mine, where)))
    if frame is not None and not images:
        frame_streams = [s.name for s in run.streams.values() if s.kind == "frames"]
        raise ConfigError(f"--frame {frame}: no frame stream chosen in {where}; its frame "
                          f"streams are {frame_streams}")  # fmt: skip
    if not picked and not images:
        raise UnsupportedData(f"{where} holds no stream to plot")
    return picked, images


def draw(run: Run, streams: tuple[str, ...], columns: tuple[str, ...], frame: int | None,
         output: Path, dpi: int, *, palette: bool) -> str:  # fmt: skip
    """Draw the chosen streams of ``run`` into the PNG ``output``; returns the line that
    says what was drawn."""
    from matplotlib.figure import Figure

    where = str(run.path)
    tables, images = choose(run, streams, columns, frame, where)
    series = []
    with _progress(sum(info.rows for info, _ in tables)) as advance:
        for info, wanted in tables:
            series.append(decimate(run, info, wanted, on_rows=advance))
    picks = [pick_frame(run, name, frame, where) for name in images]
    heights = [3.0] * len(series) + [5.0] * len(picks)
    figure = Figure(figsize=(10, sum(heights)), dpi=dpi, layout="constrained")
    grid = figure.add_gridspec(len(heights), 1, height_ratios=heights)
    for row, one in enumerate(series):
        _draw_series(figure.add_subplot(grid[row]), one)
    for row, pick in enumerate(picks, start=len(series)):
        _draw_frame(figure, figure.add_subplot(grid[row]), pick)
    figure.suptitle(f"{run.name} ({run.format})", fontsize=11)
    try:
        _save(figure, output, dpi, palette=palette)
    except OSError as exc:
        raise StorageIOError(f"cannot write the plot {output}: {exc.strerror or exc}") from None
    width, height = (round(v * dpi) for v in figure.get_size_inches())
    drawn = [f"{s.stream} ({', '.join(s.low)}; {s.rows:,} rows)" for s in series]
    drawn += [f"{p.stream} frame {p.number} ({p.index + 1:,} of {p.count:,})" for p in picks]
    return f"plot {output} ({width}x{height} px): " + ", ".join(drawn)
