"""What runs a directory holds: each run's name and its outputs, format by format."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daq_storage.errors import ConfigError, RunNotFound, describe_value
from daq_storage.location import S3Location, S3Options, is_remote, parse_location
from daq_storage.read._discover import Output, _children, _named, output_format
from daq_storage.read._discover_s3 import s3_children, s3_output_format

__all__ = ["RunListing", "list_runs"]


@dataclass(frozen=True)
class RunListing:
    """One run found in a directory.

    Attributes:
        name: the run's name, without ``_v{N}`` and suffix (``open_run(directory,
            run=name)``).
        outputs: format -> its outputs in version order (a run rotated into
            ``_v1``, ``_v2``, ..., or kept in several formats, each under its own version).
    """

    name: str
    outputs: Mapping[str, tuple[Path | S3Location, ...]]

    @property
    def formats(self) -> tuple[str, ...]:
        """The formats the run was written in (``open_run(..., format=)``)."""
        return tuple(self.outputs)


def list_runs(
    directory: str | os.PathLike[str] | S3Location,
    *,
    storage_options: S3Options | Mapping[str, Any] | None = None,
) -> list[RunListing]:
    """The runs in ``directory`` (a Recorder's, a document writer's, any folder of
    outputs, an ``s3://bucket/prefix`` reached with ``storage_options``), by name; an
    output path itself gives its one run.

    Raises:
        RunNotFound: ``directory`` does not exist.
        ConfigError: ``directory`` is not a path or URL.
        StorageIOError: the bucket cannot be listed (named, with the cause).
    """
    if not isinstance(directory, str | os.PathLike | S3Location):
        raise ConfigError(f"directory must be a path, got {describe_value(directory)}")
    if is_remote(directory):
        found = _s3_outputs(directory, storage_options)
    else:
        found = _local_outputs(parse_location(directory, storage_options))
    runs: dict[str, dict[str, list[Output]]] = {}
    for output in found:
        runs.setdefault(output.base, {}).setdefault(output.format, []).append(output)
    listings = []
    for name, formats in sorted(runs.items()):
        outputs = {fmt: tuple(o.path for o in sorted(outs, key=lambda o: o.version))
                   for fmt, outs in sorted(formats.items())}  # fmt: skip
        listings.append(RunListing(name, outputs))
    return listings


def _s3_outputs(
    url: str | os.PathLike[str] | S3Location, options: S3Options | Mapping[str, Any] | None
) -> list[Output]:
    where = parse_location(url, options)
    assert isinstance(where, S3Location)
    kind = s3_output_format(where)
    if kind is not None:
        return [_named(where, kind)]
    return [_named(child, k) for child, k in s3_children(where)]


def _local_outputs(where: Path | S3Location) -> list[Output]:
    assert isinstance(where, Path)
    kind = output_format(where)
    if kind is not None and kind != "metadata":
        found = [_named(where, kind)]
    elif where.is_dir():
        found = _children(where)
    else:
        raise RunNotFound(f"no runs at {where}: not a directory or an output of this project")
    return found
