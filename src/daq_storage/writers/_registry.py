"""Writers by name: built-ins as lazy ``module:Class`` strings, plug-ins by entry point."""

from __future__ import annotations

import importlib
import inspect
import os
from importlib.metadata import entry_points
from typing import Any

from daq_storage.errors import ConfigError
from daq_storage.location import S3Location, is_remote
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
    """Names accepted by :func:`open_writer`: built-ins, then installed plug-ins.

    A plug-in is a :class:`Writer` subclass named by an entry point in the group
    ``daq_storage.writers`` (``name = "package.module:Class"``); built-in names win.
    """
    return [*_BUILTIN, *sorted(set(_plugins()) - set(_BUILTIN))]


def _find(table: dict[str, str], name: str) -> str | None:
    """``table[name]``, the name compared without regard to case (``"HDF5"`` is ``"hdf5"``)."""
    if name in table:
        return table[name]
    wanted = name.casefold()
    return next((target for known, target in table.items() if known.casefold() == wanted), None)


def get_writer_class(name: str) -> type[Writer]:
    """The writer class registered as ``name`` (compared without regard to case)."""
    target = None
    if isinstance(name, str):
        target = _find(_BUILTIN, name) or _find(_plugins(), name)
    if target is None:
        raise ConfigError(f"unknown writer {name!r}; available: {', '.join(available_writers())}")
    module_name, _, attribute = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"writer {name!r} ({target}) cannot be loaded: {exc}") from exc
    except TypeError as exc:  # a plug-in whose class breaks the writer contract
        raise ConfigError(f"writer {name!r} ({target}) breaks the writer contract: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, Writer)):
        raise ConfigError(f"writer {name!r} ({target}) is not a daq_storage Writer")
    return found


def open_writer(name: str, path: str | os.PathLike[str] | S3Location, **options: Any) -> Writer:
    """Create the writer registered as ``name`` for ``path`` with format ``options``.

    ``path`` may be an ``s3://bucket/key`` URL for the writers that write to object
    stores (Zarr, Parquet, Arrow IPC); ``storage_options`` (a
    :class:`~daq_storage.location.S3Options` or a dict of its fields) then say how to
    reach it, over the standard ``AWS_*`` variables and profiles.

    Raises:
        ConfigError: ``name`` is unknown, an option is not one the writer takes, or
            ``path`` is a URL the writer cannot write to.
    """
    cls = get_writer_class(name)
    if is_remote(path) and not cls.supports_object_storage:
        remote = sorted(
            n for n in available_writers() if get_writer_class(n).supports_object_storage
        )
        raise ConfigError(
            f"the {cls.name} writer writes local files only, not {path}; object storage "
            f"(s3://) is written by: {', '.join(remote) or 'none'}"
        )
    signature = inspect.signature(cls)
    try:
        signature.bind(path, **options)
    except TypeError as exc:
        accepted = [p for p in signature.parameters if p != "path"]
        raise ConfigError(
            f"writer {name!r}: {exc}; its options are: {', '.join(accepted) or 'none'}"
        ) from None
    cls.validate_options(**options)  # every value checked: a ConfigError naming it
    return cls(path, **options)
