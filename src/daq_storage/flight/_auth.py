"""The service's token check: a gRPC server middleware that refuses a call without
``Authorization: Bearer <token>`` before any handler runs."""

from __future__ import annotations

import hmac
from typing import Any

import pyarrow.flight as fl

__all__ = ["TokenMiddlewareFactory", "bearer_headers"]


def bearer_headers(token: str | None) -> list[tuple[bytes, bytes]]:
    """The call headers that present ``token`` (none without one)."""
    return [] if token is None else [(b"authorization", b"Bearer " + token.encode())]


class TokenMiddlewareFactory(fl.ServerMiddlewareFactory):  # type: ignore[misc]
    """Refuses every call (``FlightUnauthenticatedError``) whose ``authorization``
    header is not ``Bearer <token>``; compares in constant time."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._expected = ("Bearer " + token).encode()

    def start_call(self, info: Any, headers: dict[str, list[str | bytes]]) -> None:
        values = headers.get("authorization") or headers.get("Authorization") or []
        for value in values:
            given = value if isinstance(value, bytes) else value.encode()
            if hmac.compare_digest(given, self._expected):
                return None
        what = "a wrong token" if values else "no token"
        raise fl.FlightUnauthenticatedError(
            f"the ring's Flight service requires a token (Authorization: Bearer <token>); "
            f"this call presented {what}"
        )
