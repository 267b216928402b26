"""Where outputs go: a local directory or an ``s3://bucket/prefix`` on an S3-compatible
object store, reached through zarr-python's store API and ``pyarrow.fs`` so both are the
same code path in the writers and readers."""

from __future__ import annotations

from daq_storage.location._location import (
    S3Location,
    describe_failure,
    is_remote,
    parse_location,
    s3_errors,
)
from daq_storage.location._options import ResolvedS3, S3Options

__all__ = [
    "ResolvedS3",
    "S3Location",
    "S3Options",
    "describe_failure",
    "is_remote",
    "parse_location",
    "s3_errors",
]
