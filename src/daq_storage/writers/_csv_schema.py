"""CSV columns: which Arrow types have CSV text, and a batch as flat text-ready columns
(struct fields as ``parent.child`` columns, dictionaries decoded)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from daq_storage.errors import UnsupportedData

__all__ = ["csv_columns", "csv_leaves", "csv_type", "flat_batch", "is_binary"]


def is_binary(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
    )


def csv_type(stream: str, column: str, kind: pa.DataType) -> pa.DataType:
    """The type ``column`` is written as, or :class:`UnsupportedData`."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string_view(kind):
        return pa.large_string()  # pyarrow.csv does not write views; the text is the same
    if pa.types.is_binary_view(kind):
        return pa.large_binary()
    # Extension, list, map, union and interval types have no CSV text (pyarrow refuses
    # them); struct fields are columns of their own (see csv_leaves).
    if (
        pa.types.is_null(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or (pa.types.is_temporal(kind) and not pa.types.is_interval(kind))
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or is_binary(kind)
    ):
        return kind
    raise UnsupportedData(
        f"CSV cannot hold column {column!r} of type {kind} (stream {stream!r}); "
        "use parquet, arrow or hdf5"
    )


def _leaves(fields: list[pa.Field], prefix: str) -> Iterator[pa.Field]:
    for field in fields:
        name = f"{prefix}{field.name}"
        if pa.types.is_struct(field.type):
            yield from _leaves(list(field.type), f"{name}.")
        else:
            yield field.with_name(name)


def csv_leaves(stream: str, schema: pa.Schema) -> list[pa.Field]:
    """The CSV columns of ``schema`` as given: struct fields as ``parent.child`` columns
    (field metadata kept), every type checked to have CSV text.

    Raises:
        UnsupportedData: a type CSV cannot hold, or two columns of one name (a struct
            field ``a.b`` beside a column ``a.b``: one CSV header cannot hold both).
    """
    leaves = list(_leaves(list(schema), ""))
    seen: set[str] = set()
    for leaf in leaves:
        csv_type(stream, leaf.name, leaf.type)
        if leaf.name in seen:
            raise UnsupportedData(
                f"stream {stream!r}: two columns would be named {leaf.name!r} in the CSV "
                "header (a struct field and a column of that name); rename one"
            )
        seen.add(leaf.name)
    return leaves


def csv_columns(stream: str, schema: pa.Schema) -> pa.Schema:
    """The header of a file for batches of ``schema``: flat names, CSV types."""
    return pa.schema(
        [pa.field(f.name, csv_type(stream, f.name, f.type)) for f in csv_leaves(stream, schema)]
    )


def _flat_arrays(name: str, array: pa.Array) -> Iterator[tuple[str, pa.Array]]:
    if pa.types.is_struct(array.type):
        # StructArray.flatten applies the struct's own nulls to its children.
        for field, child in zip(array.type, array.flatten(), strict=True):
            yield from _flat_arrays(f"{name}.{field.name}", child)
    elif pa.types.is_dictionary(array.type):
        yield name, array.dictionary_decode()
    elif pa.types.is_string_view(array.type) or pa.types.is_binary_view(array.type):
        large = pa.large_string() if pa.types.is_string_view(array.type) else pa.large_binary()
        yield name, array.cast(large)
    else:
        yield name, array


def flat_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` as CSV columns (see :func:`csv_columns`), values unchanged."""
    if not any(
        pa.types.is_struct(t) or pa.types.is_dictionary(t) or pa.types.is_string_view(t)
        or pa.types.is_binary_view(t)
        for t in batch.schema.types
    ):  # fmt: skip
        return batch
    names: list[str] = []
    arrays: list[pa.Array] = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        for name, array in _flat_arrays(field.name, column):
            names.append(name)
            arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=names, metadata=batch.schema.metadata)
