"""Arrow IPC, Parquet and CSV specifics: crash safety, rotation, row groups, bad input."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daq_storage.errors import ConfigError, SchemaMismatch, StorageIOError, UnsupportedData
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter
from daq_storage.writers import (
    ArrowWriter,
    CsvWriter,
    ParquetWriter,
    available_writers,
    open_writer,
)


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


def test_registry_names_and_unknown_writer(tmp_path: Path):
    assert available_writers()[:4] == ["hdf5", "arrow", "parquet", "csv"]
    with pytest.raises(ConfigError, match=r"unknown writer 'xlsx'; available: hdf5, arrow"):
        open_writer("xlsx", tmp_path / "x")


def test_arrow_stream_survives_a_killed_writer(tmp_path: Path):
    target = tmp_path / "arrow"
    script = textwrap.dedent(
        f"""
        import os, signal
        from daq_storage.sim import SimulatedPowerMeter
        from daq_storage.writers import ArrowWriter
        meter = SimulatedPowerMeter(seed=0, start_ns=0)
        writer = ArrowWriter({str(target)!r})
        for _ in range(5):
            writer.write_batch("power", meter.read_batch(1000))
        writer.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert result.returncode == -signal.SIGKILL
    batches = read_stream_batches(target / "power.arrows")
    assert sum(b.num_rows for b in batches) == 5000
    expected = SimulatedPowerMeter(seed=0, start_ns=0)
    for batch in batches:
        assert batch.equals(
            expected.read_batch(1000).replace_schema_metadata(batch.schema.metadata)
        )


def test_arrow_schema_change_continues_in_a_new_part(tmp_path: Path):
    with ArrowWriter(tmp_path / "a") as writer:
        writer.write_batch("s", pa.record_batch({"v": [1, 2]}))
        writer.write_batch("s", pa.record_batch({"v": ["x"]}))
        files = [p.name for p in writer.stats.files]
    assert files == ["s.arrows", "s.part0001.arrows"]
    assert read_stream_batches(tmp_path / "a" / "s.arrows")[0].column(0).to_pylist() == [1, 2]
    assert read_stream_batches(tmp_path / "a" / "s.part0001.arrows")[0].column(0).to_pylist() == [
        "x"
    ]


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_arrow_buffer_compression_compresses_frames(tmp_path: Path, compression: str):
    frames = SimulatedCamera(seed=0, start_ns=0).frames(4).frames
    with ArrowWriter(tmp_path / "c", compression=compression) as writer:  # type: ignore[arg-type]
        writer.write_frames("cam", frames)
    path = tmp_path / "c" / "cam.arrows"
    assert path.stat().st_size < frames.nbytes  # lz4 without shuffle gains little on noise
    with pa.OSFile(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
    np.testing.assert_array_equal(table.column("frame").combine_chunks().to_numpy_ndarray(), frames)


def test_arrow_file_format(tmp_path: Path):
    with ArrowWriter(tmp_path / "f", ipc_format="file") as writer:
        writer.write_batch("s", pa.record_batch({"v": [1.5]}))
    with pa.memory_map(str(tmp_path / "f" / "s.arrow")) as source:
        assert pa.ipc.open_file(source).read_all().column("v").to_pylist() == [1.5]
    with pytest.raises(ConfigError, match="ipc_format"):
        ArrowWriter(tmp_path / "g", ipc_format="feather")  # type: ignore[arg-type]


def test_unwritable_directory(tmp_path: Path):
    for cls in (ArrowWriter, ParquetWriter, CsvWriter):
        with pytest.raises(StorageIOError, match="cannot create output directory"):
            cls("/proc/daq_storage_test_dir")


def test_parquet_buffers_into_large_row_groups(tmp_path: Path):
    meter = SimulatedPowerMeter(seed=0, start_ns=0)
    with ParquetWriter(tmp_path / "p", row_group_size=25_000, flush_interval_s=3600) as writer:
        for _ in range(10):
            writer.write_batch("power", meter.read_batch(10_000))
    metadata = pq.ParquetFile(tmp_path / "p" / "power.parquet").metadata
    assert metadata.num_rows == 100_000
    assert metadata.num_row_groups == 4  # 30k, 30k, 30k, 10k: batches are not split
    assert pl.read_parquet(tmp_path / "p" / "power.parquet").height == 100_000


def test_parquet_flush_interval_bounds_what_a_crash_loses(tmp_path: Path):
    with ParquetWriter(tmp_path / "p", row_group_size=10**9, flush_interval_s=0) as writer:
        writer.write_batch("s", pa.record_batch({"v": [1, 2]}))
        writer.write_batch("s", pa.record_batch({"v": [3]}))
        # Each batch was written as its own row group at once (interval 0).
        assert writer._open["s"].pending == []
    assert pq.ParquetFile(tmp_path / "p" / "s.parquet").metadata.num_row_groups == 2


def test_parquet_rotates_on_incompatible_schema(tmp_path: Path):
    with ParquetWriter(tmp_path / "p", compression="zstd", compression_level=3) as writer:
        writer.write_batch("s", pa.record_batch({"v": [1, 2]}))
        writer.write_batch("s", pa.record_batch({"v": ["a"]}))
    assert pl.read_parquet(tmp_path / "p" / "s.parquet")["v"].to_list() == [1, 2]
    assert pl.read_parquet(tmp_path / "p" / "s.part0001.parquet")["v"].to_list() == ["a"]
    assert (
        pq.ParquetFile(tmp_path / "p" / "s.parquet").metadata.row_group(0).column(0).compression
        == "ZSTD"
    )


@pytest.mark.parametrize("compression", ["none", "snappy", "gzip", "zstd", "lz4"])
def test_parquet_codecs_roundtrip_with_pandas(tmp_path: Path, compression: str):
    batch = SimulatedPowerMeter(seed=0, start_ns=0).read_batch(1000)
    with ParquetWriter(tmp_path / compression, compression=compression) as writer:
        writer.write_batch("s", batch)
    frame = pl.read_parquet(tmp_path / compression / "s.parquet")
    assert frame["value"].to_list() == batch.column("value").to_pylist()
    with pytest.raises(ConfigError, match="compression 'rar'"):
        ParquetWriter(tmp_path / "x", compression="rar")


def test_csv_refuses_frames_and_nested_columns_at_once(tmp_path: Path):
    with CsvWriter(tmp_path / "c") as writer:
        with pytest.raises(UnsupportedData, match="CSV cannot store frames"):
            writer.write_frames("cam", np.zeros((1, 2, 2)))
        with pytest.raises(UnsupportedData, match=r"column 'xs'.*list"):
            writer.write_batch("s", pa.record_batch({"xs": [[1, 2]]}))
        writer.write_batch("s", pa.record_batch({"v": [1]}))
        with pytest.raises(SchemaMismatch, match="cannot change"):
            writer.write_batch("s", pa.record_batch({"w": [1]}))
    assert pl.read_csv(tmp_path / "c" / "s.csv")["v"].to_list() == [1]


def test_csv_iso_timestamps(tmp_path: Path):
    batch = SimulatedPowerMeter(seed=0, start_ns=1_700_000_000_000_000_000).read_batch(2)
    with CsvWriter(tmp_path / "c", iso_timestamps=True) as writer:
        writer.write_batch("power", batch)
    text = (tmp_path / "c" / "power.csv").read_text().splitlines()
    assert text[0] == '"timestamp_ns","channel","value","unit"'
    assert text[1].startswith('"2023-11-14T22:13:20')
