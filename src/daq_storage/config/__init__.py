"""Configuration: defaults < TOML file < ``DAQ_STORAGE_*`` environment variables.

The TOML file has three sections::

    [storage]
    default_backend = "hdf5"        # or: format = "hdf5"
    formats = ["hdf5", "arrow"]     # what the Recorder writes; unset: [default_backend]
    output_dir = "./data"
    compression = "gzip"            # unset: each format's own default
    compression_level = 4
    chunk_size = 1024               # rows per chunk (tables)
    flush_interval_ms = 1000        # the Recorder's flush cadence
    auto_flush_interval_secs = 0

    [ring_buffer]
    path = "/dev/shm/lab_ring"      # unset: per run (demo) or daq_storage_<experiment> (daemon)
    size_mb = 256                   # or: frames = 1000 (records of the largest kind)
    overflow = "discard_oldest"

    [recorder]
    consumer = "recorder"
    durable = false                 # fsync at every cadence flush
    rotate_size_mb = 1024           # next file (_v{N+1}) at this size; unset: never
    batch_rows = 65536

    [recorder.streams]              # per-stream routing, instead of formats
    camera_1 = ["hdf5", "tiff"]

Environment variables override single keys: ``DAQ_STORAGE_<KEY>`` for ``[storage]``
(``DAQ_STORAGE_OUTPUT_DIR``, ``DAQ_STORAGE_COMPRESSION_LEVEL``),
``DAQ_STORAGE_RING_BUFFER_<KEY>`` for ``[ring_buffer]`` and ``DAQ_STORAGE_RECORDER_<KEY>``
for ``[recorder]``; a list is a JSON list or comma-separated (``DAQ_STORAGE_FORMATS=hdf5,arrow``),
``DAQ_STORAGE_RECORDER_STREAMS`` a JSON object. ``DAQ_STORAGE_CONFIG`` names the file.
Every bad key or value raises :class:`~daq_storage.errors.ConfigError` naming the key, the
value, where it came from and what is allowed.

Every key has an effect or is refused (``docs/configuration.md`` says which): the
``[storage]`` codec keys reach the writers through
:func:`daq_storage.writers.writer_options`, which refuses a key the chosen format
cannot honour; ``[storage] formats`` and ``[recorder]`` are the
:class:`daq_storage.recorder.Recorder`'s (``Recorder.from_config``);
``auto_flush_interval_secs`` (for the storage actor, not built yet) accepts only 0.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import tempfile
import tomllib
import types
import typing
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from daq_storage.errors import ConfigError

__all__ = [
    "BACKENDS",
    "COMPRESSIONS",
    "CODEC_KEYS",
    "ENV_PREFIX",
    "ConfigValue",
    "RecorderConfig",
    "RingBufferConfig",
    "StorageConfig",
    "StorageSettings",
    "allowed_values",
    "daemon_ring_path",
    "default_ring_dir",
]

ENV_PREFIX = "DAQ_STORAGE_"
_ENV_CONFIG_FILE = f"{ENV_PREFIX}CONFIG"
_RING_ENV_PREFIX = f"{ENV_PREFIX}RING_BUFFER_"
_RECORDER_ENV_PREFIX = f"{ENV_PREFIX}RECORDER_"

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

# Keys of the seeds' first TOML layout (seed 000), accepted and mapped onto the current ones.
_LEGACY_STORAGE_KEYS: dict[str, tuple[str, str]] = {
    "ring_buffer_path": ("ring_buffer", "path"),
    "ring_buffer_frames": ("ring_buffer", "frames"),
    "hdf5_compression": ("storage", "compression"),
    "hdf5_compression_level": ("storage", "compression_level"),
    "format": ("storage", "default_backend"),
}


def default_ring_dir() -> Path:
    """Where rings go when no path is configured: ``/dev/shm``, else the temp dir."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() else Path(tempfile.gettempdir())


# The rules of daq_storage.naming.sanitize_name, which this layer cannot import (a test
# checks that both agree): a name safe as one path component on any OS.
_UNSAFE = re.compile(r"[^\w.\-]+")
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}


