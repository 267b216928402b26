"""The ring served over Arrow Flight: :class:`FlightService`."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as fl

from daq_storage.errors import ConfigError, DaqStorageError, RingNotFound, ServiceError
from daq_storage.flight._auth import TokenMiddlewareFactory
from daq_storage.flight._batches import frames_of, is_frame_schema, record_schema
from daq_storage.flight._subscriber import Subscriber
from daq_storage.flight._ticket import Ticket
from daq_storage.ring import RingBuffer, RingReader

__all__ = ["DEFAULT_HOST", "FlightService"]

#: Where the service listens unless told otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"


def _pem(value: str | os.PathLike[str] | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the TLS {what} {value}: {exc.strerror}") from None


def _refused(exc: DaqStorageError) -> fl.FlightServerError:
    return fl.FlightServerError(f"{type(exc).__name__}: {exc}")


class FlightService(fl.FlightServerBase):  # type: ignore[misc]
    """An Arrow Flight service over the ring at ``ring``; serving once constructed.

    - ``ListFlights`` / ``GetFlightInfo``: one flight per stream (descriptor path = the
      stream's name) with its schema and a ticket from the oldest record in the ring.
    - ``DoGet``: a ticket's stream, live, until the client cancels or the service stops.
      Each subscriber is an anonymous ring reader: the writer never waits for it; a
      lapped subscriber skips ahead and the next batch's metadata says how many records
      it lost (docs/flight.md).
    - ``DoPut`` (``writable`` only): batches written into the ring as a stream, frames
      when the batch has the frame layout.

    Args:
        ring: the ring file.
        host, port: where to listen (``port=0``: any free port, see :attr:`port`).
        token: when set, every call must present ``Authorization: Bearer <token>``.
        tls_cert, tls_key: PEM certificate and key (paths or bytes): serve over TLS.
        writable: attach as the ring's writer (creating the ring with
            ``capacity_bytes`` when it does not exist), so that clients may ``DoPut``.
        trust_foreign: as for :meth:`RingReader.open`.

    Raises:
        RingNotFound: no ring at ``ring`` and not ``writable``.
        RingBusy: ``writable`` and another process is the ring's writer.
        ConfigError: only one of ``tls_cert``/``tls_key``, or either cannot be read.
        ServiceError: the address cannot be bound.
    """

    def __init__(
        self,
        ring: str | os.PathLike[str],
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        token: str | None = None,
        tls_cert: str | os.PathLike[str] | bytes | None = None,
        tls_key: str | os.PathLike[str] | bytes | None = None,
        writable: bool = False,
        capacity_bytes: int = 256 << 20,
        trust_foreign: bool = False,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("TLS needs both a certificate and its key (tls_cert, tls_key)")
        if token is not None and not token:
            raise ConfigError("the token must not be empty")
        self.ring_path = Path(ring)
        self._trust = trust_foreign
        self._stopping = threading.Event()
        self._write_lock = threading.Lock()  # the ring has one writer; calls share it
        self.writer: RingBuffer | None = None
        if writable:
            if self.ring_path.exists():
                self.writer = RingBuffer.open(self.ring_path, trust_foreign=trust_foreign)
            else:
                self.writer = RingBuffer.create(self.ring_path, capacity_bytes=capacity_bytes)
        else:
            RingReader.open(self.ring_path, trust_foreign=trust_foreign).close()  # exists?
        certificates = None
        scheme = "grpc"
        if tls_cert is not None and tls_key is not None:
            certificates = [fl.CertKeyPair(_pem(tls_cert, "certificate"), _pem(tls_key, "key"))]
            scheme = "grpc+tls"
        middleware = {"token": TokenMiddlewareFactory(token)} if token is not None else None
        try:
            super().__init__(f"{scheme}://{host}:{port}", tls_certificates=certificates,
                             middleware=middleware)  # fmt: skip
        except (pa.ArrowException, OSError) as exc:
            if self.writer is not None:
                self.writer.close()
            raise ServiceError(f"cannot serve ring {ring} on {host}:{port}: {exc}") from None
        self.host = host
        self.url = f"{scheme}://{host}:{self.port}"
        self.location = fl.Location(self.url)
        self.subscribers: set[Subscriber] = set()

    # ------------------------------------------------------------------ lifecycle
    def shutdown(self) -> None:
        """Stop serving: live ``DoGet`` streams end (within a poll interval), then the
        server stops; the ring's writer, if the service holds it, is released."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        super().shutdown()
        with self._write_lock:
            if self.writer is not None:
                self.writer.close()

    def __enter__(self) -> FlightService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ listing
    def _reader(self) -> RingReader:
        try:
            return RingReader.open(self.ring_path, start="latest", trust_foreign=self._trust)
        except RingNotFound as exc:
            raise _refused(exc) from None

    def _info(self, reader: RingReader, stream: str) -> fl.FlightInfo | None:
        latest = reader.read_latest(stream)
        if latest is None:
            return None
        descriptor = fl.FlightDescriptor.for_path(stream)
        endpoint = fl.FlightEndpoint(Ticket(stream, "oldest").encode(), [self.location])
        return fl.FlightInfo(record_schema(latest), descriptor, [endpoint], -1, -1)

    def list_flights(self, context: Any, criteria: bytes) -> Iterator[fl.FlightInfo]:
        with self._reader() as reader:
            infos = [self._info(reader, stream) for stream in reader.streams]
        yield from (info for info in infos if info is not None)

    def get_flight_info(self, context: Any, descriptor: fl.FlightDescriptor) -> fl.FlightInfo:
        stream = self._stream_of(descriptor)
        with self._reader() as reader:
            info = self._info(reader, stream)
        if info is None:
            raise fl.FlightServerError(
                f"ServiceError: ring {self.ring_path} holds no record of stream {stream!r}"
            )
        return info

    def get_schema(self, context: Any, descriptor: fl.FlightDescriptor) -> fl.SchemaResult:
        return fl.SchemaResult(self.get_flight_info(context, descriptor).schema)

    @staticmethod
    def _stream_of(descriptor: fl.FlightDescriptor) -> str:
        path = descriptor.path or []
        if descriptor.descriptor_type != fl.DescriptorType.PATH or len(path) != 1:
            raise fl.FlightServerError(
                "ServiceError: a descriptor names one stream: FlightDescriptor.for_path(name)"
            )
        return bytes(path[0]).decode(errors="replace")

    # ------------------------------------------------------------------ streaming
    def do_get(self, context: Any, ticket: fl.Ticket) -> fl.GeneratorStream:
        try:
            parsed = Ticket.decode(ticket.ticket)
            subscriber = Subscriber(
                self.ring_path, parsed, lambda: self._stopping.is_set() or context.is_cancelled()
            )
        except DaqStorageError as exc:
            raise _refused(exc) from None
        self.subscribers.add(subscriber)

        def batches() -> Iterator[tuple[pa.RecordBatch, bytes]]:
            try:
                yield from subscriber.batches()
            except DaqStorageError as exc:
                raise _refused(exc) from None
            finally:
                self.subscribers.discard(subscriber)

        return fl.GeneratorStream(subscriber.schema, batches())

    def do_put(self, context: Any, descriptor: fl.FlightDescriptor,
               reader: fl.MetadataRecordBatchReader, writer: Any) -> None:  # fmt: skip
        stream = self._stream_of(descriptor)
        if self.writer is None:
            raise fl.FlightServerError(
                f"ServiceError: this service only reads ring {self.ring_path}: another "
                "process is its writer (serve it with --writable to accept DoPut)"
            )
        frames = is_frame_schema(reader.schema)
        for chunk in reader:
            batch = chunk.data
            if batch is None or batch.num_rows == 0:
                continue
            try:
                with self._write_lock:
                    if self._stopping.is_set():
                        raise fl.FlightServerError("ServiceError: the service is stopping")
                    self._put(stream, batch, frames)
            except DaqStorageError as exc:
                raise _refused(exc) from None

    def _put(self, stream: str, batch: pa.RecordBatch, frames: bool) -> None:
        writer = self.writer
        assert writer is not None
        if not frames:
            writer.write_batch(batch, stream=stream)
            return
        arrays, stamps, numbers = frames_of(batch)
        for array, stamp, number in zip(arrays, stamps, numbers, strict=True):
            writer.write_frame(array, stream=stream, timestamp_ns=int(stamp),
                               frame_number=int(number))  # fmt: skip
