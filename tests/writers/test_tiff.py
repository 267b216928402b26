"""TIFF stacks read back with tifffile: per-page ids, codecs, ImageJ, BigTIFF parts, crashes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest
import tifffile

from daq_storage.errors import ConfigError, SchemaMismatch, StorageIOError, UnsupportedData
from daq_storage.sim import FrameBlock, SimulatedCamera
from daq_storage.writers import StreamPart, TiffWriter
from tests.writers.conformance import WriterConformance

SHAPE = (48, 64)


def read_stack(path: Path) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """A stack's frames as ``(n, *frame_shape)`` and each page's description as JSON."""
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == 1
        frames = tif.series[0].asarray()
        ids = [json.loads(page.description) for page in tif.pages]  # type: ignore[union-attr]
    return frames.reshape(len(ids), *tif.pages[0].shape), ids


def read_imagej(path: Path) -> tuple[np.ndarray, list[tuple[int, int]], dict[str, Any]]:
    """An ImageJ hyperstack's frames, the ids from its sidecar and its ImageJ metadata."""
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        metadata = dict(tif.imagej_metadata or {})
        frames = tif.series[0].asarray()
        frame_shape = tif.pages[0].shape
    lines = path.with_suffix(".frames.csv").read_text().splitlines()
    assert lines[0] == "frame_number,timestamp_ns"
    ids = [(int(n), int(t)) for n, t in (line.split(",") for line in lines[1:])]
    images = metadata["images"]
    assert metadata.get("frames", 1) == images
    return frames.reshape(images, *frame_shape), ids, metadata


def write_in_calls(writer: TiffWriter, stream: str, block: FrameBlock, sizes: list[int]) -> None:
    start = 0
    for size in sizes:
        part = slice(start, start + size)
        writer.write_frames(stream, block.frames[part], timestamps_ns=block.timestamps_ns[part],
                            frame_numbers=block.frame_numbers[part])  # fmt: skip
        start += size
    assert start == len(block)


class TestTiff(WriterConformance):
    writer_name = "tiff"
    target = "run_tiff"
    tables_supported = False
    frame_times_are_dates = False  # each page's JSON description holds an integer

    def read_frames(self, path: Path, stream: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        frames, ids = read_stack(path / f"{stream}.tif")
        assert all(i["stream"] == ids[0]["stream"] for i in ids)
        return (frames, np.array([i["timestamp_ns"] for i in ids], np.uint64),
                np.array([i["frame_number"] for i in ids], np.uint64))  # fmt: skip

    def read_metadata(self, path: Path, stream: str | None) -> dict[str, Any]:
        # TIFF has no file-level place: file metadata is merged into every stream's.
        _, ids = read_stack(path / f"{stream or 'power_meter_01'}.tif")
        metadata: dict[str, Any] = ids[0]["metadata"]
        return metadata


class TestTiffZlib(TestTiff):
    """Compressed stacks are written by tifffile page by page."""

    options: ClassVar[dict[str, Any]] = {"compression": "zlib"}


class TestTiffImageJ(TestTiff):
    options: ClassVar[dict[str, Any]] = {"imagej": True}

    def read_frames(self, path: Path, stream: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        frames, ids, _ = read_imagej(path / f"{stream}.tif")
        return (frames, np.array([t for _, t in ids], np.uint64),
                np.array([n for n, _ in ids], np.uint64))  # fmt: skip

    def read_metadata(self, path: Path, stream: str | None) -> dict[str, Any]:
        _, _, metadata = read_imagej(path / f"{stream or 'power_meter_01'}.tif")
        info = json.loads(metadata["Info"])
        assert info["stream"] == (stream or "power_meter_01")
        return dict(info["metadata"])


@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_every_page_carries_its_ids_when_frames_come_in_batches(tmp_path: Path, compression: str):
    block = SimulatedCamera(SHAPE, seed=0, start_ns=5000).frames(40)
    path = tmp_path / "t" / "camera_1.tif"
    with TiffWriter(tmp_path / "t", compression=compression) as writer:
        writer.set_metadata("exposure_ms", 10, stream="camera_1")
        write_in_calls(writer, "camera_1", block, [16, 16, 1, 7])
        writer.flush()
        assert len(read_stack(path)[0]) == 40  # readable while the writer is open
    np.testing.assert_array_equal(tifffile.imread(path), block.frames)
    frames, ids = read_stack(path)
    np.testing.assert_array_equal(frames, block.frames)
    assert [i["frame_number"] for i in ids] == block.frame_numbers.tolist()
    assert [i["timestamp_ns"] for i in ids] == block.timestamps_ns.tolist()
    assert {i["stream"] for i in ids} == {"camera_1"}
    assert ids[0]["metadata"] == {"exposure_ms": 10}
    assert all("metadata" not in i for i in ids[1:])
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_bigtiff
        assert tif.pages[0].compression == (
            tifffile.COMPRESSION.NONE
            if compression == "none"
            else tifffile.COMPRESSION.ADOBE_DEFLATE
        )
    if compression == "none":
        assert path.stat().st_size < block.frames.nbytes * 1.05
    else:
        assert path.stat().st_size < block.frames.nbytes


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "uint64", "float16", "float64"])
def test_dtypes_roundtrip(tmp_path: Path, dtype: str):
    frames = (np.arange(3 * 5 * 7) % 100).reshape(3, 5, 7).astype(dtype)
    with TiffWriter(tmp_path / "t") as writer:
        writer.write_frames("s", frames[:2])
        writer.write_frames("s", frames[2:])
    got = tifffile.imread(tmp_path / "t" / "s.tif")
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, frames)


