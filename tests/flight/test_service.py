"""The ring's Flight service against a client in another process: listing, live
subscriptions of tables and frames, a lapped subscriber, remote writes, token and TLS."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from daq_storage.errors import RingNotFound
from daq_storage.flight import FlightService
from daq_storage.ring import RingBuffer, RingReader
from tests.flight.conftest import RemoteClient, self_signed


@pytest.fixture
def writer(shm_path: Path) -> Iterator[RingBuffer]:
    ring = RingBuffer.create(shm_path, capacity_bytes=1 << 20)
    yield ring
    ring.close()
    ring.unlink()


def _table(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch({"x": pa.array(range(start, start + n), pa.int64())})


def test_lists_streams_and_serves_tables_and_frames_live(writer: RingBuffer,
                                                         agent: RemoteClient) -> None:  # fmt: skip
    for i in range(3):
        writer.write_batch(_table(10 * i, 2), stream="table")
        writer.write_frame(np.full((4, 6), i, np.uint16), stream="camera", frame_number=100 + i)
    with FlightService(writer.path) as service:
        assert service.url.startswith("grpc://127.0.0.1:")
        agent.connect(service.url)
        schemas = agent.streams()
        assert schemas["table"] == "x: int64"
        assert (
            "frame: extension<arrow.fixed_shape_tensor[value_type=uint16, shape=[4,6]]>"
            in (schemas["camera"])
        )
        # From the oldest: every record in the ring, then the ones written after.
        first = agent.subscribe("t", "table", "oldest")
        assert first["values"] == [0, 1, 10, 11, 20, 21]
        assert first["lost"] == 0
        # From the latest: the camera's newest frame, though a table record is newer.
        latest = agent.subscribe("c", "camera", "latest")
        assert latest["values"] == [102]
        last = writer.write_batch(_table(30, 2), stream="table")
        writer.write_frame(np.full((4, 6), 3, np.uint16), stream="camera", frame_number=103)
        frame = writer.write_frame(np.full((4, 6), 4, np.uint16), stream="camera",
                                   frame_number=104)  # fmt: skip
        assert agent.collect("t", last)["values"] == [30, 31]
        assert agent.collect("c", frame)["values"] == [103, 104]
        agent.close_all()


def test_a_lapped_subscriber_skips_ahead_with_the_exact_loss(
    writer: RingBuffer, agent: RemoteClient
) -> None:
    frame = np.zeros((256, 256), np.uint8)  # 64 KiB: a 1 MiB ring holds 15
    for i in range(4):
        writer.write_frame(frame, stream="camera", frame_number=i)
    with FlightService(writer.path) as service:
        agent.connect(service.url)
        assert agent.subscribe("slow", "camera", "oldest")["values"] == [0, 1, 2, 3]
        # The client reads nothing more while the writer writes 64 MiB: far more than
        # the ring, gRPC's windows and the sockets' buffers hold together.
        written = 1000
        seqs = [writer.write_frame(frame, stream="camera", frame_number=4 + i)
                for i in range(written)]  # fmt: skip
        assert seqs == list(range(4, 4 + written))  # every write returned, none refused
        stats = writer.stats()
        assert (stats.written, stats.dropped, stats.readers) == (4 + written, 0, [])
        got = agent.collect("slow", seqs[-1])
        numbers = got["values"]
        assert got["lost"] > 0
        assert got["rows"] + got["lost"] == written  # exact: delivered + lost = written
        assert numbers == sorted(set(numbers))
        assert numbers[-1] == 3 + written
        assert len(numbers) == got["rows"]
        agent.close_all()


def test_put_writes_tables_and_frames_into_the_ring(shm_path: Path, agent: RemoteClient) -> None:
    with FlightService(shm_path, writable=True, capacity_bytes=1 << 20) as service:
        agent.connect(service.url)
        agent.put("table", _table(0, 3))
        agent.put("table", pa.Table.from_batches([_table(3, 2)]))
        frames = np.arange(3 * 2 * 5, dtype=np.float32).reshape(3, 2, 5)
        agent.put_frames("camera", frames, [10, 20, 30], [7, 8, 9])
        with RingReader.open(shm_path) as reader:
            records = reader.read_many()
            assert [r.stream for r in records] == ["table", "table", "camera", "camera", "camera"]
            assert records[0].batch()["x"].to_pylist() == [0, 1, 2]
            assert records[1].batch()["x"].to_pylist() == [3, 4]
    shm_path.unlink()
    np.testing.assert_array_equal(np.stack([r.array() for r in records[2:]]), frames)
    assert [(r.timestamp_ns, r.frame_number) for r in records[2:]] == [(10, 7), (20, 8), (30, 9)]


def test_put_to_a_read_only_service_and_unknown_streams_are_refused(
    writer: RingBuffer, agent: RemoteClient
) -> None:
    writer.write_batch(_table(0, 1), stream="table")
    with FlightService(writer.path) as service:
        agent.connect(service.url)
        with pytest.raises(RemoteClient.Refused) as refused:
            agent.put("table", _table(0, 1))
        assert refused.value.kind == "ServiceError"
        assert "only reads ring" in refused.value.message
        assert "--writable" in refused.value.message
        with pytest.raises(RemoteClient.Refused) as refused:
            agent.subscribe("x", "nothing", "oldest")
        assert "holds no record of stream 'nothing'" in refused.value.message
        agent.close_all()


def test_token_is_required_over_tls(writer: RingBuffer, agent: RemoteClient,
                                    tmp_path: Path) -> None:  # fmt: skip
    writer.write_batch(_table(0, 1), stream="table")
    cert, key = self_signed(tmp_path)
    pem = cert.read_bytes()
    with FlightService(writer.path, token="s3cret", tls_cert=cert, tls_key=key) as service:
        assert service.url.startswith("grpc+tls://127.0.0.1:")
        for token in (None, "wrong"):
            agent.connect(service.url, token, pem)
            with pytest.raises(RemoteClient.Refused) as refused:
                agent.streams()
            assert refused.value.kind == "ServiceError"
            assert "refused" in refused.value.message
            assert "requires a token" in (refused.value.message)
        with pytest.raises(RemoteClient.Refused) as refused:
            agent.raw_list(service.url, pem)
        assert refused.value.kind == "FlightUnauthenticatedError"
        agent.connect(service.url, "s3cret", pem)
        assert list(agent.streams()) == ["table"]
        agent.close_all()


def test_binds_to_loopback_by_default(writer: RingBuffer) -> None:
    with FlightService(writer.path) as service:
        listening = _listening(service.port)
    assert listening == ["127.0.0.1"]


def _listening(port: int) -> list[str]:
    """The addresses listening on ``port``, IPv4-mapped IPv6 ones as IPv4 (from
    /proc/net/tcp and tcp6: hex words in the machine's little-endian order)."""
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:
                continue
            raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1]
                           for i in range(0, len(address), 8))  # fmt: skip
            ip = ipaddress.ip_address(raw)
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            found.append(str(mapped or ip))
    return found


