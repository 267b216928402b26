"""The C reader in clients/c, built with the system compiler, reads what Python wrote."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from daq_storage.errors import RingBusy
from daq_storage.ring import RingBuffer
from daq_storage.sim import SimulatedCamera, SimulatedPowerMeter
from tests.ring.conftest import payload_for

SOURCE = Path(__file__).resolve().parents[2] / "clients" / "c" / "daq_ring_reader.c"
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler on this machine")


def fnv1a(data: bytes) -> int:
    h = 1469598103934665603
    for byte in data:
        h = ((h ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


@pytest.fixture(scope="module")
def c_reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("c") / "daq_ring_reader"
    assert CC is not None
    subprocess.run(
        [CC, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(SOURCE)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return binary


def parse(output: str) -> list[dict[str, str]]:
    return [dict(re.findall(r"(\w+)=(\S+)", line)) for line in output.splitlines()]


def test_c_reader_reads_frames_scalars_and_arrow(c_reader: Path, shm_path: Path):
    camera = SimulatedCamera(seed=0, start_ns=1_000)
    frames = camera.frames(3)
    floats = np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 6)
    raw = [payload_for(i, size) for i, size in enumerate([0, 1, 63, 64, 1000])]
    batch = SimulatedPowerMeter(seed=0, start_ns=0).read_batch(100)
    with RingBuffer.create(shm_path, capacity_bytes=4 << 20) as ring:
        for frame, number in zip(frames.frames, frames.frame_numbers, strict=True):
            ring.write_frame(frame, stream="camera_1", frame_number=int(number), timestamp_ns=7)
        ring.write_frame(floats, stream="spectrum", metadata={"unit": "V"})
        ring.write_many(raw, stream="power_meter_01", timestamps_ns=[10, 11, 12, 13, 14])
        ring.write_batch(batch, stream="table")
    result = subprocess.run([str(c_reader), str(shm_path)], capture_output=True, text=True,
                            timeout=60, check=True)  # fmt: skip
    shm_path.unlink()
    lines = parse(result.stdout)
    assert lines[-1] == {"records": "10", "lost": "0"}
    records = lines[:-1]
    assert [int(r["seq"]) for r in records] == list(range(10))
    for i, frame in enumerate(frames.frames):
        line = records[i]
        assert (line["stream"], line["kind"], line["ts"]) == ("camera_1", "frame", "7")
        assert (line["dtype"], line["shape"]) == ("<u2", "480x640")
        assert int(line["frame_number"]) == i
        assert int(line["sum"]) == int(frame.astype(np.uint64).sum())
    spectrum = records[3]
    assert (spectrum["dtype"], spectrum["shape"]) == ("<f4", "4x6")
    assert float(spectrum["sum"]) == pytest.approx(float(floats.sum()), abs=1e-4)
    for line, payload, stamp in zip(records[4:9], raw, range(10, 15), strict=True):
        assert (line["stream"], line["kind"], int(line["ts"])) == ("power_meter_01", "raw", stamp)
        assert int(line["len"]) == len(payload)
        assert int(line["fnv"], 16) == fnv1a(payload)
    arrow = records[9]
    assert (arrow["stream"], arrow["kind"]) == ("table", "arrow")
    assert int(arrow["len"]) == batch.serialize().size
    assert int(arrow["fnv"], 16) == fnv1a(batch.serialize().to_pybytes())
    assert isinstance(batch, pa.RecordBatch)


def test_c_reader_starts_at_the_oldest_record_after_laps(c_reader: Path, shm_path: Path):
    with RingBuffer.create(shm_path, capacity_bytes=64 * 1024) as ring:
        for seq in range(2000):
            ring.write(payload_for(seq, 100 + seq % 300), stream="s")
    result = subprocess.run([str(c_reader), str(shm_path)], capture_output=True, text=True,
                            timeout=60, check=True)  # fmt: skip
    shm_path.unlink()
    lines = parse(result.stdout)
    seqs = [int(r["seq"]) for r in lines[:-1]]
    assert seqs == list(range(seqs[0], 2000))
    assert seqs[0] > 0
    for line in lines[:-1]:
        seq = int(line["seq"])
        assert int(line["fnv"], 16) == fnv1a(payload_for(seq, 100 + seq % 300))


def test_c_reader_refuses_corrupt_files(c_reader: Path, tmp_path: Path):
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"NOTARING" + bytes(200))
    result = subprocess.run([str(c_reader), str(bogus)], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2
    assert "bad magic" in result.stderr


def test_c_reader_holds_the_anonymous_reader_lock_while_attached(c_reader: Path, shm_path: Path):
    with RingBuffer.create(shm_path, capacity_bytes=64 * 1024) as ring:
        ring.write(b"held", stream="s")
    command = [str(c_reader), "--wait", str(shm_path)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as reader:
        assert reader.stdin is not None
        assert reader.stdout is not None
        try:
            line = reader.stdout.readline()
            while line and not line.startswith("records="):
                line = reader.stdout.readline()
            # Attached, done reading, now waiting for the end of its input.
            assert line.split() == ["records=1", "lost=0"]
            with pytest.raises(RingBusy, match="an anonymous reader"):
                RingBuffer.create(shm_path, capacity_bytes=64 * 1024, exist_ok=True)
        finally:
            reader.stdin.close()  # the reader detaches and exits
        assert reader.wait(60) == 0
    RingBuffer.create(shm_path, capacity_bytes=64 * 1024, exist_ok=True).close()
    shm_path.unlink()


def test_c_reader_refuses_a_fifo_at_once(c_reader: Path, tmp_path: Path):
    fifo = tmp_path / "ring"
    os.mkfifo(fifo)
    for flags in ([], ["--trust-foreign"]):
        result = subprocess.run([str(c_reader), *flags, str(fifo)], capture_output=True,
                                text=True, timeout=60, check=False)  # fmt: skip
        assert result.returncode == 2
        assert "not a regular file" in result.stderr


def test_c_reader_reads_a_ring_others_may_write_only_when_told(c_reader: Path, shm_path: Path):
    with RingBuffer.create(shm_path, capacity_bytes=64 * 1024, mode=0o666) as ring:
        ring.write(b"shared", stream="s")
    refused = subprocess.run([str(c_reader), str(shm_path)], capture_output=True, text=True,
                             timeout=60, check=False)  # fmt: skip
    assert refused.returncode == 2
    assert "writable by group or others" in refused.stderr
    link = shm_path.with_name(shm_path.name + ".link")
    link.symlink_to(shm_path)
    try:
        refused = subprocess.run([str(c_reader), str(link)], capture_output=True, text=True,
                                 timeout=60, check=False)  # fmt: skip
        assert "symbolic link" in refused.stderr
        read = subprocess.run([str(c_reader), "--trust-foreign", str(link)], capture_output=True,
                              text=True, timeout=60, check=True)  # fmt: skip
    finally:
        link.unlink()
        shm_path.unlink()
    assert parse(read.stdout)[-1] == {"records": "1", "lost": "0"}
