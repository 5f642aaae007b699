"""Every export target run by the target system itself, compared with normcli's transform.

Tolerances: 1e-12 (absolute and relative) in float64, 1e-6 for ONNX in float32.
"""
from __future__ import annotations

import json
import sqlite3
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import normcli
from normcli import statsfile
from normcli.errors import UsageError

TOL = 1e-12


def data(n: int = 400, seed: int = 3) -> pd.DataFrame:
    """Numbers with nulls, a constant column, awkward column names and a text column."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "id": [f"r{i:04d}" for i in range(n)],
        "a": rng.normal(50, 20, n),
        "b b": rng.normal(-3, 0.5, n),
        'quo"te': rng.uniform(1, 9, n),
        "ünï": rng.exponential(2, n),
        "const": np.full(n, 3.25),
        "big": 1e9 + rng.normal(0, 1e-3, n),
    })
    for c in ("a", "b b", 'quo"te', "ünï"):
        df.loc[rng.random(n) < 0.1, c] = np.nan
    return df


CONFIGS = {
    "zscore": (["zscore"], {}),
    "zscore_ddof1_eps_gamma": (["zscore"], {"ddof": 1, "eps": 0.25, "gamma": 2.0, "beta": -1.0}),
    "zscore_clip_fill": (["zscore"], {"clip_sigma": 1.5, "fill_missing": True}),
    "minmax_clip": (["minmax"], {"range": [-1.0, 3.0], "clip": True}),
    "maxabs_zero": (["maxabs"], {"constant": "zero"}),
    "zscore_zero_fill": (["zscore"], {"constant": "zero", "fill_missing": True}),
    "robust_passthrough": (["robust"], {"constant": "passthrough"}),
    "robust_passthrough_zero": (["robust", "zscore:const"], {"constant": "zero"}),
    "mixed_rows": (["zscore", "minmax:a", "l1:b b,quo\"te", "max:ünï,const"], {}),
    "layer": (["zscore", "layer:a,b b,quo\"te,ünï"], {"gamma": 1.5, "beta": 0.5}),
    "layer_std": (["maxabs", "layer:a,ünï"], {"eps_mode": "std", "eps": 0.01}),
    "l2": (["l2"], {}),
}


def fitted(name: str, offset_column: bool = True) -> tuple[pd.DataFrame, normcli.Stats, pd.DataFrame]:
    """New data, stats fitted with config ``name`` and normcli's transform of the new data.

    ``offset_column=False`` leaves out ``big`` (1e9 + noise), whose mean needs two doubles: a
    target that holds the mean in one double (scikit-learn, torch, float32) cannot be exact on it.
    """
    df = data() if offset_column else data().drop(columns="big")
    methods, opts = CONFIGS[name]
    stats = normcli.fit(df, methods, **opts)
    new = data(seed=4) if offset_column else data(seed=4).drop(columns="big")
    new[["a", "b b"]] *= 1.3  # outside the fitted range, so clipping matters
    return new, stats, stats.transform(new)


def assert_same(got: pd.DataFrame, ref: pd.DataFrame, columns, tol: float = TOL) -> None:
    for c in columns:
        g, r = pd.to_numeric(got[c]).to_numpy(np.float64), ref[c].to_numpy(np.float64)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r), err_msg=c)
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol, err_msg=c)


@pytest.mark.parametrize("name", CONFIGS)
def test_sql_duckdb_equals_transform(name):
    duckdb = pytest.importorskip("duckdb")
    new, stats, ref = fitted(name)
    sql = stats.export("sql", dialect="duckdb", table="new")
    got = duckdb.sql(sql).df()
    assert list(got.columns) == list(new.columns)  # every column, in input order
    assert_same(got, ref, stats.columns)
    assert got["id"].tolist() == new["id"].tolist()


@pytest.mark.parametrize("name", CONFIGS)
def test_sql_sqlite_equals_transform(name):
    new, stats, ref = fitted(name)
    con = sqlite3.connect(":memory:")
    new.to_sql("my table", con, index=False)
    sql = stats.export("sql", dialect="sqlite", table="my table", columns=list(new.columns))
    got = pd.read_sql_query(sql, con)
    assert list(got.columns) == list(new.columns)
    assert_same(got, ref, stats.columns)


def test_sql_quotes_and_numbers():
    _, stats, _ = fitted("zscore")
    spark = stats.export("sql", dialect="spark", columns=["id", *stats.columns])
    assert "`quo\"te`" in spark and "`ünï`" in spark
    pg = stats.export("sql", dialect="postgres", columns=["id", *stats.columns])
    assert '"quo""te"' in pg and "DOUBLE PRECISION" in pg
    mean = stats.columns["a"].stats.mean
    assert repr(mean) in pg  # full round-trip precision


def test_sql_without_columns_needs_duckdb():
    _, stats, _ = fitted("zscore")
    with pytest.raises(UsageError, match="--columns"):
        stats.export("sql", dialect="sqlite")
    with pytest.raises(UsageError, match="lacks the fitted column"):
        stats.export("sql", dialect="postgres", columns=["id"])


def test_grouped_stats_are_refused_by_the_other_targets():
    df = pd.DataFrame({"k": ["a", "b", "a", "b"], "x": [1.0, 2.0, 4.0, 8.0]})
    stats = normcli.fit(df, "zscore", columns=["x"], group_by=["k"])
    for target in ("onnx", "sklearn", "torch"):
        with pytest.raises(UsageError, match="not yet supported for grouped"):
            stats.export(target)
    with pytest.raises(UsageError, match="has no SQL form"):
        stats.export("sql", unseen_group="error")


def test_sql_refuses_an_unseen_group_policy_it_has_no_form_for_also_without_groups(cli, tmp_path):
    stats = normcli.fit(pd.DataFrame({"x": [1.0, 2.0, 4.0]}))
    stats.save(tmp_path / "s.json")
    for policy in ("foo", "error"):
        r = cli("export", tmp_path / "s.json", "--to", "sql", "--unseen-group", policy)
        assert r.code == 2 and r.err == (f"Error: --unseen-group {policy} has no SQL form "
                                         "(choose from global, passthrough, null)\n"), r.err
    # a policy SQL has, without groups to apply it to: accepted, as transform accepts it
    assert stats.export("sql", unseen_group="null") == stats.export("sql")


def _grouped_frame():
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"id": np.arange(300), "store": rng.choice(["a", "b", "c'q", None], 300),
                       "k2": rng.integers(0, 3, 300), "x": rng.normal(5, 2, 300), "y": rng.normal(-1, 4, 300),
                       "t": ["z"] * 300})
    df.loc[rng.random(300) < 0.1, "x"] = np.nan
    return df


@pytest.mark.parametrize("method", ["zscore", "minmax", "robust"])
@pytest.mark.parametrize("policy", ["global", "passthrough", "null"])
def test_grouped_sql_equals_transform_in_duckdb_and_sqlite(method, policy):
    duckdb = pytest.importorskip("duckdb")
    df = _grouped_frame()
    # fitted without k2 == 2, so those rows meet the unseen-group policy; keys hold a null and a quote
    stats = normcli.fit(df[df.k2 < 2], method, columns=["x", "y"], group_by=["store", "k2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the unseen-group warning of the global policy
        ref = stats.transform(df, unseen_group=policy)
    got = duckdb.sql(stats.export("sql", dialect="duckdb", table="df", unseen_group=policy)).df()
    con = sqlite3.connect(":memory:")
    df.to_sql("df", con, index=False)
    lite = pd.read_sql(stats.export("sql", dialect="sqlite", table="df", columns=list(df.columns),
                                    unseen_group=policy), con)
    for out in (got, lite):
        assert list(out.columns) == list(df.columns)
        out = out.sort_values("id", ignore_index=True)  # a join promises no row order
        for c in ("x", "y"):
            np.testing.assert_allclose(out[c].to_numpy(float), ref[c].to_numpy(float), rtol=1e-12, atol=1e-12)
        assert out["t"].tolist() == df["t"].tolist()


SKLEARN = ["zscore", "minmax_clip", "robust_passthrough", "l2"]


@pytest.mark.parametrize("name", [*SKLEARN, "maxabs"])
def test_sklearn_equals_transform(name):
    pytest.importorskip("sklearn")
    if name == "maxabs":
        df = data()
        stats = normcli.fit(df, "maxabs")
        new, ref = data(seed=4), stats.transform(data(seed=4))
    else:
        new, stats, ref = fitted(name, offset_column=False)
    if name == "l2":  # Normalizer rejects NaN
        new = new.dropna().reset_index(drop=True)
        ref = stats.transform(new)
    ct = normcli.to_sklearn(stats, columns=list(new.columns))
    got = ct.transform(new)
    assert set(got.columns) == set(new.columns)
    assert_same(got, ref, stats.columns)


@pytest.mark.parametrize("name", ["layer", "zscore_ddof1_eps_gamma", "zscore_clip_fill", "zscore_zero_fill"])
def test_sklearn_refuses_what_it_cannot_express(name):
    pytest.importorskip("sklearn")
    _, stats, _ = fitted(name)
    with pytest.raises(UsageError):
        normcli.to_sklearn(stats)


def test_from_sklearn_refuses_an_unfitted_estimator():
    """An unfitted scaler has nothing to import: one clear UsageError, with or without names."""
    pytest.importorskip("sklearn")
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import StandardScaler

    for est in (StandardScaler(), ColumnTransformer([("s", StandardScaler(), ["a"])])):
        for columns in (None, ["a"]):
            with pytest.raises(UsageError, match=f"the {type(est).__name__} is not a fitted scikit-learn estimator"):
                normcli.from_sklearn(est, columns)


def test_from_sklearn_refuses_a_name_given_twice():
    """Two of the estimator's columns under one name would keep one of them, with the other's
    statistics: refused."""
    pytest.importorskip("sklearn")
    from sklearn.preprocessing import StandardScaler

    est = StandardScaler().fit(np.array([[1.0, 2.0], [3.0, 5.0], [4.0, 9.0]]))
    with pytest.raises(UsageError, match="column 'a' is named twice"):
        normcli.from_sklearn(est, ["a", "a"])


def test_from_sklearn_renames_the_columns_a_column_transformer_picks_by_name():
    """--columns names the estimator's input columns in order: a step that picked 'a' by name
    scales the first of them, as a step that picked column 0 does; a count that differs is refused."""
    pytest.importorskip("sklearn")
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    df = data()[["a", "b b", "ünï"]]
    for picks in ((["a"], ["ünï"]), ([0], [2])):
        ct = ColumnTransformer([("s", StandardScaler(), picks[0]), ("m", MinMaxScaler(), picks[1])],
                               remainder="passthrough").fit(df)
        stats = normcli.from_sklearn(ct, ["x", "y", "z"])
        assert list(stats.columns) == ["x", "z"]
        renamed = df.set_axis(["x", "y", "z"], axis=1)
        ref = ct.transform(df)  # the scaled columns first, then the one passed through
        ours = stats.transform(renamed)
        np.testing.assert_allclose(ours["x"], ref[:, 0], rtol=1e-12)
        np.testing.assert_allclose(ours["z"], ref[:, 1], rtol=1e-12)
        with pytest.raises(UsageError, match="the estimator takes 3 columns but 1 names were given"):
            normcli.from_sklearn(ct, ["x"])


def test_sklearn_skops_file_round_trip(tmp_path, cli):
    sio = pytest.importorskip("skops.io")
    new, stats, ref = fitted("zscore", offset_column=False)
    stats.save(tmp_path / "s.json")
    r = cli("export", tmp_path / "s.json", "--to", "sklearn", "-o", tmp_path / "m.skops",
            "--columns", ",".join(new.columns))
    assert r.code == 0, r.err
    est = sio.load(tmp_path / "m.skops", trusted=sio.get_untrusted_types(file=tmp_path / "m.skops"))
    assert_same(est.transform(new), ref, stats.columns)
    r = cli("import", tmp_path / "m.skops", "-o", tmp_path / "back.json")
    assert r.code == 0, r.err
    assert_same(normcli.load(str(tmp_path / "back.json")).transform(new), ref, stats.columns)


def sklearn_estimators():
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, Normalizer, RobustScaler, StandardScaler

    return {
        "standard": StandardScaler(),
        "minmax": MinMaxScaler(feature_range=(-2, 2), clip=True),
        "maxabs": MaxAbsScaler(),
        "robust": RobustScaler(quantile_range=(10, 90)),
        "robust_unit": RobustScaler(unit_variance=True),
        "column_transformer": ColumnTransformer([("s", StandardScaler(), ["a", "b b"]),
                                                 ("m", MinMaxScaler(), ["quo\"te"]),
                                                 ("r", RobustScaler(), ["ünï"])], remainder="passthrough"),
    }


@pytest.mark.parametrize("kind", ["standard", "minmax", "maxabs", "robust", "robust_unit", "column_transformer"])
def test_sklearn_normcli_sklearn_round_trip(kind):
    pytest.importorskip("sklearn")
    cols = ["a", "b b", 'quo"te', "ünï"]
    train, new = data()[cols], data(seed=4)[cols] * 1.2
    est = sklearn_estimators()[kind].fit(train)
    ref = pd.DataFrame(est.transform(new), columns=cols) if kind != "column_transformer" else None
    stats = statsfile.loads(statsfile.dumps(normcli.from_sklearn(est)))  # through the stats file
    ours = stats.transform(new)
    if ref is not None:
        assert_same(ours, ref, cols)
    back = normcli.to_sklearn(stats, columns=cols).transform(new)
    assert_same(back, ours, cols)


def test_from_sklearn_keeps_mergeable_moments():
    from sklearn.preprocessing import StandardScaler

    df = data()
    est = StandardScaler().fit(df[["a"]].to_numpy())
    st = normcli.from_sklearn(est, ["a"]).columns["a"].stats
    ours = normcli.fit(df, columns=["a"]).columns["a"].stats
    assert st.count == ours.count
    assert st.mean == pytest.approx(ours.mean, rel=1e-14)
    assert st.m2 == pytest.approx(ours.m2, rel=1e-12)
    merged = normcli.merge(normcli.from_sklearn(est, ["a"]), normcli.from_sklearn(est, ["a"]))
    assert merged.columns["a"].stats.count == 2 * st.count


ZSCORE_OPTIONS = [{"ddof": 0, "eps": 0.0}, {"ddof": 1, "eps": 0.0}, {"ddof": 0, "eps": 0.5},
                  {"ddof": 1, "eps": 0.5}]
ZCOLS = ["a", "b b", "const"]


def _small(seed: int) -> pd.DataFrame:
    """Few rows (where ddof and eps matter most), nulls and a constant column."""
    return data(12, seed)[ZCOLS]


@pytest.mark.parametrize("opts", ZSCORE_OPTIONS, ids=lambda o: f"ddof{o['ddof']}_eps{o['eps']}")
def test_zscore_to_sklearn_exports_population_var_and_applied_scale(opts):
    pytest.importorskip("sklearn")
    from sklearn.preprocessing import StandardScaler

    train, more = _small(3), _small(5)
    stats = normcli.fit(train, "zscore", **opts)
    ct = normcli.to_sklearn(stats)
    for i, c in enumerate(ZCOLS):
        sc = ct.named_transformers_[f"zscore_{i}"]
        x = train[c].to_numpy()
        var = np.nanvar(x)
        scale = 1.0 if c == "const" else np.sqrt(np.nanvar(x, ddof=opts["ddof"]) + opts["eps"])
        np.testing.assert_allclose(sc.var_, [var], rtol=TOL, atol=1e-300)
        np.testing.assert_allclose(sc.scale_, [scale], rtol=TOL)
        # scikit-learn merges var_ as a population variance: the merged moments are the whole's
        sc.partial_fit(more[[c]])
        whole = StandardScaler().fit(pd.concat([train, more])[[c]])
        np.testing.assert_allclose([sc.mean_, sc.var_], [whole.mean_, whole.var_], rtol=TOL, atol=1e-300)
        assert sc.n_samples_seen_ == whole.n_samples_seen_


def _standard_scalers() -> dict:
    """StandardScalers whose scale_ is sqrt(var_) (fitted), or not (exported with eps, edited)."""
    from sklearn.preprocessing import StandardScaler

    train = _small(3)
    train["tiny"] = 0.1  # constant but for rounding: scikit-learn's var_ is ~1e-34, its scale_ 1
    train.loc[0, "tiny"] = np.nextafter(0.1, 1)
    edited = StandardScaler().fit(train)
    edited.scale_ = edited.scale_ * np.array([1.1, 0.9, 1.0, 1.0])
    # weights summing to 0.39: n_samples_seen_ is that sum, no count
    weighted = StandardScaler().fit(train, sample_weight=np.linspace(0.01, 0.055, len(train)))
    out = {"fitted": StandardScaler().fit(train), "edited": edited, "weighted": weighted}
    for o in ZSCORE_OPTIONS:
        ct = normcli.to_sklearn(normcli.fit(train, "zscore", **o))
        out[f"ddof{o['ddof']}_eps{o['eps']}"] = ct
    return out


@pytest.mark.parametrize("kind", ["fitted", "edited", "weighted",
                                  *(f"ddof{o['ddof']}_eps{o['eps']}" for o in ZSCORE_OPTIONS)])
def test_standard_scaler_import_transforms_as_sklearn(kind):
    pytest.importorskip("sklearn")
    est = _standard_scalers()[kind]
    new = _small(4)
    new["tiny"] = np.linspace(0.09, 0.11, len(new))
    ref = pd.DataFrame(est.transform(new), columns=new.columns)[list(new.columns)]
    stats = statsfile.loads(statsfile.dumps(normcli.from_sklearn(est)))  # through the stats file
    assert_same(stats.transform(new), ref, new.columns)
    assert_same(normcli.to_sklearn(stats).transform(new), ref, new.columns)  # and back, unchanged
    if kind == "weighted":  # weighted moments are no counts: a fixed centre and scale, no moments
        assert all(f.stats.count == 0 and f.stats.center is not None for f in stats.columns.values())
        return
    # the moments stay the population ones, whatever scale_ is
    scalers = [est] if kind in ("fitted", "edited") else list(est.named_transformers_.values())
    mean = np.concatenate([s.mean_ for s in scalers])
    m2 = np.concatenate([s.var_ * s.n_samples_seen_ for s in scalers])
    got = [stats.columns[c].stats for c in new.columns]
    np.testing.assert_allclose([s.mean for s in got], mean, rtol=TOL)
    np.testing.assert_allclose([s.m2 for s in got], m2, rtol=TOL, atol=1e-300)


@pytest.mark.parametrize("opts", ZSCORE_OPTIONS, ids=lambda o: f"ddof{o['ddof']}_eps{o['eps']}")
def test_zscore_sklearn_round_trip_transforms_as_fitted(opts):
    pytest.importorskip("sklearn")
    train, new = _small(3), _small(4)
    stats = normcli.fit(train, "zscore", **opts)
    back = statsfile.loads(statsfile.dumps(normcli.from_sklearn(normcli.to_sklearn(stats))))
    assert_same(back.transform(new), stats.transform(new), ZCOLS)
    a = back.columns["a"]
    if opts["eps"] == 0.0:  # ddof alone is recognised: the column stays mergeable
        assert (a.options["ddof"], a.stats.scale) == (opts["ddof"], None)
        again = statsfile.loads(statsfile.dumps(back))  # the same statistics, as another part
        assert normcli.merge(back, again).columns["a"].stats.count == 2 * a.stats.count
    else:  # eps is not: the applied scale is carried as it is, and refuses to merge
        assert a.stats.scale is not None
        with pytest.raises(normcli.NormcliError, match="cannot be merged"):
            normcli.merge(back, statsfile.loads(statsfile.dumps(back)))


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_an_imported_normalizer_records_no_statistics(tmp_path, norm):
    """A Normalizer keeps no statistics: nulls are unknown (null) as for every import, and
    inspect flags nothing (it said 'constant'); the rows still transform as scikit-learn does."""
    from conftest import run_cli

    skp = pytest.importorskip("sklearn.preprocessing")
    frame = pd.DataFrame({"x": [1.0, -2.0, 3.0, 4.0], "y": [1.0, 5.0, -3.0, 4.0]})
    est = skp.Normalizer(norm=norm).fit(frame)
    normcli.from_sklearn(est).save(tmp_path / "n.json")
    doc = json.loads((tmp_path / "n.json").read_text())
    assert [doc["columns"][c]["stats"]["nulls"] for c in ("x", "y")] == [None, None]
    r = run_cli("inspect", tmp_path / "n.json")
    rows = [line for line in r.out.decode().splitlines() if line.startswith(("│ x ", "│ y "))]
    assert r.code == 0 and len(rows) == 2 and not any("constant" in line for line in rows), r.out.decode()
    got = normcli.load(str(tmp_path / "n.json")).transform(frame)
    np.testing.assert_allclose(got[["x", "y"]].to_numpy(), est.transform(frame), rtol=1e-15)


@pytest.mark.parametrize("scaler", ["RobustScaler", "MaxAbsScaler"])
def test_fit_update_of_imported_fixed_parameters_is_a_stats_file_error(tmp_path, scaler):
    """A scaler imported as fixed center/scale cannot take more data: --update refuses it as
    merge does (exit 4), not with fit's "robust needs a quantile sketch" (exit 3)."""
    from conftest import run_cli
    from reliability.helpers import assert_error

    skp = pytest.importorskip("sklearn.preprocessing")
    est = getattr(skp, scaler)().fit(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}))
    imported = normcli.from_sklearn(est)
    assert imported.columns["x"].stats.scale is not None
    imported.save(tmp_path / "imp.json")
    (tmp_path / "m.csv").write_text("x\n1\n2\n")
    r = run_cli("fit", tmp_path / "m.csv", "--update", tmp_path / "imp.json", "-o", tmp_path / "out.json")
    assert_error(r, 4, "column 'x'", "imported fixed center/scale parameters, which cannot be merged")
    assert not (tmp_path / "out.json").exists()


