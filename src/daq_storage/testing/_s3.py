"""An S3-compatible server on loopback for tests and benchmarks: moto's server mode in a
process of its own (so a test can kill it mid-run, as a network that goes down)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from daq_storage.location import S3Options

__all__ = ["S3Server", "s3_server"]

_RUNNING = re.compile(r"Running on (http://127\.0\.0\.1:\d+)")
#: The keys moto accepts (it checks none); tests pass them explicitly or by environment.
ACCESS_KEY = "daq-storage-test"
SECRET_KEY = "daq-storage-test-secret"
REGION = "us-east-1"
#: The thread that reads the server's log (it lives as long as the server).
DRAIN_THREAD = "daq_storage_s3_server_log"


class S3Server:
    """A running moto server: its endpoint, and the options and environment reaching it."""

    def __init__(self, process: subprocess.Popen[str], endpoint_url: str) -> None:
        self.process = process
        self.endpoint_url = endpoint_url

    def options(self, **overrides: object) -> S3Options:
        """:class:`S3Options` for this server (``overrides`` replace fields)."""
        fields: dict[str, object] = {
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "retry_timeout_s": 5.0,
        }
        fields.update(overrides)
        return S3Options.coerce(fields)

    def environ(self) -> dict[str, str]:
        """The standard ``AWS_*`` variables for this server (for a child process)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    def create_bucket(self, name: str | None = None) -> str:
        """Create bucket ``name`` (default: a fresh unique name) and return its name."""
        name = name or f"test-{uuid.uuid4().hex[:20]}"
        request = urllib.request.Request(f"{self.endpoint_url}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        return name

    def kill(self) -> None:
        """Kill the server at once (a network that goes down)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """Start moto's S3 server on a free loopback port; stop it on exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    endpoint = None
    seen = []
    for line in process.stderr:  # until werkzeug says where it listens
        seen.append(line)
        found = _RUNNING.search(line)
        if found:
            endpoint = found[1]
            break
    if endpoint is None:
        process.wait()
        process.stderr.close()
        raise RuntimeError("moto's S3 server did not start: " + "".join(seen)[-2000:])
    drain = threading.Thread(target=_drain, args=(process.stderr,), name=DRAIN_THREAD, daemon=True)
    drain.start()
    server = S3Server(process, endpoint)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        drain.join(10)
        process.stderr.close()
