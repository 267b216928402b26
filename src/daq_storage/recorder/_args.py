"""The Recorder's arguments, checked up front: a ConfigError names the argument."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daq_storage.errors import ConfigError, InvalidName, describe_value
from daq_storage.naming import sanitize_name

__all__ = ["RESERVED_METADATA", "choice", "consumer_name", "integer", "metadata", "number", "path"]

#: Keys the Recorder sets itself in every file: refused in ``metadata=``.
RESERVED_METADATA = ("recorder", "loss_ledger", "lost_records")


def number(value: object, name: str, *, low: float, inclusive: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    number = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not ok or not math.isfinite(number) or number < low or (not inclusive and number == low):
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise ConfigError(f"{name} must be a finite number {bound}, got {describe_value(value)}")
    return number


def integer(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {describe_value(value)}")
    return value


def choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            f"{name} must be one of {', '.join(map(repr, choices))}, got {describe_value(value)}"
        )
    return value


def consumer_name(value: object) -> str:
    if (
        not isinstance(value, str)
        or not value
        or not value.isprintable()
        or len(value.encode("utf-8", "surrogatepass")) > 64
    ):
        raise ConfigError(
            f"consumer must be a printable name of 1..64 UTF-8 bytes, got {describe_value(value)}"
        )
    try:
        value.encode()
        sanitize_name(value, what="consumer name")
    except (UnicodeEncodeError, InvalidName) as exc:
        raise ConfigError(f"consumer {describe_value(value)}: {exc}") from None
    return value


def path(value: object, name: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{name} must be a str or os.PathLike, got {describe_value(value)}")
    path = Path(value)
    if "\x00" in str(path) or not str(path):
        raise ConfigError(f"{name} {describe_value(str(path))} cannot name a path")
    return path


def metadata(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"metadata must be a mapping, got {describe_value(value)}")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"metadata: key {describe_value(key)} is not a non-empty string")
        if key in RESERVED_METADATA:
            raise ConfigError(f"metadata: key {key!r} is set by the Recorder itself")
        out[key] = item
    return out
