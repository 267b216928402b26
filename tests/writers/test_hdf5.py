"""HDF5 specifics: Arrow types, nulls, schema evolution, metadata, compression, SWMR, h5dump."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the lz4/zstd/blosc filters for reading)
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.errors import ConfigError, SchemaMismatch, StorageIOError, UnsupportedData
from daq_storage.naming import claim_path
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter
from daq_storage.writers import Hdf5Writer
from tests.writers.conformance import write_in_odd_calls


def test_file_layout_follows_the_seeds(tmp_path: Path):
    path = tmp_path / "run.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch("power_meter_01", SimulatedPowerMeter(seed=0, start_ns=0).read_batch(5))
        writer.set_metadata("wavelength_nm", "633.0", stream="power_meter_01")
    with h5py.File(path, "r") as f:
        assert f.attrs["application"].startswith("daq-storage ")
        assert f.attrs["created_at"].endswith("+00:00")
        assert f.attrs["created_timestamp_ns"] > 1_600_000_000_000_000_000
        group = f["power_meter_01"]
        assert group.attrs["instrument_id"] == "power_meter_01"
        assert "created_at" in group.attrs
        assert group.attrs["wavelength_nm"] == "633.0"
        assert set(group) == {"timestamp_ns", "channel", "value", "unit"}
        assert group["value"].dtype == np.float64
        # An Arrow timestamp: int64 nanoseconds with the CF attributes that say so.
        assert group["timestamp_ns"].dtype == np.int64
        assert group["timestamp_ns"].attrs["units"] == "nanoseconds since 1970-01-01"
        assert group["timestamp_ns"].attrs["arrow_type"] == "timestamp[ns, tz=UTC]"
        assert group["value"].attrs["units"] == "W"
        assert '"name": "value"' in group["value"].attrs["schema"]
        assert group["value"].chunks is not None
        assert group["value"].maxshape == (None,)


def test_every_supported_arrow_type(tmp_path: Path):
    n = 4
    batch = pa.record_batch(
        {
            **{f"i{b}": pa.array(range(n), getattr(pa, f"int{b}")()) for b in (8, 16, 32, 64)},
            **{f"u{b}": pa.array(range(n), getattr(pa, f"uint{b}")()) for b in (8, 16, 32, 64)},
            "f16": pa.array(np.arange(n, dtype=np.float16)),
            "f32": pa.array(range(n), pa.float32()),
            "f64": pa.array(range(n), pa.float64()),
            "flag": pa.array([True, False, True, False]),
            "ts": pa.array([0, 1, 2, 3], pa.timestamp("us", tz="UTC")),
            "dur": pa.array([5, 6, 7, 8], pa.duration("ms")),
            "text": pa.array(["a", "bé", "", "долго"], pa.utf8()),
            "big_text": pa.array(["x", "y", "z", "w"], pa.large_utf8()),
            "category": pa.array(["on", "off", "on", "on"]).dictionary_encode(),
            "ragged": pa.array([[1.0], [2.0, 3.0], [], [4.0, 5.0, 6.0]], pa.list_(pa.float64())),
            "xyz": pa.array([[1, 2, 3]] * n, pa.list_(pa.int32(), 3)),
            "image": pa.FixedShapeTensorArray.from_numpy_ndarray(
                np.arange(n * 6, dtype=np.uint16).reshape(n, 2, 3)
            ),
            "pos": pa.array(
                [{"x": 1.0, "y": 2.0}] * n, pa.struct([("x", pa.float64()), ("y", pa.float64())])
            ),
        }
    )
    path = tmp_path / "types.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch("s", batch)
        writer.write_batch("s", batch)
    with h5py.File(path, "r") as f:
        g = f["s"]
        for b in (8, 16, 32, 64):
            assert g[f"i{b}"].dtype == np.dtype(f"int{b}")
            assert g[f"u{b}"].dtype == np.dtype(f"uint{b}")
        assert g["f16"].dtype == np.float16
        assert g["flag"].dtype == bool
        np.testing.assert_array_equal(g["ts"][:4], [0, 1, 2, 3])
        ts, dur = dict(g["ts"].attrs), dict(g["dur"].attrs)
        assert (ts["units"], ts["calendar"]) == ("microseconds since 1970-01-01",
                                                 "proleptic_gregorian")  # fmt: skip
        assert ts["arrow_type"] == "timestamp[us, tz=UTC]"  # exact: nothing is lost
        assert (dur["units"], dur["dtype"], dur["arrow_type"]) == (
            "milliseconds", "timedelta64[ms]", "duration[ms]")  # fmt: skip
        assert [v.decode() for v in g["text"][:4]] == ["a", "bé", "", "долго"]
        assert [v.decode() for v in g["big_text"][:4]] == ["x", "y", "z", "w"]
        assert g["ts"].dtype == g["dur"].dtype == np.int64
        np.testing.assert_array_equal(g["dur"][:4], [5, 6, 7, 8])
        np.testing.assert_array_equal(g["f32"][:4], [0.0, 1.0, 2.0, 3.0])
        assert g["f32"].dtype == np.float32
        # a dictionary column: codes and categories (see test_hdf5_strings)
        categories = g["category.categories"][()].astype(str)
        assert list(categories[g["category"][:4]]) == ["on", "off", "on", "on"]
        assert [list(v) for v in g["ragged"][:4]] == [[1.0], [2.0, 3.0], [], [4.0, 5.0, 6.0]]
        assert g["xyz"].shape == (8, 3)
        assert g["image"].shape == (8, 2, 3)
        np.testing.assert_array_equal(g["image"][:4], np.arange(n * 6).reshape(n, 2, 3))
        np.testing.assert_array_equal(g["pos.x"][:], 1.0)
        np.testing.assert_array_equal(g["pos.y"][:], 2.0)


def test_nulls_get_fill_values_and_a_valid_mask(tmp_path: Path):
    path = tmp_path / "nulls.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch("s", pa.record_batch({"v": pa.array([1.0, 2.0]), "t": ["a", "b"]}))
        writer.write_batch("s", pa.record_batch({"v": pa.array([None, 4.0]), "t": [None, "d"]}))
    with h5py.File(path, "r") as f:
        v = f["s/v"][:]
        assert np.isnan(v[2])
        assert list(f["s/v.valid"][:]) == [True, True, False, True]
        assert list(f["s/t.valid"][:]) == [True, True, False, True]
        assert f["s/t"][2] == b""


def test_new_column_mid_run_is_back_filled(tmp_path: Path):
    path = tmp_path / "evolve.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch("s", pa.record_batch({"a": pa.array([1, 2], pa.int32())}))
        writer.write_batch("s", pa.record_batch({"a": pa.array([3], pa.int32()), "b": [9.5]}))
        writer.write_batch("s", pa.record_batch({"b": [7.5]}))  # "a" missing: null
    with h5py.File(path, "r") as f:
        assert list(f["s/a"][:]) == [1, 2, 3, 0]
        assert list(f["s/a.valid"][:]) == [True, True, True, False]
        b = f["s/b"][:]
        assert np.isnan(b[:2]).all()
        assert list(b[2:]) == [9.5, 7.5]
        assert list(f["s/b.valid"][:]) == [False, False, True, True]


def test_safe_widening_is_applied(tmp_path: Path):
    path = tmp_path / "widen.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch(
            "s",
            pa.record_batch(
                {"a": pa.array([1, 2], pa.int32()), "f": pa.array([0.5], pa.float32()).take([0, 0])}
            ),
        )
        writer.write_batch(
            "s",
            pa.record_batch(
                {"a": pa.array([2**40], pa.int64()), "f": pa.array([1e300], pa.float64())}
            ),
        )
        writer.write_batch(
            "s",
            pa.record_batch({"a": pa.array([5], pa.int16()), "f": pa.array([1.0], pa.float32())}),
        )
    with h5py.File(path, "r") as f:
        assert f["s/a"].dtype == np.int64
        assert list(f["s/a"][:]) == [1, 2, 2**40, 5]
        assert f["s/f"].dtype == np.float64
        assert list(f["s/f"][:]) == [0.5, 0.5, 1e300, 1.0]


def test_unsupported_types_are_named(tmp_path: Path):
    with Hdf5Writer(tmp_path / "u.h5") as writer:
        with pytest.raises(UnsupportedData, match=r"column 'when'.*date32"):
            writer.write_batch("s", pa.record_batch({"when": pa.array([0], pa.date32())}))
        with pytest.raises(UnsupportedData, match="NUL"):
            writer.write_batch("s", pa.record_batch({"t": ["a\x00b"]}))


def test_frames_and_tables_do_not_mix_in_one_stream(tmp_path: Path):
    with Hdf5Writer(tmp_path / "mix.h5") as writer:
        writer.write_frames("cam", np.zeros((2, 4, 4), np.uint16))
        with pytest.raises(SchemaMismatch, match="holds frames"):
            writer.write_batch("cam", pa.record_batch({"v": [1]}))
        with pytest.raises(SchemaMismatch, match=r"dtype uint16 shape \(4, 4\).*shape \(4, 5\)"):
            writer.write_frames("cam", np.zeros((1, 4, 5), np.uint16))
        with pytest.raises(SchemaMismatch, match="frame_numbers has shape"):
            writer.write_frames("cam", np.zeros((2, 4, 4), np.uint16), frame_numbers=[1])


def test_large_metadata_goes_to_a_dataset(tmp_path: Path):
    path = tmp_path / "meta.h5"
    calibration = np.linspace(0, 1, 100_000)  # 800 kB: far over the 64 KiB attribute limit
    with Hdf5Writer(path) as writer:
        writer.set_metadata("calibration", calibration)
        writer.set_metadata("notes", "x" * 70_000, stream="s")
        writer.set_metadata("small", 3)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["_metadata/calibration"][:], calibration)
        assert f.attrs["calibration"] == "<stored in /_metadata/calibration>"
        assert f["_stream_metadata/s/notes"][()].decode() == "x" * 70_000
        assert f["s"].attrs["notes"] == "<stored in /_stream_metadata/s/notes>"
        assert f.attrs["small"] == 3


@pytest.mark.parametrize("compression", ["gzip", "lzf", "lz4", "zstd", "blosc-lz4", "blosc-zstd"])
def test_compression_really_compresses_camera_frames(tmp_path: Path, compression: str):
    frames = SimulatedCamera(seed=0, start_ns=0).frames(8).frames
    path = tmp_path / f"{compression}.h5"
    level: dict[str, Any] = {} if compression in ("lzf", "lz4") else {"compression_level": 5}
    with Hdf5Writer(path, compression=compression, frames_per_chunk=4, **level) as writer:
        writer.write_frames("camera_1", frames)
    assert path.stat().st_size < 0.9 * frames.nbytes
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["camera_1/frames"][:], frames)


def test_bad_options_raise_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="compression = 'rar'"):
        Hdf5Writer(tmp_path / "a.h5", compression="rar")
    with pytest.raises(ConfigError, match="compression_level"):
        Hdf5Writer(tmp_path / "a.h5", compression_level=12)
    assert not (tmp_path / "a.h5").exists()


def test_never_overwrites_but_takes_over_a_claimed_empty_file(tmp_path: Path):
    claimed = claim_path(tmp_path, "scan", "h5")
    with Hdf5Writer(claimed) as writer:
        writer.write_batch("s", pa.record_batch({"v": [1]}))
    with pytest.raises(StorageIOError, match="cannot create HDF5 file") as info:
        Hdf5Writer(claimed)
    assert info.value.filename == str(claimed)
    with h5py.File(claimed, "r") as f:
        assert list(f["s/v"][:]) == [1]


def test_unwritable_directory_raises_storage_io_error():
    with pytest.raises(StorageIOError, match="cannot create HDF5 file"):
        Hdf5Writer("/proc/daq_storage_test.h5")


def test_disk_full_keeps_earlier_data_readable(tmp_path: Path):
    """A file-size limit (as on a full disk) makes a write fail; what came before stays."""
    path = tmp_path / "full.h5"
    script = textwrap.dedent(
        f"""
        import resource, signal
        import numpy as np, pyarrow as pa
        from daq_storage.errors import StorageIOError
        from daq_storage.writers import Hdf5Writer
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        writer = Hdf5Writer({str(path)!r}, compression="none", chunk_size=10_000)
        writer.write_batch("s", pa.record_batch({{"v": np.arange(10_000, dtype=np.float64)}}))
        writer.flush()
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))
        try:
            for i in range(1, 100):
                writer.write_batch("s", pa.record_batch({{"v": np.full(10_000, i, np.float64)}}))
                writer.flush()
        except StorageIOError as exc:
            print("STORAGE_IO_ERROR", exc.errno)
        try:
            writer.close()
        except StorageIOError:
            pass
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    assert "STORAGE_IO_ERROR" in result.stdout, result.stdout + result.stderr
    with h5py.File(path, "r") as f:
        values = f["s/v"][:10_000]
    np.testing.assert_array_equal(values, np.arange(10_000))


