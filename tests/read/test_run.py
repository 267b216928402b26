"""open_run: what a path is (one output, rotated versions, a Recorder's directory), the
errors that name what is wrong, time ranges, columns, parts and batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from daq_storage.errors import (
    ConfigError,
    DaqStorageError,
    ReadError,
    RunNotFound,
    UnknownStream,
    WriterClosedError,
)
from daq_storage.naming import format_filename
from daq_storage.read import LossRange, open_run
from daq_storage.writers import open_writer
from tests.read.helpers import START_NS, TABLES, TARGETS, power_batches, write_run

WHEN = datetime(2026, 3, 1, 12, 0, 0)
SUFFIX = {"hdf5": "h5", "zarr": "zarr"}


def _versioned(directory: Path, name: str, version: int, experiment: str = "scan") -> Path:
    return directory / format_filename(experiment, WHEN, version, SUFFIX.get(name, ""))


def _write_version(
    path: Path, name: str, first: int, rows: int, ledger: list[dict[str, int]] | None = None
):
    with open_writer(name, path) as writer:
        if writer.supports_tables:
            values = np.arange(first, first + rows, dtype=np.float64)
            stamps = pa.array(START_NS + np.arange(first, first + rows), pa.timestamp("ns", "UTC"))
            writer.write_batch("s", pa.record_batch({"timestamp_ns": stamps, "v": values}))
        else:
            frames = np.arange(first, first + rows, dtype=np.uint16)[:, None, None] * np.ones(
                (1, 2, 3), np.uint16
            )
            writer.write_frames(
                "s",
                frames,
                timestamps_ns=START_NS + np.arange(first, first + rows, dtype=np.uint64),
            )
        if ledger is not None:
            writer.set_metadata("loss_ledger", ledger)
            writer.set_metadata("lost_records", sum(g["count"] for g in ledger))


@pytest.mark.parametrize("name", list(TARGETS))
def test_rotated_versions_read_as_one_run_in_version_order(tmp_path: Path, name: str):
    """``_v1``, ``_v2``, ... ``_v10``: numeric order, stream by stream; each loss ledger
    kept with its file."""
    gap = {"first_seq": 5, "last_seq": 7, "count": 3, "after_ns": 1, "before_ns": 2,
           "detected_ns": 3}  # fmt: skip
    for version, first in [(10, 20), (1, 0), (2, 10)]:
        _write_version(_versioned(tmp_path, name, version), name, first, 10,
                       [gap] if version == 2 else [])  # fmt: skip
    with open_run(tmp_path) as run:
        assert run.format == name
        assert run.name == "scan_2026-03-01_12-00-00"
        assert [p.name for p in run.files] == [
            _versioned(tmp_path, name, v).name for v in (1, 2, 10)
        ]
        info = run.streams["s"]
        assert info.rows == 30
        assert [p.first for p in info.parts] == [0, 10, 20]
        if info.kind == "table":
            assert run.table("s").column("v").to_pylist() == list(range(30))
            assert run.table("s", part=1).column("v").to_pylist() == list(range(10, 20))
        else:
            assert np.asarray(run.frames("s"))[:, 0, 0].tolist() == list(range(30))
        assert run.losses == [LossRange(5, 7, 3, 1, 2, 3, _versioned(tmp_path, name, 2))]
        assert run.lost_records == 3
    # the run's name without _v{N} opens the same versions
    with open_run(tmp_path / "scan_2026-03-01_12-00-00") as run:
        assert run.streams["s"].rows == 30


def test_a_recorder_directory_of_several_formats_needs_format(tmp_path: Path):
    for name in ("hdf5", "parquet"):
        _write_version(_versioned(tmp_path, name, 1), name, 0, 5)
    _write_version(_versioned(tmp_path, "parquet", 2), "parquet", 5, 5)
    with pytest.raises(ConfigError, match=r"several formats: \['hdf5', 'parquet'\].*format="):
        open_run(tmp_path)
    with open_run(tmp_path, format="parquet") as run:
        assert run.table("s").column("v").to_pylist() == list(range(10))
    with open_run(tmp_path, format="hdf5") as run:
        assert run.streams["s"].rows == 5
    with pytest.raises(RunNotFound, match=r"no zarr output .* formats are \['hdf5', 'parquet'\]"):
        open_run(tmp_path, format="zarr")
    with pytest.raises(ConfigError, match="format must be one of"):
        open_run(tmp_path, format="netcdf")


def test_several_runs_in_one_directory_are_named(tmp_path: Path):
    _write_version(_versioned(tmp_path, "hdf5", 1, "dark"), "hdf5", 0, 3)
    _write_version(_versioned(tmp_path, "hdf5", 1, "bright"), "hdf5", 0, 4)
    with pytest.raises(
        ConfigError, match=r"several runs: \['bright_2026.*', 'dark_2026.*'\].*run="
    ):
        open_run(tmp_path)
    with open_run(tmp_path, run="dark_2026-03-01_12-00-00") as run:
        assert run.streams["s"].rows == 3
    with pytest.raises(RunNotFound, match="no run 'grey'"):
        open_run(tmp_path, run="grey")


def test_nothing_to_read_is_run_not_found(tmp_path: Path):
    with pytest.raises(RunNotFound, match="nothing there"):
        open_run(tmp_path / "missing.h5")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RunNotFound, match="no run in"):
        open_run(tmp_path)
    with pytest.raises(RunNotFound, match="not a file or directory this project writes"):
        open_run(tmp_path / "notes.txt")
    assert issubclass(RunNotFound, FileNotFoundError)


def test_a_file_that_cannot_be_read_is_named(tmp_path: Path):
    (tmp_path / "broken.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ReadError, match=r"broken\.h5"):
        open_run(tmp_path / "broken.h5")
    folder = tmp_path / "run_parquet"
    folder.mkdir()
    (folder / "s.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(ReadError, match=r"s\.parquet"):
        open_run(folder)


@pytest.mark.parametrize("name", ["hdf5", "parquet"])
def test_unknown_streams_and_columns_are_named(tmp_path: Path, name: str):
    write_run(name, tmp_path / TARGETS[name])
    with open_run(tmp_path / TARGETS[name]) as run:
        with pytest.raises(
            UnknownStream, match=r"no stream 'powr'; its streams are \['camera', 'power', 'rich'\]"
        ):
            run.table("powr")
        with pytest.raises(
            ConfigError,
            match=r"no column 'watts'; its columns are "
            r"\['timestamp_ns', 'channel', 'value', 'unit'\]",
        ):
            run.table("power", ["value", "watts"])
        with pytest.raises(ConfigError, match=r"holds frames, not a table; use run\.frames"):
            run.table("camera")
        with pytest.raises(ConfigError, match=r"holds table, not frames; use run\.table"):
            run.frames("power")
        with pytest.raises(ConfigError, match="start must be"):
            run.table("power", start="yesterday")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="batch_rows"):
            run.iter_batches("power", batch_rows=0)
        with pytest.raises(ConfigError, match="part must be"):
            run.table("power", part=5)
        frames = run.frames("camera")
        batches = run.iter_batches("power", batch_rows=10)
        next(batches)
    with pytest.raises(WriterClosedError, match="closed"):
        run.streams  # noqa: B018
    with pytest.raises(WriterClosedError, match="closed"):
        frames[0]
    with pytest.raises(WriterClosedError, match="closed"):
        next(batches)
    assert issubclass(UnknownStream, DaqStorageError)


@pytest.mark.parametrize("name", TABLES)
def test_time_range_and_columns(tmp_path: Path, name: str):
    """[start, stop) on timestamp_ns, as ns, numpy.datetime64, or datetime (aware or
    naive UTC); columns in the order asked for, the time column only if asked."""
    write_run(name, tmp_path / TARGETS[name])
    table = pa.Table.from_batches(power_batches())
    stamps = table.column("timestamp_ns").cast(pa.int64()).to_numpy()
    low, high = int(stamps[100]), int(stamps[700])
    expected = table.filter(pa.array((stamps >= low) & (stamps < high)))
    as_datetime = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=low // 1000)
    assert low % 1000 == 0  # so that a datetime names it exactly
    other_zone = as_datetime.astimezone(timezone(timedelta(hours=2)))
    with open_run(tmp_path / TARGETS[name]) as run:
        for start in (
            low,
            np.datetime64(low, "ns"),
            as_datetime,
            as_datetime.replace(tzinfo=None),
            other_zone,
        ):
            got = run.table("power", ["value", "channel"], start=start, stop=high)
            assert got.column_names == ["value", "channel"]
            assert got.column("value").to_pylist() == expected.column("value").to_pylist()
            assert got.column("channel").to_pylist() == expected.column("channel").to_pylist()
        assert run.table("power", stop=low).num_rows == 100
        assert run.table("power", start=high).num_rows == table.num_rows - 700
        frame = run.polars("power", ["channel", "value"], start=low, stop=high)
        assert frame.columns == ["channel", "value"]
        assert frame["value"].to_list() == expected.column("value").to_pylist()
        batches = list(run.iter_batches("power", ["value"], batch_rows=128, start=low, stop=high))
        assert all(b.num_rows <= 128 for b in batches)
        assert [v for b in batches for v in b.column("value").to_pylist()] == expected.column(
            "value"
        ).to_pylist()


@pytest.mark.parametrize("name", TABLES)
def test_iter_batches_reads_a_bounded_batch_at_a_time(tmp_path: Path, name: str):
    write_run(name, tmp_path / TARGETS[name])
    with open_run(tmp_path / TARGETS[name]) as run:
        batches = run.iter_batches("power", batch_rows=100)
        first = next(batches)
        assert isinstance(first, pa.RecordBatch)
        assert first.num_rows == 100
        rest = list(batches)
        assert sum(b.num_rows for b in rest) + 100 == run.streams["power"].rows == 2400
        whole = run.table("power")
    joined = pa.Table.from_batches([first, *rest]).column("value").to_pylist()
    assert joined == whole.column("value").to_pylist()


@pytest.mark.parametrize("name", TABLES)
def test_parts_join_with_promoted_types(tmp_path: Path, name: str):
    """A stream continued in parts (a widening, a new column) reads as one table, types
    promoted as pyarrow's permissive concat does; streams[...] counts every row; each
    part reads on its own; parts that do not join say how to read them."""
    path = tmp_path / TARGETS[name]
    with open_writer(name, path) as writer:
        writer.write_batch("s", pa.record_batch({"v": pa.array([1, 2], pa.int32())}))
        writer.write_batch("s", pa.record_batch({"v": pa.array([3, 2**40], pa.int64()),
                                                 "w": pa.array([0.5, 1.5])}))  # fmt: skip
        writer.write_batch("t", pa.record_batch({"v": [1.0]}))
        writer.write_batch("t", pa.record_batch({"v": ["x"]}))
        parts = len(writer.describe("s").parts)
    with open_run(path) as run:
        info = run.streams["s"]
        assert info.rows == 4
        assert len(info.parts) == parts
        table = run.table("s")
        assert table.column("v").to_pylist() == [1, 2, 3, 2**40]
        assert pa.types.is_int64(table.schema.field("v").type)
        assert table.column("w").to_pylist() == [None, None, 0.5, 1.5]
        assert run.table("s", ["w"]).column("w").to_pylist() == [None, None, 0.5, 1.5]
        if parts > 1:
            assert run.table("s", part=0).column("v").to_pylist() == [1, 2]
        assert [run.table("t", part=i).num_rows for i in range(len(run.streams["t"].parts))] in (
            [1, 1],
            [2],
        )
        if len(run.streams["t"].parts) == 2:
            with pytest.raises(ReadError, match=r"stream 't'.*part=i"):
                run.table("t")


def test_csv_text_with_line_breaks_across_blocks(tmp_path: Path):
    """Text values holding line breaks (quoted by the writer) in a file of several of
    pyarrow's blocks: every value whole, every row counted, whichever columns are read."""
    rng = np.random.default_rng(0)
    texts = ["x" * int(n) + ("\n" if k % 37 == 0 else "") + "y" for k, n in
             enumerate(rng.integers(0, 120, 40_000))]  # fmt: skip
    batch = pa.record_batch({"note": texts, "v": np.arange(40_000.0), "unit": ["W"] * 40_000})
    with open_writer("csv", tmp_path / "run_csv") as writer:
        writer.write_batch("s", batch)
    assert (tmp_path / "run_csv" / "s.csv").stat().st_size > 2 << 20  # several 1 MiB blocks
    with open_run(tmp_path / "run_csv") as run:
        assert run.table("s").column("note").to_pylist() == texts
        assert run.table("s", ["v"]).column("v").to_pylist() == list(range(40_000))
        assert run.streams["s"].rows == 40_000
        assert sum(b.num_rows for b in run.iter_batches("s", batch_rows=7000)) == 40_000


