"""Check what a run left on disk, and restore what a killed writer left incomplete.

:func:`check_files` walks a file or a directory tree (run directories included) and
opens every file this project writes with the reader a scientist would use, so
"nothing to repair" is said only of files that were actually read. What a killed writer
left is repaired first, never cutting a complete record: Parquet files with a recovery
record (cut back to their last complete row group, unless they are complete), Arrow IPC
files with a torn last message (cut back to the last complete one; a file-format file
without its footer gets one), CSV files with a torn last line, HDF5 files with the
journal of a commit their writer was killed in (applied; a torn one removed). A file
whose directory (for HDF5: the file) a live writer holds is ``busy``, and left alone.
One damaged file never stops the check of the others.

An output is made under a hidden temporary name (``.<name>.<pid>.<hex>.tmp``) and only
then takes its name (see :func:`~daq_storage.writers._per_stream.create_hidden`): such a
file left by a killed writer is no data (its output never got its name) and is removed
(``repaired``, "leftover of a killed writer"); one whose process is still running is
``busy`` and left alone. A Zarr writer's staging folder (``.<hex>.partial``) beside a
store is reported (``skipped``), never read as data nor removed: it has no owner to ask.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from daq_storage.errors import StorageIOError

__all__ = ["FileCheck", "check_files"]

Status = Literal["ok", "repaired", "damaged", "busy", "skipped"]
_RECOVERY_SUFFIX = ".recovery"
#: What a Zarr writer makes beside a store before renaming it into place.
_ZARR_STAGING = re.compile(r"^\.[0-9a-f]{32}\.(?:partial|link)$")


@dataclass(frozen=True, slots=True)
class FileCheck:
    """The outcome for one file (or one Zarr store)."""

    path: Path
    status: Status
    detail: str

    @property
    def problem(self) -> bool:
        """The file is damaged or could not be checked because a writer holds it."""
        return self.status in ("damaged", "busy")


def check_files(path: str | Path) -> list[FileCheck]:
    """Check (and where needed repair) every file under ``path``, in name order.

    Raises:
        StorageIOError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise StorageIOError(errno.ENOENT, f"cannot check {path}: it does not exist", str(path))
    return [_check_one(target) for target in _targets(path)]


def _leftover(name: str) -> tuple[str, int] | None:
    from daq_storage.writers import leftover

    return leftover(name)


def _targets(path: Path) -> Iterator[Path]:
    if path.is_file() or _is_zarr_store(path):
        yield path
        return
    for entry in sorted(path.iterdir()):
        if _leftover(entry.name) is not None or _ZARR_STAGING.match(entry.name):
            yield entry  # never read as data, never walked into
            continue
        if entry.name.startswith(".") and entry.name.endswith(_RECOVERY_SUFFIX):
            restored = entry.with_name(entry.name[1 : -len(_RECOVERY_SUFFIX)])
            if not restored.exists():  # killed before it made the file it restores
                yield restored
            continue  # otherwise read along with the file it restores
        if entry.suffix == ".journal" and entry.with_suffix("").suffix in _CHECKERS:
            continue  # an HDF5 file's journal: applied when that file is checked
        if entry.is_dir() and not _is_zarr_store(entry):
            yield from _targets(entry)
        elif entry.is_file() or entry.is_dir():
            yield entry


def _is_zarr_store(path: Path) -> bool:
    return path.is_dir() and path.suffix == ".zarr"


