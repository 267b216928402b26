"""``daq-storage inspect`` and ``daq-storage convert`` as a user runs them: real processes,
their output, exit statuses and error lines (a traceback only with ``--debug``), the
progress bar on a terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from daq_storage.testing import S3Server
from tests.tools.conftest import cli, write_lossy_versions


@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_help_shows_examples(command: str):
    done = cli(command, "--help")
    assert done.returncode == 0
    assert "Examples:" in done.stdout
    assert f"daq-storage {command} " in done.stdout.split("Examples:")[1]


def test_inspect_prints_the_tree(every_format: dict[str, Path]):
    done = cli("inspect", str(every_format["hdf5"]))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("run.h5  hdf5 run 'run' · 3 streams · ")
    assert lines[0].endswith("no records lost")
    assert any("loss ledger  no records lost" in line for line in lines)
    assert any("camera  frames · 12 x 16x20 uint16" in line for line in lines)
    assert any(
        "frames  12x16x20 · uint16 · chunks " in line and "gzip(4)" in line for line in lines
    )
    assert any("experiment = readback" in line for line in lines)


def test_inspect_json_parses_and_holds_the_facts(every_format: dict[str, Path]):
    done = cli("inspect", str(every_format["zarr"]), "--json")
    assert done.returncode == 0, done.stderr
    tree = json.loads(done.stdout)
    assert tree["facts"]["format"] == "zarr"
    run = tree["children"][0]
    streams = {s["name"]: s["facts"] for s in run["children"][1]["children"]}
    assert streams["camera"]["frame_shape"] == [16, 20]
    assert streams["power"]["rows"] == 2400
    files = tree["children"][1]["children"][0]
    camera = next(c for c in files["children"] if c["name"] == "camera")
    frames = next(c for c in camera["children"] if c["name"] == "frames")
    assert frames["facts"]["dimension_names"] == ["frame", "y", "x"]


def test_inspect_says_prominently_when_records_were_lost(tmp_path: Path):
    write_lossy_versions(tmp_path, "hdf5")
    done = cli("inspect", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "13 RECORDS LOST in 2 gaps" in done.stdout
    assert "records 5-7  3 lost between 2023-11-14 22:13:20.000000004 UTC and" in done.stdout
    assert (
        done.stdout.rstrip()
        .splitlines()[-1]
        .endswith("13 records were lost while recording (see its loss ledger)")
    )


def test_inspect_errors_are_one_line_unless_debug(tmp_path: Path):
    done = cli("inspect", str(tmp_path / "missing.h5"))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: RunNotFound: nothing to inspect at {tmp_path / 'missing.h5'}: it does not exist"
    ]
    debug = cli("--debug", "inspect", str(tmp_path / "missing.h5"))
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr


def test_inspect_of_a_damaged_file_shows_the_rest_and_exits_3(
    tmp_path: Path, every_format: dict[str, Path]
):
    data = (every_format["parquet"] / "power.parquet").read_bytes()
    (tmp_path / "power.parquet").write_bytes(data[:200])
    done = cli("inspect", str(tmp_path / "power.parquet"))
    assert done.returncode == 3
    assert "power.parquet" in done.stdout
    assert done.stderr.startswith("error: power.parquet: ")
    assert "Traceback" not in done.stderr


def test_convert_prints_what_it_copied(tmp_path: Path, every_format: dict[str, Path]):
    out = tmp_path / "out_csv"
    done = cli(
        "convert", str(every_format["hdf5"]), str(out), "-f", "csv", "--streams", "power,rich"
    )
    assert done.returncode == 0, done.stderr
    assert "│ power  │ table │         2,400 │" in done.stdout
    assert f"-> {out} (csv): 2 streams, 2,412 rows, 0 frames in " in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "power.csv", "rich.csv"]


def test_convert_options_reach_the_writer(tmp_path: Path, every_format: dict[str, Path]):
    out = tmp_path / "out.h5"
    done = cli(
        "convert",
        str(every_format["parquet"]),
        str(out),
        "--streams",
        "camera",
        "--option",
        "compression=lzf",
        "-o",
        "frames_per_chunk=4",
    )
    assert done.returncode == 0, done.stderr
    with h5py.File(out, "r") as f:
        assert f["camera/frames"].compression == "lzf"
        assert f["camera/frames"].chunks[0] == 4
    bad = cli("convert", str(every_format["parquet"]), str(tmp_path / "b.h5"), "-o", "nope")
    assert bad.returncode == 2
    assert bad.stderr == "error: ConfigError: --option takes KEY=VALUE, got 'nope'\n"


def test_convert_refusals_are_one_line_and_leave_nothing(
    tmp_path: Path, every_format: dict[str, Path]
):
    done = cli("convert", str(every_format["hdf5"]), str(tmp_path / "out"), "--format", "csv")
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("error: UnsupportedData: cannot convert stream 'camera' ")
    assert "csv holds tables only" in done.stderr
    assert list(tmp_path.iterdir()) == []


def _in_terminal(*args: str, timeout: float = 60) -> tuple[int, str]:
    """``daq-storage ARGS`` with a pseudo-terminal as its stdout and stderr: what a
    user at a terminal sees (control sequences included)."""
    exe = Path(sys.executable).with_name("daq-storage")
    controller, terminal = pty.openpty()
    environ = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    process = subprocess.Popen(
        [str(exe), *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env=environ,
        close_fds=True,
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal closed: the process has ended
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    return code, output.decode("utf-8", "replace")


def test_convert_shows_a_progress_bar_on_a_terminal(tmp_path: Path):
    source = tmp_path / "frames.h5"
    from daq_storage.writers import open_writer

    with open_writer("hdf5", source, compression="none") as writer:
        writer.write_frames("camera", np.zeros((200, 256, 256), np.uint16))
    # --progress-after 0: the bar from the first chunk (by default after a second).
    code, seen = _in_terminal(
        "convert", str(source), str(tmp_path / "out.zarr"), "--progress-after", "0"
    )
    assert code == 0, seen
    assert "converting camera" in seen
    assert "━" in seen  # the bar
    assert "12 frames" not in seen
    code, quiet = _in_terminal(
        "convert", str(source), str(tmp_path / "q.zarr"), "--progress-after", "0", "--quiet"
    )
    assert code == 0, quiet
    assert "converting" not in quiet


# --- docs/tools.md runs as written ----------------------------------------------------------
DOCS = Path(__file__).resolve().parents[2] / "docs" / "tools.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _shows(line: str, output: str) -> bool:
    """Whether ``output`` has a line showing ``line``: its pieces between ``…`` in order."""
    pieces = [piece.strip() for piece in line.split("…") if piece.strip()]
    pattern = re.compile(".*".join(re.escape(piece) for piece in pieces))
    return any(pattern.search(out) for out in output.splitlines())


def _commands(block: str) -> list[tuple[str, list[str]]]:
    found = []
    for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
        command, *shown = chunk.splitlines()
        found.append((command, [line for line in shown if line.strip()]))
    return found


def test_docs_blocks_run_as_written(tmp_path: Path, s3_server: S3Server):
    """docs/tools.md in order in one scratch directory: each python block in a fresh
    interpreter (it must check its results), each ``$`` command in bash; the lines shown
    under a command must appear in its output, on stderr with exit status 2 where they
    are an ``error:`` line, else on stdout with status 0. Bucket ``lab-data`` is on the
    session's S3 server, named by the ``AWS_*`` variables."""
    s3_server.create_bucket("lab-data")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DAQ_STORAGE_", "AWS_"))}
    environ.update(s3_server.environ())
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
    blocks = _BLOCK.findall(DOCS.read_text())
    assert [lang for lang, _ in blocks].count("python") >= 3
    for lang, body in blocks:
        if lang == "python":
            assert "assert " in body, f"a docs block checks nothing:\n{body}"
            done = subprocess.run(
                [sys.executable, "-c", body],
                cwd=tmp_path,
                env=environ,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, f"{body}\n{done.stderr}"
            continue
        assert lang == "console"
        for command, shown in _commands(body):
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path,
                env=environ,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            failing = any(line.startswith("error:") for line in shown)
            assert done.returncode == (2 if failing else 0), (command, done.stderr)
            output = done.stderr if failing else done.stdout
            for line in shown:
                assert _shows(line, output), f"{command!r} did not print {line!r}:\n{output}"


def test_inspect_says_what_it_reads_on_a_terminal(every_format: dict[str, Path]):
    folder = every_format["hdf5"].parent  # every format: six outputs
    # --progress-after 0: the line from the first file (by default after a second).
    code, seen = _in_terminal("inspect", str(folder), "--progress-after", "0")
    assert code == 0, seen
    assert "inspecting run" in seen
    assert "run.h5  hdf5 run 'run'" in seen


def test_an_interrupted_conversion_leaves_nothing(tmp_path: Path):
    source = tmp_path / "frames.h5"
    from daq_storage.writers import open_writer

    noise = np.random.default_rng(0).integers(0, 4096, (600, 256, 256), np.uint16)
    with open_writer("hdf5", source, compression="none") as writer:
        writer.write_frames("camera", noise)  # gzip takes a while over noise
    exe = Path(sys.executable).with_name("daq-storage")
    process = subprocess.Popen(
        [str(exe), "convert", str(source), str(tmp_path / "out.h5")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    try:  # until the conversion has written frames into its hidden output
        while not any(p.stat().st_size > 1 << 20 for p in tmp_path.glob(".out.h5.*.tmp/out.h5")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the conversion never started writing"
            time.sleep(0.01)  # polling the directory for the condition, with a deadline
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames.h5"]
