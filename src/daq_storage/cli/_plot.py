"""``daq-storage plot``: a run's scalar columns against time and a frame as an image,
in one PNG, so a user can look instead of read (the drawing: ``_plot_draw``, imported
when the command runs: numpy, pyarrow and matplotlib cost every other command nothing).
"""

from __future__ import annotations

from pathlib import Path

import click

from daq_storage.cli._common import console, reports_errors
from daq_storage.errors import ConfigError

__all__ = ["plot"]

FORMATS = ("hdf5", "arrow", "parquet", "csv", "zarr", "tiff")


@click.command()
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The PNG to write.")  # fmt: skip
@click.option("--stream", "streams", multiple=True, metavar="NAME",
              help="A stream to draw (repeat it); default: every table stream and the "
              "first frame stream.")  # fmt: skip
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="NAME",
    help="A column of the table streams (repeat it); default: every numeric one.",
)
@click.option("--frame", type=int, default=None,
              help="Which frame of the frame stream to show (an index, negative from the "
              "end); default: the middle one.")  # fmt: skip
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="The format to read where the run was written in several.",
)
@click.option("--dpi", type=click.IntRange(min=20, max=600), default=100, show_default=True,
              help="Resolution of the PNG (the figure is 10 inches wide).")  # fmt: skip
@click.option(
    "--palette",
    is_flag=True,
    help="A PNG of 256 colours: about half the bytes, for documents and the web.",
)
@reports_errors
def plot(file: Path, output: Path, streams: tuple[str, ...], columns: tuple[str, ...],
         frame: int | None, fmt: str | None, dpi: int, palette: bool) -> None:  # fmt: skip
    """Plot what a run recorded into a PNG: each table stream's numeric columns against
    time (one panel a stream), and a frame of a camera as an image with a colorbar.

    FILE is anything open_run reads: an .h5 file, a .zarr store, a run's directory.
    Tables of more than 2,000 rows are drawn as the minimum and maximum of 2,000
    buckets, read in batches: any length plots in bounded memory. The DAQ card's raw
    counts are drawn in volts (their scale_factor). Exits with status 2 on an unknown
    stream or column, a text column or an empty stream.

    \b
    Examples:
      daq-storage plot data/experiment_2026-01-25_14-32-45_v1.h5 -o run.png
      daq-storage plot run.h5 --stream power_meter_01 --column value -o power.png
      daq-storage plot run.h5 --stream camera_1 --frame -1 -o last_frame.png
      daq-storage plot data/experiment_2026-01-25_14-32-45_v1 --format arrow -o run.png
    """
    import hdf5plugin  # noqa: F401  (HDF5's lz4 / zstd / blosc filters, for open_run)

    from daq_storage.cli._plot_draw import draw
    from daq_storage.read import open_run

    try:
        run = open_run(file, format=fmt)
    except ConfigError as exc:
        if fmt is None and "several formats" in str(exc):  # say how, in this command's words
            raise ConfigError(f"{exc}: daq-storage plot --format NAME") from None
        raise
    with run:
        line = draw(run, streams, columns, frame, output, dpi, palette=palette)
    console.print(line, soft_wrap=True)