def test_cli_import_of_a_zscore_with_eps_transforms_as_sklearn(tmp_path, cli):
    sio = pytest.importorskip("skops.io")
    _small(3).to_csv(tmp_path / "train.csv", index=False)
    _small(4).to_csv(tmp_path / "new.csv", index=False)
    new = pd.read_csv(tmp_path / "new.csv")
    for args in (["fit", tmp_path / "train.csv", "--ddof", "1", "--eps", "0.5", "-o", tmp_path / "s.json"],
                 ["export", tmp_path / "s.json", "--to", "sklearn", "-o", tmp_path / "m.skops"],
                 ["import", tmp_path / "m.skops", "-o", tmp_path / "back.json"],
                 ["transform", tmp_path / "new.csv", "--stats", tmp_path / "back.json", "-o", tmp_path / "out.csv"],
                 ["transform", tmp_path / "new.csv", "--stats", tmp_path / "s.json", "-o", tmp_path / "orig.csv"]):
        r = cli(*args)
        assert r.code == 0, r.err
    est = sio.load(tmp_path / "m.skops", trusted=sio.get_untrusted_types(file=tmp_path / "m.skops"))
    ref = est.transform(new)
    got = pd.read_csv(tmp_path / "out.csv")
    assert_same(got, ref, ZCOLS)
    assert_same(got, pd.read_csv(tmp_path / "orig.csv"), ZCOLS)
    doc = json.loads((tmp_path / "back.json").read_text())
    scale = np.sqrt(np.nanvar(_small(3)["a"], ddof=1) + 0.5)
    assert doc["columns"]["a"]["stats"]["scale"] == pytest.approx(scale, rel=TOL)
    # inspect shows the scale applied beside the moments' std
    row = next(line for line in cli("inspect", tmp_path / "back.json", env={"COLUMNS": "250"}).text.splitlines()
               if line.strip("│ ").startswith("a "))
    assert f"fixed scale={scale:.6g}" in row


