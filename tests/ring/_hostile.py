"""Forged records, read in a process of their own (see test_hostile): a crash there is
the test's to see, not the end of the test run.

Each case is written to a progress file before it is read, so a case that kills the
process is named in the failure.
"""

from __future__ import annotations

import json
import random
import resource
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars
import pyarrow as pa

from daq_storage.errors import DaqStorageError
from daq_storage.ring import Record, RingBuffer, RingReader, _tables
from daq_storage.ring import _format as f

Case = tuple[str, int, bytes, pa.Schema | None]  # name, kind, payload, Arrow schema
_I32 = struct.Struct("<i")


def inject(writer: RingBuffer, kind: int, payload: bytes, schema: pa.Schema | None) -> None:
    """Publish ``payload`` as a record of ``kind`` (an Arrow one under ``schema``), the
    way the writer publishes its own records, whatever the bytes say."""
    stream = {f.KIND_RAW: "raw", f.KIND_FRAME: "cam", f.KIND_ARROW: "table"}[kind]
    sid = writer._stream(stream, kind)
    aux = 0 if schema is None else writer._schema_id(sid, schema)[0]
    length = f.RECORD_HEADER_SIZE + len(payload)
    pos = writer._reserve(f.align(length))
    at = writer._data + pos % writer.capacity
    writer._buf[at + f.RECORD_HEADER_SIZE : at + length] = payload
    writer._header(at, length, kind, sid, writer._seq, 0, aux, b"")
    writer._publish(pos, pos + f.align(length), sid, 1, len(payload), length)


def _message(batch: pa.RecordBatch) -> bytes:
    return bytes(batch.serialize())


def _patched(batch: pa.RecordBatch, old: bytes, new: bytes) -> bytes:
    """``batch``'s message with the last occurrence of ``old`` replaced by ``new``."""
    message = bytearray(_message(batch))
    at = message.rfind(old)
    assert at >= 0, f"{old!r} not in the message"
    message[at : at + len(new)] = new
    return bytes(message)


def _offsets(*values: int) -> bytes:
    return b"".join(_I32.pack(v) for v in values)


def _compressed(batch: pa.RecordBatch, codec: str) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=codec)
    with pa.ipc.new_stream(sink, batch.schema, options=options) as stream:
        stream.write_batch(batch)
    reader = pa.ipc.MessageReader.open_stream(sink.getvalue())
    reader.read_next_message()  # the schema
    return bytes(reader.read_next_message().serialize())