@pytest.mark.skipif(
    shutil.which("h5dump") is None, reason="h5dump (Debian hdf5-tools) not installed"
)
def test_h5dump_reads_the_file(tmp_path: Path):
    path = tmp_path / "dump.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch("power_meter_01", pa.record_batch({"value": [1.5, 2.5]}))
        writer.write_frames("camera_1", np.arange(8, dtype=np.uint16).reshape(2, 2, 2))
    result = subprocess.run(["h5dump", str(path)], capture_output=True, text=True, timeout=60,
                            check=True)  # fmt: skip
    assert 'GROUP "power_meter_01"' in result.stdout
    assert "1.5, 2.5" in result.stdout
    assert 'DATASET "frames"' in result.stdout


def test_units_from_field_metadata_and_chunk_size(tmp_path: Path):
    schema = pa.schema([pa.field("power", pa.float64(), metadata={"unit": "W"}),
                        pa.field("t", pa.timestamp("ns"))])  # fmt: skip
    batch = pa.record_batch([pa.array([1.0, 2.0]), pa.array([1, 2], pa.timestamp("ns"))],
                            schema=schema)  # fmt: skip
    path = tmp_path / "units.h5"
    with Hdf5Writer(path, chunk_size=512, frames_per_chunk=2) as writer:
        writer.write_batch("pm", batch)
        writer.write_frames("cam", np.zeros((3, 4, 5), np.uint16))
    with h5py.File(path, "r") as f:
        assert f["pm/power"].attrs["unit"] == "W"  # field metadata, as it is
        assert f["pm/t"].attrs["units"] == "nanoseconds since 1970-01-01"
        assert f["pm/t"].attrs["calendar"] == "proleptic_gregorian"
        assert f["pm/power"].chunks == (512,)
        assert f["cam/frames"].chunks == (2, 4, 5)
        assert dict(f["cam/timestamp_ns"].attrs) == {
            "units": "nanoseconds since 1970-01-01", "calendar": "proleptic_gregorian"}  # fmt: skip


