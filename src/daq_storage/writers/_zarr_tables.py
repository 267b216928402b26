"""The Zarr writer's table streams: one array per column along ``row``, rows buffered to
whole chunks, and the parts a stream continues in when its schema changes.

A Zarr array's dtype is fixed, so a column that widens (``int32 -> int64``) or changes
type continues the stream in a new group ``<stream>__part0002`` (then ``0003``, ...)
holding the rows from there on; a new column is back-filled in place (fill values and a
``.valid`` mask saying those rows are null), a missing one likewise. A struct field
``a.b`` and a top-level column ``a.b`` in two batches would share one array: the later
one starts a new part too. Values narrower than their column (``int32`` into ``int64``)
are cast exactly. See :class:`~daq_storage.writers.ZarrWriter` for how the parts are
recorded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import zarr

from daq_storage.errors import SchemaMismatch, UnsupportedData
from daq_storage.schema import SchemaChange, flatten_batch
from daq_storage.writers._base import StreamPart
from daq_storage.writers._zarr_groups import ZarrGroups
from daq_storage.writers._zarr_limits import (
    Origins,
    check_buffer,
    column_types,
    out_of_memory,
    storage_of,
    zarr_errors,
)
from daq_storage.writers._zarr_streams import (
    ColumnNames,
    TableArrays,
    new_array,
    rows_of,
    storage_kind,
)

__all__ = ["ZarrTables"]

TABLE_CHUNK_ROWS = 65536
BLOCK = 4096  # the least a file takes on disk
_TAKES = (
    "integers, floats, booleans, timestamps, durations, text, dictionaries of these, "
    "structs of these, fixed-size lists of numbers or booleans, fixed-shape tensors"
)


def _numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def _unstorable(name: str, kind: pa.DataType) -> tuple[str, pa.DataType] | None:
    """The first column (``parent.child``) of a field of ``kind`` that Zarr has no
    rectangular array for, with its type; ``None`` when every one fits."""
    if isinstance(kind, pa.FixedShapeTensorType):
        value = kind.value_type
        return None if _numeric(value) or pa.types.is_boolean(value) else (name, kind)
    if isinstance(kind, pa.ExtensionType):
        return name, kind
    if pa.types.is_dictionary(kind):
        return _unstorable(name, kind.value_type)
    if pa.types.is_struct(kind):
        if kind.num_fields == 0:
            return name, kind
        for child in kind:
            found = _unstorable(f"{name}.{child.name}", child.type)
            if found is not None:
                return found
        return None
    if pa.types.is_fixed_size_list(kind):
        value = kind.value_type
        return None if _numeric(value) or pa.types.is_boolean(value) else (name, kind)
    if (_numeric(kind) or pa.types.is_boolean(kind) or pa.types.is_timestamp(kind)
            or pa.types.is_duration(kind) or pa.types.is_string(kind)
            or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):  # fmt: skip
        return None
    return name, kind


class ZarrTables(ZarrGroups):
    """Table streams of a Zarr store (see the module docstring)."""

    # ------------------------------------------------------------------ planning
    def _check_table_schema(self, stream: str, schema: pa.Schema) -> None:
        for field in schema:
            found = _unstorable(field.name, field.type)
            if found is None:
                continue
            name, kind = found
            if pa.types.is_list(kind) or pa.types.is_large_list(kind):
                raise UnsupportedData(
                    f"zarr: stream {stream!r} column {name!r} is a variable-length list "
                    f"({kind}); zarr arrays are rectangular (use hdf5, arrow or parquet)"
                )
            raise UnsupportedData(
                f"zarr: stream {stream!r} column {name!r}: Arrow type {kind} is not "
                f"supported by the zarr writer (it takes {_TAKES})"
            )

    def _plan_change(self, stream: str, schema: pa.Schema) -> tuple[SchemaChange, str]:
        """The base's plan, and a new part where a column would take the array of an
        earlier batch's column of another origin (a struct field ``a.b``, a column
        ``a.b``); the column names and new columns' chunks checked against the part the
        batch goes to.

        Raises:
            InvalidName: two columns of the batch would share an array (duplicates, a
                column ``x.valid`` beside ``x``), or a name has no usable characters.
            SchemaMismatch: the stream holds frames.
            ConfigError: a new column's chunk would not fit in memory.
        """
        change, action = super()._plan_change(stream, schema)
        if stream in self._frame_streams:
            raise SchemaMismatch(f"stream {stream!r} holds frames; tables go to another stream")
        columns = column_types(schema)
        names = [name for name, _ in columns]
        table = self._tables.get(stream)
        if table is not None and action != "new_part":
            try:
                table.origins.check(stream, schema, names)
            except SchemaMismatch:
                action = "new_part"
        part = table if table is not None and action != "new_part" else None
        (ColumnNames() if part is None else part.names).claim(stream, names)
        chunk_rows = self.options.chunk_size or TABLE_CHUNK_ROWS
        for name, kind in columns:
            if part is None or name not in part.kinds:
                dtype, inner = storage_of(kind)
                check_buffer(f"stream {stream!r} column {name!r}", "chunk", chunk_rows, inner,
                             dtype, "chunk_size")  # fmt: skip
        return change, action

    # ------------------------------------------------------------------ writing
    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        """Append ``batch`` to ``stream``'s column arrays (buffered to whole chunks;
        readers see the rows at the next :meth:`flush`).

        A column absent from a batch is null there; a new column is null for earlier
        rows; nulls are filled (0, NaN, ``""``) and marked in ``<column>.valid``. A
        widened or changed type continues the stream in a new part (see the class).

        Raises:
            InvalidName: two columns would be stored under one name (duplicates, a
                struct field ``a.b`` beside a column ``a.b``, a column ``x.valid`` beside
                ``x``), or a column name has no usable characters.
            UnsupportedData: a column's type has no rectangular array (variable-length
                lists, decimals, binary, ...).
            SchemaMismatch: the stream holds frames.
            ConfigError: a new column's chunk would not fit in memory.
        """
        batch = self._check_batch(stream, batch)
        _, action = self._plan_change(stream, batch.schema)
        try:
            self._write_batch(stream, batch, new_part=action == "new_part")
        except MemoryError as exc:
            raise out_of_memory(self._target, f"cannot write stream {stream!r}", exc) from exc

    def _write_batch(self, stream: str, batch: pa.RecordBatch, *, new_part: bool) -> None:
        columns = flatten_batch(batch, stream=stream)
        names = [c.name for c in columns]
        known = None if new_part else self._tables.get(stream)
        kinds = {} if known is None else known.kinds
        paths = (Origins() if known is None else known.origins).check(stream, batch.schema, names)
        chunk_rows = self.options.chunk_size or TABLE_CHUNK_ROWS
        for column in columns:  # check everything before accepting anything
            kind = kinds.get(column.name)
            dtype, inner = storage_kind(column)
            if kind is not None and (kind[1] != inner or not np.can_cast(dtype, kind[0], "safe")):
                raise SchemaMismatch(  # the plan made a new part for any other change
                    f"stream {stream!r} column {column.name!r}: stored as {kind[0]} "
                    f"{kind[1]}, got {dtype} {inner}"
                )
        claimed = (ColumnNames() if known is None else known.names).claim(stream, names)
        # Every chunk is a file, and a file takes at least a disk block.
        chunks = len(columns) * (batch.num_rows // chunk_rows + 1)
        self._ensure_room(batch.nbytes + chunks * BLOCK, f"stream {stream!r}", self.path)
        previous = self._tables.get(stream)
        if known is not None:
            table = known
        elif previous is not None:
            table = self._start_part(stream, previous)
        else:
            table = self._table(stream)
        try:
            self._append(stream, table, batch, columns, claimed, paths)
        except BaseException:
            if previous is not None and table is not previous:
                self._drop_part(stream, table, previous)
            raise
        self._observe_metadata(stream, batch)
        if new_part or table is not previous:
            self._table_schemas[stream] = batch.schema.remove_metadata()
        self._stats.batches += 1
        self._stats.rows += batch.num_rows
        self._stats.bytes_written += batch.nbytes

    def _append(
        self,
        stream: str,
        table: TableArrays,
        batch: pa.RecordBatch,
        columns: list[Any],
        claimed: dict[str, str],
        paths: dict[str, tuple[str, ...]],
    ) -> None:
        """Take the batch's rows into ``table``: pending, and committed to whole chunks
        once a chunk's rows are there; a failure leaves ``table`` as it was."""
        chunk_rows = self.options.chunk_size or TABLE_CHUNK_ROWS
        new = [c for c in columns if c.name not in table.kinds]
        for column in new:
            table.kinds[column.name] = (*storage_kind(column), column.attrs)
        table.names.add(claimed)
        table.origins.add([c.name for c in new], paths)
        table.pending.append((batch.num_rows, {c.name: c for c in columns}))
        table.pending_rows += batch.num_rows
        if table.pending_rows < chunk_rows:
            return
        aligned = table.rows + table.pending_rows
        count = aligned - aligned % chunk_rows - table.rows
        try:
            with zarr_errors(self._target, f"cannot write stream {stream!r}"):
                self._commit_rows(table, count)
        except BaseException:  # this batch is refused; rows accepted before stay pending
            table.pending.pop()
            table.pending_rows -= batch.num_rows
            for column in new:
                del table.kinds[column.name]
            table.origins.drop([c.name for c in new])
            table.names.drop(list(claimed))
            raise

    def _table(self, stream: str) -> TableArrays:
        group = self._group(stream)
        key = group.key
        self._attributes[key]["rows"] = 0
        self._data_groups.add(key)
        table = self._tables[stream] = TableArrays(group)
        return table

    def _start_part(self, stream: str, previous: TableArrays) -> TableArrays:
        """Continue ``stream`` in a new group ``<stream>__partNNNN``: the current part's
        rows go to its chunks first (published with it at the next flush), and the parts
        are recorded in the first group's ``parts``."""
        with zarr_errors(self._target, f"cannot write stream {stream!r}"):
            self._commit_rows(previous, previous.pending_rows)
        safe = self._safe_stream(stream)
        first = previous.first + previous.rows
        if stream not in self._parts:
            self._add_part(stream, StreamPart(self.path, safe, 0))
        key = f"{safe}__part{len(self._parts[stream]) + 1:04d}"
        group = self._new_group(stream, key, {"instrument_id": stream, "part_of": stream,
                                              "first": first, "rows": 0})  # fmt: skip
        self._data_groups.add(key)
        table = self._tables[stream] = TableArrays(group, first=first)
        self._earlier.setdefault(stream, []).append(previous)
        self._add_part(stream, StreamPart(self.path, key, first))
        self._record_parts(stream)
        return table

    def _drop_part(self, stream: str, table: TableArrays, previous: TableArrays) -> None:
        """Undo :meth:`_start_part` (its first batch was refused)."""
        self._tables[stream] = previous
        self._earlier[stream].pop()
        if not self._earlier[stream]:
            del self._earlier[stream]
        parts = self._parts[stream]
        parts.pop()
        if len(parts) == 1:
            del self._parts[stream]
        self._record_parts(stream)
        self._drop_group(table.group.key)

    def _record_parts(self, stream: str) -> None:
        """The first group's ``parts`` attribute: every part's key and first row."""
        attributes = self._attributes[self._safe_stream(stream)]
        parts = self._parts.get(stream)
        if parts:
            attributes["parts"] = [{"key": part.key, "first": part.first} for part in parts]
        else:
            attributes.pop("parts", None)

    def _commit_rows(self, table: TableArrays, count: int) -> None:
        """Write the first ``count`` pending rows to the arrays' chunks (making the arrays
        of new columns, even with no rows: a stream of empty batches has its columns);
        keep the rest pending. Readers see them once :meth:`_flush_table` publishes."""
        if count <= 0 and all(name in table.arrays for name in table.kinds):
            return
        start, end = table.rows, table.rows + count
        created = [name for name in table.kinds if name not in table.arrays]
        had_masks = set(table.masks)
        try:
            for name in created:
                self._column_array(table, name)
            merged = table.merged_pending()
            for name, (values, validity) in merged.items():
                table.arrays[name][start:end] = values[:count]
                if validity is not None:
                    mask = table.masks.get(name)
                    if mask is None:  # first null: every earlier row held a value
                        mask = self._mask_array(table, name, True)
                    mask[start:end] = validity[:count]
        except BaseException:
            # Nothing counts as written: arrays made now go (readers saw them all null),
            # and every row stays pending, written again from the same row.
            for name in set(table.masks) - had_masks:
                table.group.remove_array(f"{table.names[name]}.valid")
                del table.masks[name]
            for name in created:
                if table.arrays.pop(name, None) is not None:
                    table.group.remove_array(table.names[name])
            raise
        rest = table.pending_rows - count
        table.pending = (
            [(rest, {n: rows_of(table.kinds[n], v, m, count) for n, (v, m) in merged.items()})]
            if rest
            else []
        )
        table.pending_rows = rest
        table.rows = end

    def _column_array(self, table: TableArrays, column: str) -> None:
        """A new column's array, shown at the length readers see (null there)."""
        dtype, inner, attrs = table.kinds[column]
        name = table.names[column]
        if name != column:
            attrs = {**attrs, "original_name": column}
        # Timestamp columns are coordinates of "row" (CF: named by the other columns).
        times = [
            table.names[other]
            for other, (_, _, other_attrs) in table.kinds.items()
            if str(other_attrs.get("arrow_type", "")).startswith("timestamp")
            and " " not in table.names[other]
        ]
        if times and name not in times:
            attrs = {**attrs, "coordinates": " ".join(times)}
        if table.rows:  # a column that appears mid-run: earlier rows are null (mask first)
            self._mask_array(table, column, False)
        table.arrays[column] = new_array(
            self._store, table.group, name, table.published,
            shape=(0, *inner), chunks=(self.options.chunk_size or TABLE_CHUNK_ROWS, *inner),
            dtype=str if dtype.kind == "O" else dtype,
            dimension_names=["row", *(f"{name}_{i}" for i in range(len(inner)))],
            compressors=self._compressors, attributes=dict(attrs),
            fill_value="" if dtype.kind == "O" else (np.nan if dtype.kind == "f" else 0),
        )  # fmt: skip

    def _mask_array(self, table: TableArrays, column: str, earlier: bool) -> zarr.Array[Any]:
        """``<name>.valid``: True where the column holds a value; ``earlier`` for the
        rows written before the mask existed."""
        name = table.names[column]
        mask = table.masks[column] = new_array(
            self._store, table.group, f"{name}.valid", table.published,
            shape=(0,), chunks=(self.options.chunk_size or TABLE_CHUNK_ROWS,), dtype=bool,
            dimension_names=["row"], compressors=self._compressors, fill_value=earlier,
            attributes={"meaning": f"True where {name} holds a value; False where it is null"},
        )  # fmt: skip
        return mask

    # ------------------------------------------------------------------ flush
    def _table_parts(self, stream: str) -> list[TableArrays]:
        """The stream's parts, in order (the current one last)."""
        return [*self._earlier.get(stream, ()), self._tables[stream]]

    def _parts_to_flush(self, stream: str) -> list[TableArrays]:
        """The first part (it holds the stream's metadata), earlier parts not yet
        published whole, and the current one."""
        parts = self._table_parts(stream)
        return [part for i, part in enumerate(parts)
                if i in (0, len(parts) - 1) or not part.settled]  # fmt: skip

    def _flush_table(self, stream: str, table: TableArrays) -> None:
        self._commit_rows(table, table.pending_rows)
        key = table.group.key
        self._attributes[key]["rows"] = table.rows
        self._publish(stream, key, table.documents())
        table.published = table.rows
        table.settled = table is not self._tables[stream]  # an earlier part: final

    def _visible_rows(self, stream: str) -> int:
        return sum(part.published for part in self._table_parts(stream))
