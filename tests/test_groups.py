"""Per-group (instance) normalization against pandas groupby and NumPy references, through the API and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import normcli
from normcli import sketch as _sketch
from normcli.errors import DataError
from tests.conftest import read_csv_exact, run_cli

TOL = 1e-12


def grouped_frame(n=3000, groups=40, seed=3, nan=0.05):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    df = pd.DataFrame({
        "key": np.char.add("k", g.astype(str)),
        "x": rng.normal(0, 1, n) * (g + 1) + 10 * g,
        "y": 50 + rng.normal(0, 2, n),
    })
    df.loc[rng.random(n) < nan, "x"] = np.nan
    return df


def instance_norm_reference(df, cols, key, eps=0.0):
    """torch.nn.InstanceNorm's formula, per group instead of per sample: (x - mean_g) / sqrt(var_g + eps)."""
    out = df[cols].copy()
    # .indices, not .groups: pandas 2 cannot build .groups of a float key holding NaN
    for idx in df.groupby(key, dropna=False).indices.values():
        block = df.iloc[idx][cols].to_numpy(np.float64)
        mean = np.nanmean(block, axis=0)
        var = np.nanmean((block - mean) ** 2, axis=0)
        out.iloc[idx, [out.columns.get_loc(c) for c in cols]] = (block - mean) / np.sqrt(var + eps)
    return out.to_numpy(np.float64)


def test_instance_norm_equals_numpy_reference_and_pandas_groupby():
    df = grouped_frame()
    y = normcli.fit(df, "zscore", group_by="key").transform(df)[["x", "y"]].to_numpy(np.float64)
    np.testing.assert_allclose(y, instance_norm_reference(df, ["x", "y"], "key"), rtol=1e-9, atol=1e-9)
    g = df.groupby("key")[["x", "y"]]
    ref = ((df[["x", "y"]] - g.transform("mean")) / g.transform(lambda s: s.std(ddof=0))).to_numpy(np.float64)
    np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-9)


def test_large_offset_per_group_matches_exact_reference():
    # NumPy's own mean loses ~1e-8 relative here; an exact (fsum) reference does not.
    import math
    from fractions import Fraction

    rng = np.random.default_rng(12)
    df = pd.DataFrame({"key": rng.choice(["a", "b", "c"], 3000), "x": 1e9 + rng.normal(0, 1e-3, 3000)})
    y = normcli.fit(df, "zscore", group_by="key").transform(df)["x"].to_numpy()
    for key, x in df.groupby("key")["x"]:
        fx = [Fraction(v) for v in x]
        mean = sum(fx) / len(fx)
        std = math.sqrt(float(sum((v - mean) ** 2 for v in fx) / len(fx)))
        ref = np.array([float(v - mean) for v in fx]) / std
        np.testing.assert_allclose(y[x.index], ref, rtol=1e-12, atol=1e-12)


def test_instance_norm_with_eps_like_torch():
    df = grouped_frame(nan=0.0)
    y = normcli.fit(df, "zscore", group_by="key", eps=1e-5).transform(df)[["x"]].to_numpy(np.float64)
    np.testing.assert_allclose(y, instance_norm_reference(df, ["x"], "key", eps=1e-5), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method,ref", [
    ("minmax", lambda s: (s - s.min()) / (s.max() - s.min())),
    ("maxabs", lambda s: s / s.abs().max()),
    ("robust", lambda s: (s - s.median()) / (s.quantile(0.75) - s.quantile(0.25))),
])
def test_every_per_column_method_per_group(method, ref):
    df = grouped_frame()
    sketch = {"sketch_k": 4096} if method == "robust" else {}  # exact sketches at this size
    stats = normcli.fit(df, method, group_by="key", **sketch)
    y = stats.transform(df)[["x"]].to_numpy(np.float64)
    expected = df.groupby("key")[["x"]].transform(ref).to_numpy(np.float64)
    np.testing.assert_allclose(y, expected, rtol=1e-9, atol=1e-9)


def test_two_keys_and_null_key_are_groups():
    df = grouped_frame(n=600, groups=3)
    df["other"] = pd.Series(np.where(np.arange(600) % 4 == 0, None, "a"), dtype=object)
    stats = normcli.fit(pa.Table.from_pandas(df, preserve_index=False), "zscore", group_by=["key", "other"])
    assert stats.group_by == ["key", "other"]
    assert len(stats.groups.keys) == df.groupby(["key", "other"], dropna=False).ngroups
    y = stats.transform(df)[["x"]].to_numpy(np.float64)
    g = df.groupby(["key", "other"], dropna=False)["x"]
    ref = ((df["x"] - g.transform("mean")) / g.transform(lambda s: s.std(ddof=0))).to_numpy(np.float64)
    np.testing.assert_allclose(y[:, 0], ref, rtol=1e-9, atol=1e-9)


def test_inverse_with_groups():
    df = grouped_frame()
    for method in ("zscore", "minmax", "maxabs", "robust"):
        stats = normcli.fit(df, method, group_by="key")
        back = stats.inverse(stats.transform(df))[["x", "y"]].to_numpy(np.float64)
        np.testing.assert_allclose(back, df[["x", "y"]].to_numpy(np.float64), rtol=1e-12, atol=1e-9)


