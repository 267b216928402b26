"""``check_files`` / ``daq-storage repair``: what killed writers left, built exactly (by
real SIGKILLs at chosen points, or by cutting a file as a kill does), repaired without
cutting a complete record, read back with the readers a scientist uses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from daq_storage.errors import StorageIOError
from daq_storage.repair import FileCheck, check_files
from daq_storage.writers import (
    ArrowWriter,
    CsvWriter,
    Hdf5Writer,
    ParquetWriter,
    repair_arrow,
    repair_csv,
    repair_hdf5,
    repair_parquet,
)


def run_killed(script: str) -> None:
    """Run ``script`` in a child process that SIGKILLs itself where the script says."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr


def verdicts(path: Path) -> dict[str, FileCheck]:
    return {check.path.name: check for check in check_files(path)}


def batches(count: int, rows: int = 1000) -> list[pa.RecordBatch]:
    return [pa.record_batch({"x": np.arange(i * rows, (i + 1) * rows)}) for i in range(count)]


def read_arrow(path: Path) -> list[int]:
    """Column ``x`` with the documented readers, which must agree."""
    table = pa.ipc.open_stream(path).read_all()
    assert pl.read_ipc_stream(path)["x"].to_list() == table.column("x").to_pylist()
    return list(table.column("x").to_pylist())


# ---------------------------------------------------------------------- Arrow IPC (F10)
def test_a_torn_arrow_tail_is_cut_back_to_the_last_complete_batch(tmp_path: Path):
    """The finding's state: a file cut mid-batch, as a kill inside another writer's
    write leaves it. read_all() and polars fail on the whole file until repair."""
    with ArrowWriter(tmp_path / "run") as writer:
        for batch in batches(3):
            writer.write_batch("s", batch)
    path = tmp_path / "run" / "s.arrows"
    os.truncate(path, path.stat().st_size - 100)
    with pytest.raises((pa.ArrowInvalid, OSError)):
        pa.ipc.open_stream(path).read_all()
    check = verdicts(tmp_path / "run")["s.arrows"]
    assert check.status == "repaired", check
    assert "cut back to its last complete message" in check.detail
    assert "2,000 rows" in check.detail
    assert read_arrow(path) == list(range(2000))
    assert verdicts(tmp_path / "run")["s.arrows"].status == "ok"  # nothing left to do


def test_bytes_after_the_end_marker_are_dropped_and_were_never_read(tmp_path: Path):
    """A kill while the writer put a batch behind the end marker: every reader already
    reads the complete batches; repair only drops the unpublished bytes."""
    with ArrowWriter(tmp_path / "run") as writer:
        for batch in batches(2):
            writer.write_batch("s", batch)
    path = tmp_path / "run" / "s.arrows"
    size = path.stat().st_size
    with path.open("ab") as file:
        file.write(b"\xff\xff\xff\xff" + bytes(5000))  # half a message, never published
    assert read_arrow(path) == list(range(2000))
    assert repair_arrow(path) is not None
    assert path.stat().st_size == size
    assert repair_arrow(path) is None
    assert read_arrow(path) == list(range(2000))


