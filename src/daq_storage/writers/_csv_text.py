"""CSV text details: nulls in a one-column stream, cutting off a torn last line, and the
``metadata.json`` beside the files."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from daq_storage.errors import StorageIOError
from daq_storage.writers._base import storage_errors
from daq_storage.writers._guards import directory_held

__all__ = ["MetadataDocument", "null_lines_quoted", "repair_csv", "single_column_nulls"]

_QUOTE, _NEWLINE = ord('"'), ord("\n")
_CHUNK = 4 << 20


class MetadataDocument:
    """A JSON document the writer replaces whole (a reader never sees half of it); one
    that exists before the writer's first is never overwritten.

    Raises:
        StorageIOError: ``EEXIST`` when ``path`` exists already (an earlier run's).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if os.path.lexists(path):
            raise StorageIOError(
                errno.EEXIST,
                f"{path.parent} already holds a {path.name} (of an earlier run; never "
                "overwritten): write to a new directory",
                str(path),
            )
        self._made = False  # the document is ours: replaced from now on
        self._text: str | None = None  # what the file holds

    def write(self, document: dict[str, Any]) -> bool:
        """Write ``document`` unless the file holds it already; whether it was written.

        Raises:
            OSError: the disk refused it (the file holds what it held).
            StorageIOError: ``EEXIST``, another process made the file meanwhile.
        """
        text = json.dumps(document, indent=2, allow_nan=True)
        if text == self._text:
            return False
        temporary = self.path.with_name(f".{self.path.name}.partial")
        try:
            temporary.write_text(text, encoding="utf-8")
            if self._made:
                temporary.replace(self.path)
            else:
                os.link(temporary, self.path)  # the first time: never over an existing file
                temporary.unlink()
                self._made = True
        except FileExistsError:
            temporary.unlink()
            raise StorageIOError(
                errno.EEXIST,
                f"cannot write {self.path.name}: it already exists in {self.path.parent} "
                "(never overwritten)",
                str(self.path),
            ) from None
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._text = text
        return True


def single_column_nulls(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, bool]:
    """A one-column batch whose nulls become ``""`` in CSV, and whether its text still
    needs :func:`null_lines_quoted`.

    pyarrow writes a null as an empty field, which in a one-column file is an empty line
    that pyarrow and pandas skip. Text columns (always quoted) take the empty text,
    written ``""``; other columns have no empty text of their own, so their empty lines
    are nulls and are quoted afterwards.
    """
    column = batch.column(0)
    kind = column.type
    if pa.types.is_fixed_size_binary(kind):
        column, kind = column.cast(pa.large_binary()), pa.large_binary()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        filled = column.fill_null("")
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        filled = column.fill_null(b"")
    else:
        return batch, True
    return pa.RecordBatch.from_arrays([filled], names=batch.schema.names), False


def null_lines_quoted(text: bytes) -> bytes:
    """Lines of a one-column, non-text CSV (one line per row, never quoted) with every
    empty line, a null, written as ``""``."""
    lines = text.split(b"\n")
    for index in range(len(lines) - 1):  # the last is what follows the final newline
        if not lines[index]:
            lines[index] = b'""'
    return b"\n".join(lines)


def repair_csv(path: str | os.PathLike[str]) -> str | None:
    """Cut a CSV file that a killed writer left with part of a line at its end back to
    its last complete line; what was done, or ``None`` when it ended with one.

    Line ends inside quoted text (a value holding a newline) are not taken for the end of
    a row. An empty file (killed right after it was created) is removed.

    Raises:
        StorageIOError: ``EBUSY`` when a writer has the file's directory open; ``EINVAL``
            when not even the header line is complete.
    """
    path = Path(path)
    with (
        directory_held(path.parent, f"repair {path.name}: a writer has it open"),
        storage_errors(path, "cannot repair CSV file"),
    ):
        size = path.stat().st_size
        if size == 0:
            path.unlink()
            return "removed: its writer was killed right after creating it (it held nothing)"
        complete = _last_line_end(path)
        if complete == size:
            return None
        if complete == 0:
            raise StorageIOError(
                errno.EINVAL, f"cannot repair {path.name}: not even its header line is complete",
                str(path),
            )  # fmt: skip
        os.truncate(path, complete)
        return f"cut back to its last complete line: {size - complete} bytes dropped"


def _last_line_end(path: Path) -> int:
    """Where the last newline outside quotes ends (0: none)."""
    last = 0
    inside = 0  # quotes seen so far, modulo 2: 1 inside quoted text
    offset = 0
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            data = np.frombuffer(chunk, np.uint8)
            quotes = np.cumsum(data == _QUOTE, dtype=np.int64)
            outside = (quotes + inside) % 2 == 0
            ends = np.flatnonzero((data == _NEWLINE) & outside)
            if len(ends):
                last = offset + int(ends[-1]) + 1
            inside = int((inside + quotes[-1]) % 2)
            offset += len(chunk)
    return last
