"""HDF5 Arrow IPC layout (``table_layout="arrow_ipc"``): each table stream as Arrow IPC
files in uint8 datasets under ``/arrow_data/<stream>``, read back with pyarrow over the
bytes h5py gives; any Arrow type exactly (a hypothesis property); flushed batches
visible to a reader and kept after a kill; schema changes, parts, metadata, frames
beside."""

from __future__ import annotations

import json
import signal
from decimal import Context, Decimal
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daq_storage.errors import InvalidName
from daq_storage.writers import Hdf5Writer, repair_hdf5
from tests.writers.conformance import WriterConformance
from tests.writers.kill_harness import kill_when


def read_stream(path: Path, key: str) -> list[pa.RecordBatch]:
    """The batches of the group ``key``, in dataset-name order, as a scientist reads them:
    the bytes through h5py, each an Arrow IPC file for pyarrow."""
    batches: list[pa.RecordBatch] = []
    with h5py.File(path, "r", locking=False) as f:
        group = f[key]
        for name in sorted(group):
            data = group[name][()]
            assert data.dtype == np.uint8
            assert bytes(data[:6]) == b"ARROW1"
            reader = pa.ipc.open_file(pa.py_buffer(data))
            assert group[name].attrs["rows"] == sum(
                reader.get_batch(i).num_rows for i in range(reader.num_record_batches)
            )
            batches += [reader.get_batch(i) for i in range(reader.num_record_batches)]
    return batches


def _nasty() -> list[pa.RecordBatch]:
    """One batch of the types the issue names, nulls everywhere."""
    n = 5
    return [pa.record_batch({
        "nested": pa.array([[[1, None]], None, [], [[2], None, []], [[3]]],
                           pa.list_(pa.list_(pa.int16()))),
        "point": pa.array([{"x": 1.5, "tag": "a"}, None, {"x": None, "tag": None},
                           {"x": 2.0, "tag": "b"}, {"x": 0.0, "tag": ""}],
                          pa.struct([("x", pa.float64()), ("tag", pa.string())])),
        "money": pa.array([Decimal("1.23"), None, Decimal("-9.99"), Decimal("0"),
                           Decimal("123456789.01")], pa.decimal128(12, 2)),
        "big_money": pa.array([Decimal(10) ** 40, None, 0, 1, -1], pa.decimal256(50, 0)),
        "cat": pa.array(["on", "off", None, "on", "x"]).dictionary_encode(),
        "text": pa.array(["é", None, "long" * 100, "", "z"], pa.large_string()),
        "when": pa.array([0, None, 10**18, -1, 5], pa.timestamp("us", tz="Europe/Paris")),
        "blob": pa.array([b"\x00\x01", None, b"", b"abc", b"\xff"], pa.binary()),
        "mapping": pa.array([[("a", 1)], None, [], [("b", None)], [("c", 3)]],
                            pa.map_(pa.string(), pa.int32())),
        "nothing": pa.nulls(n),
        "day": pa.array([0, 1, None, 3, 4], pa.date32()),
        "span": pa.array([1, None, 3, 4, 5], pa.duration("ns")),
    }, metadata={"source": "test", "units": json.dumps({"money": "EUR"})})][:n]  # fmt: skip


def test_every_named_type_round_trips_exactly_through_h5py_bytes(tmp_path: Path):
    path = tmp_path / "nasty.h5"
    batches = _nasty()
    with Hdf5Writer(path, table_layout="arrow_ipc") as writer:
        for batch in batches * 3:
            writer.write_batch("s", batch)
        assert writer.describe("s").key == "/arrow_data/s"
    back = read_stream(path, "arrow_data/s")
    assert len(back) == 3
    for got in back:
        assert got.schema.equals(batches[0].schema, check_metadata=True)
        assert got.equals(batches[0])
    with h5py.File(path, "r") as f:
        group = f["arrow_data/s"]
        assert list(group) == ["00000000"]  # one IPC file: stored at close
        assert group.attrs["instrument_id"] == "s"
        assert [field["name"] for field in json.loads(group.attrs["schema"])["fields"]] == list(
            batches[0].schema.names)  # fmt: skip
        assert group.attrs["source"] == "test"  # the stream's metadata, as attributes


