"""A format's sink: its writer in its own thread, the ledger, unused outputs, failures."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from daq_storage.recorder._sinks import FormatSink, SinkSettings
from daq_storage.recorder._stats import LossGap
from daq_storage.writers import get_writer_class
from tests.recorder.conftest import file_metadata, read_frames, read_table, table

WHEN = datetime(2026, 1, 2, 3, 4, 5)


def make_sink(fmt: str, output: Path, **changes: object) -> FormatSink:
    settings = SinkSettings(fmt=fmt, options={}, output_dir=output, experiment="run", when=WHEN,
                            metadata={"recorder": {"consumer": "t"}}, rotate_bytes=None,
                            rotate_seconds=None, queue_bytes=1 << 20)  # fmt: skip
    for key, value in changes.items():
        object.__setattr__(settings, key, value)
    sink = FormatSink(settings, get_writer_class(fmt), heartbeat=lambda: None)
    sink.start()
    return sink


def finish(sink: FormatSink) -> None:
    sink.close().wait(lambda: None)
    sink.join()


def frames(first: int, n: int) -> list[np.ndarray]:
    return [np.full((4, 5), i, np.uint16) for i in range(first, first + n)]


@pytest.mark.parametrize("fmt", ["hdf5", "zarr", "arrow"])
def test_gaps_go_into_the_file_current_when_they_fell(fmt: str, tmp_path: Path) -> None:
    sink = make_sink(fmt, tmp_path)
    ids = np.arange(3, dtype=np.uint64)
    sink.write_frames("cam", frames(0, 3), ids + 100, ids, 60)
    gap = LossGap(3, 9, 7, 102, 110, 123)
    sink.gap(gap)
    sink.write_frames("cam", frames(10, 2), ids[:2] + 110, ids[:2] + 10, 40)
    sink.flush(durable=True).wait(lambda: None)
    stats = sink.snapshot()
    assert (stats.frames, stats.visible_frames, stats.flushes) == (5, 5, 1)
    assert stats.durable_flushes == 1
    sink.flush(durable=False).wait(lambda: None)
    assert (sink.snapshot().flushes, sink.snapshot().durable_flushes) == (2, 1)
    finish(sink)
    stats = sink.snapshot()
    assert stats.state == "closed"
    assert stats.current == ""
    root = tmp_path / ("run_2026-01-02_03-04-05_v1" + get_writer_class(fmt).path_suffix)
    metadata = file_metadata(fmt, root, "cam")
    assert metadata["loss_ledger"] == [gap.to_dict()]
    assert metadata["lost_records"] == 7
    assert metadata["recorder"] == {"consumer": "t"}
    got, stamps, numbers = read_frames(fmt, root, "cam")
    assert numbers == [0, 1, 2, 10, 11]
    assert stamps == [100, 101, 102, 110, 111]
    assert got[:, 0, 0].tolist() == [0, 1, 2, 10, 11]


def test_a_sink_that_stored_nothing_leaves_nothing(tmp_path: Path) -> None:
    sink = make_sink("hdf5", tmp_path / "out")
    bad = pa.record_batch({"d": pa.array([1], pa.decimal128(5, 1))})
    reply = sink.check("meter", bad)  # opens the writer (claims its file) to ask it
    reply.wait(lambda: None)
    assert reply.error is not None
    assert "hdf5" in reply.error
    finish(sink)
    assert sink.snapshot().files == ()
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def test_rotation_by_size_closes_complete_files_in_order(tmp_path: Path) -> None:
    sink = make_sink("arrow", tmp_path, rotate_bytes=1)  # every write fills a file
    for i in range(3):
        sink.write_batch("meter", table(i * 4, 4), records=1)
    finish(sink)
    stats = sink.snapshot()
    assert stats.rotations == 2  # next files started
    assert stats.rows == 12
    roots = [tmp_path / f"run_2026-01-02_03-04-05_v{n}" for n in (1, 2, 3)]
    assert [Path(f).parent for f in stats.files] == roots
    for i, root in enumerate(roots):
        assert read_table("arrow", root, "meter")["i"].to_pylist() == list(range(i * 4, i * 4 + 4))
        assert file_metadata("arrow", root, "meter")["loss_ledger"] == []


def test_a_failing_format_is_marked_failed_and_counts_what_it_lost(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    sink = make_sink("hdf5", blocker / "out")  # the output cannot be created
    ids = np.arange(2, dtype=np.uint64)
    sink.write_frames("cam", frames(0, 2), ids, ids, 40)
    sink.flush(durable=False).wait(lambda: None)
    assert sink.failed
    sink.write_batch("meter", table(0, 3), records=2)
    finish(sink)
    stats = sink.snapshot()
    assert stats.state == "failed"
    assert "StorageIOError" in stats.error
    assert stats.lost_after_failure == 4  # 2 frames, then 2 records


def test_a_format_that_buffers_until_a_flush_still_rotates_by_size(tmp_path: Path) -> None:
    sink = make_sink("parquet", tmp_path, rotate_bytes=4096)  # rows reach disk at a flush
    for i in range(20):
        sink.write_batch("meter", table(i * 100, 100), records=1)  # 1.6 kB of payload each
    finish(sink)  # no flush asked for by the loop
    stats = sink.snapshot()
    assert stats.rotations >= 2
    roots = list(dict.fromkeys(Path(f).parent for f in stats.files))
    assert len(roots) == stats.rotations + 1
    rows = [i for root in roots for i in read_table("parquet", root, "meter")["i"].to_pylist()]
    assert rows == list(range(2000))
