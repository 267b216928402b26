"""``daq-storage inspect``: being built (issue 14)."""

from __future__ import annotations

import click

__all__ = ["inspect"]


@click.command("inspect", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def inspect(args: tuple[str, ...]) -> None:
    """Not built yet."""
    raise click.UsageError("daq-storage inspect is not built yet")
