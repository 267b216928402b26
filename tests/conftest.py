"""Fixtures shared by the whole suite, and guards that fail tests leaking resources."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daq_storage.testing import S3Server
from daq_storage.testing import s3_server as start_s3_server

# Threads that libraries keep for the life of the process by design (not leaks).
_LONG_LIVED_THREAD_PREFIXES = ("zarr", "asyncio", "pydevd", "daq_storage_s3_server")
SHM_DIR = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
SHM_TEST_PREFIX = f"daq_storage_test_{os.getpid()}_"


def _foreign_threads(before: set[int]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.ident not in before
        and t.is_alive()
        and not t.name.startswith(_LONG_LIVED_THREAD_PREFIXES)
    ]


@pytest.fixture(autouse=True)
def _no_leaked_threads_or_processes() -> Iterator[None]:
    """Fail a test that leaves threads or child processes running."""
    before = {t.ident for t in threading.enumerate() if t.ident is not None}
    yield
    deadline = time.monotonic() + 2.0
    while (
        _foreign_threads(before) or multiprocessing.active_children()
    ) and time.monotonic() < deadline:
        time.sleep(0.02)
    threads = _foreign_threads(before)
    children = multiprocessing.active_children()
    for child in children:
        child.kill()
        child.join(5)
    assert not threads, f"test left threads running: {[t.name for t in threads]}"
    assert not children, f"test left child processes running: {children}"


@pytest.fixture(autouse=True)
def _no_leaked_shm_files() -> Iterator[None]:
    """Fail a test that leaves one of its shared-memory files behind."""
    yield
    if SHM_DIR is None:
        return
    left = sorted(SHM_DIR.glob(f"{SHM_TEST_PREFIX}*"))
    for path in left:
        path.unlink(missing_ok=True)
    assert not left, f"test left shared-memory files: {[p.name for p in left]}"


@pytest.fixture
def shm_path() -> Path:
    """A fresh path for a ring file in /dev/shm (the temp dir where there is none).

    The test must unlink it; the leak guard fails the test otherwise.
    """
    base = SHM_DIR if SHM_DIR is not None else Path(os.environ.get("TMPDIR", "/tmp"))
    return base / f"{SHM_TEST_PREFIX}{uuid.uuid4().hex[:12]}"


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount real tmpfs filesystems of a given size (``"16m"``); skipped where mounting
    is not permitted (the suite runs as root in CI). Unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root")
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(point)]
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No DAQ_STORAGE_* variables from the developer's shell leak into the test."""
    for name in list(os.environ):
        if name.startswith("DAQ_STORAGE_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One S3-compatible server (moto) on loopback for the session; each test takes a
    bucket of its own (``s3_bucket``). A test that kills its server starts its own with
    :func:`daq_storage.testing.s3_server`."""
    with start_s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    return s3_server.create_bucket()
