"""Fan-out: one Recorder writes every stream to every configured format that can hold it,
and each format holds the same rows, the same frame pixels, frame numbers and timestamps
(read back with h5py, pyarrow / polars, zarr and tifffile); per-stream routing sends a
stream only where it is routed."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pytest

from daq_storage.recorder import Recorder
from tests.recorder._helpers import (
    ALL_FORMATS,
    CAMERA,
    FRAME_FORMATS,
    TABLE,
    TABLE_FORMATS,
    Producer,
    check_frames,
    check_rows,
    file_metadata,
    format_outputs,
    read_column,
    read_frames,
    read_ledger,
    read_rows,
    ring_at,
)

_METADATA = {"sample": "Si wafer 3", "temperature_K": 4.2}


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_every_format_holds_the_same_rows_and_frames(
    shm_path: Path, tmp_path: Path, mode: Literal["thread", "process"]
):
    """All six formats at once: tables to the five that take tables, frames to the five
    that take frames; 37 frames (not a whole number of chunks: the held-back ones are
    written at stop) and 23 batches; the run is complete and every file carries an empty
    loss ledger and the run's metadata."""
    with ring_at(shm_path, capacity_bytes=8 << 20, overflow="block", block_timeout=30) as ring:
        recorder = Recorder(ring.path, formats=ALL_FORMATS, output_dir=tmp_path / "out",
                            experiment="fanout", mode=mode, flush_interval_s=0.05,
                            metadata=_METADATA)  # fmt: skip
        producer = Producer(ring, rows_per_batch=40)
        with recorder:
            for _ in range(23):
                producer.write_group(frames=1, batches=1)
            producer.write_frames(14)
        stats = recorder.stop()  # idempotent: the final stats again

    assert stats.state == "stopped", stats
    assert stats.complete, stats
    assert (stats.records, stats.frames, stats.rows) == (producer.records, 37, 23 * 40)
    assert stats.lost == 0
    assert stats.gaps == ()
    assert set(stats.formats) == set(ALL_FORMATS)
    assert set(stats.streams[CAMERA].formats) == set(FRAME_FORMATS)
    assert set(stats.streams[TABLE].formats) == set(TABLE_FORMATS)
    frames, rows = list(range(37)), list(range(23 * 40))
    for name in ALL_FORMATS:
        fmt = stats.formats[name]
        assert fmt.state == "closed", fmt
        assert fmt.error == "", fmt
        outputs = format_outputs(stats, name)
        assert len(outputs) == 1, fmt
        assert outputs[0].exists(), fmt
        assert outputs[0].parent == tmp_path / "out", fmt
        if name in FRAME_FORMATS:
            assert (fmt.frames, fmt.visible_frames) == (37, 37), fmt
            check_frames(read_frames(name, outputs[0]), frames, f"{name} frames")
        if name in TABLE_FORMATS:
            assert (fmt.rows, fmt.visible_rows) == (23 * 40, 23 * 40), fmt
            check_rows(read_rows(name, outputs[0]), rows, f"{name} rows")
        assert read_ledger(name, outputs[0]) == ([], 0), name
        for document in file_metadata(name, outputs[0]):  # each stream file's, or the file's
            assert {k: document.get(k) for k in _METADATA} == _METADATA, (name, document)


def test_streams_go_only_where_they_are_routed(shm_path: Path, tmp_path: Path):
    """``streams`` overrides ``formats`` for the streams it names: the camera goes to
    HDF5 and TIFF only, the table (routed by ``formats``) to Parquet only (the only one
    of them that takes tables... and frames: Parquet gets no camera)."""
    with ring_at(shm_path, capacity_bytes=4 << 20, overflow="block", block_timeout=30) as ring:
        recorder = Recorder(ring.path, formats=["parquet"], output_dir=tmp_path,
                            streams={CAMERA: ["hdf5", "tiff"]}, mode="thread")  # fmt: skip
        producer = Producer(ring)
        with recorder:
            for _ in range(10):
                producer.write_group(frames=3, batches=1)
        stats = recorder.stop()
    assert stats.complete, stats
    assert set(stats.streams[CAMERA].formats) == {"hdf5", "tiff"}
    assert set(stats.streams[TABLE].formats) == {"parquet"}
    for name in ("hdf5", "tiff"):
        (output,) = format_outputs(stats, name)
        check_frames(read_frames(name, output), list(range(30)), name)
    (parquet,) = format_outputs(stats, "parquet")
    check_rows(read_rows("parquet", parquet), list(range(10 * 50)), "parquet")
    assert len(read_frames("parquet", parquet)) == 0  # the camera was not routed there
    (hdf5,) = format_outputs(stats, "hdf5")
    assert len(read_rows("hdf5", hdf5)) == 0


def test_a_schema_change_continues_in_a_new_part_in_every_format(shm_path: Path, tmp_path: Path):
    """Column ``v`` turns from float64 to text mid-stream, a change no table format
    absorbs in place: every format continues the stream in a new part (never drops or
    refuses it), and each holds the same rows, part by part."""
    with ring_at(shm_path, capacity_bytes=4 << 20, overflow="block", block_timeout=30) as ring:
        recorder = Recorder(ring.path, formats=TABLE_FORMATS, output_dir=tmp_path, mode="thread")
        with recorder:
            for k in range(6):
                i = np.arange(k * 10, (k + 1) * 10, dtype=np.int64)
                v = pa.array(i / 4.0) if k < 3 else pa.array([f"s{n}" for n in i])
                ring.write_batch(pa.record_batch({"i": i, "v": v}), stream=TABLE)
        stats = recorder.stop()
    assert stats.complete, stats
    assert stats.streams[TABLE].refused == 0
    floats, texts = [n / 4.0 for n in range(30)], [f"s{n}" for n in range(30, 60)]
    for name in TABLE_FORMATS:
        (output,) = format_outputs(stats, name)
        assert read_column(name, output, TABLE, "i") == [list(range(30)), list(range(30, 60))]
        assert read_column(name, output, TABLE, "v") == [floats, texts], name
