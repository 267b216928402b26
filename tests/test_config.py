"""Configuration: defaults < TOML file < DAQ_STORAGE_* environment and every validation
error; what each key does: tests/test_config_effects.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daq_storage.config import (
    BACKENDS,
    RecorderConfig,
    RingBufferConfig,
    StorageConfig,
    StorageSettings,
    daemon_ring_path,
    default_ring_dir,
)
from daq_storage.errors import ConfigError, InvalidName
from daq_storage.naming import sanitize_name
from daq_storage.ring import RingBuffer

FULL_FILE = """
[storage]
default_backend = "parquet"
formats = ["parquet"]
output_dir = "/srv/lab/data"
experiment = "wavelength_scan"
compression = "zstd"
compression_level = 7
chunk_size = 4096
flush_interval_ms = 250
auto_flush_interval_secs = 0

[ring_buffer]
path = "/dev/shm/lab_ring"
frames = 1000
overflow = "block"
block_timeout_secs = 2.5
max_readers = 4

[recorder]
consumer = "recorder_local"
durable = true
rotate_size_mb = 512
rotate_interval_secs = 3600
batch_rows = 10000
batch_bytes_mb = 16.5
frames_per_write = 32
start = "latest"
stop_timeout_secs = 12.5

[recorder.streams]
camera_1 = ["hdf5", "tiff"]
"power meter" = ["Parquet"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "daq.toml"
    path.write_text(text)
    return path


def test_defaults_work_with_no_file_and_no_env():
    config = StorageConfig.load(environ={})
    assert config.storage.default_backend == "hdf5"
    assert config.storage.output_dir == Path("data")
    # Unset: each format's own codec, level and chunks (see test_writer_options_*).
    assert config.storage.compression is None
    assert config.storage.compression_level is None
    assert config.storage.chunk_size is None
    assert config.storage.flush_interval_ms == 1000
    assert config.storage.auto_flush_interval_secs == 0
    assert config.ring_buffer.path is None  # each run makes a ring of its own
    assert config.ring_buffer.overflow == "discard_oldest"
    assert config.ring_buffer.capacity_bytes == 256 << 20
    assert config.storage.formats is None
    assert config.storage.recorded_formats == ("hdf5",)  # unset: the default backend
    assert config.recorder == RecorderConfig(
        consumer="recorder",
        streams={},
        durable=False,
        rotate_size_mb=None,
        rotate_interval_secs=None,
        batch_rows=65536,
        batch_bytes_mb=64,
        frames_per_write=None,
        start="oldest",
        stop_timeout_secs=30,
    )
    assert config.recorder.rotate_bytes is None
    assert config.recorder.batch_bytes == 64 << 20
    assert {v.source for v in config.sources()} == {"default"}
    assert [v.key for v in config.sources()][-1] == "recorder.stop_timeout_secs"


def test_file_values_replace_defaults(tmp_path: Path):
    config = StorageConfig.load(write(tmp_path, FULL_FILE), environ={})
    assert config.storage == StorageSettings(
        default_backend="parquet",
        formats=["parquet"],
        output_dir=Path("/srv/lab/data"),
        experiment="wavelength_scan",
        compression="zstd",
        compression_level=7,
        chunk_size=4096,
        flush_interval_ms=250,
        auto_flush_interval_secs=0,
    )
    assert config.ring_buffer == RingBufferConfig(
        path=Path("/dev/shm/lab_ring"),
        frames=1000,
        overflow="block",
        block_timeout_secs=2.5,
        max_readers=4,
    )
    assert config.recorder == RecorderConfig(
        consumer="recorder_local",
        streams={"camera_1": ["hdf5", "tiff"], "power meter": ["parquet"]},
        durable=True,
        rotate_size_mb=512,
        rotate_interval_secs=3600,
        batch_rows=10_000,
        batch_bytes_mb=16.5,
        frames_per_write=32,
        start="latest",
        stop_timeout_secs=12.5,
    )
    assert config.recorder.rotate_bytes == 512 << 20
    assert config.recorder.batch_bytes == round(16.5 * (1 << 20))
    # frames sizes it; refused; (object storage: tests/test_config_s3.py)
    unset = {"ring_buffer.size_mb", "storage.output_path", "storage.destinations", "storage.s3"}
    assert all(v.source.startswith("file ") for v in config.sources() if v.key not in unset)


def test_env_overrides_file_which_overrides_default(tmp_path: Path):
    path = write(tmp_path, "[storage]\ncompression_level = 7\noutput_dir = 'from_file'\n")
    environ = {
        "DAQ_STORAGE_COMPRESSION_LEVEL": "2",
        "DAQ_STORAGE_RING_BUFFER_SIZE_MB": "64",
    }
    config = StorageConfig.load(path, environ=environ)
    assert config.storage.compression_level == 2  # env beats file
    assert config.storage.output_dir == Path("from_file")  # file beats default
    assert config.storage.compression is None  # default: the format's own
    assert config.ring_buffer.size_mb == 64
    sources = {v.key: v.source for v in config.sources()}
    assert sources["storage.compression_level"] == "env DAQ_STORAGE_COMPRESSION_LEVEL"
    assert sources["storage.output_dir"] == f"file {path}"
    assert sources["storage.compression"] == "default"
    assert sources["ring_buffer.size_mb"] == "env DAQ_STORAGE_RING_BUFFER_SIZE_MB"


def test_env_names_the_config_file(tmp_path: Path):
    path = write(tmp_path, "[storage]\nexperiment = 'from_env_file'\n")
    config = StorageConfig.load(environ={"DAQ_STORAGE_CONFIG": str(path)})
    assert config.storage.experiment == "from_env_file"


def test_plain_constructor_reads_the_process_environment(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("DAQ_STORAGE_OUTPUT_DIR", "/mnt/data")
    clean_env.setenv("DAQ_STORAGE_FORMAT", "zarr")
    config = StorageConfig()
    assert config.storage.output_dir == Path("/mnt/data")
    assert config.storage.default_backend == "zarr"


def test_format_is_an_alias_of_default_backend(tmp_path: Path):
    config = StorageConfig.load(write(tmp_path, "[storage]\nformat = 'csv'\n"), environ={})
    assert config.storage.default_backend == "csv"


def test_seed_legacy_keys_are_mapped(tmp_path: Path):
    text = """
[storage]
ring_buffer_path = "/dev/shm/daq_ring"
ring_buffer_frames = 1000
hdf5_compression = "gzip"
hdf5_compression_level = 4
"""
    config = StorageConfig.load(write(tmp_path, text), environ={})
    assert config.ring_buffer.path == Path("/dev/shm/daq_ring")
    assert config.ring_buffer.frames == 1000
    assert config.storage.compression == "gzip"
    assert config.storage.compression_level == 4


def test_config_is_frozen():
    config = StorageConfig.load(environ={})
    with pytest.raises(ValueError, match="frozen"):
        config.storage.compression_level = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[storage]\ncompression_level = 12", r"storage\.compression_level: 12 .*<= 9"),
        ("[storage]\ncompression_level = -1", r"storage\.compression_level: -1 .*>= 0"),
        ("[storage]\ncompression_level = 'high'", r"storage\.compression_level: 'high'"),
        ("[storage]\ndefault_backend = 'hdf6'", r"default_backend: 'hdf6'.*'hdf5', 'arrow'"),
        ("[storage]\nformat = 'xlsx'", r"default_backend: 'xlsx'.*as storage\.format"),
        ("[storage]\ncompression = 'rar'", r"compression: 'rar'.*one of 'none', 'gzip'"),
        ("[storage]\nflush_interval_ms = -5", r"flush_interval_ms: -5 .*>= 0"),
        ("[storage]\nauto_flush_interval_secs = -1.5", r"auto_flush_interval_secs: -1\.5"),
        ("[storage]\nauto_flush_interval_secs = inf", r"auto_flush_interval_secs: inf .*finite"),
        (
            "[ring_buffer]\nframes = 10\nsize_mb = 8",
            r"ring_buffer\.frames = 10 and ring_buffer\.size_mb = 8 both size the ring.*"
            r"\(ring_buffer\.frames: file .*ring_buffer\.size_mb: file ",
        ),
        ('[storage]\noutput_dir = "a\\u0000b"', r"output_dir: 'a\\x00b' .*cannot contain a NUL"),
        ('[ring_buffer]\npath = "/dev/shm/r\\u0000"', r"ring_buffer\.path: .*NUL"),
        ("[storage]\nchunk_size = 0", r"chunk_size: 0 .*>= 1"),
        ("[storage]\nexperiment = ''", r"experiment: ''.*at least 1 character"),
        ("[ring_buffer]\nsize_mb = 0", r"ring_buffer\.size_mb: 0 .*>= 1"),
        ("[ring_buffer]\nframes = -3", r"ring_buffer\.frames: -3"),
        ("[ring_buffer]\noverflow = 'resize'", r"overflow: 'resize'.*'discard_oldest', 'block'"),
        ("[ring_buffer]\nblock_timeout_secs = -1", r"block_timeout_secs: -1 .*>= 0"),
        ("[ring_buffer]\nmax_readers = 0", r"max_readers: 0 .*>= 1"),
        ("[storage]\nbogus = 1", r"unknown config key storage\.bogus.*known keys: default_backend"),
        ("[ring_buffer]\nsizemb = 1", r"unknown config key ring_buffer\.sizemb"),
        ("[stroage]\noutput_dir = 'x'", r"unknown config section \[stroage\].*\[storage\]"),
        ("storage = 3", r"must be a \[storage\] table"),
        ("[storage\n", r"not valid TOML"),
        ("[storage]\nformat = 'csv'\ndefault_backend = 'hdf5'", r"given twice"),
        ("[storage]\nformats = ['hdf5', 'HDF5']", r"storage\.formats names 'hdf5' more than once"),
        ("[storage]\nformats = []", r"storage\.formats: \[\] .*needs at least one format"),
        ("[storage]\nformats = ['hdf5', 'xlsx']", r"formats\.1: 'xlsx' .*distinct formats, each"),
        ("[storage]\nformats = 'hdf5'", r"formats: 'hdf5' .*valid list"),
        ("[storage]\nformat = ['hdf5', 'zarr']", r"one format; list several in storage\.formats"),
        (
            "[storage]\noutput_path = 'run.h5'",
            r"^storage\.output_path = 'run\.h5' \(file .*\): the Recorder names its files .*"
            r"set that instead$",
        ),
        ("[recorder.streams]\ncam = []", r"recorder\.streams\.cam needs at least one format"),
        ("[recorder.streams]\ncam = ['tiff', 'TIFF']", r"streams\.cam names 'tiff' more than once"),
        ("[recorder.streams]\ncam = ['tif']", r"recorder\.streams\.cam\.0: 'tif' \(file "),
        ("[recorder.streams]\ncam = 'tiff'", r"recorder\.streams\.cam: 'tiff'.*valid list"),
        ("[recorder.streams]\n'' = ['hdf5']", r"a stream name cannot be empty"),
        ("[recorder]\nstreams = 3", r"recorder\.streams: 3 .*a table of stream = \[distinct"),
        ("[recorder]\nconsumer = ''", r"recorder\.consumer: '' .*1 to 64 UTF-8 bytes"),
        ("[recorder]\nconsumer = '" + "é" * 33 + "'", r"recorder\.consumer: .*64 UTF-8 bytes"),
        ('[recorder]\nconsumer = "a\\tb"', r"recorder\.consumer: 'a\\tb' .*printable"),
        ("[recorder]\nconsumer = 7", r"recorder\.consumer: 7 "),
        ("[recorder]\ndurable = 'maybe'", r"recorder\.durable: 'maybe'.*allowed: true or false$"),
        ("[recorder]\nrotate_size_mb = 0", r"rotate_size_mb: 0 .*a number > 0"),
        ("[recorder]\nrotate_size_mb = inf", r"rotate_size_mb: inf .*finite"),
        ("[recorder]\nrotate_size_mb = true", r"rotate_size_mb: True .*true / false"),
        ("[recorder]\nrotate_interval_secs = -1", r"rotate_interval_secs: -1 .*> 0"),
        ("[recorder]\nrotate_interval_secs = nan", r"rotate_interval_secs: nan .*finite"),
        ("[recorder]\nbatch_rows = 0", r"recorder\.batch_rows: 0 .*an integer >= 1"),
        ("[recorder]\nbatch_rows = 1.5", r"recorder\.batch_rows: 1\.5 "),
        ("[recorder]\nbatch_bytes_mb = 0", r"batch_bytes_mb: 0 .*a number > 0"),
        ("[recorder]\nframes_per_write = 0", r"frames_per_write: 0 .*an integer >= 1"),
        ("[recorder]\nstart = 'newest'", r"recorder\.start: 'newest'.*'oldest', 'latest'"),
        ("[recorder]\nstop_timeout_secs = -1", r"stop_timeout_secs: -1 .*a number >= 0"),
        ("[recorder]\nstop_timeout_secs = inf", r"stop_timeout_secs: inf .*finite"),
        ("[recorder]\nflush_interval_ms = 5", r"unknown config key recorder\.flush_interval_ms"),
        ("recorder = 1", r"must be a \[recorder\] table"),
    ],
)
def test_invalid_file_values_name_key_value_and_range(tmp_path: Path, text: str, expected: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        StorageConfig.load(path, environ={})
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"DAQ_STORAGE_COMPRESSION_LEVEL": "12"},
            r"compression_level: '12' \(env DAQ_STORAGE_COMPRESSION_LEVEL\).*<= 9",
        ),
        ({"DAQ_STORAGE_DEFAULT_BACKEND": "excel"}, r"default_backend: 'excel' \(env "),
        ({"DAQ_STORAGE_FLUSH_INTERVAL_MS": "-1"}, r"flush_interval_ms: '-1'.*>= 0"),
        ({"DAQ_STORAGE_RING_BUFFER_OVERFLOW": "grow"}, r"ring_buffer\.overflow: 'grow'"),
        (
            {"DAQ_STORAGE_OUTPUT_DIRR": "/x"},
            r"unknown environment variable DAQ_STORAGE_OUTPUT_DIRR.*DAQ_STORAGE_OUTPUT_DIR",
        ),
        (
            {"DAQ_STORAGE_CONFIG": "/nonexistent/daq.toml"},
            r"config file /nonexistent/daq\.toml does not exist",
        ),
        (
            {"DAQ_STORAGE_FORMATS": "hdf5,hdf5"},
            r"formats: \['hdf5', 'hdf5'\] \(env DAQ_STORAGE_FORMATS\).*more than once",
        ),
        ({"DAQ_STORAGE_FORMATS": "hdf5,,arrow"}, r"formats\.1: '' \(env DAQ_STORAGE_FORMATS\)"),
        ({"DAQ_STORAGE_FORMATS": '["hdf5"'}, r"DAQ_STORAGE_FORMATS='\[\"hdf5\"': expected a JSON"),
        ({"DAQ_STORAGE_FORMAT": "hdf5,arrow"}, r"names one format; several go in .*_FORMATS$"),
        (
            {"DAQ_STORAGE_RECORDER_STREAMS": "camera_1=hdf5"},
            r"RECORDER_STREAMS='camera_1=hdf5': expected a JSON object .* or set the table in "
            r"the config file",
        ),
        ({"DAQ_STORAGE_RECORDER_STREAMS": '["hdf5"]'}, r"expected a JSON object"),
        (
            {"DAQ_STORAGE_RECORDER_STREAMS": '{"cam": ["hdf5", "xlsx"]}'},
            r"recorder\.streams\.cam\.1: 'xlsx' \(env DAQ_STORAGE_RECORDER_STREAMS\)",
        ),
        (
            {"DAQ_STORAGE_RECORDER_BATCH_ROWS": "0"},
            r"batch_rows: '0' \(env DAQ_STORAGE_RECORDER_BATCH_ROWS\).*>= 1",
        ),
        ({"DAQ_STORAGE_RECORDER_DURABLE": "perhaps"}, r"recorder\.durable: 'perhaps'"),
        ({"DAQ_STORAGE_RECORDER_CONSUMER": ""}, r"recorder\.consumer: '' "),
        (
            {"DAQ_STORAGE_OUTPUT_PATH": "/data/run.h5"},
            r"^storage\.output_path = '/data/run\.h5' \(env DAQ_STORAGE_OUTPUT_PATH\): ",
        ),
        (
            {"DAQ_STORAGE_RECORDER_BOGUS": "1"},
            r"unknown .* DAQ_STORAGE_RECORDER_BOGUS.*_BATCH_ROWS",
        ),
    ],
)
def test_invalid_env_values_name_the_variable(environ: dict[str, str], expected: str):
    with pytest.raises(ConfigError, match=expected):
        StorageConfig.load(environ=environ)


