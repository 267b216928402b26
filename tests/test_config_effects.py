"""Configuration keys reach the writers, and every key has an effect or is refused
(test_every_config_key_has_an_effect_or_is_refused); the effects of ``[storage] formats``,
``flush_interval_ms`` and ``[recorder]`` on the Recorder are in
``tests/recorder/test_recorder_config.py``."""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tifffile
import zarr
from pydantic import BaseModel, Field, model_validator

from daq_storage.config import (
    CODEC_KEYS,
    COMPRESSIONS,
    StorageConfig,
    StorageSettings,
)
from daq_storage.errors import ConfigError
from daq_storage.testing import MemoryWriter
from daq_storage.writers import (
    Writer,
    WriterOptions,
    get_writer_class,
    open_writer,
    writer_options,
)


# --------------------------------------------------------------------- config -> writers
class _Options(WriterOptions):
    compression: Literal["none", "zstd"] = "none"
    level: int | None = Field(None, ge=1, le=3)
    tile: int = 1

    @model_validator(mode="after")
    def _level_needs_a_codec(self) -> _Options:
        if self.level is not None and self.compression == "none":
            raise ValueError("a level needs a codec other than 'none'")
        return self


class _PluginWriter(MemoryWriter):
    """A plug-in that takes two of the [storage] keys, under names of its own."""

    name: ClassVar[str] = "plugin"
    Options: ClassVar[type[WriterOptions]] = _Options
    config_keys: ClassVar[Mapping[str, str]] = {
        "compression": "compression",
        "compression_level": "level",
    }

    def __init__(
        self, path: str, *, compression: str = "none", level: int | None = None, tile: int = 1
    ) -> None:
        super().__init__(path)
        self.options = self.validate_options(compression=compression, level=level, tile=tile)


def test_writer_options_maps_the_keys_a_writer_takes_onto_its_options():
    assert writer_options(_PluginWriter, StorageSettings()) == {}  # all unset: its defaults
    settings = StorageSettings(compression="zstd", compression_level=2)
    assert writer_options(_PluginWriter, settings) == {"compression": "zstd", "level": 2}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"chunk_size": 100},
            r"^storage\.chunk_size = 100 \(file daq\.toml\): the plugin writer does not take it "
            r"\(it takes storage\.compression, storage\.compression_level\); unset it or ",
        ),
        (
            {"compression": "gzip"},
            r"^storage\.compression = 'gzip': the plugin writer cannot honour it \(.*\); "
            r"it takes one of 'none', 'zstd'$",
        ),
        (
            {"compression": "zstd", "compression_level": 7},
            r"^storage\.compression_level = 7: the plugin writer cannot honour it "
            r"\(.*less than or equal to 3\); it takes an integer >= 1 and <= 3$",
        ),
        (
            {"compression": "none", "compression_level": 2},
            r"^storage\.compression = 'none', storage\.compression_level = 2: the plugin writer "
            r"refuses them: a level needs a codec other than 'none'$",
        ),
    ],
)
def test_writer_options_refuses_what_a_writer_cannot_honour(
    settings: dict[str, object], expected: str
):
    with pytest.raises(ConfigError, match=expected):
        writer_options(
            _PluginWriter,
            StorageSettings.model_validate(settings),
            sources={"storage.chunk_size": "file daq.toml"},
        )


