"""Arrow IPC specifics: crash safety, parts, late metadata, compression, stats, bad input."""

from __future__ import annotations

import errno
import json
import resource
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from daq_storage.errors import ConfigError, SchemaMismatch, StorageIOError, UnsupportedData
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter
from daq_storage.writers import ArrowWriter, repair_arrow
from tests.writers.test_formats import fill


def read_stream_batches(path: Path) -> list[pa.RecordBatch]:
    """Every complete batch of a stream file, even one whose writer was killed."""
    batches = []
    with pa.OSFile(str(path)) as source:
        reader = pa.ipc.open_stream(source)
        while True:
            try:
                batches.append(reader.read_next_batch())
            except (StopIteration, pa.ArrowInvalid, OSError):
                return batches


def stream_metadata(path: Path) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(schema metadata, metadata after every batch's custom metadata, rows) of a stream
    file, read the way the ArrowWriter docstring tells scientists to."""
    with pa.OSFile(str(path)) as source, pa.ipc.open_stream(source) as reader:
        header = {k.decode(): json.loads(v) for k, v in (reader.schema.metadata or {}).items()}
        merged = dict(header)
        rows = 0
        for batch, custom in reader.iter_batches_with_custom_metadata():
            rows += batch.num_rows
            merged.update({k.decode(): json.loads(v) for k, v in (custom or {}).items()})
    return header, merged, rows


def test_stream_survives_a_killed_writer_with_its_late_metadata(tmp_path: Path):
    target = tmp_path / "arrow"
    script = textwrap.dedent(
        f"""
        import os, signal
        from daq_storage.sim import SimulatedPowerMeter
        from daq_storage.writers import ArrowWriter
        meter = SimulatedPowerMeter(seed=0, start_ns=0)
        writer = ArrowWriter({str(target)!r})
        for i in range(5):
            writer.write_batch("power", meter.read_batch(1000))
            if i == 2:
                writer.set_metadata("laser_on", True)
        os.kill(os.getpid(), signal.SIGKILL)  # no flush, no close
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert result.returncode == -signal.SIGKILL
    path = target / "power.arrows"
    batches = [b for b in read_stream_batches(path) if b.num_rows]
    assert [b.num_rows for b in batches] == [1000] * 5
    expected = SimulatedPowerMeter(seed=0, start_ns=0)
    for batch in batches:
        assert batch.equals(
            expected.read_batch(1000).replace_schema_metadata(batch.schema.metadata)
        )
    header, merged, _ = stream_metadata(path)
    assert "laser_on" not in header
    assert merged["laser_on"] is True


def test_schema_change_continues_in_a_new_part_with_all_metadata(tmp_path: Path):
    with ArrowWriter(tmp_path / "a") as writer:
        writer.set_metadata("sample", "Si")
        writer.write_batch("s", pa.record_batch({"v": [1, 2]}))
        writer.set_metadata("temperature_K", 4.2, stream="s")
        writer.write_batch("s", pa.record_batch({"v": ["x"]}))
        files = [p.name for p in writer.stats.files]
    assert files == ["s.arrows", "s__part0002.arrows"]
    assert read_stream_batches(tmp_path / "a" / "s.arrows")[0].column(0).to_pylist() == [1, 2]
    part = tmp_path / "a" / "s__part0002.arrows"
    assert read_stream_batches(part)[0].column(0).to_pylist() == ["x"]
    header, _, _ = stream_metadata(part)
    assert header == {"sample": "Si", "temperature_K": 4.2,
                      "daq_storage.part_of": "s", "daq_storage.first_row": 2}  # fmt: skip


def test_late_metadata_reaches_every_open_stream_and_survives_close(tmp_path: Path):
    meter = SimulatedPowerMeter(seed=0, start_ns=0)
    first, second = meter.read_batch(100), meter.read_batch(100)
    with ArrowWriter(tmp_path / "a") as writer:
        writer.set_metadata("operator", "ada")
        writer.write_batch("power", first)
        writer.write_frames("cam", SimulatedCamera((8, 12), seed=0, start_ns=0).frames(2).frames)
        writer.set_metadata("wavelength_nm", 633.0, stream="power")
        writer.set_metadata("operator", "grace")  # file level, to both open files
        writer.set_metadata("wavelength_nm", 633.0, stream="power")  # unchanged: no record
        writer.write_batch("power", second)
        writer.set_metadata("note", {"ok": [1, 2]}, stream="power")  # after the last batch
        writer.write_batch("late", pa.record_batch({"v": [1.0]}))
    directory = tmp_path / "a"
    header, merged, rows = stream_metadata(directory / "power.arrows")
    assert header == {"operator": "ada"}
    assert merged == {"operator": "grace", "wavelength_nm": 633.0, "note": {"ok": [1, 2]}}
    assert rows == 200
    with pa.OSFile(str(directory / "power.arrows")) as source:
        customs = [c for _, c in pa.ipc.open_stream(source).iter_batches_with_custom_metadata()]
    assert sum(c is not None for c in customs) == 3  # each change once
    cam_header, cam_merged, _ = stream_metadata(directory / "cam.arrows")
    assert (cam_header["operator"], cam_merged["operator"]) == ("ada", "grace")
    assert "wavelength_nm" not in cam_merged
    late_header, _, _ = stream_metadata(directory / "late.arrows")
    assert late_header == {"operator": "grace"}  # opened after: in its schema
    # The metadata-only batches hold no rows: the data reads back unchanged.
    table = pl.read_ipc_stream(directory / "power.arrows")
    assert table.height == 200
    assert table["value"].to_list() == [*first.column("value").to_pylist(),
                                        *second.column("value").to_pylist()]  # fmt: skip


def test_file_format_keeps_late_metadata_in_batches(tmp_path: Path):
    with ArrowWriter(tmp_path / "f", ipc_format="file") as writer:
        writer.set_metadata("early", 1)
        writer.write_batch("s", pa.record_batch({"v": [1.5]}))
        writer.set_metadata("late", 2)
    with pa.memory_map(str(tmp_path / "f" / "s.arrow")) as source:
        reader = pa.ipc.open_file(source)
        assert reader.schema.metadata == {b"early": b"1"}
        customs = [
            reader.get_batch_with_custom_metadata(i).custom_metadata
            for i in range(reader.num_record_batches)
        ]
        assert reader.read_all().column("v").to_pylist() == [1.5]
    assert customs == [None, {b"late": b"2"}]


@pytest.mark.parametrize("ipc_format", ["stream", "file"])
@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_buffer_compression_roundtrip(tmp_path: Path, compression: str, ipc_format: str):
    block = SimulatedCamera((32, 32), seed=0, start_ns=0).frames(4)
    # Compressible rows: a counter and a constant, as a slow sensor produces.
    table = pa.record_batch({"n": np.arange(50_000, dtype=np.int64), "v": np.full(50_000, 1.5)})
    sizes = {}
    for codec in (None, compression):
        target = tmp_path / str(codec)
        with ArrowWriter(target, ipc_format=ipc_format, compression=codec) as writer:  # type: ignore[arg-type]
            writer.write_batch("rows", table)
            writer.write_frames("cam", block.frames, timestamps_ns=block.timestamps_ns)
            sizes[codec] = writer.stats.file_size
    assert sizes[compression] < sizes[None] / 2  # the codec was applied
    directory = tmp_path / compression
    suffix = ".arrows" if ipc_format == "stream" else ".arrow"
    with pa.OSFile(str(directory / f"rows{suffix}")) as source:
        reader = pa.ipc.open_stream(source) if ipc_format == "stream" else pa.ipc.open_file(source)
        assert reader.read_all().equals(pa.Table.from_batches([table]))
    with pa.OSFile(str(directory / f"cam{suffix}")) as source:
        reader = pa.ipc.open_stream(source) if ipc_format == "stream" else pa.ipc.open_file(source)
        cam = reader.read_all()
    np.testing.assert_array_equal(cam.column("frame").combine_chunks().to_numpy_ndarray(),
                                  block.frames)  # fmt: skip
    assert cam.schema.field("timestamp_ns").type == pa.timestamp("ns", "UTC")
    np.testing.assert_array_equal(cam.column("timestamp_ns").cast(pa.int64()).to_numpy(),
                                  block.timestamps_ns)  # fmt: skip
    if ipc_format == "stream":  # a second reader: polars decompresses it too
        assert pl.read_ipc_stream(directory / "rows.arrows")["n"].to_list() == list(range(50_000))


def test_file_format_and_bad_options(tmp_path: Path):
    with ArrowWriter(tmp_path / "f", ipc_format="file") as writer:
        writer.write_batch("s", pa.record_batch({"v": [1.5]}))
    with pa.memory_map(str(tmp_path / "f" / "s.arrow")) as source:
        assert pa.ipc.open_file(source).read_all().column("v").to_pylist() == [1.5]
    with pytest.raises(ConfigError, match=r"ipc_format = 'feather': .*'stream' or 'file'"):
        ArrowWriter(tmp_path / "g", ipc_format="feather")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"compression = 'gzip': .*'lz4', 'zstd' or 'none'"):
        ArrowWriter(tmp_path / "g", compression="gzip")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"compression_level 3 needs a compression"):
        ArrowWriter(tmp_path / "g", compression_level=3)
    with pytest.raises(ConfigError, match=r"compression_level for 'lz4' must be 1\.\.12, got 40"):
        ArrowWriter(tmp_path / "g", compression="lz4", compression_level=40)
    assert not (tmp_path / "g").exists()


