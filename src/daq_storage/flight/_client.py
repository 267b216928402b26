"""The client helper: :func:`connect` to a ring's Flight service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.flight as fl

from daq_storage.errors import ServiceError
from daq_storage.flight._auth import bearer_headers
from daq_storage.flight._batches import frames_of
from daq_storage.flight._ticket import BatchInfo, Start, Ticket
from daq_storage.schema import FrameBlock, frames_to_batch

__all__ = ["Batch", "FlightClient", "Subscription", "connect"]


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch of a subscription with what the service says about it.

    Attributes:
        data: the record batch (a frame stream's has ``timestamp_ns``,
            ``frame_number`` and a ``fixed_shape_tensor`` column ``frame``).
        info: sequence numbers and the records lost before it (:class:`BatchInfo`).
    """

    data: pa.RecordBatch
    info: BatchInfo

    @property
    def lost(self) -> int:
        """Ring records the subscription skipped just before this batch."""
        return self.info.lost

    def frames(self) -> npt.NDArray[Any]:
        """A frame batch's frames as one ``(n, *shape)`` array.

        Raises:
            SchemaMismatch: not a frame batch.
        """
        return frames_of(self.data)[0]


def _error(url: str, doing: str, exc: BaseException) -> ServiceError:
    text = str(exc).split(". Detail:")[0].strip().removeprefix("ServiceError: ")
    if isinstance(exc, fl.FlightUnauthenticatedError):
        cause = f"refused: {text}"
    elif isinstance(exc, fl.FlightUnavailableError):
        cause = f"cannot reach the service ({text})"
    else:
        cause = text
    return ServiceError(f"Flight service {url}: {doing}: {cause}")


class Subscription:
    """A live subscription to one stream: iterate for :class:`Batch` objects; ends when
    the service stops or after :meth:`close` (from another thread too)."""

    def __init__(self, client: FlightClient, stream: str, start: Start) -> None:
        self._client = client
        self.stream = stream
        self.lost_total = 0
        self._reader = client._get(Ticket(stream, start))
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Cancel the subscription."""
        self._closed = True
        self._reader.cancel()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Batch]:
        client = self._client
        while not self._closed:
            try:
                chunk = self._reader.read_chunk()
            except StopIteration:
                return
            except fl.FlightCancelledError:
                return
            except (pa.ArrowException, OSError) as exc:
                if self.closed:  # cancelled from another thread meanwhile
                    return
                raise _error(client.url, f"reading stream {self.stream!r}", exc) from None
            info = BatchInfo.decode(chunk.app_metadata.to_pybytes()
                                    if chunk.app_metadata else None)  # fmt: skip
            self.lost_total += info.lost
            if chunk.data.num_rows or info.lost:
                yield Batch(chunk.data, info)
            if info.schema_changed:  # the service ended this stream: resume after it
                self._reader = client._get(Ticket(self.stream, "oldest", info.last_seq))


class FlightClient:
    """A connection to a ring's Flight service (see :func:`connect`)."""

    def __init__(self, url: str, token: str | None, tls_root_certs: bytes | None) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if tls_root_certs is not None:
            kwargs["tls_root_certs"] = tls_root_certs
        try:
            self._client = fl.FlightClient(url, **kwargs)
        except (pa.ArrowException, OSError) as exc:
            raise _error(url, "connecting", exc) from None
        self._options = fl.FlightCallOptions(headers=bearer_headers(token))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> FlightClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def streams(self) -> dict[str, pa.Schema]:
        """Each stream's name and schema (ListFlights).

        Raises:
            ServiceError: refused (token), unreachable, or the service failed.
        """
        try:
            infos = list(self._client.list_flights(options=self._options))
        except (pa.ArrowException, OSError) as exc:
            raise _error(self.url, "listing streams", exc) from None
        return {bytes(info.descriptor.path[0]).decode(): info.schema for info in infos}

    def _get(self, ticket: Ticket) -> fl.FlightStreamReader:
        try:
            return self._client.do_get(fl.Ticket(ticket.encode()), options=self._options)
        except (pa.ArrowException, OSError) as exc:
            raise _error(self.url, f"subscribing to stream {ticket.stream!r}", exc) from None

    def subscribe(self, stream: str, *, start: Start = "oldest") -> Subscription:
        """Follow ``stream`` live from the ``"oldest"`` record in the ring or the
        ``"latest"``.

        Raises:
            ServiceError: refused, unreachable, or the ring holds no record of ``stream``.
        """
        return Subscription(self, stream, start)

    def put(self, stream: str, data: pa.RecordBatch | pa.Table) -> None:
        """Write ``data`` into the ring as ``stream`` (one ring record per batch; a batch
        of the frame layout as one frame record per row).

        Raises:
            ServiceError: refused (token, a service that is not the ring's writer, a
                batch the ring refuses), or unreachable.
        """
        descriptor = fl.FlightDescriptor.for_path(stream)
        try:
            writer, _ = self._client.do_put(descriptor, data.schema, options=self._options)
            with writer:
                if isinstance(data, pa.Table):
                    writer.write_table(data)
                else:
                    writer.write_batch(data)
        except (pa.ArrowException, OSError) as exc:
            raise _error(self.url, f"writing stream {stream!r}", exc) from None

    def put_frames(self, stream: str, frames: npt.NDArray[Any], *,
                   timestamps_ns: npt.ArrayLike, frame_numbers: npt.ArrayLike) -> None:  # fmt: skip
        """Write ``frames`` (an ``(n, *shape)`` array) into the ring as frame records."""
        block = FrameBlock(np.ascontiguousarray(frames), np.asarray(timestamps_ns, np.uint64),
                           np.asarray(frame_numbers, np.uint64))  # fmt: skip
        batch = frames_to_batch(block)
        self.put(stream, batch)


def connect(
    url: str,
    *,
    token: str | None = None,
    tls_root_certs: str | os.PathLike[str] | bytes | None = None,
) -> FlightClient:
    """Connect to a ring's Flight service at ``url`` (``grpc://host:port``, or
    ``grpc+tls://host:port`` with ``tls_root_certs``: the PEM certificate(s) to trust,
    a path or bytes).

    Raises:
        ServiceError: the URL is not a Flight location.
    """
    pem = None
    if tls_root_certs is not None:
        pem = (
            tls_root_certs
            if isinstance(tls_root_certs, bytes)
            else Path(tls_root_certs).read_bytes()
        )
    return FlightClient(url, token, pem)