def test_from_sklearn_without_names_needs_columns():
    from sklearn.preprocessing import StandardScaler

    est = StandardScaler().fit(np.ones((3, 2)))
    with pytest.raises(UsageError, match="--columns"):
        normcli.from_sklearn(est)
    with pytest.raises(UsageError, match="2 columns"):
        normcli.from_sklearn(est, ["a"])


TORCH = ["zscore", "zscore_ddof1_eps_gamma", "maxabs_zero", "robust_passthrough_zero", "layer", "mixed_rows"]


@pytest.mark.parametrize("name", TORCH)
def test_torch_modules_equal_transform(name):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load

    new, stats, _ = fitted(name, offset_column=False)
    new = new.dropna().reset_index(drop=True)  # torch has no nulls
    ref = stats.transform(new)
    blob = stats.export("torch")
    tensors = load(blob)
    _, meta = _safetensors(blob)
    assert meta["columns"] == list(stats.columns)

    def part(prefix):
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    if "batchnorm" in meta:
        cols = meta["batchnorm"]["columns"]
        bn = torch.nn.BatchNorm1d(len(cols), eps=meta["batchnorm"]["eps"]).double().eval()
        bn.load_state_dict(part("batchnorm."))
        got = bn(torch.tensor(new[cols].to_numpy(np.float64))).detach().numpy()
        assert_same(pd.DataFrame(got, columns=cols), ref, cols)
    for i, spec in enumerate(meta["layer"]):
        cols = spec["columns"]
        ln = torch.nn.LayerNorm(len(cols), eps=spec["eps"]).double().eval()
        ln.load_state_dict(part(f"layer{i}."))
        got = ln(torch.tensor(new[cols].to_numpy(np.float64))).detach().numpy()
        assert_same(pd.DataFrame(got, columns=cols), ref, cols)
    for spec in meta["normalize"]:
        cols = spec["columns"]
        got = torch.nn.functional.normalize(torch.tensor(new[cols].to_numpy(np.float64)), p=spec["p"], dim=1)
        assert_same(pd.DataFrame(got.numpy(), columns=cols), ref, cols)


