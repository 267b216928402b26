"""Format writers behind one interface, selectable by name.

``open_writer("hdf5", "run.h5")``; likewise ``"arrow"``, ``"parquet"``, ``"csv"``, ``"zarr"``
and ``"tiff"``. Third-party writers register under the entry-point group
``daq_storage.writers``.
"""

from daq_storage.writers._base import Writer, WriterStats
from daq_storage.writers._registry import (
    ENTRY_POINT_GROUP,
    available_writers,
    get_writer_class,
    open_writer,
)
from daq_storage.writers.arrow_ipc import ArrowWriter
from daq_storage.writers.csv import CsvWriter
from daq_storage.writers.hdf5 import Hdf5Writer
from daq_storage.writers.parquet import ParquetWriter, repair_parquet
from daq_storage.writers.tiff import TiffWriter
from daq_storage.writers.zarr import ZarrWriter

__all__ = [
    "ENTRY_POINT_GROUP",
    "ArrowWriter",
    "CsvWriter",
    "Hdf5Writer",
    "ParquetWriter",
    "TiffWriter",
    "Writer",
    "WriterStats",
    "ZarrWriter",
    "available_writers",
    "get_writer_class",
    "open_writer",
    "repair_parquet",
]