def test_integer_parquet_keys_match_their_text_form(tmp_path):
    df = grouped_frame(n=500, groups=5)
    df["key"] = df["key"].str[1:].astype(np.int64)
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    stats = normcli.fit(str(path), "zscore", group_by="key")
    assert sorted(k[0] for k in stats.groups.keys) == sorted(str(v) for v in df["key"].unique())
    text = df.assign(key=df["key"].astype(str))  # the same keys as strings select the same groups
    np.testing.assert_allclose(stats.transform(text)["x"], stats.transform(df)["x"], rtol=0, atol=0)


def test_float_keys_nan_is_the_null_key_and_negative_zero_is_zero(tmp_path):
    """A Parquet float key's NaN was a group 'nan' (a null in a DataFrame's key, so the frame of
    the same file met an unseen group), and -0.0 a group apart from 0.0: as in pandas' groupby
    (NaN and None one missing key, -0.0 == 0.0), whichever way the data comes."""
    import warnings

    rng = np.random.default_rng(11)
    f = rng.choice(np.array([1.0, np.nan, -0.0, 0.0, 2.5]), 400)
    df = pd.DataFrame({"f": f, "x": rng.normal(5, 2, 400)})
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"f": pa.array(f), "x": pa.array(df["x"].to_numpy())}), path)  # NaN kept, not null
    table = pq.read_table(path)
    assert pa.compute.sum(pa.compute.is_nan(table["f"])).as_py() > 0 and table["f"].null_count == 0
    want = instance_norm_reference(df, ["x"], "f")[:, 0]
    for fitted_on in (str(path), df):
        stats = normcli.fit(fitted_on, "zscore", group_by="f")
        assert sorted(stats.groups.keys, key=str) == [("0",), ("1",), ("2.5",), (None,)]
        for data in (df, table):
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no row of an unseen group
                got = stats.transform(data)
            got = got["x"].to_numpy() if isinstance(got, pd.DataFrame) else got["x"].to_numpy()
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_chunk_independence_with_groups(tmp_path):
    df = grouped_frame(n=4000, groups=300)
    path = tmp_path / "train.csv"
    df.to_csv(path, index=False)
    whole = normcli.fit(df, ["zscore", "robust:y"], group_by="key")
    from normcli import io
    from normcli.api import fit_paths

    original = io.open_source
    try:
        io.open_source = lambda p, **kw: original(p, **{**kw, "block_size": 2048})
        tiny = fit_paths([str(path)], ["zscore", "robust:y"], group_by=["key"])
    finally:
        io.open_source = original
    order = tiny.groups.lookup(whole.groups.keys)
    assert (order >= 0).all() and len(tiny.groups.keys) == len(whole.groups.keys)
    for col in ("x", "y"):
        a, b = whole.groups.columns[col], tiny.groups.columns[col].take(order)
        np.testing.assert_array_equal(a.count, b.count)
        np.testing.assert_array_equal(a.min, b.min)
        np.testing.assert_array_equal(a.max, b.max)
        np.testing.assert_allclose(a.mean + a.mean_lo, b.mean + b.mean_lo, rtol=1e-12)
        np.testing.assert_allclose(a.m2, b.m2, rtol=1e-10)


# --- merge property: fit(A) merged with fit(B) equals fit(A + B) ----------------------------------

PER_COLUMN = ["zscore", "minmax", "maxabs", "robust"]


def _assert_column_stats_equal(a, b):
    assert (a.count, a.nulls) == (b.count, b.nulls)
    if a.count:
        assert (a.min, a.max) == (b.min, b.max)
        assert a.mean + a.mean_lo == pytest.approx(b.mean + b.mean_lo, rel=1e-12, abs=1e-300)
        assert a.m2 == pytest.approx(b.m2, rel=1e-12, abs=1e-12 * max(1.0, abs(b.mean)) ** 2)
    if a.sketch is not None and a.count:  # these sketches hold every value: quantiles are exact
        for q in (0.25, 0.5, 0.75):
            assert _sketch.quantile(a.sketch, q) == pytest.approx(_sketch.quantile(b.sketch, q), rel=1e-12, abs=1e-12)


values = st.lists(st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(float("nan"))), min_size=0, max_size=40)


def _too_close(frame: pd.DataFrame, grouped: bool) -> bool:
    """Whether the column x of ``frame``, or of one of its groups, holds distinct values less than
    1e-140 apart: a spread whose variance underflows float64's squares (below about 1e-292)."""
    sets = [frame["x"]] + ([g["x"] for _, g in frame.groupby("k")] if grouped else [])
    return any(0 < x.max() - x.min() < 1e-140 for x in (s.dropna() for s in sets) if x.size)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=values, b=values, keys=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=80, max_size=80),
       method=st.sampled_from(PER_COLUMN), grouped=st.booleans())