# --------------------------------------------------------------------- every key
_RECORDER = "recorder.test_recorder_config::"
#: Each accepted key -> the tests that show its effect (a new key fails the suite until
#: it has one, or is refused).
EFFECTS: dict[str, list[str]] = {
    "storage.default_backend": [
        "test_demo::test_demo_applies_the_configured_keys",
        _RECORDER + "test_without_formats_the_default_backend_is_recorded",
    ],
    "storage.output_dir": [
        "test_demo::test_demo_applies_the_configured_keys",
        "recorder.test_recorder_s3::test_a_configured_recorder_writes_into_the_bucket_and_reads_back_over_s3",
    ],
    "storage.destinations": [
        "recorder.test_recorder_s3::test_a_configured_recorder_writes_into_the_bucket_and_reads_back_over_s3",
    ],
    "storage.s3": [
        "recorder.test_recorder_s3::test_a_configured_recorder_writes_into_the_bucket_and_reads_back_over_s3",
    ],
    "storage.auto_flush_interval_secs": [
        "test_config_effects::test_auto_flush_interval_secs_is_the_storage_actors_flush_cadence",
        "actor.test_actor_config::test_the_actor_honours_the_storage_environment_variables",
    ],
    "storage.experiment": ["test_demo::test_demo_applies_the_configured_keys"],
    "storage.compression": [
        "test_config_effects::test_codec_keys_reach_every_writer",
        "test_demo::test_demo_applies_the_configured_keys",
        "test_demo::test_a_key_the_format_cannot_honour_stops_the_demo_before_it_starts",
    ],
    "storage.compression_level": [
        "test_config_effects::test_codec_keys_reach_every_writer",
        "test_demo::test_demo_applies_the_configured_keys",
    ],
    "storage.chunk_size": [
        "test_config_effects::test_codec_keys_reach_every_writer",
        "test_demo::test_demo_applies_the_configured_keys",
    ],
    "storage.flush_interval_ms": [
        _RECORDER + "test_storage_flush_interval_ms_is_the_recorders_cadence",
        "test_demo::test_demo_applies_the_configured_keys",
        "test_demo::test_demo_flushes_only_when_the_interval_falls_due",
    ],
    "storage.formats": [
        _RECORDER + "test_storage_formats_write_every_stream_to_each_format",
        _RECORDER + "test_without_formats_the_default_backend_is_recorded",
        _RECORDER + "test_a_codec_key_a_format_cannot_honour_is_refused_before_start",
    ],
    "ring_buffer.path": ["test_demo::test_a_configured_ring_in_use_is_never_replaced"],
    "ring_buffer.size_mb": [
        "test_demo::test_demo_that_loses_data_says_so_per_stream_and_exits_3",
        "test_demo::test_a_configured_ring_too_big_for_its_tmpfs_is_refused_clearly",
    ],
    "ring_buffer.frames": [
        "test_config::test_ring_frames_size_the_ring_by_records_and_from_config_refuses_to_guess",
        "test_demo::test_demo_applies_the_configured_keys",
    ],
    "ring_buffer.overflow": [
        "test_demo::test_demo_that_loses_data_says_so_per_stream_and_exits_3",
        "test_demo::test_a_block_mode_ring_that_times_out_counts_the_refused_records",
    ],
    "ring_buffer.block_timeout_secs": [
        "test_demo::test_a_block_mode_ring_that_times_out_counts_the_refused_records"
    ],
    "ring_buffer.max_readers": ["test_demo::test_demo_applies_the_configured_keys"],
    "recorder.consumer": [_RECORDER + "test_recorder_consumer_names_the_recorder_on_the_ring"],
    "recorder.streams": [
        _RECORDER + "test_recorder_streams_route_a_stream_to_its_own_formats",
        _RECORDER + "test_a_routed_format_that_cannot_hold_the_stream_is_counted_unroutable",
    ],
    # In the stats on every machine, and in the fsync calls where strace can trace.
    "recorder.durable": [
        _RECORDER + "test_recorder_durable_makes_every_flush_a_durable_one",
        _RECORDER + "test_recorder_durable_fsyncs_the_files_at_each_flush",
    ],
    "recorder.rotate_size_mb": [
        _RECORDER + "test_recorder_rotate_size_mb_starts_the_next_file_at_the_size"
    ],
    "recorder.rotate_interval_secs": [
        _RECORDER + "test_recorder_rotate_interval_secs_starts_the_next_file_after_the_interval"
    ],
    "recorder.batch_rows": [
        _RECORDER + "test_recorder_batch_rows_and_batch_bytes_mb_size_the_table_writes"
    ],
    "recorder.batch_bytes_mb": [
        _RECORDER + "test_recorder_batch_rows_and_batch_bytes_mb_size_the_table_writes"
    ],
    "recorder.frames_per_write": [_RECORDER + "test_recorder_frames_per_write_groups_the_frames"],
    "recorder.start": [_RECORDER + "test_recorder_start_is_where_a_new_recorder_starts_reading"],
    "recorder.stop_timeout_secs": [
        _RECORDER + "test_recorder_stop_timeout_secs_kills_a_recorder_that_cannot_stop"
    ],
}
#: Keys accepted only at a value that does nothing (their feature is not built), and
#: the test that shows every other value refused.
REFUSED: dict[str, str] = {
    # Every value: the Recorder names its files (per format, per rotation) in output_dir.
    "storage.output_path": "test_config::test_invalid_file_values_name_key_value_and_range",
}


def _config_keys() -> list[str]:
    keys = []
    for section, field in StorageConfig.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        keys += [f"{section}.{key}" for key in model.model_fields]
    return keys


def test_every_config_key_has_an_effect_or_is_refused():
    keys = _config_keys()
    assert not set(EFFECTS) & set(REFUSED)
    assert sorted(keys) == sorted([*EFFECTS, *REFUSED]), (
        "a config key without a test of its effect (EFFECTS) or of its refusal (REFUSED)"
    )
    for name in [t for tests in EFFECTS.values() for t in tests] + list(REFUSED.values()):
        module, function = name.split("::")
        found = getattr(importlib.import_module(f"tests.{module}"), function, None)
        assert callable(found), f"{name} does not exist"


