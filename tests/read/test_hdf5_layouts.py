"""HDF5 layouts besides one dataset per column: dictionary-coded text (codes and a
``<column>.categories`` dataset) and Arrow IPC files kept in ``/arrow_data/<stream>``.
Files built with h5py exactly as the layouts are specified, and written by the HDF5
writer where it offers them."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.errors import ReadError
from daq_storage.read import open_run
from daq_storage.writers import Writer, open_writer

TEXT = h5py.string_dtype("utf-8")


def _field(name: str, kind: str) -> str:
    return json.dumps({"name": name, "type": kind, "nullable": True, "metadata": {}})


@pytest.mark.parametrize("codes", ["uint8", "uint16", "uint32"])
def test_dictionary_coded_text_reads_as_its_arrow_type(tmp_path: Path, codes: str):
    path = tmp_path / "coded.h5"
    coded = "dictionary<values=string, indices=int32, ordered=0>"
    with h5py.File(path, "w") as f:
        group = f.create_group("s")
        group.attrs["schema"] = json.dumps({"fields": [json.loads(_field("channel", "string")),
                                                       json.loads(_field("unit", coded)),
                                                       json.loads(_field("v", "double"))],
                                            "metadata": {}})  # fmt: skip
        for name, kind, values, categories in [
            ("channel", "string", [0, 1, 0, 2, 0], ["pm_a", "pm_b", "é"]),
            ("unit", coded, [0, 0, 0, 0, 1], ["W", "mW"]),
        ]:
            dataset = group.create_dataset(name, data=np.array(values, codes), maxshape=(None,))
            dataset.attrs.update(encoding="dictionary", categories=f"{name}.categories",
                                 arrow_type=kind, schema=_field(name, kind))  # fmt: skip
            group.create_dataset(
                f"{name}.categories", data=np.array(categories, object), dtype=TEXT
            )
        group.create_dataset("channel.valid", data=np.array([1, 1, 0, 1, 1], bool))
        values = group.create_dataset("v", data=np.arange(5.0))
        values.attrs.update(arrow_type="double", schema=_field("v", "double"))
    with open_run(path) as run:
        assert run.streams["s"].rows == 5
        assert run.streams["s"].schema.field("unit").type == pa.dictionary(pa.int32(), pa.string())
        table = run.table("s")
        assert table.schema.field("channel").type == pa.string()
        assert table.column("channel").to_pylist() == ["pm_a", "pm_b", None, "é", "pm_a"]
        unit = table.column("unit")
        assert unit.type == pa.dictionary(pa.int32(), pa.string())
        assert unit.to_pylist() == ["W", "W", "W", "W", "mW"]
        assert [b.num_rows for b in run.iter_batches("s", ["channel"], batch_rows=2)] == [2, 2, 1]


def test_dictionary_codes_without_their_categories_are_refused(tmp_path: Path):
    path = tmp_path / "broken.h5"
    with h5py.File(path, "w") as f:
        dataset = f.create_group("s").create_dataset("c", data=np.zeros(3, np.uint8))
        dataset.attrs.update(encoding="dictionary", categories="c.categories", arrow_type="string")
    with pytest.raises(ReadError, match=r"broken\.h5.*/s/c.*categories"):
        open_run(path).streams  # noqa: B018


def _ipc_file(*batches: pa.RecordBatch) -> np.ndarray:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return np.frombuffer(sink.getvalue().to_pybytes(), np.uint8)


def test_arrow_ipc_inside_hdf5_reads_as_a_table_stream(tmp_path: Path):
    """Seed 002's layout: the stream's rows are the batches of its datasets in name
    order; any Arrow type comes back as it was."""
    path = tmp_path / "ipc.h5"
    nested = pa.record_batch({
        "timestamp_ns": pa.array([1, 2], pa.timestamp("us", "Europe/Paris")),
        "xs": pa.array([[1, 2], None], pa.list_(pa.int16())),
        "d": pa.array([Decimal("1.25"), None], pa.decimal128(6, 2)),
    })  # fmt: skip
    later = pa.record_batch({
        "timestamp_ns": pa.array([3], pa.timestamp("us", "Europe/Paris")),
        "xs": pa.array([[7]], pa.list_(pa.int16())),
        "d": pa.array([Decimal("2.5")], pa.decimal128(6, 2)),
    })  # fmt: skip
    with h5py.File(path, "w") as f:
        group = f.create_group("arrow_data/events")
        group.attrs["schema"] = json.dumps({"fields": [], "metadata": {}})
        group.attrs["operator"] = "ada"
        group.create_dataset("00000001", data=_ipc_file(later))
        group.create_dataset("00000000", data=_ipc_file(nested, nested))
        f.attrs["experiment"] = "ipc"
    with open_run(path) as run:
        info = run.streams["events"]
        assert (info.kind, info.rows, info.metadata["operator"]) == ("table", 5, "ada")
        assert info.schema == nested.schema
        table = run.table("events")
        expected = pa.Table.from_batches([nested, nested, later])
        assert table.equals(expected)
        window = run.table("events", ["d"], start=2000, stop=3001)  # the 2 and 3 us rows
        assert window.column("d").to_pylist() == [None, None, Decimal("2.5")]
        assert run.metadata["experiment"] == "ipc"


def _writer(path: Path, **options: object) -> Writer:
    return open_writer("hdf5", path, **options)


@pytest.mark.parametrize("options", [{"strings": "dictionary"}, {"table_layout": "arrow_ipc"}])
def test_the_writers_layouts_read_back(tmp_path: Path, options: dict[str, str]):
    path = tmp_path / "w.h5"
    first = pa.record_batch({
        "c": pa.array(["x", "y", None, "x"]),
        "d": pa.array(["a", "b", "a", "a"]).dictionary_encode(),
        "v": pa.array([1, 2, 3, 4], pa.int32()),
    })  # fmt: skip
    second = pa.record_batch({
        "c": pa.array(["z", "y", None, ""]),
        "d": pa.array(["a", "q", "a", "a"]).dictionary_encode(),
        "v": pa.array([5, 6, 7, 2**40], pa.int64()),
        "n": [1.0, 2.0, 3.0, 4.0],
    })  # fmt: skip
    with _writer(path, **options) as writer:
        writer.write_batch("s", first)
        writer.flush()
        writer.write_batch("s", second)
    with open_run(path) as run:
        table = run.table("s")
        assert run.streams["s"].rows == 8
    assert table.column("c").to_pylist() == ["x", "y", None, "x", "z", "y", None, ""]
    assert table.column("d").to_pylist() == ["a", "b", "a", "a", "a", "q", "a", "a"]
    assert table.column("v").to_pylist() == [1, 2, 3, 4, 5, 6, 7, 2**40]
    assert table.column("n").to_pylist() == [None] * 4 + [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("compression", ["lz4", "zstd", "blosc-lz4"])
def test_a_fresh_process_reads_filters_h5py_lacks(tmp_path: Path, compression: str):
    """lz4, zstd and blosc are hdf5plugin's filters: a process that only reads (never
    imported a writer) decodes them too."""
    import subprocess
    import sys

    from daq_storage.writers import open_writer

    path = tmp_path / "run.h5"
    frames = np.arange(4 * 6 * 8, dtype=np.uint16).reshape(4, 6, 8)
    with open_writer("hdf5", path, compression=compression) as writer:
        writer.write_frames("camera", frames)
        writer.write_batch("power", pa.record_batch({"v": np.arange(100.0)}))
    program = (
        "import sys, numpy as np\n"
        "from daq_storage.read import open_run\n"
        "assert 'daq_storage.writers' not in sys.modules\n"
        f"with open_run({str(path)!r}) as run:\n"
        "    print(int(np.asarray(run.frames('camera')).sum()), run.table('power')['v'][99])\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(int(frames.sum())), "99.0"]


def test_bytes_that_do_not_decode_are_a_read_error_naming_the_stream(tmp_path: Path):
    """A compressed chunk damaged on disk: h5py's OSError comes out as a ReadError naming
    the stream, never as a bare library error."""
    from daq_storage.writers import open_writer

    path = tmp_path / "run.h5"
    rng = np.random.default_rng(0)
    with open_writer("hdf5", path, compression="lz4") as writer:
        writer.write_frames("camera", rng.integers(0, 4096, (4, 64, 64), dtype=np.uint16))
    with h5py.File(path, "r") as file:
        info = file["camera/frames"].id.get_chunk_info(0)
    with path.open("r+b") as raw:
        raw.seek(info.byte_offset)  # the lz4 filter's header: sizes no block matches
        raw.write(b"\xff" * 16)
    with open_run(path) as run:
        frames = run.frames("camera")
        with pytest.raises(ReadError, match="frames of stream 'camera'"):
            frames[0]
        assert frames.shape == (4, 64, 64)  # what the file says stays readable
