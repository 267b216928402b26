"""``[storage]`` destinations on object storage: ``output_dir`` and
``[storage.destinations]`` take ``s3://`` URLs (kept as written), ``[storage.s3]`` says
how to reach the store (its secrets never printed), and what cannot work is refused at
load: a format whose writer writes local files only routed to a bucket, S3 options with
no bucket to apply to, a destination for a format not recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from daq_storage.config import OBJECT_STORAGE_FORMATS, StorageConfig
from daq_storage.errors import ConfigError
from daq_storage.location import S3Options
from daq_storage.writers import available_writers, get_writer_class


def _load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> StorageConfig:
    path = tmp_path / "daq.toml"
    path.write_text(text)
    return StorageConfig.load(path, environ=environ or {})


def test_destinations_and_s3_options_load_as_written(tmp_path: Path):
    config = _load(
        tmp_path,
        """
[storage]
formats = ["zarr", "hdf5", "parquet"]
output_dir = "s3://lab-bucket/runs/2026"
[storage.destinations]
HDF5 = "local/data"
[storage.s3]
endpoint_url = "http://127.0.0.1:9000"
profile = "lab"
access_key_id = "AKIA-LAB"
secret_access_key = "very-secret"
retry_timeout_s = 2.5
""",
    )
    storage = config.storage
    assert storage.output_dir == "s3://lab-bucket/runs/2026"  # not folded into s3:/...
    assert storage.destination("zarr") == "s3://lab-bucket/runs/2026"
    assert storage.destination("hdf5") == Path("local/data")
    assert storage.remote_formats(storage.recorded_formats) == ["zarr", "parquet"]
    assert storage.s3 is not None
    options = S3Options.coerce(storage.s3.options())
    assert options == S3Options(endpoint_url="http://127.0.0.1:9000", profile="lab",
                                access_key_id="AKIA-LAB", secret_access_key="very-secret",
                                retry_timeout_s=2.5)  # fmt: skip
    shown = repr(list(config.sources()))
    assert "very-secret" not in shown
    assert "AKIA-LAB" in shown
    with pytest.raises(ConfigError, match="only the Recorder"):
        _ = storage.local_output_dir  # the storage actor and the demo write local files
    # the environment: a URL, and the table as a JSON object
    config = _load(tmp_path, "", {
        "DAQ_STORAGE_FORMATS": "parquet",
        "DAQ_STORAGE_OUTPUT_DIR": "s3://lab-bucket/env",
        "DAQ_STORAGE_S3": '{"region": "eu-west-1", "anonymous": true}',
    })  # fmt: skip
    assert config.storage.output_dir == "s3://lab-bucket/env"
    assert config.storage.s3 is not None
    assert config.storage.s3.options() == {"region": "eu-west-1", "anonymous": True}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[storage]\nformats = ["hdf5", "zarr"]\noutput_dir = "s3://b-1/x"\n',
         r"storage.output_dir = 's3://b-1/x' \(file .*\): hdf5 cannot write to object "
         r"storage; the formats that can: arrow, parquet, zarr"),
        ('[storage]\nformats = ["zarr", "tiff"]\n[storage.destinations]\n'
         'tiff = "s3://b-1/x"\n', r"storage.destinations.tiff = .* tiff cannot write to"),
        ('[storage]\noutput_dir = "data"\n[storage.s3]\nregion = "eu-west-1"\n',
         r"storage.s3 says how to reach s3:// destinations, but neither"),
        ('[storage]\nformats = ["zarr"]\n[storage.destinations]\ncsv = "x"\n',
         r"storage.destinations.csv .*: csv is not a recorded format \(zarr\)"),
        ('[storage]\noutput_dir = "gs://b-1/x"\n', r"only s3:// URLs and local directories"),
        ('[storage]\noutput_dir = "s3:///x"\n', r"an s3:// URL names a bucket"),
        ('[storage]\nformats = ["zarr"]\noutput_dir = "s3://b-1/x"\n[storage.s3]\n'
         'bucket = "b"\n', r"storage.s3.bucket"),
        ('[storage]\nformats = ["zarr"]\noutput_dir = "s3://b-1/x"\n[storage.s3]\n'
         'retry_timeout_s = 0\n', r"storage.s3.retry_timeout_s"),
        ('[storage]\nformats = ["zarr"]\noutput_dir = "s3://b-1/x"\n[storage.s3]\n'
         'region = ""\n', r"an empty value"),
    ],
)  # fmt: skip
def test_what_cannot_reach_a_bucket_is_refused_at_load(tmp_path: Path, text: str,
                                                       message: str):  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


@pytest.mark.skipif(not get_writer_class("zarr").supports_object_storage,
                    reason="the Zarr writer does not write to object storage yet")  # fmt: skip
def test_the_object_storage_formats_are_the_writers_that_write_there():
    """The configuration sits below the writers and names them by hand: both agree."""
    able = {n for n in available_writers() if get_writer_class(n).supports_object_storage}
    assert set(OBJECT_STORAGE_FORMATS) == able


def test_the_s3_table_has_the_fields_of_s3_options():
    from dataclasses import fields

    from daq_storage.config import S3Settings

    assert list(S3Settings.model_fields) == [f.name for f in fields(S3Options)]
    defaults = S3Options()
    for name, field in S3Settings.model_fields.items():
        assert field.default == getattr(defaults, name), name
