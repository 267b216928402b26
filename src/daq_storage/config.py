"""Configuration: defaults < TOML file < ``DAQ_STORAGE_*`` environment variables.

The TOML file has the seeds' two sections::

    [storage]
    default_backend = "hdf5"        # or: format = "hdf5"
    output_dir = "./data"
    compression = "gzip"            # unset: each format's own default
    compression_level = 4
    chunk_size = 1024               # rows per chunk (tables)
    flush_interval_ms = 1000
    auto_flush_interval_secs = 0

    [ring_buffer]
    path = "/dev/shm/lab_ring"      # unset: each run makes a ring of its own in /dev/shm
    size_mb = 256                   # or: frames = 1000 (records of the largest kind)
    overflow = "discard_oldest"

Environment variables override single keys: ``DAQ_STORAGE_<KEY>`` for ``[storage]``
(``DAQ_STORAGE_OUTPUT_DIR``, ``DAQ_STORAGE_COMPRESSION_LEVEL``) and
``DAQ_STORAGE_RING_BUFFER_<KEY>`` for ``[ring_buffer]``; ``DAQ_STORAGE_CONFIG`` names the
file. Every bad key or value raises :class:`~daq_storage.errors.ConfigError` naming the
key, the value, where it came from and what is allowed.

Every key has an effect or is refused (``docs/configuration.md`` says which): the
``[storage]`` codec keys reach the writers through
:func:`daq_storage.writers.writer_options`, which refuses a key the chosen format
cannot honour; ``auto_flush_interval_secs`` (for the storage actor, not built yet)
accepts only 0.
"""

from __future__ import annotations

import contextvars
import os
import tempfile
import tomllib
import types
import typing
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
    "RingBufferConfig",
    "StorageConfig",
    "StorageSettings",
    "allowed_values",
    "default_ring_dir",
]

ENV_PREFIX = "DAQ_STORAGE_"
_ENV_CONFIG_FILE = f"{ENV_PREFIX}CONFIG"
_RING_ENV_PREFIX = f"{ENV_PREFIX}RING_BUFFER_"

Backend = Literal["hdf5", "arrow", "parquet", "csv", "zarr", "tiff"]
Compression = Literal[
    "none", "gzip", "lzf", "lz4", "zstd", "blosc-lz4", "blosc-zstd", "snappy", "zlib", "lzw"
]
Overflow = Literal["discard_oldest", "block"]
BACKENDS: tuple[str, ...] = typing.get_args(Backend)
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


def _no_nul(value: Path | None) -> Path | None:
    # No file system takes a NUL in a name; refused here rather than as a bare
    # ValueError from the first open().
    if value is not None and "\x00" in str(value):
        raise ValueError("a path cannot contain a NUL character")
    return value


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
    output_dir: Path = Field(Path("data"), description="Directory that new files are put in.")
    output_path: Path | None = Field(
        None, description="Exact output file; overrides output_dir and the naming scheme."
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
        description="How often the recorder flushes its writers: the longest a stored row or "
        "frame waits before a reader opening the file sees it (0: after every read).",
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

    @field_validator("default_backend", "compression", mode="before")
    @classmethod
    def _names_ignore_case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

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
        description="File backing the ring (tmpfs); unset: each run makes a ring of its own "
        "in /dev/shm, so two runs never share one by accident.",
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


_SECTIONS: dict[str, type[BaseModel]] = {
    "storage": StorageSettings,
    "ring_buffer": RingBufferConfig,
}


def _env_name(section: str, key: str) -> str:
    prefix = ENV_PREFIX if section == "storage" else _RING_ENV_PREFIX
    return f"{prefix}{key.upper()}"


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
        _set_nested(out, origins, section, key, parsed, f"env {name}")
    return out, origins


def _is_optional(section: str, key: str) -> bool:
    annotation = _SECTIONS[section].model_fields[key].annotation
    return type(None) in typing.get_args(annotation)


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
    """The effective configuration: ``[storage]`` and ``[ring_buffer]``.

    ``StorageConfig()`` reads the environment (and the file named by
    ``DAQ_STORAGE_CONFIG``); :meth:`load` takes the file and environment explicitly.
    Instances are frozen; ``sources()`` tells where each value came from.
    """

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    storage: StorageSettings = Field(default_factory=lambda: StorageSettings())
    ring_buffer: RingBufferConfig = Field(default_factory=lambda: RingBufferConfig())

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
        origin = origins.get(dotted, "argument")
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
        allowed = _allowed(loc[0], loc[-1]) if len(loc) == 2 else ""
        problems.append(
            f"invalid value for {dotted}: {error['input']!r} ({origin}): {message}"
            + (f"; allowed: {allowed}" if allowed else "")
        )
    return ConfigError("; ".join(problems))
