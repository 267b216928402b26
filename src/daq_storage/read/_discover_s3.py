"""What an ``s3://`` prefix holds, by listing (one ``ListObjectsV2`` with a delimiter per
prefix): a Zarr store (``zarr.json`` at its root), a Parquet or Arrow IPC output (its
writer's marker ``_daq_storage_writer.json`` at its root, naming the writer, beside a
prefix of part objects per stream), or a Recorder's prefix of such outputs. The formats
written to object storage only: HDF5, CSV and TIFF outputs are local files."""

from __future__ import annotations

import json

from daq_storage.location import S3Location, s3_errors

__all__ = ["S3_FORMATS", "s3_children", "s3_output_format"]

#: The formats found in a bucket (their writers write to object storage).
S3_FORMATS = ("arrow", "parquet", "zarr")
#: The per-stream writers' claim on their prefix (``daq_storage.writers``' object parts).
WRITER_MARKER = "_daq_storage_writer.json"


def _listing(location: S3Location) -> tuple[list[str], list[str]]:
    """The object names and the sub-prefixes right under ``location``."""
    import obstore

    with s3_errors(location, "list"):
        found = obstore.list_with_delimiter(location.object_store())
    names = [o["path"].rpartition("/")[2] for o in found["objects"]]
    prefixes = [p.rstrip("/").rpartition("/")[2] for p in found["common_prefixes"]]
    return names, prefixes


def s3_output_format(location: S3Location) -> str | None:
    """The format of the output at ``location``, or ``None`` when it holds none."""
    if not location.key:
        return None  # a bucket's root is a Recorder's prefix, not an output
    names = _listing(location)[0]
    if "zarr.json" in names:
        return "zarr"
    if WRITER_MARKER not in names:
        return None
    import obstore

    with s3_errors(location.child(WRITER_MARKER), "read"):
        data = obstore.get(location.object_store(), WRITER_MARKER).bytes()
    try:
        writer = json.loads(bytes(data)).get("writer")
    except (ValueError, AttributeError):
        writer = None
    return writer if writer in S3_FORMATS else None


def s3_children(location: S3Location) -> list[tuple[S3Location, str]]:
    """The outputs right under ``location`` with their formats, by name."""
    found = []
    for name in sorted(_listing(location)[1]):
        if name.startswith((".", "_")):
            continue
        child = location.child(name)
        kind = s3_output_format(child)
        if kind is not None:
            found.append((child, kind))
    return found
