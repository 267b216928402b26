"""``daq-storage plot``: being built (issue 14)."""

from __future__ import annotations

import click

__all__ = ["plot"]


@click.command("plot", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def plot(args: tuple[str, ...]) -> None:
    """Not built yet."""
    raise click.UsageError("daq-storage plot is not built yet")
