"""Failure isolation on a real, small, full filesystem: the format that runs out of room
is reported failed (ENOSPC named) and stops; the other keeps recording everything
routed to it, the ring keeps draining (nothing lost in block mode), and the run is
not complete. What the failed format stored before stays readable.

The Recorder has one ``output_dir`` for every format (the shared API), so both formats
are on the small tmpfs here: the disk is filled to leave room for the small table
batches CSV writes, not for the 16-frame groups of 600 kB frames HDF5 must write.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest

from daq_storage.recorder import Recorder
from daq_storage.testing import fill_disk
from tests.recorder._helpers import (
    CAMERA,
    TABLE,
    Producer,
    check_frames,
    check_rows,
    format_outputs,
    read_frames,
    read_rows,
    ring_at,
)

_BIG = (480, 640)  # 600 kB a frame


def _names_enospc(error: str) -> bool:
    return any(text in error for text in ("ENOSPC", "No space left", f"[Errno {errno.ENOSPC}]"))


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_format_out_of_room_fails_alone(
    mount_tmpfs: Callable[[str], Path], shm_path: Path, mode: Literal["thread", "process"]
):
    disk = mount_tmpfs("24m")
    out = disk / "out"
    with ring_at(shm_path, capacity_bytes=32 << 20, overflow="block", block_timeout=60) as ring:
        recorder = Recorder(ring.path, formats=["hdf5", "csv"], output_dir=out, mode=mode,
                            options={"hdf5": {"compression": "none"}},
                            frames_per_write=16, flush_interval_s=0.05)  # fmt: skip
        producer = Producer(ring, rows_per_batch=50, frame_shape=_BIG)
        with recorder:
            producer.write_frames(16)
            producer.write_rows(4)
            recorder.flush()  # both formats hold data: each made its file
            before = recorder.stats
            assert {f.state for f in before.formats.values()} == {"recording"}, before
            filler = fill_disk(disk, leave=6 << 20)  # room for rows, not for 16 frames
            try:
                for _ in range(4):
                    producer.write_frames(16)
                    producer.write_rows(10)
                recorder.flush()
            finally:
                filler.unlink()  # the room is back: the failed format stays stopped
            producer.write_rows(5)
            producer.write_frames(16)
        stats = recorder.stop()

    hdf5, csv = stats.formats["hdf5"], stats.formats["csv"]
    assert hdf5.state == "failed", hdf5
    assert _names_enospc(hdf5.error), hdf5.error
    assert hdf5.lost_after_failure > 0, hdf5  # frames routed to it after it failed
    assert any("hdf5" in e for e in stats.errors), stats.errors
    assert not stats.complete, stats
    # the ring kept draining: everything was read, nothing lost
    assert stats.lost == 0, stats
    assert stats.dropped == 0, stats
    assert not stats.evicted, stats
    assert stats.records == producer.records, stats
    assert stats.lag_records == 0, stats
    # the other format holds everything routed to it
    assert csv.state == "closed", csv
    assert csv.error == "", csv
    (csv_out,) = format_outputs(stats, "csv")
    check_rows(read_rows("csv", csv_out), list(range(producer.rows)), "csv")
    assert stats.streams[TABLE].rows == producer.rows
    assert stats.streams[CAMERA].frames == producer.frames
    # the failed format's file opens and holds what it stored before the failure
    (hdf5_out,) = format_outputs(stats, "hdf5")
    frames = read_frames("hdf5", hdf5_out)
    assert len(frames) >= 16, "the frames flushed before the disk filled are gone"
    check_frames(frames, list(range(len(frames))), "hdf5", _BIG)
    rows = read_rows("hdf5", hdf5_out)
    assert rows.num_rows >= 4 * 50
    check_rows(rows, list(range(rows.num_rows)), "hdf5 rows")
    assert not any(p.name == "filler" for p in disk.iterdir())
    assert os.path.commonpath([hdf5_out, csv_out]) == str(out)
