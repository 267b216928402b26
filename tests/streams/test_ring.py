"""The stream writer fed from a ring: the DAQ card simulator in its own process writing
blocks into the ring, the writer draining them into HDF5 and Arrow IPC; a record whose
sample index jumps is a gap."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.acquisition import DAQ_STREAM, InstrumentProcess
from daq_storage.errors import SchemaMismatch
from daq_storage.read import open_run
from daq_storage.ring import RingBuffer, RingReader
from daq_storage.sim import SimulatedDaqCard
from daq_storage.streams import ChannelConfig, Gap, StreamWriter, channels_of


@pytest.fixture
def ring_path(shm_path: Path) -> Iterator[Path]:
    RingBuffer.create(shm_path, capacity_bytes=32 << 20).close()
    yield shm_path
    shm_path.unlink(missing_ok=True)


def test_the_card_process_through_the_ring_into_both_formats(ring_path: Path, tmp_path: Path):
    with RingReader.open(ring_path, consumer="streams") as reader:
        process = InstrumentProcess(ring_path, camera=False, power_meter=False, daq=True,
                                    duration=0.5, paced=False, seed=4)  # fmt: skip
        process.start()
        try:
            writer = StreamWriter.from_ring(reader, tmp_path / "card.h5", stream=DAQ_STREAM,
                                            compression="lz4", storage_format="both",
                                            timeout=60)  # fmt: skip
            with writer:
                writer.drain(reader, stream=DAQ_STREAM, timeout=60)
        finally:
            result = process.wait(timeout=120)
    produced = result.streams[DAQ_STREAM]
    assert produced.dropped == 0
    with h5py.File(tmp_path / "card.h5", "r") as f:
        start_ns = int(f["metadata"].attrs["start_ns"])
        assert f["metadata"].attrs["sample_rate"] == 100_000.0
        assert list(f["channels"]) == [f"ai{i}" for i in range(8)]
        index = f["data/sample_index"][()]
        counts = np.column_stack([f["data"][f"ai{i}"][()] for i in range(8)])
        scale = f["data/ai0"].attrs["scale_factor"]
    assert len(index) == produced.produced == writer.stats.samples
    np.testing.assert_array_equal(index, np.arange(len(index)))  # the reader kept up
    card = SimulatedDaqCard(8, sample_rate=100_000.0, start_ns=start_ns, seed=4)
    np.testing.assert_array_equal(counts, card.read_block(len(index)).samples)
    assert scale == card.volts_per_count
    for where in ("card.h5", "card"):
        with open_run(tmp_path / where) as run:
            table = run.table("data", ["ai5"])
            np.testing.assert_allclose(table["ai5"].to_numpy(), counts[:, 5] * scale)


def test_a_jump_of_the_cards_sample_index_is_a_gap(ring_path: Path, tmp_path: Path):
    card = SimulatedDaqCard(2, sample_rate=1000.0, start_ns=10**18, seed=1)
    blocks = [card.read_block(100) for _ in range(6)]
    kept = [blocks[0], blocks[1], blocks[3], blocks[5]]  # 2 and 4 never reach the ring
    batch = kept[2].to_record_batch()
    index = np.arange(300, 400, dtype=np.uint64)
    index[50:] += 7  # and a jump inside one record
    inner = batch.set_column(0, batch.schema.field(0), pa.array(index))
    with RingBuffer.open(ring_path) as ring, RingReader.open(ring_path) as reader:
        for block in kept:
            ring.write_batch(block.to_record_batch() if block is not kept[2] else inner,
                             stream="card", timestamp_ns=block.timestamp_ns)  # fmt: skip
        ring.write(b"not the card", stream="other")
        channels, rate, start = channels_of(kept[0].to_record_batch().schema, "card")
        assert [(c.name, c.min_value, c.max_value) for c in channels] == [
            ("ai0", -10.0, 10.0),
            ("ai1", -10.0, 10.0),
        ]
        with StreamWriter.from_ring(reader, tmp_path / "g.h5", stream="card",
                                    timeout=5) as writer:  # fmt: skip
            assert writer.drain(reader, stream="card", timeout=0.2) == 300
            assert writer.gaps == [Gap(200, 100), Gap(350, 7), Gap(407, 93)]
    with open_run(tmp_path / "g.h5") as run:
        assert run.streams["data"].metadata["gaps"] == [
            {"first": 200, "count": 100},
            {"first": 350, "count": 7},
            {"first": 407, "count": 93},
        ]
        assert (rate, start, run.streams["data"].rows) == (1000.0, 10**18, 400)


def test_records_that_are_no_cards_are_refused(ring_path: Path, tmp_path: Path):
    with RingBuffer.open(ring_path) as ring, RingReader.open(ring_path) as reader:
        ring.write(b"raw bytes", stream="raw")  # not the stream: skipped
        with pytest.raises(SchemaMismatch, match=r"no record of ring stream 'card' within 0\.1 s"):
            StreamWriter.from_ring(reader, tmp_path / "x.h5", stream="card", timeout=0.1)
        ring.write_batch(pa.record_batch({"x": [1.0]}), stream="other")
        with pytest.raises(SchemaMismatch, match="ring stream 'other' is no DAQ card stream"):
            StreamWriter.from_ring(reader, tmp_path / "x.h5", stream="other", timeout=1)
        card = SimulatedDaqCard(2, sample_rate=10.0, seed=1)
        ring.write_batch(card.read_block(5).to_record_batch(), stream="card")
        other = [ChannelConfig(0, "ai0", -1.0, 1.0), ChannelConfig(1, "ai7", -1.0, 1.0)]
        writer = StreamWriter(tmp_path / "y.h5", channels=other, sample_rate=10.0)
        with writer, pytest.raises(SchemaMismatch, match="record 2: no column 'ai7'; its col"):
            writer.drain(reader, stream="card", timeout=1)
        ranged = [ChannelConfig(0, "ai0", -5.0, 5.0), ChannelConfig(1, "ai1", -10.0, 10.0)]
        ring.write_batch(card.read_block(5).to_record_batch(), stream="card")
        writer = StreamWriter(tmp_path / "z.h5", channels=ranged, sample_rate=10.0)
        refused = r"column 'ai0' has scale_factor 0.00030517578125 per count, channel 'ai0' 0.0001"
        with writer, pytest.raises(SchemaMismatch, match=refused):
            writer.drain(reader, stream="card", timeout=1)
    assert not (tmp_path / "x.h5").exists()
