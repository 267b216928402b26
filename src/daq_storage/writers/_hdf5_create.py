"""A new HDF5 file and its groups, made the way the writer's crash safety needs them."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from daq_storage._file_locks import lock_byte
from daq_storage.errors import StorageIOError
from daq_storage.writers._hdf5_file import OrderedFile
from daq_storage.writers._hdf5_journal import LIVE_BYTE, journal_path
from daq_storage.writers._per_stream import create_hidden, publish

__all__ = ["create_file", "dense_attributes", "make_group", "make_part", "now", "place_group",
           "publish_file", "publishing"]  # fmt: skip


def now() -> tuple[str, int]:
    """The time as ISO 8601 text (UTC) and as nanoseconds since the epoch."""
    ns = time.time_ns()
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(), ns


def dense_attributes(creation: Any) -> None:
    """A group's attributes in dense storage from the start (a name index: many keys stay
    fast; no conversion from compact storage later). Tracking their creation order also
    gives the group the newer object header dense storage needs, in a file otherwise of
    the earliest structures (see :class:`OrderedFile`)."""
    creation.set_obj_track_times(False)  # as h5py: a file's bytes do not depend on when
    creation.set_attr_creation_order(h5py.h5p.CRT_ORDER_TRACKED)
    creation.set_attr_phase_change(0, 0)


def make_group(file: h5py.File, name: str) -> h5py.Group:
    """A new group ``name`` at the file's root, its attributes in dense storage."""
    creation = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    dense_attributes(creation)
    made = h5py.h5g.create(file.id, file._e(name), lcpl=file._lcpl, gcpl=creation)
    return h5py.Group(made)


def place_group(file: h5py.File, key: str, stream: str, made: h5py.Group | None) -> h5py.Group:
    """The first group of ``stream`` at ``key`` (its parent made if need be): new (attributes
    ``instrument_id``, ``created_at``), or ``made`` moved there (a group its metadata made
    before the stream's kind, and so its place, was known)."""
    parent = key.rpartition("/")[0]
    if parent and parent not in file:
        make_group(file, parent)
    if made is not None:
        file.move(made.name, f"/{key}")
        return file[key]
    group = make_group(file, key)
    group.attrs["instrument_id"] = stream
    group.attrs["created_at"] = now()[0]
    return group


def make_part(file: h5py.File, key: str, stream: str, first: int) -> h5py.Group:
    """A new group ``key`` for a later part of ``stream``, starting at its row ``first``
    (attributes ``part_of``, ``first``, ``created_at``)."""
    group = make_group(file, key)
    group.attrs["part_of"] = stream
    group.attrs["first"] = np.int64(first)
    group.attrs["created_at"] = now()[0]
    return group


def create_file(
    path: Path, take_over: bool, swmr: bool
) -> tuple[h5py.File, int, OrderedFile | None, Path | None]:
    """A new file, its descriptor, the :class:`OrderedFile` HDF5 writes through (not for
    SWMR), and the temporary name it is made under (``None``: taken over under its name):
    the HDF5 1.8 format at the earliest structures it allows (1.10 for SWMR); group
    attributes in dense storage (:func:`dense_attributes`); no chunk cache (every chunk
    reaches the file when written, none waits for a flush).

    The file is made under a hidden name beside ``path`` (see
    :func:`~daq_storage.writers._per_stream.create_hidden`): the caller writes what it
    needs, commits, then calls :func:`publish_file`, so that no kill leaves a file under
    ``path`` without its superblock and root group. An empty file taken over stays under
    its name (it was there, empty, before).

    Raises:
        FileExistsError: ``path`` exists (and is not an empty file to take over).
    """
    access = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    if swmr:
        access.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
    else:  # the earliest structures (readable everywhere) but for dense attributes
        access.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_V18)
    access.set_cache(0, 0, 0, 0.75)
    creation = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    dense_attributes(creation)
    journal = journal_path(path)
    if journal.exists():  # a killed writer's commit, for repair to apply to another file
        raise StorageIOError(errno.EEXIST, f"a killed writer's journal {journal.name} is left "
                             "there: run daq-storage repair first", str(path))  # fmt: skip
    hidden: Path | None = None
    if take_over:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_TRUNC, 0o644)
    else:
        if os.path.lexists(path):  # refused before any work (publish_file checks again)
            raise FileExistsError(errno.EEXIST, "File exists", str(path))
        hidden, fd = create_hidden(path)
    try:
        ordered = None
        # HDF5's own driver (SWMR) opens the file by name; through ours the name is only
        # what ``h5py.File.filename`` says.
        name = os.fsencode(hidden if swmr and hidden is not None else path)
        if not swmr:  # SWMR orders its own writes, through HDF5's own driver only
            # Commits journal beside the temporary name until the file has its own.
            ordered = OrderedFile(fd, journal_path(hidden or path))
            access.set_fileobj_driver(h5py.h5fd.fileobj_driver, ordered)
        made = h5py.h5f.create(name, h5py.h5f.ACC_TRUNC, fapl=access, fcpl=creation)
        return h5py.File(made), fd, ordered, hidden
    except BaseException:
        os.close(fd)
        if hidden is not None:
            hidden.unlink(missing_ok=True)
        raise


def publish_file(hidden: Path, path: Path, fd: int, ordered: OrderedFile | None) -> None:
    """Give the file :func:`create_file` made at ``hidden`` its name ``path`` (never
    replacing a file: ``FileExistsError``); its commits journal beside ``path`` from now
    on. Call it between commits (no journal is then left).

    Our descriptor ``fd`` is then reopened under ``path`` (the same file), so that it names
    the file as it is now called (``/proc/<pid>/fd``, ``lsof``), not a removed temporary,
    and the lock saying its writer is alive is taken again on it (with no journal there,
    nothing could be repaired meanwhile). HDF5's own descriptor (SWMR) keeps the name it
    opened.
    """
    publish(hidden, path)
    if ordered is None:
        return
    ordered.journal = journal_path(path)
    again = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        if not os.path.samestat(os.fstat(again), os.fstat(fd)):
            return  # the name was replaced meanwhile: our file is still ours to write
        os.dup2(again, fd, inheritable=False)
    finally:
        os.close(again)
    with contextlib.suppress(OSError):  # no locks here (some filesystems): none taken
        lock_byte(fd, LIVE_BYTE)


@contextlib.contextmanager
def publishing(
    hidden: Path | None, path: Path, fd: int, ordered: OrderedFile | None,
    release: Callable[[], None],
) -> Iterator[None]:  # fmt: skip
    """Around the first writes to a file :func:`create_file` made: then
    :func:`publish_file` (nothing to do for a file taken over). On any failure ``release``
    (close the file) and remove the temporary, and the journal a failed commit left
    beside it (nothing of it was ever under its name)."""
    try:
        yield
        if hidden is not None:
            publish_file(hidden, path, fd, ordered)
    except BaseException:
        release()
        if hidden is not None:
            hidden.unlink(missing_ok=True)
            journal_path(hidden).unlink(missing_ok=True)
        raise
