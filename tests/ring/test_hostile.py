"""Hostile files and records: only DaqStorageError comes out, nothing hangs, crashes or
allocates what a file merely claims; a ring another user made is not used. (Hostile
arguments: test_arguments.py.)"""

from __future__ import annotations

import os
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daq_storage.errors import (
    RingCorrupt,
    RingExists,
    RingNotFound,
    RingNotTrusted,
    StorageIOError,
)
from daq_storage.ring import RingBuffer, RingReader
from daq_storage.ring import _format as f
from tests.ring.conftest import SMALL, run_python


@pytest.mark.parametrize(
    ("seed", "mutations"),
    [(20260101, 150), pytest.param(20260102, 5000, marks=[pytest.mark.stress,
                                                          pytest.mark.timeout(1200)])],
)  # fmt: skip
def test_forged_records_never_crash_or_exhaust_a_reader(
    shm_path: Path, tmp_path: Path, seed: int, mutations: int
):
    """Forged Arrow and frame records (offsets past the body, compression bombs, lying
    dtypes and shapes, ...) and random mutations (150; 5000 under ``-m stress``), each
    read and consumed in full (to_pylist, pandas, polars) in a process of its own."""
    progress = tmp_path / "case"
    code, outcome = run_python(
        "import sys; from tests.ring._hostile import run; run(*sys.argv[1:])",
        str(shm_path), str(progress), str(seed), str(mutations),
        timeout=110 if mutations < 1000 else 1100,
    )  # fmt: skip
    died_at = progress.read_text() if progress.exists() else "?"
    assert code == 0, f"the reader died (exit {code}) at case {died_at!r}: {outcome}"
    assert outcome["raw"] == []
    assert outcome["cases"] > mutations
    assert outcome["rss_growth_mib"] < 64  # the 128 MiB bomb was not inflated
    assert not shm_path.exists()


# ----------------------------------------------------------------- what the path names
Opener = Callable[[Path], Any]
OPENERS: dict[str, Opener] = {
    "reader": lambda p: RingReader.open(p),
    "consumer": lambda p: RingReader.open(p, consumer="c"),
    "writer": lambda p: RingBuffer.open(p),
    "trusting reader": lambda p: RingReader.open(p, trust_foreign=True),
    "trusting writer": lambda p: RingBuffer.open(p, trust_foreign=True),
}


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _fifo_link(path: Path) -> None:
    os.mkfifo(path.with_name(path.name + ".fifo"))
    path.symlink_to(path.with_name(path.name + ".fifo"))


def _loop(path: Path) -> None:
    path.symlink_to(path.with_name(path.name + ".other"))
    path.with_name(path.name + ".other").symlink_to(path)


def _socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))


PLACED: dict[str, Callable[[Path], None]] = {
    "fifo": _fifo,
    "link to fifo": _fifo_link,
    "directory": lambda p: p.mkdir(),
    "symlink loop": _loop,
    "dangling link": lambda p: p.symlink_to(p.with_name("nowhere")),
    "socket": _socket,
    "link to /dev/zero": lambda p: p.symlink_to("/dev/zero"),
    "missing": lambda p: None,
}
# What each opener raises for each thing (trusting openers follow links).
NOT_A_RING = RingCorrupt
EXPECTED: dict[str, tuple[type[Exception], type[Exception]]] = {
    # thing: (by default, when trusting)
    "fifo": (NOT_A_RING, NOT_A_RING),
    "link to fifo": (RingNotTrusted, NOT_A_RING),
    "directory": (NOT_A_RING, NOT_A_RING),
    "symlink loop": (RingNotTrusted, StorageIOError),
    "dangling link": (RingNotTrusted, RingNotFound),
    "socket": (NOT_A_RING, NOT_A_RING),
    "link to /dev/zero": (RingNotTrusted, NOT_A_RING),
    "missing": (RingNotFound, RingNotFound),
}


@pytest.fixture
def place(tmp_path: Path) -> Callable[[str], Path]:
    """Put a named non-ring thing at a fresh path (in a private directory)."""

    def put(thing: str) -> Path:
        path = tmp_path / "ring"
        PLACED[thing](path)
        return path

    return put


