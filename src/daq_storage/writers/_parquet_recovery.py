"""The Parquet writer's recovery files, and the repair of files a killed writer left.

After every row group the writer saves the file's state (its data length and footer,
with a checksum) in ``.<name>.parquet.recovery`` beside it. The Parquet file is written
first and the record after it, so a record is never ahead of its file; it can be one
row group behind (killed between the two writes), torn (killed while it was being
rewritten, when the file is complete), or empty (killed while the stream's files were
being created, before any row). :func:`repair_parquet` trusts a file that is complete
(a valid footer whose column chunks all lie before it) over any record, and uses the
record only to restore an incomplete one: it never cuts rows off a complete file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from daq_storage.errors import StorageIOError
from daq_storage.writers._base import pwrite_all, storage_errors

__all__ = [
    "MAGIC",
    "RECOVERY_SUFFIX",
    "read_footer",
    "recovery_path",
    "repair_parquet",
    "repair_parquet_file",
    "write_recovery",
]

MAGIC = b"PAR1"
RECOVERY_SUFFIX = ".recovery"
_RECOVERY_MAGIC = b"DAQPQRC1"
# After the magic: data length, footer length; then crc32 of those and the footer.
_RECOVERY_FIELDS = struct.Struct("<QI")


def read_footer(block: bytes | pa.Buffer) -> Any:
    """The ``FileMetaData`` of a footer block (or of a whole in-memory Parquet file)."""
    source = block if isinstance(block, pa.Buffer) else pa.py_buffer(MAGIC + block)
    return pq.read_metadata(pa.BufferReader(source))


def recovery_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{RECOVERY_SUFFIX}")


def write_recovery(fd: int, data_end: int, block: bytes) -> None:
    """Record a file's last complete state, its data length and footer block, in ``fd``.

    Written in place: the Parquet file is complete whenever this runs, so a record torn
    by a crash (its checksum fails) needs no repair. Not by temp file and rename:
    replacing a file by rename makes ext4 write it to disk at once (~1 ms per row group).
    """
    fields = _RECOVERY_FIELDS.pack(data_end, len(block))
    checksum = zlib.crc32(block, zlib.crc32(fields)).to_bytes(4, "little")
    pwrite_all(fd, [_RECOVERY_MAGIC, fields, checksum, block], 0)


def _parse_recovery(record: bytes) -> tuple[int, bytes] | None:
    """``(data length, footer block)`` from a recovery record; ``None`` if it is torn or
    not consistent with itself."""
    start = len(_RECOVERY_MAGIC) + _RECOVERY_FIELDS.size + 4
    if len(record) < start or not record.startswith(_RECOVERY_MAGIC):
        return None
    fields = record[len(_RECOVERY_MAGIC) : start - 4]
    data_end, length = _RECOVERY_FIELDS.unpack(fields)
    block = record[start : start + length]
    if (
        len(block) != length
        or zlib.crc32(block, zlib.crc32(fields))
        != int.from_bytes(record[start - 4 : start], "little")
        or not block.endswith(MAGIC)
        or _data_length(block) > data_end
    ):
        return None
    return data_end, block


def _data_length(block: bytes) -> int:
    """Bytes from the start of the file to the end of the last column chunk in ``block``
    (a footer); more than any file holds when ``block`` is not a footer."""
    try:
        metadata = read_footer(block)
    except (pa.ArrowException, OSError):
        return 1 << 63
    end = len(MAGIC)
    for group in range(metadata.num_row_groups):
        for column in range(metadata.num_columns):
            chunk = metadata.row_group(group).column(column)
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else None
            start = chunk.data_page_offset if start is None else start
            end = max(end, start + chunk.total_compressed_size)
    return end


def _is_complete(fd: int) -> bool:
    """Whether the file starts with the magic and ends with a footer whose column chunks
    all lie before it."""
    size = os.fstat(fd).st_size
    if size < 12 or os.pread(fd, 4, 0) != MAGIC:
        return False
    tail = os.pread(fd, 8, size - 8)
    length = int.from_bytes(tail[:4], "little")
    if tail[4:] != MAGIC or length > size - 12:
        return False
    block = os.pread(fd, length + 8, size - 8 - length)
    return _data_length(block) <= size - 8 - length


def repair_parquet(path: str | os.PathLike[str]) -> list[Path]:
    """Restore Parquet files whose writer was killed, from their recovery files.

    ``path`` is one ``.parquet`` file or a directory (every file in it that has a
    recovery file). A file that is complete is kept as it is (a writer killed between
    row groups, or after a row group but before its record). An incomplete one is cut
    back to the last complete row group its recovery file records and gets that state's
    footer again: everything flushed before the crash is kept, rows that were being
    written are dropped. A file whose writer was killed while creating it holds no row
    and is removed.

    Returns:
        The files that had a recovery file (now removed).

    Raises:
        StorageIOError: a writer still has the file open, or the file is incomplete and
            its recovery file cannot restore it (damaged, or the file is shorter than
            the state it records).
    """
    path = Path(path)
    if path.is_dir():
        targets = sorted(
            p.with_name(p.name[1 : -len(RECOVERY_SUFFIX)])
            for p in path.glob(f".*.parquet{RECOVERY_SUFFIX}")
        )
    elif path.exists() or recovery_path(path).exists():
        targets = [path] if recovery_path(path).exists() else []
    else:
        raise StorageIOError(errno.ENOENT, f"cannot repair {path}: it does not exist", str(path))
    for target in targets:
        repair_parquet_file(target)
    return targets


def repair_parquet_file(target: Path) -> str | None:
    """Repair one Parquet file as :func:`repair_parquet` does; what was done, or ``None``
    when it has no recovery file (nothing to repair)."""
    recovery = recovery_path(target)
    if not recovery.exists():
        return None
    with storage_errors(recovery, "cannot read Parquet recovery file"):
        record_bytes = recovery.read_bytes()
    if not target.exists():
        if record_bytes:
            raise StorageIOError(
                errno.ENOENT,
                f"cannot repair {target.name}: it is missing, its recovery file is not",
                str(target),
            )
        recovery.unlink()
        return "its writer was killed while creating it, before any row: nothing to keep"
    with storage_errors(target, "cannot repair Parquet file"):
        done = _repair_open(target, _parse_recovery(record_bytes), empty=not record_bytes)
    if not target.exists():  # removed: it never held a row
        recovery.unlink()
        return done
    try:
        pq.read_metadata(target)
    except (pa.ArrowException, OSError) as exc:
        raise StorageIOError(
            errno.EINVAL, f"{target.name} is still unreadable after repair: {exc}", str(target)
        ) from exc
    recovery.unlink()
    return done


def _repair_open(target: Path, record: tuple[int, bytes] | None, *, empty: bool) -> str:
    fd = os.open(target, os.O_RDWR | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageIOError(
                errno.EBUSY, f"cannot repair {target.name}: a writer still has it open",
                str(target),
            ) from None  # fmt: skip
        if _is_complete(fd):  # never cut a complete file, whatever the record says
            return "complete (its writer did not close it): kept as it is"
        if empty:
            # Killed in the stream's creation, before its first record: no row was written.
            target.unlink()
            return "removed: its writer was killed while creating it, before any row"
        if record is None:
            raise StorageIOError(
                errno.EINVAL,
                f"cannot repair {target.name}: it is incomplete and its recovery file "
                f"{recovery_path(target).name} is damaged",
                str(target),
            )
        data_end, block = record
        size = os.fstat(fd).st_size
        if size < data_end:
            raise StorageIOError(
                errno.EINVAL,
                f"cannot repair {target.name}: it has {size} bytes, fewer than the "
                f"{data_end} its recovery file says were complete",
                str(target),
            )
        os.ftruncate(fd, data_end)
        pwrite_all(fd, [block], data_end)
        return f"cut back to its last complete row group ({size - data_end} bytes dropped)"
    finally:
        os.close(fd)