def test_big_endian_rgb_and_boolean_frames_roundtrip(tmp_path: Path):
    big_endian = np.arange(2 * 4 * 6, dtype=">u2").reshape(2, 4, 6)
    rgb = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    flags = np.arange(2 * 4 * 6).reshape(2, 4, 6) % 3 == 0
    with TiffWriter(tmp_path / "t") as writer:
        writer.write_frames("be", big_endian)
        writer.write_frames("rgb", rgb, frame_numbers=[7, 8])
        writer.write_frames("flags", flags)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "t" / "be.tif"), big_endian)
    frames, ids = read_stack(tmp_path / "t" / "rgb.tif")
    np.testing.assert_array_equal(frames, rgb)
    assert [i["frame_number"] for i in ids] == [7, 8]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "t" / "flags.tif"), flags)


@pytest.mark.parametrize("compression", ["zlib", "zstd", "lzw"])
def test_every_codec_roundtrips_and_compresses(tmp_path: Path, compression: str):
    block = SimulatedCamera((240, 320), seed=0, start_ns=0).frames(6)
    sizes = {}
    for codec in ("none", compression):
        with TiffWriter(tmp_path / codec, compression=codec) as writer:
            write_in_calls(writer, "cam", block, [4, 2])
        path = tmp_path / codec / "cam.tif"
        frames, ids = read_stack(path)
        np.testing.assert_array_equal(frames, block.frames)
        assert [i["frame_number"] for i in ids] == block.frame_numbers.tolist()
        sizes[codec] = path.stat().st_size
    with tifffile.TiffFile(tmp_path / compression / "cam.tif") as tif:
        expected = {"zlib": "ADOBE_DEFLATE", "zstd": "ZSTD", "lzw": "LZW"}[compression]
        assert tif.pages[0].compression == tifffile.COMPRESSION[expected]
    assert sizes[compression] < 0.9 * sizes["none"]


