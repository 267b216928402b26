"""Naming outputs in a bucket: the free ``{experiment}_{date}_{time}_v{N}`` names under an
``s3://`` prefix, found by one listing. The writer of an output claims it itself (a
conditional create, ``If-None-Match``, of its marker or root object, refused with
``EEXIST`` once any object is there), as ``O_EXCL`` claims a local file: a Recorder that
loses a race to another for a name takes the next one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from daq_storage.location import S3Location, s3_errors
from daq_storage.naming import format_filename

__all__ = ["free_s3_names"]

_MAX_VERSIONS = 100_000


def free_s3_names(
    folder: S3Location, experiment: str, ext: str, *, when: datetime
) -> Iterator[S3Location]:
    """The ``_v{N}{ext}`` outputs under ``folder`` that no object uses yet, in version
    order (the bucket is listed once, when the first is asked for).

    Raises:
        InvalidName, ConfigError: as :func:`daq_storage.naming.format_filename`.
        StorageIOError: the bucket cannot be reached or listed (named, with the cause).
    """
    import obstore

    format_filename(experiment, when, 1, ext)  # a bad name: before any request
    with s3_errors(folder, "list"):
        listed = obstore.list_with_delimiter(folder.object_store())
    taken = {p.rstrip("/").rpartition("/")[2] for p in listed["common_prefixes"]}
    taken |= {o["path"].rpartition("/")[2] for o in listed["objects"]}
    for version in range(1, _MAX_VERSIONS):
        name = format_filename(experiment, when, version, ext)
        if name not in taken:
            yield folder.child(name)