def test_torch_keeps_an_imported_fixed_scale():
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from safetensors.torch import load

    est = _standard_scalers()["edited"]
    new = _small(4).dropna().reset_index(drop=True)
    new["tiny"] = 0.1
    tensors = load(normcli.from_sklearn(est).export("torch"))
    bn = torch.nn.BatchNorm1d(new.shape[1], eps=0.0).double().eval()
    bn.load_state_dict({k[len("batchnorm."):]: v for k, v in tensors.items() if k.startswith("batchnorm.")})
    got = bn(torch.tensor(new.to_numpy(np.float64))).detach().numpy()
    assert_same(pd.DataFrame(got, columns=new.columns), pd.DataFrame(est.transform(new), columns=new.columns),
                new.columns)


def _safetensors(blob: bytes) -> tuple[dict, dict]:
    """The NumPy tensors and the JSON metadata of a safetensors file (its header is an 8-byte
    little-endian length, then JSON)."""
    from safetensors.numpy import load

    header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    return load(blob), {k: json.loads(v) for k, v in header["__metadata__"].items()}


def _batchnorm_eval(t: dict, eps: float, x: np.ndarray) -> np.ndarray:
    """torch.nn.BatchNorm1d in eval mode, from its documented formula:
    (x - running_mean) / sqrt(running_var + eps) * weight + bias."""
    return ((x - t["batchnorm.running_mean"]) / np.sqrt(t["batchnorm.running_var"] + eps)
            * t["batchnorm.weight"] + t["batchnorm.bias"])


