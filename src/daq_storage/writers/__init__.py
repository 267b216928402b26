"""Format writers behind one interface, selectable by name.

``open_writer("hdf5", "run.h5")``; likewise ``"arrow"``, ``"parquet"``, ``"csv"``, ``"zarr"``
and ``"tiff"``. Third-party writers register under the entry-point group
``daq_storage.writers``. ``repair_arrow``, ``repair_csv``, ``repair_hdf5`` and
``repair_parquet`` make files a killed writer left readable again (``daq-storage repair``
runs them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from daq_storage.writers._base import Writer, WriterBusy
from daq_storage.writers._contract import (
    StreamDescription,
    StreamPart,
    WriterOptions,
    WriterStats,
    check_all,
)
from daq_storage.writers._per_stream import leftover
from daq_storage.writers._registry import (
    ENTRY_POINT_GROUP,
    available_writers,
    get_writer_class,
    open_writer,
)

if TYPE_CHECKING:
    from daq_storage.writers._configured import writer_options
    from daq_storage.writers.arrow_ipc import ArrowWriter, repair_arrow
    from daq_storage.writers.csv import CsvWriter, repair_csv
    from daq_storage.writers.hdf5 import Hdf5Writer, repair_hdf5
    from daq_storage.writers.parquet import ParquetWriter, repair_parquet
    from daq_storage.writers.tiff import TiffWriter
    from daq_storage.writers.zarr import ZarrWriter

__all__ = [
    "ENTRY_POINT_GROUP",
    "ArrowWriter",
    "CsvWriter",
    "Hdf5Writer",
    "ParquetWriter",
    "StreamDescription",
    "StreamPart",
    "TiffWriter",
    "Writer",
    "WriterBusy",
    "WriterOptions",
    "WriterStats",
    "ZarrWriter",
    "available_writers",
    "check_all",
    "get_writer_class",
    "leftover",
    "open_writer",
    "repair_arrow",
    "repair_csv",
    "repair_hdf5",
    "repair_parquet",
    "writer_options",
]

# Where each format's names live: a format's module (and its library: h5py, zarr,
# tifffile) is imported on first use, so a process writing Arrow never waits for h5py.
_LAZY = {
    "ArrowWriter": "arrow_ipc",
    "repair_arrow": "arrow_ipc",
    "CsvWriter": "csv",
    "repair_csv": "csv",
    "repair_hdf5": "hdf5",
    "Hdf5Writer": "hdf5",
    "ParquetWriter": "parquet",
    "repair_parquet": "parquet",
    "TiffWriter": "tiff",
    "ZarrWriter": "zarr",
    "writer_options": "_configured",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'daq_storage.writers' has no attribute {name!r}")
    return getattr(importlib.import_module(f"daq_storage.writers.{module}"), name)
