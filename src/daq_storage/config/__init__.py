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
``auto_flush_interval_secs`` is the :class:`daq_storage.actor.StorageActor`'s flush cadence
(0: only on a Flush message and at stop).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from daq_storage.config._loading import (
    _ENV_CONFIG_FILE,
    _SECTIONS,
    ENV_PREFIX,
    ConfigValue,
    _config_error,
    _current_context,
    _DictSource,
    _load_context,
    _LoadContext,
    _read_env,
    _read_toml,
    allowed_values,
)
from daq_storage.config._models import (
    BACKENDS,
    CODEC_KEYS,
    COMPRESSIONS,
    OBJECT_STORAGE_FORMATS,
    RecorderConfig,
    RingBufferConfig,
    S3Settings,
    StorageSettings,
    is_url,
)

# Type aliases used beside the models (demo, daemon): re-exported by name, not in __all__.
from daq_storage.config._models import Backend as Backend
from daq_storage.config._models import Compression as Compression
from daq_storage.config._models import Overflow as Overflow
from daq_storage.config._models import Start as Start
from daq_storage.config._paths import daemon_ring_path, default_ring_dir
from daq_storage.errors import ConfigError

__all__ = [
    "BACKENDS",
    "COMPRESSIONS",
    "CODEC_KEYS",
    "ENV_PREFIX",
    "OBJECT_STORAGE_FORMATS",
    "ConfigValue",
    "RecorderConfig",
    "RingBufferConfig",
    "S3Settings",
    "StorageConfig",
    "StorageSettings",
    "allowed_values",
    "daemon_ring_path",
    "default_ring_dir",
    "is_url",
]


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
        _check_destinations(self, origins)

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


def _check_destinations(config: StorageConfig, origins: Mapping[str, str]) -> None:
    """Across sections: a destination only for a recorded format, and an ``s3://`` one
    only for a format whose writer writes to object storage."""
    storage = config.storage
    recorded = dict.fromkeys(
        [*storage.recorded_formats, *(f for fs in config.recorder.streams.values() for f in fs)]
    )
    for named in storage.destinations:
        if named not in recorded:
            raise ConfigError(
                f"storage.destinations.{named} "
                f"({origins.get('storage.destinations', 'argument')}): {named} is not a "
                f"recorded format ({', '.join(recorded)}); remove it"
            )
    for fmt in storage.remote_formats(recorded):
        if fmt not in OBJECT_STORAGE_FORMATS:
            given = fmt in storage.destinations
            key = f"storage.destinations.{fmt}" if given else "storage.output_dir"
            origin = origins.get("storage.destinations" if given else key, "argument")
            raise ConfigError(
                f"{key} = {storage.destination(fmt)!r} ({origin}): "
                f"{fmt} cannot write to object storage; the formats that can: "
                f"{', '.join(OBJECT_STORAGE_FORMATS)} (give {fmt} a local directory in "
                f"[storage.destinations])"
            )