@pytest.mark.timeout(30)  # a FIFO once made open() wait forever
@pytest.mark.parametrize("opener", list(OPENERS))
@pytest.mark.parametrize("thing", list(PLACED))
def test_what_is_not_a_ring_file_is_refused_at_once(
    place: Callable[[str], Path], thing: str, opener: str
):
    path = place(thing)
    expected = EXPECTED[thing][opener.startswith("trusting")]
    with pytest.raises(expected, match=str(path.parent)):
        OPENERS[opener](path)


def test_missing_ring_is_still_a_file_not_found_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no ring buffer at"):
        RingReader.open(tmp_path / "absent")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("thing", ["fifo", "link to fifo", "directory", "symlink loop", "socket"])
def test_create_never_replaces_what_is_not_a_ring(place: Callable[[str], Path], thing: str):
    path = place(thing)
    with pytest.raises(RingExists, match="not a ring file"):
        RingBuffer.create(path, capacity_bytes=SMALL, exist_ok=True)
    assert os.path.lexists(path)


def test_sparse_ring_costs_a_reader_nothing(shm_path: Path):
    """A header claiming 64 MiB over a sparse file: readers map it without making it
    resident (it used to cost them 64 MiB of shared memory)."""
    with RingBuffer.create(shm_path, capacity_bytes=SMALL) as ring:
        ring.write(b"kept", stream="s")
    identity = list(f.IDENTITY.unpack_from(shm_path.read_bytes()[: f.IDENTITY.size]))
    identity[4] = 64 << 20  # capacity
    with shm_path.open("r+b") as handle:
        handle.write(f.IDENTITY.pack(*identity))
        handle.truncate(identity[3] + identity[4])
    for consumer in (None, "viewer"):
        with RingReader.open(shm_path, consumer=consumer) as reader:
            assert [r.tobytes() for r in reader.read_many()] == [b"kept"]
            assert reader.read_latest() is not None
            reader.stats()
        assert shm_path.stat().st_blocks * 512 < 4 << 20
    shm_path.unlink()


def test_sparse_ring_too_large_for_its_filesystem_is_refused_to_a_writer(shm_path: Path):
    """A writer gives every page its block before writing (no SIGBUS on a full tmpfs)."""
    RingBuffer.create(shm_path, capacity_bytes=SMALL).close()
    identity = list(f.IDENTITY.unpack_from(shm_path.read_bytes()[: f.IDENTITY.size]))
    identity[4] = 1 << 43  # 8 TiB
    with shm_path.open("r+b") as handle:
        handle.write(f.IDENTITY.pack(*identity))
        handle.truncate(identity[3] + identity[4])
    with pytest.raises(StorageIOError, match=r"needs 8\.0 TiB"):
        RingBuffer.open(shm_path)
    with RingReader.open(shm_path) as reader:
        assert reader.read_next() is None
    shm_path.unlink()


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (f.OFF_TAIL_INTENT, 2**64 - 8),
        (f.OFF_NEXT_SEQ, 2**64 - 1),
        (f.OFF_RECORDS_WRITTEN, 2**64 - 1),
        (f.OFF_BYTES_WRITTEN, 2**64 - 1),
        (f.OFF_DROPPED, 2**64 - 1),
        (f.OFF_EVICTIONS, 2**64 - 1),
        (f.OFF_WRITER_GENERATION, 2**64 - 1),
        (f.OFF_STREAM_COUNT, 2**40),
        (f.OFF_SCHEMA_COUNT, 2**40),
        (f.OFF_SCHEMA_HEAP_USED, 2**40),
    ],
)
def test_counters_no_writer_can_have_stored_are_refused(shm_path: Path, offset: int, value: int):
    with RingBuffer.create(shm_path, capacity_bytes=SMALL) as ring:
        ring.write(b"x", stream="s")
    words = [offset] if offset != f.OFF_TAIL_INTENT else [f.OFF_TAIL, f.OFF_TAIL_INTENT]
    with shm_path.open("r+b") as handle:
        for word in words:
            handle.seek(word)
            handle.write(struct.pack("<Q", value))
    with pytest.raises(RingCorrupt, match=str(shm_path)):
        RingBuffer.open(shm_path)
    try:
        with RingReader.open(shm_path) as reader:
            reader.read_many()
            reader.read_latest()
    except RingCorrupt:
        pass
    shm_path.unlink()


