"""The one schema-evolution rule (schema.classify_change) every writer follows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daq_storage.errors import SchemaMismatch
from daq_storage.schema import (
    SchemaChange,
    classify_change,
    conform_batch,
    evolution_for,
    evolved_schema,
)

INTS = [pa.int8(), pa.int16(), pa.int32(), pa.int64()]
UINTS = [pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]
FLOATS = [pa.float16(), pa.float32(), pa.float64()]
NUMERIC = INTS + UINTS + FLOATS


def schema(**columns: pa.DataType) -> pa.Schema:
    return pa.schema(list(columns.items()))


@pytest.mark.parametrize(
    ("old", "new", "kind"),
    [
        (pa.int32(), pa.int64(), "widening"),
        (pa.int16(), pa.float32(), "widening"),
        (pa.uint32(), pa.int64(), "widening"),
        (pa.float32(), pa.float64(), "widening"),
        (pa.int64(), pa.int32(), "same"),  # narrower values into a wider column
        (pa.string(), pa.large_string(), "same"),
        (pa.large_binary(), pa.binary(), "same"),
        (pa.int64(), pa.float64(), "incompatible"),  # not every int64 is an exact float64
        (pa.int32(), pa.float32(), "incompatible"),
        (pa.uint64(), pa.int64(), "incompatible"),
        (pa.float64(), pa.string(), "incompatible"),
        (pa.timestamp("ns"), pa.timestamp("us"), "incompatible"),
        (pa.timestamp("ns"), pa.timestamp("ns", "UTC"), "incompatible"),
    ],
)
def test_type_changes_are_classified_once_for_every_writer(old, new, kind):
    change = classify_change(schema(x=old), schema(x=new))
    assert change.kind == kind
    assert bool(change) == (kind != "same")
    if kind != "same":
        assert "'x'" in str(change)


def test_added_and_missing_columns_are_new_columns_and_order_is_no_change():
    stream = schema(a=pa.int32(), b=pa.float64())
    assert classify_change(stream, schema(b=pa.float64(), a=pa.int32())).kind == "same"
    added = classify_change(stream, schema(a=pa.int32(), b=pa.float64(), c=pa.string()))
    assert (added.kind, added.added, added.missing) == ("new_columns", ("c",), ())
    missing = classify_change(stream, schema(a=pa.int32()))
    assert (missing.kind, missing.added, missing.missing) == ("new_columns", (), ("b",))


def test_struct_children_are_compared_leaf_by_leaf():
    stream = schema(s=pa.struct([("u", pa.float32())]))
    change = classify_change(stream, schema(s=pa.struct([("u", pa.float64()), ("v", pa.int8())])))
    assert change.widened == ("s.u",)
    assert change.added == ("s.v",)
    assert change.kinds == ("widening", "new_columns")
    assert change.kind == "new_columns"


def test_the_most_disruptive_action_wins():
    both = SchemaChange(widened=("a",), added=("b",))
    policy = {"widening": "in_place", "new_columns": "new_part", "incompatible": "refuse"}
    assert evolution_for(both, policy) == "new_part"
    assert evolution_for(SchemaChange(widened=("a",)), policy) == "in_place"
    assert evolution_for(SchemaChange(incompatible=("a",)), policy) == "refuse"
    assert evolution_for(SchemaChange(), policy) == "same"


def test_an_evolved_schema_keeps_order_widens_and_appends():
    stream = schema(a=pa.int32(), b=pa.float32())
    batch = schema(c=pa.string(), b=pa.float64(), a=pa.int16())
    evolved = evolved_schema(stream, batch)
    assert evolved.names == ["a", "b", "c"]
    assert evolved.types == [pa.int32(), pa.float64(), pa.string()]
    assert all(f.nullable for f in evolved)


def test_conform_fills_missing_columns_with_nulls_and_casts_exactly():
    target = schema(a=pa.int64(), b=pa.float64())
    batch = pa.record_batch({"a": pa.array([1, 2], pa.int32())})
    out = conform_batch(batch, target)
    assert out.schema.equals(target)
    assert out.column(0).to_pylist() == [1, 2]
    assert out.column(1).null_count == 2
    with pytest.raises(SchemaMismatch, match="'a'"):
        conform_batch(pa.record_batch({"a": pa.array([2**40])}), schema(a=pa.int8()))


@given(st.sampled_from(NUMERIC), st.sampled_from(NUMERIC))
def test_a_widening_holds_every_old_value_exactly(old, new):
    """The property the rule promises: after "widening" or "same" every value of the
    narrower type survives a cast into the column's type."""
    kind = classify_change(schema(x=old), schema(x=new)).kind
    if kind == "incompatible":
        return
    narrow, wide = (old, new) if kind == "widening" else (new, old)
    dtype = np.dtype(narrow.to_pandas_dtype())
    if dtype.kind == "f":
        info = np.finfo(dtype)
        values = np.array([info.min, info.max, info.tiny, -0.0, 1 / 3], dtype)
    else:
        iinfo = np.iinfo(dtype)
        values = np.array([iinfo.min, iinfo.max, 0, 1], dtype)
    cast = pa.array(values, narrow).cast(wide, safe=True)
    assert np.array_equal(
        cast.to_numpy(zero_copy_only=False).astype(np.float64), values.astype(np.float64)
    )
    if dtype.kind != "f":
        assert cast.to_pylist() == values.tolist()


@given(
    st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4),
    st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4),
)
def test_every_column_lands_in_exactly_one_bucket(old_names, new_names):
    old = schema(**{n: pa.int32() for n in old_names})
    new = schema(**{n: pa.int32() for n in new_names})
    change = classify_change(old, new)
    assert set(change.added) == set(new_names) - set(old_names)
    assert set(change.missing) == set(old_names) - set(new_names)
    assert change.widened == change.incompatible == ()