@example(a=[0.0], b=[1e-150], keys=["a"] * 80, method="zscore", grouped=False)
@example(a=[0.0], b=[1e-150], keys=["a"] * 80, method="zscore", grouped=True)
# a part too close together on its own (0 and a subnormal), where the union is not (or only in a group)
@example(a=[1.0], b=[0.0, 2.225073858507203e-309], keys=["a"] * 40 + ["b"] * 40, method="zscore", grouped=False)
@example(a=[1.0], b=[0.0, 2.225073858507203e-309], keys=["a"] * 40 + ["b"] * 40, method="zscore", grouped=True)
def test_merge_equals_fit_of_union(a, b, keys, method, grouped):
    if not a or not b:
        return
    fa = pd.DataFrame({"k": keys[:len(a)], "x": np.array(a, dtype=np.float64)})
    fb = pd.DataFrame({"k": keys[40:40 + len(b)], "x": np.array(b, dtype=np.float64)})
    both = pd.concat([fa, fb], ignore_index=True)
    opts = {"group_by": "k"} if grouped else {}
    parts = []
    for part in (fa, fb):
        try:
            parts.append(normcli.fit(part, method, **opts))
        except DataError as e:
            # A part whose values lie too close together for float64 on their own (0 and a
            # subnormal) is refused, whatever the union: the property is of parts that fit.
            assert "too close together" in str(e) and _too_close(part, grouped)
            return
    try:
        whole = normcli.fit(both, method, **opts)
    except DataError as e:  # values too close together for float64 (e.g. 0 and 1e-150): merge refuses alike
        with pytest.raises(DataError) as refused:
            normcli.merge(*parts)
        assert str(refused.value) == str(e)
        return
    merged = normcli.merge(*parts)
    _assert_column_stats_equal(merged.columns["x"].stats, whole.columns["x"].stats)
    if grouped:
        order = merged.groups.lookup(whole.groups.keys)
        assert sorted(merged.groups.keys) == sorted(whole.groups.keys)
        for i, j in enumerate(order.tolist()):
            _assert_column_stats_equal(merged.groups.columns["x"].group(j), whole.groups.columns["x"].group(i))
            # the NumPy reference of the group's moments
            x = both.loc[both["k"] == whole.groups.keys[i][0], "x"].to_numpy()
            x = x[~np.isnan(x)]
            g = whole.groups.columns["x"].group(i)
            assert g.count == x.size
            if x.size:
                assert (g.min, g.max) == (x.min(), x.max())
                assert g.m2 == pytest.approx(((x - x.mean()) ** 2).sum(), rel=1e-9, abs=1e-6)


def test_merge_of_large_robust_groups_within_sketch_bound():
    df = grouped_frame(n=40_000, groups=2, nan=0.0)
    half = len(df) // 2
    merged = normcli.merge(normcli.fit(df[:half], "robust", group_by="key", sketch_k=64),
                           normcli.fit(df[half:], "robust", group_by="key", sketch_k=64))
    gs = merged.groups.columns["x"]
    for i, key in enumerate(merged.groups.keys):
        x = df.loc[df["key"] == key[0], "x"].to_numpy()
        sk = gs.sketch[i]
        err = _sketch.rank_error(sk)
        assert err > 0
        for q in (0.25, 0.5, 0.75):
            rank = (x < _sketch.quantile(sk, q)).mean()
            assert abs(rank - q) <= err


# --- the stats file --------------------------------------------------------------------------


