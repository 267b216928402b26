"""``daq-storage serve``: a ring served over Arrow Flight until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from daq_storage.cli._common import console, reports_errors
from daq_storage.errors import ConfigError

__all__ = ["serve"]

#: Seconds a stopping service waits for its calls to end (a client that stopped
#: reading holds its call open) before the process exits anyway.
STOP_GRACE_S = 5.0


def _token(token: str | None, token_file: Path | None) -> str | None:
    if token is not None and token_file is not None:
        raise click.UsageError("give --token or --token-file, not both")
    if token_file is None:
        return token
    try:
        text = token_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {token_file}: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"the token file {token_file} is empty")
    return text


@click.command()
@click.option(
    "--ring", "ring", required=True, type=click.Path(path_type=Path), help="The ring file to serve."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    required=True,
    help="TCP port (0: any free port, printed).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface).",
)
@click.option("--token", default=None, help="Require 'Authorization: Bearer TOKEN'.")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read the token from this file (kept out of the process list).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PEM certificate: serve over TLS (with --tls-key).",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PEM private key of --tls-cert.",
)
@click.option(
    "--writable", is_flag=True, help="Be the ring's writer (create it if missing) and accept DoPut."
)
@reports_errors
def serve(ring: Path, port: int, host: str, token: str | None, token_file: Path | None,
          tls_cert: Path | None, tls_key: Path | None, writable: bool) -> None:  # fmt: skip
    """Serve RING's streams over Arrow Flight (docs/flight.md) until Ctrl-C or SIGTERM."""
    from daq_storage.flight import FlightService

    secret = _token(token, token_file)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        service = FlightService(ring, host=host, port=port, token=secret, tls_cert=tls_cert,
                                tls_key=tls_key, writable=writable)  # fmt: skip
        mode = "read-write" if writable else "read-only"
        console.print(f"serving ring {ring} ({mode}) at {service.url}", soft_wrap=True)
        while not stop.wait(0.5):
            pass
        stopper = threading.Thread(target=service.shutdown, name="flight-shutdown", daemon=True)
        stopper.start()
        stopper.join(STOP_GRACE_S)
        console.print("stopped" if not stopper.is_alive() else
                      f"stopped (calls still open after {STOP_GRACE_S:g} s were cut)")  # fmt: skip
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
