"""The ``[storage]`` configuration mapped onto a format writer's options.

Each writer lists the ``[storage]`` keys it honours in ``config_keys`` (key -> option
name). A key that is set (not left to the format's own default) reaches the writer
under its option name, or is refused: a key the format does not take, or a value it
cannot honour, is a :class:`~daq_storage.errors.ConfigError` naming the key, the
value and what the format takes. Nothing is dropped or replaced silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from daq_storage.errors import ConfigError

if TYPE_CHECKING:
    from daq_storage.config import StorageSettings
    from daq_storage.writers._base import Writer

__all__ = ["writer_options"]

#: The ``[storage]`` keys a format may honour (``daq_storage.config.CODEC_KEYS``; kept
#: here too so that a writer process need not import the config loader).
_KEYS = ("compression", "compression_level", "chunk_size")


def writer_options(
    writer_class: type[Writer],
    settings: StorageSettings,
    *,
    sources: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The options ``writer_class`` gets from the ``[storage]`` section ``settings``.

    Only keys that are set are mapped; an unset key leaves the format's own default, so
    switching ``default_backend`` never needs other keys changed.

    Args:
        writer_class: a registered writer (``get_writer_class(name)``).
        settings: ``StorageConfig.storage``.
        sources: ``"storage.<key>"`` -> where its value came from (``"file daq.toml"``,
            ``"env DAQ_STORAGE_..."``), named in errors (see ``StorageConfig.sources()``).

    Raises:
        ConfigError: a set key the format does not take, or a value it cannot honour;
            every such key is named with its value, its origin and what the format takes.
    """
    given = {key: value for key in _KEYS if (value := getattr(settings, key)) is not None}
    where = sources or {}

    def named(key: str) -> str:
        origin = where.get(f"storage.{key}")
        return f"storage.{key} = {given[key]!r}" + (f" ({origin})" if origin else "")

    name = writer_class.name
    keys = writer_class.config_keys
    refused = [key for key in given if key not in keys]
    if refused:
        takes = ", ".join(f"storage.{k}" for k in keys) or "none of the [storage] codec keys"
        raise ConfigError(
            "; ".join(f"{named(key)}: the {name} writer does not take it" for key in refused)
            + f" (it takes {takes}); unset "
            + ("it" if len(refused) == 1 else "them")
            + " or choose a format that does"
        )
    options = {keys[key]: value for key, value in given.items()}
    try:
        writer_class.Options(**options)
    except ValidationError as exc:
        raise ConfigError(_explain(writer_class, exc, given, named)) from None
    try:  # a writer may check more than its model does
        writer_class.validate_options(**options)
    except ConfigError as exc:
        raise ConfigError(f"{', '.join(named(k) for k in given)}: {exc}") from None
    return options


def _explain(
    writer_class: type[Writer],
    exc: ValidationError,
    given: Mapping[str, Any],
    named: Callable[[str], str],
) -> str:
    """One sentence per refused value: the key, its value, what the format takes."""
    from daq_storage.config import allowed_values  # only on this error path

    key_of = {option: key for key, option in writer_class.config_keys.items()}
    fields = writer_class.Options.model_fields
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        option = str(error["loc"][0]) if error["loc"] else ""
        key = key_of.get(option)
        if key is None or key not in given:  # a rule across options (or a default)
            keys = ", ".join(named(k) for k in given)
            them = "them" if len(given) > 1 else "it"
            problems.append(f"{keys}: the {writer_class.name} writer refuses {them}: {message}")
            continue
        takes = allowed_values(fields[option]) if option in fields else ""
        problems.append(
            f"{named(key)}: the {writer_class.name} writer cannot honour it ({message})"
            + (f"; it takes {takes}" if takes else "")
        )
    return "; ".join(problems)
