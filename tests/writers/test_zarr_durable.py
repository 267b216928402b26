"""Zarr: durable flushes fsync what they made visible; frames come as arrays or sequences;
a frame write refused for room changes nothing, default frame numbers included."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr

import daq_storage.writers._zarr_store as zarr_store
from daq_storage.errors import SchemaMismatch, StorageIOError
from daq_storage.testing import child_environment, fill_disk
from daq_storage.writers import ZarrWriter

_FD_PATHS = Path("/proc/self/fd")


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths fsynced from now on (os.fsync still does its work: it is watched, not
    replaced)."""
    if not _FD_PATHS.is_dir():
        pytest.skip("needs /proc to name a file descriptor's file")
    synced: list[Path] = []
    real = os.fsync

    def watched(fd: int) -> None:
        synced.append(Path(os.readlink(_FD_PATHS / str(fd))))
        real(fd)

    monkeypatch.setattr(os, "fsync", watched)
    return synced


def _regular_files(path: Path) -> set[Path]:
    return {p.resolve() for p in path.rglob("*") if p.is_file() and not p.is_symlink()}


def test_a_durable_flush_fsyncs_every_object_document_and_folder_it_made_visible(
    tmp_path: Path, fsynced: list[Path]
):
    """flush() fsyncs nothing; flush(durable=True) fsyncs every chunk and shard written
    since the last durable flush (and no older one), the documents, the folders naming
    them and the store's own entry; a second one with nothing new syncs no object."""
    path = tmp_path / "d.zarr"
    rng = np.random.default_rng(0)
    with ZarrWriter(path, shard_frames=4, chunk_size=100) as writer:
        writer.write_batch("t", pa.record_batch({"x": rng.random(250), "s": ["a"] * 250}))
        writer.write_frames("cam", rng.integers(0, 99, (10, 8, 8), dtype=np.uint16))
        writer.flush()
        assert fsynced == []
        writer.flush(durable=True)
        synced = {p.resolve() for p in fsynced}
        assert _regular_files(path) <= synced  # chunks, shards, ids, documents, root
        folders = {p.resolve() for p in path.rglob("*") if p.is_dir()}
        assert folders <= synced
        assert {path.resolve(), path.parent.resolve()} <= synced
        before = _regular_files(path)
        fsynced.clear()
        writer.flush(durable=True)
        assert not [p for p in fsynced if "/c/" in str(p)]  # no chunk again
        fsynced.clear()
        writer.write_batch("t", pa.record_batch({"x": rng.random(100), "s": ["b"] * 100}))
        writer.flush(durable=True)
        synced = {p.resolve() for p in fsynced}
        chunks = {p for p in _regular_files(path) if "/t/x/c/" in str(p)}
        assert chunks & synced == {(path / "t" / "x" / "c" / n).resolve() for n in ("2", "3")}
        new = _regular_files(path) - before
        assert new <= synced
    assert xr.open_zarr(path, group="t").sizes["row"] == 350


def test_a_durable_flush_covers_the_seeds_builder_arrays(tmp_path: Path, fsynced: list[Path]):
    path = tmp_path / "b.zarr"
    with ZarrWriter(path) as writer:
        writer.create_array("grid", [4, 4], [2, 2], dtype=np.int32)
        writer.write_chunk("grid", [2, 0], np.ones((2, 4), np.int32))
        writer.flush(durable=True)
        assert _regular_files(path) <= {p.resolve() for p in fsynced}


@pytest.mark.parametrize("kind", [list, tuple])
def test_frames_come_as_a_sequence_of_equal_frames(tmp_path: Path, kind: Any):
    """Views of a ring, one per frame: stacked once, stored as an array of them would be;
    a sequence of unequal frames is refused before anything changes."""
    ring = np.arange(12 * 5 * 6, dtype=np.uint16).reshape(12, 5, 6)
    path = tmp_path / "q.zarr"
    with ZarrWriter(path, shard_frames=4) as writer:
        writer.write_frames("cam", kind(ring[i] for i in range(7)))
        with pytest.raises(SchemaMismatch, match="equally shaped"):
            writer.write_frames("cam", kind([ring[7], ring[8, :4]]))
        writer.write_frames("cam", kind(ring[i] for i in range(7, 12)))
        assert writer.accepted("cam") == 12
    dataset = xr.open_zarr(path, group="cam")
    np.testing.assert_array_equal(dataset["frames"].values, ring)
    assert dataset["frame_number"].values.tolist() == list(range(12))


