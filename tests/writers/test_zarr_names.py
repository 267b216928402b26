"""Zarr: column names and metadata keys checked like stream names; hostile input to every
public call gives a DaqStorageError and leaves what was written readable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr
import zarr

import daq_storage.writers._zarr_metadata as zarr_metadata
from daq_storage.errors import DaqStorageError, InvalidName
from daq_storage.writers import ZarrWriter


def _batch(names: list[str], rows: int = 3) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(np.arange(rows) + 10 * i) for i in range(len(names))], names=names
    )


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if "/c" not in f"/{p.name}")


@pytest.mark.parametrize(
    "names",
    [
        ["x", "x"],  # duplicates
        ["x", "x.valid"],  # x's null mask
        ["x.valid", "x"],
        ["a/b", "a_b"],  # both map to a_b
        ["a\x00b"],  # NUL
        [""],
        ["."],
        [".."],
        ["zarr.json"],
        ["__x", "x"],
    ],
)
def test_column_names_that_would_share_an_array_or_are_unusable_are_refused_up_front(
    tmp_path: Path, names: list[str]
):
    path = tmp_path / "c.zarr"
    with ZarrWriter(path) as writer:
        writer.write_batch("kept", _batch(["v"]))
        writer.flush()
        with pytest.raises(InvalidName, match="stream 's'"):
            writer.write_batch("s", _batch(names))
        assert not (path / "s").exists()  # nothing made
        with pytest.raises(InvalidName, match="stream 'kept'"):
            writer.write_batch("kept", _batch(["v", *names]))
        writer.write_batch("kept", _batch(["v"]))
    dataset = xr.open_zarr(path, group="kept")
    assert list(dataset.data_vars) == ["v"]
    np.testing.assert_array_equal(dataset["v"].values, [0, 1, 2, 0, 1, 2])


def test_a_struct_field_beside_a_column_of_its_name_is_refused(tmp_path: Path):
    struct = pa.StructArray.from_arrays([pa.array([1, 2])], names=["b"])
    batch = pa.RecordBatch.from_arrays([struct, pa.array([3, 4])], names=["a", "a.b"])
    with ZarrWriter(tmp_path / "c.zarr") as writer:
        with pytest.raises(InvalidName, match=r"'a\.b' appears twice"):
            writer.write_batch("s", batch)
        # A later batch may not bring a column whose mask name another column holds.
        writer.write_batch("s", _batch(["x"]))
        with pytest.raises(InvalidName, match=r"'x\.valid' belongs to column 'x'"):
            writer.write_batch("s", _batch(["x.valid"]))


def test_unsafe_column_names_are_mapped_safely_and_kept_as_original_name(tmp_path: Path):
    """Path separators and characters a file name cannot hold are replaced as in stream
    names, consistently from batch to batch; the name as given is the array's
    ``original_name``; names that are safe already (spaces, units, letters) are kept."""
    path = tmp_path / "c.zarr"
    long = "l" * 300
    wide = "測" * 100  # 300 bytes in UTF-8
    names = ["/evil", "a/b", "../up", "power (W)", "é", long, wide, "tab\there"]
    with ZarrWriter(path) as writer:
        for _ in range(2):
            writer.write_batch("s", _batch(names))
    dataset = xr.open_zarr(path, group="s")
    stored = {str(dataset[v].attrs.get("original_name", v)): str(v) for v in dataset.data_vars}
    assert stored == {
        "/evil": "evil", "a/b": "a_b", "../up": "up", "power (W)": "power (W)", "é": "é",
        long: "l" * 100, wide: "測" * 66, "tab\there": "tab_here",
    }  # fmt: skip
    for i, name in enumerate(names):
        values = dataset[stored[name]].values
        np.testing.assert_array_equal(values, [*range(10 * i, 10 * i + 3)] * 2)
    assert sorted(p.name for p in path.iterdir()) == ["s", "zarr.json"]  # nothing escaped
    group: Any = zarr.open_group(path / "s", mode="r", use_consolidated=False)
    assert sorted(group.array_keys()) == sorted(stored.values())
    assert list(group.group_keys()) == []  # no subgroups


def test_metadata_keys_are_checked_on_every_path(tmp_path: Path):
    path = tmp_path / "m.zarr"
    with ZarrWriter(path) as writer:
        writer.write_batch("s", _batch(["v"]))
        for key in (5, None, ("a",), "", "a\x00b"):
            with pytest.raises(InvalidName, match="metadata key"):
                writer.set_metadata(key, "x")  # type: ignore[arg-type]
            with pytest.raises(InvalidName, match="metadata key"):
                writer.set_metadata(key, "x", stream="s")  # type: ignore[arg-type]
            with pytest.raises(InvalidName):
                writer.create_array("a", [2], [2], attributes={key: 1})  # type: ignore[dict-item]
        writer.set_metadata("ok", {"nested": [1, 2.5, None]})
    assert xr.open_zarr(path).attrs["ok"] == {"nested": [1, 2.5, None]}
    np.testing.assert_array_equal(xr.open_zarr(path, group="s")["v"].values, [0, 1, 2])


_HOSTILE: list[tuple[str, Any]] = [
    ("set_metadata", ("k", object())),
    ("set_metadata", ("k", 1, {"stream": 5})),
    ("create_array", ("s", [2], [2])),  # a stream's group already
    ("create_array", ("b", [2], [0])),
    ("create_array", ("b", [2], [2], {"dtype": "no such type"})),
    ("create_array", ("b", [-1], [2])),
    ("create_array", (5, [2], [2])),
    ("create_array", ("a//b", [2], [2])),
    ("write_chunk", ("missing", [0], [1])),
    ("write_chunk", ("s", [0], [1])),
    ("write_chunk", ("grid", ["0"], [1])),
    ("write_chunk", ("grid", [0], [[1]])),
    ("write_chunk", ("grid", [1], [1, 2])),
    ("write_chunk", ("grid", [0], ["text"])),
    ("write_chunk", (None, [0], [1])),
    ("write_batch", ("s", _batch(["v", "v"]))),
    ("write_batch", ("s", pa.record_batch({"v": pa.array([1], pa.decimal128(5, 2))}))),
    ("write_batch", ("s", pa.record_batch({"l": pa.array([[1], [2, 3]])}))),
    ("write_frames", ("s", np.zeros((1, 2, 2), np.uint16))),
    ("write_frames", ("f", np.zeros((1, 3, 3), np.uint16))),
]


@pytest.mark.parametrize(("method", "arguments"), _HOSTILE,
                         ids=[f"{m}-{i}" for i, (m, _) in enumerate(_HOSTILE)])  # fmt: skip
def test_hostile_calls_raise_a_daq_storage_error_and_keep_what_was_written(
    tmp_path: Path, method: str, arguments: tuple[Any, ...]
):
    path = tmp_path / "h.zarr"
    *positional, options = arguments if isinstance(arguments[-1], dict) else (*arguments, {})
    with ZarrWriter(path) as writer:
        writer.write_batch("s", _batch(["v"]))
        writer.write_frames("f", np.ones((2, 2, 2), np.uint16))
        writer.create_array("grid", [2], [2], dtype=np.int64)
        writer.flush()
        with pytest.raises(DaqStorageError):
            getattr(writer, method)(*positional, **options)
        writer.write_batch("s", _batch(["v"]))
    np.testing.assert_array_equal(xr.open_zarr(path, group="s")["v"].values, [0, 1, 2] * 2)
    np.testing.assert_array_equal(xr.open_zarr(path, group="f")["frames"].values,
                                  np.ones((2, 2, 2), np.uint16))  # fmt: skip
    assert zarr.open_array(path / "grid", mode="r").shape == (2,)


def test_set_metadata_writes_nothing_until_the_flush_whatever_the_number_of_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Each key costs the same (no document is written per call): the documents one flush
    writes do not depend on the number of keys set before it."""
    written: list[int] = []
    encode = zarr_metadata.encode

    def counted(document: Any) -> bytes:
        written.append(1)
        return encode(document)

    monkeypatch.setattr(zarr_metadata, "encode", counted)
    counts = []
    for keys in (10, 2000):
        with ZarrWriter(tmp_path / f"{keys}.zarr") as writer:
            writer.write_batch("s", _batch(["v"]))
            writer.flush()
            written.clear()
            for key in range(keys):
                writer.set_metadata(f"k{key}", key)
                writer.set_metadata(f"k{key}", key, stream="s")
            assert written == []
            writer.flush()
            counts.append(len(written))
        attributes = xr.open_zarr(tmp_path / f"{keys}.zarr", group="s").attrs
        assert attributes[f"k{keys - 1}"] == keys - 1
    assert counts[0] == counts[1]


