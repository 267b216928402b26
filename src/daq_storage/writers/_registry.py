"""Writers by name: built-ins as lazy ``module:Class`` strings, plug-ins by entry point."""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points
from typing import Any

from daq_storage.errors import ConfigError
from daq_storage.writers._base import Writer

__all__ = ["ENTRY_POINT_GROUP", "available_writers", "get_writer_class", "open_writer"]

ENTRY_POINT_GROUP = "daq_storage.writers"

_BUILTIN = {
    "hdf5": "daq_storage.writers.hdf5:Hdf5Writer",
    "arrow": "daq_storage.writers.arrow_ipc:ArrowWriter",
    "parquet": "daq_storage.writers.parquet:ParquetWriter",
    "csv": "daq_storage.writers.csv:CsvWriter",
    "zarr": "daq_storage.writers.zarr:ZarrWriter",
    "tiff": "daq_storage.writers.tiff:TiffWriter",
}


def _plugins() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_writers() -> list[str]:
    """Names accepted by :func:`open_writer`: built-ins, then installed plug-ins."""
    return [*_BUILTIN, *sorted(set(_plugins()) - set(_BUILTIN))]


def get_writer_class(name: str) -> type[Writer]:
    """The writer class registered as ``name``."""
    target = _BUILTIN.get(name) or _plugins().get(name)
    if target is None:
        raise ConfigError(f"unknown writer {name!r}; available: {', '.join(available_writers())}")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Writer)):
        raise ConfigError(f"writer {name!r} ({target}) is not a daq_storage Writer")
    return cls


def open_writer(name: str, path: str | os.PathLike[str], **options: Any) -> Writer:
    """Create the writer registered as ``name`` for ``path`` with format ``options``."""
    return get_writer_class(name)(path, **options)
