"""What write_batch takes, made one record batch: tables of no rows, of no chunks, and
of no columns (issue 10: an empty table is stored as zero rows or refused, saying why)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from daq_storage.errors import UnsupportedData
from daq_storage.testing import users_table
from daq_storage.writers._inputs import as_record_batch

SCHEMA = pa.schema([("v", pa.float64()), ("name", pa.string())])


@pytest.mark.parametrize("kind", ["empty table", "no chunks", "empty stream"])
def test_a_table_of_no_rows_is_a_batch_of_no_rows(kind: str):
    batch = as_record_batch(users_table(kind), stream="s")
    assert isinstance(batch, pa.RecordBatch)
    assert batch.num_rows == 0
    assert batch.schema.names == ["v", "name"]


@pytest.mark.parametrize(
    "given",
    [
        pa.table({"v": [1.0, 2.0]}).drop_columns(["v"]),  # two rows, no column: rows lost
        pa.table({}),
        pa.Table.from_batches([], schema=pa.schema([])),
        pa.record_batch({"v": [1.0]}).drop_columns(["v"]),
        pd.DataFrame({"v": [1.0, 2.0, 3.0]}).drop(columns=["v"]),
        pl.DataFrame({"v": [1.0]}).drop("v"),
    ],
    ids=["rows", "empty", "no chunks", "batch", "pandas", "polars"],
)
def test_a_table_of_no_columns_is_refused_saying_so(given: Any):
    with pytest.raises(UnsupportedData, match=r"stream 's': the \w+ has no columns"):
        as_record_batch(given, stream="s")
