"""A channel of a multi-channel stream (seed 001's ``ChannelConfig``): its place on the
card, its name and the input range its 16-bit counts span.

A card's ADC codes a channel's input range ``[min_value, max_value]`` in 65,536 steps
of signed 16-bit counts; a count stands for

    volts = counts * scale_factor + add_offset
    scale_factor = (max_value - min_value) / 65536
    add_offset = (max_value + min_value) / 2

(count -32768 is ``min_value``, 0 the middle of the range, 32767 one step short of
``max_value``: the convention of NI and Comedi bipolar ranges, and of
:class:`~daq_storage.sim.SimulatedDaqCard`). ``scale_factor`` and ``add_offset`` are the
CF attribute names: xarray and netCDF tools apply them when they read the counts.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from daq_storage.errors import ConfigError, InvalidName, describe_value
from daq_storage.naming import sanitize_name

__all__ = ["COUNT_MAX", "COUNT_MIN", "RESERVED_COLUMNS", "ChannelConfig", "check_channels"]

COUNT_MIN = -32768
COUNT_MAX = 32767
_STEPS = 65536
#: Columns of ``/data`` that are no channel's.
RESERVED_COLUMNS = frozenset({"timestamps", "sample_index"})


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """One analog input.

    Args:
        index: the channel's number on the card (an int >= 0; unique in a writer); the
            writer takes the block's columns in the order of its ``channels`` list.
        name: the channel's name: the name of its dataset (``/data/<name>``) and column;
            letters, digits, ``_``, ``-`` and inner dots.
        min_value: the low end of the input range (in ``unit``).
        max_value: the high end; above ``min_value``.
        unit: what the converted values are in (CF ``units``; default ``"V"``).

    Raises:
        ConfigError: an index that is no int >= 0, a range that is not two finite
            numbers with ``min_value < max_value``, a unit that is no text.
        InvalidName: a name that is not safe as it is, or one of the reserved columns
            ``timestamps`` and ``sample_index``.
    """

    index: int
    name: str
    min_value: float
    max_value: float
    unit: str = "V"

    def __post_init__(self) -> None:
        index: int | None = None
        if not isinstance(self.index, bool):
            try:
                index = operator.index(self.index)
            except TypeError:
                index = None
        if index is None or index < 0:
            raise ConfigError(f"channel {self.name!r}: index must be an int >= 0, got "
                              f"{describe_value(self.index)}")  # fmt: skip
        object.__setattr__(self, "index", index)
        if not isinstance(self.name, str):
            raise InvalidName(f"channel {index}: name must be a str, got "
                              f"{describe_value(self.name)}")  # fmt: skip
        safe = sanitize_name(self.name, what=f"channel {index} name")
        if safe != self.name or self.name.startswith("_"):
            raise InvalidName(
                f"channel {index}: name {self.name!r} is not a safe dataset name (letters, "
                f"digits, _ - and inner dots; no leading _); use {safe.lstrip('_')!r} for "
                "instance"
            )
        if self.name in RESERVED_COLUMNS:
            raise InvalidName(f"channel {index}: name {self.name!r} is a column of the stream "
                              f"itself ({sorted(RESERVED_COLUMNS)}); choose another")  # fmt: skip
        low, high = (
            _real(self.min_value, self, "min_value"),
            _real(self.max_value, self, "max_value"),
        )
        if not low < high:
            raise ConfigError(f"channel {self.name!r}: range min_value {low!r} must be below "
                              f"max_value {high!r}")  # fmt: skip
        object.__setattr__(self, "min_value", low)
        object.__setattr__(self, "max_value", high)
        if not isinstance(self.unit, str) or not self.unit or "\x00" in self.unit:
            raise ConfigError(f"channel {self.name!r}: unit must be non-empty text, got "
                              f"{describe_value(self.unit)}")  # fmt: skip

    @property
    def scale_factor(self) -> float:
        """``unit`` per count: ``(max_value - min_value) / 65536``."""
        return (self.max_value - self.min_value) / _STEPS

    @property
    def add_offset(self) -> float:
        """The value of count 0: ``(max_value + min_value) / 2``."""
        return (self.max_value + self.min_value) / 2

    def describe(self) -> dict[str, Any]:
        """The channel as plain values (what the files' ``channels`` metadata holds)."""
        return {"index": self.index, "name": self.name, "min_value": self.min_value,
                "max_value": self.max_value, "unit": self.unit,
                "scale_factor": self.scale_factor, "add_offset": self.add_offset}  # fmt: skip


def _real(value: object, channel: ChannelConfig, what: str) -> float:
    if not isinstance(value, bool):
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            number = math.nan
        if math.isfinite(number):
            return number
    raise ConfigError(f"channel {channel.name!r}: {what} must be a finite number, got "
                      f"{describe_value(value)}")  # fmt: skip


def check_channels(channels: Iterable[ChannelConfig] | None) -> tuple[ChannelConfig, ...]:
    """``channels`` as a tuple: at least one, each a :class:`ChannelConfig`, no two with
    one name or one index.

    Raises:
        ConfigError: no channel, an item that is no ChannelConfig, two with one index.
        InvalidName: two channels with one name.
    """
    if channels is None or isinstance(channels, str | bytes | ChannelConfig):
        raise ConfigError(f"channels must be a list of ChannelConfig, got "
                          f"{describe_value(channels)}")  # fmt: skip
    try:
        found: Sequence[Any] = tuple(channels)
    except TypeError:
        raise ConfigError(f"channels must be a list of ChannelConfig, got "
                          f"{describe_value(channels)}") from None  # fmt: skip
    if not found:
        raise ConfigError("channels must list at least one ChannelConfig, got none")
    names: dict[str, int] = {}
    indices: dict[int, str] = {}
    for channel in found:
        if not isinstance(channel, ChannelConfig):
            raise ConfigError(f"channels must be ChannelConfig items, got "
                              f"{describe_value(channel)}")  # fmt: skip
        if channel.name in names:
            raise InvalidName(f"channel name {channel.name!r} is given twice (channels "
                              f"{names[channel.name]} and {channel.index})")  # fmt: skip
        if channel.index in indices:
            raise ConfigError(f"channel index {channel.index} is given twice (channels "
                              f"{indices[channel.index]!r} and {channel.name!r})")  # fmt: skip
        names[channel.name] = channel.index
        indices[channel.index] = channel.name
    return tuple(found)