_LEAVES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint64(),
           pa.float32(), pa.float64(), pa.bool_(), pa.string(), pa.large_string(),
           pa.binary(), pa.large_binary(), pa.decimal128(10, 2), pa.decimal256(40, 5),
           pa.timestamp("ns"), pa.timestamp("us", tz="UTC"), pa.timestamp("s", tz="+05:30"),
           pa.timestamp("ms", tz="America/New_York"), pa.date32(), pa.duration("ms"),
           pa.null()]  # fmt: skip
_TYPES = st.recursive(
    st.sampled_from(_LEAVES),
    lambda inner: st.one_of(
        st.builds(pa.list_, inner),
        st.builds(pa.large_list, inner),
        st.builds(pa.list_, inner, st.integers(1, 3)),  # fixed-size lists
        st.lists(inner, min_size=1, max_size=3).map(
            lambda kinds: pa.struct([(f"f{i}", k) for i, k in enumerate(kinds)])),
        st.sampled_from([pa.int8(), pa.int32()]).map(lambda k: pa.dictionary(k, pa.string())),
        inner.map(lambda k: pa.map_(pa.string(), k)),
    ),
    max_leaves=4,
)  # fmt: skip


def _values(kind: pa.DataType) -> st.SearchStrategy[Any]:
    """Python values of ``kind`` (``None`` among them) that ``pa.array`` takes."""
    if pa.types.is_null(kind):
        return st.none()
    if pa.types.is_integer(kind):
        info = np.iinfo(kind.to_pandas_dtype())
        value: st.SearchStrategy[Any] = st.integers(int(info.min), int(info.max))
    elif pa.types.is_floating(kind):
        value = st.floats(allow_nan=False, width=kind.bit_width)
    elif pa.types.is_boolean(kind):
        value = st.booleans()
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        value = st.text(max_size=6)
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        value = st.binary(max_size=6)
    elif pa.types.is_decimal(kind):
        value = st.integers(-(10**kind.precision) + 1, 10**kind.precision - 1).map(
            # Exact: the default context keeps 28 digits and would round a wider value.
            lambda i: Decimal(i).scaleb(-kind.scale, context=Context(prec=80))
        )
    elif pa.types.is_date32(kind):
        value = st.integers(-100_000, 100_000)
    elif pa.types.is_timestamp(kind) or pa.types.is_duration(kind):
        value = st.integers(-(2**62), 2**62)
    elif pa.types.is_dictionary(kind):
        value = st.sampled_from(["on", "off", "é", ""])
    elif pa.types.is_map(kind):
        value = st.lists(st.tuples(st.text(max_size=3), _values(kind.item_type)), max_size=3)
    elif pa.types.is_struct(kind):
        value = st.fixed_dictionaries({f.name: _values(f.type) for f in kind})
    elif pa.types.is_fixed_size_list(kind):
        value = st.lists(_values(kind.value_type), min_size=kind.list_size,
                         max_size=kind.list_size)  # fmt: skip
    else:  # list, large_list
        value = st.lists(_values(kind.value_type), max_size=3)
    return st.none() | value


@st.composite
def _batches(draw: Any) -> list[pa.RecordBatch]:
    """One to three batches of one random schema (nested, decimals, zones, nulls)."""
    types = draw(st.lists(_TYPES, min_size=1, max_size=4))
    fields = [pa.field(f"c{i}", kind) for i, kind in enumerate(types)]
    metadata = draw(st.dictionaries(st.sampled_from(["a", "units", "é"]), st.text(max_size=8),
                                    max_size=2))  # fmt: skip
    schema = pa.schema(fields, metadata=metadata or None)
    out = []
    for _ in range(draw(st.integers(1, 3))):
        rows = draw(st.integers(0, 8))
        columns = [pa.array(draw(st.lists(_values(f.type), min_size=rows, max_size=rows)),
                            f.type) for f in fields]  # fmt: skip
        out.append(pa.RecordBatch.from_arrays(columns, schema=schema))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=_batches(), flush_between=st.booleans())