def test_widening_after_swmr_started_is_refused_and_the_file_stays_readable(tmp_path: Path):
    """Widening rewrites a dataset, which SWMR forbids: refused before anything changes."""
    path = tmp_path / "swmr_widen.h5"
    with Hdf5Writer(path, swmr=True) as writer:
        writer.write_batch("s", pa.record_batch({"v": pa.array([1, 2], pa.int32())}))
        writer.flush()
        with pytest.raises(SchemaMismatch, match=r"column 'v': widening int32 to int64.*SWMR"):
            writer.write_batch("s", pa.record_batch({"v": pa.array([3], pa.int64())}))
        writer.write_batch("s", pa.record_batch({"v": pa.array([3], pa.int32())}))
    with h5py.File(path, "r") as f:
        assert f["s/v"].dtype == np.int32
        assert list(f["s/v"][:]) == [1, 2, 3]


@pytest.mark.parametrize(
    "compression", ["none", "gzip", "zstd", "blosc-lz4", "blosc-zstd", "lz4", "lzf"]
)
def test_frames_through_flushes_and_odd_calls(tmp_path: Path, compression: str):
    """Whole chunks by direct chunk writes (compressed on the pool), partial chunks through
    HDF5's pipeline at a flush, and later frames continuing the partial chunk."""
    block = SimulatedCamera((60, 80), seed=4, start_ns=10).frames(23)
    path = tmp_path / f"{compression}.h5"

    def visible(count: int) -> None:  # what a flush promises is on disk
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(f["cam/frames"][:], block.frames[:count])
            np.testing.assert_array_equal(f["cam/timestamp_ns"][:], block.timestamps_ns[:count])

    with Hdf5Writer(path, compression=compression, frames_per_chunk=4) as writer:
        write_in_odd_calls(writer, block, visible)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["cam/frames"][:], block.frames)
        np.testing.assert_array_equal(f["cam/timestamp_ns"][:], block.timestamps_ns)
        np.testing.assert_array_equal(f["cam/frame_number"][:], block.frame_numbers)
        assert f["cam/frames"].chunks == (4, 60, 80)
    if compression != "none":
        plain = tmp_path / "plain.h5"
        with Hdf5Writer(plain, compression="none", frames_per_chunk=4) as writer:
            writer.write_frames("cam", block.frames)
        assert path.stat().st_size < 0.9 * plain.stat().st_size