def test_stats_count_calls_rows_frames_bytes_and_files(tmp_path: Path):
    meter = SimulatedPowerMeter(seed=0, start_ns=0)
    batches = [meter.read_batch(1000), meter.read_batch(500).slice(100, 200)]
    frames = SimulatedCamera((8, 8), seed=0, start_ns=0).frames(5).frames
    with ArrowWriter(tmp_path / "a") as writer:
        for batch in batches:
            writer.write_batch("power", batch)
        writer.write_frames("cam", frames[:2])
        writer.write_frames("cam", frames[2:])
        writer.write_batch("power", pa.record_batch({"v": [1]}))  # a new part
        stats = writer.stats
        assert (stats.batches, stats.rows, stats.frames) == (3, 1201, 5)
        # Payload bytes: the sliced batch counts only the rows it holds; a frame also
        # carries its timestamp and frame number (uint64 each).
        table_bytes = sum(b.nbytes for b in batches) + 8
        assert stats.bytes_written == table_bytes + frames.nbytes + 5 * 16
        directory = tmp_path / "a"
        assert stats.files == (directory / "power.arrows", directory / "cam.arrows",
                               directory / "power__part0002.arrows")  # fmt: skip
    assert writer.stats.file_size == sum(p.stat().st_size for p in stats.files)
    assert read_stream_batches(directory / "power.arrows")[1].equals(batches[1])