def test_imagej_hyperstack_from_several_calls(tmp_path: Path):
    block = SimulatedCamera((32, 40), seed=0, start_ns=100).frames(23)
    with TiffWriter(tmp_path / "ij", imagej=True) as writer:
        writer.set_metadata("exposure_ms", 10)
        write_in_calls(writer, "cam", block, [5, 16, 2])
        writer.set_metadata("objective", "20x", stream="cam")  # after the last frame
        assert [p.name for p in writer.stats.files] == ["cam.tif", "cam.frames.csv"]
    path = tmp_path / "ij" / "cam.tif"
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert not tif.is_bigtiff
        assert (tif.imagej_metadata or {})["images"] == 23
        assert tif.series[0].shape == (23, 32, 40)
        assert len(tif.pages) == 23
        np.testing.assert_array_equal(tif.series[0].asarray(), block.frames)
    frames, ids, metadata = read_imagej(path)
    np.testing.assert_array_equal(frames, block.frames)
    assert ids == list(zip(block.frame_numbers.tolist(), block.timestamps_ns.tolist(), strict=True))
    info = json.loads(metadata["Info"])
    assert info == {"stream": "cam", "metadata": {"exposure_ms": 10, "objective": "20x"}}


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_imagej_dtypes(tmp_path: Path, dtype: str):
    frames = np.arange(3 * 4 * 5).reshape(3, 4, 5).astype(dtype)
    with TiffWriter(tmp_path / "ij", imagej=True) as writer:
        writer.write_frames("s", frames[:1])
        writer.write_frames("s", frames[1:])
    got, ids, _ = read_imagej(tmp_path / "ij" / "s.tif")
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, frames)
    assert [n for n, _ in ids] == [0, 1, 2]


def test_imagej_refuses_what_it_cannot_hold(tmp_path: Path):
    with pytest.raises(ConfigError, match="imagej"):
        TiffWriter(tmp_path / "x", imagej=True, compression="zlib")
    with pytest.raises(ConfigError, match="BigTIFF"):
        TiffWriter(tmp_path / "x", imagej=True, bigtiff=True)
    with TiffWriter(tmp_path / "ij", imagej=True) as writer:
        with pytest.raises(UnsupportedData, match=r"stream 'signed'.*int16"):
            writer.write_frames("signed", np.zeros((1, 4, 4), np.int16))
        with pytest.raises(UnsupportedData, match=r"stream 'rgb'.*\(4, 4, 3\)"):
            writer.write_frames("rgb", np.zeros((1, 4, 4, 3), np.uint8))
    assert not (tmp_path / "ij" / "signed.tif").exists()


def test_bigtiff_on_request_and_classic_by_default(tmp_path: Path):
    block = SimulatedCamera(SHAPE, seed=0, start_ns=0).frames(5)
    for option, expected in ((True, True), (None, False), (False, False)):
        with TiffWriter(tmp_path / str(option), bigtiff=option) as writer:
            write_in_calls(writer, "cam", block, [3, 2])
        path = tmp_path / str(option) / "cam.tif"
        with tifffile.TiffFile(path) as tif:
            assert tif.is_bigtiff is expected
        frames, ids = read_stack(path)
        np.testing.assert_array_equal(frames, block.frames)
        assert [i["frame_number"] for i in ids] == [0, 1, 2, 3, 4]


class SmallTiffWriter(TiffWriter):
    """A classic TIFF limit of about 40 small frames, so the switch is quick to test."""

    classic_limit = 300_000


def read_parts(directory: Path, stream: str) -> list[Path]:
    """A stream's files in order: ``<stream>.tif``, ``<stream>__part0002.tif``, ..."""
    names = [f"{stream}.tif"] + [f"{stream}__part{i:04d}.tif" for i in range(2, 100)]
    parts = [directory / name for name in names if (directory / name).exists()]
    assert sorted(directory.glob(f"{stream}*.tif")) == sorted(parts)
    assert parts == [directory / name for name in names[: len(parts)]]
    return parts


