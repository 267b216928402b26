"""TIFF and the writer contract: options from the config, visibility, description,
durable flushes, sequences of frames, and writes refused for room that change nothing;
read back with tifffile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from daq_storage.config import StorageSettings
from daq_storage.errors import ConfigError, SchemaMismatch, UnknownStream
from daq_storage.sim import SimulatedCamera
from daq_storage.testing import child_environment
from daq_storage.writers import StreamDescription, StreamPart, TiffWriter, writer_options
from tests.writers.test_tiff import SHAPE, SmallTiffWriter, read_imagej, read_parts, read_stack

OPTIONS = [{}, {"compression": "zlib"}, {"imagej": True}]
OPTION_IDS = ["pages", "tifffile", "imagej"]


def ids_of(path: Path, imagej: bool) -> list[int]:
    """The frame numbers of one file, from the page descriptions or the ImageJ sidecar."""
    if imagej:
        return [n for n, _ in read_imagej(path)[1]]
    return [i["frame_number"] for i in read_stack(path)[1]]


# ---------------------------------------------------------------- options and config
def test_gzip_is_deflate_and_codecs_tiff_lacks_are_refused(tmp_path: Path):
    frames = SimulatedCamera((64, 80), seed=0, start_ns=0).frames(3).frames
    with TiffWriter(tmp_path / "g", compression="gzip") as writer:
        writer.write_frames("cam", frames)
        writer.flush()
        assert writer.describe("cam").compression == "zlib"
    with tifffile.TiffFile(tmp_path / "g" / "cam.tif") as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        np.testing.assert_array_equal(tif.asarray(), frames)
    accepted = r"'none', 'zlib', 'gzip', 'zstd' or 'lzw'"
    for codec in ("lz4", "lzf", "snappy", "blosc-lz4", "blosc-zstd", "deflate"):
        with pytest.raises(ConfigError, match=rf"tiff writer: compression = '{codec}'.*{accepted}"):
            TiffWriter(tmp_path / codec, compression=codec)
        assert not (tmp_path / codec).exists()
    with pytest.raises(ConfigError, match=r"imagej=True needs compression='none'.*'zstd'"):
        TiffWriter(tmp_path / "ij", imagej=True, compression="zstd")
    with pytest.raises(ConfigError, match="cannot be BigTIFF"):
        TiffWriter(tmp_path / "ij", imagej=True, bigtiff=True)


def test_storage_compression_reaches_the_tiff_writer(tmp_path: Path):
    """``[storage] compression`` is honoured where TIFF has the codec and refused,
    naming the key, the value and what TIFF takes, where it has not."""
    options = writer_options(TiffWriter, StorageSettings(compression="zstd"))
    assert options == {"compression": "zstd"}
    frames = SimulatedCamera((64, 80), seed=1, start_ns=0).frames(4).frames
    with TiffWriter(tmp_path / "z", **options) as writer:
        writer.write_frames("cam", frames)
    with tifffile.TiffFile(tmp_path / "z" / "cam.tif") as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ZSTD
        np.testing.assert_array_equal(tif.asarray(), frames)
    assert writer_options(TiffWriter, StorageSettings(compression="lzw")) == {"compression": "lzw"}
    for codec in ("lz4", "snappy", "blosc-zstd"):
        with pytest.raises(
            ConfigError,
            match=rf"storage.compression = '{codec}': the tiff writer cannot honour it.*"
            r"it takes one of 'none', 'zlib', 'gzip', 'zstd', 'lzw'",
        ):
            writer_options(TiffWriter, StorageSettings(compression=codec))
    for key, value in (("compression_level", 5), ("chunk_size", 64)):
        with pytest.raises(ConfigError, match=rf"storage.{key} = {value}: the tiff writer does "):
            writer_options(TiffWriter, StorageSettings(**{key: value}))


# ---------------------------------------------------------------- visibility
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_visible_frames_are_what_a_reader_finds(tmp_path: Path, options: dict[str, Any]):
    """Our page writer links each call's pages once they are on disk: visible equals
    accepted at once. tifffile buffers: its frames are visible after flush()."""
    block = SimulatedCamera(SHAPE, seed=0, start_ns=0).frames(12)
    path = tmp_path / "t" / "cam.tif"
    buffered = "compression" in options
    with TiffWriter(tmp_path / "t", **options) as writer:
        for start in range(0, 12, 4):
            writer.write_frames("cam", block.frames[start : start + 4])
            assert writer.accepted("cam") == start + 4
            visible = writer.visible("cam")
            assert visible == (start if buffered else start + 4)
            if visible:
                found = read_imagej(path)[0] if "imagej" in options else read_stack(path)[0]
                assert len(found) >= visible
                np.testing.assert_array_equal(found[:visible], block.frames[:visible])
            writer.flush()
            assert writer.visible("cam") == writer.describe("cam").visible == start + 4
            assert ids_of(path, "imagej" in options) == list(range(start + 4))
        with pytest.raises(UnknownStream, match="'other'"):
            writer.visible("other")


# ---------------------------------------------------------------- description
def test_describe_says_where_frames_and_ids_are(tmp_path: Path):
    frames = np.arange(3 * 6 * 8, dtype=np.uint16).reshape(3, 6, 8)
    with TiffWriter(tmp_path / "t", compression="zstd") as writer:
        writer.write_frames("cam", frames)
        writer.flush()
        described = writer.describe("cam")
        with pytest.raises(UnknownStream, match="'nope'"):
            writer.describe("nope")
    path = tmp_path / "t" / "cam.tif"
    assert described == StreamDescription(
        stream="cam", kind="frames", format="tiff", mimetype="image/tiff", path=path, key="",
        parts=(StreamPart(path, "", 0),), visible=3, accepted=3, dtype="uint16", shape=(6, 8),
        chunk_shape=(1, 6, 8), compression="zstd",
        extra_keys={"timestamps_ns": "ImageDescription:timestamp_ns",
                    "frame_numbers": "ImageDescription:frame_number"},
    )  # fmt: skip
    assert described.stream_resource() == {
        "uri": path.absolute().as_uri(),
        "mimetype": "image/tiff",
        "parameters": {"chunk_shape": [1, 6, 8], "compression": "zstd"},
    }
    got, ids = read_stack(path)
    assert (str(got.dtype), got.shape[1:]) == (described.dtype, described.shape)
    assert [i["frame_number"] for i in ids] == [0, 1, 2]
    with TiffWriter(tmp_path / "ij", imagej=True) as writer:
        writer.write_frames("cam", frames)
        extra = writer.describe("cam").extra_keys
    assert extra == {"timestamps_ns": "cam.frames.csv:timestamp_ns",
                     "frame_numbers": "cam.frames.csv:frame_number"}  # fmt: skip
    assert [n for n, _ in read_imagej(tmp_path / "ij" / "cam.tif")[1]] == [0, 1, 2]


# ---------------------------------------------------------------- durability, input
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_durable_flush_across_parts(tmp_path: Path, options: dict[str, Any]):
    """flush(durable=True) runs with open files, completed parts and nothing new; the
    parts read back whole."""
    block = SimulatedCamera(SHAPE, seed=4, start_ns=0).frames(90)
    with SmallTiffWriter(tmp_path / "t", **options) as writer:
        for start in range(0, 90, 30):
            writer.write_frames("cam", block.frames[start : start + 30])
            writer.flush(durable=True)
            assert writer.visible("cam") == start + 30
        writer.flush(durable=True)  # nothing new: still fine
        parts = writer.describe("cam").parts
    files = read_parts(tmp_path / "t", "cam")
    assert [part.path for part in parts] == files
    assert len(files) >= 2
    numbers = [n for path in files for n in ids_of(path, "imagej" in options)]
    assert numbers == list(range(90))
    assert [part.first for part in parts] == [numbers.index(p.first) for p in parts]


def test_a_sequence_of_frames_is_one_call(tmp_path: Path):
    """Equally shaped frames as a list or tuple (ring views, say) are stored as one
    stack; a sequence of mixed shapes is refused and changes nothing."""
    block = SimulatedCamera(SHAPE, seed=2, start_ns=0).frames(6)
    ring = np.ascontiguousarray(block.frames)
    with TiffWriter(tmp_path / "t") as writer:
        writer.write_frames("cam", [ring[0], ring[1], ring[2]])
        writer.write_frames("cam", tuple(ring[3:5]), frame_numbers=[10, 11])
        with pytest.raises(SchemaMismatch, match=r"frame 1 of the sequence"):
            writer.write_frames("cam", [ring[5], ring[5][:10]])
        writer.write_frames("cam", [ring[5]])
        assert writer.accepted("cam") == writer.stats.frames == 6
    frames, ids = read_stack(tmp_path / "t" / "cam.tif")
    np.testing.assert_array_equal(frames, block.frames)
    assert [i["frame_number"] for i in ids] == [0, 1, 2, 10, 11, 5]


# ---------------------------------------------------------------- refused for room
_ROOM_SCRIPT = """
import json, os, resource, signal, sys
import numpy as np
from daq_storage.errors import StorageIOError
from daq_storage.writers import TiffWriter

