"""What readers of a Zarr V3 store see: every stream group published whole, at once (in
a local folder; :class:`StreamGroup` is also what an object store's groups implement,
see ``_zarr_objects``).

Data (chunks, shards) is written under its final name before any metadata covers it
(zarr-python and the writer's shard writes both use a temporary name and a rename), and
the arrays' shapes grow only here, at a flush. Readers find shapes in two places:

- the group's ``zarr.json`` with ``consolidated_metadata`` (``xr.open_zarr`` by default,
  ``zarr.open_group``), one file, and
- each array's own ``zarr.json`` (``consolidated=False``, ``zarr.open_array``), one file
  per array.

Replacing one file is atomic; replacing several is not, and a kill in between would leave
a frames array longer than its ids or columns of two lengths. So while
a stream is written, its group's and arrays' ``zarr.json`` are symbolic links into one
directory of documents, ``<group>/<first array>/.daq_metadata.<n>``, reached through
the link ``.daq_metadata`` beside it: a flush writes the next directory and swaps that
one link, so every document of the group changes with one rename. The directories live
inside an array's folder, where no Zarr reader lists members. :meth:`StreamGroup.finish`
(at close) turns the links back into plain files, so a store closed cleanly is an
ordinary Zarr store; one killed mid-run keeps working links. A reader of the consolidated
metadata reads one document; a reader of each array's ``zarr.json`` reads one document
per array, each whole, but at its own instant: a swap between two reads shows it two
flushes (nothing a writer can prevent; see ``zarr``).

What is made under a temporary name is made in the stream's own host folder, or, while
it has none (and for the root's documents), beside the store: never in another stream's
folder, so one stream's folder that becomes unusable costs the others nothing.

zarr-python's own ``consolidate_metadata`` sorts the children by name (``ai0, ai1,
ai10, ai2``), so the writer writes the consolidated metadata itself, children in the
order it gives (a table's schema order), in the layout zarr-python reads: the group's
``zarr.json`` holds ``consolidated_metadata`` with every node below it, keyed by its
path from the group.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from daq_storage.writers._zarr_store import Tally

__all__ = [
    "Documents",
    "LinkedGroup",
    "StreamGroup",
    "create_store",
    "encode",
    "folders",
    "group_document",
    "read_json",
    "replace_file",
    "write_root",
]

_METADATA = "zarr.json"
_LINK = ".daq_metadata"  # in the host array's folder: -> .daq_metadata.<n>
_GROUP = ".group"  # the group's document in a version folder (array names never start with .)


def encode(document: Mapping[str, Any]) -> bytes:
    """A ``zarr.json`` document as zarr-python writes it."""
    return json.dumps(document, indent=2, allow_nan=True).encode()


def _temporary(folder: Path, suffix: str) -> Path:
    return folder / f".{uuid.uuid4().hex}.{suffix}"


def replace_file(target: Path, data: bytes, scratch: Path) -> None:
    """Put ``data`` at ``target`` whole: written under a temporary name in ``scratch`` (a
    folder on the same filesystem that no reader lists), then renamed."""
    temporary = _temporary(scratch, "partial")
    try:
        temporary.write_bytes(data)
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _link(target: str, at: Path, scratch: Path) -> None:
    """Make (or atomically replace) the symbolic link ``at`` -> ``target`` (relative to
    ``at``), made in ``scratch`` and renamed."""
    temporary = _temporary(scratch, "link")
    temporary.symlink_to(target)
    temporary.replace(at)


def _appear(staging: Path, at: Path) -> None:
    """Rename the folder ``staging``, made complete, to ``at``: readers find it whole."""
    try:
        staging.rename(at)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _consolidated(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "inline", "must_understand": False, "metadata": dict(metadata)}


def group_document(attributes: Mapping[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    """A group's ``zarr.json``: its attributes and the consolidated metadata of ``flat``
    (the nodes below it by path, in order)."""
    return {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": dict(attributes),
        "consolidated_metadata": _consolidated(flat),
    }


class StreamGroup(ABC):
    """One stream's group: its documents as published, and the next publication (a
    local folder: :class:`LinkedGroup`; an object store: ``_zarr_objects.ObjectGroup``).
    """

    def __init__(self, key: str, tally: Tally) -> None:
        self.key = key  # the group's path in the store
        #: array name -> its document as readers see it now, in the group's order
        self.arrays: dict[str, dict[str, Any]] = {}
        self.document: dict[str, Any] = group_document({}, {})
        self._tally = tally

    @abstractmethod
    def create(self, attributes: Mapping[str, Any]) -> None:
        """Make the group, empty, with ``attributes``."""

    @abstractmethod
    def add_array(self, name: str, document: dict[str, Any]) -> None:
        """Make a new array visible with ``document`` (its shape: the group's length as
        published, so that every array of the group keeps one length)."""

    @abstractmethod
    def remove_array(self, name: str) -> None:
        """Remove an array :meth:`add_array` made (in a commit that failed)."""

    @abstractmethod
    def publish(self, arrays: Mapping[str, dict[str, Any]], attributes: Mapping[str, Any]) -> bool:
        """Show ``arrays`` (every array of the group, in order) and ``attributes``, after
        the data they cover; ``False`` if readers already see exactly that."""

    @abstractmethod
    def durable_paths(self) -> list[Path]:
        """The local files and folders a durable flush fsyncs for the documents."""

    @abstractmethod
    def discard(self) -> None:
        """Remove the group (made by a call that failed before it held anything)."""

    @abstractmethod
    def finish(self) -> None:
        """Leave the documents as a plain Zarr store holds them (at close)."""

    def _unchanged(self, document: dict[str, Any], arrays: Mapping[str, Any]) -> bool:
        return document == self.document and list(arrays) == list(self.arrays)


class LinkedGroup(StreamGroup):
    """A stream's group in a local folder, its documents swapped with one rename.

    Every folder (the group's, an array's) is made complete under a temporary name and
    renamed into place, so no reader lists a node without its ``zarr.json``. While the
    group has no array of its own, such things are made in ``scratch``: a folder on the
    same filesystem that no reader lists.
    """

    def __init__(self, folder: Path, tally: Tally, scratch: Path) -> None:
        super().__init__(folder.name, tally)
        self.folder = folder
        self._scratch = scratch
        self._host: str | None = None  # the array whose folder holds the documents
        self._version = 0
        #: bytes of each document file (the group's under ``_GROUP``), counted in ``tally``
        self._sizes: dict[str, int] = {}

    def _sized(self, name: str, data: bytes) -> bytes:
        """``data``, counted as the document ``name`` (replacing what it held)."""
        self._tally.add(len(data) - self._sizes.get(name, 0))
        self._sizes[name] = len(data)
        return data

    def _unsized(self, name: str) -> None:
        self._tally.add(-self._sizes.pop(name, 0))

    @property
    def host(self) -> Path | None:
        """The folder holding the group's documents (an array's), listed by no reader."""
        return None if self._host is None else self.folder / self._host

    def _versions(self, version: int) -> Path:
        return self.folder / str(self._host) / f"{_LINK}.{version}"

    def _staging(self) -> Path:
        folder = _temporary(self.host or self._scratch, "partial")
        folder.mkdir()
        return folder

    def create(self, attributes: Mapping[str, Any]) -> None:
        document = group_document(attributes, {})
        staging = self._staging()
        data = encode(document)
        (staging / _METADATA).write_bytes(data)
        _appear(staging, self.folder)
        self._sized(_GROUP, data)
        self.document = document

    def add_array(self, name: str, document: dict[str, Any]) -> None:
        staging = self._staging()
        data = encode(document)
        if self._host is None:  # the group's first array holds the documents from now on
            versions = staging / f"{_LINK}.0"
            versions.mkdir()
            (versions / _GROUP).write_bytes(encode(self.document))
            (versions / name).write_bytes(data)
            (staging / _LINK).symlink_to(versions.name)
            (staging / _METADATA).symlink_to(f"{_LINK}/{name}")
            _appear(staging, self.folder / name)
            self._host, self._version = name, 0
        else:
            (self._versions(self._version) / name).write_bytes(data)
            (staging / _METADATA).symlink_to(f"../{self._host}/{_LINK}/{name}")
            _appear(staging, self.folder / name)
        self._sized(name, data)
        self.arrays[name] = document
        self._link_group()

    def _link_group(self) -> None:
        """The group's ``zarr.json`` as a link to the documents (same content)."""
        if self._host is not None and not (self.folder / _METADATA).is_symlink():
            _link(
                f"{self._host}/{_LINK}/{_GROUP}", self.folder / _METADATA, self.folder / self._host
            )

    def remove_array(self, name: str) -> None:
        if name not in self.arrays:
            return  # not made here: whatever is at its place is someone else's
        if name == self._host:  # the others go too (made later): documents as plain files
            self.finish()
        trash = _temporary(self.host or self._scratch, "removed")
        (self.folder / name).rename(trash)  # gone for readers at once
        self.arrays.pop(name, None)
        self._unsized(name)
        shutil.rmtree(trash, ignore_errors=True)

    def publish(self, arrays: Mapping[str, dict[str, Any]], attributes: Mapping[str, Any]) -> bool:
        """Every document of the group changes at once (one rename)."""
        document = group_document(attributes, arrays)
        if self._unchanged(document, arrays):
            return False
        if self._host is None:
            data = encode(document)
            replace_file(self.folder / _METADATA, data, self._scratch)
            self._sized(_GROUP, data)
        else:
            self._link_group()
            version = self._version + 1
            versions = self._versions(version)
            shutil.rmtree(versions, ignore_errors=True)  # left by a publication that failed
            versions.mkdir()
            files = {_GROUP: encode(document)}
            files.update((name, encode(array)) for name, array in arrays.items())
            for name, data in files.items():
                (versions / name).write_bytes(data)
            _link(versions.name, versions.parent / _LINK, versions.parent)
            shutil.rmtree(self._versions(self._version), ignore_errors=True)
            self._version = version
            for name in set(self._sizes) - set(files):
                self._unsized(name)
            for name, data in files.items():
                self._sized(name, data)
        self.document = document
        self.arrays = dict(arrays)
        return True

    def durable_paths(self) -> list[Path]:
        """The files and folders that make the documents as published reachable
        (symbolic links are synced with the folder holding them)."""
        paths = [self.folder]
        paths += [self.folder / name for name in self.arrays]
        host = self.host
        if host is None:
            paths.append(self.folder / _METADATA)
            paths += [self.folder / name / _METADATA for name in self.arrays]
        else:
            versions = self._versions(self._version)
            paths += [host, versions, versions / _GROUP]
            paths += [versions / name for name in self.arrays]
        return paths

    def discard(self) -> None:
        trash = _temporary(self._scratch, "removed")
        self.folder.rename(trash)
        for name in list(self._sizes):
            self._unsized(name)
        shutil.rmtree(trash, ignore_errors=True)

    def finish(self) -> None:
        """Turn the links into plain files with the same documents."""
        host = self.host
        if host is None:
            return
        for name, array in self.arrays.items():
            replace_file(self.folder / name / _METADATA, encode(array), self.folder / name)
        replace_file(self.folder / _METADATA, encode(self.document), host)
        (host / _LINK).unlink(missing_ok=True)
        shutil.rmtree(self._versions(self._version), ignore_errors=True)
        self._host = None