def test_stats_file_round_trip_and_columnar_groups(tmp_path):
    df = grouped_frame(n=800, groups=30)
    stats = normcli.fit(df, ["zscore", "robust:y"], group_by="key")
    path = tmp_path / "s.json"
    stats.save(str(path))
    doc = json.loads(path.read_text())
    assert doc["group_by"] == ["key"] and len(doc["group_keys"]) == 30
    block = doc["columns"]["x"]["groups"]
    assert set(block) >= {"count", "nulls", "mean", "mean_lo", "m2", "min", "max"}
    assert all(len(v) == 30 for v in block.values())
    assert len(path.read_text().splitlines()) < 150  # one line per array, not per group and field
    again = normcli.load(str(path))
    pd.testing.assert_frame_equal(again.transform(df), stats.transform(df))


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["columns"]["x"]["groups"]["mean"].pop(), "columns.x.groups.mean: has 29 entries for 30 groups"),
    (lambda d: d["columns"]["x"]["groups"]["count"].__setitem__(0, -1), "columns.x.groups.count: expected integers >= 0"),
    (lambda d: d["columns"]["x"]["groups"]["min"].__setitem__(0, 1e300), "columns.x.groups.min: greater than max"),
    (lambda d: d["columns"]["x"]["groups"]["count"].__setitem__(3, 4.0), "columns.x.groups.count: expected integers"),
    (lambda d: d["columns"]["x"]["groups"]["nulls"].__setitem__(3, 2**63), "columns.x.groups.nulls: expected integers"),
    (lambda d: d["columns"]["x"]["groups"]["m2"].__setitem__(3, 10**400), "columns.x.groups.m2[3]: not finite"),
    (lambda d: d["columns"]["x"]["groups"]["count"].__setitem__(3, 0),
     "columns.x.groups.mean: must be null where count is 0 (group_keys[3])"),
    (lambda d: d["columns"]["x"]["groups"]["count"].__setitem__(3, 1),
     "columns.x.groups.m2: must be 0 where count is 1 (group_keys[3])"),
    (lambda d: d["columns"]["x"]["groups"]["mean"].__setitem__(5, 1e6),
     "columns.x.groups.mean: outside [min, max] (group_keys[5])"),
    (lambda d: d["columns"]["x"]["groups"]["mean_lo"].__setitem__(7, 0.5),
     "columns.x.groups.mean_lo: larger than the last place of mean (group_keys[7])"),
    (lambda d: d["group_keys"].__setitem__(0, ["a", "b"]), "group_keys[0]: expected 1 strings or nulls"),
    (lambda d: d["columns"]["x"].pop("groups"), "columns.x.groups: missing"),
    # possible for a group alone, not beside the others: every row is in one group
    (lambda d: d["columns"]["x"]["groups"]["count"].__setitem__(0, d["columns"]["x"]["groups"]["count"][0] * 10),
     "columns.x.groups.count: the groups' sum is"),
    (lambda d: d["columns"]["x"]["groups"]["m2"].__setitem__(4, 0.0),
     "columns.x.groups.m2: smaller than min and max alone give (group_keys[4])"),
])
def test_damaged_groups_are_named(tmp_path, edit, message):
    df = grouped_frame(n=800, groups=30, nan=0.0)
    doc = json.loads(normcli.fit(df, "zscore", group_by="key").to_json())
    edit(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    r = run_cli("inspect", path)
    assert r.code == 4 and message in r.err and "Traceback" not in r.err


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["columns"]["x"]["groups"]["sketch"]["data"].__setitem__(2, None),
     "columns.x.groups.sketch.data: a group with values needs its sketch (group_keys[2])"),
    (lambda d: d["columns"]["x"]["groups"]["sketch"]["rank_error"].__setitem__(0, -5),
     "columns.x.groups.sketch.rank_error: expected numbers >= 0"),
    (lambda d: d["columns"]["x"]["groups"]["sketch"]["n"].__setitem__(0, 1.5),
     "columns.x.groups.sketch.n: expected integers >= 0"),
    (lambda d: d["columns"]["x"]["groups"].__setitem__("bogus", [1, 2]),
     "columns.x.groups: Additional properties are not allowed ('bogus' was unexpected)"),
    (lambda d: d["columns"]["x"]["groups"]["sketch"].__setitem__("bogus", 1),
     "columns.x.groups.sketch: Additional properties are not allowed ('bogus' was unexpected)"),
    (lambda d: d["columns"]["x"]["stats"]["sketch"].__setitem__("bogus", 1),
     "columns.x.stats.sketch: Additional properties are not allowed ('bogus' was unexpected)"),
    # a sketch of other values than the column's (say, swapped with another column's)
    (lambda d: d["columns"]["x"]["stats"]["sketch"].__setitem__("n", d["columns"]["x"]["stats"]["count"] + 1),
     "columns.x.stats.sketch.n: 801 values sketched, but count is 800"),
    (lambda d: d["columns"]["x"]["groups"]["sketch"]["n"].__setitem__(2, d["columns"]["x"]["groups"]["count"][2] - 1),
     "values sketched, but count is"),
])
def test_damaged_group_sketches_are_named(tmp_path, edit, message):
    # A robust group without its sketch used to be transformed to NaN, with exit 0.
    df = grouped_frame(n=800, groups=30, nan=0.0)
    doc = json.loads(normcli.fit(df, "robust", group_by="key").to_json())
    edit(doc)
    path, data = tmp_path / "bad.json", tmp_path / "d.csv"
    path.write_text(json.dumps(doc))
    df.to_csv(data, index=False)
    r = run_cli("transform", data, "--stats", path, "-o", tmp_path / "o.csv")
    assert r.code == 4 and message in r.err and "Traceback" not in r.err, r.err
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("where", ["stats", "groups"])
def test_a_sketch_of_another_column_with_as_many_values_is_refused(tmp_path, where):
    """A sketch keeps its values' exact min and max: swapped with another column's sketch of as
    many values (the count check passes), it would give that column's quantiles, silently."""
    df = grouped_frame(n=800, groups=30, nan=0.0)  # x and y have values in every row
    doc = json.loads(normcli.fit(df, "robust", group_by="key").to_json())
    if where == "stats":
        doc["columns"]["x"]["stats"]["sketch"] = doc["columns"]["y"]["stats"]["sketch"]
        x, y, group = df["x"], df["y"], ""
    else:
        i = 3
        doc["columns"]["x"]["groups"]["sketch"]["data"][i] = doc["columns"]["y"]["groups"]["sketch"]["data"][i]
        rows = df["key"] == doc["group_keys"][i][0]
        x, y, group = df.loc[rows, "x"], df.loc[rows, "y"], f" (group_keys[{i}])"
    path, data = tmp_path / "bad.json", tmp_path / "d.csv"
    path.write_text(json.dumps(doc))
    df.to_csv(data, index=False)
    r = run_cli("transform", data, "--stats", path, "-o", tmp_path / "o.csv")
    assert r.code == 4 and r.err == (f"Error: stats file '{path}': columns.x.{where}.sketch: its values run from "
                                     f"{float(y.min())!r} to {float(y.max())!r}, but min and max are {float(x.min())!r} and "
                                     f"{float(x.max())!r}{group}\n")
    assert not (tmp_path / "o.csv").exists()


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def fitted(tmp_path):
    df = grouped_frame(n=1000, groups=4, nan=0.0)
    df.loc[0:9, "key"] = "007"
    train = tmp_path / "train.csv"
    df.to_csv(train, index=False)
    r = run_cli("fit", train, "--group-by", "key", "-o", tmp_path / "s.json")
    assert r.code == 0, r.err
    test = df.head(40).copy()
    test.loc[0:4, "key"] = "new"
    test_path = tmp_path / "test.csv"
    test.to_csv(test_path, index=False)
    return df, test, test_path, tmp_path / "s.json"


