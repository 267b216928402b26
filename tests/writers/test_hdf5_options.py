"""HDF5 options and resources: the options model (codecs HDF5 has, nothing that would do
nothing), the ``[storage]`` keys it honours, a shared executor, no process-wide codec
state, durable flushes, frames refused for room or size, stats snapshots."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the blosc filter for reading)
import numcodecs.blosc
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.errors import ConfigError, UnsupportedData
from daq_storage.sim import SimulatedCamera
from daq_storage.writers import Hdf5Writer, open_writer


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compression": "snappy"}, r"compression = 'snappy'.*'gzip'"),
        ({"compression": "lz4", "compression_level": 3}, "'lz4' has no level"),
        ({"compression": "none", "compression_level": 0}, "'none' has no level"),
        ({"compression": "zstd", "compression_level": 0}, "zstd levels are 1-9"),
        ({"compression": "none", "shuffle": True}, "shuffle=True needs a compression"),
        ({"compression_level": 10}, "compression_level = 10"),
        ({"chunk_size": 0}, "chunk_size = 0"),
        ({"frames_per_chunk": 0}, "frames_per_chunk = 0"),
        ({"threads": 2}, "threads"),
        ({"executor": "pool"}, "executor"),
    ],
)
def test_options_hdf5_cannot_honour_are_refused(
    tmp_path: Path, options: dict[str, Any], message: str
):
    path = tmp_path / "refused.h5"
    with pytest.raises(ConfigError, match=message):
        open_writer("hdf5", path, **options)
    if "threads" not in options:  # (not a keyword of the class)
        with pytest.raises(ConfigError, match=message):
            Hdf5Writer(path, **options)
    assert not path.exists()


def test_a_process_pool_is_refused():
    with ProcessPoolExecutor(1) as pool, pytest.raises(ConfigError, match="ThreadPoolExecutor"):
        Hdf5Writer.validate_options(executor=pool)


@pytest.mark.parametrize(
    ("key", "value", "check"),
    [
        ("compression", "lzf", lambda d: d.compression == "lzf"),
        ("compression_level", 7, lambda d: d.compression_opts == 7),
        ("chunk_size", 300, lambda d: d.chunks == (300,)),
    ],
)
def test_every_config_key_it_honours_has_an_effect(tmp_path: Path, key: str, value: Any,
                                                   check: Any):  # fmt: skip
    assert set(Hdf5Writer.config_keys) == {"compression", "compression_level", "chunk_size"}
    path = tmp_path / "configured.h5"
    with Hdf5Writer(path, **{Hdf5Writer.config_keys[key]: value}) as writer:
        writer.write_batch("s", pa.record_batch({"v": np.arange(1000.0)}))
    with h5py.File(path, "r") as f:
        assert check(f["s/v"])
        np.testing.assert_array_equal(f["s/v"][:], np.arange(1000.0))


def test_blosc_without_shuffle_is_honoured(tmp_path: Path):
    frames = SimulatedCamera((32, 32), seed=1, start_ns=0).frames(4).frames
    sizes = {}
    for shuffle in (False, True):
        path = tmp_path / f"shuffle_{shuffle}.h5"
        with Hdf5Writer(path, compression="blosc-lz4", shuffle=shuffle) as writer:
            writer.write_frames("cam", frames)
        with h5py.File(path, "r") as f:
            dataset = f["cam/frames"]
            np.testing.assert_array_equal(dataset[:], frames)
            options = dataset.id.get_create_plist().get_filter_by_id(32001)[1]  # blosc
            assert options[5] == int(shuffle)  # blosc's cd_values: ..., level, shuffle, codec
            sizes[shuffle] = sum(dataset.id.get_chunk_info(i).size for i in range(4))
    assert sizes[True] < sizes[False]  # the camera's 12 bits in 16: shuffling helps


def _hdf5_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("daq_storage_hdf5")]


def test_a_shared_executor_does_the_work_and_outlives_the_writers(tmp_path: Path):
    frames = SimulatedCamera((64, 64), seed=2, start_ns=0).frames(48).frames
    with ThreadPoolExecutor(2, "shared_pool") as pool:
        with (
            Hdf5Writer(tmp_path / "a.h5", compression="blosc-lz4", executor=pool) as a,
            Hdf5Writer(tmp_path / "b.h5", compression="gzip", executor=pool) as b,
        ):
            for start in range(0, 48, 16):
                a.write_frames("cam", frames[start : start + 16])
                b.write_frames("cam", frames[start : start + 16])
            assert _hdf5_threads() == []  # no pool of their own
            assert any(t.name.startswith("shared_pool") for t in threading.enumerate())
        assert pool.submit(lambda: 42).result() == 42  # not shut down by the writers
    for name in ("a.h5", "b.h5"):
        with h5py.File(tmp_path / name, "r") as f:
            np.testing.assert_array_equal(f["cam/frames"][:], frames)


def test_its_own_pool_is_small_and_ends_with_the_writer(tmp_path: Path):
    frames = SimulatedCamera((64, 64), seed=3, start_ns=0).frames(64).frames
    with Hdf5Writer(tmp_path / "own.h5", compression="gzip") as writer:
        writer.write_frames("cam", frames)
        assert 1 <= len(_hdf5_threads()) <= 4
    assert _hdf5_threads() == []


def test_blosc_frames_leave_numcodecs_process_settings_alone(tmp_path: Path):
    """numcodecs' ``use_threads`` (which Zarr's blosc codec reads too) stays as it was."""
    before = numcodecs.blosc.use_threads
    frames = SimulatedCamera((32, 32), seed=4, start_ns=0).frames(8).frames
    path = tmp_path / "blosc.h5"
    with Hdf5Writer(path, compression="blosc-zstd", compression_level=5) as writer:
        writer.write_frames("cam", frames)
        writer.write_frames("cam", frames[:3])  # on the calling thread alone
    assert numcodecs.blosc.use_threads is before
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["cam/frames"][:], np.concatenate([frames, frames[:3]]))


def test_a_durable_flush_commits_and_leaves_no_journal(tmp_path: Path):
    path = tmp_path / "durable.h5"
    with Hdf5Writer(path, chunk_size=64) as writer:
        for step in range(3):
            writer.write_batch("s", pa.record_batch({"v": np.arange(step * 100, step * 100 + 100)}))
            writer.write_frames("cam", np.full((2, 4, 4), step, np.uint16))
            writer.flush(durable=True)
            assert not path.with_name(path.name + ".journal").exists()
            assert writer.visible("s") == writer.accepted("s") == 100 * (step + 1)
            with h5py.File(path, "r") as f:
                np.testing.assert_array_equal(f["s/v"][:], np.arange(100 * (step + 1)))
                assert len(f["cam/frames"]) == 2 * (step + 1)
        writer.flush(durable=True)  # nothing new: syncs all the same


def test_a_durable_flush_in_swmr_mode(tmp_path: Path):
    path = tmp_path / "swmr.h5"
    with Hdf5Writer(path, swmr=True) as writer:
        writer.write_batch("s", pa.record_batch({"v": [1.0, 2.0]}))
        writer.flush(durable=True)
        assert writer.visible("s") == 2
    with h5py.File(path, "r") as f:
        assert list(f["s/v"][:]) == [1.0, 2.0]


def test_frames_refused_for_room_leave_the_numbering_contiguous(tmp_path: Path):
    """A write refused up front by the file-size limit stores nothing and counts
    nothing: once the limit is raised the next frames are numbered on from the last
    stored one (0, 1, 2, 3, never 0, 1, 4, 5)."""
    path = tmp_path / "room.h5"
    script = textwrap.dedent(
        f"""
        import resource, signal
        import numpy as np
        from daq_storage.errors import StorageIOError
        from daq_storage.writers import Hdf5Writer, open_writer
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        frames = np.arange(2 * 512 * 1024, dtype=np.uint16).reshape(2, 1024, 512)
        writer = Hdf5Writer({str(path)!r}, compression="none")
        writer.write_frames("cam", frames)
        writer.flush()
        resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, hard))
        try:
            writer.write_frames("cam", frames * 3)
        except StorageIOError as exc:
            print("REFUSED", exc.errno, writer.accepted("cam"), writer.visible("cam"))
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        writer.write_frames("cam", [frames[0] + 1, frames[1] + 1])
        writer.close()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["REFUSED", "27", "2", "2"]  # EFBIG
    frames = np.arange(2 * 512 * 1024, dtype=np.uint16).reshape(2, 1024, 512)
    with h5py.File(path, "r") as f:
        assert list(f["cam/frame_number"][:]) == [0, 1, 2, 3]
        np.testing.assert_array_equal(f["cam/frames"][:], np.concatenate([frames, frames + 1]))