def test_frames_of_another_shape_are_refused_and_earlier_frames_kept(tmp_path: Path):
    frames = SimulatedCamera((8, 8), seed=0, start_ns=0).frames(3).frames
    with ArrowWriter(tmp_path / "a") as writer:
        writer.write_frames("cam", frames)
        with pytest.raises(SchemaMismatch, match=r"stream 'cam'.*shape \(8, 8\).*shape \(4, 4\)"):
            writer.write_frames("cam", frames[:, :4, :4])
        with pytest.raises(SchemaMismatch, match=r"stream 'cam'.*uint16.*float32"):
            writer.write_frames("cam", frames.astype(np.float32))
    (batch,) = read_stream_batches(tmp_path / "a" / "cam.arrows")
    np.testing.assert_array_equal(batch.column("frame").to_numpy_ndarray(), frames)


def test_unwritable_directory():
    with pytest.raises(StorageIOError, match="cannot create output directory"):
        ArrowWriter("/proc/daq_storage_test_dir")


@pytest.mark.parametrize("dictionary", [False, True])
@pytest.mark.parametrize("room_at_close", [True, False])
def test_file_format_on_a_full_disk_keeps_one_file_and_completes_it(
    mount_tmpfs: Callable[[str], Path], dictionary: bool, room_at_close: bool
) -> None:
    """A write the disk refuses half-way leaves the file-format file at its last complete
    batch; the stream goes on in it once there is room (no part files, none empty), and
    the file gets its footer at close, or close says that repair completes it (F8: the
    file was left without a footer, close raised nothing, empty parts were made)."""
    disk = mount_tmpfs("8m")
    target = disk / "run"
    writer = ArrowWriter(target, ipc_format="file")
    rows = 20_000

    def batch(i: int) -> pa.RecordBatch:
        labels = pa.array(["a", "b", "c", "d"] * (rows // 4))
        return pa.record_batch({
            "seq": np.arange(i * rows, (i + 1) * rows),
            "lab": labels.dictionary_encode() if dictionary else labels,
        })  # fmt: skip

    accepted = [0, 1]
    for i in accepted:
        writer.write_batch("s", batch(i))
    filler = fill(disk, leave=48 << 10)
    halfway = None
    for i in range(2, 8):
        try:
            writer.write_batch("s", batch(i))
        except StorageIOError as exc:
            if halfway is None and "free on the disk" not in str(exc):
                halfway = exc
        else:
            accepted.append(i)
    assert halfway is not None
    assert halfway.errno == errno.ENOSPC, halfway
    assert sorted(p.name for p in target.iterdir()) == ["s.arrow"]
    path = target / "s.arrow"
    if room_at_close:
        filler.unlink()
        for i in (10, 11):
            writer.write_batch("s", batch(i))
            accepted.append(i)
        writer.close()
    else:  # no room even for the footer: the file-size limit says so at once
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size, limit[1]))
        try:
            with pytest.raises(StorageIOError, match=r"s\.arrow.*repair") as refused:
                writer.close()
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        assert refused.value.filename == str(path)
        assert writer.closed
        filler.unlink()
        assert "footer" in (repair_arrow(path) or "")
    expected = [v for i in accepted for v in range(i * rows, (i + 1) * rows)]
    with pa.ipc.open_file(path) as reader:
        assert reader.read_all().column("seq").to_pylist() == expected
    assert pl.read_ipc(path)["seq"].to_list() == expected
    assert sorted(p.name for p in target.iterdir()) == ["s.arrow"]


def test_file_format_late_metadata_with_dictionaries_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """The file format cannot take metadata after the first batch of a stream with
    dictionary columns: set_metadata says so, and close never raises for it."""
    writer = ArrowWriter(tmp_path / "run", ipc_format="file")

    def batch(i: int) -> pa.RecordBatch:
        return pa.record_batch({"x": [i, i], "d": pa.array(["a", "b"]).dictionary_encode()})

    writer.write_batch("s", batch(0))
    writer.write_batch("s", batch(1))
    with pytest.raises(UnsupportedData, match=r"'late'.*dictionary columns.*before the first"):
        writer.set_metadata("late", 1)
    with pytest.raises(UnsupportedData, match="dictionar"):
        writer.set_metadata("late", 1, stream="s")
    writer.write_batch("s", batch(9))
    writer.close()
    with pa.ipc.open_file(tmp_path / "run" / "s.arrow") as reader:
        assert reader.read_all().column("x").to_pylist() == [0, 0, 1, 1, 9, 9]
        assert b"late" not in (reader.schema.metadata or {})
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["s.arrow"]
