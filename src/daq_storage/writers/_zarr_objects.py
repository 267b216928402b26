"""The Zarr writer on an object store (``s3://bucket/prefix/run.zarr``): zarr-python's
``ObjectStore`` over obstore, counting what it puts, and stream groups whose documents
are objects.

The writer's code is the same as for a local folder (see ``_zarr_store``); what differs:

- **Objects, not files.** Each PUT is atomic: an object (chunk, shard, document) is
  complete when it appears, and a partial chunk or shard rewritten at the next flush
  is replaced whole. There are no renames, links or temporary names.
- **Order is visibility.** Chunks and shards are put first; at a flush each array's
  ``zarr.json`` (its grown shape), then the group's ``zarr.json`` (the consolidated
  metadata every default reader uses), then the root's. A reader of the consolidated
  metadata sees each stream as of one flush; one reading every array's ``zarr.json``
  may see two flushes, as locally. A kill leaves every object put before it: what was
  flushed stays readable.
- **Nothing overwritten.** A store is created only under a prefix holding no object,
  and its root ``zarr.json`` with a conditional create (``If-None-Match``): of two
  writers racing for a prefix, the second is refused. That protects the root while
  both try to create it; there is no lock on S3, so nothing stops another program
  that ignores the root from writing into the prefix afterwards.
- **Durability.** A completed PUT is durable: ``flush(durable=True)`` has nothing more
  to do.
- **Sizes without listing.** Every object put is counted by its size; a rewrite of an
  appended array's last chunk (the only chunk a stream rewrites) replaces the size
  remembered for it, so memory stays bounded by the arrays, not their chunks.
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import obstore
import obstore.exceptions
import zarr.storage
from zarr.core.buffer import Buffer

from daq_storage.location import S3Location
from daq_storage.writers._zarr_metadata import StreamGroup, encode, group_document
from daq_storage.writers._zarr_store import APPENDED, DirtyKeys, Tally

#: Shard writes in flight at once; a write_frames call returns with at most this many
#: unconfirmed (their bytes held until then).
UPLOADS_IN_FLIGHT = 8

__all__ = [
    "UPLOADS_IN_FLIGHT",
    "ObjectCountingStore",
    "ObjectGroup",
    "ObjectSizes",
    "claim_objects",
]

_METADATA = "zarr.json"


class ObjectSizes:
    """The size of each object put, as far as a later rewrite needs it: per appended
    array (``<array>/c/<i>/0...``) its last chunk's, other keys one by one (documents,
    the seeds' builder's chunks). A chunk known neither way is asked for (``HEAD``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[int, int]] = {}  # run -> index, size
        self._loose: dict[str, int] = {}

    @staticmethod
    def _run(key: str) -> tuple[tuple[str, str], int] | None:
        found = APPENDED.match(key)
        return None if found is None else ((found["array"], found["rest"]), int(found["index"]))

    def known(self, key: str) -> int | None:
        """The size ``key`` holds (0: absent), ``None`` when not known here: a chunk
        before its array's last one that is not remembered. The store was an empty
        prefix when the writer claimed it, so any other key never recorded is new."""
        appended = self._run(key)
        with self._lock:
            if appended is not None:
                last = self._last.get(appended[0])
                if last is None or appended[1] > last[0]:
                    return 0  # past the array's last chunk: new
                if appended[1] == last[0]:
                    return last[1]
                return self._loose.get(key)
            return self._loose.get(key, 0)

    def record(self, key: str, size: int) -> None:
        """``key`` now holds ``size`` bytes (0: deleted)."""
        appended = self._run(key)
        with self._lock:
            if appended is not None:
                run, index = appended
                last = self._last.get(run)
                if last is None or index >= last[0]:
                    self._last[run] = (index, size)
                    return
            self._loose[key] = size