@pytest.mark.parametrize("name", TORCH)
def test_torch_tensors_by_the_modules_formulas_equal_transform(name):
    """test_torch_modules_equal_transform without torch: BatchNorm1d, LayerNorm (population
    variance of each row) and normalize (x / max(norm, 1e-12)) from torch's documented formulas."""
    pytest.importorskip("safetensors")
    new, stats, _ = fitted(name, offset_column=False)
    new = new.dropna().reset_index(drop=True)
    ref = stats.transform(new)
    t, meta = _safetensors(stats.export("torch"))
    assert meta["columns"] == list(stats.columns)
    if "batchnorm" in meta:
        cols = meta["batchnorm"]["columns"]
        got = _batchnorm_eval(t, meta["batchnorm"]["eps"], new[cols].to_numpy(np.float64))
        assert_same(pd.DataFrame(got, columns=cols), ref, cols)
    for i, spec in enumerate(meta["layer"]):
        cols = spec["columns"]
        x = new[cols].to_numpy(np.float64)
        mean = x.mean(axis=1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
        got = (x - mean) / np.sqrt(var + spec["eps"]) * t[f"layer{i}.weight"] + t[f"layer{i}.bias"]
        assert_same(pd.DataFrame(got, columns=cols), ref, cols)
    for spec in meta["normalize"]:
        cols = spec["columns"]
        x = new[cols].to_numpy(np.float64)
        norm = np.linalg.norm(x, ord=spec["p"], axis=1, keepdims=True)
        assert_same(pd.DataFrame(x / np.maximum(norm, 1e-12), columns=cols), ref, cols)
    assert "batchnorm" in meta or meta["layer"] or meta["normalize"]


@pytest.mark.parametrize("kind", ["fitted", "edited"])
def test_batchnorm_tensors_of_an_imported_scaler_transform_as_sklearn(kind):
    """Without torch: a constant column, whose var_ scikit-learn makes exactly 0 and scale_ 1,
    must not come out as 0/0."""
    pytest.importorskip("sklearn")
    pytest.importorskip("safetensors")
    est = _standard_scalers()[kind]
    new = _small(4).dropna().reset_index(drop=True)
    new["tiny"] = 0.1
    t, meta = _safetensors(normcli.from_sklearn(est).export("torch"))
    got = _batchnorm_eval(t, meta["batchnorm"]["eps"], new.to_numpy(np.float64))
    assert_same(pd.DataFrame(got, columns=new.columns), pd.DataFrame(est.transform(new), columns=new.columns),
                new.columns)


def test_torch_refuses_clip():
    pytest.importorskip("safetensors")
    _, stats, _ = fitted("zscore_clip_fill")
    with pytest.raises(UsageError, match="BatchNorm1d"):
        stats.export("torch")


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("dtype,tol", [("float64", TOL), ("float32", 1e-6)])
def test_onnx_runtime_equals_transform(name, dtype, tol):
    ort = pytest.importorskip("onnxruntime")
    new, stats, ref = fitted(name, offset_column=dtype == "float64")
    model = stats.export("onnx", dtype=dtype)
    cols = json.loads({p.key: p.value for p in model.metadata_props}["columns"])
    assert cols == list(stats.columns)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"X": new[cols].to_numpy(dtype)})[0]
    assert got.dtype == np.dtype(dtype)
    assert_same(pd.DataFrame(got.astype(np.float64), columns=cols), ref, cols, tol)


