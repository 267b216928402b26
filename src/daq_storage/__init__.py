"""daq-storage: store what laboratory instruments produce, without making acquisition wait."""

import importlib
from typing import TYPE_CHECKING, Any

from daq_storage._version import __version__
from daq_storage.config import RingBufferConfig, StorageConfig, StorageSettings
from daq_storage.errors import (
    ConfigError,
    DaqStorageError,
    InvalidName,
    RingBusy,
    RingCorrupt,
    RingError,
    RingExists,
    RingFull,
    RingNotFound,
    RingNotTrusted,
    SchemaMismatch,
    StorageIOError,
    UnsupportedData,
    WriterBusy,
    WriterClosedError,
)
from daq_storage.ring import Record, RingBuffer, RingReader, RingStats, max_ring_bytes

if TYPE_CHECKING:
    from daq_storage.writers import (
        ArrowWriter,
        CsvWriter,
        Hdf5Writer,
        ParquetWriter,
        TiffWriter,
        Writer,
        WriterStats,
        ZarrWriter,
        available_writers,
        open_writer,
        repair_arrow,
        repair_csv,
        repair_hdf5,
        repair_parquet,
    )

__all__ = [
    # configuration
    "RingBufferConfig",
    "StorageConfig",
    "StorageSettings",
    # ring buffer
    "Record",
    "RingBuffer",
    "RingReader",
    "RingStats",
    "max_ring_bytes",
    # writers
    "open_writer",
    "available_writers",
    "Writer",
    "WriterStats",
    "ArrowWriter",
    "CsvWriter",
    "Hdf5Writer",
    "ParquetWriter",
    "TiffWriter",
    "ZarrWriter",
    "repair_arrow",
    "repair_csv",
    "repair_hdf5",
    "repair_parquet",
    # errors
    "ConfigError",
    "DaqStorageError",
    "InvalidName",
    "RingBusy",
    "RingCorrupt",
    "RingError",
    "RingExists",
    "RingFull",
    "RingNotFound",
    "RingNotTrusted",
    "SchemaMismatch",
    "StorageIOError",
    "UnsupportedData",
    "WriterBusy",
    "WriterClosedError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The writers load on first use: a process that only uses the ring (a reader, the
    # CLI's help) does not wait for h5py, zarr and tifffile to import. Every other name
    # in __all__ is imported above, so only those reach this function.
    if name in __all__:
        return getattr(importlib.import_module("daq_storage.writers"), name)
    raise AttributeError(f"module 'daq_storage' has no attribute {name!r}")