@pytest.mark.parametrize("name", ["hdf5", "arrow"])
def test_one_stream_is_read_without_listing_the_others(tmp_path: Path, name: str):
    """Reading a stream opens that stream alone: another stream that cannot be read does
    not stop it (listing every stream names the broken one)."""
    import h5py

    path = tmp_path / {"hdf5": "run.h5", "arrow": "run_arrow"}[name]
    with open_writer(name, path) as writer:
        writer.write_batch("good", pa.record_batch({"v": np.arange(5.0)}))
        writer.write_batch("broken", pa.record_batch({"v": np.arange(5.0)}))
        writer.write_frames("camera", np.arange(12, dtype=np.uint16).reshape(3, 2, 2))
    if name == "hdf5":
        with h5py.File(path, "r+") as file:
            file["broken"].attrs["schema"] = "{not json"
    else:
        (path / "broken.arrows").write_bytes(b"not an Arrow IPC stream")
    with open_run(path) as run:
        assert run.table("good").column("v").to_pylist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        np.testing.assert_array_equal(run.frames("camera")[1], [[4, 5], [6, 7]])
        with pytest.raises(ReadError, match="broken"):
            run.streams  # noqa: B018


def test_list_runs_names_each_run_and_its_outputs(tmp_path: Path):
    """Rotated versions of one run and another run beside them: two listings, versions in
    numeric order; an output itself lists its one run; nothing there is named."""
    from daq_storage.read import list_runs

    paths = [_versioned(tmp_path, "hdf5", v) for v in (1, 2, 10)]
    for first, path in enumerate(paths):
        _write_version(path, "hdf5", first * 3, 3)
    other = _versioned(tmp_path, "parquet", 1, experiment="other")
    _write_version(other, "parquet", 0, 4)
    others, scan = list_runs(tmp_path)  # by name
    assert (others.name, others.formats, others.outputs["parquet"]) == (
        other.name.rsplit("_v", 1)[0], ("parquet",), (other,))  # fmt: skip
    assert scan.formats == ("hdf5",)
    assert scan.outputs["hdf5"] == tuple(paths)
    with open_run(tmp_path, run=scan.name) as run:
        assert run.streams["s"].rows == 9
    (alone,) = list_runs(paths[1])
    assert alone.outputs == {"hdf5": (paths[1],)}
    with pytest.raises(RunNotFound, match="no runs at"):
        list_runs(tmp_path / "missing")
    with pytest.raises(ConfigError, match="must be a path"):
        list_runs(3)  # type: ignore[arg-type]
