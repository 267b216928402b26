"""A run whose stop never comes: the process writing it is killed with SIGKILL, and
every format's files are readable up to the last flush (here ``writer.flush()``; the
rows handed over after it, unflushed, may or may not be there)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from daq_storage.read import open_run

FORMATS = ("hdf5", "arrow", "parquet", "csv", "zarr")

CHILD = textwrap.dedent(
    """
    import sys
    import event_model
    from daq_storage.documents import DocumentWriter

    writer = DocumentWriter(sys.argv[1], FORMATS, batch_size=10, flush_interval=3600)
    run = event_model.compose_run(metadata={"plan_name": "killed", "scan_id": 1})
    keys = {"x": {"dtype": "number", "shape": [], "source": "sim:x"}}
    descriptor = run.compose_descriptor(name="primary", data_keys=keys)
    writer("start", run.start_doc)
    writer("descriptor", descriptor.descriptor_doc)
    for i in range(35):  # 30 rows flushed; then 5 more, a batch of them handed over
        if i == 30:
            writer.flush()
        writer("event", descriptor.compose_event(data={"x": float(i)}, timestamps={"x": 1.0}))
    print("written", flush=True)
    sys.stdin.readline()  # held open until killed
    """
).replace("FORMATS", repr(FORMATS))


def test_a_killed_run_is_readable_up_to_the_last_flush(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "written"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        if child.stdin is not None:
            child.stdin.close()
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    outputs = sorted(tmp_path.iterdir())
    assert len(outputs) == len(FORMATS)
    for path in outputs:
        with open_run(path) as run:
            values = run.polars("primary")["x"].to_list()
            assert values[:30] == [float(i) for i in range(30)], path
            assert len(values) in (30, 35), path  # never a part of a batch
            assert run.metadata["plan_name"] == "killed"
            assert "exit_status" not in run.metadata  # no stop came
