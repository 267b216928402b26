"""Bad messages get a clear DaqStorageError to their caller and the actor goes on, the
data stored before intact; told errors surface on the next call or at stop; a stopped
actor refuses messages."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.actor import (
    Flush,
    GetStats,
    SetInstrumentMetadata,
    SetMetadata,
    StorageActor,
    WriteBatch,
)
from daq_storage.errors import (
    ActorStopped,
    ConfigError,
    DaqStorageError,
    InvalidName,
    SchemaMismatch,
    UnsupportedData,
)
from tests.actor._helpers import STREAM, config, ipc_stream, meter_batches, run


@pytest.mark.parametrize(
    ("instrument_id", "pattern"),
    [
        ("", "no usable characters"),
        ("../x", r"'\.\./x' is not a safe name .*use 'x'"),
        ("a\x00b", "NUL"),
        ("power meter", "use 'power_meter'"),
        ("_hidden", "not a safe name"),
        (7, "must be a str, got int 7"),
    ],
)
def test_an_unusable_instrument_id_is_refused_never_renamed(
    instrument_id: object, pattern: str
) -> None:
    batch = meter_batches(1, rows=10)[0]
    with pytest.raises(InvalidName, match=pattern):
        WriteBatch(batch, instrument_id)  # type: ignore[arg-type]
    with pytest.raises(InvalidName, match=pattern):
        SetInstrumentMetadata(instrument_id, "k", "v")  # type: ignore[arg-type]


def test_messages_check_their_fields_when_made() -> None:
    with pytest.raises(UnsupportedData, match=r"IPC bytes \(or a pyarrow\.Buffer of them\), a"):
        WriteBatch([1, 2, 3], STREAM)
    for key in ("", 5, "a\x00"):
        with pytest.raises(InvalidName, match="key must be a non-empty str"):
            SetMetadata(key, "v")  # type: ignore[arg-type]
        with pytest.raises(InvalidName, match="key must be a non-empty str"):
            SetInstrumentMetadata(STREAM, key, "v")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedData, match="durable must be True or False"):
        Flush(durable="yes")  # type: ignore[arg-type]


def test_bad_messages_get_errors_the_actor_goes_on_and_earlier_rows_stay(
    tmp_path: Path,
) -> None:
    good = meter_batches(2, rows=100)
    decimal = pa.record_batch({"price": pa.array([1], pa.decimal128(5, 2))})
    twice = pa.record_batch([pa.array([1.0]), pa.array([2.0])], names=["value", "value"])

    async def main() -> Path:
        async with StorageActor(config(tmp_path)) as actor:
            await actor.call(WriteBatch(ipc_stream(good[0]), STREAM))
            with pytest.raises(UnsupportedData, match=r"7 bytes are not Arrow IPC data"):
                await actor.call(WriteBatch(b"garbage", STREAM))
            truncated = ipc_stream(good[1])[:-100]
            with pytest.raises(UnsupportedData, match="not Arrow IPC data"):
                await actor.call(WriteBatch(truncated, STREAM))
            with pytest.raises(UnsupportedData, match=r"decimal128\(5, 2\) is not supported"):
                await actor.call(WriteBatch(ipc_stream(decimal), "prices"))
            with pytest.raises(SchemaMismatch, match="column 'value' appears twice"):
                await actor.call(WriteBatch(ipc_stream(twice), STREAM))
            with pytest.raises(UnsupportedData, match=r"takes WriteBatch.*got str"):
                await actor.call("flush please")  # type: ignore[call-overload]
            with pytest.raises(InvalidName, match=r"reserved|ARROW"):
                await actor.call(SetMetadata("ARROW:schema", "x"))
            await actor.call(WriteBatch(ipc_stream(good[1]), STREAM))  # still working
            stats = await actor.call(GetStats())
        assert stats.batches_written == 2
        assert stats.file_path is not None
        return stats.file_path

    path = run(main())
    with h5py.File(path, "r") as f:
        assert list(f) == [STREAM]
        expected = np.concatenate([b["value"].to_numpy() for b in good])
        np.testing.assert_array_equal(f[STREAM]["value"][:], expected)


def test_an_incompatible_schema_change_continues_in_a_new_part_without_error(
    tmp_path: Path,
) -> None:
    first = pa.record_batch({"reading": pa.array([1, 2], pa.int32())})
    text = pa.record_batch({"reading": pa.array(["high", "low"])})
    wider = pa.record_batch({"reading": pa.array([3], pa.int64())})

    async def main() -> Path:
        async with StorageActor(config(tmp_path)) as actor:
            await actor.call(WriteBatch(first, STREAM))
            await actor.call(WriteBatch(wider, STREAM))  # widening: absorbed in place
            await actor.call(WriteBatch(text, STREAM))  # incompatible: a new part
            stats = await actor.call(GetStats())
        assert stats.file_path is not None
        return stats.file_path

    with h5py.File(run(main()), "r") as f:
        reading = f[STREAM]["reading"]
        assert reading.dtype == np.int64
        np.testing.assert_array_equal(reading[:], [1, 2, 3])
        part = f[f"{STREAM}__part0002"]
        assert part.attrs["part_of"] == STREAM
        reading = part["reading"]
        if reading.attrs.get("encoding") == "dictionary":  # text as codes + categories
            categories = part[reading.attrs["categories"]].asstr()[:]
            assert [categories[code] for code in reading[:]] == ["high", "low"]
        else:
            assert list(reading.asstr()[:]) == ["high", "low"]


def test_a_told_error_is_raised_by_the_next_call_chained_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with StorageActor(config(tmp_path)) as actor:
            await actor.tell(WriteBatch(b"not arrow", STREAM))
            await actor.tell(WriteBatch(b"nor this", STREAM))
            with pytest.raises(UnsupportedData) as caught:
                await actor.call(Flush())
            message = str(caught.value)
            assert "the told WriteBatch for 'power_meter_01' failed" in message
            assert "reported by call(Flush)" in message
            assert "1 more failed after it" in message
            assert isinstance(caught.value.__cause__, UnsupportedData)
            stats = await actor.call(GetStats())  # reported once: this call succeeds
            assert stats.batches_written == 0

    with caplog.at_level(logging.ERROR, logger="daq_storage.actor"):
        run(main())
    assert sum("told WriteBatch" in r.getMessage() for r in caplog.records) == 2


def test_a_told_error_nobody_called_after_is_raised_by_stop(tmp_path: Path) -> None:
    async def main() -> None:
        actor = await StorageActor.start(config(tmp_path))
        await actor.tell(WriteBatch(meter_batches(1, rows=5)[0], STREAM))
        await actor.tell(WriteBatch(b"\xff" * 64, STREAM))
        with pytest.raises(UnsupportedData, match=r"reported by stop\(\)"):
            await actor.stop()
        assert not actor.running
        await actor.stop()  # idempotent, reported once

    run(main())
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path, "r") as f:
        assert f[STREAM]["value"].shape == (5,)


def test_messages_after_stop_raise_actor_stopped(tmp_path: Path) -> None:
    async def main() -> None:
        async with StorageActor(config(tmp_path)) as actor:
            pass
        with pytest.raises(ActorStopped, match="stopped"):
            await actor.call(GetStats())
        with pytest.raises(ActorStopped):
            await actor.tell(Flush())
        with pytest.raises(ActorStopped, match="start a new one"):
            async with actor:
                pass

    run(main())
    assert list(tmp_path.iterdir()) == []  # nothing stored: no file


def test_a_format_that_holds_no_tables_or_a_refused_key_fails_at_construction(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="'tiff': the storage actor stores tables"):
        StorageActor(config(tmp_path, default_backend="tiff"))
    with pytest.raises(ConfigError, match=r"storage\.chunk_size = 100 \(env DAQ_STORAGE_"):
        StorageActor(config(tmp_path, default_backend="arrow", chunk_size=100))
    with pytest.raises(ConfigError, match="max_bytes must be an integer >= 1"):
        StorageActor(config(tmp_path), max_bytes=0)
    with pytest.raises(ConfigError, match="must be a StorageConfig"):
        StorageActor({"storage": {}})  # type: ignore[arg-type]


def test_every_error_is_a_daq_storage_error() -> None:
    for error in (ActorStopped, ConfigError, InvalidName, SchemaMismatch, UnsupportedData):
        assert issubclass(error, DaqStorageError)


def test_a_call_reports_only_told_errors_of_messages_sent_before_it(tmp_path: Path) -> None:
    async def main() -> None:
        actor = await StorageActor.start(config(tmp_path))
        flushing = asyncio.create_task(actor.call(Flush()))
        while actor.mailbox.peak_messages == 0:  # the Flush is in the mailbox first
            await asyncio.sleep(0)
        await actor.tell(WriteBatch(b"sent after the Flush", STREAM))
        await flushing  # handled before the bad batch: not its error
        with pytest.raises(UnsupportedData, match=r"reported by stop\(\)"):
            await actor.stop()

    run(main())