def test_missing_and_unreadable_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        StorageConfig.load(tmp_path / "absent.toml", environ={})
    with pytest.raises(ConfigError, match="cannot be read"):
        StorageConfig.load(tmp_path, environ={})  # a directory
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        StorageConfig.load(binary, environ={})


def test_several_problems_are_reported_together(tmp_path: Path):
    path = write(tmp_path, "[storage]\ncompression_level = 99\nflush_interval_ms = -1\n")
    with pytest.raises(ConfigError, match=r"compression_level.*flush_interval_ms"):
        StorageConfig.load(path, environ={})


def test_constructor_arguments_are_validated_too():
    with pytest.raises(ConfigError, match=r"storage\.compression_level: 10 \(argument\)"):
        StorageConfig(storage={"compression_level": 10})


def test_backends_list_matches_the_writer_names():
    assert set(BACKENDS) == {"hdf5", "arrow", "parquet", "csv", "zarr", "tiff"}


def test_an_empty_variable_for_a_required_key_is_reported_as_given():
    with pytest.raises(ConfigError) as caught:
        StorageConfig.load(environ={"DAQ_STORAGE_EXPERIMENT": ""})
    message = str(caught.value)
    assert "storage.experiment: ''" in message
    assert "None" not in message


def test_an_empty_variable_unsets_an_optional_key():
    config = StorageConfig.load(environ={"DAQ_STORAGE_RING_BUFFER_PATH": ""})
    assert config.ring_buffer.path is None


