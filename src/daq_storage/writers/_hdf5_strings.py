"""Dictionary-coded text columns of the HDF5 writer: a column of few distinct strings
(a channel name, a unit repeated in every row) stored as unsigned integer codes, with
its categories (the distinct texts) in a dataset beside it.

```
<stream>/<column>             uint8 / uint16 / uint32 codes, chunked and compressed as
                              the other columns; attrs encoding = "dictionary",
                              categories = "<column>.categories", arrow_type, schema, ...
<stream>/<column>.categories  1-D vlen UTF-8 text: category i is the text of code i
<stream>/<column>.valid       the null mask, as for any column with nulls
```

Which text columns are coded (``Hdf5Writer(strings=...)``):

- ``auto`` (the default): an Arrow dictionary column of text always; a ``string`` /
  ``large_string`` column when its first batch in the part holds at least one value and
  at most one distinct value per :data:`AUTO_ROWS_PER_VALUE` rows, and at most
  :data:`AUTO_FIRST_LIMIT` of them. A column so chosen whose categories would pass
  :data:`AUTO_LIMIT` continues, from the batch that would pass it, in a new part of the
  stream where it is stored as text (its coded rows stay as they are).
- ``dictionary``: every text column (and dictionary column of text) is coded, whatever
  its number of distinct values.
- ``vlen``: none is; dictionary columns are stored decoded, as text.

The choice is made for a column when its dataset is made (its first batch in the part)
and holds for the part. Only top-level columns are coded: text fields of a struct column
are stored as text.

Codes start as ``uint8`` and widen to ``uint16`` past 256 categories and to ``uint32``
past 65,536, through the writer's widening (the dataset rewritten once in the wider
type); with ``swmr=True`` (where nothing can be rewritten once SWMR starts) they are
``uint32`` from the start. Categories are only appended, never reordered: codes already
in the file never change meaning. A null row holds code 0 (whatever that is: the
``.valid`` mask says it is null), so a column of nulls only may have no category at all.

Crash safety: new categories are stored (grown and written, uncompressed like every text
dataset, so a chunk is rewritten in place) before the codes that use them are handed to
their dataset, and every commit of the file applies both at once: after a kill and
``repair_hdf5``, every code the file holds has its category.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from daq_storage.errors import SchemaMismatch, UnsupportedData
from daq_storage.schema import Column, decode_metadata, flatten_batch

if TYPE_CHECKING:
    from daq_storage.writers._hdf5_tables import ColumnStore

__all__ = ["AUTO_FIRST_LIMIT", "AUTO_LIMIT", "AUTO_ROWS_PER_VALUE", "CATEGORIES",
           "Categories", "CategoriesFull", "Coder", "Encoded", "codable",
           "make_categories"]  # fmt: skip

#: ``auto`` codes a text column whose first batch has at most one distinct value per
#: this many rows ...
AUTO_ROWS_PER_VALUE = 16
#: ... and at most this many distinct values.
AUTO_FIRST_LIMIT = 1024
#: A column ``auto`` chose to code continues as text (in a new part) past this many
#: categories: a column of ever new values would otherwise hold them all in memory.
AUTO_LIMIT = 65536
#: The suffix of a coded column's categories dataset.
CATEGORIES = ".categories"
_CATEGORY_CHUNK = 1024  # rows per chunk of a categories dataset (16 KiB of references)
_STRING = h5py.string_dtype("utf-8")
_CODE_LIMIT = 1 << 32


class CategoriesFull(SchemaMismatch):
    """A column ``auto`` coded would pass :data:`AUTO_LIMIT` categories: the stream
    continues in a new part, where the column is stored as text."""

    def __init__(self, message: str, column: str) -> None:
        super().__init__(message)
        self.column = column


def _is_text(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind) or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
    )  # fmt: skip


def codable(kind: pa.DataType) -> bool:
    """Whether a column of ``kind`` can be coded: text, or a dictionary of text."""
    if pa.types.is_dictionary(kind):
        return _is_text(kind.value_type)
    return _is_text(kind)


def code_dtype(count: int, wide: bool) -> np.dtype[Any]:
    """The narrowest code type for ``count`` categories (``uint32`` if ``wide``)."""
    if wide or count > 1 << 16:
        return np.dtype(np.uint32)
    return np.dtype(np.uint8 if count <= 1 << 8 else np.uint16)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A batch's column as codes, the categories it adds (codes ``len(known)``
    onwards, in order), and the most categories the column may have (``None``: no
    limit)."""

    codes: npt.NDArray[Any]
    valid: npt.NDArray[np.bool_] | None
    new: list[str]
    limit: int | None = None


def encode(stream: str, name: str, array: pa.Array, known: Mapping[str, int],
           wide: bool) -> Encoded:  # fmt: skip
    """Codes of ``array`` (text or a dictionary of text) against the categories
    ``known`` (text -> code), which it does not change.

    Raises:
        UnsupportedData: a new category holds NUL, or there would be 2**32 categories.
    """
    if pa.types.is_dictionary(array.type) and array.dictionary.null_count:
        array = array.dictionary_decode()  # a null in the dictionary: nulls by value
    if not pa.types.is_dictionary(array.type):
        if pa.types.is_string_view(array.type):
            array = array.cast(pa.large_string())
        array = pc.dictionary_encode(array)
    texts: list[str] = array.dictionary.to_pylist()
    mapping = np.empty(len(texts), np.int64)
    new: list[str] = []
    added: dict[str, int] = {}
    for i, text in enumerate(texts):  # one pass over the distinct values, not the rows
        code = known.get(text)
        if code is None:
            code = added.get(text)
            if code is None:
                code = added[text] = len(known) + len(new)
                new.append(text)
        mapping[i] = code
    for text in new:
        if "\x00" in text:
            raise UnsupportedData(f"stream {stream!r} column {name!r}: HDF5 strings cannot "
                                  "contain NUL characters")  # fmt: skip
    count = len(known) + len(new)
    if count > _CODE_LIMIT:
        raise UnsupportedData(f"stream {stream!r} column {name!r}: more than 2**32 "
                              "categories; write it with strings='vlen'")  # fmt: skip
    indices = array.indices
    valid = None
    if indices.null_count:
        valid = np.asarray(indices.is_valid().to_numpy(zero_copy_only=False), bool)
        indices = indices.fill_null(0)
    dtype = code_dtype(count, wide)
    positions = np.asarray(indices.to_numpy(zero_copy_only=False))
    codes = mapping.astype(dtype)[positions] if len(texts) else np.zeros(len(array), dtype)
    return Encoded(codes, valid, new)