def test_the_configuration_page_documents_every_key():
    page = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    for key in _config_keys():
        assert f"`{key}`" in page, f"docs/configuration.md does not document {key}"


# --------------------------------------------------------------------- codec keys, per format
_BACKENDS = ["hdf5", "zarr", "parquet", "arrow", "csv", "tiff"]
#: HDF5 filter id -> codec name; blosc (32001) by its inner compressor.
_H5_FILTERS = {1: "gzip", 32000: "lzf", 32004: "lz4", 32015: "zstd"}
_BLOSC_INNER = {1: "blosc-lz4", 5: "blosc-zstd"}
#: Codecs a format knows by another name (documented with the writer): TIFF's deflate is
#: the zlib stream that HDF5 calls gzip.
_ALSO_NAMED = {("tiff", "gzip"): "zlib"}


@dataclass(frozen=True)
class _Stored:
    """What a file holds, by its own reader: the codec, its level and the rows per
    chunk where the reader shows them."""

    codec: str
    level: int | None
    chunk_rows: int | None
    file: Path


def _h5_stored(path: Path) -> _Stored:
    with h5py.File(path, "r") as f:
        dataset = f["pm/value"]
        plist = dataset.id.get_create_plist()
        filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
        rows = dataset.chunks[0] if dataset.chunks else None
    for code, _flags, values, _name in filters:
        if code == 32001:  # blosc: its compressor is the 7th value, the level the 5th
            return _Stored(_BLOSC_INNER.get(values[6], "blosc-?"), values[4], rows, path)
        if code in _H5_FILTERS:
            level = values[0] if code == 1 else None
            return _Stored(_H5_FILTERS[code], level, rows, path)
    return _Stored("none", None, rows, path)


def _zarr_stored(path: Path) -> _Stored:
    array: Any = zarr.open_group(path, mode="r")["pm/value"]
    codecs: list[dict[str, Any]] = list(array.metadata.to_dict()["codecs"])
    for codec in codecs:  # a sharded array nests its chunks' codecs
        if codec["name"] == "sharding_indexed":
            codecs += codec["configuration"]["codecs"]
    rows = int(array.chunks[0])
    for codec in codecs:
        config = codec.get("configuration", {})
        if codec["name"] == "blosc":
            return _Stored(f"blosc-{config['cname']}", config["clevel"], rows, path)
        if codec["name"] in ("zstd", "gzip"):
            return _Stored(codec["name"], config["level"], rows, path)
    return _Stored("none", None, rows, path)


def _written(backend: str, root: Path, options: dict[str, Any]) -> _Stored:
    """Write a compressible table (frames for TIFF) with ``options`` and read back what
    the file holds."""
    values = np.repeat(np.arange(2_000, dtype=np.float64), 10)  # 20,000 rows, compressible
    path = root / ("run.h5" if backend == "hdf5" else "run.zarr" if backend == "zarr" else "run")
    with open_writer(backend, path, **options) as writer:
        if backend == "tiff":
            writer.write_frames("cam", np.tile(np.arange(64, dtype=np.uint16), (20, 64, 1)))
        for start in range(0, len(values), 500) if backend != "tiff" else ():
            writer.write_batch("pm", pa.record_batch({"value": values[start : start + 500]}))
    if backend == "hdf5":
        return _h5_stored(path)
    if backend == "zarr":
        return _zarr_stored(path)
    if backend == "parquet":
        file = path / "pm.parquet"
        group = pq.ParquetFile(file).metadata.row_group(0)
        codec = group.column(0).compression.lower()
        codec = {"uncompressed": "none", "lz4_raw": "lz4"}.get(codec, codec)
        return _Stored(codec, None, group.num_rows, file)
    if backend == "arrow":
        (file,) = path.iterdir()
        data = file.read_bytes()  # each compressed buffer is an LZ4 frame or a Zstandard one
        magics = {"lz4": b"\x04\x22\x4d\x18", "zstd": b"\x28\xb5\x2f\xfd"}
        codec = next((name for name, magic in magics.items() if magic in data), "none")
        return _Stored(codec, None, None, file)
    if backend == "tiff":
        (file,) = path.glob("*.tif")
        with tifffile.TiffFile(file) as tif:
            page: Any = tif.pages[0]
            codec = str(page.compression.name).lower()
        return _Stored({"adobe_deflate": "zlib"}.get(codec, codec), None, None, file)
    (file,) = path.glob("*.csv")
    return _Stored("none", None, None, file)