def _safe_name(name: str) -> str:
    if not isinstance(name, str) or "\x00" in name:
        raise ConfigError(f"storage.experiment = {name!r} cannot name a ring file")
    text = _UNSAFE.sub("_", unicodedata.normalize("NFKC", name))
    text = re.sub(r"_{2,}", "_", re.sub(r"\.{2,}", ".", text)).strip("._")
    text = text[:100].rstrip("._")
    if not text:
        raise ConfigError(
            f"storage.experiment = {name!r} has no usable characters (letters, digits, _ - .) "
            "to name the daemon's ring: set ring_buffer.path"
        )
    return text + "_" if text.split(".")[0].upper() in _RESERVED else text


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
    output_dir: Path = Field(Path("data"), description="Directory that new files are put in.")
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
        description="Periodic flush of the storage actor, which is not built yet: only 0 "
        "(flush on request) is accepted.",
        json_schema_extra={"allowed": "0"},
    )

    @field_validator("auto_flush_interval_secs")
    @classmethod
    def _no_actor_yet(cls, value: float) -> float:
        # Accepting a cadence nothing applies would be a key that silently does nothing.
        if value != 0:
            raise ValueError(
                "the storage actor that would flush on this cadence does not exist yet; "
                "only 0 is accepted (the recorder's cadence is storage.flush_interval_ms)"
            )
        return value

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

    @field_validator("output_dir", "output_path")
    @classmethod
    def _path_without_nul(cls, value: Path | None) -> Path | None:
        return _no_nul(value)


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


def daemon_ring_path(config: StorageConfig) -> Path:
    """The daemon's ring for ``config``: :meth:`RingBufferConfig.daemon_path` of its
    experiment."""
    return config.ring_buffer.daemon_path(config.storage.experiment)


_SECTIONS: dict[str, type[BaseModel]] = {
    "storage": StorageSettings,
    "ring_buffer": RingBufferConfig,
    "recorder": RecorderConfig,
}
_ENV_PREFIXES = {"storage": ENV_PREFIX, "ring_buffer": _RING_ENV_PREFIX}


def _env_name(section: str, key: str) -> str:
    return f"{_ENV_PREFIXES.get(section, _RECORDER_ENV_PREFIX)}{key.upper()}"


@dataclass(frozen=True, slots=True)
class ConfigValue:
    """One effective setting and where it came from."""

    key: str  # "storage.output_dir"
    value: Any
    source: str  # "default", "file <path>" or "env DAQ_STORAGE_..."


@dataclass
class _LoadContext:
    file: Path | None
    environ: Mapping[str, str]
    file_data: dict[str, dict[str, Any]] | None = None
    env_data: dict[str, dict[str, Any]] | None = None


_load_context: contextvars.ContextVar[_LoadContext | None] = contextvars.ContextVar(
    "daq_storage_config_load", default=None
)


def _current_context() -> _LoadContext:
    context = _load_context.get()
    if context is not None:
        return context
    file = os.environ.get(_ENV_CONFIG_FILE)
    return _LoadContext(Path(file) if file else None, os.environ)


def _set_nested(
    out: dict[str, dict[str, Any]],
    origins: dict[str, str],
    section: str,
    key: str,
    value: Any,
    origin: str,
) -> None:
    dotted = f"{section}.{key}"
    if key in out.setdefault(section, {}) and out[section][key] != value:
        raise ConfigError(
            f"config key {dotted} is given twice with different values: "
            f"{out[section][key]!r} ({origins[dotted]}) and {value!r} ({origin})"
        )
    out[section][key] = value
    origins[dotted] = origin