def test_any_arrow_table_round_trips_exactly(tmp_path_factory: pytest.TempPathFactory,
                                             batches: list[pa.RecordBatch],
                                             flush_between: bool):  # fmt: skip
    path = tmp_path_factory.mktemp("prop") / "any.h5"
    with Hdf5Writer(path, table_layout="arrow_ipc") as writer:
        for batch in batches:
            writer.write_batch("s", batch)
            if flush_between:
                writer.flush()
                assert writer.visible("s") == writer.accepted("s")
    back = read_stream(path, "arrow_data/s")
    assert len(back) == len(batches)
    for got, want in zip(back, batches, strict=True):
        assert got.schema.equals(want.schema, check_metadata=True), (got.schema, want.schema)
        assert got.equals(want)


def test_flushed_batches_are_visible_while_writing_and_chunk_size_cuts_files(tmp_path: Path):
    path = tmp_path / "live.h5"
    batch = pa.record_batch({"i": np.arange(100), "s": [f"r{i}" for i in range(100)]})
    with Hdf5Writer(path, table_layout="arrow_ipc", chunk_size=250) as writer:
        for _ in range(3):
            writer.write_batch("s", batch)  # the third fills 250 rows: a dataset
        assert writer.visible("s") == 0  # not committed yet
        writer.flush()
        assert writer.visible("s") == 300
        assert sum(b.num_rows for b in read_stream(path, "arrow_data/s")) == 300
        writer.write_batch("s", batch)
        assert sum(b.num_rows for b in read_stream(path, "arrow_data/s")) == 300
    with h5py.File(path, "r") as f:  # 300 rows (>= 250) at once; the last 100 at close
        group = f["arrow_data/s"]
        assert [(name, int(group[name].attrs["rows"])) for name in group] == [
            ("00000000", 300), ("00000001", 100)]  # fmt: skip


def test_schema_changes_dictionaries_parts_metadata_and_frames(tmp_path: Path):
    """A new dictionary or a widening starts a new dataset in the group; an
    incompatible change a new part group under /arrow_data, recorded in ``parts``;
    metadata set before the first batch lands on the table's group; frames keep their
    layout beside; ``arrow_data`` is no stream name here."""
    path = tmp_path / "changes.h5"
    a = pa.record_batch({"v": pa.array([1, 2], pa.int32()),
                         "c": pa.array(["x", "y"]).dictionary_encode()})  # fmt: skip
    same = pa.record_batch(
        {
            "v": pa.array([3], pa.int32()),
            "c": pa.DictionaryArray.from_arrays(pa.array([1], pa.int32()), a.column(1).dictionary),
        }
    )
    other = pa.record_batch({"v": pa.array([4], pa.int32()),
                             "c": pa.array(["z"]).dictionary_encode()})  # fmt: skip
    wide = pa.record_batch({"v": pa.array([5], pa.int64()),
                            "c": pa.array(["z"]).dictionary_encode()})  # fmt: skip
    text = pa.record_batch({"v": ["six"]})
    with Hdf5Writer(path, table_layout="arrow_ipc") as writer:
        writer.set_metadata("operator", "ada", stream="s")
        with pytest.raises(InvalidName, match="arrow_data"):
            writer.write_batch("arrow_data", a)
        for batch in (a, same, other, wide):
            writer.write_batch("s", batch)
        writer.write_batch("s", text)  # int to text: a new part
        writer.write_frames("cam", np.zeros((2, 3, 4), np.uint16))
        parts = writer.describe("s").parts
    assert [(p.key, p.first) for p in parts] == [("/arrow_data/s", 0),
                                                 ("/arrow_data/s__part0002", 5)]  # fmt: skip
    first = read_stream(path, "arrow_data/s")
    assert [b.num_rows for b in first] == [2, 1, 1, 1]
    assert pa.Table.from_batches(first[:2]).column("c").to_pylist() == ["x", "y", "y"]
    assert first[3].schema.field("v").type == pa.int64()
    assert read_stream(path, "arrow_data/s__part0002")[0].equals(text)
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["arrow_data", "cam"]
        assert list(f["arrow_data/s"]) == ["00000000", "00000001", "00000002"]
        assert f["arrow_data/s"].attrs["operator"] == "ada"
        assert json.loads(f["arrow_data/s"].attrs["parts"])[1]["key"] == "/arrow_data/s__part0002"
        assert f["arrow_data/s__part0002"].attrs["part_of"] == "s"
        assert f["cam/frames"].shape == (2, 3, 4)


