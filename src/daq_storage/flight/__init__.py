"""The ring served over Arrow Flight: live subscribers and remote writers
(docs/flight.md)."""

from daq_storage.flight._batches import frame_schema, frames_of
from daq_storage.flight._client import Batch, FlightClient, Subscription, connect
from daq_storage.flight._service import DEFAULT_HOST, FlightService
from daq_storage.flight._ticket import BatchInfo, Ticket

__all__ = [
    "DEFAULT_HOST",
    "Batch",
    "BatchInfo",
    "FlightClient",
    "FlightService",
    "Subscription",
    "Ticket",
    "connect",
    "frame_schema",
    "frames_of",
]
