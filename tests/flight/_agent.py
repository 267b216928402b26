"""A Flight client in its own process, driven by a test over stdin/stdout: each
command is a pickled ``(name, args)``, each answer a pickled ``("ok", value)`` or
``("error", type name, message)``. Subscriptions stay open between commands, and are
read only when a command says so: a subscriber that stops reading is one that gets no
``collect``."""

from __future__ import annotations

import pickle
import struct
import sys
from typing import IO, Any

import pyarrow.flight as fl

from daq_storage.flight import Batch, FlightClient, Subscription, connect

_SIZE = struct.Struct("<Q")


def send(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value)
    stream.write(_SIZE.pack(len(data)) + data)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    head = stream.read(_SIZE.size)
    if len(head) < _SIZE.size:
        raise EOFError
    return pickle.loads(stream.read(_SIZE.unpack(head)[0]))


def _summary(batches: list[Batch]) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": 0, "lost": 0, "seqs": [], "values": []}
    for batch in batches:
        out["rows"] += batch.data.num_rows
        out["lost"] += batch.lost
        out["seqs"].append((batch.info.first_seq, batch.info.last_seq))
        if "frame" in batch.data.schema.names:
            out["values"] += batch.data.column("frame_number").to_pylist()
        else:
            out["values"] += batch.data.column(0).to_pylist()
    return out


class Agent:
    def __init__(self) -> None:
        self.client: FlightClient | None = None
        self.subscriptions: dict[str, tuple[Subscription, Any]] = {}

    def connect(self, url: str, token: str | None = None, certs: bytes | None = None) -> None:
        self.close_all()
        self.client = connect(url, token=token, tls_root_certs=certs)

    def close_all(self) -> None:
        for subscription, _ in self.subscriptions.values():
            subscription.close()
        self.subscriptions.clear()
        if self.client is not None:
            self.client.close()
            self.client = None

    def streams(self) -> dict[str, str]:
        assert self.client is not None
        return {name: schema.to_string() for name, schema in self.client.streams().items()}

    def subscribe(self, name: str, stream: str, start: str) -> dict[str, Any]:
        """Subscribe and read the first batch only."""
        assert self.client is not None
        subscription = self.client.subscribe(stream, start=start)  # type: ignore[arg-type]
        batches = iter(subscription)
        self.subscriptions[name] = (subscription, batches)
        return _summary([next(batches)])

    def collect(self, name: str, until_seq: int) -> dict[str, Any]:
        """Read on until a batch ends at or after ``until_seq``."""
        _, batches = self.subscriptions[name]
        got = []
        for batch in batches:
            got.append(batch)
            if batch.info.last_seq >= until_seq:
                break
        return _summary(got)

    def put(self, stream: str, data: Any) -> None:
        assert self.client is not None
        self.client.put(stream, data)

    def put_frames(self, stream: str, frames: Any, stamps: Any, numbers: Any) -> None:
        assert self.client is not None
        self.client.put_frames(stream, frames, timestamps_ns=stamps, frame_numbers=numbers)

    def raw_list(self, url: str, certs: bytes | None = None) -> int:
        """ListFlights with pyarrow's own client, presenting no token."""
        kwargs = {} if certs is None else {"tls_root_certs": certs}
        with fl.FlightClient(url, **kwargs) as client:
            return len(list(client.list_flights()))


def main() -> None:
    agent = Agent()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            name, args = receive(stdin)
        except EOFError:
            break
        try:
            send(stdout, ("ok", getattr(agent, name)(*args)))
        except Exception as exc:  # reported to the test, which asserts on it
            send(stdout, ("error", type(exc).__name__, str(exc)))
    agent.close_all()


if __name__ == "__main__":
    main()
