"""``daq-storage convert``: being built (issue 14)."""

from __future__ import annotations

import click

__all__ = ["convert"]


@click.command("convert", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def convert(args: tuple[str, ...]) -> None:
    """Not built yet."""
    raise click.UsageError("daq-storage convert is not built yet")
