"""Reading a run while another process writes it: the reader sees what the writer has
made visible (flushed), never a torn row or frame. The writer is a real process that
writes, flushes, tells the test how many rows (frames) a reader should see, and waits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daq_storage.read import open_run
from daq_storage.testing import child_environment
from tests.read.helpers import TARGETS

#: (format, writer options, whether the stream holds frames)
CASES = [("hdf5", {}, False), ("hdf5", {"swmr": True}, False), ("hdf5", {"swmr": True}, True),
         ("arrow", {}, False), ("parquet", {}, False), ("csv", {}, False), ("zarr", {}, False),
         ("zarr", {}, True), ("tiff", {}, True)]  # fmt: skip
ROWS = 100

_CHILD = """
import sys
import numpy as np
import pyarrow as pa
from daq_storage.writers import open_writer

name, path, options, frames = sys.argv[1], sys.argv[2], eval(sys.argv[3]), sys.argv[4] == "1"
with open_writer(name, path, **options) as writer:
    for step in range(4):
        values = np.arange(step * {rows}, (step + 1) * {rows}, dtype=np.float64)
        if frames:
            writer.write_frames("s", np.repeat(values, 12).reshape(-1, 3, 4).astype(np.float32))
        else:
            writer.write_batch("s", pa.record_batch({{"v": values}}))
        if step % 2 == 0:
            writer.flush()  # steps 1 and 3 stay unflushed when the reader looks
        print(writer.visible("s"), flush=True)
        sys.stdin.readline()
print("closed", flush=True)
"""


def _values(run: Any, frames: bool) -> list[float]:
    if frames:
        return np.asarray(run.frames("s"))[:, 0, 0].tolist()  # type: ignore[no-any-return]
    return run.table("s").column("v").to_pylist()  # type: ignore[no-any-return]


@pytest.mark.parametrize(("name", "options", "frames"), CASES)
def test_a_live_run_shows_what_the_writer_made_visible(
    tmp_path: Path, name: str, options: dict[str, Any], frames: bool
):
    path = tmp_path / TARGETS[name]
    script = textwrap.dedent(_CHILD.format(rows=ROWS))
    child = subprocess.Popen(
        [sys.executable, "-c", script, name, str(path), repr(options), "1" if frames else "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_environment(),
    )  # fmt: skip
    assert child.stdin is not None
    assert child.stdout is not None
    seen = []
    try:
        for _ in range(4):
            line = child.stdout.readline()
            assert line, "the writer ended early"
            visible = int(line)
            with open_run(path, format=name) as run:
                assert run.streams["s"].rows == visible
                got = _values(run, frames)
            assert got == list(range(visible))  # whole rows, in order, nothing torn
            seen.append(visible)
            child.stdin.write("\n")
            child.stdin.flush()
        assert child.stdout.readline() == "closed\n"
    finally:
        child.stdin.close()
        child.wait(60)
        child.stdout.close()
    assert child.returncode == 0
    assert seen[0] == ROWS
    assert seen == sorted(seen)
    with open_run(path) as run:
        assert _values(run, frames) == list(range(4 * ROWS))


_BUSY_CHILD = """
import sys
import numpy as np
import pyarrow as pa
from daq_storage.writers import open_writer

name, path, frames = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
with open_writer(name, path) as writer:
    for step in range(400):
        values = np.arange(step * 50, (step + 1) * 50, dtype=np.float64)
        if frames:
            writer.write_frames("s", np.repeat(values, 12).reshape(-1, 3, 4).astype(np.float32))
        else:
            writer.write_batch("s", pa.record_batch({"v": values}))
        writer.flush()
        if step == 0:
            print("started", flush=True)
"""


@pytest.mark.stress
@pytest.mark.parametrize(("name", "frames"), [(c[0], c[2]) for c in CASES if not c[1]])
def test_reads_during_writes_never_see_a_torn_row(tmp_path: Path, name: str, frames: bool):
    """The writer writes and flushes without waiting; every read meanwhile holds whole
    rows (frames) 0..n-1 in order."""
    path = tmp_path / TARGETS[name]
    child = subprocess.Popen(
        [sys.executable, "-c", _BUSY_CHILD, name, str(path), "1" if frames else "0"],
        stdout=subprocess.PIPE, text=True, env=child_environment(),
    )  # fmt: skip
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == "started\n"
        reads = 0
        while child.poll() is None:
            with open_run(path, format=name) as run:
                got = _values(run, frames)
            assert got == list(range(len(got)))
            reads += 1
    finally:
        child.wait(120)
        child.stdout.close()
    assert child.returncode == 0
    assert reads > 0