class Small(TiffWriter):
    classic_limit = 300_000  # about 36 frames of 64x64 uint16 a part

target, options, small = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "small"
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full file: EFBIG, not a kill
writer = (Small if small else TiffWriter)(target, **options)

def frames(start, n):
    return np.repeat(np.arange(start, start + n, dtype=np.uint16), 64 * 64).reshape(n, 64, 64)

def report(label):
    stats = writer.stats
    counts = [writer.accepted("cam"), writer.visible("cam"), stats.frames, stats.bytes_written]
    print(label, json.dumps([counts, [p.name for p in stats.files],
                             [p.first for p in writer.describe("cam").parts]]))

writer.write_frames("cam", frames(0, 30))
writer.flush()
report("BEFORE")
size = os.path.getsize(os.path.join(target, "cam.tif"))
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (size + (6 << 20), hard))
for stream in ("cam", "other"):  # 8 MiB: more than the limit leaves
    try:
        writer.write_frames(stream, frames(0, 1024))
    except StorageIOError as exc:
        print("REFUSED", stream, exc.errno)
report("AFTER")
print("STREAMS", json.dumps(writer.streams))
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))
writer.write_frames("cam", frames(30, 20))
writer.close()
"""


@pytest.mark.parametrize("small", [False, True], ids=["one_file", "past_a_part_limit"])
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_a_write_refused_for_room_changes_nothing(
    tmp_path: Path, options: dict[str, Any], small: bool
):
    """The file-size limit leaves no room for a call: it is refused whole, up front
    (also one that would have filled the current part and gone on in the next), and
    the counts, files, parts and default frame numbers stay as they were; a stream
    whose first call is refused never starts."""
    target = tmp_path / "t"
    result = subprocess.run(
        [sys.executable, "-c", _ROOM_SCRIPT, str(target), json.dumps(options),
         "small" if small else "big"],
        capture_output=True, text=True, timeout=120, check=False, env=child_environment(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert "REFUSED cam 27" in result.stdout, result.stdout
    assert "REFUSED other 27" in result.stdout, result.stdout
    assert lines["AFTER"] == lines["BEFORE"]  # counts, files and parts unchanged
    counts, _, firsts = json.loads(lines["BEFORE"])
    assert counts[:3] == [30, 30, 30]
    assert json.loads(lines["STREAMS"]) == ["cam"]
    files = read_parts(target, "cam")
    assert firsts == [0]  # the refused call started no part
    # Uncompressed: the 20 frames after it pass the small limit (compressed ones fit).
    assert len(files) == (2 if small and "compression" not in options else 1)
    numbers = [n for path in files for n in ids_of(path, "imagej" in options)]
    assert numbers == list(range(50))  # 0..29, then 30..49: never a gap
    values = []
    for path in files:
        stack = read_imagej(path)[0] if "imagej" in options else read_stack(path)[0]
        values += stack[:, 0, 0].tolist()
    assert values == list(range(50))
    assert not any(p.name.startswith("other") for p in target.iterdir())