def arrow_cases() -> Iterator[Case]:
    """Arrow records forged the ways that reach past a batch's body or memory."""
    strings = pa.record_batch({"s": ["a", "b", "c"]})
    yield (
        "string offsets out of range",
        f.KIND_ARROW,
        _patched(strings, _offsets(0, 1, 2, 3), _offsets(0, 1, 2, 0x7FFFFF00)),
        strings.schema,
    )
    yield (
        "string offsets decreasing",
        f.KIND_ARROW,
        _patched(strings, _offsets(0, 1, 2, 3), _offsets(0, 3, 1, 3)),
        strings.schema,
    )
    yield (
        "string offset negative",
        f.KIND_ARROW,
        _patched(strings, _offsets(0, 1, 2, 3), _offsets(-64, 1, 2, 3)),
        strings.schema,
    )
    text = pa.record_batch({"s": ["ok", "xy"]})
    yield "invalid UTF-8", f.KIND_ARROW, _patched(text, b"okxy", b"ok\xff\xfe"), text.schema
    lists = pa.record_batch({"l": pa.array([[1], [2, 3]], pa.list_(pa.int32()))})
    yield (
        "list offsets out of range",
        f.KIND_ARROW,
        _patched(lists, _offsets(0, 1, 3), _offsets(0, 1, 1 << 30)),
        lists.schema,
    )
    nested = pa.record_batch({"l": [["a"], ["bc"]]})
    yield (
        "string offsets inside a list",
        f.KIND_ARROW,
        _patched(nested, _offsets(0, 1, 3), _offsets(0, 1, 1 << 29)),
        nested.schema,
    )
    struct_ = pa.record_batch({"st": [{"a": "x"}, {"a": "yz"}]})
    yield (
        "string offsets inside a struct",
        f.KIND_ARROW,
        _patched(struct_, _offsets(0, 1, 3), _offsets(0, 1, 1 << 29)),
        struct_.schema,
    )
    large = pa.record_batch({"s": pa.array(["a", "bc"], pa.large_string())})
    yield (
        "large string offsets",
        f.KIND_ARROW,
        _patched(large, struct.pack("<qqq", 0, 1, 3), struct.pack("<qqq", 0, 1, 1 << 60)),
        large.schema,
    )
    views = pa.record_batch({"v": pa.array(["x" * 20, "y" * 30], pa.string_view())})
    view_message = bytearray(_message(views))
    at = view_message.find(struct.pack("<I", 30) + b"yyyy")  # length, prefix, buffer, offset
    struct.pack_into("<II", view_message, at + 8, 0, 0x7FFFFFF0)
    yield "string view offset out of range", f.KIND_ARROW, bytes(view_message), views.schema
    nulls = pa.record_batch({"v": pa.array(["x" * 20, None], pa.string_view())})
    null_message = bytearray(_message(nulls))
    at = null_message.rfind(bytes(16))  # the null slot's view: zeros, as written
    struct.pack_into("<I", null_message, at + 8, 0x80000000)  # its buffer index
    yield "string view garbage in a null slot", f.KIND_ARROW, bytes(null_message), nulls.schema
    yield "compressed body", f.KIND_ARROW, _compressed(strings, "lz4"), strings.schema
    zeros = pa.record_batch({"z": pa.array(np.zeros(16 << 20, np.int64))})  # 128 MiB
    yield "compression bomb", f.KIND_ARROW, _compressed(zeros, "zstd"), zeros.schema
    encoded = pa.record_batch({"d": pa.array(["a", "b", "a"]).dictionary_encode()})
    yield "dictionary column", f.KIND_ARROW, _message(encoded), encoded.schema
    numbers = pa.record_batch({"x": pa.array(range(100), pa.int64())})
    yield "truncated message", f.KIND_ARROW, _message(numbers)[:200], numbers.schema
    yield "metadata length beyond", f.KIND_ARROW, b"\xff\xff\xff\xff\x00\x00\x00\x7f", None
    yield "another schema's batch", f.KIND_ARROW, _message(numbers), strings.schema
    yield "empty payload", f.KIND_ARROW, b"", strings.schema


def frame_cases() -> Iterator[Case]:
    """Frame records whose header or metadata lie."""

    def frame(code: bytes, ndim: int, shape: list[int], meta: bytes, data: bytes) -> bytes:
        dims = (shape + [0] * 8)[:8]
        head = f.FRAME_HEADER.pack(code.ljust(8, b"\x00"), ndim, len(meta), 7, *dims)
        return head + meta.ljust(f.align(len(meta)), b"\x00") + data

    for code in (b"V0", b"S0", b"(2,)i4", b"i4,i4", b"O", b"M8[xx]", b"\xff\xfe", b"<U0", b"zz"):
        yield f"dtype {code!r}", f.KIND_FRAME, frame(code, 1, [4], b"", bytes(32)), None
    yield "ndim 9", f.KIND_FRAME, frame(b"<u2", 9, [1] * 8, b"", bytes(2)), None
    yield (
        "shape past the record",
        f.KIND_FRAME,
        frame(b"<u2", 2, [1 << 40, 1 << 40], b"", b""),
        None,
    )
    yield "zero-size shape", f.KIND_FRAME, frame(b"<u2", 2, [0, 1 << 62], b"", b""), None
    yield "metadata nested deep", f.KIND_FRAME, frame(b"|u1", 1, [1], b"[" * 100_000, b"x"), None
    yield "metadata not UTF-8", f.KIND_FRAME, frame(b"|u1", 1, [1], b'{"\xff":1}', b"x"), None
    yield "metadata a list", f.KIND_FRAME, frame(b"|u1", 1, [1], b"[1, 2]", b"x"), None
    yield "metadata huge number", f.KIND_FRAME, frame(b"|u1", 1, [1], b"9" * 5000, b"x"), None
    lying = f.FRAME_HEADER.pack(b"<u2".ljust(8, b"\x00"), 1, 1 << 30, 0, 4, *[0] * 7)
    yield "metadata length past the record", f.KIND_FRAME, lying + bytes(8), None
    yield "shorter than a frame header", f.KIND_FRAME, bytes(40), None


