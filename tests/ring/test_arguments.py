"""Hostile arguments to every public call of the ring: only a DaqStorageError naming the
argument comes out (never a bare ValueError, TypeError or OverflowError the CLI would
show as a traceback), and nothing hangs or allocates what a huge number asks for."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daq_storage.errors import ConfigError, DaqStorageError, describe_value
from daq_storage.ring import RingBuffer, RingReader, max_ring_bytes
from tests.ring.conftest import SMALL

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

#: Values of every wrong kind: negative, zero, huge (beyond 64 bits, beyond a float,
#: beyond what ``str()`` prints), NaN and infinities, bools where numbers are expected,
#: unknown strings, bytes, containers, numpy scalars and arrays (whose truth value is
#: an error), objects.
HOSTILE: list[Any] = [
    -1, 0, 1, 7, 2**64, 2**70, -(2**70), 10**400, -(10**400), 10**5000,
    1.5, -0.5, math.nan, math.inf, -math.inf, 1e300,
    True, False, None, "", "x", "16", "a\x00b", "\udc80", b"x",
    [1], (), {}, {"a": 1}, object(),
    np.bool_(True), np.int64(-3), np.float64("nan"), np.array(3), np.array([1, 2]),
    np.zeros((2, 2)), np.zeros((1,) * 9),
]  # fmt: skip


def _escapes(call: Callable[[Any], object], values: list[Any] = HOSTILE) -> list[str]:
    """The values for which ``call`` raised something other than a DaqStorageError."""
    escaped = []
    for value in values:
        try:
            call(value)
        except DaqStorageError:
            pass
        except Exception as exc:
            escaped.append(f"{describe_value(value)}: {type(exc).__name__}: {exc}"[:200])
    return escaped


def _create(path: Path, **options: Any) -> None:
    """Create (and remove) a small ring with ``options``."""
    try:
        RingBuffer.create(path, **{"capacity_bytes": SMALL, **options}).close()
    finally:
        path.unlink(missing_ok=True)


CREATE_OPTIONS = ["capacity_bytes", "overflow", "block_timeout", "max_readers", "max_streams",
                  "max_schemas", "schema_heap_bytes", "crc", "heartbeat_timeout", "mode",
                  "exist_ok", "force"]  # fmt: skip


@pytest.mark.parametrize("option", CREATE_OPTIONS)
def test_create_refuses_every_hostile_option_with_a_daq_storage_error(shm_path: Path, option: str):
    assert _escapes(lambda v: _create(shm_path, **{option: v})) == []


def test_create_refuses_hostile_paths():
    # Strings would name files in the working directory: only those that cannot.
    paths = [v for v in HOSTILE if not isinstance(v, str | bytes) or v in ("", "a\x00b")]
    assert _escapes(lambda v: RingBuffer.create(v, capacity_bytes=SMALL).close(), paths) == []


@pytest.mark.parametrize("option", ["overflow", "block_timeout", "heartbeat_timeout",
                                    "trust_foreign"])  # fmt: skip
def test_writer_open_refuses_every_hostile_option(shm_path: Path, option: str):
    RingBuffer.create(shm_path, capacity_bytes=SMALL).close()
    try:
        assert _escapes(lambda v: RingBuffer.open(shm_path, **{option: v}).close()) == []
    finally:
        shm_path.unlink()


def test_from_config_refuses_what_is_not_a_ring_configuration(shm_path: Path):
    good = {"path": shm_path, "capacity_bytes": SMALL, "overflow": "block",
            "block_timeout_secs": 1.0, "max_readers": 4}  # fmt: skip
    configs: list[Any] = [*HOSTILE, SimpleNamespace(path=shm_path)]
    configs += [SimpleNamespace(**{**good, key: value}) for key in good for value in HOSTILE
                if key != "path" or not isinstance(value, str | bytes)]  # fmt: skip

    def create(config: Any) -> None:
        try:
            RingBuffer.from_config(config).close()
        finally:
            shm_path.unlink(missing_ok=True)

    assert _escapes(create, configs) == []
    with pytest.raises(ConfigError, match="needs a RingBufferConfig"):
        RingBuffer.from_config(object())


@pytest.mark.parametrize("option", ["max_readers", "max_streams", "max_schemas",
                                    "schema_heap_bytes"])  # fmt: skip
def test_max_ring_bytes_refuses_hostile_options(option: str):
    assert _escapes(lambda v: max_ring_bytes("/dev/shm", **{option: v})) == []


def test_max_ring_bytes_refuses_hostile_paths():
    paths = [v for v in HOSTILE if not isinstance(v, str) or "\x00" in v or not v]
    assert _escapes(max_ring_bytes, [*paths, "/dev/shm/" + "x" * 5000]) == []


@pytest.mark.parametrize("option", ["start", "consumer", "trust_foreign"])
def test_reader_open_refuses_every_hostile_option(ring: RingBuffer, option: str):
    assert _escapes(lambda v: RingReader.open(ring.path, **{option: v}).close()) == []


READS: dict[str, Callable[[RingReader, Any], object]] = {
    "read_next(timeout)": lambda r, v: r.read_next(v),
    "read_next(copy)": lambda r, v: r.read_next(copy=v),
    "read_many(max_records)": lambda r, v: r.read_many(v),
    "read_many(timeout)": lambda r, v: r.read_many(1, timeout=v),
    "iter(timeout)": lambda r, v: next(r.iter(v)),
    "read_latest(stream)": lambda r, v: r.read_latest(v),
    "Record.array(copy)": lambda r, v: r.read_latest("camera").array(copy=v),  # type: ignore[union-attr]
}


@pytest.mark.timeout(60)  # a timeout that never ends would show here
@pytest.mark.parametrize("call", list(READS))
def test_reads_refuse_every_hostile_argument(ring: RingBuffer, call: str):
    def read(value: Any) -> None:
        # A record is always there: no valid timeout makes the call wait.
        ring.write_frame(np.zeros((2, 2), np.uint16), stream="camera")
        with RingReader.open(ring.path, start="latest") as reader:
            READS[call](reader, value)

    assert _escapes(read) == []


WRITES: dict[str, Callable[[RingBuffer, Any], object]] = {
    "write(payload)": lambda w, v: w.write(v),
    "write(stream)": lambda w, v: w.write(b"x", stream=v),
    "write(timestamp_ns)": lambda w, v: w.write(b"x", timestamp_ns=v),
    "write_many(payloads)": lambda w, v: w.write_many(v),
    "write_many(timestamps_ns)": lambda w, v: w.write_many([b"a"], timestamps_ns=v),
    "write_frame(array)": lambda w, v: w.write_frame(v, stream="anything"),
    "write_frame(frame_number)": lambda w, v: w.write_frame(np.zeros(2), frame_number=v),
    "write_frame(timestamp_ns)": lambda w, v: w.write_frame(np.zeros(2), timestamp_ns=v),
    "write_frame(metadata)": lambda w, v: w.write_frame(np.zeros(2), metadata=v),
    "write_batch(batch)": lambda w, v: w.write_batch(v),
    "write_batch(timestamp_ns)": lambda w, v: w.write_batch(
        pa.record_batch({"x": [1]}), timestamp_ns=v
    ),
}


@pytest.mark.parametrize("call", list(WRITES))
def test_writes_refuse_every_hostile_argument(shm_path: Path, call: str):
    try:
        with RingBuffer.create(shm_path, capacity_bytes=SMALL, max_streams=4096) as ring:
            assert _escapes(lambda v: WRITES[call](ring, v)) == []
    finally:
        shm_path.unlink()


# ----------------------------------------------------------------- random combinations
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.integers(-3, 3), max_size=3),
    st.builds(object),
    st.sampled_from([10**400, np.bool_(False), np.array([1, 2]), np.float64("nan")]),
)


def _refused_or_done(call: Callable[[], object]) -> None:
    """Only a DaqStorageError may come out of ``call``."""
    with contextlib.suppress(DaqStorageError):
        call()


@FUZZ
@given(
    options=st.fixed_dictionaries(
        {},
        optional={
            "capacity_bytes": JUNK.filter(lambda v: not isinstance(v, int) or v > 1 << 45)
            | st.integers(-10, 1 << 20),
            "overflow": JUNK | st.sampled_from(["block", "discard_oldest"]),
            "block_timeout": JUNK,
            "heartbeat_timeout": JUNK,
            "max_readers": JUNK,
            "max_streams": JUNK,
            "max_schemas": JUNK.filter(lambda v: not isinstance(v, int) or v > 1 << 20),
            "schema_heap_bytes": JUNK.filter(lambda v: not isinstance(v, int) or v > 1 << 45)
            | st.integers(-10, 1 << 16),
            "mode": JUNK,
            "crc": JUNK,
            "exist_ok": JUNK,
            "force": JUNK,
        },
    ),
    path=st.one_of(st.none(), st.just(""), st.just("a\x00b"), st.integers(), st.just("ok")),
)
def test_create_and_open_arguments(shm_path: Path, options: dict[str, Any], path: Any):
    target = shm_path if path == "ok" else path
    try:
        _refused_or_done(lambda: RingBuffer.create(target, **options).close())
        if shm_path.exists():
            reopen = ("block_timeout", "heartbeat_timeout", "overflow", "exist_ok")
            junk = {k: v for k, v in options.items() if k in reopen}
            junk["trust_foreign"] = junk.pop("exist_ok", False)
            _refused_or_done(lambda: RingBuffer.open(shm_path, **junk).close())
    finally:
        shm_path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def module_ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RingBuffer]:
    """One ring for many examples (outside /dev/shm: it outlives single tests)."""
    path = tmp_path_factory.mktemp("hostile") / "ring"
    ring = RingBuffer.create(path, capacity_bytes=SMALL, max_streams=4096)
    yield ring
    ring.close()
    ring.unlink()


PAYLOADS = JUNK | st.binary(max_size=64) | st.builds(
    np.zeros, st.tuples(st.integers(0, 3), st.integers(0, 3)),
    st.sampled_from(["u1", "f8", "O", "U2", "V4", "M8[ns]", ">i2"]),
)  # fmt: skip


@FUZZ
@given(payload=PAYLOADS, stream=JUNK | st.sampled_from(["raw", "x" * 49]), stamp=JUNK)
def test_write_arguments(module_ring: RingBuffer, payload: Any, stream: Any, stamp: Any):
    _refused_or_done(lambda: module_ring.write(payload, stream=stream, timestamp_ns=stamp))


@FUZZ
@given(payloads=JUNK | st.lists(PAYLOADS, max_size=4) | PAYLOADS, stamps=JUNK | st.lists(JUNK))
def test_write_many_arguments(module_ring: RingBuffer, payloads: Any, stamps: Any):
    _refused_or_done(lambda: module_ring.write_many(payloads, stream="many", timestamps_ns=stamps))


@FUZZ
@given(
    array=PAYLOADS,
    number=JUNK,
    stamp=JUNK,
    metadata=JUNK
    | st.dictionaries(st.none() | st.integers() | st.text(max_size=4) | st.floats(), JUNK)
    | st.just({"nan": float("nan")}),
)
def test_write_frame_arguments(
    module_ring: RingBuffer, array: Any, number: Any, stamp: Any, metadata: Any
):
    stream = f"frames{np.asarray(array).dtype.str if isinstance(array, np.ndarray) else ''}"
    _refused_or_done(
        lambda: module_ring.write_frame(
            array, stream=stream[:48], frame_number=number, timestamp_ns=stamp, metadata=metadata
        )
    )


@FUZZ
@given(
    batch=JUNK | st.just(pa.table({"x": []})) | st.just(pa.record_batch({"x": [1]})),
    stamp=JUNK,
)
def test_write_batch_arguments(module_ring: RingBuffer, batch: Any, stamp: Any):
    _refused_or_done(lambda: module_ring.write_batch(batch, stream="batches", timestamp_ns=stamp))


@FUZZ
@given(start=JUNK, consumer=JUNK, timeout=JUNK, many=JUNK, stream=JUNK)
@pytest.mark.timeout(60)  # a timeout that never ends would show here
def test_reader_arguments(
    module_ring: RingBuffer, start: Any, consumer: Any, timeout: Any, many: Any, stream: Any
):
    module_ring.write(b"one", stream="r")  # something to read: no wait is needed
    _refused_or_done(lambda: RingReader.open(module_ring.path, start=start).close())
    _refused_or_done(lambda: RingReader.open(module_ring.path, consumer=consumer).close())
    with RingReader.open(module_ring.path, start="latest") as reader:
        _refused_or_done(lambda: reader.read_next(timeout))
        _refused_or_done(lambda: reader.read_many(many, timeout=0))
        _refused_or_done(lambda: reader.read_latest(stream))