@pytest.mark.parametrize("spelling", ["HDF5", "Parquet", "zarr"])
def test_format_and_codec_names_ignore_case(spelling: str):
    config = StorageConfig.load(
        environ={"DAQ_STORAGE_FORMAT": spelling, "DAQ_STORAGE_COMPRESSION": "GZIP"}
    )
    assert config.storage.default_backend == spelling.lower()
    assert config.storage.compression == "gzip"


def test_ring_frames_size_the_ring_by_records_and_from_config_refuses_to_guess(shm_path: Path):
    ring = RingBufferConfig(frames=10)
    # Ten records at once, one more for the padding a record leaves at the wrap.
    assert ring.capacity_for(1001) == 11 * 1008
    assert RingBufferConfig(size_mb=3).capacity_for(1001) == 3 << 20
    with pytest.raises(ConfigError, match=r"record_bytes must be a positive integer"):
        ring.capacity_for(0)
    # The ring cannot know the record size: from_config refuses instead of ignoring it.
    with pytest.raises(ConfigError, match=r"ring_buffer\.frames = 10 sizes the ring in records"):
        RingBuffer.from_config(ring, path=shm_path)
    assert not shm_path.exists()


# --------------------------------------------------------------------- formats, [recorder]
@pytest.mark.parametrize(
    ("environ", "formats"),
    [
        ({"DAQ_STORAGE_FORMATS": "hdf5,arrow"}, ["hdf5", "arrow"]),
        ({"DAQ_STORAGE_FORMATS": " HDF5 , Zarr "}, ["hdf5", "zarr"]),
        ({"DAQ_STORAGE_FORMATS": '["parquet", "TIFF"]'}, ["parquet", "tiff"]),
        ({"DAQ_STORAGE_FORMATS": "csv"}, ["csv"]),
        ({"DAQ_STORAGE_FORMATS": ""}, None),  # empty: unset
    ],
)
def test_formats_from_the_environment_as_a_json_or_comma_separated_list(
    environ: dict[str, str], formats: list[str] | None
):
    config = StorageConfig.load(environ=environ)
    assert config.storage.formats == formats
    sources = {v.key: v.source for v in config.sources()}
    assert sources["storage.formats"] == "env DAQ_STORAGE_FORMATS"


