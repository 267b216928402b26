"""The Zarr writer's local store: zarr-python's ``LocalStore``, counting what it holds
and remembering what a durable flush must fsync (the object-store twin is in
``_zarr_objects``; the writer uses either through the same methods: ``put``,
``new_group``, the :class:`~._zarr_metadata.Documents` methods and ``sync``).

``stats`` must not walk a store of thousands of chunk files, so every object written or
deleted through :class:`CountingStore` (chunks, shards, the seeds' builder's documents)
changes a running :class:`Tally` by its size difference (one ``stat`` before each write:
a chunk rewritten at the next flush counts once). The writer's own documents (see
``_zarr_metadata``) report their sizes to the same tally.

A durable flush fsyncs the objects written since the last one, and the directories
naming them. Appended arrays write chunk keys ``<array>/c/<i>/0/...`` with a growing
``i``: those are kept as one range per array, so the record stays small however long a
run goes without a durable flush. Other keys (the builder's chunks of any grid, its
documents) are kept one by one, up to :data:`MAX_LOOSE_KEYS`; past that the next durable
flush fsyncs every file of the store instead (a walk, but only then).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import zarr.storage
from zarr.core.buffer import Buffer

from daq_storage.writers._io import fsync_paths
from daq_storage.writers._zarr_metadata import (
    LinkedGroup,
    StreamGroup,
    folders,
    read_json,
    replace_file,
)

__all__ = [
    "APPENDED",
    "MAX_LOOSE_KEYS",
    "CountingStore",
    "DirtyKeys",
    "Puts",
    "Tally",
    "done_now",
    "sync_store",
    "write_object",
]

#: Keys outside an appended array's runs remembered one by one for the next durable flush.
MAX_LOOSE_KEYS = 65536
#: ``<array>/c/<i>`` followed by zeros only: a chunk (or shard) of an array appended along
#: its first axis, whose other axes hold one chunk.
APPENDED = re.compile(r"^(?P<array>.+)/c/(?P<index>\d+)(?P<rest>(?:/0)*)$")


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def write_object(path: Path, buffers: Sequence[Any], *, exclusive: bool = False) -> int:
    """Write ``buffers`` to ``path`` whole: a temporary name beside it, then a rename (a
    link, when ``exclusive``: an existing object is then kept), as zarr-python does.
    Returns the size the object had before (0 when new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = _size(path)
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with temporary.open("wb") as handle:
            handle.writelines(buffers)
        if exclusive:
            os.link(temporary, path)  # FileExistsError: the object stays as it was
            temporary.unlink()
        else:
            temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return old


class DirtyKeys:
    """Keys written since the last durable flush (see the module docstring)."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], tuple[int, int]] = {}  # (array, rest) -> first, last
        self.loose: set[str] = set()
        self.overflowed = False

    def add(self, key: str) -> None:
        found = APPENDED.match(key)
        if found is not None:
            run = (found["array"], found["rest"])
            index = int(found["index"])
            first, last = self.runs.get(run, (index, index))
            self.runs[run] = (min(first, index), max(last, index))
        elif not self.overflowed:
            self.loose.add(key)
            if len(self.loose) > MAX_LOOSE_KEYS:
                self.overflowed = True
                self.loose.clear()

    def __iter__(self) -> Iterator[str]:
        """Every key recorded (an overflow aside)."""
        for (array, rest), (first, last) in self.runs.items():
            for index in range(first, last + 1):
                yield f"{array}/c/{index}{rest}"
        yield from self.loose

    def merge(self, other: DirtyKeys) -> None:
        """Take ``other``'s keys back (a durable flush that failed)."""
        for run, (first, last) in other.runs.items():
            mine = self.runs.get(run, (first, last))
            self.runs[run] = (min(mine[0], first), max(mine[1], last))
        self.overflowed = self.overflowed or other.overflowed
        if not self.overflowed:
            self.loose |= other.loose


class Tally:
    """Bytes a store holds, counted as they are written (thread-safe: zarr-python writes
    chunks from its own threads), and the keys a durable flush must fsync."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = 0
        self._dirty = DirtyKeys()

    @property
    def bytes(self) -> int:
        return self._bytes

    def add(self, delta: int) -> None:
        with self._lock:
            self._bytes += delta

    def replaced(self, key: str, old: int, new: int) -> None:
        """Object ``key`` went from ``old`` bytes to ``new`` (0: absent)."""
        with self._lock:
            self._bytes += new - old
            self._dirty.add(key)

    def take(self) -> DirtyKeys:
        """The keys written since the last call, and a fresh record."""
        with self._lock:
            taken, self._dirty = self._dirty, DirtyKeys()
        return taken

    def give_back(self, keys: DirtyKeys) -> None:
        with self._lock:
            self._dirty.merge(keys)


class Puts(Protocol):
    """A store the writer puts whole objects in (its own shards)."""

    def put_later(self, key: str, buffers: Sequence[Any]) -> Future[None]:
        """Put object ``key`` from ``buffers``: done now (a local folder), or started in
        the background (an object store); the future holds the outcome."""
        ...


def done_now(call: Callable[[], None]) -> Future[None]:
    """``call()`` run now, its outcome as a finished future."""
    outcome: Future[None] = Future()
    try:
        call()
    except BaseException as exc:  # the caller reads it from the future
        outcome.set_exception(exc)
    else:
        outcome.set_result(None)
    return outcome


class CountingStore(zarr.storage.LocalStore):
    """A ``LocalStore`` whose writes and deletes update a :class:`Tally`; ``scratch`` is
    a folder on its filesystem that no reader lists (see ``_zarr_metadata``)."""

    tally: Tally
    scratch: Path
    #: its writes are done when put_later returns
    writes_in_background: ClassVar[bool] = False

    @classmethod
    def counted(cls, root: Path, tally: Tally, scratch: Path) -> CountingStore:
        store = cls(root)
        store.tally, store.scratch = tally, scratch
        return store

    def with_read_only(self, read_only: bool = False) -> Self:
        store = super().with_read_only(read_only)
        store.tally, store.scratch = self.tally, self.scratch
        return store

    def new_group(self, key: str) -> StreamGroup:
        return LinkedGroup(self.root / key, self.tally, self.scratch)

    def read_document(self, key: str) -> dict[str, Any] | None:
        return read_json(self.root / key)

    def children(self, prefix: str) -> list[str]:
        return folders(self.root / prefix)

    def put_document(self, key: str, data: bytes) -> None:
        """Made in ``scratch`` and renamed: never a temporary name where readers list."""
        path = self.root / key
        old = _size(path)
        replace_file(path, data, self.scratch)
        self.tally.add(len(data) - old)

    def sync(self, dirty: DirtyKeys, documents: Iterable[Path]) -> None:
        """fsync (see :func:`sync_store`)."""
        sync_store(self.root, dirty, documents)

    def put(self, key: str, buffers: Sequence[Any], *, exclusive: bool = False) -> None:
        """Write object ``key`` from ``buffers`` (the writer's own shards use this too)."""
        old = write_object(self.root / key, buffers, exclusive=exclusive)
        self.tally.replaced(key, old, sum(memoryview(b).nbytes for b in buffers))

    def put_later(self, key: str, buffers: Sequence[Any]) -> Future[None]:
        return done_now(lambda: self.put(key, buffers))

    def close_writes(self) -> None:
        """Nothing runs in the background here."""

    def remove(self, key: str) -> None:
        path = self.root / key
        old = _size(path)
        path.unlink(missing_ok=True)
        self.tally.replaced(key, old, 0)

    async def _set(self, key: str, value: Buffer, exclusive: bool = False) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        buffers = [value.as_buffer_like()]
        try:
            await asyncio.to_thread(self.put, key, buffers, exclusive=exclusive)
        except FileExistsError:
            if not exclusive:
                raise

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self._set(key, value, exclusive=True)

    def set_sync(self, key: str, value: Buffer) -> None:
        self._ensure_open_sync()
        self._check_writable()
        self.put(key, [value.as_buffer_like()])

    async def delete(self, key: str) -> None:
        self._check_writable()
        if (self.root / key).is_dir():
            await super().delete(key)  # a folder: not an object this writer counts
        else:
            await asyncio.to_thread(self.remove, key)

    def delete_sync(self, key: str) -> None:
        self._ensure_open_sync()
        self._check_writable()
        if (self.root / key).is_dir():
            super().delete_sync(key)
        else:
            self.remove(key)


def _chain(root: Path, key: str) -> list[Path]:
    """Object ``key``'s file, then its folders up to the first below ``root``."""
    path = root / key
    chain = [path]
    for parent in path.parents:
        if parent == root:
            break
        chain.append(parent)
    return chain


def sync_store(root: Path, dirty: DirtyKeys, documents: Iterable[Path]) -> None:
    """fsync the objects ``dirty`` names (those that exist: zarr-python deletes a chunk
    that holds only its fill value), every folder on their way from ``root``,
    ``documents`` (files and folders), and ``root`` itself; every file below ``root``
    instead of the objects when ``dirty`` overflowed."""
    paths: dict[Path, None] = {}
    if dirty.overflowed:
        for folder, _, files in os.walk(root):
            paths[Path(folder)] = None
            paths.update((Path(folder) / name, None) for name in files)
    for key in dirty:
        paths.update(dict.fromkeys(p for p in _chain(root, key) if os.path.lexists(p)))
    paths.update(dict.fromkeys(p for p in documents if os.path.lexists(p)))
    paths[root] = None
    fsync_paths(_no_links(paths))


def _no_links(paths: Iterable[Path]) -> Iterator[Path]:
    """``paths`` without symbolic links (fsync follows them: their targets are listed
    themselves; a link's own entry is synced with its folder)."""
    for path in paths:
        if not path.is_symlink():
            yield path
