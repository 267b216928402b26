"""Reading back what daq-storage wrote, whatever the format.

``open_run(path)`` opens an HDF5 file, a Zarr store, a directory of Arrow IPC, Parquet,
CSV or TIFF stream files, the rotated versions of a run, or a Recorder's output
directory (``format=`` picks a format there, ``run=`` a run: :func:`list_runs` lists
them); the :class:`Run` lists the streams
(:class:`StreamInfo`), gives tables as ``pyarrow.Table`` (or polars), in batches, and
frames as a lazy :class:`FrameArray` (numpy indexing, or a lazy xarray ``DataArray``)::

    with open_run("run.h5") as run:
        table = run.table("power_meter_01", ["timestamp_ns", "power_watts"])
        first = run.frames("camera_1")[0]

See docs/reading.md.
"""

from __future__ import annotations

from daq_storage.read._discover import FORMATS
from daq_storage.read._frames import FrameArray
from daq_storage.read._listing import RunListing, list_runs
from daq_storage.read._run import Run, open_run
from daq_storage.read._source import LossRange, PartInfo, StreamInfo

__all__ = [
    "FORMATS",
    "FrameArray",
    "LossRange",
    "PartInfo",
    "Run",
    "RunListing",
    "StreamInfo",
    "list_runs",
    "open_run",
]