def test_recorded_formats_are_formats_else_the_default_backend(tmp_path: Path):
    assert StorageSettings(default_backend="zarr").recorded_formats == ("zarr",)
    assert StorageSettings(formats=["arrow", "hdf5"]).recorded_formats == ("arrow", "hdf5")
    path = write(tmp_path, "[storage]\nformats = ['HDF5', 'Arrow']\n")
    config = StorageConfig.load(path, environ={"DAQ_STORAGE_FORMAT": "zarr"})
    assert config.storage.recorded_formats == ("hdf5", "arrow")
    assert config.storage.default_backend == "zarr"


def test_recorder_keys_from_the_environment_override_the_file(tmp_path: Path):
    path = write(tmp_path, "[recorder]\nbatch_rows = 10\nstart = 'latest'\n")
    environ = {
        "DAQ_STORAGE_RECORDER_BATCH_ROWS": "20",
        "DAQ_STORAGE_RECORDER_DURABLE": "true",
        "DAQ_STORAGE_RECORDER_ROTATE_SIZE_MB": "0.5",
        "DAQ_STORAGE_RECORDER_FRAMES_PER_WRITE": "",  # empty: unset
        "DAQ_STORAGE_RECORDER_CONSUMER": "recorder 2",
        "DAQ_STORAGE_RECORDER_STREAMS": json.dumps({"camera_1": ["HDF5", "tiff"]}),
    }
    config = StorageConfig.load(path, environ=environ)
    assert config.recorder.batch_rows == 20
    assert config.recorder.start == "latest"
    assert config.recorder.durable is True
    assert config.recorder.rotate_bytes == 1 << 19
    assert config.recorder.frames_per_write is None
    assert config.recorder.consumer == "recorder 2"
    assert config.recorder.streams == {"camera_1": ["hdf5", "tiff"]}
    sources = {v.key: v.source for v in config.sources()}
    assert sources["recorder.batch_rows"] == "env DAQ_STORAGE_RECORDER_BATCH_ROWS"
    assert sources["recorder.start"] == f"file {path}"
    assert sources["recorder.streams"] == "env DAQ_STORAGE_RECORDER_STREAMS"
    assert sources["recorder.stop_timeout_secs"] == "default"
    assert StorageConfig.load(environ={"DAQ_STORAGE_RECORDER_STREAMS": ""}).recorder.streams == {}