def test_a_killed_file_format_writer_gets_its_footer(tmp_path: Path):
    """The file format is readable only through its footer, written at close: repair
    rewrites a killed writer's file with one, keeping every complete batch."""
    target = tmp_path / "run"
    run_killed(
        f"""
        import os, signal
        import numpy as np, pyarrow as pa
        from daq_storage.writers import ArrowWriter
        writer = ArrowWriter({str(target)!r}, ipc_format="file")
        for i in range(3):
            writer.write_batch("s", pa.record_batch({{"x": np.arange(i * 1000, (i + 1) * 1000)}}))
        writer.set_metadata("late", 1)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    path = target / "s.arrow"
    with pytest.raises(pa.ArrowInvalid):
        pa.ipc.open_file(path)
    check = verdicts(target)["s.arrow"]
    assert check.status == "repaired", check
    with pa.ipc.open_file(path) as reader:
        assert reader.read_all().column("x").to_pylist() == list(range(3000))
        customs = [reader.get_batch_with_custom_metadata(i).custom_metadata
                   for i in range(reader.num_record_batches)]  # fmt: skip
    assert customs[-1] == {b"late": b"1"}
    assert pl.read_ipc(path)["x"].to_list() == list(range(3000))


# ---------------------------------------------------------------------- CSV (F19)
def test_a_torn_csv_line_is_cut_off(tmp_path: Path):
    """The finding's state: a kill inside a row leaves ``553262,7``, which polars reads
    as a row with a wrong value. Repair cuts it; a newline inside quoted text is not
    taken for the end of a row."""
    with CsvWriter(tmp_path / "run") as writer:
        writer.write_batch("s", pa.record_batch({"x": [1, 2], "v": [0.5, 1.5], "t": ["a", "b"]}))
        writer.write_batch("q", pa.record_batch({"x": [1], "t": ["two\nlines"]}))
    torn = tmp_path / "run" / "s.csv"
    with torn.open("ab") as file:
        file.write(b"553262,7")
    assert pl.read_csv(torn).height == 3  # the wrong row a reader takes for data
    quoted = tmp_path / "run" / "q.csv"
    with quoted.open("ab") as file:
        file.write(b'2,"three\nlines but torn')
    found = verdicts(tmp_path / "run")
    assert (found["s.csv"].status, found["q.csv"].status) == ("repaired", "repaired")
    assert "CSV, 2 rows" in found["s.csv"].detail
    assert pl.read_csv(torn)["x"].to_list() == [1, 2]
    assert pacsv.read_csv(torn).column("v").to_pylist() == [0.5, 1.5]
    assert pl.read_csv(quoted)["t"].to_list() == ["two\nlines"]
    assert repair_csv(torn) is None


def test_empty_files_a_kill_left_at_creation_are_removed(tmp_path: Path):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("s.csv", "s.arrows"):
        (folder / name).touch()
    found = verdicts(folder)
    assert {name: check.status for name, check in found.items()} == {
        "s.csv": "repaired",
        "s.arrows": "repaired",
    }
    assert list(folder.iterdir()) == []


def test_a_killed_conversion_s_staging_directory_is_removed(tmp_path: Path):
    """``daq-storage convert`` builds its output in a hidden ``.<name>.<pid>.<hex>.tmp/``
    beside the target: one a killed process left (its pid gone) is removed whole."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    staging = tmp_path / f".run.zarr.{int(dead.stdout)}.{os.urandom(8).hex()}.tmp"
    (staging / "power").mkdir(parents=True)
    (staging / "power" / "zarr.json").write_text("{}")
    found = check_files(tmp_path)
    assert [(c.path, c.status) for c in found] == [(staging, "repaired")], found
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- Parquet (F11)
def test_a_record_one_row_group_behind_never_cuts_a_complete_file(tmp_path: Path):
    """The finding's state (a): killed between a row group's write and its recovery
    record. The file is complete with 2,000 rows; repair keeps every one."""
    target = tmp_path / "d"
    run_killed(
        f"""
        import os, shutil, signal
        import pyarrow as pa
        from daq_storage.writers import open_writer
        w = open_writer("parquet", {str(target)!r})
        w.write_batch("s", pa.record_batch({{"x": list(range(1000))}})); w.flush()
        shutil.copy({str(target / ".s.parquet.recovery")!r}, {str(tmp_path / "saved")!r})
        w.write_batch("s", pa.record_batch({{"x": list(range(1000, 2000))}})); w.flush()
        shutil.copy({str(tmp_path / "saved")!r}, {str(target / ".s.parquet.recovery")!r})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    check = verdicts(target)["s.parquet"]
    assert check.status == "repaired", check
    assert "complete" in check.detail
    assert pq.read_table(target / "s.parquet").column("x").to_pylist() == list(range(2000))
    assert not (target / ".s.parquet.recovery").exists()


@pytest.mark.parametrize("killed_after", [".b.parquet.recovery", ".b.parquet.*.tmp"])
def test_a_stream_killed_while_created_is_a_clean_verdict(tmp_path: Path, killed_after: str):
    """The finding's state (b): killed inside the creation of stream ``b`` (its recovery
    file made and empty; its Parquet file missing, or only its hidden temporary made).
    ``repair DIR`` gives every file a verdict, ``b`` included, removes the temporary of
    the dead writer and goes on to the files after it."""
    target = tmp_path / "d"
    run_killed(
        f"""
        import fnmatch, os, signal
        import pyarrow as pa
        from daq_storage.writers import open_writer
        w = open_writer("parquet", {str(target)!r})
        for name in ("a", "c"):
            w.write_batch(name, pa.record_batch({{"x": [1, 2, 3]}}))
        w.flush()
        real_open = os.open
        def open_then_die(path, flags, mode=0o777, **kwargs):
            fd = real_open(path, flags, mode, **kwargs)
            if fnmatch.fnmatch(os.path.basename(path), {killed_after!r}):
                os.kill(os.getpid(), signal.SIGKILL)
            return fd
        os.open = open_then_die
        w.write_batch("b", pa.record_batch({{"x": [4]}}))
        """
    )
    assert (target / ".b.parquet.recovery").read_bytes() == b""
    assert not (target / "b.parquet").exists()
    assert bool(list(target.glob(".b.parquet.*.tmp"))) == killed_after.endswith(".tmp")
    found = verdicts(target)
    assert [found[n].status for n in ("a.parquet", "b.parquet", "c.parquet")] == ["repaired"] * 3
    assert "before any row" in found["b.parquet"].detail
    assert sorted(p.name for p in target.iterdir()) == ["a.parquet", "c.parquet"]
    for name in ("a", "c"):
        assert pq.read_table(target / f"{name}.parquet").column("x").to_pylist() == [1, 2, 3]
    cli = subprocess.run([sys.executable, "-m", "daq_storage.cli", "repair", str(target)],
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr


def test_a_damaged_file_is_a_verdict_and_the_others_are_checked(tmp_path: Path):
    target = tmp_path / "d"
    with ParquetWriter(target) as writer:
        for name in ("a", "b", "c"):
            writer.write_batch(name, pa.record_batch({"x": [1, 2, 3]}))
    (target / ".b.parquet.recovery").write_bytes(b"DAQPQRC1 torn")
    with (target / "b.parquet").open("ab") as file:
        file.write(b"half a row group")
    found = verdicts(target)
    assert [found[n].status for n in ("a.parquet", "b.parquet", "c.parquet")] == [
        "ok", "damaged", "ok"
    ]  # fmt: skip
    assert "is damaged" in found["b.parquet"].detail


# ---------------------------------------------------------------------- busy
@pytest.mark.parametrize("name", ["arrow", "csv", "parquet"])
def test_files_a_live_writer_holds_are_busy_and_left_alone(tmp_path: Path, name: str):
    writer_class = {"arrow": ArrowWriter, "csv": CsvWriter, "parquet": ParquetWriter}[name]
    with writer_class(tmp_path / "run") as writer:
        writer.write_batch("s", batches(1)[0])
        writer.flush()
        files = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
        found = verdicts(tmp_path / "run")
        stream_file = next(n for n in found if n.startswith("s."))
        assert found[stream_file].status == "busy", found
        assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == files
        with pytest.raises(StorageIOError, match=r"a writer has it open|still has it open"):
            {"arrow": repair_arrow, "csv": repair_csv, "parquet": repair_parquet}[name](
                tmp_path / "run" / stream_file
            )
    assert verdicts(tmp_path / "run")[stream_file].status == "ok"


def test_a_copy_of_a_run_is_repaired_where_it_lies(tmp_path: Path):
    """Repair works on files whose writer is long gone, wherever they were copied."""
    with ArrowWriter(tmp_path / "run") as writer:
        writer.write_batch("s", batches(1)[0])
    copy = shutil.copytree(tmp_path / "run", tmp_path / "copy")
    with (copy / "s.arrows").open("r+b") as file:
        file.truncate(file.seek(0, os.SEEK_END) - 3)
    assert verdicts(copy)["s.arrows"].status == "repaired"
    assert read_arrow(copy / "s.arrows") == list(range(1000))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("a.tif", b"II*\x00garbage"),
        ("b.tiff", b"MM\x00*garbage!"),
        ("c.parquet", b"PAR1garbagePAR1"),
        ("d.arrow", b"ARROW1\x00\x00garbage"),
        ("e.arrows", b"\xff\xff\xff\xffgarbage"),
        ("f.h5", b"\x89HDF\r\n\x1a\ngarbage"),
        ("g.json", b"{garbage"),
    ],
)
def test_a_valid_magic_followed_by_garbage_is_damaged(tmp_path: Path, name: str, content: bytes):
    """A file whose first record cannot be read is never "ok" (a TIFF header followed by
    garbage was reported as "ok, 0 pages")."""
    (tmp_path / name).write_bytes(content)
    assert verdicts(tmp_path)[name].status == "damaged"


# ---------------------------------------------------------------------- HDF5 journal
def kill_inside_an_hdf5_commit(folder: Path) -> Path:
    """A writer killed in its second flush's commit, its journal written, none of it
    applied; returns the file."""
    run_killed(
        f"""
        import os, signal
        import numpy as np, pyarrow as pa
        from daq_storage.writers import Hdf5Writer, _hdf5_file
        w = Hdf5Writer({str(folder / "run.h5")!r})
        rows = lambda a, b: {{"x": np.arange(a, b), "s": [str(i) for i in range(a, b)]}}
        w.write_batch("t", pa.record_batch(rows(0, 500)))
        w.flush()
        w.write_batch("t", pa.record_batch(rows(500, 900)))
        w.write_batch("u", pa.record_batch({{"y": [1.5, 2.5]}}))
        _hdf5_file.apply_writes = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
        w.flush()
        """
    )
    return folder / "run.h5"


def test_a_journal_left_by_a_kill_is_applied_by_the_cli(tmp_path: Path):
    path = kill_inside_an_hdf5_commit(tmp_path)
    journal = tmp_path / "run.h5.journal"
    assert journal.exists()
    cli = subprocess.run([sys.executable, "-m", "daq_storage.cli", "repair", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "1 repaired" in cli.stdout, cli.stdout
    assert not journal.exists()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["t/x"][()], np.arange(900))
        assert [v.decode() for v in f["t/s"][()]] == [str(i) for i in range(900)]
        np.testing.assert_array_equal(f["u/y"][()], [1.5, 2.5])
    assert verdicts(tmp_path)["run.h5"].status == "ok"
    assert repair_hdf5(path) is None


def test_a_torn_journal_is_removed_and_the_file_is_the_last_commit(tmp_path: Path):
    path = kill_inside_an_hdf5_commit(tmp_path)
    journal = tmp_path / "run.h5.journal"
    journal.write_bytes(journal.read_bytes()[:-100])  # as a kill inside its write leaves it
    found = verdicts(tmp_path)
    assert list(found) == ["run.h5"]
    assert found["run.h5"].status == "repaired", found
    assert "torn" in found["run.h5"].detail
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["t/x"][()], np.arange(500))


def test_an_hdf5_file_a_live_writer_holds_is_busy_and_left_alone(tmp_path: Path):
    with Hdf5Writer(tmp_path / "live.h5") as writer:
        writer.write_batch("s", batches(1)[0])
        writer.flush()
        journal = tmp_path / "live.h5.journal"
        journal.write_bytes(b"not this writer's, but repair must not touch it")
        before = (tmp_path / "live.h5").read_bytes()
        assert verdicts(tmp_path)["live.h5"].status == "busy"
        assert journal.exists()
        assert (tmp_path / "live.h5").read_bytes() == before
        journal.unlink()


def test_a_new_hdf5_file_beside_a_stale_journal_is_refused(tmp_path: Path):
    (tmp_path / "next.h5.journal").write_bytes(b"a killed writer's")
    with pytest.raises(StorageIOError, match=r"next\.h5\.journal"):
        Hdf5Writer(tmp_path / "next.h5")
    assert not (tmp_path / "next.h5").exists()