def test_caller_may_reuse_its_frame_buffer(tmp_path: Path):
    """Frames are compressed (or copied) before write_frames returns."""
    block = SimulatedCamera((32, 32), seed=5, start_ns=0).frames(10)
    buffer = np.empty((5, 32, 32), np.uint16)
    path = tmp_path / "reuse.h5"
    with Hdf5Writer(path, compression="blosc-lz4", frames_per_chunk=2) as writer:
        for start in (0, 5):
            buffer[...] = block.frames[start : start + 5]
            writer.write_frames("cam", buffer)
            buffer[...] = 0
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["cam/frames"][:], block.frames)


def test_swmr_reader_sees_flushed_rows_and_frames_while_writing(tmp_path: Path):
    path = tmp_path / "swmr.h5"
    reader_script = textwrap.dedent(
        f"""
        import h5py, hdf5plugin
        with h5py.File({str(path)!r}, "r", libver="latest", swmr=True) as f:
            rows, frames = f["s/v"], f["cam/frames"]
            rows.refresh()
            frames.refresh()
            print(rows.shape[0], frames.shape[0], int(frames[-1].sum()))
        """
    )

    def read_while_writing() -> list[int]:
        result = subprocess.run([sys.executable, "-c", reader_script], capture_output=True,
                                text=True, timeout=60, check=True)  # fmt: skip
        return [int(word) for word in result.stdout.split()]

    block = SimulatedCamera((16, 16), seed=6, start_ns=0).frames(12)
    with Hdf5Writer(path, swmr=True, compression="blosc-lz4", frames_per_chunk=2) as writer:
        writer.write_batch("s", pa.record_batch({"v": np.arange(100.0)}))
        writer.write_frames("cam", block.frames[:5])
        writer.flush()
        first = read_while_writing()
        writer.write_batch("s", pa.record_batch({"v": np.arange(50.0)}))
        writer.write_frames("cam", block.frames[5:])
        writer.flush()
        second = read_while_writing()
        with pytest.raises(UnsupportedData, match="SWMR mode has started"):
            writer.write_batch("new_stream", pa.record_batch({"v": [1.0]}))
    assert first == [100, 5, int(block.frames[4].sum())]
    assert second == [150, 12, int(block.frames[11].sum())]


