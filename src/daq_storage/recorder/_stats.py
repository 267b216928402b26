"""What a Recorder reports: frozen stats dataclasses and the cross-process stats file.

The stats file is JSON beside the ring (``<ring dir>/<ring name>.<consumer>.recorder.json``),
replaced atomically (temporary file + ``os.replace``), so a reader in any process sees a
whole snapshot or the previous one, never half of one.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from daq_storage.errors import DaqStorageError, InvalidName, describe_value
from daq_storage.naming import sanitize_name

__all__ = [
    "FormatStats",
    "LossGap",
    "RecorderFailed",
    "RecorderNotFound",
    "RecorderStats",
    "RecorderStatsCorrupt",
    "StreamStats",
    "list_stats",
    "read_stats",
    "stats_path",
    "write_stats",
]

_SUFFIX = ".recorder.json"


class RecorderNotFound(DaqStorageError, FileNotFoundError):
    """No stats file of that Recorder (it never ran on that ring, or the ring was removed)."""


class RecorderStatsCorrupt(DaqStorageError, ValueError):
    """A Recorder stats file that is not a stats snapshot."""


class RecorderFailed(DaqStorageError, RuntimeError):
    """The Recorder (its process or thread) failed: it stopped, or could not start, for a
    reason other than a DaqStorageError of its own (which is raised as it is)."""


@dataclass(frozen=True, slots=True)
class LossGap:
    """One run of records the ring overwrote before the Recorder read them."""

    first_seq: int
    last_seq: int
    count: int  # == last_seq - first_seq + 1
    after_ns: int  # timestamp_ns of the last record read before the gap (0: none)
    before_ns: int  # timestamp_ns of the first record read after it
    detected_ns: int  # wall clock (time.time_ns) when the Recorder saw it

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One stream as taken from the ring and routed."""

    stream: str
    kind: str  # "frames" | "table" | "raw"
    records: int = 0
    frames: int = 0
    rows: int = 0
    bytes_in: int = 0
    formats: tuple[str, ...] = ()
    refused: int = 0  # records refused (up-front check, frames of another dtype/shape)
    unroutable: int = 0  # records that could not reach every configured format
    last_timestamp_ns: int = 0


@dataclass(frozen=True, slots=True)
class FormatStats:
    """One format's sink."""

    format: str
    state: str = "idle"  # "idle" | "recording" | "failed" | "closed"
    error: str = ""
    files: tuple[str, ...] = ()
    current: str = ""
    rotations: int = 0
    flushes: int = 0
    frames: int = 0
    rows: int = 0
    visible_frames: int = 0
    visible_rows: int = 0
    bytes_on_disk: int = 0
    pending: int = 0
    lost_after_failure: int = 0
    durable_flushes: int = 0  # flushes made with fsync (durable=True)


