"""Which formats each stream goes to.

``formats`` routing sends every stream to those of the formats that can hold its kind
(tables to formats with ``supports_tables``, frames to those with ``supports_frames``);
``streams`` routing names a stream's formats, and a listed format that cannot hold the
stream's kind is an error, reported when the stream's first record arrives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from daq_storage.errors import ConfigError, describe_value
from daq_storage.writers import Writer, get_writer_class

__all__ = ["Route", "Routing", "format_names"]

#: Ring record kind -> the stats kind and the writer capability it needs.
_KINDS = {"frame": ("frames", "supports_frames"), "arrow": ("table", "supports_tables")}


@dataclass(frozen=True, slots=True)
class Route:
    """Where one stream goes."""

    stream: str
    kind: str  # "frames" | "table" | "raw"
    formats: tuple[str, ...]  # the formats that get its records
    #: Why a record of the stream cannot reach every format it is meant for ("" if it
    #: can); its records are then counted ``unroutable``.
    error: str = ""


def format_names(value: object, what: str) -> tuple[str, ...]:
    """A sequence of known, distinct format names (lower case), else ConfigError."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"{what} must be a list of format names, got {describe_value(value)}")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(f"{what}: a format name must be a string, got {describe_value(item)}")
        name = get_writer_class(item).name  # ConfigError naming the unknown writer
        if name in names:
            raise ConfigError(f"{what}: format {item!r} is listed twice")
        names.append(name)
    if not names:
        raise ConfigError(f"{what} must name at least one format")
    return tuple(names)


class Routing:
    """Routes streams by kind to formats; built once, from validated arguments."""

    def __init__(
        self, formats: Sequence[str], streams: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.formats = format_names(formats, "formats")
        given: Mapping[str, Sequence[str]] = streams or {}
        if not isinstance(given, Mapping):
            raise ConfigError(
                f"streams must map stream names to lists of formats, got {describe_value(given)}"
            )
        self.streams: dict[str, tuple[str, ...]] = {}
        for stream, names in given.items():
            if not isinstance(stream, str) or not stream:
                raise ConfigError(f"streams: {describe_value(stream)} is not a stream name")
            self.streams[stream] = format_names(names, f"streams[{stream!r}]")
        #: Every format some stream may go to, in first-named order.
        self.all_formats = tuple(
            dict.fromkeys([*self.formats, *(f for fs in self.streams.values() for f in fs)])
        )
        self._classes: dict[str, type[Writer]] = {f: get_writer_class(f) for f in self.all_formats}

    def writer_class(self, fmt: str) -> type[Writer]:
        return self._classes[fmt]

    def route(self, stream: str, record_kind: str) -> Route:
        """The route of ``stream`` whose first record is of ring kind ``record_kind``."""
        kind, capability = _KINDS.get(record_kind, ("raw", ""))
        explicit = stream in self.streams
        wanted = self.streams[stream] if explicit else self.formats
        able = tuple(f for f in wanted if capability and getattr(self._classes[f], capability))
        if not capability:
            return Route(
                stream,
                kind,
                (),
                f"stream {stream!r}: {record_kind!r} records "
                "have no format to go to (only frames and Arrow tables are recorded)",
            )
        what = "frames" if kind == "frames" else "tables"
        if not able:
            return Route(
                stream,
                kind,
                (),
                f"stream {stream!r}: none of its formats ({', '.join(wanted)}) can hold {what}",
            )
        if explicit and len(able) < len(wanted):
            missing = [f for f in wanted if f not in able]
            return Route(
                stream,
                kind,
                able,
                f"stream {stream!r}: format(s) "
                f"{', '.join(missing)} cannot hold {what}; recorded in "
                f"{', '.join(able)} only",
            )
        return Route(stream, kind, able)
