"""What a path holds: one output of a format, the rotated versions of one run, or a
Recorder's directory of several formats (and maybe several runs)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from daq_storage.errors import ConfigError, RunNotFound, describe_value
from daq_storage.location import S3Location
from daq_storage.read._discover_s3 import S3_FORMATS, s3_children, s3_output_format
from daq_storage.read._files import SUFFIXES, metadata_document

__all__ = ["FORMATS", "Output", "find_outputs"]

#: The formats this reader knows, by their writer names.
FORMATS = ("hdf5", "arrow", "parquet", "csv", "zarr", "tiff")
_HDF5 = (".h5", ".hdf5", ".he5")
_VERSION = re.compile(r"^(?P<base>.+)_v(?P<n>\d+)$")


@dataclass(frozen=True)
class Output:
    """One output: its path, format, run name (without ``_v{N}`` and suffix) and version
    (0 when its name has none)."""

    path: Path | S3Location
    format: str
    base: str
    version: int


def output_format(path: Path) -> str | None:
    """The format of the output at ``path``, or ``None`` when it is none."""
    if path.is_file():
        return "hdf5" if path.name.endswith(_HDF5) else None
    if not path.is_dir():
        return None
    if (path / "zarr.json").is_file():
        return "zarr"
    counts = dict.fromkeys(SUFFIXES, 0)
    for child in path.iterdir():
        if child.name.startswith(".") or not child.is_file():
            continue
        for name, suffixes in SUFFIXES.items():
            if child.name.endswith(suffixes) and not child.name.endswith(".frames.csv"):
                counts[name] += 1
    best = max(counts, key=lambda k: counts[k])
    if counts[best]:
        return best
    document = metadata_document(path)
    if "parts" in document or "columns" in document:
        return "csv"
    if document:
        return "metadata"  # a per-stream writer that stored no stream: metadata only
    return None


def _named(path: Path | S3Location, kind: str) -> Output:
    name = path.name
    if kind == "hdf5" and isinstance(path, Path):
        name = path.stem
    elif kind == "zarr" and name.endswith(".zarr"):
        name = name[: -len(".zarr")]
    match = _VERSION.match(name)
    if match:
        return Output(path, kind, match["base"], int(match["n"]))
    return Output(path, kind, name, 0)


def find_outputs(path: Path | S3Location, format: str | None, run: str | None) -> list[Output]:
    """The outputs to read for ``open_run(path, format=, run=)``, in version order.

    Raises:
        RunNotFound: nothing this project writes at ``path``.
        ConfigError: several formats or runs there and no choice made (the message lists
            them), or a bad ``format``.
    """
    if format is not None and format not in FORMATS:
        raise ConfigError(f"format must be one of {list(FORMATS)}, got {describe_value(format)}")
    if run is not None and not isinstance(run, str):
        raise ConfigError(f"run must be a run's base name (text), got {describe_value(run)}")
    if isinstance(path, S3Location):
        return _find_s3(path, format, run)
    kind = output_format(path)
    if kind is not None:
        if format is not None and kind not in (format, "metadata"):
            raise ConfigError(f"{path} is a {kind} output, not {format}")
        return [_named(path, format or kind)]
    if not path.exists():
        parent = path.parent
        if parent.is_dir():  # a run's base name: its rotated versions beside it
            found = [o for o in _children(parent) if o.base == path.name]
            if found:
                return _choose(parent, found, format, None)
        raise RunNotFound(f"no run at {path}: nothing there")
    if not path.is_dir():
        raise RunNotFound(f"no run at {path}: not a file or directory this project writes "
                          f"(HDF5 .h5, a Zarr store, a directory of stream files)")  # fmt: skip
    found = _children(path)
    if not found:
        raise RunNotFound(f"no run in {path}: no HDF5 file, Zarr store or directory of "
                          f"stream files there")  # fmt: skip
    return _choose(path, found, format, run)


def _children(directory: Path) -> list[Output]:
    found = []
    for child in sorted(directory.iterdir()):
        if child.name.startswith("."):
            continue
        kind = output_format(child)
        if kind is not None and kind != "metadata":
            found.append(_named(child, kind))
    return found


def _find_s3(where: S3Location, format: str | None, run: str | None) -> list[Output]:
    if format is not None and format not in S3_FORMATS:
        raise ConfigError(f"{format} outputs are local files (only {', '.join(S3_FORMATS)} "
                          f"are written to object storage): not at {where.url}")  # fmt: skip
    kind = s3_output_format(where)
    if kind is not None:
        if format is not None and kind != format:
            raise ConfigError(f"{where.url} is a {kind} output, not {format}")
        return [_named(where, kind)]
    found = [_named(child, k) for child, k in s3_children(where)]
    if found:
        return _choose(where, found, format, run)
    if where.key:  # a run's base name: its rotated versions beside it
        beside = [o for c, k in s3_children(where.parent) if (o := _named(c, k)).base == where.name]
        if beside:
            return _choose(where.parent, beside, format, None)
    raise RunNotFound(f"no run at {where.url}: no Zarr store or directory of Parquet or "
                      f"Arrow IPC stream files there")  # fmt: skip


def _choose(where: Path | S3Location, found: Sequence[Output], format: str | None,
            run: str | None) -> list[Output]:  # fmt: skip
    bases = sorted({o.base for o in found})
    if run is not None:
        found = [o for o in found if o.base == run]
        if not found:
            raise RunNotFound(f"no run {run!r} in {where}; the runs there are {bases}")
    elif len(bases) > 1:
        raise ConfigError(f"{where} holds several runs: {bases}; pick one with "
                          f"open_run(path, run=<name>) or open its file")  # fmt: skip
    formats = sorted({o.format for o in found})
    if format is not None:
        found = [o for o in found if o.format == format]
        if not found:
            raise RunNotFound(f"no {format} output of the run in {where}; its formats are "
                              f"{formats}")  # fmt: skip
    elif len(formats) > 1:
        raise ConfigError(f"{where} holds the run in several formats: {formats}; pick one "
                          f"with open_run(path, format=<name>)")  # fmt: skip
    return sorted(found, key=lambda o: (o.version, o.path.name))