def test_cli_export_sql_and_onnx(tmp_path, cli, sample_csv):
    duckdb = pytest.importorskip("duckdb")
    assert cli("fit", sample_csv, "-m", "zscore", "-m", "layer:units,price", "-o", tmp_path / "s.json").code == 0
    r = cli("export", tmp_path / "s.json", "--to", "sql", "--table", "sales")
    assert r.code == 0, r.err
    sales = pd.read_csv(sample_csv)
    got = duckdb.sql(r.text).df()
    ref = normcli.load(str(tmp_path / "s.json")).transform(sales)
    assert_same(got, ref, ["units", "price", "sales", "temperature"])
    assert cli("export", tmp_path / "s.json", "--to", "onnx", "-o", tmp_path / "m.onnx").code == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0
    r = cli("export", tmp_path / "s.json", "--to", "sklearn", "-o", tmp_path / "m.skops")
    assert r.code == 2 and "layer has no scikit-learn equivalent" in r.err
    r = cli("export", tmp_path / "s.json", "--to", "sql", "--dialect", "oracle")
    assert r.code == 2 and "unknown SQL dialect" in r.err


def test_missing_extra_names_the_pip_command(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.startswith("onnx"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.delitem(__import__("sys").modules, "onnx", raising=False)
    _, stats, _ = fitted("zscore")
    with pytest.raises(UsageError, match=r"pip install 'normcli\[onnx\]'"):
        stats.export("onnx")


def test_zscore_gamma_beta_eps_are_recorded_and_shown(tmp_path, cli, sample_csv):
    r = cli("fit", sample_csv, "--eps", "0.5", "--gamma", "2,3,4,5", "--beta", "1", "-o", tmp_path / "s.json")
    assert r.code == 0, r.err
    doc = json.loads((tmp_path / "s.json").read_text())
    assert [doc["columns"][c]["options"]["gamma"] for c in ("units", "price", "sales", "temperature")] == [2, 3, 4, 5]
    assert doc["columns"]["price"]["options"]["eps"] == 0.5
    r = cli("inspect", tmp_path / "s.json", env={"COLUMNS": "200"})
    assert "gamma=3" in r.text and "eps=0.5" in r.text and "beta=1" in r.text
    r = cli("fit", sample_csv, "--gamma", "2,3", "-o", tmp_path / "t.json")
    assert r.code == 2 and "4 columns are fitted with zscore" in r.err


@pytest.mark.parametrize("method, options", [("zscore", {}), ("zscore", {"fill_missing": True}),
                                             ("minmax", {"clip": True}), ("robust", {}), ("maxabs", {}),
                                             ("l2", {}), ("l1", {}), ("layer", {}), ("max", {})])
def test_sql_reads_nan_as_null_like_transform(method, options):
    """A NaN in the table (Arrow and Parquet hold them) is missing to transform: the SQL reads
    it as NULL too, so it is neither normalized as a value nor does it blank a row."""
    duckdb = pytest.importorskip("duckdb")
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=40), rng.normal(size=40)
    a[[3, 17]], b[[17, 30]] = np.nan, np.nan
    table = pa.table({"id": np.arange(40), "a": a, "b": b})
    stats = normcli.fit(table, method, columns=["a", "b"], **options)
    ref = stats.transform(table).to_pandas()
    con = duckdb.connect()
    con.register("t", table)
    got = con.execute(stats.export("sql", dialect="duckdb", table="t")).df().sort_values("id", ignore_index=True)
    assert_same(got, ref, ["a", "b"])


def test_import_refuses_a_column_transformer_that_scales_a_column_twice():
    """scikit-learn outputs such a column once per step; one stats column cannot hold both."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    df = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [3.0, 5.0, 9.0]})
    ct = ColumnTransformer([("s", StandardScaler(), ["a", "b"]), ("m", MinMaxScaler(), ["b"])]).fit(df)
    with pytest.raises(UsageError, match="column 'b' is scaled by two steps"):
        normcli.from_sklearn(ct)


def _spark_literals(sql: str) -> list[str]:
    """The string literals of ``sql`` as Spark SQL reads them (its documented rule: a backslash
    escapes the character after it; an unescaped quote ends the literal), outside `identifiers`."""
    out, i = [], 0
    while i < len(sql):
        if sql[i] == "`":
            i = sql.index("`", i + 1) + 1
        elif sql[i] == "'":
            text, i = [], i + 1
            while sql[i] != "'":
                if sql[i] == "\\":
                    i += 1
                text.append(sql[i])
                i += 1
            out.append("".join(text))
            i += 1
        else:
            i += 1
    return out


def test_spark_sql_writes_group_keys_as_spark_reads_text():
    # Spark reads a backslash as an escape, and 'a''b' as two literals joined ("ab")
    keys = ["o'b", "\\", "a\\'b", "plain", "x''y"]
    df = pd.DataFrame({"k": [k for k in keys for _ in range(2)], "x": np.arange(2.0 * len(keys))})
    stats = normcli.fit(df, "zscore", group_by="k")
    sql = stats.export("sql", dialect="spark", columns=["k", "x"])
    assert sorted(k for k in _spark_literals(sql) if k != "NaN") == sorted(keys)


@pytest.mark.parametrize("call", ["sql", "onnx", "torch", "sklearn", "to_sklearn", "from_sklearn"])
def test_an_unknown_keyword_is_a_usage_error_naming_the_options(call):
    """As for fit and transform: not a TypeError naming a function the user never called."""
    from sklearn.preprocessing import StandardScaler

    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0]})
    stats = normcli.fit(frame)
    run = {"to_sklearn": lambda: normcli.to_sklearn(stats, foo=1),
           "from_sklearn": lambda: normcli.from_sklearn(StandardScaler().fit(frame), foo=1)}.get(
        call, lambda: stats.export(call, foo=1))
    with pytest.raises(UsageError, match=r"^unknown option 'foo' \(options: .*\)$"):
        run()


@pytest.mark.parametrize("with_mean,with_std", [(False, True), (True, False), (False, False)])
def test_a_standard_scaler_without_centring_or_scaling_imports_and_transforms_like_it(with_mean, with_std):
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"a": rng.normal(40, 3, 200), "b": rng.exponential(2, 200), "c": np.full(200, 7.0)})
    scaler = StandardScaler(with_mean=with_mean, with_std=with_std).fit(frame)
    stats = normcli.from_sklearn(scaler)
    np.testing.assert_allclose(stats.transform(frame).to_numpy(), scaler.transform(frame), rtol=1e-12, atol=1e-12)
    again = statsfile.loads(statsfile.dumps(stats))  # the stats file holds it
    np.testing.assert_allclose(again.inverse(again.transform(frame)).to_numpy(), frame.to_numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scaler", ["StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler"])
def test_an_imported_scaler_has_an_unknown_null_count_and_check_finds_no_drift_on_its_data(tmp_path, scaler):
    """scikit-learn counts no missing values apart: the stats file says so (nulls null) rather
    than invent 0, and check of the very data the scaler was fitted on finds no drift."""
    import sklearn.preprocessing as pre

    from tests.conftest import run_cli

    rng = np.random.default_rng(9)
    x = rng.normal(5, 2, 400)
    x[::2] = np.nan  # half the values missing
    frame = pd.DataFrame({"x": x, "y": rng.normal(size=400)})
    frame.to_csv(tmp_path / "d.csv", index=False)
    stats = normcli.from_sklearn(getattr(pre, scaler)().fit(frame))
    stats.save(tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    assert [doc["columns"][c]["stats"]["nulls"] for c in ("x", "y")] == [None, None]
    r = run_cli("check", tmp_path / "d.csv", "--stats", tmp_path / "s.json", "--json")
    assert r.code == 0, (r.out, r.err)
    report = {c["column"]: c for c in json.loads(r.out)["columns"]}
    assert report["x"]["null_rate_fitted"] is None and report["x"]["nulls"] == 200
    assert "nulls" in run_cli("inspect", tmp_path / "s.json").out.decode()
    if scaler in ("StandardScaler", "MinMaxScaler"):  # mergeable: unknown stays unknown
        merged = normcli.merge(stats, normcli.fit(frame, "minmax" if scaler == "MinMaxScaler" else "zscore"))
        assert merged.columns["x"].stats.nulls is None


def test_export_and_import_refuse_to_write_over_the_file_they_read(tmp_path, cli, sample_csv):
    """As every other command: exit 2 and the file as it was, also through a symbolic link."""
    stats = tmp_path / "s.json"
    assert cli("fit", sample_csv, "-o", stats).code == 0
    before = stats.read_bytes()
    (tmp_path / "link.json").symlink_to(stats)
    for to, out in (("sql", stats), ("onnx", tmp_path / "link.json")):
        r = cli("export", stats, "--to", to, "-o", out)
        assert r.code == 2 and r.err.startswith(f"Error: the output '{out}' is the stats file"), r.err
    assert stats.read_bytes() == before
    pytest.importorskip("skops.io")
    model = tmp_path / "m.skops"
    assert cli("export", stats, "--to", "sklearn", "-o", model).code == 0
    saved = model.read_bytes()
    r = cli("import", model, "-o", model)
    assert r.code == 2 and r.err == f"Error: the output '{model}' is the model file; choose another output path\n"
    assert model.read_bytes() == saved


def test_from_sklearn_names_columns_by_their_labels_text():
    """columns= takes a frame's labels (pd.DataFrame(X) has 0, 1, ...) as text, as fit does."""
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(0).normal(size=(20, 2))
    df = pd.DataFrame(x)
    est = StandardScaler().fit(x)
    stats = normcli.from_sklearn(est, columns=list(df.columns))
    assert list(stats.columns) == ["0", "1"]
    np.testing.assert_allclose(stats.transform(df).to_numpy(), est.transform(x), rtol=TOL, atol=TOL)
    assert list(normcli.merge(stats, normcli.fit(df)).columns) == ["0", "1"]
    assert '"0"' in stats.export("sql")


def test_a_string_of_columns_is_one_name_in_every_export():
    from sklearn.preprocessing import StandardScaler

    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 5.0]})
    stats = normcli.fit(df[["a"]])
    assert list(normcli.to_sklearn(stats, columns="a").feature_names_in_) == ["a"]
    with pytest.raises(UsageError, match="lacks the fitted column 'a'"):
        normcli.to_sklearn(stats, columns="a,b")
    with pytest.raises(UsageError, match="lacks the fitted column 'a'"):
        stats.export("sql", dialect="sqlite", columns="ab")
    assert list(normcli.from_sklearn(StandardScaler().fit(df[["a"]].to_numpy()), columns="a").columns) == ["a"]


