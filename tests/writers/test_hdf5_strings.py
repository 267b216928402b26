"""HDF5 dictionary-coded text: low-cardinality text columns stored as codes plus their
categories, read back by hand with h5py (as a scientist would) and with h5dump; which
columns ``auto`` codes; codes that widen, a column past the limit continuing as text in
a new part, SWMR, nulls, names that would collide with a categories dataset."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import pytest

from daq_storage.errors import ConfigError, SchemaMismatch, UnsupportedData
from daq_storage.sim import SimulatedPowerMeter
from daq_storage.writers import Hdf5Writer
from daq_storage.writers._hdf5_strings import AUTO_LIMIT


def decoded(group: h5py.Group, column: str) -> list[Any]:
    """A column as text, by hand: codes looked up in the categories, nulls as ``None``."""
    dataset = group[column]
    values: list[Any]
    if dataset.attrs.get("encoding") == "dictionary":
        categories = group[dataset.attrs["categories"]][()].astype(str)
        values = [str(v) for v in categories[dataset[()]]] if len(categories) else [
            None] * len(dataset)  # fmt: skip
    else:
        values = [v.decode() for v in dataset[()]]
    valid = group.get(f"{column}.valid")
    if valid is not None:
        values = [v if ok else None for v, ok in zip(values, valid[()], strict=True)]
    return values


def test_power_meter_codes_decode_by_hand_and_the_file_is_small(tmp_path: Path):
    """Two channels and a unit, the power-meter schema: both text columns coded, read
    back by hand as the same text; gzip'd file below 40 % of the Arrow bytes (whole
    chunks: a chunk part-filled at close is stored uncompressed)."""
    meter = SimulatedPowerMeter(channels=("pm_a", "pm_b"), seed=1, start_ns=0)
    batches = [meter.read_batch(5000) for _ in range(20)]
    path = tmp_path / "pm.h5"
    with Hdf5Writer(path, chunk_size=10_000) as writer:
        for batch in batches:
            writer.write_batch("power_meter_01", batch)
    table = pa.Table.from_batches(batches)
    with h5py.File(path, "r") as f:
        g = f["power_meter_01"]
        for column in ("channel", "unit"):
            attrs = dict(g[column].attrs)
            assert attrs["encoding"] == "dictionary"
            assert attrs["categories"] == f"{column}.categories"
            assert attrs["arrow_type"] == "string"
            assert g[column].dtype == np.uint8
            assert g[column].compression == "gzip"
            assert decoded(g, column) == table.column(column).to_pylist()
        assert list(g["channel.categories"][()].astype(str)) == ["pm_a", "pm_b"]
        np.testing.assert_array_equal(g["value"][()], table.column("value").to_numpy())
    size = path.stat().st_size / sum(b.nbytes for b in batches)
    assert size < 0.4, size


def test_auto_codes_few_distinct_values_and_dictionaries(tmp_path: Path):
    n = 64
    batch = pa.record_batch({
        "few": [f"v{i % 4}" for i in range(n)],  # 4 <= 64 / 16: coded
        "many": [f"v{i % 5}" for i in range(n)],  # 5 > 64 / 16: text
        "unique": [f"u{i}" for i in range(n)],
        "cat": pa.array([f"k{i % 50}" for i in range(n)]).dictionary_encode(),  # always
        "empty": pa.nulls(n, pa.string()),  # no value to judge by: text
        "big": pa.array([f"b{i % 2}" for i in range(n)], pa.large_string()),
        "view": pa.array([f"w{i % 2}" for i in range(n)]).cast(pa.string_view()),  # polars'
        "pos": pa.array([{"name": "a"}] * n, pa.struct([("name", pa.string())])),
    })  # fmt: skip
    small = batch.slice(0, 15)  # fewer than 16 rows: no column of it is judged coded
    path = tmp_path / "auto.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch("s", batch)
        writer.write_batch("t", small.drop_columns(["cat"]))
    with h5py.File(path, "r") as f:
        s = f["s"]
        coded = {name for name in s if s[name].attrs.get("encoding") == "dictionary"}
        assert coded == {"few", "cat", "big", "view"}
        assert s["cat"].attrs["arrow_type"] == "dictionary<values=string, indices=int32, ordered=0>"
        assert s["big"].attrs["arrow_type"] == "large_string"
        for column in ("few", "many", "unique", "cat", "empty", "big", "view"):
            assert decoded(s, column) == batch.column(column).cast(pa.string()).to_pylist()
        assert h5py.check_string_dtype(s["pos.name"].dtype) is not None  # struct fields: text
        assert not any(f["t"][name].attrs.get("encoding") for name in f["t"])


@pytest.mark.parametrize("strings", ["vlen", "dictionary"])
def test_strings_option_codes_every_text_column_or_none(tmp_path: Path, strings: str):
    batch = pa.record_batch({
        "unique": [f"u{i}" for i in range(40)],
        "cat": pa.array(["a", "b"] * 20).dictionary_encode(),
    })  # fmt: skip
    path = tmp_path / f"{strings}.h5"
    with Hdf5Writer(path, strings=strings) as writer:
        writer.write_batch("s", batch)
        writer.write_batch("s", batch)
    with h5py.File(path, "r") as f:
        for column in ("unique", "cat"):
            assert (f["s"][column].attrs.get("encoding") == "dictionary") == (
                strings == "dictionary")  # fmt: skip
            assert decoded(f["s"], column) == batch.column(column).cast(pa.string()).to_pylist() * 2
        if strings == "dictionary":
            assert len(f["s/unique.categories"]) == 40  # each text once, codes for repeats


def test_categories_are_only_appended_codes_keep_their_meaning(tmp_path: Path):
    """New values in later batches (and after flushes) take the next codes; codes the
    file already held keep theirs; an Arrow dictionary's own order, duplicates and
    unused entries do not matter; a dictionary with a null value is a null row."""
    path = tmp_path / "grow.h5"
    first = pa.record_batch({"c": ["b", "a"] * 16})
    dictionary = pa.DictionaryArray.from_arrays(
        pa.array([0, 1, 3, 2, None, 0] * 6, pa.int8()), pa.array(["c", "a", "zz", "c"])
    )
    second = pa.record_batch({"c": dictionary.cast(pa.string())})
    with Hdf5Writer(path, strings="dictionary") as writer:
        writer.write_batch("s", first)
        writer.flush()
        with h5py.File(path, "r", locking=False) as f:
            assert list(f["s/c.categories"][()].astype(str)) == ["b", "a"]
            before = f["s/c"][()]
        writer.write_batch("s", second)
        writer.write_batch("d", pa.record_batch({"c": dictionary}))
        writer.write_batch("d", pa.record_batch({"c": pa.DictionaryArray.from_arrays(
            pa.array([0, 0, 1], pa.int8()), pa.array(["x", None]))}))  # fmt: skip
    with h5py.File(path, "r") as f:
        assert list(f["s/c.categories"][()].astype(str)) == ["b", "a", "c", "zz"]
        np.testing.assert_array_equal(f["s/c"][: len(before)], before)
        assert decoded(f["s"], "c") == first.column(0).to_pylist() + second.column(0).to_pylist()
        assert list(f["d/c.categories"][()].astype(str)) == ["c", "a", "zz", "x"]
        assert decoded(f["d"], "c") == [*dictionary.cast(pa.string()).to_pylist(), "x", "x", None]
        assert f["d/c"].dtype == np.uint8


def test_codes_widen_past_256_and_65536_categories(tmp_path: Path):
    path = tmp_path / "wide.h5"
    batches = [
        pa.record_batch({"c": [f"v{i % 3}" for i in range(100)]}),
        pa.record_batch({"c": [f"w{i}" for i in range(300)]}),
        pa.record_batch({"c": [f"x{i}" for i in range(66_000)]}),
    ]
    dtypes = []
    with Hdf5Writer(path, strings="dictionary", chunk_size=1000) as writer:
        for batch in batches:
            writer.write_batch("s", batch)
            writer.flush()
            with h5py.File(path, "r", locking=False) as f:
                dtypes.append(f["s/c"].dtype)
                assert dict(f["s/c"].attrs)["categories"] == "c.categories"
    assert dtypes == [np.uint8, np.uint16, np.uint32]
    with h5py.File(path, "r") as f:
        assert decoded(f["s"], "c") == pa.Table.from_batches(batches).column("c").to_pylist()
        assert f["s/c"].attrs["encoding"] == "dictionary"


def test_auto_column_past_the_limit_continues_as_text_in_a_new_part(tmp_path: Path):
    path = tmp_path / "limit.h5"
    first = pa.record_batch({"c": [f"v{i % 8}" for i in range(160)], "i": np.arange(160)})
    flood = pa.record_batch({"c": [f"u{i}" for i in range(AUTO_LIMIT)],
                             "i": np.arange(160, 160 + AUTO_LIMIT)})  # fmt: skip
    last = pa.record_batch({"c": ["v1", "end"], "i": [0, 1]})
    with Hdf5Writer(path) as writer:
        writer.write_batch("s", first)
        writer.write_batch("s", flood)
        writer.write_batch("s", last)
        assert [p.key for p in writer.describe("s").parts] == ["/s", "/s__part0002"]
    with h5py.File(path, "r") as f:
        parts = json.loads(f["s"].attrs["parts"])
        assert parts == [{"key": "/s", "first": 0}, {"key": "/s__part0002", "first": 160}]
        assert f["s/c"].attrs["encoding"] == "dictionary"
        assert h5py.check_string_dtype(f["s__part0002/c"].dtype) is not None
        assert decoded(f["s"], "c") == first.column("c").to_pylist()
        assert decoded(f["s__part0002"], "c") == [*flood.column("c").to_pylist(), "v1", "end"]


def test_swmr_codes_are_uint32_from_the_start_and_grow_after_swmr_started(tmp_path: Path):
    path = tmp_path / "swmr.h5"
    with Hdf5Writer(path, swmr=True) as writer:
        writer.write_batch("s", pa.record_batch({"c": ["a", "b"] * 16}))
        writer.flush()  # SWMR starts: nothing can be rewritten from here on
        writer.write_batch("s", pa.record_batch({"c": [f"n{i}" for i in range(300)]}))
        writer.flush()
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            assert f["s/c"].dtype == np.uint32
            assert decoded(f["s"], "c") == ["a", "b"] * 16 + [f"n{i}" for i in range(300)]


def test_nulls_hold_code_zero_under_their_mask(tmp_path: Path):
    path = tmp_path / "nulls.h5"
    values = [None, "x", "y", None] * 8
    with Hdf5Writer(path) as writer:
        writer.write_batch("s", pa.record_batch({"c": pa.array(values, pa.string())}))
        writer.write_batch("s", pa.record_batch({"other": [1, 2]}))  # c missing: nulls
    with h5py.File(path, "r") as f:
        assert f["s/c"].attrs["encoding"] == "dictionary"
        assert decoded(f["s"], "c") == [*values, None, None]
        assert list(f["s/c"][()][~f["s/c.valid"][()]]) == [0] * 18


def test_a_column_named_like_a_categories_dataset_is_refused_or_moved_to_a_part(tmp_path: Path):
    path = tmp_path / "names.h5"
    with Hdf5Writer(path) as writer:
        both = pa.record_batch({"x": ["a"] * 32, "x.categories": [1] * 32})
        with pytest.raises(SchemaMismatch, match=r"keeps its categories \(x\.categories\)"):
            writer.write_batch("s", both)
        writer.write_batch("s", pa.record_batch({"x": ["a"] * 32}))
        writer.write_batch("s", pa.record_batch({"x.categories": ["b"] * 32}))  # a new part
        assert len(writer.describe("s").parts) == 2
    with h5py.File(path, "r") as f:
        assert list(f["s/x.categories"][()].astype(str)) == ["a"]
        assert decoded(f["s__part0002"], "x.categories") == ["b"] * 32


def test_text_with_nul_is_refused_before_anything_is_stored(tmp_path: Path):
    path = tmp_path / "nul.h5"
    with Hdf5Writer(path, strings="dictionary") as writer:
        writer.write_batch("s", pa.record_batch({"c": ["a", "b"]}))
        with pytest.raises(UnsupportedData, match=r"'c'.*NUL"):
            writer.write_batch("s", pa.record_batch({"c": ["a", "b\x00c"]}))
        writer.write_batch("s", pa.record_batch({"c": ["c"]}))
    with h5py.File(path, "r") as f:
        assert decoded(f["s"], "c") == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"strings": "categorical"}, "strings"),
     ({"strings": "dictionary", "table_layout": "arrow_ipc"}, "applies to the column layout"),
     ({"swmr": True, "table_layout": "arrow_ipc"}, "does not allow"),
     ({"table_layout": "parquet"}, "table_layout")],
)  # fmt: skip
def test_string_options_that_would_do_nothing_are_refused(tmp_path: Path,
                                                          options: dict[str, Any],
                                                          message: str):  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        Hdf5Writer(tmp_path / "x.h5", **options)


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump (hdf5-tools) not installed")
def test_h5dump_shows_codes_and_categories(tmp_path: Path):
    path = tmp_path / "dump.h5"
    with Hdf5Writer(path) as writer:
        writer.write_batch("s", pa.record_batch({"unit": ["mW", "W"] * 16}))
    result = subprocess.run(["h5dump", "-d", "/s/unit", "-d", "/s/unit.categories", str(path)],
                            capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert "H5T_STD_U8LE" in result.stdout
    assert "0, 1, 0, 1" in result.stdout
    assert '"mW", "W"' in result.stdout
    assert 'ATTRIBUTE "encoding"' in result.stdout
