"""daq-storage: store what laboratory instruments produce, without making acquisition wait."""

from daq_storage._version import __version__
from daq_storage.config import RingBufferConfig, StorageConfig, StorageSettings
from daq_storage.errors import (
    ConfigError,
    DaqStorageError,
    InvalidName,
    RingBusy,
    RingCorrupt,
    RingError,
    RingFull,
    SchemaMismatch,
    StorageIOError,
    UnsupportedData,
    WriterClosedError,
)
from daq_storage.ring import Record, RingBuffer, RingReader, RingStats

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
    # errors
    "ConfigError",
    "DaqStorageError",
    "InvalidName",
    "RingBusy",
    "RingCorrupt",
    "RingError",
    "RingFull",
    "SchemaMismatch",
    "StorageIOError",
    "UnsupportedData",
    "WriterClosedError",
    "__version__",
]
