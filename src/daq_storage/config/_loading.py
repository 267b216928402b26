"""Reading the configuration: the TOML file and ``DAQ_STORAGE_*`` variables, where
each value came from (the load context), and pydantic's errors as one ConfigError."""

from __future__ import annotations

import contextvars
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from daq_storage.config._models import RecorderConfig, RingBufferConfig, StorageSettings
from daq_storage.errors import ConfigError

ENV_PREFIX = "DAQ_STORAGE_"
_ENV_CONFIG_FILE = f"{ENV_PREFIX}CONFIG"
_RING_ENV_PREFIX = f"{ENV_PREFIX}RING_BUFFER_"
_RECORDER_ENV_PREFIX = f"{ENV_PREFIX}RECORDER_"

# Keys of the seeds' first TOML layout (seed 000), accepted and mapped onto the current ones.
_LEGACY_STORAGE_KEYS: dict[str, tuple[str, str]] = {
    "ring_buffer_path": ("ring_buffer", "path"),
    "ring_buffer_frames": ("ring_buffer", "frames"),
    "hdf5_compression": ("storage", "compression"),
    "hdf5_compression_level": ("storage", "compression_level"),
    "format": ("storage", "default_backend"),
}


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
        if isinstance(arg, type) and issubclass(arg, BaseModel):  # a table: [storage.s3]
            return dict
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
        examples = {
            f"{ENV_PREFIX}S3": '{"endpoint_url": "http://localhost:9000"}',
            f"{ENV_PREFIX}DESTINATIONS": '{"zarr": "s3://bucket/prefix"}',
        }
        example = (
            '["hdf5", "arrow"] or hdf5,arrow'
            if container is list
            else examples.get(name, '{"camera_1": ["hdf5", "tiff"]}')
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