def _check_one(path: Path) -> FileCheck:
    if (born := _leftover(path.name)) is not None:
        return _check_leftover(path, *born)
    if _ZARR_STAGING.match(path.name):
        return FileCheck(path, "skipped", "a Zarr writer's staging folder: never data (left "
                         "by a killed writer unless one is running here)")  # fmt: skip
    checker = _CHECKERS.get(path.suffix.lower())
    if checker is None:
        return FileCheck(path, "skipped", "not a kind of file daq-storage writes")
    try:
        return checker(path)
    except StorageIOError as exc:
        status: Status = "busy" if exc.errno == errno.EBUSY else "damaged"
        return FileCheck(path, status, str(exc))
    except Exception as exc:  # any reader's failure is this file's verdict, not the run's
        return FileCheck(path, "damaged", f"{type(exc).__name__}: {exc}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _check_leftover(path: Path, name: str, pid: int) -> FileCheck:
    """A temporary name an output was made under (see the module notes)."""
    if _alive(pid):
        return FileCheck(path, "busy", f"{name} being made by process {pid}, still running")
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # a conversion's staging directory (daq_storage.tools)
        else:
            path.unlink()
    except FileNotFoundError:  # its writer (or another repair) was quicker
        pass
    except OSError as exc:
        return FileCheck(path, "damaged", f"leftover of a killed writer (for {name}), "
                         f"cannot be removed: {exc.strerror}")  # fmt: skip
    return FileCheck(path, "repaired", f"leftover of a killed writer (for {name}): removed; "
                     "no output had been made under that name")  # fmt: skip


def _check_parquet(path: Path) -> FileCheck:
    import pyarrow.parquet as pq

    from daq_storage.writers.parquet import repair_parquet_file

    done = repair_parquet_file(path)
    if done is not None and not path.exists():
        return FileCheck(path, "repaired", done)
    metadata = pq.ParquetFile(path).metadata
    detail = f"{metadata.num_rows:,} rows in {metadata.num_row_groups} row groups"
    return _verdict(path, done, detail)


def _verdict(path: Path, done: str | None, detail: str) -> FileCheck:
    """``ok`` when nothing was repaired, ``repaired`` (saying what was done) otherwise."""
    if done is None:
        return FileCheck(path, "ok", detail)
    return FileCheck(path, "repaired", f"{done}; {detail}")


def _check_hdf5(path: Path) -> FileCheck:
    import h5py

    from daq_storage.writers import repair_hdf5

    done = repair_hdf5(path)
    datasets: list[h5py.Dataset] = []

    def collect(_name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset):
            datasets.append(item)

    with h5py.File(path, "r") as f:
        f.visititems(collect)  # opening every object reads its header: that is the check
        shapes = [d.shape for d in datasets]
    return _verdict(path, done, f"HDF5 with {len(shapes)} datasets")


def _check_arrow(path: Path) -> FileCheck:
    import pyarrow as pa

    from daq_storage.writers import repair_arrow

    done = repair_arrow(path)
    if done is not None and not path.exists():
        return FileCheck(path, "repaired", done)
    with pa.OSFile(str(path)) as source:
        head = source.read(6)
    if head == b"ARROW1":
        with pa.ipc.open_file(str(path)) as reader:
            table = reader.read_all()
            batches = reader.num_record_batches
    else:
        with pa.ipc.open_stream(str(path)) as stream:
            table = stream.read_all()  # what a scientist calls: every batch or an error
        batches = len(table.to_batches())
    return _verdict(path, done, f"Arrow IPC, {table.num_rows:,} rows in {batches} batches")


def _check_csv(path: Path) -> FileCheck:
    import pyarrow.csv as pcsv

    from daq_storage.writers import repair_csv

    done = repair_csv(path)
    if done is not None and not path.exists():
        return FileCheck(path, "repaired", done)
    rows = 0
    with pcsv.open_csv(str(path)) as reader:
        for batch in reader:
            rows += batch.num_rows
    return _verdict(path, done, f"CSV, {rows:,} rows")


def _check_tiff(path: Path) -> FileCheck:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = len(tif.pages)
        if pages == 0:  # tifffile opens a TIFF header followed by garbage as 0 pages
            return FileCheck(path, "damaged", "TIFF header without a readable first page")
        tif.pages[0].asarray()  # its pixels decode, or the file is damaged
        shape = tif.series[0].shape if tif.series else ()
    return FileCheck(path, "ok", f"TIFF, {pages} pages, shape {shape}")


def _check_zarr(path: Path) -> FileCheck:
    import zarr

    group = zarr.open_group(path, mode="r")
    arrays = sum(1 for _ in group.arrays()) + sum(
        1 for _, sub in group.groups() for _ in sub.arrays()
    )
    return FileCheck(path, "ok", f"Zarr store with {arrays} arrays")


def _check_json(path: Path) -> FileCheck:
    json.loads(path.read_text(encoding="utf-8"))
    return FileCheck(path, "ok", "JSON metadata")


_CHECKERS: dict[str, Callable[[Path], FileCheck]] = {
    ".parquet": _check_parquet,
    ".h5": _check_hdf5,
    ".hdf5": _check_hdf5,
    ".arrows": _check_arrow,
    ".arrow": _check_arrow,
    ".csv": _check_csv,
    ".tif": _check_tiff,
    ".tiff": _check_tiff,
    ".zarr": _check_zarr,
    ".json": _check_json,
}
