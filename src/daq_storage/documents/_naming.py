"""A run's file names: a template filled from its start document (as suitcase does),
then the project's naming convention (``{name}_{YYYY-MM-DD}_{HH-MM-SS}_v{N}``)."""

from __future__ import annotations

import contextlib
import errno
import string
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from daq_storage.errors import ConfigError, DocumentError, InvalidName, StorageIOError
from daq_storage.naming import claim_path, next_path, sanitize_name
from daq_storage.writers import Writer

__all__ = ["DEFAULT_TEMPLATE", "check_template", "open_output", "run_name", "run_time"]

#: The default file-name template: the plan's name and the scan id (``count_12``).
DEFAULT_TEMPLATE = "{plan_name}_{scan_id}"
_NAME_ATTEMPTS = 100


def check_template(template: object) -> str:
    """``template`` when it is a ``str.format`` template of start-document fields.

    Raises:
        ConfigError: not text, or not a valid template (an unbalanced brace, a positional
            field such as ``{}`` or ``{0}``).
    """
    if not isinstance(template, str) or not template:
        raise ConfigError(f"file_template must be non-empty text, got {template!r}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"file_template {template!r} is not a valid template: {exc}") from None
    for field in fields:
        if not field or field[0].isdigit():
            raise ConfigError(
                f"file_template {template!r}: each field names a start-document key "
                f"(such as {{plan_name}}), got {{{field}}}"
            )
    return template


def run_name(template: str, start: Mapping[str, Any]) -> str:
    """The run's name: ``template`` filled from ``start`` and made safe for a file name.

    ``{plan_name}`` defaults to ``"run"`` and ``{scan_id}`` to the uid's first 8
    characters when the start document lacks them; ``{uid}`` is the run's uid.

    Raises:
        DocumentError: the template names a key the start document does not have, or
            the result has no usable characters.
    """
    uid = str(start.get("uid", ""))
    fields: dict[str, Any] = {"plan_name": "run", "scan_id": uid[:8]}
    fields.update(start)
    try:
        text = template.format_map(fields)
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
        raise DocumentError(
            f"start document (uid {uid!r}): file_template {template!r} cannot be filled: "
            f"{type(exc).__name__} {exc}"
        ) from None
    try:
        return sanitize_name(text, what="run name")
    except InvalidName as exc:
        raise DocumentError(f"start document (uid {uid!r}): {exc}") from None


def run_time(start: Mapping[str, Any]) -> datetime:
    """The start document's ``time`` (local time, as the naming convention uses)."""
    return datetime.fromtimestamp(float(start["time"]))


def open_output(
    cls: type[Writer], directory: Path, name: str, when: datetime, options: Mapping[str, Any]
) -> Writer:
    """A new writer of ``cls`` under the next free ``{name}_{date}_{time}_v{N}`` in
    ``directory``: nothing that exists is overwritten."""
    if not cls.path_suffix:  # a directory of per-stream files: claimed, then filled
        path = claim_path(directory, name, "", when=when, directory=True)
        try:
            return cls(path, **options)
        except BaseException:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise
    # A file (.h5) or store (.zarr) its writer makes exclusively: a name taken between
    # next_path and the writer's open gets the next version.
    for _ in range(_NAME_ATTEMPTS):
        path = next_path(directory, name, cls.path_suffix, when=when)
        try:
            return cls(path, **options)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    raise StorageIOError(
        errno.EEXIST, f"no free name for a new {cls.name} output after {_NAME_ATTEMPTS} attempts",
        str(directory),
    )  # fmt: skip