def create_store(path: Path) -> Path:
    """Make the store ``path`` (missing or an empty folder) with its root ``zarr.json``:
    made in a folder beside it and renamed into place, so that no reader finds a store
    without metadata and of two writers racing for one path the second is refused
    (``ENOTEMPTY``, ``EEXIST``). Returns a folder on the store's filesystem outside it,
    for what :class:`StreamGroup` makes before any array exists (the store itself when
    it is a mount point); the root's documents are made there too."""
    document = encode(group_document({}, {}))
    outside = path.parent
    if path.is_dir() and os.stat(path).st_dev != os.stat(outside).st_dev:
        replace_file(path / _METADATA, document, path)
        return path
    staging = _temporary(outside, "partial")
    staging.mkdir()
    (staging / _METADATA).write_bytes(document)
    _appear(staging, path)
    return outside


class Documents(Protocol):
    """Where the root's document and the seeds' builder's nodes are read and written (a
    local folder or an object store, keys relative to the store)."""

    def read_document(self, key: str) -> dict[str, Any] | None:
        """The JSON document at ``key``; ``None`` when there is none."""
        ...

    def children(self, prefix: str) -> list[str]:
        """The names of the nodes right below ``prefix`` ("" for the root), sorted."""
        ...

    def put_document(self, key: str, data: bytes) -> None:
        """Put ``data`` at ``key`` whole (readers see the old or the new document)."""
        ...