def _cli_transform(test_path, stats_path, *args):
    r = run_cli("transform", test_path, "--stats", stats_path, *args)
    return r, (read_csv_exact(pd.io.common.BytesIO(r.out), dtype={"key": str}) if r.code == 0 else None)


def test_cli_group_fit_matches_groupby_and_keeps_key_text(fitted):
    df, test, test_path, stats_path = fitted
    r, out = _cli_transform(test_path, stats_path)
    seen = ~test["key"].eq("new").to_numpy()
    g = df.groupby("key")["x"]
    mean, std = g.mean(), g.std(ddof=0)
    ref = ((test["x"] - test["key"].map(mean)) / test["key"].map(std)).to_numpy()
    np.testing.assert_allclose(out["x"].to_numpy()[seen], ref[seen], rtol=1e-9, atol=1e-9)
    assert out["key"].tolist() == test["key"].tolist()  # "007" stays "007"


def test_cli_unseen_global_warns_with_count(fitted):
    df, test, test_path, stats_path = fitted
    r, out = _cli_transform(test_path, stats_path)
    assert r.code == 0 and "5 rows" in r.err and "new" in r.err and "they were normalized with" in r.err
    ref = (test["x"][:5] - df["x"].mean()) / df["x"].std(ddof=0)
    np.testing.assert_allclose(out["x"][:5], ref, rtol=1e-9)
    # the inverse's warning says what the inverse did with those rows
    r = run_cli("inverse", test_path, "--stats", stats_path)
    assert r.code == 0 and "5 rows" in r.err and "they were brought back with the overall statistics" in r.err, r.err


def test_cli_unseen_passthrough_and_null(fitted):
    df, test, test_path, stats_path = fitted
    r, out = _cli_transform(test_path, stats_path, "--unseen-group", "passthrough")
    assert r.code == 0 and r.err == ""
    np.testing.assert_array_equal(out["x"][:5], test["x"][:5])
    r, out = _cli_transform(test_path, stats_path, "--unseen-group", "null")
    assert r.code == 0 and out["x"][:5].isna().all() and out["x"][5:].notna().all()
    assert r.out.decode().splitlines()[1] == "new,,"  # a real null: an empty CSV field


def test_stats_fitted_on_no_rows_leave_every_row_unseen(tmp_path):
    """No group was fitted, so every row follows --unseen-group: passed through, null, or the
    overall statistics (which, fitted on no values, are the constant policy's scale 1 around 0)."""
    (tmp_path / "empty.csv").write_text("g,x\n")
    (tmp_path / "d.csv").write_text("g,x\na,1.5\nb,-2\n")
    assert run_cli("fit", tmp_path / "empty.csv", "-c", "x", "-g", "g", "-o", tmp_path / "s.json").code == 0
    for policy, want in (("passthrough", ["1.5", "-2.0"]), ("global", ["1.5", "-2.0"]), ("null", ["", ""])):
        r = run_cli("transform", tmp_path / "d.csv", "--stats", tmp_path / "s.json", "--unseen-group", policy)
        assert r.code == 0, r.err
        assert [line.split(",")[1] for line in r.text.splitlines()[1:]] == want
        assert ("2 rows belong to groups not seen in fit" in r.err) == (policy == "global")
    frame = pd.DataFrame({"g": ["a", "b"], "x": [1.5, -2.0]})
    stats = normcli.fit(frame.iloc[:0], columns=["x"], group_by="g")
    out = stats.transform(frame, unseen_group="passthrough")
    assert out.equals(frame)


@pytest.mark.parametrize("grouping", [[], ["-g", "g"]])
def test_robust_fit_of_no_rows_is_a_column_without_values(tmp_path, grouping):
    """Its sketch is empty, not missing: a column with no values, as for the other methods."""
    (tmp_path / "empty.csv").write_text("g,x\n")
    r = run_cli("fit", tmp_path / "empty.csv", "-m", "robust", "-c", "x", *grouping, "-o", tmp_path / "s.json")
    assert r.code == 0 and "column 'x' has no values" in r.err, r.err
    doc = json.loads((tmp_path / "s.json").read_text())["columns"]["x"]
    assert doc["stats"]["count"] == 0 and doc["stats"]["sketch"]["n"] == 0
    (tmp_path / "d.csv").write_text("g,x\na,1.5\n")
    policy = ["--unseen-group", "passthrough"] if grouping else []  # (refused for statistics without groups)
    r = run_cli("transform", tmp_path / "d.csv", "--stats", tmp_path / "s.json", *policy)
    assert r.code == 0 and r.text.splitlines()[1] == "a,1.5", (r.err, r.text)