def _chunk_places(path: Path, name: str) -> list[tuple[int, int, int]]:
    """(byte offset, size, filter mask) of each stored chunk of dataset ``name``."""
    with h5py.File(path, "r") as f:
        dataset = f[name]
        infos = [dataset.id.get_chunk_info(i) for i in range(dataset.id.get_num_chunks())]
    return [(info.byte_offset, info.size, info.filter_mask) for info in infos]


@pytest.mark.parametrize("compression", ["gzip", "blosc-lz4", "lzf", "none"])
def test_a_flush_never_moves_a_chunk_it_stored(tmp_path: Path, compression: str):
    """A chunk a flush finds part-filled is stored uncompressed, at its full size, and later
    flushes rewrite it where it is; HDF5 never frees (and reuses) the place an index on
    disk points at. Whole chunks are compressed once."""
    path = tmp_path / f"{compression}.h5"
    frames = SimulatedCamera((32, 40), seed=3, start_ns=0).frames(10).frames
    with Hdf5Writer(path, compression=compression, chunk_size=1000, frames_per_chunk=4) as writer:
        places: list[list[tuple[int, int, int]]] = []
        for step in range(5):
            writer.write_batch("s", pa.record_batch({"v": np.arange(step * 300, step * 300 + 300)}))
            writer.write_frames("cam", frames[2 * step : 2 * step + 2])
            writer.flush()
            places.append(_chunk_places(path, "s/v") + _chunk_places(path, "cam/frames"))
        writer.write_batch("s", pa.record_batch({"v": np.arange(1500, 3000)}))
    raw = 0 if compression == "none" else 0xFFFFFFFF
    first = places[0][0]
    assert first[2] == raw  # 300 of 1000 rows: stored uncompressed
    for later in places[1:]:
        assert later[0] == first  # the same place, size and form at every flush
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["s/v"][:], np.arange(3000))
        np.testing.assert_array_equal(f["cam/frames"][:], frames)
    final = _chunk_places(path, "s/v")
    assert final[0] == first  # filled later, it stayed uncompressed (nothing moved)
    assert final[1][2] == raw  # part-filled by the fifth flush: uncompressed too
    if compression != "none":
        assert final[2][2] == 0  # rows 2000-2999, filled between two flushes: compressed


