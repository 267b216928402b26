"""An overrun forced on purpose: the Recorder's process is paused (SIGSTOP) while the
producer writes several times a small discard_oldest ring, then resumed (SIGCONT) and
stopped. The loss is exact and visible everywhere: the gaps in the stats, the ring's own
count and the ``loss_ledger`` of every file agree, and for every stream and every format
what the producer wrote == what the files hold + what the ledger says was lost."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from daq_storage.acquisition import (
    CAMERA_STREAM,
    DAQ_STREAM,
    POWER_METER_STREAM,
    InstrumentProcess,
)
from daq_storage.errors import RingFull
from daq_storage.recorder import Recorder, RecorderStats
from tests.recorder._helpers import (
    ALL_FORMATS,
    CAMERA,
    FRAME_FORMATS,
    TABLE,
    TABLE_FORMATS,
    Producer,
    check_frames,
    check_rows,
    count_rows,
    format_outputs,
    frame_indices,
    read_frames,
    read_ledger,
    read_rows,
    ring_at,
    wait_for_stats,
)

_ROWS = 50  # rows per table record


def _stored_seqs(producer: Producer, stats: RecorderStats, name: str) -> dict[str, list[int]]:
    """Per stream, the ring seqs of the records format ``name`` stored, in file order
    (frames by frame number; rows by row index, each record whole)."""
    frame_seq = {index: seq for seq, index, _ in producer.log[CAMERA]}
    row_seq = {index: seq for seq, index, _ in producer.log[TABLE]}
    stored: dict[str, list[int]] = {CAMERA: [], TABLE: []}
    for output in format_outputs(stats, name):
        if name in FRAME_FORMATS:
            stored[CAMERA] += [frame_seq[i] for i in frame_indices(read_frames(name, output))]
        if name in TABLE_FORMATS:
            rows = read_rows(name, output).column("i").to_pylist()
            assert len(rows) % _ROWS == 0, f"{name}: part of a table record stored"
            for k in range(0, len(rows), _ROWS):
                first = rows[k]
                assert rows[k : k + _ROWS] == list(range(first, first + _ROWS)), name
                stored[TABLE].append(row_seq[first])
    return stored


@pytest.mark.slow
@pytest.mark.parametrize("rotate_bytes", [None, 8 << 10], ids=["one_file", "rotating"])
def test_an_overrun_is_counted_exactly_in_stats_ring_and_every_file(
    shm_path: Path, tmp_path: Path, rotate_bytes: int | None
):
    """With rotation, each gap is in the ledger of the file current when it fell: the
    files' ledgers, in file order, are the gaps."""
    with ring_at(shm_path, capacity_bytes=64 << 10, overflow="discard_oldest") as ring:
        recorder = Recorder(ring.path, formats=ALL_FORMATS, output_dir=tmp_path,
                            flush_interval_s=0.05, frames_per_write=4, batch_rows=100,
                            rotate_bytes=rotate_bytes)  # fmt: skip
        producer = Producer(ring, rows_per_batch=_ROWS)
        with recorder:
            pid = recorder.pid
            assert pid is not None
            for _ in range(10):
                producer.write_group(frames=2, batches=1)
            wait_for_stats(ring.path, "recorder", lambda s: s.records == producer.records)
            os.kill(pid, signal.SIGSTOP)
            try:  # ~20 times the ring while the Recorder cannot read
                for _ in range(600):
                    producer.write_group(frames=2, batches=1)
            finally:
                os.kill(pid, signal.SIGCONT)
            for _ in range(10):
                producer.write_group(frames=2, batches=1)
            live = wait_for_stats(ring.path, "recorder",
                                  lambda s: s.records + s.lost == producer.records)  # fmt: skip
            (seen_by_ring,) = [r for r in ring.stats().readers if r.name == "recorder"]
        stats = recorder.stop()
    if rotate_bytes is not None:
        rotated = {name: len(format_outputs(stats, name)) for name in ALL_FORMATS}
        assert min(rotated.values()) > 1, (rotated, stats.formats)

    # the stats: every record read or counted lost, and the gaps are the loss
    assert stats.state == "stopped", stats
    assert stats.lost > 0, "no overrun: the test did not lap the Recorder"
    assert stats.gaps
    assert not stats.complete  # something was lost
    assert stats.records + stats.lost == producer.records
    assert stats.lost == sum(g.count for g in stats.gaps) == live.lost
    assert seen_by_ring.lost == stats.lost, seen_by_ring  # the ring's own count
    for gap in stats.gaps:
        assert gap.count == gap.last_seq - gap.first_seq + 1 > 0, gap
        assert gap.before_ns >= gap.after_ns, gap
    lost_seqs = {s for g in stats.gaps for s in range(g.first_seq, g.last_seq + 1)}
    assert lost_seqs <= set(range(producer.records))
    assert stats.streams[CAMERA].records + stats.streams[TABLE].records == stats.records

    ledger_rows = [g.to_dict() for g in stats.gaps]
    for name in ALL_FORMATS:
        outputs = format_outputs(stats, name)
        assert outputs, name
        # the ledger: in the files, the same as in the stats
        ledgers = [read_ledger(name, output) for output in outputs]
        assert sum(lost for _, lost in ledgers) == stats.lost, (name, ledgers)
        assert [gap for ledger, _ in ledgers for gap in ledger] == ledger_rows, name
        # per stream: written == stored + lost, and the lost ones are the ledger's
        stored = _stored_seqs(producer, stats, name)
        streams = [s for s, kinds in ((CAMERA, FRAME_FORMATS), (TABLE, TABLE_FORMATS))
                   if name in kinds]  # fmt: skip
        for stream in streams:
            written = producer.seqs(stream)
            lost = [seq for seq in written if seq in lost_seqs]
            assert stored[stream] == [seq for seq in written if seq not in lost_seqs], (
                f"{name} {stream}: stored records are not the written ones minus the ledger"
            )
            assert len(written) == len(stored[stream]) + len(lost), (name, stream)


