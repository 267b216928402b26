"""File names: ``{experiment}_{YYYY-MM-DD}_{HH-MM-SS}_v{N}.{ext}`` (seed 001).

A run that is a directory of files (one per stream) has no extension:
``{experiment}_{YYYY-MM-DD}_{HH-MM-SS}_v{N}/``, so that nobody mistakes it for one file.
A new file never overwrites an old one: :func:`claim_path` takes the next free version
number and creates the file (or directory) atomically, so two recorders
started in the same second get ``_v1`` and ``_v2``. Names coming from users or
instruments pass through :func:`sanitize_name` first.
"""

from __future__ import annotations

import contextlib
import errno
import operator
import os
import re
import unicodedata
from datetime import datetime
from pathlib import Path

from daq_storage.errors import ConfigError, InvalidName, StorageIOError, describe_value

__all__ = ["MAX_NAME_LENGTH", "claim_path", "format_filename", "next_path", "sanitize_name"]

#: Longest sanitised name; leaves room for the date, version and suffix under 255 bytes.
MAX_NAME_LENGTH = 100

_UNSAFE = re.compile(r"[^\w.\-]+")
_DOTS = re.compile(r"\.{2,}")
_UNDERSCORES = re.compile(r"_{2,}")
_EXTENSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.]{0,15}$")
# Device names that Windows refuses as file names, whatever the extension.
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
_MAX_VERSIONS = 100_000


def sanitize_name(name: str, *, what: str = "name", max_length: int = MAX_NAME_LENGTH) -> str:
    """Make ``name`` safe as one path component on any OS.

    Letters, digits, ``_``, ``-`` and single dots are kept; every other run of
    characters (path separators, control characters, spaces, ``:``, ...) becomes ``_``;
    ``..`` becomes ``.``; leading and trailing dots are removed; Windows device names
    get a trailing ``_``; the result is cut to ``max_length`` characters.

    Raises:
        InvalidName: ``name`` is not a string, contains NUL, or has nothing usable left.
        ConfigError: ``max_length`` is not an integer >= 1, or ``what`` not a string.
    """
    if not isinstance(what, str):
        raise ConfigError(f"what must be a string (a label), got {describe_value(what)}")
    if not isinstance(name, str):
        raise InvalidName(
            f"{what} must be a string, got {type(name).__name__} {describe_value(name)}"
        )
    max_length = _whole(max_length, "max_length", 1)
    if "\x00" in name:
        raise InvalidName(f"{what} {describe_value(name)} contains a NUL character")
    text = unicodedata.normalize("NFKC", name)
    text = _UNSAFE.sub("_", text)
    text = _DOTS.sub(".", text)
    text = _UNDERSCORES.sub("_", text).strip("._")
    text = text[:max_length].rstrip("._")
    if not text:
        raise InvalidName(
            f"{what} {describe_value(name)} has no usable characters (letters, digits, _ - .)"
        )
    if text.split(".")[0].upper() in _RESERVED:
        text += "_"
    return text


def _whole(value: object, name: str, low: int, high: int | None = None) -> int:
    """An int (not a bool) in ``low..high``, else a ConfigError saying so."""
    number: int | None = None
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError):
            number = operator.index(value)  # type: ignore[arg-type]
    if number is None or number < low or (high is not None and number > high):
        accepted = f">= {low}" if high is None else f"in {low}..{high}"
        raise ConfigError(f"{name} must be an integer {accepted}, got {describe_value(value)}")
    return number


def _extension(ext: object) -> str:
    if not isinstance(ext, str):
        raise InvalidName(f"a file extension must be a string, got {describe_value(ext)}")
    if ext == "":
        return ""  # a directory
    ext = ext.removeprefix(".")
    if not _EXTENSION.match(ext) or ".." in ext or ext.endswith("."):
        raise InvalidName(
            f"file extension {describe_value(ext)} is not safe (letters, digits and dots only)"
        )
    return ext


def _when(when: object) -> datetime:
    if when is None:
        return datetime.now()
    if not isinstance(when, datetime):
        raise ConfigError(f"when must be a datetime or None, got {describe_value(when)}")
    return when


def _folder(output_dir: object) -> Path:
    """``output_dir`` as a Path, or InvalidName for what cannot name a directory."""
    try:
        folder = Path(output_dir)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidName(
            f"output directory must be a str or os.PathLike, got {describe_value(output_dir)}"
        ) from None
    if "\x00" in str(folder):
        raise InvalidName(f"output directory {describe_value(str(folder))} contains NUL")
    return folder


def format_filename(experiment: str, when: datetime, version: int, ext: str) -> str:
    """The file name for ``experiment`` at ``when``, version ``version`` (from 1); an
    empty ``ext`` names a directory (no extension).

    Raises:
        InvalidName: the experiment name or extension cannot be made safe.
        ConfigError: ``version`` is not an integer in 1..99999, or ``when`` is not a
            datetime.
    """
    version = _whole(version, "version", 1, _MAX_VERSIONS - 1)
    when = _when(when)
    stem = sanitize_name(experiment, what="experiment name")
    ext = _extension(ext)
    return f"{stem}_{when:%Y-%m-%d}_{when:%H-%M-%S}_v{version}" + (f".{ext}" if ext else "")


def next_path(
    output_dir: str | os.PathLike[str], experiment: str, ext: str, *, when: datetime | None = None
) -> Path:
    """The first ``_v{N}`` path in ``output_dir`` that does not exist yet (nothing is created).

    Prefer :func:`claim_path` when the file will be created: it is race-free.

    Raises:
        InvalidName, ConfigError: as for :func:`claim_path`.
    """
    when = _when(when)
    directory = _folder(output_dir)
    for version in range(1, _MAX_VERSIONS):
        candidate = directory / format_filename(experiment, when, version, ext)
        if not os.path.lexists(candidate):
            return candidate
    raise StorageIOError(
        errno.EEXIST, f"no free version number below {_MAX_VERSIONS}", str(directory)
    )


def claim_path(
    output_dir: str | os.PathLike[str],
    experiment: str,
    ext: str,
    *,
    when: datetime | None = None,
    directory: bool = False,
) -> Path:
    """Create the next free ``{experiment}_{date}_{time}_v{N}.{ext}`` and return its path.

    The file is created empty with ``O_EXCL`` (or the directory with ``mkdir``; ``ext``
    may then be empty), so a
    concurrent claim of the same name gets the next version instead. ``output_dir`` is
    created if missing.

    Raises:
        InvalidName: the experiment name or extension cannot be made safe, or
            ``output_dir`` cannot name a directory.
        ConfigError: ``when`` is not a datetime, or ``directory`` not a bool.
        StorageIOError: ``output_dir`` cannot be created or written.
    """
    when = _when(when)
    folder = _folder(output_dir)
    if not isinstance(directory, bool):
        raise ConfigError(f"directory must be True or False, got {describe_value(directory)}")
    format_filename(experiment, when, 1, ext)  # a bad name or extension: before mkdir
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageIOError(
            exc.errno, f"cannot create output directory: {exc.strerror}", str(folder)
        ) from exc
    for version in range(1, _MAX_VERSIONS):
        candidate = folder / format_filename(experiment, when, version, ext)
        try:
            if directory:
                candidate.mkdir()
            else:
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            continue
        except OSError as exc:
            raise StorageIOError(
                exc.errno, f"cannot create output file: {exc.strerror}", str(candidate)
            ) from exc
        return candidate
    raise StorageIOError(errno.EEXIST, f"no free version number below {_MAX_VERSIONS}", str(folder))
