"""The Zarr writer on an S3-compatible object store (moto on loopback): frames and tables
read back over S3 with xarray and zarr after every flush while the writer is open, the
read API's ZarrReader on a bucket, refusal of an existing store and of a missing bucket,
a server that dies mid-run, and kill -9 of a writer process."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import threading
from typing import Any

import numpy as np
import obstore
import pyarrow as pa
import pytest
import xarray as xr
import zarr

from daq_storage.errors import StorageIOError
from daq_storage.location import S3Location, parse_location
from daq_storage.read._zarr import ZarrReader
from daq_storage.testing import s3_server
from daq_storage.testing._s3 import S3Server
from daq_storage.writers import ZarrWriter, open_writer
from tests.writers.kill_harness import kill_when, line_starting


def located(url: str, server: S3Server) -> S3Location:
    location = parse_location(url, server.options())
    assert isinstance(location, S3Location)
    return location


def sizes(location: S3Location) -> dict[str, int]:
    listed = obstore.list(location.object_store()).collect()
    return {o["path"]: o["size"] for o in listed}


def frames_of(first: int, count: int) -> np.ndarray:
    ids = np.arange(first, first + count, dtype=np.uint16)
    return (ids[:, None, None] * 3 + np.arange(12, dtype=np.uint16).reshape(3, 4)).astype(np.uint16)


def xarray_view(location: S3Location, group: str) -> xr.Dataset:
    found = xr.open_zarr(location.url, group=group, storage_options=location.fsspec_options())
    assert isinstance(found, xr.Dataset)
    return found


def zarr_view(location: S3Location) -> zarr.Group:
    """A fresh store, as another program opens the bucket."""
    return zarr.open_group(store=location.zarr_store(read_only=True), mode="r")


def array(group: zarr.Group, path: str) -> zarr.Array[Any]:
    found = group[path]
    assert isinstance(found, zarr.Array)
    return found


def test_every_flush_is_visible_whole_over_s3(s3_server: S3Server, s3_bucket: str) -> None:
    """Own shards (blosc), zarr-python's chunks (tables, ids, the seeds' builder) and
    documents go to the bucket; readers see exactly the flushed frames and rows after
    each flush, nothing before; stats count every object put; the read API opens the
    store in the bucket."""
    location = located(f"s3://{s3_bucket}/runs/run.zarr", s3_server)
    options = s3_server.options()
    writer = open_writer("zarr", location.url, storage_options=options, shard_frames=4,
                         chunk_size=5)  # fmt: skip
    assert isinstance(writer, ZarrWriter)
    assert list(sizes(location)) == ["zarr.json"]
    writer.write_frames("cam", frames_of(0, 6), timestamps_ns=np.arange(6) * 10)
    writer.write_batch("power", pa.record_batch({"v": np.arange(7.0), "n": np.arange(7)}))
    assert (writer.visible("cam"), writer.visible("power")) == (0, 0)
    assert "cam" not in zarr_view(location)  # data objects only: no stream to see yet
    writer.flush()
    assert (writer.visible("cam"), writer.visible("power")) == (6, 7)
    cam = xarray_view(location, "cam")
    np.testing.assert_array_equal(cam["frames"].values, frames_of(0, 6))
    assert cam["frame_number"].values.tolist() == list(range(6))
    np.testing.assert_array_equal(xarray_view(location, "power")["v"].values, np.arange(7.0))

    writer.write_frames("cam", frames_of(6, 5))  # completes the partial shard, and more
    writer.write_batch("power", pa.record_batch({"v": np.arange(7.0, 12.0),
                                                 "n": np.arange(7, 12)}))  # fmt: skip
    seen = zarr_view(location)  # unflushed frames are in no reader's view
    assert (array(seen, "cam/frames").shape[0], array(seen, "power/v").shape[0]) == (6, 7)
    writer.set_metadata("sample", "Si")
    writer.flush(durable=True)
    seen = zarr_view(location)
    np.testing.assert_array_equal(array(seen, "cam/frames")[:], frames_of(0, 11))
    assert np.asarray(array(seen, "power/n")[:]).tolist() == list(range(12))
    assert seen.attrs["sample"] == "Si"
    assert writer.stats.file_size == sum(sizes(location).values())
    described = writer.describe("cam")
    assert described.path == location
    assert described.parts[0].uri == location.url
    writer.create_array("scan/cube", (2, 4, 4), (1, 4, 4))  # the seeds' builder, same store
    writer.write_chunk("scan/cube", (1, 0, 0), np.ones((1, 4, 4), np.uint16))
    writer.close()
    assert np.asarray(array(zarr_view(location), "scan/cube")[:]).sum() == 16
    assert writer.stats.file_size == sum(sizes(location).values())

    reader = ZarrReader(location)
    assert reader.streams()["power"].rows == 12
    assert reader.frames("cam").read(slice(9, 11)).tolist() == frames_of(9, 2).tolist()
    assert next(reader.iter_batches("power", ["n"], 100)).column("n").to_pylist() == list(range(12))


def test_an_existing_store_and_a_missing_bucket_are_refused(
    s3_server: S3Server, s3_bucket: str
) -> None:
    url = f"s3://{s3_bucket}/run.zarr"
    options = s3_server.options()
    with ZarrWriter(url, storage_options=options) as first:
        with pytest.raises(StorageIOError, match="already holds objects") as caught:
            ZarrWriter(url, storage_options=options)  # a second writer, while open
        assert caught.value.errno == errno.EEXIST
        first.write_batch("s", pa.record_batch({"a": [1, 2]}))
    before = sizes(located(url, s3_server))
    with pytest.raises(StorageIOError, match="already holds objects"):
        open_writer("zarr", url, storage_options=options)  # closed: still never overwritten
    assert sizes(located(url, s3_server)) == before
    with pytest.raises(StorageIOError, match="no such bucket"):
        ZarrWriter("s3://no-such-bucket-here/run.zarr", storage_options=options)
    # a writer that stored nothing leaves nothing behind
    ZarrWriter(f"s3://{s3_bucket}/unused.zarr", storage_options=options).close()
    assert sizes(located(f"s3://{s3_bucket}/unused.zarr", s3_server)) == {}


def test_a_server_that_dies_mid_run_fails_the_flush_in_bounded_time() -> None:
    with s3_server() as server:
        bucket = server.create_bucket()
        options = server.options(retry_timeout_s=1.0)
        url = f"s3://{bucket}/run.zarr"
        writer = ZarrWriter(url, storage_options=options, shard_frames=2)
        writer.write_frames("cam", frames_of(0, 3))
        writer.flush()
        writer.write_frames("cam", frames_of(3, 4))  # written: the first shard, at least
        server.kill()
        with pytest.raises(StorageIOError, match=f"{url}.*cannot reach the object store"):
            writer.flush()
        assert (writer.visible("cam"), writer.accepted("cam")) == (3, 7)
        with pytest.raises(StorageIOError, match=url):
            writer.close()


_WRITER = """
import sys
import numpy as np, pyarrow as pa
from daq_storage.writers import open_writer
writer = open_writer("zarr", sys.argv[1], shard_frames=4, chunk_size=100)
n = 0
while True:
    ids = np.arange(n, n + 3)
    writer.write_frames("cam", np.broadcast_to(ids[:, None, None], (3, 8, 8)).astype(np.uint16),
                        frame_numbers=ids)
    writer.write_batch("s", pa.record_batch({"i": np.arange(n * 10, n * 10 + 30)}))
    n += 3
    if n % 9 == 0:
        print(f"flushing {n}", flush=True)
        writer.flush()
        print(f"flushed {n}", flush=True)
