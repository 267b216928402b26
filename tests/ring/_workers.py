"""Process entry points for the multi-process ring tests (importable by spawned children)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from daq_storage.ring import RingBuffer, RingReader


def record_size(seq: int) -> int:
    """Sizes derived from the sequence number: mostly small, sometimes large."""
    if seq % 997 == 0:
        return 20_000 + seq % 5_000
    return (seq * 2_654_435_761 >> 7) % 241


def record_payload(seq: int) -> bytes:
    size = record_size(seq)
    return (seq.to_bytes(8, "little") * (size // 8 + 1))[:size]


def write_records(path: str, total: int, batch: int) -> None:
    """The stress writer: ``total`` records of sizes derived from their seq, in batches."""
    with RingBuffer.open(path) as ring:
        seq = 0
        while seq < total:
            count = min(batch, total - seq)
            ring.write_many([record_payload(s) for s in range(seq, seq + count)], stream="s")
            seq += count


def read_records(path: str, total: int, result_file: str, consumer: str | None = None,
                 pause_every: int = 0, pause_s: float = 0.0) -> None:  # fmt: skip
    """A verifying reader: checks every record's payload, reports its accounting."""
    corrupt = 0
    received = 0  # counted here, independently of the reader's own accounting
    last_seq = -1
    with RingReader.open(path, consumer=consumer) as reader:
        deadline = time.monotonic() + 600
        while last_seq < total - 1 and time.monotonic() < deadline:
            for record in reader.read_many(4096, timeout=0.05):
                received += 1
                if record.seq <= last_seq or record.data != record_payload(record.seq):
                    corrupt += 1
                last_seq = record.seq
                if pause_every and record.seq % pause_every == 0:
                    time.sleep(pause_s)
        result: dict[str, Any] = {
            "received": received,
            "delivered": reader.delivered,
            "lost": reader.lost,
            "retries": reader.retries,
            "laps": reader.laps,
            "corrupt": corrupt,
            "last_seq": last_seq,
        }
    Path(result_file).write_text(json.dumps(result))


def hold_consumer_slot(path: str, ready_file: str) -> None:
    """Register as a consumer, read a little, then stall forever (until killed)."""
    with RingReader.open(path, consumer="stalled") as reader:
        reader.read_next(timeout=1.0)
        Path(ready_file).write_text(str(os.getpid()))
        while True:
            time.sleep(1)


def write_frames_forever(path: str, ready_file: str) -> None:
    """A camera process that writes frames until it is killed."""
    with RingBuffer.open(path) as ring:
        frame = np.zeros((480, 640), np.uint16)
        number = 0
        while True:
            frame[...] = number % 65_000
            ring.write_frame(frame, stream="camera_1", frame_number=number)
            if number == 50:
                Path(ready_file).write_text("ready")
            number += 1
