"""A new HDF5 file and its groups, made the way the writer's crash safety needs them."""

from __future__ import annotations

import errno
import os
import time
from datetime import UTC, datetime
from typing import Any

import h5py

from daq_storage.errors import StorageIOError
from daq_storage.writers._hdf5_file import OrderedFile
from daq_storage.writers._hdf5_journal import journal_path

__all__ = ["create_file", "dense_attributes", "make_group", "now"]


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


def create_file(
    path: os.PathLike[str], take_over: bool, swmr: bool
) -> tuple[h5py.File, int, OrderedFile | None]:
    """A new file, its descriptor, and (not for SWMR) the :class:`OrderedFile` HDF5
    writes through: the HDF5 1.8 format at the earliest structures it allows (1.10 for
    SWMR); group attributes in dense storage (:func:`dense_attributes`); no chunk cache
    (every chunk reaches the file when written, none waits for a flush).

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
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_TRUNC if take_over else os.O_CREAT | os.O_EXCL)
    fd = os.open(path, flags, 0o644)
    try:
        ordered = None
        name = os.fsencode(path)
        if not swmr:  # SWMR orders its own writes, through HDF5's own driver only
            ordered = OrderedFile(fd, journal)
            access.set_fileobj_driver(h5py.h5fd.fileobj_driver, ordered)
        made = h5py.h5f.create(name, h5py.h5f.ACC_TRUNC, fapl=access, fcpl=creation)
        return h5py.File(made), fd, ordered
    except BaseException:
        os.close(fd)
        raise