"""


@pytest.mark.parametrize("moment", ["flushing", "flushed"])
def test_kill_9_leaves_the_bucket_readable_with_every_flush(
    s3_server: S3Server, s3_bucket: str, moment: str
) -> None:
    """Killed inside its fourth flush, or while writing the frames after it (the line
    is the signal): the store reads as of a flush, the last one returned at least."""
    location = located(f"s3://{s3_bucket}/run.zarr", s3_server)
    env = {**os.environ, **s3_server.environ()}
    killed = kill_when(_WRITER, line_starting(f"{moment} 36"), location.url, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    flushed = int(killed.flushed[-1].split()[1])
    cam = xarray_view(location, "cam")
    count = cam.sizes["frame"]
    assert count >= flushed
    assert count % 9 == 0
    assert cam["frame_number"].values.tolist() == list(range(count))
    np.testing.assert_array_equal(cam["frames"].values[:, 0, 0], np.arange(count))
    rows = xarray_view(location, "s")["i"].values
    assert rows.tolist() == list(range(count * 10))


class Link:
    """A TCP relay to the server on loopback that can be cut and restored (a network
    that goes down and comes back, the server keeping its objects)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._accept, name="zarr_s3_link")]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # stop() shut the listener
                return
            if not self.open.is_set():
                client.close()  # the network is down: refused at once
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pipe, args=(a, b), name="zarr_s3_link")
                self.threads.append(thread)
                thread.start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        """Refuse new connections and break those open."""
        self.open.clear()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def restore(self) -> None:
        self.open.set()

    def stop(self) -> None:
        self.cut()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
        for thread in self.threads:
            thread.join()
        self.listener.close()


def test_a_flush_retried_after_the_network_came_back_stores_everything_once(
    s3_server: S3Server, s3_bucket: str
) -> None:
    """A flush that fails while the network is down keeps what it had (visible()
    unchanged); the next flush puts the same keys again: every frame and row once."""
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    link = Link((host, int(port)))
    try:
        options = s3_server.options(endpoint_url=f"http://127.0.0.1:{link.port}",
                                    retry_timeout_s=1.0)  # fmt: skip
        url = f"s3://{s3_bucket}/run.zarr"
        writer = ZarrWriter(url, storage_options=options, shard_frames=4, chunk_size=4)
        writer.write_frames("cam", frames_of(0, 5))
        writer.write_batch("s", pa.record_batch({"i": np.arange(6)}))
        writer.flush()  # a partial shard and a partial chunk: rewritten below
        writer.write_frames("cam", frames_of(5, 3))  # completes the partial shard
        writer.write_batch("s", pa.record_batch({"i": np.arange(6, 11)}))
        link.cut()
        writer.write_frames("cam", frames_of(8, 8))  # two shards, written in the background
        with pytest.raises(StorageIOError, match=url):
            writer.flush()  # their writes failed: kept, for the next flush
        assert (writer.visible("cam"), writer.visible("s")) == (5, 6)
        link.restore()
        writer.write_frames("cam", frames_of(16, 2))
        writer.close()
    finally:
        link.stop()
    location = located(url, s3_server)
    cam = xarray_view(location, "cam")
    np.testing.assert_array_equal(cam["frames"].values, frames_of(0, 18))
    assert cam["frame_number"].values.tolist() == list(range(18))
    assert xarray_view(location, "s")["i"].values.tolist() == list(range(11))
    assert writer.stats.file_size == sum(sizes(location).values())
