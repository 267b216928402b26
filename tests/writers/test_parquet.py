"""Parquet specifics: a complete file after every row group, crash recovery, rotation,
codecs, key-value metadata, stats and a full disk; read back with pyarrow, polars and
pandas."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daq_storage.errors import ConfigError, StorageIOError, UnsupportedData
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter
from daq_storage.writers import ParquetWriter, open_writer
from daq_storage.writers._parquet_footer import FooterShift
from daq_storage.writers.parquet import Codec, repair_parquet

CODECS = ["snappy", "gzip", "zstd", "lz4", "brotli"]


def power_rows(n_rows: int, batch_rows: int = 1000) -> pa.Table:
    """What ``SimulatedPowerMeter(seed=0, start_ns=0)`` produces first, ``batch_rows`` at a time."""
    meter = SimulatedPowerMeter(seed=0, start_ns=0)
    return pa.Table.from_batches(
        [meter.read_batch(batch_rows) for _ in range(n_rows // batch_rows)]
    )


def assert_readers_agree(path: Path, expected: pa.Table) -> None:
    """pyarrow, polars and pandas all read exactly ``expected`` from ``path``."""
    table = pq.read_table(path)
    assert table.num_rows == expected.num_rows
    for name in expected.column_names:
        assert table.column(name).to_pylist() == expected.column(name).to_pylist(), name
    frame = pl.read_parquet(path)
    assert frame.height == expected.num_rows
    assert frame["timestamp_ns"].to_list() == expected.column("timestamp_ns").to_pylist()
    assert frame["value"].to_list() == expected.column("value").to_pylist()
    df = pd.read_parquet(path)
    assert len(df) == expected.num_rows
    assert df["value"].tolist() == expected.column("value").to_pylist()
    assert df["channel"].tolist() == expected.column("channel").to_pylist()


def run_child(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def kill_after(script: str, confirmed_rows: int) -> int:
    """Run ``script``, which prints the rows it has flushed after each flush; SIGKILL it
    once it has confirmed at least ``confirmed_rows``. Returns the last count read."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout is not None
    flushed = 0
    try:
        for line in child.stdout:
            flushed = int(line)
            if flushed >= confirmed_rows:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert flushed >= confirmed_rows, "the writer died before it had flushed enough"
    return flushed


# ---------------------------------------------------------------------- crash safety
def test_killed_while_buffering_leaves_a_complete_file(tmp_path: Path):
    """After flush() the file is complete: no repair needed when the process dies
    later while rows are only buffered."""
    target = tmp_path / "run"
    flushed = kill_after(
        f"""
        import time
        from daq_storage.sim import SimulatedPowerMeter
        from daq_storage.writers import ParquetWriter
        meter = SimulatedPowerMeter(seed=0, start_ns=0)
        writer = ParquetWriter({str(target)!r}, row_group_size=10**9)
        for _ in range(5):
            writer.write_batch("power", meter.read_batch(1000))
            writer.flush()
        print(5000, flush=True)
        while True:  # keeps writing into the buffer until killed
            writer.write_batch("power", meter.read_batch(1000))
            time.sleep(0.005)
        """,
        confirmed_rows=5000,
    )
    path = target / "power.parquet"
    assert pq.read_metadata(path).num_row_groups == 5
    assert_readers_agree(path, power_rows(flushed))
    # The recovery file describes exactly this state: repairing changes nothing.
    before = path.read_bytes()
    assert repair_parquet(target) == [path]
    assert path.read_bytes() == before
    assert not list(target.glob(".*"))
    assert repair_parquet(target) == []


def test_killed_while_writing_row_groups_keeps_every_flushed_row(tmp_path: Path):
    """Killed at an arbitrary moment of a stream of row groups (maybe half-way through
    one): after repair_parquet every flushed row is there, in order."""
    target = tmp_path / "run"
    flushed = kill_after(
        f"""
        from daq_storage.sim import SimulatedPowerMeter
        from daq_storage.writers import ParquetWriter
        meter = SimulatedPowerMeter(seed=0, start_ns=0)
        writer = ParquetWriter({str(target)!r}, row_group_size=1)  # a row group per batch
        rows = 0
        while True:
            writer.write_batch("power", meter.read_batch(1000))
            writer.flush()
            rows += 1000
            print(rows, flush=True)
        """,
        confirmed_rows=20_000,
    )
    path = target / "power.parquet"
    assert repair_parquet(path) == [path]
    rows = pq.read_metadata(path).num_rows
    assert rows >= flushed
    assert rows % 1000 == 0  # whole row groups only
    assert_readers_agree(path, power_rows(rows))


