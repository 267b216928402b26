"""The tickets a ring's Flight service hands out and accepts, and the app metadata of
the batches it sends (both JSON, documented in docs/flight.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from daq_storage.errors import ServiceError, describe_value

__all__ = ["BatchInfo", "Start", "Ticket"]

Start = Literal["oldest", "latest"]


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a ``DoGet`` streams: ``{"stream": name, "start": "oldest" | "latest"}``,
    optionally ``"after_seq": n`` (only records after ring sequence number ``n``: a
    client resuming where it stopped; records between that are gone count as lost)."""

    stream: str
    start: Start = "oldest"
    after_seq: int | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {"stream": self.stream, "start": self.start}
        if self.after_seq is not None:
            body["after_seq"] = self.after_seq
        return json.dumps(body).encode()

    @classmethod
    def decode(cls, data: bytes) -> Ticket:
        """Raises: ServiceError: not a ticket of this service (says what is wrong)."""
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ServiceError(
                f'ticket {data[:80]!r} is not JSON: {{"stream": ..., "start": "oldest"|"latest"}}'
            ) from None
        if not isinstance(body, dict) or not isinstance(body.get("stream"), str):
            raise ServiceError(f"ticket {describe_value(body)} names no stream")
        start = body.get("start", "oldest")
        if start not in ("oldest", "latest"):
            raise ServiceError(f"ticket start must be 'oldest' or 'latest', got {start!r}")
        after = body.get("after_seq")
        if after is not None and (isinstance(after, bool) or not isinstance(after, int)
                                  or after < -1):  # fmt: skip
            raise ServiceError(f"ticket after_seq must be an int >= -1, got {after!r}")
        return cls(body["stream"], start, after)


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """The app metadata of each batch a ``DoGet`` sends.

    Attributes:
        first_seq, last_seq: ring sequence numbers of the batch's first and last record
            (an empty batch: both the last record sent before it, ``-1`` for none).
        lost: ring records this subscriber skipped since its previous batch, because the
            ring's writer overwrote them before they were sent (a lapped subscriber).
            The ring numbers records of all its streams in one sequence, so in a ring
            with several streams the count includes other streams' records.
        lost_total: ``lost`` summed since the subscription started.
        schema_changed: the stream's schema changes after this batch: the service ends
            the stream here, and a client subscribes again with ``after_seq=last_seq``
            (the client helper does).
    """

    first_seq: int
    last_seq: int
    lost: int = 0
    lost_total: int = 0
    schema_changed: bool = False

    def encode(self) -> bytes:
        return json.dumps({"first_seq": self.first_seq, "last_seq": self.last_seq,
                           "lost": self.lost, "lost_total": self.lost_total,
                           "schema_changed": self.schema_changed}).encode()  # fmt: skip

    @classmethod
    def decode(cls, data: bytes | None) -> BatchInfo:
        """Raises: ServiceError: the metadata is not this service's."""
        try:
            body = json.loads(data or b"")
            return cls(int(body["first_seq"]), int(body["last_seq"]), int(body["lost"]),
                       int(body["lost_total"]), bool(body["schema_changed"]))  # fmt: skip
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            raise ServiceError(
                f"batch metadata {data!r:.80} is not a daq-storage Flight service's"
            ) from None
