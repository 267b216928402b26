"""daq-storage: store what laboratory instruments produce, without making acquisition wait.

Only the errors are imported with the package. The configuration schema (pydantic), the
ring (numpy, pyarrow) and the writers (h5py, zarr, tifffile) load on first use of one of
their names, so ``import daq_storage.ring`` costs what the ring needs and nothing more.
"""

import importlib
from typing import TYPE_CHECKING, Any

from daq_storage._version import __version__
from daq_storage.errors import (
    ActorStopped,
    ConfigError,
    DaqStorageError,
    DocumentError,
    FormatError,
    InvalidName,
    ReadError,
    RingBusy,
    RingCorrupt,
    RingError,
    RingExists,
    RingFull,
    RingNotFound,
    RingNotTrusted,
    RunNotFound,
    SchemaMismatch,
    ServiceError,
    StorageIOError,
    UnknownStream,
    UnsupportedData,
    WriterBusy,
    WriterClosedError,
)

if TYPE_CHECKING:
    from daq_storage.actor import (
        Flush,
        GetStats,
        SetInstrumentMetadata,
        SetMetadata,
        StorageActor,
        StorageStats,
        WriteBatch,
    )
    from daq_storage.config import RingBufferConfig, StorageConfig, StorageSettings
    from daq_storage.documents import DocumentWriter
    from daq_storage.read import (
        FrameArray,
        LossRange,
        Run,
        RunListing,
        StreamInfo,
        list_runs,
        open_run,
    )
    from daq_storage.ring import Record, RingBuffer, RingReader, RingStats, max_ring_bytes
    from daq_storage.streams import ChannelConfig, StreamWriter
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

# Where each lazily imported name lives.
_LAZY = {
    **dict.fromkeys(
        ("FrameArray", "LossRange", "Run", "RunListing", "StreamInfo", "list_runs", "open_run"),
        "read",
    ),
    "DocumentWriter": "documents",
    **dict.fromkeys(("StreamWriter", "ChannelConfig"), "streams"),
    **dict.fromkeys(
        (
            "StorageActor",
            "WriteBatch",
            "SetMetadata",
            "SetInstrumentMetadata",
            "Flush",
            "GetStats",
            "StorageStats",
        ),
        "actor",
    ),
    **dict.fromkeys(("RingBufferConfig", "StorageConfig", "StorageSettings"), "config"),
    **dict.fromkeys(("Record", "RingBuffer", "RingReader", "RingStats", "max_ring_bytes"), "ring"),
    **dict.fromkeys(
        (
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
        ),
        "writers",
    ),
}

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
    # reading back
    "open_run",
    "list_runs",
    "Run",
    "RunListing",
    "StreamInfo",
    "FrameArray",
    "LossRange",
    # storage actor
    "StorageActor",
    "WriteBatch",
    "SetMetadata",
    "SetInstrumentMetadata",
    "Flush",
    "GetStats",
    "StorageStats",
    # bluesky documents
    "DocumentWriter",
    # multi-channel streams
    "StreamWriter",
    "ChannelConfig",
    # errors
    "ActorStopped",
    "ConfigError",
    "DaqStorageError",
    "DocumentError",
    "ServiceError",
    "FormatError",
    "InvalidName",
    "ReadError",
    "RingBusy",
    "RingCorrupt",
    "RingError",
    "RingExists",
    "RingFull",
    "RingNotFound",
    "RingNotTrusted",
    "RunNotFound",
    "SchemaMismatch",
    "StorageIOError",
    "UnknownStream",
    "UnsupportedData",
    "WriterBusy",
    "WriterClosedError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # PEP 562: called only for names not set above, i.e. the lazy ones.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'daq_storage' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"daq_storage.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
