"""daq-storage: store what laboratory instruments produce, without making acquisition wait."""

from daq_storage._version import __version__
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

__all__ = [
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