class Categories:
    """A coded column's categories: each text's code, and their dataset's store."""

    def __init__(self, store: ColumnStore, *, limit: int | None) -> None:
        self.store = store
        self.limit = limit  # ``None``: no limit (``dictionary``, a dictionary column)
        self.codes: dict[str, int] = {}

    def add(self, new: list[str]) -> None:
        """Append ``new`` categories, in the file at once (before any code using them)."""
        if not new:
            return
        for text in new:
            self.codes[text] = len(self.codes)
        self.store.append(np.array(new, dtype=object))
        self.store.flush()


def make_categories(group: h5py.Group, name: str, column: str) -> h5py.Dataset:
    """The empty categories dataset of the coded column ``column`` (dataset ``name``):
    resizable vlen UTF-8 text, unfiltered (a chunk is rewritten in place)."""
    dataset = group.create_dataset(
        name + CATEGORIES, shape=(0,), maxshape=(None,), dtype=_STRING,
        chunks=(_CATEGORY_CHUNK,),
    )  # fmt: skip
    dataset.attrs["meaning"] = f"category i is the text of code i of column {column}"
    return dataset


@dataclass
class Coder:
    """Which top-level text columns of a table part are coded (chosen at each column's
    first batch in the part: see the module notes), and their categories."""

    mode: str  # "auto", "dictionary" or "vlen"
    wide: bool  # codes uint32 from the start, and no limit (SWMR)
    plain: frozenset[str] = frozenset()  # stored as text here: past AUTO_LIMIT before
    decided: dict[str, bool] = field(default_factory=dict)  # column -> coded
    categories: dict[str, Categories] = field(default_factory=dict)

    def flatten(
        self, stream: str, batch: pa.RecordBatch
    ) -> tuple[list[Column], dict[str, Encoded]]:
        """The batch's storable columns (as :func:`~daq_storage.schema.flatten_batch`),
        coded ones as their codes; and the encoding of each coded column. Nothing is
        changed here (see :meth:`decide`).

        Raises:
            CategoriesFull: a column ``auto`` coded would pass :data:`AUTO_LIMIT`.
            UnsupportedData: as :func:`encode`, and as ``flatten_batch``.
        """
        chosen = [self._coded(f, array) for f, array in zip(batch.schema, batch.columns,
                                                             strict=True)]  # fmt: skip
        if not any(chosen):
            return flatten_batch(batch, stream=stream), {}
        columns: list[Column] = []
        encoded: dict[str, Encoded] = {}
        for coded, source, array in zip(chosen, batch.schema, batch.columns, strict=True):
            if not coded:
                alone = pa.RecordBatch.from_arrays([array], schema=pa.schema([source]))
                columns += flatten_batch(alone, stream=stream)
                continue
            name = source.name
            categories = self.categories.get(name)
            known = categories.codes if categories is not None else {}
            limit = self._limit(source.type) if categories is None else categories.limit
            done = encode(stream, name, array, known, self.wide)
            done = Encoded(done.codes, done.valid, done.new, limit)
            if limit is not None and len(known) + len(done.new) > limit:
                raise CategoriesFull(
                    f"stream {stream!r} column {name!r}: more than {limit} distinct values; "
                    "the stream continues in a new part where the column is stored as text",
                    name,
                )
            attrs: dict[str, Any] = {"arrow_type": str(source.type), "encoding": "dictionary"}
            for key, value in decode_metadata(source.metadata).items():
                attrs.setdefault(key, value)
            columns.append(Column(name, done.codes, done.valid, "fixed", attrs))
            encoded[name] = done
        return columns, encoded

    def _limit(self, kind: pa.DataType) -> int | None:
        if self.mode != "auto" or self.wide or pa.types.is_dictionary(kind):
            return None
        return AUTO_LIMIT

    def _coded(self, source: pa.Field, array: pa.Array) -> bool:
        decided = self.decided.get(source.name)
        if decided and not codable(source.type):  # a type change makes a new part first
            raise SchemaMismatch(f"column {source.name!r} is stored as text codes; got "
                                 f"{source.type}")  # fmt: skip
        if decided is not None:
            return decided
        if self.mode == "vlen" or source.name in self.plain or not codable(source.type):
            return False
        if self.mode == "dictionary" or pa.types.is_dictionary(source.type):
            return True
        values = len(array) - array.null_count
        if values == 0:
            return False
        if pa.types.is_string_view(array.type):  # (no kernel counts these)
            array = array.cast(pa.large_string())
        distinct = pc.count_distinct(array, mode="only_valid").as_py()
        return bool(distinct <= min(AUTO_FIRST_LIMIT, len(array) // AUTO_ROWS_PER_VALUE))
