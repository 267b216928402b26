"""Frames to Zarr on an S3-compatible server (moto on loopback) against the same frames
to a local directory, against zarr-python's own ``ObjectStore`` writing the same array,
and against acquire-zarr writing to the same server.

Every run writes the same simulated 512x512 uint16 frames, blosc-lz4 level 5 with
shuffle, one frame per chunk, ``shard_frames`` frames per shard, in calls of one shard.
zarr-python is tuned as the obvious best use: the array's final shape known up front,
written a whole shard at a time (our writer appends, knowing no length), and, as its
upper bound, every frame in one call (its shards then put concurrently; no acquisition
holds a run in memory). The limit is
the server itself: the objects ours puts (shards, chunks, documents), put again as they
are (no encoding), from one thread, and from as many threads as zarr-python's requests. moto is
a Python server: its figures say how the clients compare here, not what S3 does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import obstore
import zarr
import zarr.codecs

from benchmarks._harness import Report, machine_line, scratch_directory
from daq_storage.location import S3Location, parse_location
from daq_storage.sim import SimulatedCamera
from daq_storage.testing import s3_server
from daq_storage.testing._s3 import S3Server
from daq_storage.writers import ZarrWriter


@dataclass(frozen=True)
class Sizes:
    frames: int = int(os.environ.get("DAQ_BENCH_S3_FRAMES", "480"))  # 240 MiB raw
    shape: tuple[int, int] = (512, 512)
    shard_frames: int = 16
    repeats: int = int(os.environ.get("DAQ_BENCH_REPEATS", "3"))


def _blosc() -> zarr.codecs.BloscCodec:
    return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def _calls(frames: np.ndarray, per_call: int) -> list[np.ndarray]:
    return [frames[i : i + per_call] for i in range(0, len(frames), per_call)]


def _ours(calls: Sequence[np.ndarray], sizes: Sizes) -> Callable[[Path | S3Location], None]:
    def run(where: Path | S3Location) -> None:
        writer = ZarrWriter(where, compression="blosc-lz4", compression_level=5,
                            shard_frames=sizes.shard_frames)  # fmt: skip
        for call in calls:
            writer.write_frames("cam", call)
        writer.close()

    return run


def _zarr_python(location: S3Location, frames: np.ndarray, sizes: Sizes, *,
                 per_call: int) -> None:  # fmt: skip
    shape = frames.shape
    array = zarr.create_array(
        store=location.zarr_store(), shape=shape, dtype=frames.dtype,
        chunks=(1, *shape[1:]), shards=(sizes.shard_frames, *shape[1:]),
        compressors=_blosc(), dimension_names=["frame", "y", "x"], fill_value=0,
    )  # fmt: skip
    for start in range(0, shape[0], per_call):
        array[start : start + per_call] = frames[start : start + per_call]


def _raw_puts(location: S3Location, objects: Sequence[bytes], threads: int) -> None:
    store = location.object_store()
    keys = [f"o{i:06d}" for i in range(len(objects))]
    if threads == 1:
        for key, data in zip(keys, objects, strict=True):
            obstore.put(store, key, data)
        return
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda kd: obstore.put(store, *kd), zip(keys, objects, strict=True)))


def _acquire_zarr(server: S3Server, bucket: str, key: str, calls: Sequence[np.ndarray],
                  sizes: Sizes) -> None:  # fmt: skip
    import acquire_zarr as aqz

    height, width = sizes.shape

    def dim(name: str, kind: object, size: int, chunk: int, shard: int) -> object:
        return aqz.Dimension(name=name, kind=kind, array_size_px=size, chunk_size_px=chunk,
                             shard_size_chunks=shard)  # fmt: skip

    settings = aqz.StreamSettings(
        store_path=key,
        s3=aqz.S3Settings(endpoint=server.endpoint_url, bucket_name=bucket, region="us-east-1"),
        arrays=[aqz.ArraySettings(
            output_key="frames", data_type=np.uint16,
            compression=aqz.CompressionSettings(
                compressor=aqz.Compressor.BLOSC1, codec=aqz.CompressionCodec.BLOSC_LZ4,
                level=5, shuffle=1,
            ),
            dimensions=[
                dim("t", aqz.DimensionType.TIME, 0, 1, sizes.shard_frames),
                dim("y", aqz.DimensionType.SPACE, height, height, 1),
                dim("x", aqz.DimensionType.SPACE, width, width, 1),
            ],
        )],
    )  # fmt: skip
    stream = aqz.ZarrStream(settings)
    for call in calls:
        stream.append(call)
    stream.close()


def _stored(location: S3Location) -> int:
    return sum(o["size"] for o in obstore.list(location.object_store()).collect())


def _empty(location: S3Location) -> None:
    """Delete what a run put (moto keeps every object in its memory)."""
    store = location.object_store()
    for batch in obstore.list(store):
        obstore.delete(store, [meta["path"] for meta in batch])


def _best(runs: int, run: Callable[[int], None], after: Callable[[int], None]) -> float:
    """Best wall time of ``run(i)``; ``after(i)`` cleans up, untimed."""
    best = float("inf")
    for i in range(runs):
        started = time.perf_counter()
        run(i)
        best = min(best, time.perf_counter() - started)
        after(i)
    return best


def main(sizes: Sizes | None = None) -> None:
    sizes = sizes or Sizes()
    frames = SimulatedCamera(shape=sizes.shape, seed=0, start_ns=0).frames(sizes.frames).frames
    calls = _calls(frames, sizes.shard_frames)
    nbytes = frames.nbytes
    report = Report(
        f"zarr v3 to S3 (moto, loopback): {len(frames)} frames {sizes.shape[1]}x{sizes.shape[0]} "
        f"uint16 ({nbytes / 2**20:.0f} MiB), blosc-lz4 5, {sizes.shard_frames}-frame shards; "
        f"best of {sizes.repeats}; ratio = reference time / ours"
    )
    ours = _ours(calls, sizes)
    with s3_server() as server:
        bucket = server.create_bucket()
        options = server.options(retry_timeout_s=60.0)

        def at(tag: str, i: int) -> S3Location:
            location = parse_location(f"s3://{bucket}/{tag}{i}.zarr", options)
            assert isinstance(location, S3Location)
            return location

        stored: dict[str, int] = {}

        def cleanup(tag: str) -> Callable[[int], None]:
            def after(i: int) -> None:
                stored[tag] = _stored(at(tag, i))
                _empty(at(tag, i))

            return after

        mine = _best(sizes.repeats, lambda i: ours(at("ours", i)), cleanup("ours"))
        peer = _best(sizes.repeats, lambda i: _zarr_python(at("zarr", i), frames, sizes,
                                                           per_call=sizes.shard_frames),
                     cleanup("zarr"))  # fmt: skip
        whole = _best(sizes.repeats, lambda i: _zarr_python(at("zarr", i), frames, sizes,
                                                            per_call=len(frames)),
                      cleanup("zarr"))  # fmt: skip
        first = at("ours", sizes.repeats)  # the objects ours puts, kept for the limit
        ours(first)
        store = first.object_store()
        shards = [bytes(obstore.get(store, meta["path"]).bytes())
                  for batch in obstore.list(store) for meta in batch]  # fmt: skip
        _empty(first)
        threads = int(zarr.config.get("async.concurrency") or 10)
        one = _best(sizes.repeats, lambda i: _raw_puts(at("raw", i), shards, 1), cleanup("raw"))
        many = _best(sizes.repeats, lambda i: _raw_puts(at("raw", i), shards, threads),
                     cleanup("raw"))  # fmt: skip
        acquire_note = ""
        saved = dict(os.environ)
        try:  # acquire-zarr takes its credentials from the AWS_* variables only
            os.environ.update(server.environ())
            aq = _best(sizes.repeats,
                       lambda i: _acquire_zarr(server, bucket, f"aq{i}.zarr", calls, sizes),
                       cleanup("aq"))  # fmt: skip
            if stored.get("aq", 0) == 0:
                acquire_note = "acquire-zarr reported success but put no object in the bucket"
        except Exception as exc:  # the peer's failure is reported, not raised
            aq, acquire_note = 0.0, f"acquire-zarr to moto failed: {type(exc).__name__}: {exc}"
        finally:
            os.environ.clear()
            os.environ.update(saved)
        with scratch_directory() as tmp:
            local = _best(sizes.repeats, lambda i: ours(tmp / f"ours{i}.zarr"), lambda i: None)

    mb = nbytes / 1e6
    report.add("ours to S3 (ZarrWriter, s3://)", mb / mine, "MB/s",
               note=f"store {stored['ours'] / nbytes:.0%} of raw")  # fmt: skip
    report.add("  vs the server's limit, 1 thread", mb / mine, "MB/s",
               reference="raw PUTs of the same objects, 1 thread", ratio=one / mine)  # fmt: skip
    report.add(f"  vs the server's limit, {threads} threads", mb / mine, "MB/s",
               reference=f"raw PUTs, {threads} threads", ratio=many / mine)  # fmt: skip
    report.add("  vs zarr-python ObjectStore", mb / mine, "MB/s",
               reference="zarr.create_array(ObjectStore), whole shards", ratio=peer / mine,
               note=f"zarr-python alone: {mb / peer:,.0f} MB/s")  # fmt: skip
    report.add("  vs zarr-python, every frame in one call", mb / mine, "MB/s",
               reference="zarr-python, array[:] = all frames", ratio=whole / mine,
               note=f"shards put concurrently: {mb / whole:,.0f} MB/s")  # fmt: skip
    if aq:
        report.add("  vs acquire-zarr to the same server", mb / mine, "MB/s",
                   reference="acquire-zarr (S3Settings)", ratio=aq / mine,
                   note=f"acquire-zarr alone: {mb / aq:,.0f} MB/s {acquire_note}")  # fmt: skip
    else:
        report.add("  vs acquire-zarr to the same server", 0, "", note=acquire_note[:300])
    report.add("ours to a local directory", mb / local, "MB/s", reference="ours to S3",
               ratio=mine / local)  # fmt: skip
    report.print()
    print(machine_line())


if __name__ == "__main__":
    main()
