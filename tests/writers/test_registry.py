"""Writers by name: the six built-ins, unknown names and options, entry-point plug-ins."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import tifffile
import zarr

import daq_storage
from daq_storage import writers
from daq_storage.errors import ConfigError
from tests.testing.plugin import SOURCE, forget_plugin, install_plugin

BUILTIN = ["hdf5", "arrow", "parquet", "csv", "zarr", "tiff"]
FRAMES = np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8)
TABLE = pa.record_batch({"v": pa.array([1.5, 2.5, 3.5])})


def _read_hdf5(path: Path) -> Any:
    with h5py.File(path / "run.h5", "r") as f:
        return f["s"]["v"][()].tolist()


def _read_arrow(path: Path) -> Any:
    with pa.OSFile(str(path / "run" / "s.arrows")) as source:
        return pa.ipc.open_stream(source).read_all().column("v").to_pylist()


def _read_zarr(path: Path) -> Any:
    group: Any = zarr.open_group(path / "run.zarr", mode="r")
    return group["s"]["v"][:].tolist()


READ_BACK: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "hdf5": ("run.h5", _read_hdf5),
    "arrow": ("run", _read_arrow),
    "parquet": ("run", lambda p: pl.read_parquet(p / "run" / "s.parquet")["v"].to_list()),
    "csv": ("run", lambda p: pl.read_csv(p / "run" / "s.csv")["v"].to_list()),
    "zarr": ("run.zarr", _read_zarr),
    "tiff": ("run", lambda p: tifffile.imread(p / "run" / "s.tif")),
}


def test_builtin_names_in_order():
    assert daq_storage.available_writers()[:6] == BUILTIN


@pytest.mark.parametrize("name", BUILTIN)
def test_open_writer_by_name_from_the_package(tmp_path: Path, name: str):
    target, read = READ_BACK[name]
    with daq_storage.open_writer(name, tmp_path / target) as writer:
        assert isinstance(writer, daq_storage.Writer)
        assert type(writer).name == name
        if writer.supports_tables:
            writer.write_batch("s", TABLE)
        else:
            writer.write_frames("s", FRAMES)
        stats = writer.stats
        assert isinstance(stats, daq_storage.WriterStats)
        assert (stats.batches, stats.rows) == ((1, 3) if writer.supports_tables else (0, 0))
        assert stats.frames == (0 if writer.supports_tables else 2)
    got = read(tmp_path)
    if writer.supports_tables:
        assert got == [1.5, 2.5, 3.5]
    else:
        np.testing.assert_array_equal(got, FRAMES)


def test_the_package_exports_the_writers():
    exported = {
        "open_writer", "available_writers", "Writer", "WriterStats", "ArrowWriter", "CsvWriter",
        "Hdf5Writer", "ParquetWriter", "TiffWriter", "ZarrWriter",
    }  # fmt: skip
    assert exported <= set(daq_storage.__all__)
    for name in exported:
        assert getattr(daq_storage, name) is getattr(writers, name)
    by_name = {cls.name: cls for cls in (daq_storage.Hdf5Writer, daq_storage.ArrowWriter,
               daq_storage.ParquetWriter, daq_storage.CsvWriter, daq_storage.ZarrWriter,
               daq_storage.TiffWriter)}  # fmt: skip
    assert list(by_name) == BUILTIN
    for name, cls in by_name.items():
        assert writers.get_writer_class(name) is cls
    with pytest.raises(AttributeError, match="no attribute 'HdfWriter'"):
        _ = daq_storage.HdfWriter


def test_importing_the_package_leaves_the_format_libraries_unloaded():
    # Ring readers and the CLI import daq_storage; the writers load on first use.
    script = textwrap.dedent(
        """
        import sys
        import daq_storage
        heavy = {"h5py", "zarr", "tifffile", "daq_storage.writers"}
        print(sorted(heavy & set(sys.modules)))
        daq_storage.CsvWriter
        print("daq_storage.writers" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)  # fmt: skip
    assert result.stdout.split("\n")[:2] == ["[]", "True"]


def test_format_names_ignore_case(tmp_path: Path):
    assert writers.get_writer_class("Parquet") is daq_storage.ParquetWriter
    with daq_storage.open_writer("HDF5", tmp_path / "run.h5") as writer:
        writer.write_batch("s", TABLE)
    assert isinstance(writer, daq_storage.Hdf5Writer)
    assert _read_hdf5(tmp_path) == [1.5, 2.5, 3.5]
    with pytest.raises(ConfigError, match="unknown writer 'HDF'"):
        daq_storage.open_writer("HDF", tmp_path / "x.h5")