@dataclass(frozen=True, slots=True)
class RecorderStats:
    """A snapshot of a Recorder: live (:attr:`Recorder.stats`, :func:`read_stats`) or final
    (returned by :meth:`Recorder.stop`)."""

    ring: str
    consumer: str
    pid: int = 0
    state: str = "starting"  # starting|running|stopping|stopped|failed|killed
    started_ns: int = 0
    updated_ns: int = 0
    records: int = 0
    frames: int = 0
    rows: int = 0
    bytes_in: int = 0
    bytes_on_disk: int = 0
    files: tuple[str, ...] = ()
    lag_records: int = 0
    lag_seconds: float = 0.0
    lost: int = 0
    gaps: tuple[LossGap, ...] = ()
    dropped: int = 0
    evicted: bool = False
    flushes: int = 0
    errors: tuple[str, ...] = ()
    streams: Mapping[str, StreamStats] = field(default_factory=dict)
    formats: Mapping[str, FormatStats] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Nothing lost, refused, unroutable or failed, no error, not killed."""
        return (
            self.lost == 0
            and not self.errors
            and not self.evicted
            and self.state not in ("killed", "failed")
            and all(f.state != "failed" and f.lost_after_failure == 0
                    for f in self.formats.values())
            and all(s.refused == 0 and s.unroutable == 0 for s in self.streams.values())
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["streams"] = {k: asdict(v) for k, v in self.streams.items()}
        data["formats"] = {k: asdict(v) for k, v in self.formats.items()}
        data["complete"] = self.complete  # for readers of the file; ignored by from_dict
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecorderStats:
        """The snapshot :meth:`to_dict` made (unknown keys are ignored, so an older reader
        reads a newer file)."""
        try:
            streams = {k: _build(StreamStats, v) for k, v in data.get("streams", {}).items()}
            formats = {k: _build(FormatStats, v) for k, v in data.get("formats", {}).items()}
            gaps = tuple(_build(LossGap, g) for g in data.get("gaps", ()))
            top = {k: v for k, v in data.items() if k not in ("streams", "formats", "gaps")}
            stats: RecorderStats = _build(cls, top, streams=streams, formats=formats, gaps=gaps)
        except (TypeError, AttributeError, ValueError) as exc:
            raise RecorderStatsCorrupt(f"not a Recorder stats snapshot: {exc}") from None
        return stats

    @classmethod
    def from_json(cls, text: str | bytes) -> RecorderStats:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise RecorderStatsCorrupt(f"Recorder stats are not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RecorderStatsCorrupt("Recorder stats are not a JSON object")
        return cls.from_dict(data)


def _build(cls: Any, data: Any, **given: Any) -> Any:
    """``cls`` from the JSON object ``data``: known fields only, lists back to tuples."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__} must be a JSON object, got {describe_value(data)}")
    names = cls.__dataclass_fields__
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    values.update(given)
    return cls(**values)


# ---------------------------------------------------------------------- the file
def stats_path(ring: str | os.PathLike[str], consumer: str = "recorder") -> Path:
    """Where the Recorder ``consumer`` of ``ring`` publishes its stats:
    ``<ring dir>/<ring name>.<consumer, sanitized>.recorder.json``.

    Raises:
        InvalidName: ``ring`` cannot name a file, or ``consumer`` has no usable character.
    """
    try:
        path = Path(ring)
    except TypeError:
        raise InvalidName(
            f"ring must be a str or os.PathLike, got {describe_value(ring)}"
        ) from None
    if "\x00" in str(path) or not path.name:
        raise InvalidName(f"ring {describe_value(str(path))} cannot name a file")
    name = sanitize_name(consumer, what="consumer name")
    return path.with_name(f"{path.name}.{name}{_SUFFIX}")


def write_stats(path: Path, stats: RecorderStats) -> None:
    """Replace ``path`` with ``stats`` atomically (a reader sees the old or the new)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_text(stats.to_json())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_stats_file(path: Path) -> RecorderStats:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecorderNotFound(f"no Recorder stats at {path}") from None
    except OSError as exc:
        raise RecorderNotFound(f"cannot read Recorder stats at {path}: {exc.strerror}") from None
    try:
        return RecorderStats.from_json(text)
    except RecorderStatsCorrupt as exc:
        raise RecorderStatsCorrupt(f"{path}: {exc}") from None


def read_stats(ring: str | os.PathLike[str], consumer: str = "recorder") -> RecorderStats:
    """The latest stats of the Recorder ``consumer`` of ``ring``, from any process.

    Raises:
        RecorderNotFound: no such Recorder has published stats there (a
            ``FileNotFoundError``).
        RecorderStatsCorrupt: the file is not a stats snapshot.
    """
    return read_stats_file(stats_path(ring, consumer))


def list_stats(ring: str | os.PathLike[str]) -> list[RecorderStats]:
    """The stats of every Recorder that published some for ``ring`` (by consumer name);
    files that vanish or do not parse meanwhile are skipped."""
    base = stats_path(ring, "x")
    prefix = f"{Path(ring).name}."
    try:
        names = sorted(p.name for p in base.parent.iterdir())
    except OSError:
        return []
    found = []
    for name in names:  # (not a glob: a ring's name may hold glob characters)
        if not (name.startswith(prefix) and name.endswith(_SUFFIX)):
            continue
        try:
            found.append(read_stats_file(base.parent / name))
        except (RecorderNotFound, RecorderStatsCorrupt):
            continue
    return sorted(found, key=lambda s: s.consumer)