def test_exports_refuse_what_is_not_stats_or_a_table_name():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    with pytest.raises(UsageError, match="takes fitted Stats"):
        normcli.to_sklearn(df)
    with pytest.raises(UsageError, match="takes fitted Stats"):
        normcli.export(df, "sql")
    with pytest.raises(UsageError, match="--table takes a table name"):
        normcli.fit(df).export("sql", table=None)


def test_export_stays_the_function_once_the_export_modules_are_imported():
    import normcli.exports.sklearn  # noqa: F401  (what to_sklearn imports)

    assert normcli.export is normcli.exports.export
    assert "SELECT" in normcli.export(normcli.fit(pd.DataFrame({"a": [1.0, 2.0]})), "sql")


@pytest.mark.parametrize("values", [[1e-16, 2e-16, 3e-16], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0], [1e-16, 5e-16, 1.0]])
@pytest.mark.parametrize("kind", ["MinMaxScaler", "MinMaxScaler(-1, 1)", "MaxAbsScaler"])
def test_a_range_scikit_learn_takes_as_constant_imports_as_it_transforms(values, kind):
    """Below 10 eps scikit-learn divides by 1, not by the range or max-abs (_handle_zeros_in_scale)."""
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler

    df = pd.DataFrame({"a": values})
    est = (MaxAbsScaler() if kind == "MaxAbsScaler" else
           MinMaxScaler(feature_range=(-1, 1) if "(" in kind else (0, 1))).fit(df)
    got = normcli.from_sklearn(est).transform(df)["a"].to_numpy()
    np.testing.assert_allclose(got, est.transform(df).ravel(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("scaler", ["StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler"])
def test_a_scaler_that_saw_no_values_of_a_column_is_refused(scaler, tmp_path):
    # Its parameters for that column are NaN: no stats file can hold them.
    import sklearn.preprocessing as skp

    df = pd.DataFrame({"a": [np.nan] * 5, "b": [1.0, 2, 3, np.nan, 5]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        est = getattr(skp, scaler)().fit(df)
    with pytest.raises(UsageError, match=rf"^column 'a': the {scaler}'s \w+ is nan, so there is nothing to import"):
        normcli.from_sklearn(est)
    # a scaler that saw values of every column imports and saves
    est = getattr(skp, scaler)().fit(df[["b"]])
    normcli.from_sklearn(est).save(str(tmp_path / "s.json"))
    assert list(normcli.load(str(tmp_path / "s.json")).columns) == ["b"]


@pytest.mark.parametrize("method", ["zscore", "minmax", "robust"])
def test_onnx_maps_infinite_values_of_a_constant_column_to_zero_as_transform_does(method):
    # --constant zero: every value is 0, nulls stay null; x * 0 would be NaN at +-inf
    ort = pytest.importorskip("onnxruntime")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        stats = normcli.fit(pd.DataFrame({"a": [1.0, 2.0, 4.0], "k": [3.0, 3.0, 3.0]}), [method], constant="zero")
    new = pd.DataFrame({"a": [1.0, 2.0, 3.0, 5.0], "k": [np.inf, -np.inf, np.nan, 1e300]})
    ref = stats.transform(new)
    assert ref["k"].iloc[[0, 1, 3]].tolist() == [0.0, 0.0, 0.0] and np.isnan(ref["k"].iloc[2])
    for dtype in ("float64", "float32"):
        sess = ort.InferenceSession(stats.export("onnx", dtype=dtype).SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        with np.errstate(over="ignore"):  # 1e300 becomes inf in float32, which the column also maps to 0
            values = new[["a", "k"]].to_numpy(dtype)
        got = sess.run(None, {"X": values})[0]
        np.testing.assert_array_equal(got[:, 1].astype(np.float64), ref["k"].to_numpy())


def test_sklearn_refuses_a_constant_column_passed_through_unless_its_mean_is_zero():
    # A StandardScaler passes x through only with mean_ 0 and scale_ 1: for a constant 7 that
    # mean_ would be merged by partial_fit (and imported) as the column's mean.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        stats = normcli.fit(pd.DataFrame({"a": np.arange(100.0), "k": np.full(100, 7.0)}), constant="passthrough")
        zero = normcli.fit(pd.DataFrame({"a": np.arange(100.0), "k": np.zeros(100)}), constant="passthrough")
    with pytest.raises(UsageError, match=r"^column 'k': --constant passthrough of a constant column has no"):
        normcli.to_sklearn(stats)
    est = normcli.to_sklearn(zero)
    new = pd.DataFrame({"a": [1.0, 50.0], "k": [2.5, -1.0]})
    np.testing.assert_allclose(est.transform(new)["k"].to_numpy(), zero.transform(new)["k"].to_numpy(), rtol=0, atol=0)
    scaler = [t for _, t, cols in est.transformers_ if "k" in list(cols)][0]
    assert scaler.mean_[list(scaler.feature_names_in_).index("k")] == 0.0  # the column's true mean