def test_cli_unseen_error_names_the_key(fitted):
    _, _, test_path, stats_path = fitted
    r = run_cli("transform", test_path, "--stats", stats_path, "--unseen-group", "error")
    assert r.code == 3 and "key='new'" in r.err and "Traceback" not in r.err


def test_cli_inverse_with_groups(fitted, tmp_path):
    df, test, test_path, stats_path = fitted
    norm = tmp_path / "norm.csv"
    assert run_cli("transform", test_path, "--stats", stats_path, "-o", norm).code == 0
    r = run_cli("inverse", norm, "--stats", stats_path)
    back = pd.read_csv(pd.io.common.BytesIO(r.out))
    np.testing.assert_allclose(back[["x", "y"]], test[["x", "y"]], rtol=1e-12)


def test_cli_inspect_shows_groups_and_policy(fitted):
    *_, stats_path = fitted
    r = run_cli("inspect", stats_path, env={"COLUMNS": "200"})
    assert r.code == 0 and "5 groups" in r.text and "key" in r.text and "scale1" in r.text


def test_cli_inspect_counts_the_groups_of_a_column_that_has_values(tmp_path):
    """The title counts every group; a column's flag said "2 groups" of 3 when one group had no
    value of it. It now says how many of all the groups have values (pandas' count per group)."""
    df = pd.DataFrame({"g": ["a", "a", "b", "b", "c"], "x": [1.0, 2.0, 3.0, 7.0, np.nan], "y": [2.0, 5.0, 1.0, 2.0, 4.0]})
    df.to_csv(tmp_path / "d.csv", index=False)
    assert run_cli("fit", tmp_path / "d.csv", "--group-by", "g", "-o", tmp_path / "s.json").code == 0
    r = run_cli("inspect", tmp_path / "s.json", env={"COLUMNS": "250"})
    counts = df.groupby("g")[["x", "y"]].count()
    rows = {line.split("│")[1].strip(): line for line in r.text.splitlines() if "│" in line}
    assert f"{len(counts)} groups by g" in r.text
    assert f"{(counts['x'] > 0).sum()} of {len(counts)} groups with values" in rows["x"]
    assert f"{len(counts)} groups," in rows["y"] and "with values" not in rows["y"]


@pytest.mark.parametrize("args,message", [
    (["--unseen-group", "maybe"], "--unseen-group must be one of"),
    (["--dtype", "float16"], "--dtype must be one of"),
    (["--decimals", "-1"], "--decimals must be a whole number between 0 and 15"),
])
def test_cli_bad_transform_options(fitted, args, message):
    _, _, test_path, stats_path = fitted
    r = run_cli("transform", test_path, "--stats", stats_path, *args)
    assert r.code == 2 and message in r.err


def test_group_key_cannot_be_normalized(tmp_path):
    df = grouped_frame(n=50)
    df["key"] = np.arange(50)
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    r = run_cli("fit", path, "--group-by", "key", "--columns", "key,x")
    assert r.code == 2 and "--group-by key" in r.err
    r = run_cli("fit", path, "--group-by", "nokey")
    assert r.code == 3 and "'nokey'" in r.err


def test_passthrough_rows_keep_their_nulls_when_missing_values_are_filled(tmp_path):
    # --fill-missing fills the nulls of the rows it normalizes; an unseen group's row is passed
    # through as it is, its null included (it was written NaN).
    fit_csv, new_csv = tmp_path / "f.csv", tmp_path / "n.csv"
    fit_csv.write_text("g,x,y\na,1,10\na,3,30\nb,5,50\nb,9,70\n")
    new_csv.write_text("g,x,y\na,2,\nzz,5,\nzz,6,60\n")
    assert run_cli("fit", fit_csv, "-g", "g", "--fill-missing", "-o", tmp_path / "s.json").code == 0
    r = run_cli("transform", new_csv, "--stats", tmp_path / "s.json", "--unseen-group", "passthrough",
                "-o", tmp_path / "o.csv")
    assert r.code == 0, r.err
    out = pd.read_csv(tmp_path / "o.csv", keep_default_na=False, dtype=str)
    a = np.array([1.0, 3.0])  # group a's x; y's null there is filled with the mean, which normalizes to 0
    assert [float(v) for v in out["x"]] == [(2 - a.mean()) / a.std(), 5.0, 6.0]
    assert out["y"].tolist()[1] == "" and [float(out["y"][0]), float(out["y"][2])] == [0.0, 60.0]


def test_a_frame_grouped_by_keys_of_mixed_types_is_transformed_as_fitted():
    # fit reads an object key column of numbers and text as text: transform must read it alike
    df = pd.DataFrame({"k": pd.Series([1, "a", 1, "a", 1], dtype=object), "x": [1.0, 2.0, 3.0, 5.0, 8.0]})
    stats = normcli.fit(df, "zscore", group_by="k")
    keys = df["k"].astype(str)
    expected = (df["x"] - df["x"].groupby(keys).transform("mean")) / df["x"].groupby(keys).transform("std", ddof=0)
    out = stats.transform(df)
    np.testing.assert_allclose(out["x"], expected, rtol=1e-15)
    assert out["k"].tolist() == df["k"].tolist()
    np.testing.assert_allclose(stats.inverse(out)["x"], df["x"], rtol=1e-15)