def test_a_missing_ring_is_refused(shm_path: Path) -> None:
    with pytest.raises(RingNotFound):
        FlightService(shm_path)


def test_a_schema_change_ends_the_stream_and_the_client_resumes_after_it(
    writer: RingBuffer,
) -> None:
    """A Flight stream has one schema: a change ends it after the last batch of the old
    one, and the client helper resubscribes after that record, losing nothing."""
    from daq_storage.flight import connect

    writer.write_batch(_table(0, 2), stream="table")
    with (
        FlightService(writer.path) as service,
        connect(service.url) as client,
        client.subscribe("table", start="oldest") as subscription,
    ):
        batches = iter(subscription)
        first = next(batches)
        assert first.data["x"].to_pylist() == [0, 1]
        changed = pa.record_batch({"x": pa.array(["a", "b"]), "y": [1.0, 2.0]})
        writer.write_batch(changed, stream="table")
        writer.write_batch(_table(5, 1), stream="table")  # and back again
        second = next(batches)
        assert second.data.schema.names == ["x", "y"]
        assert second.data["x"].to_pylist() == ["a", "b"]
        third = next(batches)
        assert third.data["x"].to_pylist() == [5]
        assert subscription.lost_total == 0
        assert (first.info.lost, second.info.lost, third.info.lost) == (0, 0, 0)
