"""The service commands: ``daemon``, ``simulate`` and ``status``."""

from __future__ import annotations

import click

__all__ = ["register_service_commands"]


def register_service_commands(group: click.Group) -> None:
    """Add the service commands to ``group``."""
