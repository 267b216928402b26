"""A Flight client process shared by the module's tests (see ``_agent.py``)."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.flight._agent import receive, send

ROOT = Path(__file__).resolve().parents[2]


class RemoteClient:
    """Calls the agent's methods; a refused call raises ``Refused``."""

    class Refused(Exception):
        def __init__(self, kind: str, message: str) -> None:
            super().__init__(f"{kind}: {message}")
            self.kind = kind
            self.message = message

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tests.flight._agent"],
                                        cwd=ROOT, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)  # fmt: skip

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            assert self.process.stdin is not None
            assert self.process.stdout is not None
            send(self.process.stdin, (name, args))
            answer = receive(self.process.stdout)
            if answer[0] == "error":
                raise RemoteClient.Refused(answer[1], answer[2])
            return answer[1]

        return call

    def stop(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(30)
        self.process.stdout.close()


@pytest.fixture(scope="module")
def remote() -> Iterator[RemoteClient]:
    client = RemoteClient()
    yield client
    client.stop()


@pytest.fixture
def agent(remote: RemoteClient) -> Iterator[RemoteClient]:
    """The module's client process, its connection and subscriptions closed after the test."""
    yield remote
    remote.close_all()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path
