"""Where each recorded format puts its outputs: a local directory or an ``s3://`` prefix
(``output_dir``, or the format's own entry of ``destinations``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daq_storage.errors import ConfigError, describe_value
from daq_storage.location import S3Location, S3Options, is_remote, parse_location
from daq_storage.recorder import _args as a
from daq_storage.recorder._routing import Routing
from daq_storage.writers import available_writers, get_writer_class

__all__ = ["Destination", "resolve_destinations"]

Destination = str | os.PathLike[str] | S3Location


def resolve_destinations(
    routing: Routing,
    output_dir: Destination,
    destinations: Mapping[str, Destination] | None,
    storage_options: S3Options | Mapping[str, Any] | None,
) -> dict[str, Path | S3Location]:
    """Per recorded format, its directory or :class:`S3Location`.

    Raises:
        ConfigError: a destination for a format not recorded, an ``s3://`` one for a
            format that cannot write to object storage, a bad URL, or ``storage_options``
            with no ``s3://`` destination to apply to.
    """
    given: dict[str, Destination] = {}
    if destinations is not None:
        if not isinstance(destinations, Mapping):
            raise ConfigError(
                f"destinations must map formats to places, got {describe_value(destinations)}"
            )
        for fmt, where in destinations.items():
            name = fmt.lower() if isinstance(fmt, str) else fmt
            if name not in routing.all_formats:
                raise ConfigError(
                    f"destinations[{fmt!r}]: not one of the recorded formats "
                    f"({', '.join(routing.all_formats)})"
                )
            given[name] = where
    options = S3Options.coerce(storage_options) if storage_options is not None else None
    found: dict[str, Path | S3Location] = {}
    for fmt in routing.all_formats:
        where = given.get(fmt, output_dir)
        what = f"destinations[{fmt!r}]" if fmt in given else "output_dir"
        if not is_remote(where):
            found[fmt] = a.path(where, what)
            continue
        location = parse_location(where, None if isinstance(where, S3Location) else options)
        if not isinstance(location, S3Location):  # a file:// URL
            found[fmt] = location
            continue
        if not routing.writer_class(fmt).supports_object_storage:
            able = [f for f in available_writers() if get_writer_class(f).supports_object_storage]
            raise ConfigError(
                f"{what} {location.url}: {fmt} cannot write to object storage; the formats "
                f"that can: {', '.join(able)} (give {fmt} a local directory in destinations)"
            )
        found[fmt] = location
    if options is not None and not any(isinstance(w, S3Location) for w in found.values()):
        raise ConfigError(
            "storage_options apply to s3:// destinations, and neither output_dir nor "
            "destinations names one"
        )
    return found
