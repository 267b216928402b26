"""Configuration: defaults < TOML file < ``DAQ_STORAGE_*`` environment variables.

The TOML file has the seeds' two sections::

    [storage]
    default_backend = "hdf5"        # or: format = "hdf5"
    output_dir = "./data"
    compression = "gzip"
    compression_level = 4
    chunk_size = 1024
    flush_interval_ms = 1000
    auto_flush_interval_secs = 0

    [ring_buffer]
    path = "/dev/shm/lab_ring"      # unset: each run makes a ring of its own in /dev/shm
    size_mb = 256
    overflow = "discard_oldest"

Environment variables override single keys: ``DAQ_STORAGE_<KEY>`` for ``[storage]``
(``DAQ_STORAGE_OUTPUT_DIR``, ``DAQ_STORAGE_COMPRESSION_LEVEL``) and
``DAQ_STORAGE_RING_BUFFER_<KEY>`` for ``[ring_buffer]``; ``DAQ_STORAGE_CONFIG`` names the
file. Every bad key or value raises :class:`~daq_storage.errors.ConfigError` naming the
key, the value, where it came from and what is allowed.
"""

from __future__ import annotations

import contextvars
import os
import tempfile
import tomllib
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
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from daq_storage.errors import ConfigError

__all__ = [
    "BACKENDS",
    "COMPRESSIONS",
    "ENV_PREFIX",
    "ConfigValue",
    "RingBufferConfig",
    "StorageConfig",
    "StorageSettings",
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
    compression: Compression = Field(
        "gzip", description="Codec; gzip is readable everywhere (MATLAB, h5dump) with no plugin."
    )
    compression_level: int = Field(4, ge=0, le=9, description="Codec level, 0 (off) to 9 (max).")
    chunk_size: int | None = Field(
        None, ge=1, description="Samples (table rows) per chunk; frames are chunked one by one."
    )
    flush_interval_ms: int = Field(
        1000, ge=0, description="Longest time data waits in memory before it is written."
    )
    auto_flush_interval_secs: float = Field(
        0, ge=0, description="Periodic file flush for the storage actor; 0 = manual only."
    )

    @field_validator("default_backend", "compression", mode="before")
    @classmethod
    def _names_ignore_case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


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
        None, ge=1, description="Size the ring to hold this many frames instead of size_mb."
    )
    overflow: Overflow = Field(
        "discard_oldest",
        description="discard_oldest: acquisition never waits; block: wait for slow readers.",
    )
    block_timeout_secs: float = Field(
        1.0, ge=0, description="overflow=block: longest wait before RingFull is raised."
    )
    max_readers: int = Field(16, ge=1, le=1024, description="Registered-reader slots.")

    @property
    def capacity_bytes(self) -> int:
        """``size_mb`` in bytes."""
        return self.size_mb << 20


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
    field = model.model_fields[key]
    annotation = field.annotation
    args = typing.get_args(annotation)
    literal_args = next(
        (typing.get_args(a) for a in (annotation, *args) if typing.get_origin(a) is Literal), ()
    )
    if literal_args:
        return "one of " + ", ".join(repr(a) for a in literal_args)
    bounds = []
    for meta in field.metadata:
        if isinstance(meta, annotated_types.Ge):
            bounds.append(f">= {meta.ge}")
        elif isinstance(meta, annotated_types.Gt):
            bounds.append(f"> {meta.gt}")
        elif isinstance(meta, annotated_types.Le):
            bounds.append(f"<= {meta.le}")
        elif isinstance(meta, annotated_types.MinLen):
            bounds.append(f"at least {meta.min_length} character(s)")
    kinds = {int: "an integer", float: "a number", Path: "a path", str: "a string"}
    kind = next((kinds[a] for a in (annotation, *args) if a in kinds), "")
    text = " and ".join(bounds)
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
        allowed = _allowed(loc[0], loc[-1]) if len(loc) == 2 else ""
        problems.append(
            f"invalid value for {dotted}: {error['input']!r} ({origin}): {error['msg']}"
            + (f"; allowed: {allowed}" if allowed else "")
        )
    return ConfigError("; ".join(problems))
