"""Per-stream writers on an object store (``s3://bucket/prefix``): complete objects, one
per stream per flush.

An object store has no appends and no renames, and an object is complete when it
appears (a single PUT, or a multipart upload, which stays invisible until completed).
So instead of one growing file per stream, every flush that has new rows for a stream
uploads them as one complete file of the format, the stream's next *part object*::

    prefix/_daq_storage_writer.json        the writer's claim on the prefix
    prefix/<stream>/part-000001.parquet    rows of the first flush
    prefix/<stream>/part-000002.parquet    rows of the next flush, ...

A stream's prefix is a dataset: ``pyarrow.dataset.dataset("bucket/prefix/<stream>")``,
``polars.scan_parquet("s3://bucket/prefix/<stream>/*.parquet")`` read every part as one
table (names starting with ``_`` are skipped by pyarrow's datasets and by the glob).

- **Complete after every flush.** Each part is encoded whole in memory, then uploaded
  (obstore's ``put``: one request; above 5 MB a multipart upload that is invisible until
  completed), so a reader listing the prefix, and a killed writer, leave only complete
  parts. Rows buffered since the last flush are not in the store (:meth:`Writer.visible`).
- **Retries never duplicate rows.** A part's number advances only once its upload is
  confirmed; after a failed upload the rows stay pending and the next flush uploads them
  (with any rows taken since) under the same key, replacing whatever the failed attempt
  may have left there.
- **Metadata.** Each part's schema metadata is the stream's metadata as of its upload
  (the project's JSON values, ``metadata_changes``, :meth:`set_metadata` values) plus
  ``daq_storage.part_of`` (the stream) and ``daq_storage.first_row`` (the stream's
  index of the part's first row); the last part holds the newest. A flush with no new
  rows uploads nothing, unless the stream's metadata changed since its last part: then
  a part with no rows carries it.
- **Nothing overwritten.** Opening a writer on a prefix that holds any object is
  refused, and the writer claims the prefix by creating its marker object with a
  conditional create, so two writers never share one.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from daq_storage.location import S3Location, s3_errors

__all__ = ["MARKER", "ObjectParts", "claim_prefix", "part_name", "put_document", "release_prefix"]

#: The writer's claim on its prefix (``_``: skipped by pyarrow datasets and globs).
MARKER = "_daq_storage_writer.json"

#: Encodes one part of a stream: the schema (with the part's metadata) and its
#: batches, as the bytes of a complete file of the format.
Encoder = Callable[[str, pa.Schema, Sequence[pa.RecordBatch]], pa.Buffer]
#: The stream's key-value metadata for a part of the given schema.
MetadataFor = Callable[[pa.Schema], dict[str, str]]
#: The keys naming a part's stream and its first row, given both.
PartKeys = Callable[[str, int], dict[str, str]]


def part_name(number: int, suffix: str) -> str:
    """The name of a stream's part object ``number`` (from 1): sorted by name, in order."""
    return f"part-{number:06d}{suffix}"


def claim_prefix(location: S3Location, writer: str) -> None:
    """Make the prefix the writer's: :meth:`S3Location.claim` with the marker naming it.

    Raises:
        StorageIOError: as :meth:`S3Location.claim` (``EEXIST``: the prefix is taken).
    """
    claim = {"writer": writer, "host": socket.gethostname(), "pid": os.getpid(),
             "started": time.time()}  # fmt: skip
    location.claim(MARKER, json.dumps(claim).encode(), what=f"a {writer} output")


def release_prefix(location: S3Location) -> None:
    """Remove the marker of a writer that stored nothing (errors ignored: it only says
    the prefix was taken)."""
    import obstore

    with contextlib.suppress(Exception):  # best effort, as for an unused directory
        obstore.delete(location.object_store(), MARKER)


@dataclass
class _Stream:
    stream: str
    safe: str  # the stream's name in keys
    batches: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0  # pending
    nbytes: int = 0  # pending
    first: int = 0  # the stream's index of the first pending row
    parts: int = 0  # confirmed uploads
    #: The stream metadata of the last confirmed part (None before the first).
    metadata: dict[str, str] | None = None


