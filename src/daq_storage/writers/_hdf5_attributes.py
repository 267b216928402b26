"""Metadata as HDF5 attributes: values as they are (numbers, text) or as JSON text, and
values too large for an attribute as datasets the attribute points at."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np
import pyarrow as pa

from daq_storage.errors import InvalidName, UnsupportedData
from daq_storage.writers._inputs import json_value

__all__ = ["ATTRIBUTE_LIMIT", "KEY_LIMIT", "check_metadata", "dataset_name", "field_json",
           "leaf_types", "metadata_refusal", "new_attributes", "schema_json",
           "store_attribute"]  # fmt: skip

#: Larger values (bytes) are stored as datasets: HDF5 keeps an attribute in one object
#: header message of at most 64 KiB.
ATTRIBUTE_LIMIT = 64 * 1024
#: UTF-8 bytes of a metadata key (an attribute's name): HDF5 keeps a name and its value
#: in one object header message of at most 64 KiB.
KEY_LIMIT = 4096


def metadata_refusal(key: str, value: Any) -> str | None:
    """Why HDF5 cannot store metadata ``key`` = ``value`` as an attribute, or ``None``."""
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        return f"metadata key {key!r} is not valid Unicode text"
    if size > KEY_LIMIT:
        return f"metadata key {key[:40]!r}... is {size} bytes long; HDF5 keys hold {KEY_LIMIT}"
    if isinstance(value, str | np.str_) and "\x00" in value:
        return (f"metadata {key!r}: HDF5 text cannot contain NUL characters (store the value "
                "in a list or dict, where it is JSON-escaped)")  # fmt: skip
    return None


def check_metadata(path: Any, key: Any, value: Any, stream: str | None) -> None:
    """Refuse metadata ``key`` = ``value`` HDF5 cannot store (of the file at ``path``, or
    of ``stream``), before anything changes: the writer goes on.

    Raises:
        InvalidName: the key is not a non-empty name without NUL, or is too long.
        UnsupportedData: a value HDF5 text cannot hold.
    """
    if not isinstance(key, str) or not key or "\x00" in key:
        raise InvalidName(f"metadata key {key!r} must be a non-empty name without NUL")
    refused = metadata_refusal(key, value)
    if refused is not None:
        where = "the file" if stream is None else f"stream {stream!r}"
        error = InvalidName if refused.startswith("metadata key ") else UnsupportedData
        raise error(f"{path}, {where}: {refused}")


def new_attributes(group: h5py.Group, metadata: dict[str, Any]) -> list[tuple[str, Any]]:
    """The keys of a stream's first metadata to store as attributes of its ``group``:
    those HDF5 can hold as attributes, but for those set before (ours, or by
    ``set_metadata``), which stay; the ``schema`` attribute holds every key."""
    return [(key, value) for key, value in metadata.items()
            if key and "\x00" not in key and not metadata_refusal(key, value)
            and key not in group.attrs]  # fmt: skip


def dataset_name(column: str) -> str:
    """The name of a column's dataset in its stream's group: the column's name, with
    ``%`` and ``/`` percent-encoded (``a/b`` -> ``a%2Fb``, so a name never becomes a
    path) and a lone ``.`` as ``%2E``; ``urllib.parse.unquote`` gives the name back."""
    name = column.replace("%", "%25").replace("/", "%2F")
    return "%2E" if name == "." else name


def field_json(field: pa.Field, stream: str = "") -> str:
    """A field (its original name, type, nullability and metadata) as JSON text.

    Raises:
        UnsupportedData: a metadata key or value of the field is not UTF-8 text, or
            holds NUL.
    """
    try:
        metadata = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
    except UnicodeDecodeError as exc:
        raise UnsupportedData(
            f"stream {stream!r} column {field.name!r}: its Arrow field metadata holds "
            f"{exc.object!r}, which is not UTF-8 text; HDF5 stores it as text"
        ) from None
    for key, value in metadata.items():
        if "\x00" in key + value:
            raise UnsupportedData(
                f"stream {stream!r} column {field.name!r}: its Arrow field metadata {key!r} "
                "holds NUL, which HDF5 text cannot"
            )
    return json.dumps(
        {"name": field.name, "type": str(field.type), "nullable": field.nullable,
         "metadata": metadata}
    )  # fmt: skip


def store_attribute(file: h5py.File, target: h5py.Group, key: str, value: Any,
                    holder: str) -> bool:  # fmt: skip
    """Set attribute ``key`` of ``target`` to ``value``: numbers, text and numeric arrays
    as they are, anything else as JSON text; a value over :data:`ATTRIBUTE_LIMIT` goes
    to a dataset in the group ``holder`` (made if need be), the attribute saying where.

    Returns whether a value was replaced: the space it held is freed, and the caller
    commits at once so that the space is reused only once nothing on disk points at it.

    Raises:
        UnsupportedData: ``value`` is not JSON-serialisable.
    """
    native = (
        isinstance(value, str | float | bool | np.generic)
        or (isinstance(value, int) and -(2**63) <= value < 2**63)
        or (isinstance(value, np.ndarray) and value.dtype.kind in "biuf")
    )
    stored: Any = value if native else json_value(value, what=f"metadata {key!r}")
    size = stored.nbytes if isinstance(stored, np.ndarray | np.generic) else len(str(stored))
    replaced = key in target.attrs
    if size > ATTRIBUTE_LIMIT:
        group = file.require_group(holder)
        name = dataset_name(key)
        group.create_dataset(name + "%", data=stored)  # never a key's name
        if name in group:
            del group[name]
            replaced = True
        group.move(name + "%", name)
        target.attrs[key] = f"<stored in /{holder}/{name}>"
    else:
        target.attrs[key] = stored
    return replaced


def schema_json(schema: pa.Schema, metadata: dict[str, Any]) -> str:
    """The schema's fields as JSON, with the stream's metadata (as JSON text values)."""
    return json.dumps({
        "fields": [json.loads(field_json(f)) for f in schema],
        "metadata": {k: json.dumps(v, allow_nan=True) for k, v in metadata.items()},
    })  # fmt: skip


def leaf_types(fields: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(name, Arrow type)`` of each stored column of ``fields`` (a schema, or a struct
    type's fields): struct fields as ``parent.child``."""
    for field in fields:
        if pa.types.is_struct(field.type):
            yield from leaf_types(iter(field.type), f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", str(field.type)