def test_a_group_without_values_is_named_as_such(tmp_path):
    # A group whose column is all null is fitted as constant: the warning counts it, and
    # --constant error says it has no values (it said "is constant").
    src = tmp_path / "d.csv"
    src.write_text("g,x\na,1\na,2\nb,\nb,\nc,5\nc,5\n")
    r = run_cli("fit", src, "-g", "g", "-o", tmp_path / "s.json")
    assert r.code == 0 and r.err.splitlines() == [
        "warning: column 'x' has no values in 1 of 3 groups: fitted as constant (policy scale1)",
        "warning: column 'x' is constant in 1 of 3 groups (policy scale1)"], r.err
    r = run_cli("fit", src, "-g", "g", "--constant", "error", "-o", tmp_path / "e.json")
    assert r.code == 3 and r.err == "Error: column 'x' has no values in group g='b' (--constant error)\n"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.one_of(st.floats(-1e6, 1e6), st.sampled_from([0.0, 1.5, -2.0]),
                                   st.floats(-1e308, 1e308)), min_size=0, max_size=40),
                min_size=1, max_size=30),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5))
def test_group_quantiles_are_numpys_to_the_bit(groups, qs):
    # All exact sketches are done in one sort; the reference is np.quantile of each group's values
    sketches = []
    for values in groups:
        sk = None
        if values:
            sk = _sketch.new(200)
            sk.update(np.array(values, dtype=np.float64))
        sketches.append(sk)
    big = _sketch.new(8)  # beyond its exact range: the sketch's own quantiles
    big.update(np.arange(1000.0))
    sketches.append(big)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = np.array([np.quantile(v, qs) if v else np.full(len(qs), np.nan) for v in groups]
                            + [[big.get_quantile(q, True) for q in qs]]).T
    got = _sketch.quantiles_of_many(sketches, qs)
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]),
                          st.one_of(st.floats(-1e6, 1e6), st.just(float("nan")))), min_size=1, max_size=120),
       st.lists(st.integers(1, 119), max_size=6), st.sampled_from([8, 12, 200]))
def test_group_sketches_of_batches_merged_hold_each_groups_values(rows, cuts, k):
    # A batch's statistics keep the values, not a sketch per group (memory: ~2 KB a sketch in
    # every batch in flight); merged in order, each group's quantiles are NumPy's of its values
    # while the group has no more than k (the sketch then holds them all), and a group of more
    # values has a sketch of them all.
    from normcli.groups import GroupStats, Grouped, factorize

    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    acc = Grouped([], {"x": GroupStats.empty(0, sketched=True)})
    for lo, hi in zip(bounds, bounds[1:]):
        keys, xs = zip(*rows[lo:hi])
        f = factorize([pa.array(keys)])
        part = GroupStats.of(np.array(xs, dtype=np.float64), f, k)
        assert all(sk is None for sk in part.sketch)
        acc = acc.merge(Grouped(f.keys, {"x": part}))
    qs = (0.25, 0.5, 0.75)
    got = acc.columns["x"].quantiles(qs)
    written = acc.columns["x"].to_dict()["sketch"]
    for i, (key,) in enumerate(acc.keys):
        values = [x for g, x in rows if g == key and not np.isnan(x)]
        assert acc.columns["x"].count[i] == written["n"][i] == len(values)
        if len(values) <= k:
            expected = np.quantile(values, qs) if values else np.full(3, np.nan)
            np.testing.assert_array_equal(got[:, i], expected)
            assert written["rank_error"][i] == 0.0
        else:
            assert min(values) <= got[:, i].min() and got[:, i].max() <= max(values)


def test_merging_grouped_sketches_leaves_what_it_merges_as_it_was():
    # A fold updates its own accumulator's sketches in place; everything else a merge is given
    # must stay as it was: stats merged by the user, and a Dask task's inputs, which Dask may
    # hand to a retry of the task. Groups of more values than the sketch size (8) have sketches.
    from normcli.engine_dask import _merge_task
    from normcli.model import Partial, merge_partials

    rng = np.random.default_rng(5)
    fa = pd.DataFrame({"k": ["a"] * 30 + ["b"] * 20 + ["d"] * 5, "x": rng.normal(size=55)})
    fb = pd.DataFrame({"k": ["b"] * 25 + ["c"] * 10 + ["d"] * 2, "x": rng.normal(size=37)})
    a, b = (normcli.fit(f, "robust", group_by="k", sketch_k=8) for f in (fa, fb))

    def state(s):  # the sketches as written (quantiles are kept once computed: not a witness)
        return s.groups.columns["x"].to_dict()["sketch"]

    before = [state(a), state(b)]
    normcli.merge(a, b)
    normcli.merge(b, a)
    assert [state(a), state(b)] == before
    parts = [(Partial({}, a.groups), [(0, 55)]), (Partial({}, b.groups), [(1, 37)]), (Partial({}, b.groups), [(2, 37)])]
    first, _ = _merge_task(merge_partials, *parts)
    again, _ = _merge_task(merge_partials, *parts)  # a retry of the task
    assert [state(a), state(b)] == before
    whole = pd.concat([fa, fb, fb])
    sizes = whole.groupby("k").size()
    for result in (first, again):
        assert result.groups.keys == [("a",), ("b",), ("d",), ("c",)]
        assert state(result)["n"] == [int(sizes[k]) for k in "abdc"]
    d = result.groups.keys.index(("d",))  # 9 values, beyond the sketch's 8: a sketch, not exact
    values = whole.x[whole.k == "d"]
    assert values.min() <= result.groups.columns["x"].quantiles((0.5,))[0, d] <= values.max()