@pytest.mark.parametrize("backend", _BACKENDS)
def test_codec_keys_reach_every_writer(backend: str, tmp_path: Path):
    """Every [storage] codec value, for every format: honoured (the file's own reader
    shows the codec) or refused with a ConfigError naming the key and the format; never
    replaced by another codec. Levels and chunk sizes likewise."""
    writer_class = get_writer_class(backend)
    for key in CODEC_KEYS:
        if key not in writer_class.config_keys:
            value = {"compression": "gzip", "compression_level": 1, "chunk_size": 100}[key]
            with pytest.raises(ConfigError, match=rf"storage\.{key} = .*the {backend} writer "
                                                  "does not take it"):  # fmt: skip
                writer_options(writer_class, StorageSettings.model_validate({key: value}))
    if "compression" in writer_class.config_keys:
        honoured, refused = [], {}
        for i, codec in enumerate(COMPRESSIONS):
            settings = StorageSettings(compression=codec)
            try:
                options = writer_options(writer_class, settings)
            except ConfigError as exc:
                refused[codec] = str(exc)
                continue
            stored = _written(backend, tmp_path / str(i), options).codec
            assert stored == _ALSO_NAMED.get((backend, codec), codec), (
                f"{backend}: compression {codec!r} stored as {stored!r}"
            )
            honoured.append(codec)
        assert len(honoured) >= 2, honoured  # the format's default, and another
        for codec, message in refused.items():
            expected = rf"^storage\.compression = '{codec}': the {backend} writer cannot honour"
            assert re.search(expected, message), message
    if "compression_level" in writer_class.config_keys:
        codec = next(c for c in ("gzip", "zstd", "blosc-zstd") if _takes(writer_class, c))
        low = _written(backend, tmp_path / "low", _options(writer_class, codec, 1))
        high = _written(backend, tmp_path / "high", _options(writer_class, codec, 9))
        if low.level is not None:  # the file records it
            assert (low.level, high.level) == (1, 9)
        else:  # it does not: the level shows in what it does
            assert high.file.stat().st_size < low.file.stat().st_size
    if "chunk_size" in writer_class.config_keys:
        options = writer_options(writer_class, StorageSettings(chunk_size=1_000))
        chunked = _written(backend, tmp_path / "chunks", options)
        assert chunked.chunk_rows == 1_000, f"{backend}: chunk_size 1000 gave {chunked}"


def _takes(writer_class: type[Writer], codec: str) -> bool:
    try:
        writer_options(writer_class, StorageSettings(compression=codec, compression_level=1))
    except ConfigError:
        return False
    return True


def _options(writer_class: type[Writer], codec: str, level: int) -> dict[str, Any]:
    settings = StorageSettings(compression=codec, compression_level=level)
    return writer_options(writer_class, settings)


# --------------------------------------------------------------------- the storage actor
def test_auto_flush_interval_secs_is_the_storage_actors_flush_cadence(tmp_path: Path):
    """With a cadence the rows reach the file with no Flush; with 0 only a Flush (or
    stop) puts them there. What a reader opening the file sees is the effect."""
    import asyncio
    import time

    from daq_storage.actor import Flush, GetStats, StorageActor, WriteBatch

    batch = pa.record_batch({"value": np.arange(100, dtype=np.float64)})

    def rows(path: Path) -> int:
        with h5py.File(path, "r") as f:
            return int(f["pm/value"].shape[0]) if "pm" in f else 0

    async def visible_without_flush(interval: str, out: Path) -> tuple[int, Path]:
        environ = {"DAQ_STORAGE_OUTPUT_DIR": str(out),
                   "DAQ_STORAGE_AUTO_FLUSH_INTERVAL_SECS": interval}  # fmt: skip
        config = StorageConfig.load(environ=environ)
        assert config.storage.auto_flush_interval_secs == float(interval)
        async with StorageActor(config) as actor:
            await actor.call(WriteBatch(batch, "pm"))
            path = (await actor.call(GetStats())).file_path
            assert path is not None
            seen = rows(path)
            deadline = time.monotonic() + 30  # a deadline on a real condition, not a sleep
            while interval != "0" and seen == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                seen = rows(path)
            if interval == "0":
                assert rows(path) == 0  # nothing flushes by itself
                await actor.call(Flush())
                assert rows(path) == 100
        return seen, path

    seen, _ = asyncio.run(visible_without_flush("0.05", tmp_path / "cadence"))
    assert seen == 100
    seen, _ = asyncio.run(visible_without_flush("0", tmp_path / "manual"))
    assert seen == 0
