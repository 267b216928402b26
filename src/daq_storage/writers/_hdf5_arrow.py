"""Arrow IPC inside HDF5 (``Hdf5Writer(table_layout="arrow_ipc")``): each table stream
kept as Arrow has it, as complete Arrow IPC files in uint8 datasets, so that any Arrow
type (nested lists, structs, decimals, dictionaries, large strings, timestamps with
zones, nulls) reads back exactly.

```
file.h5
├── arrow_data/
│   ├── <stream>/          attrs as a table stream's group (schema JSON, metadata, parts)
│   │   ├── 00000000       1-D uint8: a complete Arrow IPC file (magic ARROW1), attr rows
│   │   ├── 00000001       the batches written after those of 00000000, ...
│   │   └── ...
│   └── <stream>__part0002/   the stream's next part, after an incompatible change
└── <stream>/              frame streams keep their layout
```

The stream's rows are the batches of its datasets in name order:
``pa.ipc.open_file(pa.py_buffer(dataset[()])).read_all()`` reads one. A dataset holds the
batches written since the previous one, stored at each :meth:`~Hdf5Writer.flush` (and
at close), or sooner once they reach ``chunk_size`` rows (if given) or 64 MiB; and a
batch whose schema (metadata included) or dictionaries differ from those held starts a
new dataset, so every batch is stored with its own schema. A widening or a new column
continues in the same group (a reader concatenates permissively); an incompatible change
in a new part group, recorded in the first group's ``parts`` as in the column layout.

Batches are serialized as they are written (the writer keeps no reference to them);
each dataset is written once, whole, compressed with the writer's filters, in space
nothing else points at, and appears to readers at the next commit: a flushed batch is
readable after a kill, as in the column layout.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np
import pyarrow as pa

__all__ = ["ARROW_ROOT", "HOLD_BYTES", "ArrowStream", "table_key"]

#: The group holding the table streams of the Arrow IPC layout.
ARROW_ROOT = "arrow_data"
#: Serialized batches held before they are stored as a dataset, at most.
HOLD_BYTES = 64 << 20
_CHUNK = 1 << 20  # bytes per chunk of a dataset


def table_key(safe: str, arrow: bool) -> str:
    """The path of a table stream's group (``safe``: its sanitised name or part key)."""
    return f"{ARROW_ROOT}/{safe}" if arrow else safe


def _nested_dictionary(kind: pa.DataType) -> bool:
    """Whether ``kind`` holds a dictionary below its top level."""
    children = [kind.field(i).type for i in range(kind.num_fields)]
    if pa.types.is_dictionary(kind):
        children = [kind.value_type]
    return any(pa.types.is_dictionary(c) or _nested_dictionary(c) for c in children)


class ArrowStream:
    """A table stream's part in the Arrow IPC layout: its group, the batches held since
    its last dataset (serialized), and its rows."""

    def __init__(self, filters: dict[str, Any], rows_per_file: int | None) -> None:
        self._group: h5py.Group | None = None
        self.filters = filters
        self.rows_per_file = rows_per_file
        self.columns: dict[str, Any] = {}  # no column datasets (see describe())
        self.schema: pa.Schema | None = None  # the stream's, as last stored in attributes
        self.files = 0  # datasets stored
        self.stored_rows = 0  # rows of those datasets
        self._sink: pa.BufferOutputStream | None = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._schema: pa.Schema | None = None  # of the batches held
        self._dictionaries: dict[int, pa.Array] = {}  # their dictionaries (copies), by column
        self._held_rows = 0

    @property
    def group(self) -> h5py.Group:
        assert self._group is not None, "attach() before writing"
        return self._group

    def attach(self, group: h5py.Group) -> None:
        """The part's group, made once its first batch is accepted."""
        self._group = group

    def append(self, batch: pa.RecordBatch) -> None:
        """Serialize ``batch`` after those held (a new IPC file if it cannot join them);
        store them once they reach ``rows_per_file`` rows or :data:`HOLD_BYTES`."""
        if self._writer is not None and not self._joins(batch):
            self.flush()
        if self._writer is None:
            self._sink = pa.BufferOutputStream()
            self._writer = pa.ipc.new_file(self._sink, batch.schema)
            self._schema = batch.schema
            self._dictionaries = {
                i: pa.concat_arrays([batch.column(i).dictionary])
                for i, field in enumerate(batch.schema) if pa.types.is_dictionary(field.type)
            }  # fmt: skip
        assert self._sink is not None
        self._writer.write_batch(batch)
        self._held_rows += batch.num_rows
        full = self.rows_per_file is not None and self._held_rows >= self.rows_per_file
        if full or self._sink.tell() >= HOLD_BYTES:
            self.flush()

    def flush(self) -> None:
        """Store the held batches as the next dataset (an IPC file), if any."""
        if self._writer is None:
            return
        assert self._sink is not None
        self._writer.close()
        data = np.frombuffer(self._sink.getvalue(), np.uint8)
        chunks = (min(len(data), _CHUNK),) if self.filters else None
        dataset = self.group.create_dataset(f"{self.files:08d}", data=data, chunks=chunks,
                                            **self.filters)  # fmt: skip
        dataset.attrs["rows"] = np.int64(self._held_rows)
        self.files += 1
        self.stored_rows += self._held_rows
        self._sink = self._writer = self._schema = None
        self._dictionaries = {}
        self._held_rows = 0

    def level(self) -> None:
        """Nothing to level before a commit: each dataset is whole when made."""
        return

    def _joins(self, batch: pa.RecordBatch) -> bool:
        """Whether ``batch`` can go into the IPC file held: the same schema, metadata
        included, and the same dictionaries (an IPC file has one per field)."""
        assert self._schema is not None
        if not batch.schema.equals(self._schema, check_metadata=True):
            return False
        if any(_nested_dictionary(field.type) for field in batch.schema):
            return False  # not compared: a file of its own
        return all(batch.column(i).dictionary.equals(dictionary)
                   for i, dictionary in self._dictionaries.items())  # fmt: skip
