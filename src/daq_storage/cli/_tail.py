"""``daq-storage tail``: being built (issue 14)."""

from __future__ import annotations

import click

__all__ = ["tail"]


@click.command("tail", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def tail(args: tuple[str, ...]) -> None:
    """Not built yet."""
    raise click.UsageError("daq-storage tail is not built yet")
