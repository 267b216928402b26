"""Zarr: a reader in another process that opens the store through its consolidated metadata
while the writer flushes sees every stream as of one flush, every time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa

from daq_storage.writers import ZarrWriter

#: Announces each open before it starts ("opening"), says what it saw ("ok <rows> <frames>"
#: when every variable of a stream has one length and holds what was written), then waits
#: for the writer's "next".
_READER = """
import sys, warnings
import numpy as np, xarray as xr, zarr

warnings.simplefilter("error")
path, opens, consolidated = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "consolidated"
for _ in range(opens):
    print("opening", flush=True)
    try:
        options = {"consolidated": None if consolidated else False, "decode_times": False,
                   "chunks": None}
        tab = xr.open_zarr(path, group="tab", **options).load()
        seq = tab["seq"].values
        assert np.array_equal(seq, np.arange(len(seq))), "seq"
        assert np.array_equal(tab["value"].values, seq / 8), "value"
        assert list(tab["label"].values) == [f"r{x}" for x in seq], "label"
        cam = xr.open_zarr(path, group="cam", **options).load()
        numbers = cam["frame_number"].values
        assert np.array_equal(numbers, np.arange(len(numbers))), "frame_number"
        assert np.array_equal(cam["timestamp_ns"].values, numbers * 10), "timestamp_ns"
        assert (cam["frames"].values == (numbers % 251)[:, None, None]).all(), "frames"
        if consolidated:  # the root's consolidated metadata: every stream at one flush
            root = zarr.open_group(path, mode="r", use_consolidated=True)
            lengths = {name: array.shape[0] for name, array in root["tab"].arrays()}
            assert len(set(lengths.values())) == 1, lengths
        print("ok", len(seq), len(numbers), flush=True)
    except Exception as exc:
        print("bad", type(exc).__name__, str(exc)[:200].replace(chr(10), " "), flush=True)
    sys.stdin.readline()
"""

_ROWS, _FRAMES, _FLUSHES = 10, 2, 20


def _write(writer: ZarrWriter, step: int) -> None:
    seq = np.arange(step * _ROWS, (step + 1) * _ROWS)
    batch = {"seq": seq, "value": seq / 8, "label": pa.array([f"r{x}" for x in seq])}
    writer.write_batch("tab", pa.record_batch(batch))
    ids = np.arange(step * _FRAMES, (step + 1) * _FRAMES, dtype=np.uint64)
    frames = np.broadcast_to((ids % 251).astype(np.uint16)[:, None, None], (_FRAMES, 6, 5))
    writer.write_frames("cam", np.ascontiguousarray(frames), timestamps_ns=ids * 10,
                        frame_numbers=ids)  # fmt: skip


def _live_opens(path: Path, how: str) -> list[str]:
    """Flush each time the reader starts an open (it announces it first: the flush runs
    while it reads); return what each open saw. Open ``s`` starts after flush ``s - 1``
    returned and before flush ``s`` starts."""
    environ = {**os.environ, "PYTHONUNBUFFERED": "1"}
    seen: list[str] = []
    with ZarrWriter(path, shard_frames=4) as writer:
        _write(writer, 0)
        writer.flush()
        reader = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_READER), str(path), str(_FLUSHES), how],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=environ,
        )  # fmt: skip
        try:
            assert reader.stdin is not None
            assert reader.stdout is not None
            for step in range(1, _FLUSHES + 1):
                assert reader.stdout.readline() == "opening\n"
                _write(writer, step)
                writer.flush()
                seen.append(reader.stdout.readline().strip())
                reader.stdin.write("next\n")
                reader.stdin.flush()
        finally:
            _, errors = reader.communicate(timeout=120)
        assert reader.returncode == 0, errors
    return seen


def test_a_live_consolidated_reader_sees_one_flush_at_every_open(tmp_path: Path):
    seen = _live_opens(tmp_path / "live.zarr", "consolidated")
    assert [line for line in seen if not line.startswith("ok ")] == []
    for step, line in enumerate(seen, start=1):  # flush step - 1 or step: whole flushes
        _, rows, frames = line.split()
        assert int(rows) in (step * _ROWS, (step + 1) * _ROWS), (step, line)
        assert int(frames) in (step * _FRAMES, (step + 1) * _FRAMES), (step, line)