def test_a_file_routes_a_stream_named_with_any_characters(tmp_path: Path):
    text = '[recorder.streams]\n"camera 1 / left" = ["tiff"]\n"pm.value" = ["csv", "arrow"]\n'
    config = StorageConfig.load(write(tmp_path, text), environ={})
    assert config.recorder.streams == {"camera 1 / left": ["tiff"], "pm.value": ["csv", "arrow"]}
    shown = {v.key: v.value for v in config.sources()}
    assert shown["recorder.streams"] == config.recorder.streams


def test_the_daemon_ring_is_the_configured_path_else_named_by_the_experiment(tmp_path: Path):
    configured = StorageConfig(ring_buffer={"path": str(tmp_path / "lab_ring")})
    assert daemon_ring_path(configured) == tmp_path / "lab_ring"
    default = StorageConfig.load(environ={"DAQ_STORAGE_EXPERIMENT": "scan 12/b"})
    assert daemon_ring_path(default) == default_ring_dir() / "daq_storage_scan_12_b"
    assert default.ring_buffer.daemon_path("scan 12/b") == daemon_ring_path(default)
    with pytest.raises(ConfigError, match=r"storage\.experiment = '\?\?' has no usable .*path"):
        RingBufferConfig().daemon_path("??")


@given(st.text(min_size=1, max_size=120))
def test_the_daemon_ring_name_follows_the_file_naming_rules(experiment: str):
    try:
        expected = sanitize_name(experiment, what="experiment name")
    except InvalidName:
        with pytest.raises(ConfigError, match=r"storage\.experiment"):
            RingBufferConfig().daemon_path(experiment)
        return
    assert RingBufferConfig().daemon_path(experiment).name == f"daq_storage_{expected}"