@pytest.mark.parametrize("name", ["hdf5", "csv"])
def test_no_overrun_leaves_an_empty_ledger(shm_path: Path, tmp_path: Path, name: str):
    """A Recorder that keeps up says so in every file: an empty ledger, nothing lost."""
    with ring_at(shm_path, capacity_bytes=1 << 20, overflow="block", block_timeout=30) as ring:
        recorder = Recorder(ring.path, formats=[name], output_dir=tmp_path, mode="thread")
        with recorder:
            Producer(ring).write_group(frames=3 if name in FRAME_FORMATS else 0, batches=3)
        stats = recorder.stop()
    assert stats.lost == 0, stats
    assert stats.complete, stats
    for output in format_outputs(stats, name):
        assert read_ledger(name, output) == ([], 0)


@pytest.mark.slow
def test_the_simulated_instruments_overrunning_a_paused_recorder(shm_path: Path, tmp_path: Path):
    """The acquisition in its own process (camera, power meter, DAQ card, as fast as
    the ring takes them, every record's seq logged) writes several times a 1 MiB ring
    while the Recorder is stopped; for every stream and format, the records written ==
    those stored + those in the ledger's gaps."""
    with ring_at(shm_path, capacity_bytes=1 << 20, overflow="discard_oldest") as ring:
        ring.close()  # the instrument process is the ring's one writer
        formats = ["hdf5", "parquet", "csv"]
        recorder = Recorder(ring.path, formats=formats, output_dir=tmp_path)
        with recorder:
            pid = recorder.pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                instruments = InstrumentProcess(ring.path, camera_shape=(48, 64), duration=3.0,
                                                paced=False, log_seqs=True)  # fmt: skip
                instruments.start()
                result = instruments.wait(120)
            finally:
                os.kill(pid, signal.SIGCONT)
        stats = recorder.stop()

    written = {name: count.records for name, count in result.streams.items()}
    assert sum(written.values()) == stats.records + stats.lost
    assert stats.lost > 0, "the instruments did not lap the paused Recorder"
    assert stats.lost == sum(g.count for g in stats.gaps)
    lost_seqs = {s for g in stats.gaps for s in range(g.first_seq, g.last_seq + 1)}
    for name in formats:
        outputs = format_outputs(stats, name)
        assert sum(read_ledger(name, output)[1] for output in outputs) == stats.lost, name
        for stream, count in result.streams.items():
            if stream == CAMERA_STREAM and name == "csv":
                continue  # CSV holds no frames
            assert count.dropped == 0, count  # discard_oldest never refuses
            seqs = count.seqs
            assert len(seqs) == count.records
            lost = sum(1 for seq in seqs if seq in lost_seqs)
            if stream == CAMERA_STREAM:  # one frame a record, frame numbers 0..
                numbers = [int(n) for o in outputs for n in read_frames(name, o).frame_numbers]
                assert [seqs[n] for n in numbers] == [s for s in seqs if s not in lost_seqs]
                stored = len(numbers)
            else:  # each record of a scalar instrument holds the same number of rows
                assert stream in (POWER_METER_STREAM, DAQ_STREAM)
                per_record, rest = divmod(count.produced, count.records)
                assert rest == 0, count
                rows = sum(count_rows(name, o, stream) for o in outputs)
                stored, part = divmod(rows, per_record)
                assert part == 0, f"{name} {stream}: part of a record stored"
            assert count.records == stored + lost, (name, stream, count.records, stored, lost)


@pytest.mark.slow
def test_records_a_block_mode_ring_refused_are_counted_not_lost(shm_path: Path, tmp_path: Path):
    """No-loss mode: while the Recorder is paused the full ring refuses records after
    ``block_timeout`` (the producer's drops, counted by the ring); the Recorder reports
    them as ``dropped``, loses nothing it was given, and the files hold every record the
    ring took."""
    with ring_at(shm_path, capacity_bytes=64 << 10, overflow="block", block_timeout=0.02) as ring:
        recorder = Recorder(ring.path, formats=["hdf5", "parquet"], output_dir=tmp_path,
                            frames_per_write=4)  # fmt: skip
        producer = Producer(ring, rows_per_batch=_ROWS)
        refused = 0
        with recorder:
            pid = recorder.pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:  # well within the ring's heartbeat timeout: the Recorder is not evicted
                while refused < 10:
                    try:
                        producer.write_group(frames=1, batches=1)
                    except RingFull:
                        refused += 1
            finally:
                os.kill(pid, signal.SIGCONT)
            wait_for_stats(ring.path, "recorder", lambda s: s.records == producer.records)
            producer.write_group(frames=3, batches=3)  # taken again once there is room
        stats = recorder.stop()
    assert stats.dropped == refused, stats
    assert stats.lost == 0, stats
    assert not stats.evicted, stats
    assert stats.records == producer.records, stats
    for name in ("hdf5", "parquet"):
        (output,) = format_outputs(stats, name)
        check_frames(read_frames(name, output), list(range(producer.frames)), name)
        check_rows(read_rows(name, output), list(range(producer.rows)), name)
        assert read_ledger(name, output) == ([], 0), name
