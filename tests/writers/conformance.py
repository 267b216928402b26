"""The conformance suite ships in the package (:mod:`daq_storage.testing`); this module
keeps the names the writer tests import, and the readers of the per-stream formats'
files (every part, with each documented reader) that several test modules share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from daq_storage.testing import WriterConformance, write_in_odd_calls

__all__ = ["PER_STREAM", "WriterConformance", "read_stream", "stream_files", "write_in_odd_calls"]

#: The formats that keep one file per stream in a directory.
PER_STREAM = ["arrow", "parquet", "csv", "tiff"]
_SUFFIX = {"arrow": ".arrows", "parquet": ".parquet", "csv": ".csv", "tiff": ".tif"}


def stream_files(name: str, directory: Path, stream: str) -> list[Path]:
    """A per-stream format's files of ``stream`` in part order, which is name order."""
    suffix = _SUFFIX[name]
    files = [directory / f"{stream}{suffix}", *directory.glob(f"{stream}__part*{suffix}")]
    return sorted(path for path in files if path.exists())


def read_stream(name: str, directory: Path, stream: str) -> list[Any]:
    """Column ``v`` of a table stream (frames: each frame's first value), every part read
    with the documented readers, which must agree: pyarrow and polars (Arrow IPC,
    Parquet, CSV), tifffile (TIFF)."""
    import polars as pl
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    import tifffile

    values: list[Any] = []
    for path in stream_files(name, directory, stream):
        if name == "tiff":
            with tifffile.TiffFile(path) as tif:
                frames = tif.series[0].asarray().reshape(len(tif.pages), -1)
            values += frames[:, 0].tolist()
            continue
        if name == "arrow":
            first = pa.ipc.open_stream(path).read_all().column("v").to_pylist()
            second = pl.read_ipc_stream(path)["v"].to_list()
        elif name == "parquet":
            first = pq.read_table(path).column("v").to_pylist()
            second = pl.read_parquet(path)["v"].to_list()
        else:
            first = pacsv.read_csv(path).column("v").to_pylist()
            second = pl.read_csv(path)["v"].to_list()
        assert first == second, path
        values += first
    return values
