"""The section models (``[storage]``, ``[ring_buffer]``, ``[recorder]``), their
validators and the names they accept."""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from daq_storage.config._paths import _safe_name, default_ring_dir
from daq_storage.errors import ConfigError

Backend = Literal["hdf5", "arrow", "parquet", "csv", "zarr", "tiff"]
Compression = Literal[
    "none", "gzip", "lzf", "lz4", "zstd", "blosc-lz4", "blosc-zstd", "snappy", "zlib", "lzw"
]
Overflow = Literal["discard_oldest", "block"]
Start = Literal["oldest", "latest"]
BACKENDS: tuple[str, ...] = typing.get_args(Backend)
_NAMES = ", ".join(map(repr, BACKENDS))
COMPRESSIONS: tuple[str, ...] = typing.get_args(Compression)
#: The ``[storage]`` keys a format writer honours through its ``config_keys`` (unset:
#: the format's own default), mapped by :func:`daq_storage.writers.writer_options`.
CODEC_KEYS: tuple[str, ...] = ("compression", "compression_level", "chunk_size")
#: The formats whose writers write to an ``s3://`` destination (their class's
#: ``supports_object_storage``; the configuration sits below the writers and cannot ask
#: them, so a test checks that both agree).
OBJECT_STORAGE_FORMATS: tuple[str, ...] = ("arrow", "parquet", "zarr")
_SCHEME = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(value: object) -> bool:
    """Whether a destination is a URL (kept as text) rather than a local directory."""
    return isinstance(value, str) and _SCHEME.match(value) is not None


def _destination(value: Any) -> Any:
    """A local directory as a Path; an ``s3://`` URL kept as text (a Path would fold its
    ``//``). The URL itself is checked where it is used (``daq_storage.location``)."""
    if isinstance(value, str):
        found = _SCHEME.match(value)
        if found is None:
            return Path(value)
        if found["scheme"].lower() not in ("s3", "s3a"):
            raise ValueError("only s3:// URLs and local directories are destinations")
        if len(value) == found.end() or value[found.end()] == "/":
            raise ValueError("an s3:// URL names a bucket: s3://bucket/prefix")
    return value


def _no_nul(value: Path | None) -> Path | None:
    # No file system takes a NUL in a name; refused here rather than as a bare
    # ValueError from the first open().
    if value is not None and "\x00" in str(value):
        raise ValueError("a path cannot contain a NUL character")
    return value


def _lower(value: Any) -> Any:
    """Format and codec names ignore case, alone or in a list."""
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, list | tuple):
        return [v.lower() if isinstance(v, str) else v for v in value]
    return value


def _unique(names: list[str], what: str) -> list[str]:
    # The same format twice would write every record twice into two files of one run.
    if not names:
        raise ValueError(f"{what} needs at least one format")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{what} names {', '.join(map(repr, twice))} more than once")
    return names


def _no_bool(value: Any) -> Any:
    # No key is a flag: ``size_mb = true`` would otherwise be a 1 MiB ring. (A ValueError,
    # which pydantic reports as a validation error; a TypeError would escape.)
    if isinstance(value, bool):
        raise ValueError("true / false is not a value this key takes")  # noqa: TRY004
    return value


