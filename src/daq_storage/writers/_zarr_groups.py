"""The Zarr writer's lower half: the store, its stream groups (a stream's first group and
its later parts), their publication at a flush, durable flushes, and byte counts.

Each group is published whole (see ``_zarr_metadata``); the root's ``zarr.json`` lists
every group in the order the streams came. A stream's first group carries the stream's
metadata (its first batch's schema metadata, ``metadata_changes``, ``set_metadata``
values) and, once the stream has more than one part, ``parts``; a later part carries
``part_of`` and ``first``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import obstore
import zarr

from daq_storage.location import S3Location, S3Options, parse_location
from daq_storage.schema import METADATA_CHANGES
from daq_storage.writers._base import WriterStats, json_value
from daq_storage.writers._zarr_limits import zarr_errors
from daq_storage.writers._zarr_metadata import StreamGroup, create_store, write_root
from daq_storage.writers._zarr_objects import ObjectCountingStore, claim_objects
from daq_storage.writers._zarr_options import ZarrOptions, compressors
from daq_storage.writers._zarr_store import CountingStore, Tally
from daq_storage.writers._zarr_streams import FrameArrays, TableArrays
from daq_storage.writers.zarr_arrays import ZarrArrayBuilder, check_attribute_key

__all__ = ["ZarrGroups"]

_ROOT_DOCUMENT = "zarr.json"


class ZarrGroups(ZarrArrayBuilder):
    """A Zarr V3 store with one group per stream part (see the module docstring)."""

    options: ZarrOptions
    #: A local folder's store or an object store's: the writer uses either the same way.
    _store: CountingStore | ObjectCountingStore

    def __init__(
        self,
        path: str | os.PathLike[str] | S3Location,
        options: ZarrOptions,
        storage_options: S3Options | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(parse_location(path, storage_options))
        #: what errors name: the store's folder or its URL
        self._target: Path | S3Location = self.location or self.path
        self.options = options
        self._compressors = compressors(options)
        #: Per table stream, its current part; earlier parts in ``_earlier``.
        self._tables: dict[str, TableArrays] = {}
        self._earlier: dict[str, list[TableArrays]] = {}
        self._frame_streams: dict[str, FrameArrays] = {}
        #: Every group by key (its folder's name: the stream's safe name, or a part's).
        self._groups: dict[str, StreamGroup] = {}
        self._group_streams: dict[str, str] = {}  # key -> the stream it holds
        #: Keys of the groups that hold a stream's arrays (the others: metadata only).
        self._data_groups: set[str] = set()
        #: key ("" for the root) -> attributes published at the next flush: ours, then
        #: set_metadata's
        self._attributes: dict[str, dict[str, Any]] = {}
        self._user_attributes: dict[str, dict[str, Any]] = {"": {}}
        self._order: list[str] = []  # the root's children in the order they came
        self._unsynced: set[str] = set()  # groups published since the last durable flush
        self._tally = Tally()
        with zarr_errors(self._target, "cannot create Zarr store"):
            if self.location is None:
                self._store = CountingStore.counted(self.path, self._tally, self._claim_store())
                self._add_file(self.path)
            else:
                self._store = ObjectCountingStore.counted(self.location, self._tally)
                claim_objects(self.location, self._store)
            self._root = zarr.open_group(self._store, mode="r+", use_consolidated=False)
        self._own_pool: ThreadPoolExecutor | None = None
        self._builder_used = False  # the seeds' builder made nodes: the root crawls them

    def _claim_store(self) -> Path:
        """Make the store with its root ``zarr.json`` in a folder beside it, renamed into
        place: no reader finds a store without metadata, and of two writers racing for
        one path the second is refused (a non-empty store is never overwritten)."""
        existed = self.path.is_dir()
        if existed and any(self.path.iterdir()):
            raise FileExistsError(errno.EEXIST, "File exists (a non-empty store is never "
                                  "overwritten)")  # fmt: skip
        self._claim_directory(self.path.parent)
        # where what is made under a temporary name goes when no stream's own folder
        # fits: the root's documents, a group before it has an array of its own
        scratch = create_store(self.path)
        if not existed:
            self._made_dirs.insert(0, self.path)
        self._tally.add(os.stat(self.path / _ROOT_DOCUMENT).st_size)
        return scratch

    def _ensure_room(self, nbytes: int, what: str, file: Path) -> None:
        if self.location is None:  # an object store has no disk to fill
            super()._ensure_room(nbytes, what, file)

    def _discard_unused(self) -> None:
        if not isinstance(self._store, ObjectCountingStore):
            super()._discard_unused()
            return
        with contextlib.suppress(Exception):  # as locally: best effort
            for batch in obstore.list(self._store.store):
                for meta in batch:
                    self._store.remove(meta["path"])

    def _pool(self) -> Executor:
        """The executor compressing shards: the caller's, else one of our own."""
        if self.options.executor is not None:
            return self.options.executor
        if self._own_pool is None:
            self._own_pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1), "daq_storage_zarr")
        return self._own_pool

    def _stop_pool(self) -> None:
        if self._own_pool is not None:
            self._own_pool.shutdown()
            self._own_pool = None
        self._store.close_writes()

    # ------------------------------------------------------------------ groups
    def _group(self, stream: str) -> StreamGroup:
        """The stream's first group (made on first use)."""
        safe = self._safe_stream(stream)
        group = self._groups.get(safe)
        if group is None:
            group = self._new_group(stream, safe, {"instrument_id": stream})
        return group

    def _new_group(self, stream: str, key: str, attributes: dict[str, Any]) -> StreamGroup:
        group = self._store.new_group(key)
        with zarr_errors(self._target, f"cannot create stream {stream!r}"):
            group.create(attributes)
        self._groups[key] = group
        self._group_streams[key] = stream
        self._attributes[key] = dict(attributes)
        self._order.append(key)
        return group

    def _drop_group(self, key: str) -> None:
        """Remove a group a failed call made (nothing of it was published)."""
        group = self._groups.pop(key)
        del self._group_streams[key]
        self._attributes.pop(key, None)
        self._order.remove(key)
        self._data_groups.discard(key)
        self._unsynced.discard(key)
        with contextlib.suppress(OSError):  # the error that brought us here is reported
            group.discard()

    def _publish(self, stream: str, key: str, arrays: dict[str, dict[str, Any]]) -> None:
        """Show group ``key`` of ``stream`` with ``arrays`` and its attributes as of now:
        the stream's metadata on its first group."""
        attributes = dict(self._attributes[key])
        if key == self._safe_stream(stream):
            tracked = self._table_metadata.get(stream)
            if tracked is not None:
                described = dict(tracked.first or {})
                if tracked.changes:
                    described[METADATA_CHANGES] = tracked.changes
                attributes = {**described, **attributes}
            attributes.update(self._user_attributes.get(key, {}))
        self._unsynced.add(key)
        self._groups[key].publish(arrays, attributes)

    def _publish_root(self) -> None:
        write_root(self._store, self._user_attributes[""], self._order, self._groups,
                   crawl=self._builder_used)  # fmt: skip

    # ------------------------------------------------------------------ metadata
    def set_metadata(self, key: str, value: Any, *, stream: str | None = None) -> None:
        """A Zarr attribute (JSON) of the root group or of the stream's (first) group,
        written at the next :meth:`flush` (or :meth:`close`) with the group's consolidated
        metadata."""
        self._check_open()
        check_attribute_key(key)
        value = json.loads(json_value(value, what=f"metadata {key!r}"))
        where = "" if stream is None else self._group(stream).key
        self._user_attributes.setdefault(where, {})[key] = value
        self._stored = True

    # ------------------------------------------------------------------ durability, stats
    def _sync(self) -> None:
        """fsync what the flushes since the last durable one wrote: objects (chunks,
        shards), the documents of the groups they published, the root's, and the
        folders naming them (on an object store, the completed PUTs are durable)."""
        dirty = self._tally.take()
        groups = set(self._unsynced)
        documents = [self.path / _ROOT_DOCUMENT]
        for key in groups:
            documents += self._groups[key].durable_paths()
        try:
            with zarr_errors(self._target, "cannot sync the Zarr store to disk"):
                self._store.sync(dirty, documents)
        except BaseException:
            self._tally.give_back(dirty)
            raise
        self._unsynced -= groups

    @property
    def stats(self) -> WriterStats:
        """A snapshot; the store's size is the bytes counted as its objects and documents
        were written (no directory is walked)."""
        self._stats.directory_bytes = self._tally.bytes
        return super().stats