def _read_toml(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    origin = f"file {path}"
    out: dict[str, dict[str, Any]] = {}
    origins: dict[str, str] = {}
    for section, table in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"unknown config section [{section}] in {path}; "
                f"known sections: {', '.join(f'[{s}]' for s in _SECTIONS)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"config {section} in {path} must be a [{section}] table")
        for key, value in table.items():
            target_section, target_key = section, key
            if section == "storage" and key in _LEGACY_STORAGE_KEYS:
                target_section, target_key = _LEGACY_STORAGE_KEYS[key]
            where = origin if key == target_key else f"{origin}, as {section}.{key}"
            _set_nested(out, origins, target_section, target_key, value, where)
    return out, origins


def _read_env(environ: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    known: dict[str, tuple[str, str]] = {}
    for section, model in _SECTIONS.items():
        for key in model.model_fields:
            known[_env_name(section, key)] = (section, key)
    known[f"{ENV_PREFIX}FORMAT"] = ("storage", "default_backend")
    out: dict[str, dict[str, Any]] = {}
    origins: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == _ENV_CONFIG_FILE:
            continue
        if name not in known:
            raise ConfigError(
                f"unknown environment variable {name}={value!r}; known: "
                f"{', '.join(sorted([*known, _ENV_CONFIG_FILE]))}"
            )
        section, key = known[name]
        # An empty value means "unset" for optional keys, as shells make unsetting awkward;
        # for the others it is the value given, refused by validation with its real text.
        parsed: Any = None if value == "" and _is_optional(section, key) else value
        container = _container(section, key)
        if container is dict and value == "":  # an empty table: no per-stream routing
            parsed = {}
        elif parsed is not None:
            parsed = _env_value(name, value, container)
        _set_nested(out, origins, section, key, parsed, f"env {name}")
    return out, origins


def _is_optional(section: str, key: str) -> bool:
    annotation = _SECTIONS[section].model_fields[key].annotation
    return type(None) in typing.get_args(annotation)


def _container(section: str, key: str) -> type | None:
    """``list`` or ``dict`` when the key takes one (optional or not), else ``None``."""
    annotation = _SECTIONS[section].model_fields[key].annotation
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) in (list, dict):
            return typing.cast(type, typing.get_origin(arg))
    return None


def _env_value(name: str, value: str, container: type | None) -> Any:
    """A variable's text as the key takes it: a list as a JSON list or comma-separated
    names, a table as a JSON object; anything else as the text itself."""
    if container is None:
        if name == f"{ENV_PREFIX}FORMAT" and "," in value:  # DAQ_STORAGE_FORMAT=hdf5,arrow
            raise ConfigError(
                f"{name}={value!r} names one format; several go in {ENV_PREFIX}FORMATS"
            )
        return value
    if container is list and not value.lstrip().startswith("["):
        return [item.strip() for item in value.split(",")]
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, container):
        example = (
            '["hdf5", "arrow"] or hdf5,arrow'
            if container is list
            else '{"camera_1": ["hdf5", "tiff"]}'
        )
        raise ConfigError(
            f"invalid value for environment variable {name}={value!r}: expected a JSON "
            f"{'list' if container is list else 'object'} such as {example}"
            + ("" if container is list else ", or set the table in the config file")
        )
    return parsed


class _DictSource(PydanticBaseSettingsSource):
    """A settings source whose data were read beforehand (TOML file or environment)."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


def _allowed(section: str, key: str) -> str:
    model = _SECTIONS.get(section)
    if model is None or key not in model.model_fields:
        return ""
    return allowed_values(model.model_fields[key])


def _leaves(annotation: Any) -> list[Any]:
    """The types a (possibly optional, annotated or union) annotation admits, and the
    constraint objects found on the way."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        return [*_leaves(base), *metadata]
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        return [leaf for arg in typing.get_args(annotation) for leaf in _leaves(arg)]
    if origin in (list, dict):  # what each item (each value of a table) takes
        return _leaves(typing.get_args(annotation)[-1])
    return [annotation]


def allowed_values(field: FieldInfo) -> str:
    """What a pydantic field accepts, in words: ``one of 'a', 'b'``, ``an integer >= 0
    and <= 9``; ``""`` when nothing more can be said."""
    if isinstance(field.json_schema_extra, dict) and "allowed" in field.json_schema_extra:
        return str(field.json_schema_extra["allowed"])
    leaves = _leaves(field.annotation)
    literals = [v for leaf in leaves if typing.get_origin(leaf) is Literal
                for v in typing.get_args(leaf)]  # fmt: skip
    if literals:
        return "one of " + ", ".join(repr(v) for v in literals)
    constraints = [*field.metadata, *(leaf for leaf in leaves if not isinstance(leaf, type))]
    constraints += [m for c in constraints if isinstance(c, FieldInfo) for m in c.metadata]
    bounds = []
    for meta in constraints:
        if isinstance(meta, annotated_types.Ge):
            bounds.append(f">= {meta.ge}")
        elif isinstance(meta, annotated_types.Gt):
            bounds.append(f"> {meta.gt}")
        elif isinstance(meta, annotated_types.Le):
            bounds.append(f"<= {meta.le}")
        elif isinstance(meta, annotated_types.Lt):
            bounds.append(f"< {meta.lt}")
        elif isinstance(meta, annotated_types.MinLen):
            bounds.append(f"at least {meta.min_length} character(s)")
    kinds = {int: "an integer", float: "a number", Path: "a path", str: "a string"}
    kind = next((kinds[leaf] for leaf in leaves if leaf in kinds), "")
    text = " and ".join(dict.fromkeys(bounds))
    if kind and text:
        return f"{kind} {text}"
    return kind or text