# ----------------------------------------------------------------- who made the ring
def run_as(uid: int, code: str, *args: str) -> dict[str, Any]:
    """Run ``code`` as user ``uid`` (everything imported first, as root); what it printed,
    or the name and text of the exception it raised."""
    script = f"""
        import json, os, sys
        from daq_storage.ring import RingBuffer, RingReader
        os.setgroups([]); os.setgid({uid}); os.setuid({uid})
        try:
            result = {code}
        except Exception as exc:
            print(json.dumps({{"error": type(exc).__name__, "message": str(exc)}}))
        else:
            print(json.dumps({{"result": result}}))
        """
    status, printed = run_python(script, *args)
    assert status == 0, printed
    return printed


as_root = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
NOBODY = 65534


@as_root
def test_ring_path_taken_by_another_user_is_neither_used_nor_replaced(shm_path: Path):
    path = shm_path  # in /dev/shm: anyone may create files there
    made = run_as(NOBODY, "RingBuffer.create(sys.argv[1], capacity_bytes=65536, mode=0o666)"
                  ".write(b'forged', stream='s')", str(path))  # fmt: skip
    assert made == {"result": 0}
    with pytest.raises(RingNotTrusted, match=f"belongs to uid {NOBODY}"):
        RingBuffer.create(path, capacity_bytes=SMALL, exist_ok=True)
    with pytest.raises(RingExists):
        RingBuffer.create(path, capacity_bytes=SMALL)
    with pytest.raises(RingNotTrusted, match=f"belongs to uid {NOBODY}.*trust_foreign=True"):
        RingBuffer.open(path)
    for consumer in (None, "recorder"):
        with pytest.raises(RingNotTrusted, match=f"belongs to uid {NOBODY}"):
            RingReader.open(path, consumer=consumer)
    # A ring shared between accounts on purpose is read when the reader says so.
    with RingReader.open(path, trust_foreign=True) as reader:
        record = reader.read_next()
        assert record is not None
        assert record.tobytes() == b"forged"
    path.unlink()


@as_root
def test_another_user_cannot_open_a_private_ring(shm_path: Path):
    path = shm_path
    with RingBuffer.create(path, capacity_bytes=SMALL) as ring:  # mode 0600
        ring.write(b"private", stream="s")
        for code in ("RingReader.open(sys.argv[1])", "RingBuffer.open(sys.argv[1])"):
            refused = run_as(NOBODY, code, str(path))
            assert refused["error"] == "StorageIOError"
            assert "Permission denied (owned by uid 0, mode 0600)" in refused["message"]
    path.unlink()


@as_root
def test_a_ring_of_roots_that_only_root_may_write_is_read_by_others(shm_path: Path):
    path = shm_path
    with RingBuffer.create(path, capacity_bytes=SMALL, mode=0o644) as ring:
        ring.write(b"published", stream="s")
        read = run_as(NOBODY, "RingReader.open(sys.argv[1]).read_next().tobytes().decode()",
                      str(path))  # fmt: skip
    assert read == {"result": "published"}
    path.unlink()


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
def test_a_ring_others_may_write_is_trusted_only_on_request(shm_path: Path, mode: int):
    with RingBuffer.create(shm_path, capacity_bytes=SMALL, mode=mode) as ring:
        ring.write(b"x", stream="s")
    assert stat.S_IMODE(shm_path.stat().st_mode) == mode
    for open_ring in (RingBuffer.open, RingReader.open):
        with pytest.raises(RingNotTrusted, match=f"mode {mode:04o}"):
            open_ring(shm_path)
    with RingBuffer.open(shm_path, trust_foreign=True) as again:
        again.write(b"y", stream="s")
    with RingReader.open(shm_path, trust_foreign=True) as reader:
        assert len(reader.read_many()) == 2
    shm_path.unlink()


def test_a_link_to_a_ring_is_followed_only_on_request(shm_path: Path, tmp_path: Path):
    RingBuffer.create(shm_path, capacity_bytes=SMALL).close()
    link = tmp_path / "link"
    link.symlink_to(shm_path)
    with pytest.raises(RingNotTrusted, match="symbolic link"):
        RingReader.open(link)
    with RingReader.open(link, trust_foreign=True) as reader:
        assert reader.read_next() is None
    shm_path.unlink()