def test_a_frame_too_large_for_a_blosc_chunk_is_refused_before_anything(tmp_path: Path):
    path = tmp_path / "huge.h5"
    huge = np.broadcast_to(np.uint16(1), (1, 33_000, 33_000))  # 2.2 GB, no memory used
    with Hdf5Writer(path, compression="blosc-lz4") as writer:
        with pytest.raises(UnsupportedData, match="blosc's 2 GiB chunk limit"):
            writer.write_frames("cam", huge)
        with pytest.raises(UnsupportedData, match="4 GiB chunk limit"):
            Hdf5Writer(tmp_path / "other.h5", frames_per_chunk=3).write_frames("cam", huge)
        writer.write_frames("cam", np.ones((2, 3, 3), np.uint8))  # the stream is still free
        assert writer.accepted("cam") == 2
    with h5py.File(path, "r") as f:
        assert f["cam/frames"].shape == (2, 3, 3)
        assert list(f["cam/frame_number"][:]) == [0, 1]


def test_stats_are_snapshots(tmp_path: Path):
    path = tmp_path / "stats.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch("s", pa.record_batch({"v": np.arange(10.0)}))
        first = writer.stats
        writer.write_frames("cam", np.zeros((3, 4, 4), np.uint16))
        writer.flush()
        second = writer.stats
    assert (first.batches, first.rows, first.frames, first.files) == (1, 10, 0, (path,))
    assert (second.rows, second.frames, second.bytes_written) == (10, 3, 80 + 96)
    assert second.file_size == path.stat().st_size