def test_frames_refused_on_a_full_disk_change_nothing(small_disk: Path):
    """A disk another process filled: the call is refused up front (ENOSPC); counts,
    stats and default frame numbers stay as they were (0, 1, 2, 3: never 0, 1, 50,
    51), and a stream whose first call is refused is never made."""
    path = small_disk / "f.zarr"
    small = np.ones((2, 128, 128), np.float32)
    with ZarrWriter(path, shard_frames=4) as writer:
        writer.write_frames("cam", small)
        writer.flush()
        stats, accepted = writer.stats, writer.accepted("cam")
        filler = small_disk / "filler"
        fill_disk(filler.parent, leave=0)  # another process fills the disk
        big = np.random.default_rng(0).random((48, 128, 128)).astype(np.float32)  # 3 MiB
        for stream in ("cam", "other"):
            with pytest.raises(StorageIOError) as info:
                writer.write_frames(stream, big)
            assert info.value.errno == errno.ENOSPC
        assert writer.accepted("cam") == accepted
        assert writer.streams == ["cam"]
        after = writer.stats
        assert (after.frames, after.bytes_written) == (stats.frames, stats.bytes_written)
        filler.unlink()
        writer.write_frames("cam", small * 2)
    dataset = xr.open_zarr(path, group="cam")
    assert dataset["frame_number"].values.tolist() == [0, 1, 2, 3]
    assert dataset["frames"].values[:, 0, 0].tolist() == [1, 1, 2, 2]
    assert not (path / "other").exists()


_ROOM_SCRIPT = """
import json, resource, sys
import numpy as np
from daq_storage.errors import StorageIOError
from daq_storage.writers import ZarrWriter

writer = ZarrWriter(sys.argv[1], frames_per_chunk=2)
writer.write_frames("cam", np.zeros((2, 128, 128), np.float32))
writer.flush()
before = [writer.accepted("cam"), writer.stats.frames, writer.stats.bytes_written]
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (6 << 20, hard))  # less than the call + headroom
try:
    writer.write_frames("cam", np.ones((48, 128, 128), np.float32))  # 3 MiB
except StorageIOError as exc:
    print("REFUSED", exc.errno)
after = [writer.accepted("cam"), writer.stats.frames, writer.stats.bytes_written]
print("SAME" if after == before else f"CHANGED {before} {after}")
writer.write_frames("cam", np.full((2, 128, 128), 3, np.float32))  # fits the limit
writer.close()
"""


def test_frames_refused_for_the_file_size_limit_keep_numbering_contiguous(tmp_path: Path):
    """The same, with the process's file-size limit (RLIMIT_FSIZE) instead of a full
    disk, in a child process."""
    path = tmp_path / "l.zarr"
    command = [sys.executable, "-c", _ROOM_SCRIPT, str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False,
                            env=child_environment())  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == [f"REFUSED {errno.EFBIG}", "SAME"], result.stdout
    dataset = xr.open_zarr(path, group="cam")
    assert dataset["frame_number"].values.tolist() == [0, 1, 2, 3]
    assert dataset["frames"].values[:, 0, 0].tolist() == [0, 0, 3, 3]
    assert json.loads((path / "cam" / "zarr.json").read_text())["attributes"] == {
        "instrument_id": "cam"
    }


def test_what_a_durable_flush_must_sync_stays_small_however_long_the_run(
    tmp_path: Path, fsynced: list[Path], monkeypatch: pytest.MonkeyPatch
):
    """Appended arrays' chunk keys are kept as one range per array; other keys one by
    one up to a limit, past which the next durable flush fsyncs every file instead."""
    monkeypatch.setattr(zarr_store, "MAX_LOOSE_KEYS", 3)
    dirty = zarr_store.DirtyKeys()
    for index in range(10_000):  # a long run: one range, however many chunks
        dirty.add(f"cam/frames/c/{index}/0/0")
    dirty.add("t/x/c/7")
    assert dirty.runs == {("cam/frames", "/0/0"): (0, 9_999), ("t/x", ""): (7, 7)}
    for key in ("grid/zarr.json", "grid/c/0/1", "grid/c/1/1"):
        dirty.add(key)
    assert not _overflowed(dirty)
    assert len(dirty.loose) == 3
    dirty.add("grid/c/1/0/2")
    assert _overflowed(dirty)
    assert not dirty.loose
    root = tmp_path / "store"
    (root / "a" / "b").mkdir(parents=True)
    for name in ("a/one", "a/b/two", "three"):
        (root / name).write_bytes(b"x")
    zarr_store.sync_store(root, dirty, [])
    assert {p.resolve() for p in root.rglob("*")} <= {p.resolve() for p in fsynced}


def _overflowed(dirty: zarr_store.DirtyKeys) -> bool:
    return dirty.overflowed
