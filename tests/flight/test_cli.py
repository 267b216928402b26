"""``daq-storage serve`` as a process: serves until SIGINT, then exits 0; errors are one
line and status 2."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from daq_storage.flight import connect
from daq_storage.ring import RingBuffer


def _serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "daq_storage.cli", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def test_serve_until_sigint(shm_path: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abc\n")
    with RingBuffer.create(shm_path, capacity_bytes=1 << 20) as writer:
        writer.write_frame(np.ones((2, 3), np.int32), stream="camera")
        process = _serve("--ring", str(shm_path), "--port", "0", "--token-file", str(token_file))
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # printed once it serves
            assert line.startswith(f"serving ring {shm_path} (read-only) at grpc://127.0.0.1:")
            with connect(line.split()[-1], token="abc") as client:
                assert list(client.streams()) == ["camera"]
                with client.subscribe("camera") as subscription:
                    batch = next(iter(subscription))
                    assert batch.frames().tolist() == [[[1, 1, 1], [1, 1, 1]]]
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()
            process.wait()
        assert (process.returncode, out.strip(), err) == (0, "stopped", "")
    shm_path.unlink()


def test_serve_a_missing_ring_is_one_line_and_status_2(shm_path: Path) -> None:
    process = _serve("--ring", str(shm_path), "--port", "0")
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert err.startswith("error: RingNotFound: ")
    assert err.count("\n") == 1