@pytest.mark.parametrize("compression", ["lz4", "gzip", "zstd", "blosc-lz4"])
def test_table_chunks_compressed_together_read_back_through_the_filters(
    tmp_path: Path, compression: str
) -> None:
    """A batch's whole chunks of every column and mask are compressed on the writer's
    pool and stored as the filters would store them: h5py reads the values back, every
    whole chunk is filtered (none kept raw) and smaller than its rows."""
    rng = np.random.default_rng(5)
    rows = 4 * 1024 + 100  # four whole chunks of 1,024 rows, and an open one
    values = pa.array((np.arange(rows) % 200 + rng.integers(0, 3, rows)).astype(np.int16))
    nullable = pa.array([None if i % 7 == 0 else float(i) for i in range(rows)])
    image = np.repeat(np.arange(rows, dtype=np.uint16)[:, None, None], 3, axis=1).repeat(2, 2)
    tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(image)
    batch = pa.record_batch({"v": values, "maybe": nullable, "img": tensor,
                             "label": pa.array([f"s{i % 3}" for i in range(rows)])})  # fmt: skip
    path = tmp_path / "t.h5"
    with Hdf5Writer(path, compression=compression, chunk_size=1024) as writer:
        writer.write_batch("s", batch.slice(0, 2000))
        writer.write_batch("s", batch.slice(2000))
    with h5py.File(path, "r") as f:
        group = f["s"]
        np.testing.assert_array_equal(group["v"][()], values.to_numpy())
        np.testing.assert_array_equal(
            group["maybe.valid"][()], nullable.is_valid().to_numpy(zero_copy_only=False)
        )
        np.testing.assert_array_equal(group["img"][()], image)
        for name in ("v", "maybe", "maybe.valid", "img"):
            dataset = group[name]
            per_chunk = dataset.chunks[0]  # 1,024 rows; a mask's bytes are chunked longer
            zeros = (0,) * (dataset.ndim - 1)
            for start in range(0, rows - rows % per_chunk, per_chunk):
                info = dataset.id.get_chunk_info_by_coord((start, *zeros))
                assert info.filter_mask == 0, (name, start)  # through the filters
                assert info.size < per_chunk * dataset.dtype.itemsize * np.prod(
                    dataset.shape[1:], dtype=int), (name, start)  # fmt: skip
