"""ColumnStats against exact references (fractions, math.fsum) and NumPy."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from normcli.stats import ColumnStats


def exact_mean_var(x: np.ndarray) -> tuple[Fraction, Fraction]:
    fx = [Fraction(float(v)) for v in x]
    mean = sum(fx) / len(fx)
    return mean, sum((v - mean) ** 2 for v in fx) / len(fx)


def fold(x: np.ndarray, size: int) -> ColumnStats:
    acc = ColumnStats()
    for i in range(0, x.size, size):
        acc = acc.merge(ColumnStats.of(x[i:i + size]))
    return acc


def mean_of(s: ColumnStats) -> Fraction:
    return Fraction(s.mean) + Fraction(s.mean_lo)


def test_matches_numpy_on_ordinary_data():
    x = np.random.default_rng(1).normal(5, 3, 100_000)
    s = fold(x, 977)
    assert s.count == x.size and s.nulls == 0
    assert s.mean == pytest.approx(x.mean(), rel=1e-14)
    assert s.var() == pytest.approx(x.var(), rel=1e-12)
    assert s.var(1) == pytest.approx(x.var(ddof=1), rel=1e-12)
    assert (s.min, s.max) == (x.min(), x.max())


@pytest.mark.parametrize("batch", [1, 7, 1000, 200_000])
def test_large_offset_is_exact_to_1e12(batch):
    # A naive sum of squares loses everything here; plain Chan merges drift to ~1e-7.
    x = 1e9 + np.random.default_rng(2).normal(0, 1e-3, 20_000)
    mean, var = exact_mean_var(x)
    s = fold(x, batch)
    assert abs(float((mean_of(s) - mean) / mean)) < 1e-15
    assert abs(s.var() / float(var) - 1) < 1e-12


def test_nulls_are_counted_and_ignored():
    x = np.array([1.0, np.nan, 3.0, np.nan, 5.0])
    s = ColumnStats.of(x)
    assert (s.count, s.nulls) == (3, 2)
    assert s.mean == 3.0 and s.var() == pytest.approx(np.var([1, 3, 5]), rel=1e-15)
    empty = ColumnStats.of(np.array([np.nan, np.nan]))
    assert (empty.count, empty.nulls) == (0, 2)
    assert s.merge(empty).nulls == 4 and empty.merge(s).count == 3


def test_constant_column_has_zero_m2_and_is_flagged():
    s = fold(np.full(10_001, 0.1), 333)
    assert s.m2 == 0.0 and s.is_constant()
    assert not fold(np.array([0.1, 0.1, 0.1 + 1e-15]), 1).is_constant()


# Squares of magnitudes below ~1e-150 underflow to subnormals in any float64 algorithm.
finite = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False).filter(lambda v: v == 0 or abs(v) > 1e-100)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 300), elements=finite), st.integers(1, 50))
def test_merge_of_parts_equals_whole(x, cut):
    whole = ColumnStats.of(x)
    parts = fold(x, cut)
    assert parts.count == whole.count and (parts.min, parts.max) == (whole.min, whole.max)
    mean, var = exact_mean_var(x)
    scale = max(abs(float(mean)), math.sqrt(float(var)), 1e-300)
    assert abs(float(mean_of(parts) - mean)) <= 1e-12 * scale
    # relative to the variance, plus a rounding floor relative to the data's magnitude
    assert abs(parts.var() - float(var)) <= 1e-12 * float(var) + 1e-15 * scale * scale


def test_dict_round_trip_is_exact():
    s = fold(1e9 + np.random.default_rng(3).normal(0, 1, 1000), 10)
    back = ColumnStats.from_dict(s.to_dict())
    assert back == s


def _fields(s: ColumnStats) -> list:
    """Every number of ``s`` as compared bit for bit: NaN equal to NaN, 0.0 apart from -0.0."""
    return [(type(v), v.hex() if isinstance(v, float) else v) for v in
            (s.count, s.nulls, s.mean, s.mean_lo, s.m2, s.min, s.max)]


# one row per column of a wide batch: offsets, spreads, nulls, constants and signed zeros
any_value = st.one_of(finite, st.just(np.nan), st.just(-0.0), st.just(0.0), st.floats(1e9 - 1, 1e9 + 1))


@settings(max_examples=150, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(0, 60)), elements=any_value))
def test_statistics_of_many_columns_at_once_are_those_of_each_column(block):
    """A wide batch's statistics, taken over one 2-D array, are bit for bit each column's own:
    the width of the data never changes a stats file."""
    block = np.ascontiguousarray(block)
    got = ColumnStats.of_rows(block)
    assert [_fields(s) for s in got] == [_fields(ColumnStats.of(row.copy())) for row in block]
    for s, row in zip(got, block):  # and right: against the exact mean and variance of the values
        values = row[~np.isnan(row)]
        assert (s.count, s.nulls) == (values.size, row.size - values.size)
        if values.size:
            mean, var = exact_mean_var(values)
            assert (s.min, s.max) == (values.min(), values.max())
            scale = max(abs(float(mean)), math.sqrt(float(var)), 1e-300)
            assert abs(float(mean_of(s) - mean)) <= 1e-13 * scale
            assert abs(s.var() - float(var)) <= 1e-12 * float(var) + 1e-15 * scale * scale


@settings(max_examples=150, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(0, 40)), elements=any_value), st.data())
def test_merging_many_columns_at_once_is_merging_each(a, data):
    """merge_all is each column's merge, bit for bit, also beside an empty part, an imported
    statistic without a null count, or one whose minimum is unknown."""
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(data.draw(arrays(np.float64, st.tuples(st.just(a.shape[0]), st.integers(0, 40)),
                                              elements=any_value)))
    left, right = ColumnStats.of_rows(a), ColumnStats.of_rows(b)
    left[0] = ColumnStats(count=2, nulls=None, mean=1.0, m2=0.5, min=0.5, max=1.5)
    right[-1] = ColumnStats(count=4, nulls=1, mean=2.0, m2=1.0, min=math.nan, max=3.0)
    got = ColumnStats.merge_all(left, right)
    assert [_fields(s) for s in got] == [_fields(x.merge(y)) for x, y in zip(left, right)]


@pytest.mark.parametrize("stack_bytes", [1, 8 * 50 * 3, 1 << 20])
def test_a_fit_of_many_columns_gives_each_the_statistics_of_the_column_alone(monkeypatch, stack_bytes):
    """However the columns of a batch are cut into 2-D blocks (one column, three, all), each gets
    the statistics that the column-by-column path gives, bit for bit."""
    import pyarrow as pa

    from normcli import model

    rng = np.random.default_rng(4)
    block = rng.normal(1e6, 3.0, (40, 50))
    block[5, ::3] = np.nan
    block[6] = np.nan
    batch = pa.RecordBatch.from_arrays([pa.array(row) for row in block], names=[f"c{i}" for i in range(40)])
    plan = model.plan_fit({name: pa.float64() for name in batch.schema.names})
    monkeypatch.setattr(model, "_STACK_BYTES", stack_bytes)
    stacked = plan.partial(batch).columns
    monkeypatch.setattr(model, "_STACKED", 10**9)  # column by column
    alone = plan.partial(batch).columns
    assert list(stacked) == list(alone) == batch.schema.names
    assert [_fields(s) for s in stacked.values()] == [_fields(s) for s in alone.values()]