@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_classic_stack_continues_in_a_bigtiff_part_past_the_limit(tmp_path: Path, compression: str):
    block = SimulatedCamera(SHAPE, seed=0, start_ns=7).frames(120)
    with SmallTiffWriter(tmp_path / "t", compression=compression) as writer:
        writer.set_metadata("gain", 2, stream="cam")
        write_in_calls(writer, "cam", block, [16, 16, 50, 16, 16, 6])  # 50: split mid-call
        assert writer.stats.frames == 120
        writer.flush()
        assert writer.visible("cam") == writer.accepted("cam") == 120
        parts = writer.describe("cam").parts
    first, second = read_parts(tmp_path / "t", "cam")
    assert first.stat().st_size <= SmallTiffWriter.classic_limit
    with tifffile.TiffFile(first) as a, tifffile.TiffFile(second) as b:
        assert (a.is_bigtiff, b.is_bigtiff) == (False, True)
    frames_a, ids_a = read_stack(first)
    frames_b, ids_b = read_stack(second)
    assert len(frames_a) > 30
    np.testing.assert_array_equal(np.concatenate([frames_a, frames_b]), block.frames)
    ids = ids_a + ids_b
    assert [i["frame_number"] for i in ids] == block.frame_numbers.tolist()
    assert [i["timestamp_ns"] for i in ids] == block.timestamps_ns.tolist()
    # The parts, in describe() and in the second part's own metadata: where it starts.
    assert parts == (StreamPart(first, "", 0), StreamPart(second, "", len(frames_a)))
    assert ids_a[0]["metadata"] == {"gain": 2}
    assert ids_b[0]["metadata"] == {
        "gain": 2, "daq_storage.part_of": "cam", "daq_storage.first_row": len(frames_a)
    }  # fmt: skip


@pytest.mark.parametrize(("bigtiff", "imagej"), [(False, False), (False, True), (None, True)])
def test_classic_only_stacks_continue_in_classic_parts(
    tmp_path: Path, bigtiff: bool | None, imagej: bool
):
    block = SimulatedCamera(SHAPE, seed=0, start_ns=7).frames(130)
    with SmallTiffWriter(tmp_path / "t", bigtiff=bigtiff, imagej=imagej) as writer:
        write_in_calls(writer, "cam", block, [16] * 8 + [2])
    parts = read_parts(tmp_path / "t", "cam")
    assert len(parts) >= 3
    frames, numbers, stamps = [], [], []
    for part in parts:
        assert part.stat().st_size <= SmallTiffWriter.classic_limit
        with tifffile.TiffFile(part) as tif:
            assert not tif.is_bigtiff
            assert tif.is_imagej is imagej
        if imagej:
            got, ids, _ = read_imagej(part)
            numbers += [n for n, _ in ids]
            stamps += [t for _, t in ids]
        else:
            got, descriptions = read_stack(part)
            numbers += [i["frame_number"] for i in descriptions]
            stamps += [i["timestamp_ns"] for i in descriptions]
        frames.append(got)
    np.testing.assert_array_equal(np.concatenate(frames), block.frames)
    assert numbers == block.frame_numbers.tolist()
    assert stamps == block.timestamps_ns.tolist()


def test_a_frame_larger_than_a_classic_tiff(tmp_path: Path):
    frames = np.zeros((2, 400, 500), np.uint16)  # 400 kB a frame, above the small limit
    with SmallTiffWriter(tmp_path / "auto") as writer:
        writer.write_frames("cam", frames)
    with tifffile.TiffFile(tmp_path / "auto" / "cam.tif") as tif:
        assert tif.is_bigtiff  # the first file is BigTIFF at once
        assert len(tif.pages) == 2
    with (
        SmallTiffWriter(tmp_path / "classic", bigtiff=False) as writer,
        pytest.raises(UnsupportedData, match=r"stream 'cam'.*does not fit a classic TIFF"),
    ):
        writer.write_frames("cam", frames)