def mutations(rng: random.Random, count: int) -> Iterator[Case]:
    """Valid records of many types with a few bytes changed at random."""
    bases = [
        pa.record_batch({"s": ["alpha", "", None, "delta"], "x": [1, 2, 3, 4]}),
        pa.record_batch({"l": [[1, 2], None, [], [3]], "ls": [["a"], ["b", "c"], None, []]}),
        pa.record_batch({"st": [{"a": "x", "b": 1.5}, None, {"a": None, "b": 2.0}]}),
        pa.record_batch({"m": pa.array([[("k", 1)], [], None], pa.map_(pa.string(), pa.int8()))}),
        pa.record_batch({"b": pa.array([b"\x00\x01", b"", None], pa.large_binary())}),
        pa.record_batch(
            {"v": pa.array(["short", "a string longer than twelve", None], pa.string_view())}
        ),
        pa.record_batch(
            {"t": pa.array([1, None, 3], pa.timestamp("ns")), "f": [True, None, False]}
        ),
        pa.record_batch({"fsl": pa.array([[1, 2], [3, 4]], pa.list_(pa.int16(), 2))}),
        pa.record_batch(
            {
                "u": pa.UnionArray.from_dense(
                    pa.array([0, 1, 0], pa.int8()),
                    pa.array([0, 0, 1], pa.int32()),
                    [pa.array([1, 2], pa.int64()), pa.array(["z"])],
                )
            }
        ),
    ]
    specials = [0x00, 0x7F, 0x80, 0xFF, 0x01, 0x40]
    for i in range(count):
        batch = bases[i % len(bases)]
        message = bytearray(_message(batch))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(message))
            message[at] = rng.choice(specials) if rng.random() < 0.5 else rng.randrange(256)
        yield f"mutation {i}", f.KIND_ARROW, bytes(message), batch.schema


def consume(record: Record) -> None:
    """Everything a reader does with a record, down to every value."""
    _ = (record.stream, record.kind, record.seq, len(record), record.tobytes())
    if record.kind == "frame":
        _ = (record.array(copy=True).sum(), record.frame_number, record.metadata)
    elif record.kind == "arrow":
        batch = record.batch()
        batch.to_pylist()
        batch.serialize()
        if not any(pa.types.is_union(t) for t in batch.schema.types):  # they have none
            batch.to_pandas()
            str(polars.from_arrow(batch))


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(path_text: str, progress_text: str, seed: str, count: str) -> None:
    """Read every case in turn; print what came out as JSON. Raw exceptions are listed;
    a crash leaves the case's name in the progress file."""
    path, progress = Path(path_text), Path(progress_text)
    # The writer stores dictionaries and views decoded; forged files need not.
    _tables.stored_schema = lambda schema: None  # type: ignore[attr-defined]
    cases = [*arrow_cases(), *frame_cases(), *mutations(random.Random(int(seed)), int(count))]
    rss_before = _max_rss_mib()
    outcome: dict[str, Any] = {"cases": 0, "refused": 0, "raw": [], "rss_growth_mib": 0.0}
    for name, kind, payload, schema in cases:
        progress.write_text(name)
        _one(path, name, kind, payload, schema, outcome)
    outcome["rss_growth_mib"] = _max_rss_mib() - rss_before
    print(json.dumps(outcome))


def _one(path: Path, name: str, kind: int, payload: bytes, schema: pa.Schema | None,
         outcome: dict[str, Any]) -> None:  # fmt: skip
    outcome["cases"] += 1
    with RingBuffer.create(path, capacity_bytes=1 << 20) as writer:
        inject(writer, kind, payload, schema)
    try:
        with RingReader.open(path) as reader:
            for read in (lambda: reader.read_next(copy=False), reader.read_latest):
                record = read()
                assert record is not None
                try:
                    consume(record)
                except DaqStorageError:
                    outcome["refused"] += 1
    except Exception as exc:  # what the test looks for: anything but DaqStorageError
        outcome["raw"].append(f"{name}: {type(exc).__name__}: {exc}"[:300])
    finally:
        path.unlink()