@pytest.mark.parametrize("struct_first", [True, False])
def test_a_struct_field_and_a_column_of_its_name_in_two_batches_go_to_two_parts(
    tmp_path: Path, struct_first: bool
):
    """``a.b`` from a struct in one batch and a top-level ``a.b`` in a later batch (or the
    other way round) would fill one array with two columns: the later batch starts a new
    part (check_batch says so first: no change of schema, nothing refused), and each
    part's ``a.b`` holds its own column's values."""
    struct = pa.RecordBatch.from_arrays(
        [pa.StructArray.from_arrays([pa.array([1, 2])], names=["b"])], names=["a"]
    )
    column = pa.RecordBatch.from_arrays([pa.array([3, 4])], names=["a.b"])
    first, later = (struct, column) if struct_first else (column, struct)
    path = tmp_path / "c.zarr"
    with ZarrWriter(path) as writer:
        writer.write_batch("s", first)
        assert writer.check_batch("s", later).kind == "same"
        writer.write_batch("s", later)
        writer.write_batch("s", later)
        writer.write_batch("s", first)
        parts = [(part.key, part.first) for part in writer.describe("s").parts]
    assert parts == [("s", 0), ("s__part0002", 2), ("s__part0003", 6)]
    values = [xr.open_zarr(path, group=key)["a.b"].values.tolist() for key, _ in parts]
    firsts, laters = ([1, 2], [3, 4]) if struct_first else ([3, 4], [1, 2])
    assert values == [firsts, laters * 2, firsts]
    assert xr.open_zarr(path, group="s").attrs["parts"] == [
        {"key": key, "first": first} for key, first in parts
    ]