class ObjectParts:
    """A per-stream writer's pending batches, uploaded as part objects under ``location``
    (see the module docstring)."""

    def __init__(
        self, location: S3Location, suffix: str, encode: Encoder, part_keys: PartKeys
    ) -> None:
        self.location = location
        self.suffix = suffix
        self.encode = encode
        self.part_keys = part_keys
        self.streams: dict[str, _Stream] = {}
        self.bytes_uploaded = 0

    def add(self, stream: str, safe: str, batch: pa.RecordBatch) -> None:
        found = self.streams.get(stream)
        if found is None:
            found = self.streams[stream] = _Stream(stream, safe)
        found.batches.append(batch)
        found.rows += batch.num_rows
        found.nbytes += batch.nbytes

    def take_back(self, stream: str) -> None:
        """Drop the last batch added (its call was refused)."""
        found = self.streams[stream]
        batch = found.batches.pop()
        found.rows -= batch.num_rows
        found.nbytes -= batch.nbytes

    def pending_rows(self, stream: str) -> int:
        found = self.streams.get(stream)
        return 0 if found is None else found.rows

    def pending_bytes(self, stream: str) -> int:
        found = self.streams.get(stream)
        return 0 if found is None else found.nbytes

    def parts(self, stream: str) -> list[S3Location]:
        """The stream's confirmed part objects, in order."""
        found = self.streams.get(stream)
        if found is None:
            return []
        return [self.location.child(found.safe, part_name(n, self.suffix))
                for n in range(1, found.parts + 1)]  # fmt: skip

    def publish(self, stream: str, metadata_for: MetadataFor) -> None:
        """Upload the stream's pending rows, one part per run of batches with one schema
        (``metadata_for(schema)`` gives the stream's metadata).

        Raises:
            StorageIOError: an upload failed; the rows of the parts not confirmed stay
                pending, for the next flush to upload under the same keys.
        """
        found = self.streams[stream]
        if not found.batches:
            return
        for batches in _runs(found.batches):
            rows = sum(b.num_rows for b in batches)
            metadata = metadata_for(batches[0].schema)
            if not rows and metadata == found.metadata:
                found.batches = found.batches[len(batches) :]
                continue  # (empty batches: the last part holds this schema's metadata)
            self._upload(found, batches, metadata)
            found.batches = found.batches[len(batches) :]
            found.rows -= rows
            found.nbytes -= sum(b.nbytes for b in batches)
            found.first += rows

    def publish_metadata(self, stream: str, schema: pa.Schema, metadata_for: MetadataFor) -> None:
        """A part with no rows carrying the stream's metadata when its last part does not
        hold it (and no rows are pending, whose part would)."""
        found = self.streams[stream]
        metadata = metadata_for(schema)
        if found.batches or metadata == found.metadata:
            return
        self._upload(found, [pa.RecordBatch.from_pylist([], schema=schema)], metadata)

    def _upload(self, found: _Stream, batches: Sequence[pa.RecordBatch],
                metadata: dict[str, str]) -> None:  # fmt: skip
        import obstore

        target = self.location.child(found.safe, part_name(found.parts + 1, self.suffix))
        full = {**metadata, **self.part_keys(found.stream, found.first)}
        schema = batches[0].schema.with_metadata(full)
        data = self.encode(found.stream, schema, [b.replace_schema_metadata(full) for b in batches])
        rows = sum(b.num_rows for b in batches)
        with s3_errors(target, f"upload {rows} rows to"):
            # (obstore takes unsigned bytes: pyarrow's buffer is viewed as such, not copied)
            body = obstore.Bytes(memoryview(data).cast("B"))
            obstore.put(self.location.object_store(), f"{found.safe}/{target.name}", body)
        found.parts += 1
        found.metadata = metadata
        self.bytes_uploaded += data.size

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.streams))


def _runs(batches: Sequence[pa.RecordBatch]) -> Iterator[Sequence[pa.RecordBatch]]:
    """Consecutive batches with equal schemas (metadata aside)."""
    start = 0
    for i in range(1, len(batches) + 1):
        if i == len(batches) or not batches[i].schema.equals(batches[start].schema):
            yield batches[start:i]
            start = i


def put_document(location: S3Location, name: str, document: Any) -> None:
    """A JSON document ``name`` under ``location``, created (never replacing one)."""
    import obstore

    with s3_errors(location.child(name), "create"):
        obstore.put(location.object_store(), name, json.dumps(document, indent=2,
                    allow_nan=True).encode(), mode="create")  # fmt: skip