class S3Settings(BaseModel):
    """The ``[storage.s3]`` table: how to reach the object store of the ``s3://``
    destinations (``daq_storage.location.S3Options``); every key unset takes the standard
    source (the ``AWS_*`` environment variables, then the profile files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_url: str | None = Field(
        None,
        description="The S3-compatible server (http:// or https://); unset: "
        "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, the profile's, else AWS.",
    )
    region: str | None = Field(
        None, description="Unset: AWS_REGION / AWS_DEFAULT_REGION, the profile's, us-east-1."
    )
    profile: str | None = Field(
        None,
        description="A profile of ~/.aws/credentials and ~/.aws/config; its keys outrank "
        "the environment's. Unset: AWS_PROFILE, else default.",
    )
    access_key_id: str | None = Field(
        None, description="With secret_access_key; unset: AWS_ACCESS_KEY_ID, the profile's."
    )
    secret_access_key: SecretStr | None = Field(
        None, description="Never printed (config show masks it)."
    )
    session_token: SecretStr | None = Field(None, description="Temporary credentials' token.")
    anonymous: bool = Field(
        False,
        description="Unsigned requests (a public bucket).",
        json_schema_extra={"allowed": "true or false"},
    )
    retry_timeout_s: float = Field(
        20.0,
        gt=0,
        allow_inf_nan=False,
        description="How long one request is retried before its format is reported failed.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _not_empty(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name != "anonymous":
            value = _no_bool(value)
        if value == "":
            raise ValueError("an empty value: leave the key out instead")
        return value

    def options(self) -> dict[str, Any]:
        """The keys set, as ``S3Options`` fields (secrets revealed)."""
        found = {}
        for key in self.model_fields_set:
            value = getattr(self, key)
            found[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return found


class StorageSettings(BaseModel):
    """The ``[storage]`` section: where files go and how they are written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_backend: Backend = Field(
        "hdf5", description="Format written when none is named (also spelled `format`)."
    )
    formats: list[Backend] | None = Field(
        None,
        description="Formats the Recorder writes every stream to, at once (each stream to "
        "those that hold its kind); unset: [default_backend]. No duplicates.",
        json_schema_extra={"allowed": f"a list of distinct formats, each one of {_NAMES}"},
    )
    output_dir: Path | str = Field(
        Path("data"),
        description="Directory that new files are put in, or an s3://bucket/prefix "
        "(Arrow IPC, Parquet and Zarr only: storage.destinations keeps the others local).",
        json_schema_extra={"allowed": "a path, or an s3://bucket/prefix URL"},
    )
    destinations: dict[Backend, Path | str] = Field(
        default_factory=dict,
        description="Per format, a directory or s3:// URL instead of output_dir. Only "
        "recorded formats; a format that cannot write to object storage is refused a URL.",
        json_schema_extra={"allowed": "a table of format = path or s3:// URL"},
    )
    s3: S3Settings | None = Field(
        None,
        description="How to reach the object store (endpoint, region, profile, keys); "
        "refused when no destination is an s3:// URL.",
        json_schema_extra={"allowed": "a [storage.s3] table of S3 options"},
    )
    output_path: Path | None = Field(
        None,
        description="Reserved (the seeds' exact output file): refused, as the Recorder names "
        "its files itself in output_dir (one per format, and the next one at each rotation).",
        json_schema_extra={"allowed": "unset (use storage.output_dir)"},
    )
    experiment: str = Field(
        "experiment", min_length=1, description="Experiment name used in file names."
    )
    compression: Compression | None = Field(
        None,
        description="Codec for every format that compresses; unset: each format's own default "
        "(HDF5 gzip, Zarr blosc-lz4, Parquet snappy, Arrow and TIFF none). A codec the "
        "format cannot write is refused.",
    )
    compression_level: int | None = Field(
        None, ge=0, le=9, description="Codec level, 0 (off) to 9 (max); unset: the codec's own."
    )
    chunk_size: int | None = Field(
        None,
        ge=1,
        description="Rows per chunk (HDF5, Zarr) or row group (Parquet) of a table; frames "
        "are chunked one by one. Unset: the format's own.",
    )
    flush_interval_ms: int = Field(
        1000,
        ge=0,
        description="The Recorder's cadence: it flushes every format this long after the "
        "first record stored since the last flush, the longest a stored row or frame waits "
        "before a reader opening the file sees it (0: after every read that stored something).",
    )
    auto_flush_interval_secs: float = Field(
        0,
        ge=0,
        allow_inf_nan=False,
        description="The storage actor (daq_storage.actor) flushes this long after the first "
        "message it stored since its last flush (seconds); 0: only on a Flush message and at "
        "stop.",
    )

    @field_validator("default_backend", mode="before")
    @classmethod
    def _one_backend(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):  # several formats belong in storage.formats
            raise ValueError("one format; list several in storage.formats")  # noqa: TRY004
        return value

    @field_validator("default_backend", "compression", "formats", mode="before")
    @classmethod
    def _names_ignore_case(cls, value: Any) -> Any:
        return _lower(value)

    @field_validator("formats")
    @classmethod
    def _formats_once(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _unique(value, "storage.formats")

    @property
    def recorded_formats(self) -> tuple[str, ...]:
        """The formats the Recorder writes: ``formats``, else ``(default_backend,)``."""
        return tuple(self.formats) if self.formats else (self.default_backend,)

    @field_validator("*", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        return _no_bool(value)

    @field_validator("output_dir", mode="before")
    @classmethod
    def _directory_or_url(cls, value: Any) -> Any:
        return _destination(_no_bool(value))

    @field_validator("destinations", mode="before")
    @classmethod
    def _destination_per_format(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {_lower(k): _destination(_no_bool(v)) for k, v in value.items()}
        return value

    @field_validator("output_dir", "output_path")
    @classmethod
    def _path_without_nul(cls, value: Path | str | None) -> Path | str | None:
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError("a URL cannot contain a NUL character")
            return value
        return _no_nul(value)

    @model_validator(mode="after")
    def _s3_only_with_a_url(self) -> StorageSettings:
        if self.s3 is not None and not self.remote_formats(self.recorded_formats):
            raise ValueError(
                "storage.s3 says how to reach s3:// destinations, but neither "
                "storage.output_dir nor storage.destinations is one"
            )
        return self

    def destination(self, fmt: str) -> Path | str:
        """Where format ``fmt`` writes: its ``destinations`` entry, else ``output_dir``
        (a Path, or an ``s3://`` URL as text)."""
        found: Path | str | None = self.destinations.get(fmt)  # type: ignore[call-overload]
        return self.output_dir if found is None else found

    def remote_formats(self, formats: typing.Iterable[str]) -> list[str]:
        """Those of ``formats`` (and of ``destinations``) whose destination is a URL."""
        names = dict.fromkeys([*formats, *self.destinations])
        return [f for f in names if is_url(self.destination(f))]

    @property
    def local_output_dir(self) -> Path:
        """``output_dir`` for what writes local files only (the storage actor, the demo).

        Raises:
            ConfigError: ``output_dir`` is an ``s3://`` URL.
        """
        if isinstance(self.output_dir, str):
            raise ConfigError(
                f"storage.output_dir = {self.output_dir!r}: only the Recorder (daq-storage "
                "daemon) writes to object storage; give a local directory here"
            )
        return self.output_dir


class RingBufferConfig(BaseModel):
    """The ``[ring_buffer]`` section: the shared-memory ring that producers write to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = Field(
        None,
        description="File backing the ring (tmpfs); unset: each demo run makes a ring of its "
        "own in /dev/shm, the daemon daq_storage_<experiment> there (daemon_path).",
    )
    size_mb: int = Field(256, ge=1, le=1 << 20, description="Capacity in MiB.")
    frames: int | None = Field(
        None,
        ge=1,
        le=1 << 24,
        description="Instead of size_mb: size the ring to hold this many records of the "
        "largest kind the application writes (the demo's: one camera frame).",
    )
    overflow: Overflow = Field(
        "discard_oldest",
        description="discard_oldest: acquisition never waits; block: wait for slow readers.",
    )
    block_timeout_secs: float = Field(
        1.0, ge=0, description="overflow=block: longest wait before RingFull is raised."
    )
    max_readers: int = Field(16, ge=1, le=1024, description="Registered-reader slots.")

    @field_validator("path")
    @classmethod
    def _path_without_nul(cls, value: Path | None) -> Path | None:
        return _no_nul(value)

    @field_validator("*", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        return _no_bool(value)

    @model_validator(mode="after")
    def _one_size(self) -> RingBufferConfig:
        if self.frames is not None and "size_mb" in self.model_fields_set:
            raise ValueError(
                f"ring_buffer.frames = {self.frames} and ring_buffer.size_mb = {self.size_mb} "
                "both size the ring: set one of them"
            )
        return self

    def daemon_path(self, experiment: str) -> Path:
        """The ring the daemon creates and ``simulate`` / ``status --config`` find: ``path``,
        else ``default_ring_dir() / f"daq_storage_{experiment}"`` with the experiment name
        made safe as a file name (the rules of :func:`daq_storage.naming.sanitize_name`).

        Raises:
            ConfigError: the experiment name has no usable character.
        """
        if self.path is not None:
            return self.path
        return default_ring_dir() / f"daq_storage_{_safe_name(experiment)}"

    @property
    def capacity_bytes(self) -> int:
        """``size_mb`` in bytes.

        Raises:
            ConfigError: the ring is sized by ``frames``, which needs the record size:
                use :meth:`capacity_for`.
        """
        if self.frames is not None:
            raise ConfigError(
                f"ring_buffer.frames = {self.frames} sizes the ring in records, whose size "
                "only the application knows: use capacity_for(record_bytes), or size_mb"
            )
        return self.size_mb << 20

    def capacity_for(self, record_bytes: int) -> int:
        """Ring capacity in bytes for records of at most ``record_bytes`` each (header
        included): room for ``frames`` of them at once, plus one for the padding a record
        leaves at the end of the ring (records never wrap); ``size_mb`` when ``frames`` is
        unset.

        Raises:
            ConfigError: ``record_bytes`` is not a positive integer.
        """
        if isinstance(record_bytes, bool) or not isinstance(record_bytes, int) or record_bytes < 1:
            raise ConfigError(f"record_bytes must be a positive integer, got {record_bytes!r}")
        if self.frames is None:
            return self.size_mb << 20
        return (self.frames + 1) * ((record_bytes + 7) // 8 * 8)


_FINITE: dict[str, Any] = {"allow_inf_nan": False}


class RecorderConfig(BaseModel):
    """The ``[recorder]`` section: how :class:`daq_storage.recorder.Recorder` drains the
    ring into the formats (``Recorder.from_config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    consumer: str = Field(
        "recorder",
        description="The Recorder's consumer name on the ring (its lag, losses and stats "
        "file go by it); several Recorders on one ring need different names.",
        json_schema_extra={"allowed": "a printable string of 1 to 64 UTF-8 bytes"},
    )
    streams: dict[str, list[Backend]] = Field(
        default_factory=dict,
        description="Per-stream routing, instead of storage.formats for the streams named: "
        "stream -> formats. A listed format that cannot hold the stream's kind is reported "
        "(unroutable) when its first record arrives.",
        json_schema_extra={
            "allowed": f"a table of stream = [distinct formats], each one of {_NAMES}"
        },
    )
    durable: bool = Field(
        False,
        description="Every cadence flush is durable (fsync): slower, survives a power cut.",
        json_schema_extra={"allowed": "true or false"},
    )
    rotate_size_mb: float | None = Field(
        None,
        gt=0,
        **_FINITE,
        description="Start a format's next file (_v{N+1}) once its current one reaches this "
        "size on disk; unset: never. A frame or row is never split.",
    )
    rotate_interval_secs: float | None = Field(
        None,
        gt=0,
        **_FINITE,
        description="Start the next file this long after the current one was opened; unset: never.",
    )
    batch_rows: int = Field(
        65536,
        ge=1,
        description="Table records of a stream are joined into batches of up to "
        "this many rows before they are written.",
    )
    batch_bytes_mb: float = Field(
        64, gt=0, **_FINITE, description="Caps a joined batch of rows or a group of frames."
    )
    frames_per_write: int | None = Field(
        None,
        ge=1,
        description="Frames grouped per write; unset: whole chunks of the stream's writers "
        "(at least 16, capped by batch_bytes_mb).",
    )
    start: Start = Field(
        "oldest",
        description="Where a new Recorder starts reading: the oldest record the ring "
        "holds, or the newest one (the history before it skipped).",
    )
    stop_timeout_secs: float = Field(
        30,
        ge=0,
        **_FINITE,
        description="Longest stop() waits for the drain before the Recorder process is killed "
        "(files stay readable up to the last flush).",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any, info: ValidationInfo) -> Any:
        return value if info.field_name == "durable" else _no_bool(value)

    @field_validator("start", mode="before")
    @classmethod
    def _start_ignores_case(cls, value: Any) -> Any:
        return _lower(value)

    @field_validator("consumer")
    @classmethod
    def _consumer_name(cls, value: str) -> str:
        # The ring keeps 64 bytes of a consumer's name: a longer one would be cut, and two
        # Recorders could then no longer be told apart.
        if not value or not value.isprintable() or len(value.encode()) > 64:
            raise ValueError("a consumer name is 1 to 64 UTF-8 bytes of printable characters")
        return value

    @field_validator("streams", mode="before")
    @classmethod
    def _stream_names_ignore_case(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: _lower(v) for k, v in value.items()}
        return value

    @field_validator("streams")
    @classmethod
    def _streams_routed_once(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for stream, formats in value.items():
            if not stream:
                raise ValueError("a stream name cannot be empty")
            _unique(formats, f"recorder.streams.{stream}")
        return value

    @property
    def rotate_bytes(self) -> int | None:
        """``rotate_size_mb`` in bytes (at least 1), ``None`` when unset."""
        if self.rotate_size_mb is None:
            return None
        return max(1, round(self.rotate_size_mb * (1 << 20)))

    @property
    def batch_bytes(self) -> int:
        """``batch_bytes_mb`` in bytes (at least 1)."""
        return max(1, round(self.batch_bytes_mb * (1 << 20)))
