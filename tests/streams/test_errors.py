"""Every misuse of the stream writer is a DaqStorageError subclass naming the value."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daq_storage.errors import (
    ConfigError,
    DaqStorageError,
    InvalidName,
    SchemaMismatch,
    StorageIOError,
    UnsupportedData,
    WriterClosedError,
)
from daq_storage.streams import ChannelConfig, StreamWriter, Timebase

TWO = [ChannelConfig(0, "AI0", -10.0, 10.0), ChannelConfig(1, "AI1", -10.0, 10.0)]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ((0, "AI0", 10.0, 10.0), ConfigError, "min_value 10.0 must be below max_value 10.0"),
        ((0, "AI0", 5.0, -5.0), ConfigError, "min_value 5.0 must be below"),
        ((0, "AI0", float("nan"), 1.0), ConfigError, "min_value must be a finite number"),
        ((0, "AI0", "low", 1.0), ConfigError, "min_value must be a finite number, got 'low'"),
        ((-1, "AI0", 0.0, 1.0), ConfigError, "index must be an int >= 0, got -1"),
        ((True, "AI0", 0.0, 1.0), ConfigError, "index must be an int >= 0, got True"),
        ((0, "a/b", 0.0, 1.0), InvalidName, "'a/b' is not a safe dataset name"),
        ((0, "_x", 0.0, 1.0), InvalidName, "'_x' is not a safe"),
        ((0, "", 0.0, 1.0), InvalidName, "no usable characters"),
        ((0, 7, 0.0, 1.0), InvalidName, "name must be a str, got 7"),
        ((0, "timestamps", 0.0, 1.0), InvalidName, "'timestamps' is a column of the stream"),
        ((0, "sample_index", 0.0, 1.0), InvalidName, "'sample_index' is a column"),
        ((0, "AI0", 0.0, 1.0, ""), ConfigError, "unit must be non-empty text"),
    ],
)
def test_bad_channel_configs(arguments: tuple[Any, ...], error: type[Exception], message: str):
    with pytest.raises(error, match=message) as caught:
        ChannelConfig(*arguments)
    assert isinstance(caught.value, DaqStorageError)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"channels": []}, ConfigError, "at least one ChannelConfig"),
        ({"channels": None}, ConfigError, "channels must be a list of ChannelConfig, got None"),
        ({"channels": ["AI0"]}, ConfigError, "ChannelConfig items, got 'AI0'"),
        ({"channels": [TWO[0], ChannelConfig(1, "AI0", 0.0, 1.0)]}, InvalidName,
         "channel name 'AI0' is given twice"),
        ({"channels": [TWO[0], ChannelConfig(0, "AI9", 0.0, 1.0)]}, ConfigError,
         "channel index 0 is given twice"),
        ({"sample_rate": 0.0}, ConfigError, "sample_rate must be a number .* got 0.0"),
        ({"sample_rate": -100.0}, ConfigError, "got -100.0"),
        ({"sample_rate": float("inf")}, ConfigError, "got inf"),
        ({"sample_rate": "fast"}, ConfigError, "got 'fast'"),
        ({"start_ns": -1}, ConfigError, "start_ns must be an int .* got -1"),
        ({"start_ns": 1.5}, ConfigError, "got 1.5"),
        ({"compression": "brotli"}, ConfigError, "compression must be one of .* got 'brotli'"),
        ({"storage_format": "zarr"}, ConfigError, "storage_format must be .* got 'zarr'"),
        ({"store": "bits"}, ConfigError, "store must be one of .* got 'bits'"),
        ({"chunk_size": 0}, ConfigError, "chunk_size must be an int >= 1, got 0"),
        ({"storage_format": "both", "compression": "gzip"}, ConfigError,
         "Arrow IPC .* compresses with 'lz4' or 'zstd' only"),
        ({"compression": "gzip", "compression_level": 42}, ConfigError, "42"),
    ],
)  # fmt: skip
def test_bad_writer_options(tmp_path: Path, options: dict[str, Any], error: type[Exception],
                            message: str):  # fmt: skip
    arguments: dict[str, Any] = {"channels": TWO, "sample_rate": 1000.0, **options}
    with pytest.raises(error, match=message) as caught:
        StreamWriter(tmp_path / "x.h5", **arguments)
    assert isinstance(caught.value, DaqStorageError)
    assert not (tmp_path / "x.h5").exists() or options.get("compression_level")


def test_a_path_that_is_no_hdf5_file(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"path '.*x.txt' must name an HDF5 file"):
        StreamWriter(tmp_path / "x.txt", channels=TWO, sample_rate=1.0)
    with pytest.raises(ConfigError, match=r"path must be a str or os.PathLike, got 3"):
        StreamWriter(3, channels=TWO, sample_rate=1.0)  # type: ignore[arg-type]


def test_an_existing_file_is_never_overwritten(tmp_path: Path):
    (tmp_path / "x.h5").write_bytes(b"precious")
    with pytest.raises(StorageIOError, match=r"File exists .never overwritten.") as caught:
        StreamWriter(tmp_path / "x.h5", channels=TWO, sample_rate=1.0)
    assert caught.value.errno == errno.EEXIST
    assert (tmp_path / "x.h5").read_bytes() == b"precious"


def test_the_builder_says_what_is_missing(tmp_path: Path):
    with pytest.raises(ConfigError, match="call channels, sample_rate before build"):
        StreamWriter.builder().output_path(tmp_path / "x.h5").build()


@pytest.mark.parametrize(
    ("block", "error", "message"),
    [
        (np.zeros((5, 3), np.int16), SchemaMismatch,
         r"shape \(n_samples, 2\) for the channels \['AI0', 'AI1'\], got shape \(5, 3\)"),
        (np.zeros(5, np.int16), SchemaMismatch, r"got shape \(5,\)"),
        ([[1, 2]], SchemaMismatch, "must be a numpy array .* got list"),
        (np.zeros((5, 2), np.int32), UnsupportedData, "int16 counts or float values, got "
         "dtype int32"),
        (np.zeros((5, 2), np.uint16), UnsupportedData, "got dtype uint16"),
        (np.array([[0.0, 10.5]]), UnsupportedData,
         r"channel 'AI1': value 10.5 at sample 0 is outside its range \[-10.0, 10.0\] V"),
        (np.array([[0.0, 1.0], [np.nan, 0.0]]), UnsupportedData,
         "channel 'AI0': value nan at sample 1"),
    ],
)  # fmt: skip
def test_bad_blocks_change_nothing(tmp_path: Path, block: Any, error: type[Exception],
                                   message: str):  # fmt: skip
    with StreamWriter(tmp_path / "x.h5", channels=TWO, sample_rate=1.0) as writer:
        with pytest.raises(error, match=message):
            writer.write(block)
        assert writer.stats.samples == 0
        writer.write(np.ones((2, 2), np.int16))
        assert writer.stats.next_sample == 2


def test_overlap_first_sample_and_closed(tmp_path: Path):
    writer = StreamWriter(tmp_path / "x.h5", channels=TWO, sample_rate=1.0)
    writer.write(np.ones((10, 2), np.int16), first_sample=5)
    with pytest.raises(
        SchemaMismatch, match=r"starting at sample 14 overlaps .* next sample is 15"
    ):
        writer.write(np.ones((1, 2), np.int16), first_sample=14)
    with pytest.raises(ConfigError, match="first_sample must be an int >= 0, got -3"):
        writer.write(np.ones((1, 2), np.int16), first_sample=-3)
    with pytest.raises(ConfigError, match=r"first_sample must be an int >= 0, got 2.0"):
        writer.write(np.ones((1, 2), np.int16), first_sample=2.0)  # type: ignore[arg-type]
    writer.close()
    writer.close()  # again: nothing
    with pytest.raises(WriterClosedError, match=r"stream writer for .*x.h5 is closed"):
        writer.write(np.ones((1, 2), np.int16))
    with pytest.raises(WriterClosedError):
        writer.flush()


def test_times_past_int64_are_refused_before_anything_is_stored(tmp_path: Path):
    start = (1 << 63) - 1000
    with StreamWriter(tmp_path / "x.h5", channels=TWO, sample_rate=1e9, start_ns=start) as w:
        w.write(np.ones((1000, 2), np.int16))
        with pytest.raises(ConfigError, match=r"sample 1000 at 1e.09 per second .* past the last"):
            w.write(np.ones((1, 2), np.int16))
        assert w.stats.samples == 1000
    with pytest.raises(ConfigError, match="sample_rate must be a number"):
        Timebase(2e9, 0)