@pytest.mark.parametrize(
    "options", [{}, {"bigtiff": True}, {"imagej": True}], ids=["classic", "bigtiff", "imagej"]
)
def test_a_killed_writer_leaves_the_stack_readable(tmp_path: Path, options: dict[str, Any]):
    """SIGKILL in the middle of a write_frames call (a 16 MB write that a timer cuts
    short): the stack holds every frame of the calls before it, and no part of it."""
    target = tmp_path / "t"
    script = textwrap.dedent(
        f"""
        import os, signal, threading
        import numpy as np
        from daq_storage.sim import SimulatedCamera
        from daq_storage.writers import StreamPart, TiffWriter
        block = SimulatedCamera((256, 512), seed=3, start_ns=0).frames(16)
        writer = TiffWriter({str(target)!r}, **{options!r})
        for call in range(4):
            writer.write_frames("cam", block.frames, frame_numbers=np.arange(16) + 16 * call)
        last = np.concatenate([block.frames] * 4)
        threading.Timer(0.001, os.kill, (os.getpid(), signal.SIGKILL)).start()
        writer.write_frames("cam", last, frame_numbers=np.arange(64) + 64)
        threading.Event().wait(60)  # the timer kills us here if the write was quicker
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr
    path = target / "cam.tif"
    if options.get("imagej"):
        frames, ids, _ = read_imagej(path)
        assert len(ids) >= len(frames)  # ids are written before the count that shows frames
        numbers = [n for n, _ in ids[: len(frames)]]
    else:
        frames, descriptions = read_stack(path)
        numbers = [i["frame_number"] for i in descriptions]
    assert len(frames) in (64, 128)  # whole calls only
    block = SimulatedCamera((256, 512), seed=3, start_ns=0).frames(16)
    np.testing.assert_array_equal(frames, np.concatenate([block.frames] * (len(frames) // 16)))
    assert numbers == list(range(len(frames)))


def test_metadata_set_late_goes_to_the_next_page_or_the_last_one(tmp_path: Path):
    for compression in ("none", "zlib"):
        with TiffWriter(tmp_path / compression, compression=compression) as writer:
            writer.write_frames("cam", np.zeros((2, 4, 4), np.uint16))
            writer.set_metadata("temperature_k", 4.2, stream="cam")
            writer.write_frames("cam", np.ones((2, 4, 4), np.uint16))
            writer.set_metadata("note", "warming up")
        frames, ids = read_stack(tmp_path / compression / "cam.tif")
        assert len(frames) == 4
        assert [i.get("metadata") for i in ids] == [
            {},
            None,
            {"temperature_k": 4.2},
            {"temperature_k": 4.2, "note": "warming up"},
        ]
        assert ids[3]["frame_number"] == 3


def test_metadata_named_shape_does_not_confuse_tifffile(tmp_path: Path):
    frames = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    with TiffWriter(tmp_path / "t") as writer:
        writer.set_metadata("shape", [2, 2])
        writer.set_metadata("roi", {"shape": "circle"})
        writer.write_frames("cam", frames)
    got, ids = read_stack(tmp_path / "t" / "cam.tif")
    assert got.shape == (3, 4, 5)
    np.testing.assert_array_equal(got, frames)
    assert ids[0]["metadata"] == {"shape": [2, 2], "roi": {"shape": "circle"}}


def test_wrong_dtype_or_shape_mid_stream_raises_and_keeps_the_stack(tmp_path: Path):
    block = SimulatedCamera(SHAPE, seed=0, start_ns=0).frames(6)
    with TiffWriter(tmp_path / "t") as writer:
        writer.write_frames("cam", block.frames[:3])
        with pytest.raises(SchemaMismatch, match=r"stream 'cam'.*uint16.*float32"):
            writer.write_frames("cam", block.frames[3:].astype(np.float32))
        with pytest.raises(SchemaMismatch, match=r"stream 'cam'.*\(48, 64\).*\(32, 32\)"):
            writer.write_frames("cam", np.zeros((1, 32, 32), np.uint16))
        writer.write_frames("cam", block.frames[3:])
    frames, ids = read_stack(tmp_path / "t" / "cam.tif")
    np.testing.assert_array_equal(frames, block.frames)
    assert [i["frame_number"] for i in ids] == [0, 1, 2, 3, 4, 5]


def test_frames_a_page_cannot_hold_are_refused(tmp_path: Path):
    with TiffWriter(tmp_path / "t") as writer:
        with pytest.raises(UnsupportedData, match=r"stream 'vol'.*\(2, 4, 5\)"):
            writer.write_frames("vol", np.zeros((1, 2, 4, 5), np.uint16))
        with pytest.raises(UnsupportedData, match=r"stream 'empty'.*\(0, 5\) has no pixels"):
            writer.write_frames("empty", np.zeros((1, 0, 5), np.uint16))
        writer.write_frames("none_yet", np.zeros((0, 4, 5), np.uint16))
        assert writer.stats.frames == 0
    assert not (tmp_path / "t").exists()  # nothing stored: nothing left


def test_tables_are_refused(tmp_path: Path):
    batch = pa.record_batch({"v": [1]})
    with TiffWriter(tmp_path / "t") as writer:
        for call in (writer.write_batch, writer.check_batch):
            with pytest.raises(
                UnsupportedData, match=r"tiff writer cannot store tables \(stream 's'\)"
            ):
                call("s", batch)
        assert writer.streams == []


def test_unwritable_directory(tmp_path: Path):
    with pytest.raises(StorageIOError, match="cannot create output directory"):
        TiffWriter("/proc/daq_storage_test_dir")
    blocker = tmp_path / "t"
    with TiffWriter(blocker) as writer:
        (blocker / "cam.tif").mkdir()  # the stack's name is taken by a directory
        with pytest.raises(StorageIOError, match=r"stream 'cam': cam\.tif already exists") as info:
            writer.write_frames("cam", np.zeros((1, 4, 4), np.uint16))
        assert info.value.filename == str(blocker / "cam.tif")
        assert info.value.errno == errno.EEXIST
        writer.write_frames("other", np.zeros((1, 4, 4), np.uint16))  # the writer goes on
    assert tifffile.imread(blocker / "other.tif").shape == (4, 4)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_directory(tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(StorageIOError, match="cannot create output directory"):
        TiffWriter(locked)
    with pytest.raises(StorageIOError, match="cannot create output directory"):
        TiffWriter(locked / "sub")
    later = tmp_path / "later"
    with TiffWriter(later) as writer:
        later.chmod(0o500)
        try:
            with pytest.raises(StorageIOError, match="cannot write frames"):
                writer.write_frames("cam", np.zeros((1, 4, 4), np.uint16))
        finally:
            later.chmod(0o700)


def test_refused_first_frames_leave_the_stream_free(tmp_path: Path):
    """Frames ImageJ cannot hold are refused before they fix the stream's dtype."""
    with TiffWriter(tmp_path / "t", imagej=True) as writer:
        with pytest.raises(UnsupportedData, match="ImageJ hyperstack holds"):
            writer.write_frames("cam", np.zeros((2, 4, 4), np.int16))
        writer.write_frames("cam", np.ones((2, 4, 4), np.uint16))
    with tifffile.TiffFile(tmp_path / "t" / "cam.tif") as tif:
        np.testing.assert_array_equal(tif.series[0].asarray(), np.ones((2, 4, 4), np.uint16))


def test_imagej_metadata_set_between_calls_reaches_the_file(tmp_path: Path):
    with TiffWriter(tmp_path / "t", imagej=True) as writer:
        writer.set_metadata("exp", "scan")
        writer.write_frames("cam", np.zeros((2, 4, 4), np.uint16))
        writer.set_metadata("late", 5, stream="cam")
        writer.write_frames("cam", np.ones((2, 4, 4), np.uint16))
    with tifffile.TiffFile(tmp_path / "t" / "cam.tif") as tif:
        metadata = dict(tif.imagej_metadata or {})
    assert metadata["images"] == 4
    assert json.loads(metadata["Info"])["metadata"] == {"exp": "scan", "late": 5}