def test_chunks_stored_uncompressed_read_back_in_the_writing_process(tmp_path: Path):
    """HDF5 caches a new chunk's filter mask as 0 after a direct write; a read in the same
    process (here while the writer is open) must still decode it as stored."""
    path = tmp_path / "same_process.h5"
    with Hdf5Writer(path, chunk_size=1000) as writer:
        writer.write_batch("s", pa.record_batch({"v": np.arange(10.0)}))
        writer.flush()
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(f["s/v"][:], np.arange(10.0))
        writer.write_batch("s", pa.record_batch({"v": np.arange(10.0, 20.0)}))
        writer.flush()
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(f["s/v"][:], np.arange(20.0))


def test_frequent_flushes_of_a_slow_stream_grow_the_file_by_its_data(tmp_path: Path):
    """200 flushes of 100 rows each: the file holds about the rows' bytes (a part-filled
    chunk is rewritten in place), not a new copy of the chunk per flush."""
    path = tmp_path / "slow.h5"
    with Hdf5Writer(path) as writer:
        for step in range(200):
            seq = np.arange(step * 100, step * 100 + 100)
            writer.write_batch("s", pa.record_batch({"t": seq, "v": seq * 0.5}))
            writer.flush()
    data = 200 * 100 * 16
    chunk = 1 << 20  # the open chunk of each column is stored at its full size
    assert path.stat().st_size < data + 2 * chunk + 200_000
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["s/t"][:], np.arange(20_000))


def test_the_file_is_in_the_hdf5_1_8_format_and_valid_from_its_creation(tmp_path: Path):
    """Version 0 superblock (readable by every HDF5 since 1.8); a writer killed at once
    leaves a file that opens (the superblock is flushed when the file is made)."""
    path = tmp_path / "fresh.h5"
    writer = Hdf5Writer(path)
    with h5py.File(path, "r") as f:  # while open, as after a kill
        assert f.attrs["application"].startswith("daq-storage")
        assert list(f) == []
    writer.write_batch("s", pa.record_batch({"v": [1.0]}))
    writer.close()
    with path.open("rb") as raw:
        assert raw.read(9)[8] == 0