#: A writer that flushes after every second batch and says so; killed by the parent at
#: a line, or (``argv[2]`` >= 0) by itself on a timer started as flush ``argv[2]``
#: begins, at a point drawn with seed ``argv[3]`` within twice the longest flush so far.
_CHILD = """
import os, random, signal, sys, threading, time
import numpy as np, pyarrow as pa
from daq_storage.writers import Hdf5Writer
timed, rng = int(sys.argv[2]), random.Random(int(sys.argv[3]))
writer = Hdf5Writer(sys.argv[1], table_layout="arrow_ipc", chunk_size=700)
rows, longest = 0, 0.001
for step in range(10**6):
    n = 50 + step % 7
    writer.write_batch("s", pa.record_batch({"i": np.arange(rows, rows + n),
                                             "t": pa.array([f"r{k}" for k in range(n)])}))
    rows += n
    if step % 2:
        if step // 2 == timed:
            delay = rng.uniform(0, 2 * longest)
            threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
        started = time.perf_counter()
        writer.flush()
        longest = max(longest, time.perf_counter() - started)
        print(f"flushed {rows}", flush=True)
"""


@pytest.mark.parametrize(("flushes", "timed"), [(1, -1), (4, -1), (0, 3), (0, 6)])
def test_a_killed_writer_keeps_every_flushed_batch(tmp_path: Path, flushes: int, timed: int):
    """Killed just after a flush returned, or at a random point of a flush: once the
    journal a kill inside a commit left is applied, every flushed row is there, in
    order, and nothing that was not written."""
    path = tmp_path / "killed.h5"
    seen = []

    def count(line: str) -> bool:
        seen.append(line)
        return len(seen) == flushes

    killed = kill_when(_CHILD, count, str(path), str(timed), str(timed * 7919))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    flushed = int(killed.flushed[-1].split()[1]) if killed.flushed else 0
    repair_hdf5(path)
    rows: list[int] = []
    if path.exists() and flushed:
        batches = read_stream(path, "arrow_data/s")
        rows = pa.Table.from_batches(batches).column("i").to_pylist() if batches else []
    assert len(rows) >= flushed
    assert rows == list(range(len(rows)))


class TestHdf5ArrowLayout(WriterConformance):
    """The writer conformance suite on the Arrow IPC layout (read back through the read
    API, which reads ``/arrow_data``); column attributes and times as pyarrow sees the
    IPC files' schema."""

    writer_name = "hdf5"
    target = "run.h5"
    options: ClassVar[dict[str, Any]] = {"table_layout": "arrow_ipc"}
    typed_attributes = False  # Arrow field metadata is text

    def _schema(self, path: Path, stream: str) -> pa.Schema:
        return read_stream(path, f"arrow_data/{stream}")[0].schema

    def read_column_attributes(self, path: Path, stream: str, column: str) -> dict[str, Any]:
        field = self._schema(path, stream).field(column)
        return {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}

    def read_times(self, path: Path, stream: str, column: str) -> np.ndarray:
        table = pa.Table.from_batches(read_stream(path, f"arrow_data/{stream}"))
        assert table.schema.field(column).type == pa.timestamp("ns", tz="UTC")
        return np.asarray(table.column(column).cast(pa.int64()).to_numpy(), "datetime64[ns]")

    def read_frame_times(self, path: Path, stream: str) -> np.ndarray:
        with h5py.File(path, "r") as f:
            return np.asarray(f[stream]["timestamp_ns"][()], "datetime64[ns]")