class StorageConfig(BaseSettings):
    """The effective configuration: ``[storage]``, ``[ring_buffer]`` and ``[recorder]``.

    ``StorageConfig()`` reads the environment (and the file named by
    ``DAQ_STORAGE_CONFIG``); :meth:`load` takes the file and environment explicitly.
    Instances are frozen; ``sources()`` tells where each value came from.
    """

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    storage: StorageSettings = Field(default_factory=lambda: StorageSettings())
    ring_buffer: RingBufferConfig = Field(default_factory=lambda: RingBufferConfig())
    recorder: RecorderConfig = Field(default_factory=lambda: RecorderConfig())

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        outer = _current_context()
        file_data, file_origins = _read_toml(outer.file) if outer.file else ({}, {})
        env_data, env_origins = _read_env(outer.environ)
        origins = {**file_origins, **env_origins}
        token = _load_context.set(_LoadContext(outer.file, outer.environ, file_data, env_data))
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _config_error(exc, origins) from None
        finally:
            _load_context.reset(token)
        for section, keys in values.items():
            if isinstance(keys, Mapping):
                origins.update({f"{section}.{k}": "argument" for k in keys})
        self._origins = origins
        if self.storage.output_path is not None:
            # Nothing writes to one exact path any more: accepting it would be a key that
            # silently does nothing.
            raise ConfigError(
                f"storage.output_path = {str(self.storage.output_path)!r} "
                f"({origins.get('storage.output_path', 'argument')}): the Recorder names its "
                "files itself (one per format, _v{N+1} at each rotation) in "
                "storage.output_dir; set that instead"
            )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        context = _current_context()
        file_data = context.file_data or {}
        env_data = context.env_data or {}
        # Earlier sources win; sections merge key by key (deep update), so an env
        # override of one key keeps the file's other keys of that section.
        return (
            init_settings,
            _DictSource(settings_cls, env_data),
            _DictSource(settings_cls, file_data),
        )

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
    ) -> StorageConfig:
        """Load ``path`` (a TOML file, optional) with ``environ`` overrides on top.

        Args:
            path: the TOML file; ``None`` uses ``DAQ_STORAGE_CONFIG`` if set, else defaults.
            environ: the environment to read (default ``os.environ``).

        Raises:
            ConfigError: unknown section/key/variable, bad value, unreadable file.
        """
        env = os.environ if environ is None else environ
        if path is None and env.get(_ENV_CONFIG_FILE):
            path = env[_ENV_CONFIG_FILE]
        token = _load_context.set(_LoadContext(Path(path) if path is not None else None, env))
        try:
            return cls()
        finally:
            _load_context.reset(token)

    def sources(self) -> Iterator[ConfigValue]:
        """Every setting with its effective value and its origin."""
        for section in _SECTIONS:
            values = getattr(self, section)
            for key in type(values).model_fields:
                dotted = f"{section}.{key}"
                yield ConfigValue(
                    dotted, getattr(values, key), self._origins.get(dotted, "default")
                )


def _config_error(exc: ValidationError, origins: Mapping[str, str]) -> ConfigError:
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        dotted = ".".join(loc)
        # A list item or a table entry came from where its key did.
        origin = next(
            (origins[k] for i in range(len(loc), 0, -1) if (k := ".".join(loc[:i])) in origins),
            "argument",
        )
        if error["type"] == "extra_forbidden":
            if len(loc) == 1:
                problems.append(
                    f"unknown config section [{dotted}] ({origin}); known sections: "
                    + ", ".join(f"[{s}]" for s in _SECTIONS)
                )
            else:
                known = ", ".join(_SECTIONS[loc[0]].model_fields) if loc[0] in _SECTIONS else ""
                problems.append(f"unknown config key {dotted} ({origin}); known keys: {known}")
            continue
        message = error["msg"].removeprefix("Value error, ")
        if len(loc) == 1 and loc[0] in _SECTIONS:  # a rule across keys of one section
            given = error["input"] if isinstance(error["input"], Mapping) else {}
            named = [f"{dotted}.{k}" for k in given if f"{dotted}.{k}" in message]
            where = ", ".join(f"{k}: {origins.get(k, 'argument')}" for k in named)
            problems.append(f"invalid [{dotted}]: {message}" + (f" ({where})" if where else ""))
            continue
        allowed = _allowed(loc[0], loc[1]) if len(loc) >= 2 else ""
        problems.append(
            f"invalid value for {dotted}: {error['input']!r} ({origin}): {message}"
            + (f"; allowed: {allowed}" if allowed else "")
        )
    return ConfigError("; ".join(problems))
