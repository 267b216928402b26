"""``convert`` into an object store (``s3://bucket/prefix``): an object store has no
rename, so the output cannot be made under a hidden name and published whole.

Instead the target's writer claims the prefix itself (it refuses a prefix holding any
object, and creates its claim conditionally: nothing is overwritten); right after, convert
creates :data:`CONVERSION` (``"state": "converting"``, the source, host, pid), writes
straight into the prefix, and once the writer is closed rewrites the document with
``"state": "complete"``, the streams and their rows. A conversion that fails or is
interrupted (an exception, Ctrl-C) removes every object under the prefix before the
error reaches the caller. A process killed outright (``kill -9``, a power cut) leaves the
objects it put, each complete, and the document still saying ``"converting"``:
``inspect`` reports such an output as an incomplete conversion.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Literal

from daq_storage.errors import ConfigError
from daq_storage.location import S3Location, s3_errors
from daq_storage.writers import Writer, available_writers, get_writer_class, open_writer

__all__ = ["CONVERSION", "check_object_target", "convert_into_objects", "remove_objects"]

#: The document ``convert`` keeps in an output on object storage: its ``state`` is
#: ``"converting"`` until the output is complete, then ``"complete"``.
CONVERSION = "_daq_storage_conversion.json"


def check_object_target(target: S3Location, format: str) -> None:
    """Refuse a format that cannot write to object storage, naming those that can.

    Raises:
        ConfigError: ``format`` writes local files only.
    """
    if not get_writer_class(format).supports_object_storage:
        can = sorted(n for n in available_writers() if get_writer_class(n).supports_object_storage)
        raise ConfigError(
            f"cannot convert into {target.url}: {format} writes local files only; object "
            f"storage (s3://) is written by {', '.join(can)}"
        )


def convert_into_objects(
    format: str,
    target: S3Location,
    options: dict[str, Any],
    fill: Callable[[Writer], dict[str, int]],
    source: dict[str, Any],
) -> None:
    """Open ``format``'s writer on ``target`` (it claims the prefix), create
    :data:`CONVERSION` naming ``source``, ``fill`` the writer (it returns stream -> rows
    copied), close it, then mark the document complete. On any failure or interruption
    after the claim, every object under ``target`` is removed before the error
    propagates.

    Raises:
        StorageIOError: the prefix is taken (``EEXIST``: nothing removed), or the store
            failed (named; what was written removed).
    """
    writer = open_writer(format, target, **options)  # a taken prefix fails here: keep it
    document: dict[str, Any] = {
        "state": "converting",
        "converted_from": source,
        "format": format,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
    }
    try:
        try:
            _put(target, document, mode="create")
            streams = fill(writer)
        except BaseException:
            with contextlib.suppress(Exception):  # its own failure adds nothing: removed next
                writer.close()
            raise
        writer.close()
        document.update(state="complete", streams=streams, finished=time.time())
        _put(target, document, mode="overwrite")
    except BaseException:
        remove_objects(target)
        raise


def _put(
    target: S3Location, document: dict[str, Any], *, mode: Literal["create", "overwrite"]
) -> None:
    import obstore

    with s3_errors(target.child(CONVERSION), "create" if mode == "create" else "write"):
        obstore.put(target.object_store(), CONVERSION, json.dumps(document, indent=2).encode(),
                    mode=mode)  # fmt: skip


def remove_objects(target: S3Location) -> None:
    """Delete every object under ``target`` (best effort: a store that cannot be reached
    keeps them, and the error that brought us here is the one reported)."""
    import obstore

    store = target.object_store()
    with contextlib.suppress(Exception):
        keys = [o["path"] for chunk in obstore.list(store) for o in chunk]
        for start in range(0, len(keys), 1000):  # S3 deletes up to 1000 keys a request
            obstore.delete(store, keys[start : start + 1000])
