"""What the instruments produced: :class:`InstrumentCount`, :class:`AcquisitionResult`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from daq_storage.errors import ConfigError, describe_value

__all__ = [
    "CAMERA_STREAM",
    "DAQ_STREAM",
    "POWER_METER_STREAM",
    "STREAMS",
    "AcquisitionResult",
    "InstrumentCount",
    "format_counts",
]

CAMERA_STREAM = "camera_1"
POWER_METER_STREAM = "power_meter_01"
DAQ_STREAM = "daq_card"
#: Every stream, in the order results list them.
STREAMS = (CAMERA_STREAM, POWER_METER_STREAM, DAQ_STREAM)
_FIELDS = ("produced", "records", "dropped", "dropped_records", "bytes")
_KINDS = {CAMERA_STREAM: "frames", POWER_METER_STREAM: "table", DAQ_STREAM: "table"}


@dataclass(frozen=True, slots=True)
class InstrumentCount:
    """What one instrument produced. ``produced``, ``dropped`` count frames (frame
    streams) or rows (tables); ``records`` and ``dropped_records`` count ring records."""

    stream: str
    kind: str  # "frames" | "table"
    produced: int
    records: int  # ring records written (accepted by the ring)
    dropped: int  # frames or rows the ring refused (RingFull, block mode)
    dropped_records: int
    bytes: int  # payload bytes offered (pixels; Arrow buffers of each batch)
    seqs: tuple[int, ...] = ()  # ring seq of every record written (only with log_seqs)

    @property
    def written(self) -> int:
        """Frames or rows the ring accepted: ``produced - dropped``."""
        return self.produced - self.dropped


@dataclass(frozen=True, slots=True)
class AcquisitionResult:
    """Per stream what the instruments produced, and how long they ran (wall seconds
    from attaching to the ring to the last write)."""

    streams: Mapping[str, InstrumentCount]
    seconds: float

    @property
    def dropped(self) -> int:
        """Frames and rows the ring refused, all streams together (0: nothing dropped)."""
        return sum(c.dropped for c in self.streams.values())

    @property
    def records(self) -> int:
        """Ring records written, all streams together."""
        return sum(c.records for c in self.streams.values())

    @property
    def bytes(self) -> int:
        """Payload bytes offered, all streams together."""
        return sum(c.bytes for c in self.streams.values())

    def to_json(self) -> str:
        """The result as JSON (``from_json`` reads it back)."""
        streams = {name: {**asdict(c), "seqs": list(c.seqs)} for name, c in self.streams.items()}
        return json.dumps({"streams": streams, "seconds": self.seconds})

    @classmethod
    def from_json(cls, text: str) -> AcquisitionResult:
        """Read what :meth:`to_json` wrote.

        Raises:
            ConfigError: ``text`` is not such a JSON document.
        """
        try:
            data = json.loads(text)
            streams = {}
            for name, fields in data["streams"].items():
                count = InstrumentCount(**{**fields, "seqs": tuple(fields.get("seqs") or ())})
                numbers = [getattr(count, f) for f in _FIELDS] + list(count.seqs)
                if count.stream != name or not all(type(n) is int for n in numbers):
                    raise ValueError(name)
                streams[name] = count
            return cls(streams, float(data["seconds"]))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ConfigError(
                f"not an acquisition result: {describe_value(text)} ({type(exc).__name__}: {exc})"
            ) from None


def format_counts(result: AcquisitionResult) -> str:
    """A table of what each instrument produced, written and dropped (the CLI's)."""
    rows = [("stream", "kind", "produced", "records", "dropped", "MB", "per s")]
    seconds = result.seconds
    for c in result.streams.values():
        rate = f"{c.produced / seconds:,.0f}" if seconds > 0 else "-"
        rows.append((c.stream, c.kind, f"{c.produced:,}", f"{c.records:,}", f"{c.dropped:,}",
                     f"{c.bytes / 1e6:,.1f}", rate))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            v.ljust(w) if i < 2 else v.rjust(w)
            for i, (v, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.append(f"{result.seconds:.2f} s, {result.bytes / 1e6:,.1f} MB offered, "
                 f"{result.dropped:,} frames/rows dropped")  # fmt: skip
    return "\n".join(lines)


def _count_of(
    stream: str, values: list[int], seqs: list[int] | tuple[int, ...] = ()
) -> InstrumentCount:
    produced, records, dropped, dropped_records, nbytes = values
    return InstrumentCount(stream, _KINDS[stream], produced, records, dropped, dropped_records,
                           nbytes, tuple(seqs))  # fmt: skip