def test_a_grouped_robust_transform_reads_each_sketch_once(tmp_path, monkeypatch):
    # The per-group map costs quantiles of every group's sketch: the worker threads must share
    # one computation of it (each used to make its own), and each sketch is read once for the
    # centre and both ends of the range
    from normcli import sketch

    df = grouped_frame(n=4000, groups=40, nan=0.0)  # 100 values a group: sketches exact
    normcli.fit(df, "robust", group_by="key").save(str(tmp_path / "s.json"))
    stats = normcli.load(str(tmp_path / "s.json"))  # as a transform finds them: nothing computed yet
    df.to_csv(tmp_path / "d.csv", index=False)
    calls = []
    real = sketch.items
    monkeypatch.setattr(sketch, "items", lambda sk: calls.append(sk) or real(sk))
    monkeypatch.setenv("NORMCLI_BLOCK_SIZE", "4096")  # many pieces, in 3 threads
    monkeypatch.setenv("NORMCLI_THREADS", "3")
    stats.transform(str(tmp_path / "d.csv"), output=str(tmp_path / "o.csv"))
    # per column, every group's sketch once (the overall one, for --unseen-group global, holds
    # 4,000 values: beyond its exact range, it answers through its own quantiles)
    assert len(calls) == 2 * 40 and len(set(map(id, calls))) == len(calls)
    keys = df["key"]
    for name in ("x", "y"):
        g = df[name].groupby(keys)
        expected = (df[name] - g.transform("median")) / (g.transform(lambda s: s.quantile(0.75) - s.quantile(0.25)))
        np.testing.assert_allclose(pd.read_csv(tmp_path / "o.csv")[name], expected, rtol=1e-13, atol=1e-13)


def test_cli_refuses_unseen_group_for_statistics_without_groups(tmp_path):
    """--unseen-group with ungrouped statistics did nothing, silently, where an option that no
    fitted method reads is refused: exit 2, nothing written (a bad value is named first)."""
    src = tmp_path / "d.csv"
    src.write_text("g,x\na,1\nb,2\nb,4\n")
    assert run_cli("fit", src, "-o", tmp_path / "s.json").code == 0
    assert run_cli("fit", src, "--group-by", "g", "-o", tmp_path / "g.json").code == 0
    message = f"Error: --unseen-group is for statistics fitted with --group-by, and '{tmp_path / 's.json'}' has no groups\n"
    for args in (["transform", src, "--unseen-group", "null", "-o", tmp_path / "o.csv"],
                 ["inverse", src, "--unseen-group", "global", "-o", tmp_path / "o.csv"],
                 ["export", "--to", "sql", "--unseen-group", "passthrough", "-o", tmp_path / "o.csv"]):
        stats = ["--stats", tmp_path / "s.json"] if args[0] != "export" else [tmp_path / "s.json"]
        r = run_cli(*args, *stats)
        assert (r.code, r.err) == (2, message) and not (tmp_path / "o.csv").exists()
        grouped = ["--stats", tmp_path / "g.json"] if args[0] != "export" else [tmp_path / "g.json"]
        assert run_cli(*args, *grouped).code == 0
        (tmp_path / "o.csv").unlink()
    r = run_cli("transform", src, "--stats", tmp_path / "s.json", "--unseen-group", "maybe")
    assert r.code == 2 and "--unseen-group must be one of" in r.err


def test_the_unseen_group_warning_names_the_first_keys_in_sort_order(tmp_path):
    """It named the first five keys worker threads happened to report, so the log of one run
    differed from the next: now the five first in sort order (nulls last), whatever the order."""
    rng = np.random.default_rng(5)
    stores = [f"S{i}" for i in rng.permutation(40)]
    df = pd.DataFrame({"store": np.repeat(stores, 50), "x": rng.normal(size=2000)})
    (tmp_path / "fit.csv").write_text("store,x\nA,1\nA,3\n")
    assert run_cli("fit", tmp_path / "fit.csv", "--group-by", "store", "-o", tmp_path / "s.json").code == 0
    df.to_csv(tmp_path / "new.csv", index=False)
    r = run_cli("transform", tmp_path / "new.csv", "--stats", tmp_path / "s.json", "-o", tmp_path / "o.csv",
                env={"NORMCLI_BLOCK_SIZE": "4096"})
    assert r.code == 0, r.err
    named = "; ".join(f"store='{k}'" for k in sorted(set(stores))[:5])
    assert f"2,000 rows belong to groups not seen in fit (e.g. {named})" in r.err, r.err