class ObjectCountingStore(zarr.storage.ObjectStore):  # type: ignore[type-arg]
    """zarr-python's ``ObjectStore`` at ``location``, its puts and deletes counted in a
    :class:`Tally`."""

    tally: Tally
    location: S3Location
    sizes: ObjectSizes
    #: put_later starts a write on the store's own threads (a request's latency is
    #: the object store's main cost: several are in flight at once)
    writes_in_background: ClassVar[bool] = True
    _writers: ThreadPoolExecutor | None = None

    @classmethod
    def counted(cls, location: S3Location, tally: Tally) -> ObjectCountingStore:
        store = cls(location.object_store())
        store.tally, store.location, store.sizes = tally, location, ObjectSizes()
        return store

    def with_read_only(self, read_only: bool = False) -> ObjectCountingStore:
        store = type(self)(self.store, read_only=read_only)
        store.tally, store.location, store.sizes = self.tally, self.location, self.sizes
        return store

    def _before(self, key: str) -> int:
        """The size ``key`` holds before a write (asked for when not known)."""
        known = self.sizes.known(key)
        if known is not None:
            return known
        try:
            return int(obstore.head(self.store, key)["size"])
        except FileNotFoundError:
            return 0

    async def _before_async(self, key: str) -> int:
        known = self.sizes.known(key)
        if known is not None:
            return known
        try:
            return int((await obstore.head_async(self.store, key))["size"])
        except FileNotFoundError:
            return 0

    def record_put(self, key: str, old: int, size: int) -> None:
        """Count object ``key`` put from outside the store: ``old`` bytes before, ``size`` now."""
        self._counted(key, old, size)

    def _counted(self, key: str, old: int, size: int) -> None:
        self.sizes.record(key, size)
        self.tally.replaced(key, old, size)

    def put(self, key: str, buffers: Sequence[Any], *, exclusive: bool = False) -> None:
        """Put object ``key`` from ``buffers`` whole (one request).

        Raises:
            FileExistsError: ``exclusive`` and the key exists (it stays as it was).
        """
        data: Any = buffers[0] if len(buffers) == 1 else b"".join(buffers)
        old = 0 if exclusive else self._before(key)
        try:
            obstore.put(self.store, key, data, mode="create" if exclusive else "overwrite")
        except obstore.exceptions.AlreadyExistsError as exc:
            raise FileExistsError(errno.EEXIST, f"{self.location.child(key)} exists") from exc
        self._counted(key, old, memoryview(data).nbytes)

    def put_later(self, key: str, buffers: Sequence[Any]) -> Future[None]:
        if self._writers is None:
            self._writers = ThreadPoolExecutor(UPLOADS_IN_FLIGHT, "daq_storage_zarr_put")
        return self._writers.submit(self.put, key, buffers)

    def close_writes(self) -> None:
        """Wait for the writes started and stop their threads (at close)."""
        if self._writers is not None:
            self._writers.shutdown()
            self._writers = None

    def remove(self, key: str) -> None:
        old = self._before(key)
        obstore.delete(self.store, key)
        self._counted(key, old, 0)

    def remove_prefix(self, prefix: str) -> None:
        """Delete every object below ``prefix`` (a failed call's node: a listing)."""
        for batch in obstore.list(self.store, prefix=f"{prefix}/"):
            for meta in batch:
                self.remove(meta["path"])

    async def set(self, key: str, value: Buffer) -> None:
        old = await self._before_async(key)
        await super().set(key, value)
        self._counted(key, old, len(value))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        try:
            await obstore.put_async(self.store, key, value.as_buffer_like(), mode="create")
        except obstore.exceptions.AlreadyExistsError:
            return
        self._counted(key, 0, len(value))

    async def delete(self, key: str) -> None:
        old = await self._before_async(key)
        await super().delete(key)
        self._counted(key, old, 0)

    # ------------------------------------------------------------------ the writer's side
    def new_group(self, key: str) -> StreamGroup:
        return ObjectGroup(key, self)

    def read_document(self, key: str) -> dict[str, Any] | None:
        try:
            data = obstore.get(self.store, key).bytes()
        except FileNotFoundError:
            return None
        document: dict[str, Any] = json.loads(bytes(data))
        return document

    def children(self, prefix: str) -> list[str]:
        found = obstore.list_with_delimiter(self.store, prefix=f"{prefix}/" if prefix else None)
        names = (str(p).rstrip("/").rpartition("/")[2] for p in found["common_prefixes"])
        return sorted(name for name in names if not name.startswith("."))

    def put_document(self, key: str, data: bytes) -> None:
        self.put(key, [data])

    def sync(self, dirty: DirtyKeys, documents: Iterable[Path]) -> None:
        """Nothing to do: a completed PUT is durable."""


class ObjectGroup(StreamGroup):
    """A stream's group in an object store: each document an object, the arrays' put
    before the group's (see the module docstring)."""

    def __init__(self, key: str, store: ObjectCountingStore) -> None:
        super().__init__(key, store.tally)
        self._store = store

    def create(self, attributes: Mapping[str, Any]) -> None:
        document = group_document(attributes, {})
        self._store.put(f"{self.key}/{_METADATA}", [encode(document)])
        self.document = document

    def add_array(self, name: str, document: dict[str, Any]) -> None:
        self._store.put(f"{self.key}/{name}/{_METADATA}", [encode(document)])
        self.arrays[name] = document

    def remove_array(self, name: str) -> None:
        if name not in self.arrays:
            return  # not made here
        self._store.remove(f"{self.key}/{name}/{_METADATA}")  # gone for readers at once
        self.arrays.pop(name)
        self._store.remove_prefix(f"{self.key}/{name}")

    def publish(self, arrays: Mapping[str, dict[str, Any]], attributes: Mapping[str, Any]) -> bool:
        """The arrays' documents that changed, then the group's. A publication that fails
        part way is put again whole by the next (the same keys)."""
        document = group_document(attributes, arrays)
        if self._unchanged(document, arrays):
            return False
        for name, array in arrays.items():
            if self.arrays.get(name) != array:
                self._store.put(f"{self.key}/{name}/{_METADATA}", [encode(array)])
        self._store.put(f"{self.key}/{_METADATA}", [encode(document)])
        self.document = document
        self.arrays = dict(arrays)
        return True

    def durable_paths(self) -> list[Path]:
        return []

    def discard(self) -> None:
        self._store.remove_prefix(self.key)
        self.arrays.clear()

    def finish(self) -> None:
        """Nothing to do: the documents are plain objects."""


def claim_objects(location: S3Location, store: ObjectCountingStore) -> None:
    """Create the store at ``location``: :meth:`S3Location.claim` with the root
    ``zarr.json`` (see the module docstring), counted in the store's tally.

    Raises:
        StorageIOError: as :meth:`S3Location.claim` (``EEXIST``: something is there).
    """
    root = encode(group_document({}, {}))
    location.claim(_METADATA, root, what="the Zarr store")
    store.record_put(_METADATA, 0, len(root))