def test_killed_mid_row_group_is_repaired_to_the_last_complete_one(tmp_path: Path):
    """The process dies half-way through writing a row group over the old footer: the
    file is unreadable until repair_parquet restores the footer from before."""
    target = tmp_path / "run"
    result = run_child(
        f"""
        import os, signal
        from daq_storage.sim import SimulatedPowerMeter
        from daq_storage.writers import ParquetWriter
        meter = SimulatedPowerMeter(seed=0, start_ns=0)
        writer = ParquetWriter({str(target)!r})
        for _ in range(3):
            writer.write_batch("power", meter.read_batch(1000))
            writer.flush()
        real_pwritev = os.pwritev
        def pwritev_half_then_die(fd, buffers, offset):
            # Real bytes reach the file, then the process dies as a SIGKILL would take it.
            data = memoryview(buffers[0])
            real_pwritev(fd, [data[: len(data) // 2]], offset)
            os.kill(os.getpid(), signal.SIGKILL)
        os.pwritev = pwritev_half_then_die
        writer.write_batch("power", meter.read_batch(5000))
        writer.flush()
        """
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    path = target / "power.parquet"
    with pytest.raises((pa.ArrowInvalid, OSError)):
        pq.read_metadata(path)
    # A new writer does not overwrite a file waiting for repair.
    with ParquetWriter(target) as writer, pytest.raises(StorageIOError, match="repair_parquet"):
        writer.write_batch("power", power_rows(1000).to_batches()[0])
    assert repair_parquet(target) == [path]
    assert_readers_agree(path, power_rows(3000))
    assert not (target / ".power.parquet.recovery").exists()


def test_repair_refuses_a_live_writer_and_damaged_recovery_files(tmp_path: Path):
    target = tmp_path / "run"
    path = target / "power.parquet"
    with ParquetWriter(target) as writer:
        writer.write_batch("power", power_rows(1000).to_batches()[0])
        writer.flush()
        assert (target / ".power.parquet.recovery").exists()
        with pytest.raises(StorageIOError, match="a writer still has it open") as info:
            repair_parquet(path)
        assert info.value.filename == str(path)
    assert repair_parquet(path) == []  # closed cleanly: no recovery file left
    assert_readers_agree(path, power_rows(1000))

    kill_after(
        f"""
        import time
        from daq_storage.sim import SimulatedPowerMeter
        from daq_storage.writers import ParquetWriter
        writer = ParquetWriter({str(target / "killed")!r})
        writer.write_batch("power", SimulatedPowerMeter(seed=0, start_ns=0).read_batch(1000))
        writer.flush()
        print(1000, flush=True)
        time.sleep(60)
        """,
        confirmed_rows=1000,
    )
    killed = target / "killed"
    record = (killed / ".power.parquet.recovery").read_bytes()

    # A record torn by a crash while it was rewritten: the file was complete then.
    torn = shutil.copytree(killed, tmp_path / "torn")
    (torn / ".power.parquet.recovery").write_bytes(record[: len(record) // 2])
    before = (torn / "power.parquet").read_bytes()
    assert repair_parquet(torn) == [torn / "power.parquet"]
    assert (torn / "power.parquet").read_bytes() == before
    assert not (torn / ".power.parquet.recovery").exists()

    # A damaged record and an incomplete file: refused, the file left as it was.
    damaged = shutil.copytree(killed, tmp_path / "damaged")
    (damaged / ".power.parquet.recovery").write_bytes(record[: len(record) // 2])
    with (damaged / "power.parquet").open("ab") as file:
        file.write(b"half a row group")
    before = (damaged / "power.parquet").read_bytes()
    with pytest.raises(StorageIOError, match=r"incomplete and its recovery file .* is damaged"):
        repair_parquet(damaged)
    assert (damaged / "power.parquet").read_bytes() == before

    # A checksummed record whose footer points past the data it claims is not trusted.
    inconsistent = shutil.copytree(damaged, tmp_path / "inconsistent")
    fields = (100).to_bytes(8, "little") + record[16:20]
    block = record[24:]
    forged = b"DAQPQRC1" + fields + zlib.crc32(block, zlib.crc32(fields)).to_bytes(4, "little")
    (inconsistent / ".power.parquet.recovery").write_bytes(forged + block)
    with pytest.raises(StorageIOError, match="is damaged"):
        repair_parquet(inconsistent)
    assert (inconsistent / "power.parquet").read_bytes() == before

    with pytest.raises(StorageIOError, match="does not exist"):
        repair_parquet(tmp_path / "nowhere.parquet")
    short = shutil.copytree(killed, tmp_path / "short")
    with (short / "power.parquet").open("r+b") as file:
        file.truncate(100)
    with pytest.raises(StorageIOError, match="it has 100 bytes, fewer than"):
        repair_parquet(short / "power.parquet")
    assert repair_parquet(killed) == [killed / "power.parquet"]
    assert_readers_agree(killed / "power.parquet", power_rows(1000))


# ---------------------------------------------------------------------- row groups
def test_batches_are_buffered_into_large_row_groups(tmp_path: Path):
    expected = power_rows(10_000, 1_000)
    with ParquetWriter(tmp_path / "p", row_group_size=2_500) as writer:
        for batch in expected.to_batches():
            writer.write_batch("power", batch)
    path = tmp_path / "p" / "power.parquet"
    metadata = pq.read_metadata(path)
    # Batches are not split: 3k, 3k, 3k, then the rest at close.
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sizes == [3_000, 3_000, 3_000, 1_000]
    assert_readers_agree(path, expected)


def test_flush_is_the_one_point_that_makes_buffered_rows_visible(tmp_path: Path):
    """No timer: buffered rows stay accepted and invisible, however many writes come,
    until a row group fills or flush() writes them; visible() says what a reader sees.
    (The writer had a flush interval checked at each write: a write after it flushed.)"""
    path = tmp_path / "p" / "power.parquet"
    a, b, c = power_rows(3000).to_batches()
    with ParquetWriter(tmp_path / "p", row_group_size=2500) as writer:
        for done, batch in enumerate((a, b), start=1):
            writer.write_batch("power", batch)
            assert pq.read_metadata(path).num_rows == 0  # a valid, empty file
            assert (writer.visible("power"), writer.accepted("power")) == (0, done * 1000)
        writer.write_batch("power", c)  # 3000 >= 2500: one row group, written by the write
        assert pq.read_metadata(path).num_rows == writer.visible("power") == 3000
        writer.write_batch("power", a)
        assert (writer.visible("power"), writer.accepted("power")) == (3000, 4000)
        writer.flush()
        assert pq.read_metadata(path).num_rows == writer.visible("power") == 4000
        assert pl.read_parquet(path).height == 4000
    assert_readers_agree(path, pa.concat_tables([power_rows(3000), pa.Table.from_batches([a])]))
    with pytest.raises(ConfigError, match="flush_interval_s"):
        open_writer("parquet", tmp_path / "q", flush_interval_s=1.0)


def test_row_group_bytes_bound_buffered_frames(tmp_path: Path):
    block = SimulatedCamera((32, 32), seed=0, start_ns=0).frames(10)
    with ParquetWriter(tmp_path / "p", row_group_bytes=3 * 32 * 32 * 2) as writer:
        for i in range(10):
            writer.write_frames("cam", block.frames[i : i + 1],
                                timestamps_ns=block.timestamps_ns[i : i + 1])  # fmt: skip
    path = tmp_path / "p" / "cam.parquet"
    metadata = pq.read_metadata(path)
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [3, 3, 3, 1]
    table = pq.read_table(path)
    np.testing.assert_array_equal(table.column("frame").combine_chunks().to_numpy_ndarray(),
                                  block.frames)  # fmt: skip
    frames = pl.read_parquet(path)["frame"].to_numpy()
    np.testing.assert_array_equal(frames.reshape(block.frames.shape), block.frames)


def test_long_streams_continue_in_new_parts_to_bound_the_footer(tmp_path: Path):
    expected = power_rows(30_000)
    with ParquetWriter(tmp_path / "p", row_group_size=1000, max_footer_bytes=4000) as writer:
        for batch in expected.to_batches():
            writer.write_batch("power", batch)
        files = list(writer.stats.files)
    assert len(files) > 3
    assert [f.name for f in files[:3]] == [
        "power.parquet",
        "power__part0002.parquet",
        "power__part0003.parquet",
    ]
    assert not list((tmp_path / "p").glob(".*"))
    for path in files:
        assert pq.read_metadata(path).num_rows > 0
        footer_length = int.from_bytes(path.read_bytes()[-8:-4], "little")
        assert footer_length < 4000 + 1000  # one row group past the bound at most
    parts = pa.concat_tables([pq.read_table(f) for f in files])
    assert parts.column("value").to_pylist() == expected.column("value").to_pylist()
    frame = pl.read_parquet(tmp_path / "p" / "power*.parquet")  # a scientist's glob
    assert sorted(frame["timestamp_ns"].to_list()) == expected.column("timestamp_ns").to_pylist()


def test_incompatible_schema_continues_in_a_new_part(tmp_path: Path):
    with ParquetWriter(tmp_path / "p", compression="zstd", compression_level=3) as writer:
        writer.write_batch("s", pa.record_batch({"v": [1, 2]}))
        writer.write_batch("s", pa.record_batch({"v": ["a"]}))
        writer.write_batch("s", pa.record_batch({"v": ["b"]}))
        assert [p.name for p in writer.stats.files] == ["s.parquet", "s__part0002.parquet"]
    first, second = tmp_path / "p" / "s.parquet", tmp_path / "p" / "s__part0002.parquet"
    assert pl.read_parquet(first)["v"].to_list() == [1, 2]
    assert pd.read_parquet(first)["v"].tolist() == [1, 2]
    assert pl.read_parquet(second)["v"].to_list() == ["a", "b"]
    assert pd.read_parquet(second)["v"].tolist() == ["a", "b"]
    assert pq.read_metadata(first).row_group(0).column(0).compression == "ZSTD"
    assert not list((tmp_path / "p").glob(".*"))


# ---------------------------------------------------------------------- codecs
@pytest.fixture(scope="module")
def uncompressed_sizes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    path = tmp_path_factory.mktemp("none")
    write_realistic(path, "none", None)
    return {p.stem: p.stat().st_size for p in path.glob("*.parquet")}


def write_realistic(path: Path, compression: Codec, level: int | None) -> None:
    block = SimulatedCamera((64, 64), seed=0, start_ns=0).frames(16)
    with ParquetWriter(path, compression=compression, compression_level=level) as writer:
        for batch in power_rows(20_000).to_batches():
            writer.write_batch("power", batch)
        writer.write_frames("cam", block.frames, timestamps_ns=block.timestamps_ns)


@pytest.mark.parametrize("compression", CODECS)
def test_every_codec_roundtrips_and_compresses(
    tmp_path: Path, compression: Codec, uncompressed_sizes: dict[str, int]
):
    write_realistic(tmp_path, compression, None)
    assert_readers_agree(tmp_path / "power.parquet", power_rows(20_000))
    codec = pq.read_metadata(tmp_path / "power.parquet").row_group(0).column(2).compression
    assert codec.startswith(compression.upper())  # pyarrow writes lz4 as LZ4_RAW
    block = SimulatedCamera((64, 64), seed=0, start_ns=0).frames(16)
    frames = pl.read_parquet(tmp_path / "cam.parquet")["frame"].to_numpy()
    np.testing.assert_array_equal(frames.reshape(block.frames.shape), block.frames)
    df = pd.read_parquet(tmp_path / "cam.parquet")  # pandas shows the times as dates
    assert [stamp.value for stamp in df["timestamp_ns"]] == block.timestamps_ns.tolist()
    power = (tmp_path / "power.parquet").stat().st_size
    assert power < 0.95 * uncompressed_sizes["power"]  # noisy readings: ~10 % to ~35 %
    cam = (tmp_path / "cam.parquet").stat().st_size
    # Dictionary encoding already packs 16-bit frames into bit-packed indices, which
    # snappy and lz4 cannot shrink further (they add a few bytes); entropy coders can.
    if compression in ("snappy", "lz4"):
        assert cam < 1.01 * uncompressed_sizes["cam"]
    else:
        assert cam < 0.95 * uncompressed_sizes["cam"]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "lz4", "brotli"])
def test_compression_level_changes_the_output(tmp_path: Path, compression: Codec):
    low, high = pa.Codec.minimum_compression_level(compression), 9
    sizes = []
    for level in (max(low, 1), high):
        path = tmp_path / str(level)
        with ParquetWriter(path, compression=compression, compression_level=level) as writer:
            for batch in power_rows(5_000).to_batches():
                writer.write_batch("power", batch)
        assert_readers_agree(path / "power.parquet", power_rows(5_000))
        sizes.append((path / "power.parquet").stat().st_size)
    assert sizes[0] != sizes[1]


def test_bad_codec_options_are_refused_up_front(tmp_path: Path):
    with pytest.raises(ConfigError, match="compression = 'rar'"):
        ParquetWriter(tmp_path / "x", compression="rar")  # type: ignore[arg-type]
    for codec in ("snappy", "none"):
        with pytest.raises(ConfigError, match=f"compression '{codec}' takes no compression_level"):
            ParquetWriter(tmp_path / "x", compression=codec, compression_level=3)
    with pytest.raises(ConfigError, match=r"'gzip' must be 1\.\.9, got 12"):
        ParquetWriter(tmp_path / "x", compression="gzip", compression_level=12)
    for option in ("row_group_size", "row_group_bytes", "max_footer_bytes"):
        with pytest.raises(ConfigError, match=f"{option} = 0: .*greater than or equal to 1"):
            ParquetWriter(tmp_path / "x", **{option: 0})  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=f"{option} = True"):  # not taken as 1
            ParquetWriter(tmp_path / "x", **{option: True})  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------- metadata
def file_metadata(path: Path) -> dict[str, object]:
    """Key-value metadata as the footer, the Arrow schema and polars each see it."""
    footer = {k.decode(): v.decode() for k, v in (pq.read_metadata(path).metadata or {}).items()}
    schema = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
    seen_by_polars = pl.read_parquet_metadata(path)
    footer.pop("ARROW:schema")
    for key, value in footer.items():
        assert schema[key] == value, key
        assert seen_by_polars[key] == value, key
    return {k: json.loads(v) for k, v in footer.items()}


def test_metadata_set_before_and_after_the_first_write(tmp_path: Path):
    path = tmp_path / "p" / "power.parquet"
    batch = power_rows(1000).to_batches()[0]
    with ParquetWriter(tmp_path / "p", row_group_size=1) as writer:
        writer.set_metadata("operator", "ada")
        writer.write_batch("power", batch)
        assert file_metadata(path) == {"operator": "ada"}
        writer.set_metadata("wavelength_nm", 633.0, stream="power")
        writer.set_metadata("settings", {"gain": 2, "note": "x" * 500})
        writer.flush()  # no rows buffered: the footer alone is rewritten
        assert file_metadata(path) == {
            "operator": "ada",
            "wavelength_nm": 633.0,
            "settings": {"gain": 2, "note": "x" * 500},
        }
        size = path.stat().st_size
        writer.set_metadata("settings", {"gain": 3})  # shorter: the file shrinks
        writer.flush()
        assert path.stat().st_size < size
        assert file_metadata(path)["settings"] == {"gain": 3}
        writer.write_batch("power", batch)
        assert file_metadata(path)["settings"] == {"gain": 3}
        writer.write_batch("other", batch)
        writer.set_metadata("finished", True)  # reaches the files at close
    assert file_metadata(path) == {
        "operator": "ada",
        "wavelength_nm": 633.0,
        "settings": {"gain": 3},
        "finished": True,
    }
    assert file_metadata(tmp_path / "p" / "other.parquet") == {
        "operator": "ada",
        "settings": {"gain": 3},
        "finished": True,
    }
    assert_readers_agree(path, pa.Table.from_batches([batch, batch]))


# ---------------------------------------------------------------------- stats and bad input
def test_stats_count_calls_rows_frames_bytes_and_files(tmp_path: Path):
    batches = power_rows(3000).to_batches()
    block = SimulatedCamera((16, 16), seed=0, start_ns=0).frames(5)
    with open_writer("parquet", tmp_path / "p", row_group_size=2000) as writer:
        for batch in batches:
            writer.write_batch("power", batch)
        writer.write_batch("power", batches[0].slice(0, 0))
        writer.write_frames("cam", block.frames)
        stats = writer.stats
        assert (stats.batches, stats.rows, stats.frames) == (4, 3000, 5)
        payload = sum(b.nbytes for b in batches) + batches[0].slice(0, 0).nbytes
        assert stats.bytes_written == payload + block.frames.nbytes + 2 * 8 * 5  # + ids
        assert [p.name for p in stats.files] == ["power.parquet", "cam.parquet"]
    assert writer.stats.file_size == sum(p.stat().st_size for p in stats.files)


def test_unsupported_column_is_refused_naming_the_stream(tmp_path: Path):
    batch = pa.record_batch({"span": pa.array([pa.MonthDayNano([1, 2, 3])])})
    with ParquetWriter(tmp_path / "p") as writer:
        with pytest.raises(UnsupportedData, match=r"stream 'odd'.*month_day_nano_interval"):
            writer.write_batch("odd", batch)
        assert writer.stats.files == ()
        assert writer.stats.rows == 0


def test_unwritable_directory():
    with pytest.raises(StorageIOError, match="cannot create output directory"):
        ParquetWriter("/proc/daq_storage_test_dir")


def test_a_flush_the_disk_refuses_midway_keeps_the_file_and_the_rows(tmp_path: Path):
    """Small row groups are not checked for room up front; when the file-size limit
    stops one half-way, the writer puts the last footer back, the rows stay buffered
    (accepted, not visible), and a flush once there is room writes them. (The writer
    dropped them, and counted them out of its stats.)"""
    target = tmp_path / "run"
    path = target / "s.parquet"
    result = run_child(
        f"""
        import os, resource, signal
        import numpy as np, pyarrow as pa, pyarrow.parquet as pq
        from daq_storage.errors import StorageIOError
        from daq_storage.writers import ParquetWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full disk: EFBIG, not a kill
        writer = ParquetWriter({str(target)!r}, compression="none")
        writer.write_batch("s", pa.record_batch({{"v": np.arange(1000, dtype=np.float64)}}))
        writer.flush()
        size = os.path.getsize({str(path)!r})
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 50_000, hard))
        try:
            for i in range(1, 100):
                noise = np.random.default_rng(i).random(1000)
                writer.write_batch("s", pa.record_batch({{"v": noise}}))
                writer.flush()
        except StorageIOError as exc:
            print("REFUSED", exc.errno, exc.filename)
            print(exc)
        print("LAST", i)
        print("STATE", writer.visible("s"), writer.accepted("s"), writer.stats.rows,
              pq.read_metadata({str(path)!r}).num_rows)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        writer.flush()
        print("AFTER", writer.visible("s"), writer.accepted("s"))
        writer.close()
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"REFUSED 27 {path}", result.stdout
    assert "cannot write 1000 buffered rows of stream 's' (they stay buffered" in lines[1]
    last = int(lines[2].split()[1])
    visible, accepted, counted, in_file = map(int, lines[3].split()[1:])
    assert 1 < last < 8  # some row groups fitted before the limit
    assert visible == in_file == last * 1000  # what a reader sees, the refused rows not
    assert accepted == counted == (last + 1) * 1000
    assert lines[4] == f"AFTER {accepted} {accepted}"
    values = pq.read_table(path).column("v").to_pylist()
    assert values[:1000] == list(range(1000))
    for i in range(1, last + 1):
        assert values[i * 1000 : (i + 1) * 1000] == np.random.default_rng(i).random(1000).tolist()
    assert len(values) == pl.read_parquet(path).height == accepted
    assert not list(target.glob(".*"))


def test_a_write_whose_row_group_the_disk_refuses_keeps_the_rows_before(tmp_path: Path):
    """The write that fills a row group is refused when the disk refuses the group: its
    own rows are not taken, the rows buffered before it stay buffered and reach the file
    with the next row group. (They were dropped with it.)"""
    target = tmp_path / "run"
    path = target / "s.parquet"
    result = run_child(
        f"""
        import os, resource, signal
        import numpy as np, pyarrow as pa
        from daq_storage.errors import StorageIOError
        from daq_storage.writers import ParquetWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full disk: EFBIG, not a kill
        writer = ParquetWriter({str(target)!r}, compression="none", row_group_size=2000)
        def rows(seed):
            return pa.record_batch({{"v": np.random.default_rng(seed).random(1000)}})
        writer.write_batch("s", rows(0))
        writer.write_batch("s", rows(1))  # a row group of 2000 rows
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize({str(path)!r}) + 10_000, hard))
        writer.write_batch("s", rows(2))  # buffered
        try:
            writer.write_batch("s", rows(3))  # its row group (16 kB) does not fit
        except StorageIOError as exc:
            print("REFUSED", exc.errno)
            print(exc)
        print("STATE", writer.accepted("s"), writer.visible("s"), writer.stats.rows)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        writer.write_batch("s", rows(4))  # rows 2 and 4: a row group
        print("AFTER", writer.accepted("s"), writer.visible("s"))
        writer.close()
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "REFUSED 27", result.stdout
    assert "2000 buffered rows of stream 's' (this call's 1000 rows were not taken" in lines[1]
    assert lines[2:] == ["STATE 3000 2000 3000", "AFTER 4000 4000"]
    expected = [v for seed in (0, 1, 2, 4) for v in np.random.default_rng(seed).random(1000)]
    assert pq.read_table(path).column("v").to_pylist() == expected
    metadata = pq.read_metadata(path)
    assert [metadata.row_group(i).num_rows for i in range(2)] == [2000, 2000]
    assert pl.read_parquet(path)["v"].to_list() == expected


# ---------------------------------------------------------------------- footer offsets
def test_footer_offsets_move_and_nothing_else_changes():
    table = pa.table(
        {
            "t": pa.array(range(500), pa.int64()),
            "tags": pa.array([["a", "b"] if i % 3 else None for i in range(500)]),
            "kind": pa.array(["x", "y"] * 250).dictionary_encode(),
            "flag": pa.array([i % 2 == 0 for i in range(500)]),
        }
    ).replace_schema_metadata({"note": "kept"})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=200)
    encoded = sink.getvalue().to_pybytes()
    length = int.from_bytes(encoded[-8:-4], "little")
    footer = encoded[-8 - length : -8]
    assert FooterShift(footer, 0).run() == footer

    delta = 5 << 32  # beyond 32-bit offsets
    moved = FooterShift(footer, delta).run()
    before = pq.read_metadata(pa.BufferReader(encoded))
    after = pq.read_metadata(pa.BufferReader(b"PAR1" + moved + len(moved).to_bytes(4, "little")
                                             + b"PAR1"))  # fmt: skip
    assert after.num_row_groups == before.num_row_groups == 3
    assert after.metadata == before.metadata
    for group in range(3):
        for column in range(before.num_columns):
            old, new = before.row_group(group).column(column), after.row_group(group).column(column)
            assert new.data_page_offset == old.data_page_offset + delta
            if old.has_dictionary_page:
                assert new.dictionary_page_offset == old.dictionary_page_offset + delta
            assert new.statistics == old.statistics
            assert new.total_compressed_size == old.total_compressed_size
    with pytest.raises(ValueError, match="ends inside a field"):
        FooterShift(footer[:-5], delta).run()


def test_nulls_in_a_non_nullable_column_are_refused_at_once(tmp_path: Path):
    """Refused by the call, not later when the row group is written (when the error would
    hit close, and other streams)."""
    schema = pa.schema([pa.field("x", pa.int64(), nullable=False)])
    bad = pa.RecordBatch.from_arrays([pa.array([1, None])], schema=schema)
    with ParquetWriter(tmp_path / "p") as writer:
        writer.write_batch("a", pa.record_batch({"y": [1, 2, 3]}))
        with pytest.raises(UnsupportedData, match=r"stream 'b' column 'x'.*non-nullable.*1 null"):
            writer.write_batch("b", bad)
        writer.write_batch("c", pa.record_batch({"y": [4, 5, 6]}))
    assert pq.read_table(tmp_path / "p" / "a.parquet")["y"].to_pylist() == [1, 2, 3]
    assert pq.read_table(tmp_path / "p" / "c.parquet")["y"].to_pylist() == [4, 5, 6]
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["a.parquet", "c.parquet"]