def write_root(
    store: Documents,
    attributes: Mapping[str, Any],
    order: Sequence[str],
    groups: Mapping[str, StreamGroup],
    *,
    crawl: bool,
) -> None:
    """Rewrite the root's ``zarr.json``: ``attributes`` and the consolidated metadata of
    every node (stream groups as they publish themselves; with ``crawl``, other nodes,
    from the seeds' builder, as found, their groups' consolidated metadata rewritten
    too)."""
    document = store.read_document(_METADATA) or group_document({}, {})
    flat: dict[str, Any] = {}
    names = list(order)
    if crawl:
        found = store.children("")
        names += [name for name in found if name not in groups]
    for name in names:
        group = groups.get(name)
        if group is not None:
            nested: Iterable[tuple[str, Any]] = group.arrays.items()
            node: dict[str, Any] | None = group.document
        else:
            node, below = _crawl(store, name)
            nested = below.items()
        if node is None:
            continue  # not a node (yet)
        if node.get("node_type") == "group":
            # A group below keeps its attributes here; its own children follow it.
            flat[name] = {**node, "consolidated_metadata": _consolidated({})}
            flat.update({f"{name}/{key}": value for key, value in nested})
        else:
            flat[name] = node
    document["attributes"] = {**document.get("attributes", {}), **attributes}
    document["consolidated_metadata"] = _consolidated(flat)
    store.put_document(_METADATA, encode(document))


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON document in file ``path``; ``None`` when there is none."""
    try:
        document: dict[str, Any] = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    return document


def folders(path: Path) -> list[str]:
    """The folders in ``path`` that can be nodes (not hidden), sorted."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and e.name[0] != ".")


def _crawl(store: Documents, key: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """A node of the seeds' builder and the flat metadata below it (a group's own
    consolidated metadata rewritten)."""
    document = store.read_document(f"{key}/{_METADATA}")
    flat: dict[str, Any] = {}
    if document is None or document.get("node_type") != "group":
        return document, flat
    for name in store.children(key):
        child, below = _crawl(store, f"{key}/{name}")
        if child is None:
            continue
        if child.get("node_type") == "group":
            flat[name] = {**child, "consolidated_metadata": _consolidated({})}
            flat.update({f"{name}/{k}": value for k, value in below.items()})
        else:
            flat[name] = child
    document["consolidated_metadata"] = _consolidated(flat)
    store.put_document(f"{key}/{_METADATA}", encode(document))
    return document, flat
