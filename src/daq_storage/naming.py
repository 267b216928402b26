"""File names: ``{experiment}_{YYYY-MM-DD}_{HH-MM-SS}_v{N}.{ext}`` (seed 001).

A run that is a directory of files (one per stream) has no extension:
``{experiment}_{YYYY-MM-DD}_{HH-MM-SS}_v{N}/``, so that nobody mistakes it for one file.
A new file never overwrites an old one: :func:`claim_path` takes the next free version
number and creates the file (or directory) atomically, so two recorders
started in the same second get ``_v1`` and ``_v2``. Names coming from users or
instruments pass through :func:`sanitize_name` first.
"""

from __future__ import annotations

import errno
import os
import re
import unicodedata
from datetime import datetime
from pathlib import Path

from daq_storage.errors import InvalidName, StorageIOError

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
    """
    if not isinstance(name, str):
        raise InvalidName(f"{what} must be a string, got {type(name).__name__} {name!r}")
    if "\x00" in name:
        raise InvalidName(f"{what} {name!r} contains a NUL character")
    text = unicodedata.normalize("NFKC", name)
    text = _UNSAFE.sub("_", text)
    text = _DOTS.sub(".", text)
    text = _UNDERSCORES.sub("_", text).strip("._")
    text = text[:max_length].rstrip("._")
    if not text:
        raise InvalidName(f"{what} {name!r} has no usable characters (letters, digits, _ - .)")
    if text.split(".")[0].upper() in _RESERVED:
        text += "_"
    return text


def _extension(ext: str) -> str:
    if ext == "":
        return ""  # a directory
    ext = ext.removeprefix(".")
    if not _EXTENSION.match(ext) or ".." in ext or ext.endswith("."):
        raise InvalidName(f"file extension {ext!r} is not safe (letters, digits and dots only)")
    return ext


def format_filename(experiment: str, when: datetime, version: int, ext: str) -> str:
    """The file name for ``experiment`` at ``when``, version ``version`` (from 1); an
    empty ``ext`` names a directory (no extension)."""
    if version < 1:
        raise InvalidName(f"version must be >= 1, got {version}")
    stem = sanitize_name(experiment, what="experiment name")
    ext = _extension(ext)
    return f"{stem}_{when:%Y-%m-%d}_{when:%H-%M-%S}_v{version}" + (f".{ext}" if ext else "")


def next_path(
    output_dir: str | os.PathLike[str], experiment: str, ext: str, *, when: datetime | None = None
) -> Path:
    """The first ``_v{N}`` path in ``output_dir`` that does not exist yet (nothing is created).

    Prefer :func:`claim_path` when the file will be created: it is race-free.
    """
    when = datetime.now() if when is None else when
    directory = Path(output_dir)
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
        InvalidName: the experiment name or extension cannot be made safe.
        StorageIOError: ``output_dir`` cannot be created or written.
    """
    when = datetime.now() if when is None else when
    folder = Path(output_dir)
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
