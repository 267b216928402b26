"""What a writer promises besides storing: its options, its counters, and where each
stream lives (what a bluesky ``StreamResource`` needs)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from daq_storage.errors import InvalidName, SchemaMismatch, UnsupportedData
from daq_storage.location import S3Location
from daq_storage.schema import CHANGE_KINDS, EVOLUTIONS, SchemaChange

if TYPE_CHECKING:
    from daq_storage.writers._base import Writer

__all__ = [
    "EVOLUTION_ATTRIBUTES",
    "StatsCounters",
    "check_all",
    "check_capabilities",
    "StreamDescription",
    "StreamPart",
    "WriterOptions",
    "WriterStats",
]


class WriterOptions(BaseModel):
    """A writer's options, validated once (frozen; an unknown option is refused).

    Each writer subclasses it as ``Options``; its fields are the writer's keyword
    arguments, and the ``[storage]`` config keys a writer takes map onto them through the
    writer's ``config_keys``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


@dataclass(frozen=True, slots=True)
class WriterStats:
    """What a writer has done, as of the moment it was taken (a snapshot: later writes
    do not change it)."""

    batches: int = 0
    rows: int = 0
    frames: int = 0
    #: Payload bytes handed to the format (before compression).
    bytes_written: int = 0
    #: Bytes of the output on disk: each file's size, plus what the writer counted as
    #: written into its directories (no directory is walked).
    file_size: int = 0
    files: tuple[Path, ...] = ()


@dataclass(slots=True)
class StatsCounters:
    """A writer's running counters (mutable; :attr:`Writer.stats` hands out snapshots)."""

    batches: int = 0
    rows: int = 0
    frames: int = 0
    bytes_written: int = 0
    #: Bytes written into directory outputs (a Zarr store's chunk and metadata files),
    #: counted as they are written.
    directory_bytes: int = 0
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StreamPart:
    """One part of a stream: a file, or a dataset / array / group within one.

    A stream continues in a new part when its schema changes in a way the format cannot
    evolve in place; ``first`` is the stream's index (row or frame) where the part starts.
    """

    path: Path | S3Location  # a file or store, or an object-store prefix
    key: str  # the dataset / array / group in ``path``; "" when the file is the part
    first: int

    @property
    def uri(self) -> str:
        """``file://`` URI of the part's file, or its ``s3://`` URL."""
        return _uri(self.path)


def _uri(path: Path | S3Location) -> str:
    return path.url if isinstance(path, S3Location) else path.absolute().as_uri()


@dataclass(frozen=True, slots=True)
class StreamDescription:
    """Where a stream lives and how it is laid out: enough for a bluesky
    ``StreamResource`` (``uri``, ``mimetype``, ``parameters``) and for a reader.

    For frames ``dtype``/``shape`` describe one frame and ``chunk_shape`` starts with
    the frames per chunk; for tables ``columns`` maps each column (``parent.child`` for
    struct fields) to its Arrow type and ``chunk_shape`` is ``(rows per chunk,)`` where
    the format chunks rows.
    """

    stream: str
    kind: Literal["table", "frames"]
    format: str  # the writer's registry name
    mimetype: str
    #: The first part's file or store; on object storage the stream's prefix (a dataset
    #: of part objects) or the store's.
    path: Path | S3Location
    key: str  # the first part's dataset / array / group; "" when the file is the part
    parts: tuple[StreamPart, ...]
    visible: int
    accepted: int
    dtype: str | None = None
    shape: tuple[int, ...] = ()
    chunk_shape: tuple[int, ...] = ()
    compression: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    #: Further keys of the stream in ``path``: ``timestamps_ns``, ``frame_numbers``, ...
    extra_keys: Mapping[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """``file://`` URI of the first part's file, or its ``s3://`` URL."""
        return _uri(self.path)

    def stream_resource(self) -> dict[str, Any]:
        """The fields of a bluesky ``StreamResource`` document for this stream (without
        ``uid``, ``data_key`` and ``run_start``, which the documents layer assigns)."""
        parameters: dict[str, Any] = {"chunk_shape": list(self.chunk_shape)}
        if self.key:
            parameters["dataset"] = self.key
        if self.compression is not None:
            parameters["compression"] = self.compression
        if len(self.parts) > 1:
            parameters["parts"] = [
                {"uri": part.uri, "key": part.key, "first": part.first} for part in self.parts
            ]
        return {"uri": self.uri, "mimetype": self.mimetype, "parameters": parameters}


#: The capability class attributes of a table writer: what it does with each kind of
#: schema change (see :func:`daq_storage.schema.classify_change`).
EVOLUTION_ATTRIBUTES = {kind: f"on_{kind}" for kind in CHANGE_KINDS}


def check_all(writers: Iterable[Writer], stream: str, batch: Any) -> SchemaChange:
    """Ask every writer whether it would store ``batch`` in ``stream`` (nothing is
    written): the batch is then accepted by all of them, or refused before any stores
    it. Returns the change the batch makes (the same for every writer that has seen
    the same batches).

    Raises:
        SchemaMismatch, UnsupportedData, InvalidName: the first writer's refusal, naming
            the writer.
    """
    change = SchemaChange()
    for writer in writers:
        try:
            change = writer.check_batch(stream, batch)
        except (SchemaMismatch, UnsupportedData, InvalidName) as exc:
            exc.add_note(f"refused by the {writer.name} writer of {writer.path}")
            raise
    return change


def check_capabilities(cls: type[Writer]) -> None:
    """A registering writer declares its whole contract: a plug-in that forgets part of
    it fails when its module is imported, not in the middle of a run."""
    missing = [a for a in ("suffixes", "supports_frames", "supports_tables", "mimetype")
               if not hasattr(cls, a)]  # fmt: skip
    if getattr(cls, "supports_tables", False):
        for attribute in EVOLUTION_ATTRIBUTES.values():
            value = getattr(cls, attribute, None)
            if value is None:
                missing.append(attribute)
            elif value not in EVOLUTIONS:
                raise TypeError(
                    f"writer {cls.__qualname__}: {attribute} = {value!r} is not one of {EVOLUTIONS}"
                )
    if missing:
        raise TypeError(
            f"writer {cls.__qualname__} (name {cls.__dict__['name']!r}) must declare "
            + ", ".join(missing)
        )
    if not (isinstance(cls.Options, type) and issubclass(cls.Options, WriterOptions)):
        raise TypeError(f"writer {cls.__qualname__}: Options must subclass WriterOptions")
    parameters = [
        p.name
        for p in list(inspect.signature(cls.__init__).parameters.values())[2:]
        if p.kind is p.KEYWORD_ONLY
    ]
    fields = list(cls.Options.model_fields)
    if cls.Options is not WriterOptions and sorted(parameters) != sorted(fields):
        raise TypeError(
            f"writer {cls.__qualname__}: Options fields {fields} differ from the "
            f"keyword arguments {parameters}"
        )
