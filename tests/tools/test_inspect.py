"""inspect_path: the tree of any output, its facts checked against the format's own
library, and as JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import h5py
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tifffile
import zarr

from daq_storage.errors import ConfigError, RunNotFound
from daq_storage.tools import Node, inspect_path
from tests.tools.conftest import GAPS, TARGETS, write_lossy_versions, write_run


def _json(node: Node) -> dict[str, Any]:
    """The tree through JSON text and back: what ``--json`` gives a script."""
    tree: dict[str, Any] = json.loads(json.dumps(node.to_dict(), allow_nan=False))
    return tree


def _find(tree: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        tree = next(c for c in tree["children"] if c["name"] == name)
    return tree


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_format_shows_its_run_streams_and_files(every_format: dict[str, Path], name: str):
    tree = _json(inspect_path(every_format[name]))
    assert tree["kind"] == "output"
    assert tree["facts"]["format"] == name
    assert tree["facts"]["lost_records"] == 0
    run = _find(tree, "run")
    assert run["facts"]["metadata"]["experiment"] == "readback"
    assert _find(run, "loss ledger")["summary"] == "no records lost"
    streams = {s["name"]: s["facts"] for s in _find(run, "streams")["children"]}
    if name != "tiff":
        assert streams["power"]["kind"] == "table"
        assert streams["power"]["rows"] == 2400
        assert streams["power"]["columns"]["value"] == "double"
        assert streams["power"]["metadata"]["wavelength_nm"] == 633.0
        assert streams["rich"]["rows"] == 12
    if name != "csv":
        assert streams["camera"] == {
            **streams["camera"],
            "kind": "frames",
            "rows": 12,
            "frame_shape": [16, 20],
            "dtype": "uint16",
        }
    files = _find(tree, "files")
    assert files["facts"]["count"] == 1
    assert files["facts"]["bytes"] > 0


def test_hdf5_datasets_with_chunks_codec_and_ratio_as_h5py_sees_them(
    every_format: dict[str, Path],
):
    path = every_format["hdf5"]
    tree = _json(inspect_path(path))
    layout = _find(tree, "files", path.name)
    frames = _find(layout, "camera", "frames")["facts"]
    with h5py.File(path, "r") as f:
        dataset = f["camera/frames"]
        assert frames["shape"] == list(dataset.shape) == [12, 16, 20]
        assert frames["dtype"] == "uint16"
        assert frames["chunks"] == list(dataset.chunks)
        assert frames["compression"] == dataset.compression == "gzip"
        stored = dataset.id.get_storage_size()
        assert frames["stored_bytes"] == stored
        assert frames["ratio"] == pytest.approx(dataset.size * 2 / stored, rel=1e-2)
        assert layout["facts"]["attributes"]["experiment"] == f.attrs["experiment"]
        value = _find(layout, "power", "value")["facts"]
        assert value["attributes"]["units"] == f["power/value"].attrs["units"] == "W"
        for facts, name in ((frames, "camera/frames"), (value, "power/value")):
            ids = f[name].id
            raw = [ids.get_chunk_info(i).filter_mask != 0 for i in range(ids.get_num_chunks())]
            assert facts["unfiltered_chunks"] == sum(raw)


def test_zarr_arrays_with_dimension_names_and_codecs(every_format: dict[str, Path]):
    path = every_format["zarr"]
    layout = _find(_json(inspect_path(path)), "files", path.name)
    frames = _find(layout, "camera", "frames")["facts"]
    array: Any = zarr.open_array(str(path / "camera" / "frames"), mode="r")
    assert frames["shape"] == list(array.shape)
    assert frames["dimension_names"] == list(array.metadata.dimension_names)
    assert frames["chunks"] == list(array.chunks)
    assert [c["name"] for c in frames["codecs"]] == [
        c.to_dict()["name"] for c in array.metadata.codecs
    ]
    assert frames["stored_bytes"] == array.nbytes_stored()


def test_parquet_schema_row_groups_and_metadata(every_format: dict[str, Path]):
    path = every_format["parquet"] / "power.parquet"
    layout = _find(
        _json(inspect_path(every_format["parquet"])), "files", "run_parquet", "power.parquet"
    )
    metadata = pq.ParquetFile(path).metadata
    assert layout["facts"]["rows"] == metadata.num_rows == 2400
    assert layout["facts"]["row_groups"] == metadata.num_row_groups
    assert sum(layout["facts"]["row_group_rows"]) == 2400
    assert layout["facts"]["attributes"]["wavelength_nm"] == 633.0
    columns = {c["name"]: c["facts"] for c in layout["children"]}
    assert columns["value"]["type"] == "double"
    assert columns["value"]["attributes"] == {"units": "W"}
    assert columns["value"]["compression"] == [metadata.row_group(0).column(2).compression]


def test_arrow_csv_and_tiff_files(every_format: dict[str, Path]):
    arrow = _find(_json(inspect_path(every_format["arrow"])), "files", "run_arrow")
    power = _find(arrow, "power.arrows")["facts"]
    with pa.memory_map(str(every_format["arrow"] / "power.arrows")) as source:
        batches = list(pa.ipc.open_stream(source))
    assert power["rows"] == sum(b.num_rows for b in batches) == 2400
    assert power["batches"] == len(batches)

    csv = _find(_json(inspect_path(every_format["csv"])), "files", "run_csv")
    assert _find(csv, "power.csv")["facts"]["rows"] == 2400
    assert _find(csv, "power.csv")["facts"]["columns"][:2] == ["timestamp_ns", "channel"]
    assert "content" in _find(csv, "metadata.json")["facts"]

    tiff = _find(_json(inspect_path(every_format["tiff"])), "files", "run_tiff", "camera.tif")
    with tifffile.TiffFile(every_format["tiff"] / "camera.tif") as f:
        assert tiff["facts"]["pages"] == len(f.pages) == 12
        assert tiff["facts"]["page_shape"] == list(f.pages.first.shape) == [16, 20]
    assert tiff["facts"]["dtype"] == "uint16"


@pytest.mark.parametrize("name", ["hdf5", "parquet", "zarr"])
def test_the_loss_ledger_of_every_version_comes_first(tmp_path: Path, name: str):
    paths = write_lossy_versions(tmp_path, name)
    node = inspect_path(tmp_path)
    tree = _json(node)
    assert tree["kind"] == "output"  # the rotated versions of one run, read as one
    assert tree["facts"]["lost_records"] == 13
    assert "13 RECORDS LOST" in tree["summary"]
    run = _find(tree, "run")
    assert run["children"][0]["name"] == "loss ledger"
    ledger = run["children"][0]
    assert ledger["facts"] == {"lost_records": 13, "gaps": 2}
    assert [g["facts"]["first_seq"] for g in ledger["children"]] == [5, 30]
    assert [g["facts"]["file"] for g in ledger["children"]] == [p.name for p in paths]
    for gap, got in zip(GAPS, ledger["children"], strict=True):
        assert {k: got["facts"][k] for k in gap} == gap
    assert _find(run, "streams", "power")["facts"]["rows"] == 100
    assert [f["name"] for f in _find(tree, "files")["children"]] == [p.name for p in paths]


def test_a_directory_of_several_runs_and_formats(tmp_path: Path):
    write_run("hdf5", tmp_path / "a.h5")
    write_run("parquet", tmp_path / "a_parquet")
    write_run("tiff", tmp_path / "nested" / "b_tiff")
    write_run("zarr", tmp_path / "nested" / "c.zarr")
    (tmp_path / "notes.txt").write_text("hello")
    tree = _json(inspect_path(tmp_path))
    assert tree["kind"] == "directory"
    assert tree["facts"]["outputs"] == 4
    kinds = {c["name"]: c["kind"] for c in tree["children"]}
    assert kinds == {
        "a.h5": "output",
        "a_parquet": "output",
        "nested": "directory",
        "notes.txt": "file",
    }
    assert _find(tree, "nested", "b_tiff")["facts"]["format"] == "tiff"
    assert _find(tree, "notes.txt")["facts"]["bytes"] == 5


def test_one_stream_file_alone(every_format: dict[str, Path]):
    node = inspect_path(every_format["parquet"] / "power.parquet")
    assert node.kind == "file"
    assert node.facts["rows"] == 2400
    assert [c.name for c in node.children] == ["timestamp_ns", "channel", "value", "unit"]


def test_a_damaged_file_is_a_problem_of_its_node_and_the_rest_is_shown(
    tmp_path: Path, every_format: dict[str, Path]
):
    shutil.copytree(every_format["parquet"], tmp_path / "good_parquet")
    bad = tmp_path / "bad_parquet"
    bad.mkdir()
    data = (every_format["parquet"] / "power.parquet").read_bytes()
    (bad / "power.parquet").write_bytes(data[: len(data) // 2])
    node = inspect_path(tmp_path)
    assert node.child("good_parquet").problem is None
    problems = node.problems
    assert problems
    assert all("bad_parquet" in p.name or p.name == "power.parquet" for p in problems)
    assert "power.parquet" in (problems[0].problem or "")


def test_nothing_there_is_run_not_found(tmp_path: Path):
    with pytest.raises(RunNotFound, match="does not exist"):
        inspect_path(tmp_path / "missing.h5")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RunNotFound, match="not a file this project writes"):
        inspect_path(tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match="must be a path"):
        inspect_path(42)  # type: ignore[arg-type]


def test_node_lookup_names_the_children_there_are(every_format: dict[str, Path]):
    node = inspect_path(every_format["hdf5"])
    with pytest.raises(KeyError, match="its children are"):
        node.child("run", "nope")
    assert node.child("run", "streams", "camera").facts["rows"] == 12
    assert sum(1 for _ in node.walk()) > 20


def test_an_arrow_file_format_output(tmp_path: Path):
    write_run("arrow", tmp_path / "run_arrow", ipc_format="file", frames=False)
    node = inspect_path(tmp_path / "run_arrow" / "power.arrow")
    assert node.facts["ipc"] == "file format"
    with pa.memory_map(str(tmp_path / "run_arrow" / "power.arrow")) as source:
        reader = pa.ipc.open_file(source)
        assert node.facts["batches"] == reader.num_record_batches
        assert node.facts["rows"] == reader.read_all().num_rows == 2400