def test_path_suffix_says_what_the_path_is_named(tmp_path: Path):
    """A file or a store takes its suffix; a directory of stream files takes none."""
    suffixes = {name: writers.get_writer_class(name).path_suffix for name in BUILTIN}
    assert suffixes == {"hdf5": ".h5", "arrow": "", "parquet": "", "csv": "", "zarr": ".zarr",
                        "tiff": ""}  # fmt: skip

    class FileWriter(writers.Writer):  # a plug-in that sets only the older class variables
        suffixes = (".jsonl",)
        path_is_directory = False

    class DirectoryWriter(writers.Writer):
        suffixes = (".txt",)

    class Subclass(writers.Hdf5Writer):
        pass

    class PerStream(writers.CsvWriter):
        suffixes = (".tsv",)

    assert FileWriter.path_suffix == ".jsonl"
    assert DirectoryWriter.path_suffix == ""
    assert Subclass.path_suffix == ".h5"
    assert PerStream.path_suffix == ""


def test_unknown_name_and_option(tmp_path: Path):
    with pytest.raises(
        ConfigError, match=f"unknown writer 'xlsx'; available: {', '.join(BUILTIN)}"
    ):
        daq_storage.open_writer("xlsx", tmp_path / "x")
    with pytest.raises(ConfigError, match=r"writer 'csv': .*'compression'.*options are: "
                                          r"iso_timestamps, delimiter"):  # fmt: skip
        daq_storage.open_writer("csv", tmp_path / "x", compression="zstd")
    assert not (tmp_path / "x").exists()


@pytest.fixture
def plugin(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A real installed distribution with writers in the entry-point group, on sys.path."""
    yield install_plugin(tmp_path_factory.mktemp("site"), monkeypatch)
    forget_plugin()


def test_a_plugin_writer_is_found_and_opened(plugin: Path, tmp_path: Path):
    assert daq_storage.available_writers() == [*BUILTIN, "dict", "gone", "jsonl"]
    assert writers.get_writer_class("JSONL").path_suffix == ".jsonl"
    with daq_storage.open_writer("jsonl", tmp_path / "run.jsonl", ensure_ascii=False) as writer:
        assert type(writer).__module__ == "daq_plugin_example"
        writer.write_batch("power", TABLE)
        assert writer.stats.rows == 3
    frame = pl.read_ndjson(tmp_path / "run.jsonl")
    assert frame.to_dict(as_series=False) == {"stream": ["power"] * 3, "v": [1.5, 2.5, 3.5]}
    # Built-in names cannot be taken over.
    assert writers.get_writer_class("csv") is daq_storage.CsvWriter
    with pytest.raises(ConfigError, match=r"writer 'jsonl': .*'gain'.*options are: ensure_ascii"):
        daq_storage.open_writer("jsonl", tmp_path / "x.jsonl", gain=2)
    with pytest.raises(ConfigError, match=r"writer 'dict' \(daq_plugin_example:NotAWriter\) "
                                          "is not a daq_storage Writer"):  # fmt: skip
        daq_storage.open_writer("dict", tmp_path / "y")
    with pytest.raises(ConfigError, match=r"writer 'gone' \(daq_plugin_missing:Writer\) "
                                          "cannot be loaded: No module named"):  # fmt: skip
        daq_storage.open_writer("gone", tmp_path / "z")


@pytest.mark.parametrize(
    ("removed", "named"),
    [
        ('    mimetype: ClassVar[str] = "application/x-ndjson"\n', "mimetype"),
        ('    on_incompatible: ClassVar[str] = "refuse"\n', "on_incompatible"),
        ('    on_widening: ClassVar[str] = "in_place"\n', "on_widening"),
    ],
)
def test_a_plugin_missing_a_capability_fails_at_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, removed: str, named: str
):
    """A plug-in class that forgets part of the contract fails when its module is
    imported, naming what it must declare, not in the middle of a run."""
    source = SOURCE.read_text()
    assert removed in source
    install_plugin(
        tmp_path / "site",
        monkeypatch,
        entry_points="[daq_storage.writers]\nbroken = daq_plugin_broken:JsonLinesWriter\n",
        modules={"daq_plugin_broken": source.replace(removed, "")},
    )
    try:
        with pytest.raises(
            TypeError, match=rf"JsonLinesWriter \(name 'jsonl'\) must declare {named}"
        ):
            importlib.import_module("daq_plugin_broken")
        # Through the registry: the same TypeError, or a ConfigError carrying it.
        with pytest.raises((TypeError, ConfigError), match=f"must declare {named}"):
            daq_storage.open_writer("broken", tmp_path / "run.jsonl")
    finally:
        forget_plugin()
    assert not (tmp_path / "run.jsonl").exists()


def test_a_plugin_with_an_unknown_policy_fails_at_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    source = SOURCE.read_text().replace(
        'on_incompatible: ClassVar[str] = "refuse"', 'on_incompatible: ClassVar[str] = "drop"'
    )
    install_plugin(tmp_path / "site", monkeypatch, entry_points="",
                   modules={"daq_plugin_policy": source})  # fmt: skip
    try:
        with pytest.raises(TypeError, match=r"on_incompatible = 'drop' is not one of"):
            importlib.import_module("daq_plugin_policy")
    finally:
        forget_plugin()
