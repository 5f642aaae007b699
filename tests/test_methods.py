"""Every method against the reference users would otherwise reach for (scikit-learn, a NumPy formula)."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn import datasets
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, Normalizer, RobustScaler, StandardScaler

import normcli
from normcli.api import BATCH_ROWS
from normcli.errors import DataError, UsageError

TOL = 1e-12  # relative, and absolute for values near zero


def frame(x: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])


def real_datasets():
    for loader in (datasets.load_wine, datasets.load_diabetes, datasets.load_breast_cancer,
                   datasets.load_iris, datasets.load_digits):
        yield loader.__name__, loader().data.astype(np.float64)


def generated():
    rng = np.random.default_rng(7)
    x = rng.normal(50, 20, (500, 6))
    x[:, 2] = 3.25  # constant column
    x[rng.random((500, 6)) < 0.1] = np.nan
    return x


CASES = [*real_datasets(), ("generated_nan_constant", generated())]


def ours(x: np.ndarray, method: str, **options) -> np.ndarray:
    df = frame(x)
    return normcli.fit(df, method, **options).transform(df).to_numpy(dtype=np.float64)


@pytest.mark.parametrize("name,x", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("ddof", [0])
def test_zscore_equals_standard_scaler(name, x, ddof):
    ref = StandardScaler().fit_transform(x)
    np.testing.assert_allclose(ours(x, "zscore", ddof=ddof), ref, rtol=TOL, atol=TOL)


def test_zscore_ddof1_equals_sample_std():
    x = generated()
    ref = (x - np.nanmean(x, 0)) / np.where(np.nanstd(x, 0, ddof=1) == 0, 1, np.nanstd(x, 0, ddof=1))
    np.testing.assert_allclose(ours(x, "zscore", ddof=1), ref, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("name,x", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("rng,clip", [((0.0, 1.0), False), ((-1.0, 3.0), False), ((-1.0, 1.0), True)])
def test_minmax_equals_minmax_scaler(name, x, rng, clip):
    df = frame(x)
    stats = normcli.fit(df, "minmax", range=list(rng), clip=clip)
    new = frame(x * 1.5 - 1.0)  # data outside the fitted range, so clip matters
    ref = MinMaxScaler(feature_range=rng, clip=clip).fit(x).transform(x * 1.5 - 1.0)
    np.testing.assert_allclose(stats.transform(new).to_numpy(np.float64), ref, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("name,x", CASES, ids=[c[0] for c in CASES])
def test_maxabs_equals_maxabs_scaler(name, x):
    np.testing.assert_allclose(ours(x, "maxabs"), MaxAbsScaler().fit_transform(x), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("name,x", CASES[:-1], ids=[c[0] for c in CASES[:-1]])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_row_norms_equal_normalizer(name, x, norm):
    ref = Normalizer(norm=norm).fit_transform(x)
    np.testing.assert_allclose(ours(x, norm), ref, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("name,x", CASES, ids=[c[0] for c in CASES])
def test_robust_equals_robust_scaler_when_sketch_is_exact(name, x):
    # The sketch holds every value while n <= its capacity: quantiles are then exact.
    ref = RobustScaler().fit_transform(x)
    np.testing.assert_allclose(ours(x, "robust", sketch_k=4096), ref, rtol=TOL, atol=TOL)


def test_robust_within_rank_error_on_large_data():
    x = np.random.default_rng(5).normal(0, 1, (200_000, 1))
    stats = normcli.fit(frame(x), "robust")
    sk = stats.columns["f0"].stats.sketch
    from normcli import sketch

    err = sketch.rank_error(sk)
    assert 0 < err < 0.02
    med = sketch.quantile(sk, 0.5)
    rank = (x[:, 0] < med).mean()
    assert abs(rank - 0.5) <= err


def layer_reference(x, eps, gamma=None, beta=None, mode="inside"):
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    y = (x - mean) / (np.sqrt(var + eps) if mode == "inside" else np.sqrt(var) + eps)
    if gamma is not None:
        y = y * np.asarray(gamma)
    if beta is not None:
        y = y + np.asarray(beta)
    return y


@pytest.mark.parametrize("mode", ["inside", "std"])
def test_layer_equals_formula(mode):
    x = np.random.default_rng(9).normal(3, 2, (1000, 5))
    gamma, beta = [1.0, 2.0, 0.5, -1.0, 3.0], [0.0, 1.0, -1.0, 2.0, 0.25]
    df = frame(x)
    stats = normcli.fit(df, "layer", eps=1e-5, eps_mode=mode, gamma=gamma, beta=beta)
    np.testing.assert_allclose(stats.transform(df).to_numpy(np.float64),
                               layer_reference(x, 1e-5, gamma, beta, mode), rtol=TOL, atol=TOL)


def test_layer_equals_torch_layer_norm():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(10).normal(0, 1, (300, 8))
    df = frame(x)
    ours_y = normcli.fit(df, "layer").transform(df).to_numpy(np.float64)
    ref = torch.nn.functional.layer_norm(torch.from_numpy(x), (8,), eps=1e-5).numpy()
    np.testing.assert_allclose(ours_y, ref, rtol=TOL, atol=TOL)


def test_mixed_methods_in_one_file():
    x = np.random.default_rng(11).normal(10, 4, (400, 6))
    df = frame(x)
    stats = normcli.fit(df, ["zscore", "minmax:f1,f2", "layer:f3,f4,f5"])
    y = stats.transform(df).to_numpy(np.float64)
    np.testing.assert_allclose(y[:, :1], StandardScaler().fit_transform(x[:, :1]), atol=TOL)
    np.testing.assert_allclose(y[:, 1:3], MinMaxScaler().fit_transform(x[:, 1:3]), atol=TOL)
    np.testing.assert_allclose(y[:, 3:], layer_reference(x[:, 3:], 1e-5), atol=TOL)


@pytest.mark.parametrize("method", ["zscore", "minmax", "maxabs", "robust"])
def test_inverse_round_trip(method):
    x = generated()
    x[:, 2] = np.linspace(-3, 7, 500)  # no constant column: scale1 on constants is not invertible
    df = frame(x)
    stats = normcli.fit(df, method)
    back = stats.inverse(stats.transform(df)).to_numpy(np.float64)
    np.testing.assert_allclose(back, x, rtol=1e-12, atol=1e-12)


def test_float32_output_equals_float64_cast():
    x = generated()
    df = frame(x)
    stats = normcli.fit(df, "zscore")
    y32 = stats.transform(df, dtype="float32")
    assert (y32.dtypes == np.float32).all()
    ref = StandardScaler().fit_transform(x).astype(np.float32)
    np.testing.assert_allclose(y32.to_numpy(), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("decimals", [2, 15])
def test_decimals_leave_values_with_no_fraction_as_they_are(decimals):
    """From 2^52 a double has no fraction: rounding keeps it, and must not overflow x * 10^N."""
    from decimal import ROUND_HALF_EVEN, Decimal, localcontext

    stats = normcli.fit(pd.DataFrame({"x": [-1.0, 1.0]}))  # mean 0, std 1: x maps to itself
    x = [1e300, 3e306, -1.7976931348623157e308, 2.0 ** 52 + 1, 0.5, 1.23456, -7.0625]
    got = stats.transform(pd.DataFrame({"x": x}), decimals=decimals)["x"].tolist()
    # the reference: Python's decimal, rounding the double's exact value half to even
    with localcontext() as ctx:
        ctx.prec = 400
        ref = [float(Decimal(v).quantize(Decimal(1).scaleb(-decimals), ROUND_HALF_EVEN)) for v in x]
    assert got == ref


def test_cli_float32_and_decimals(tmp_path):
    import io

    import pyarrow.parquet as pq

    from tests.conftest import run_cli

    x = np.random.default_rng(21).normal(5, 3, (300, 3))
    src = tmp_path / "d.csv"
    frame(x).to_csv(src, index=False)
    stats = tmp_path / "s.json"
    assert run_cli("fit", src, "-o", stats).code == 0
    ref = StandardScaler().fit_transform(x)

    out = tmp_path / "o.parquet"
    r = run_cli("transform", src, "--stats", stats, "--dtype", "float32", "-o", out)
    assert r.code == 0, r.err
    table = pq.read_table(out)
    assert all(str(t) == "float" for t in table.schema.types)
    np.testing.assert_allclose(table.to_pandas().to_numpy(), ref.astype(np.float32), rtol=1e-6, atol=1e-6)

    r = run_cli("transform", src, "--stats", stats, "--decimals", "3")
    assert r.code == 0, r.err
    fields = [f for line in r.text.splitlines()[1:] for f in line.split(",")]
    assert all(len(f.partition(".")[2]) <= 3 for f in fields)
    got = pd.read_csv(io.BytesIO(r.out)).to_numpy()
    np.testing.assert_allclose(got, np.round(ref, 3), rtol=0, atol=1e-12)
    assert np.abs(got - ref).max() <= 0.0005 + 1e-12


@pytest.mark.parametrize("options", [{"eps": float("inf")}, {"gamma": float("nan")}, {"beta": [1.0, float("-inf")]},
                                     {"clip_sigma": float("nan")}, {"clip_sigma": -1.0}, {"range": [0.0, float("inf")]},
                                     {"range": [1.0, 0.0]}, {"quantile_range": [10.0, 200.0]}])
def test_option_values_no_method_can_use_are_usage_errors(options):
    df = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [3.0, 5.0, 9.0]})
    with pytest.raises(UsageError):
        normcli.fit(df, **options)


@pytest.mark.parametrize("clip_sigma", [float("nan"), float("inf"), -2.0])
def test_transform_overrides_are_checked_like_fit_options(clip_sigma):
    df = pd.DataFrame({"a": [1.0, 2.0, 4.0]})
    stats = normcli.fit(df)
    with pytest.raises(UsageError):
        normcli.transform(stats, df, clip_sigma=clip_sigma)


def test_integers_beyond_2_53_round_as_in_scikit_learn():
    """int64 and uint64 values a double cannot hold exactly round to the nearest double, as the
    file readers and scikit-learn (which casts to float64) do."""
    df = pd.DataFrame({"x": np.array([2**53 + 1, 5, 2**62, -(2**63)], dtype="int64"),
                       "u": np.array([2**64 - 1, 0, 7, 2**63 + 3], dtype="uint64")})
    stats = normcli.fit(df)
    out = normcli.transform(stats, df)
    ref = StandardScaler().fit_transform(df.astype(np.float64))
    np.testing.assert_allclose(out.to_numpy(np.float64), ref, rtol=1e-12, atol=1e-12)


def test_a_frame_with_integer_column_names_round_trips():
    """pd.DataFrame(ndarray) names its columns 0, 1, ...: fit stores them as text, transform and
    inverse find them and keep the frame's own labels."""
    x = np.array([[1.0, 2.0], [3.0, 5.0], [4.0, 9.0], [-2.0, 0.5]])
    df = pd.DataFrame(x)
    stats = normcli.fit(df)
    out = normcli.transform(stats, df)
    assert list(out.columns) == [0, 1]
    np.testing.assert_allclose(out.to_numpy(), StandardScaler().fit_transform(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(normcli.transform(stats, out, inverse=True).to_numpy(), x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("frame", [pd.DataFrame({"a": [1.0, 2.0], "m": ["a", 1]}),
                                   pd.DataFrame([[1.0, 2.0]], columns=["a", "a"])])
def test_a_frame_arrow_cannot_hold_is_a_data_error(frame):
    with pytest.raises(DataError):
        normcli.fit(frame)


def test_numpy_scalars_as_options_are_saved_as_plain_json(tmp_path):
    """Options given as NumPy scalars or tuples are stored as JSON numbers and lists."""
    import json

    df = pd.DataFrame({"a": [1.0, 2.0, 4.0, 8.0]})
    for method, given, plain in (
            ("zscore", {"ddof": np.int64(1), "eps": np.float32(0.5), "fill_missing": np.bool_(True)},
             {"ddof": 1, "eps": 0.5, "fill_missing": True}),
            ("minmax", {"range": (np.float64(-1), np.int32(1))}, {"range": [-1.0, 1.0]}),
            ("robust", {"quantile_range": np.array([10, 90])}, {"quantile_range": [10.0, 90.0]})):
        path = tmp_path / f"{method}.json"
        normcli.fit(df, method, **given).save(str(path))
        options = json.loads(path.read_text())["columns"]["a"]["options"]
        assert {k: options[k] for k in plain} == plain
        assert all(type(options[k]) is type(v) for k, v in plain.items())


@pytest.mark.parametrize("options, message", [
    ({"ddof": -1}, "--ddof must be 0 or 1"),
    ({"ddof": 2}, "--ddof must be 0 or 1"),
    ({"ddof": 0.5}, "--ddof must be 0 or 1"),
    ({"ddof": True}, "--ddof must be 0 or 1"),
    ({"ddof": 1.0}, "--ddof must be 0 or 1"),
    ({"constant": "bogus"}, "--constant must be one of scale1, zero, passthrough, error"),
    ({"eps_mode": "outside"}, "--eps-mode must be one of inside, std"),
    ({"clip": "yes"}, "--clip takes true or false"),
    ({"fill_missing": 1}, "--fill-missing takes true or false"),
    ({"gamma": "2"}, "--gamma takes finite numbers"),
    ({"dof": 1}, "unknown option 'dof'"),
    ({"range": [-1e308, 1e308]}, "--range needs b - a within the float64 range"),
    ({"range": 1}, "--range takes two numbers a,b"),
    ({"range": (0, 1, 2)}, "--range takes two numbers a,b"),
    ({"quantile_range": 50}, "--quantile-range takes two numbers a,b"),
    ({"sketch_k": 3}, "--sketch-k must be between 8 and 65535"),
    ({"sketch_k": 10**6}, "--sketch-k must be between 8 and 65535"),
])
def test_fit_refuses_what_the_command_line_refuses(tmp_path, options, message):
    """An option value the CLI refuses is a UsageError from the API too, rather than numbers
    from a misread option, or a stats file that load() then refuses."""
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0]})
    with pytest.raises(UsageError, match=message):
        normcli.fit(frame, **options)
    csv = tmp_path / "a.csv"
    frame.to_csv(csv, index=False)
    with pytest.raises(UsageError, match=message):
        normcli.fit(str(csv), **options)


@pytest.mark.parametrize("methods, options, message", [
    (["layer"], {"ddof": 1}, r"^--ddof is an option of zscore, which this fit does not use \(methods: layer\)$"),
    (["maxabs"], {"range": (0, 5)}, r"^--range is an option of minmax, which this fit does not use \(methods: maxabs\)$"),
    (["zscore"], {"clip": True}, r"^--clip is an option of minmax, which"),
    (["layer"], {"fill_missing": True}, r"^--fill-missing is an option of zscore, minmax, maxabs and robust, none of which"),
    (["robust"], {"eps_mode": "std"}, r"^--eps-mode is an option of layer, which"),
])
def test_fit_refuses_an_option_no_method_of_the_fit_reads(methods, options, message):
    """Ignored, an option would fit something other than what was asked (``layer`` has no ddof)."""
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [3.0, 5.0, 6.0]})
    with pytest.raises(UsageError, match=message):
        normcli.fit(frame, methods, **options)


def test_an_option_read_by_one_method_of_the_fit_is_taken():
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [3.0, 5.0, 6.0]})
    stats = normcli.fit(frame, ["minmax:a", "zscore"], ddof=1)
    assert stats.transform(frame)["b"].tolist() == pytest.approx(((frame.b - frame.b.mean()) / frame.b.std(ddof=1)).tolist(), rel=1e-15)


@pytest.mark.parametrize("name", ["fill_mising", "ddof", "bogus"])
def test_transform_takes_only_the_options_it_overrides(name):
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0]})
    with pytest.raises(UsageError, match=f"transform takes no option '{name}'"):
        normcli.fit(frame).transform(frame, **{name: True})


def test_columns_and_exclude_take_one_name_as_a_string():
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [1.0, 3.0, 5.0], "ab": [2.0, 5.0, 9.0]})
    assert list(normcli.fit(frame, columns="ab").columns) == ["ab"]
    assert list(normcli.fit(frame, exclude="ab").columns) == ["a", "b"]


def test_fit_keeps_sketches_when_asked(tmp_path):
    """sketch=True keeps every column's sketch, as the CLI's --sketch: exact at this size, its
    quantiles are those of a sketch of the same values, after a save and load too."""
    import datasketches

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=150), "b": rng.exponential(size=150)})
    plain = normcli.fit(frame)
    assert all(c.stats.sketch is None for c in plain.columns.values())
    kept = normcli.fit(frame, sketch=True)
    kept.save(tmp_path / "s.json")
    loaded = normcli.load(str(tmp_path / "s.json"))
    for name in frame:
        sk = loaded.columns[name].stats.sketch
        assert sk is not None and sk.n == len(frame) and not sk.is_estimation_mode()
        reference = datasketches.kll_doubles_sketch(200)
        reference.update(frame[name].to_numpy().copy())
        for q in (0.0, 0.1, 0.5, 0.9, 1.0):
            assert sk.get_quantile(q) == reference.get_quantile(q)


def test_columns_of_a_frame_with_integer_labels_are_named_by_their_labels():
    """fit names a frame's columns by their labels' text, so 0 names the column labelled 0."""
    frame = pd.DataFrame(np.arange(12.0).reshape(4, 3) ** 2)
    assert list(normcli.fit(frame, columns=[0, 2]).columns) == ["0", "2"]
    assert list(normcli.fit(frame, exclude=[0]).columns) == ["1", "2"]
    grouped = pd.DataFrame({7: [1, 1, 2, 2], "x": [1.0, 2.0, 3.0, 5.0]})
    stats = normcli.fit(grouped, group_by=7)
    expected = grouped.groupby(7)["x"].transform(lambda v: (v - v.mean()) / v.std(ddof=0))
    np.testing.assert_allclose(stats.transform(grouped)["x"], expected, rtol=1e-15)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("kind", ["frame", "table"])
@pytest.mark.parametrize("rows, bad", [(4, [1, 3]), (3 * BATCH_ROWS, [BATCH_ROWS + 5, BATCH_ROWS + 9, 2 * BATCH_ROWS])])
def test_transform_names_the_first_value_it_cannot_read_as_numbers_and_its_row(rows, bad, kind, inverse):
    """As fit names a text column's first value that is not a number: the first, by its row as
    df.iloc counts it, in whichever batch it lies (Arrow's cast names some failing value)."""
    stats = normcli.fit(pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [1.0, 3.0, 5.0]}))
    b = [str(i % 7) for i in range(rows)]
    for i, row in enumerate(bad):
        b[row] = f"x{i}"
    data = pd.DataFrame({"a": np.ones(rows), "b": b}, index=np.arange(rows) * 10 + 3)  # labels are not rows
    if kind == "table":
        data = pa.Table.from_pandas(data, preserve_index=False)
    with pytest.raises(DataError) as e:
        normcli.transform(stats, data, inverse=inverse)
    assert str(e.value) == f"column 'b': value 'x0' on row {bad[0]} (counting from 0) is not a number"


@pytest.mark.parametrize("values, kind", [
    ([True, False, True], "bool"),
    (pd.to_datetime(["2024-01-01"] * 3), r"timestamp\["),
    (pd.to_timedelta([1, 2, 3], unit="s"), r"duration\["),
    (pd.period_range("2024-01-01", periods=3, freq="D"), "extension<pandas.period"),
])
def test_transform_refuses_a_fitted_column_that_holds_no_numbers(values, kind):
    """bool casts to 1.0 and 0.0, a pandas Period to its ordinal, but neither is numbers (fit
    refuses them); a timestamp has no cast. The message names the type, not Arrow's cast."""
    stats = normcli.fit(pd.DataFrame({"a": [1.0, 2.0, 4.0]}))
    with pytest.raises(DataError, match=rf"^cannot read column 'a' as numbers: it holds {kind}.* values$"):
        stats.transform(pd.DataFrame({"a": values}))


def test_an_empty_record_batch_comes_back_as_a_record_batch():
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0], "s": ["x", "y", "z"]})
    stats = normcli.fit(frame)
    for rows in (frame.iloc[:0], frame):
        batch = pa.RecordBatch.from_pandas(rows, preserve_index=False)
        out = stats.transform(batch)
        assert isinstance(out, pa.RecordBatch) and out.num_rows == len(rows)
        assert out.schema.names == ["a", "s"]


def test_a_float_label_names_one_column_and_a_bad_one_says_which():
    """A label that is neither text nor a list is one name (its text), as a frame's labels are:
    group_by=3.5 names the column labelled 3.5, and is "not in the input" where there is none."""
    frame = pd.DataFrame({3.5: ["p", "p", "q", "q"], "x": [1.0, 2.0, 3.0, 5.0]})
    stats = normcli.fit(frame, group_by=3.5)
    expected = frame.groupby(3.5)["x"].transform(lambda v: (v - v.mean()) / v.std(ddof=0))
    np.testing.assert_allclose(stats.transform(frame)["x"], expected, rtol=1e-15)
    with pytest.raises(DataError, match="column '2.5' is not in the input"):
        normcli.fit(frame, group_by=2.5)


@pytest.mark.parametrize("decimals", [2.5, "2", True, -1, 16])
def test_transform_refuses_decimals_that_are_not_a_whole_number_of_places(decimals):
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0]})
    with pytest.raises(UsageError, match="--decimals must be a whole number between 0 and 15"):
        normcli.fit(frame).transform(frame, decimals=decimals)


@pytest.mark.parametrize("labels", [["a", "a", "s"], [1, "1", "s"]])
def test_transform_refuses_a_frame_where_a_fitted_name_means_two_columns(labels):
    """Which of two columns named alike (or labelled 1 and "1") would be normalized is not for
    transform to guess; fit refuses such a frame too. A duplicate pass-through column is fine."""
    stats = normcli.fit(pd.DataFrame({str(labels[0]): [1.0, 2.0, 4.0]}))
    frame = pd.DataFrame([[1.0, 2.0, "x"], [3.0, 4.0, "y"]], columns=labels)
    with pytest.raises(DataError, match=f"the DataFrame has two columns named '{labels[0]}'"):
        stats.transform(frame)
    passing = pd.DataFrame([[1.0, "x", "y"], [3.0, "z", "w"]], columns=["a", "s", "s"])
    out = normcli.fit(pd.DataFrame({"a": [1.0, 2.0, 4.0]})).transform(passing)
    assert out.iloc[:, 1:].equals(passing.iloc[:, 1:])


def test_fit_reads_no_column_it_leaves_out():
    """A column Arrow cannot hold (complex numbers) does not block a fit that leaves it out,
    by name or, being no column of integers or floats, by default."""
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0], "z": [1j, 2j, 3j]})
    for stats in (normcli.fit(frame, exclude="z"), normcli.fit(frame, columns=["a"]), normcli.fit(frame)):
        assert list(stats.columns) == ["a"]
        np.testing.assert_allclose(stats.transform(frame)["a"], (frame.a - frame.a.mean()) / frame.a.std(ddof=0),
                                   rtol=1e-15)


def test_inverse_refuses_a_column_transformed_with_gamma_0(tmp_path):
    """gamma 0 maps every value to beta: nothing to invert, so a UsageError rather than NaN."""
    from tests.conftest import run_cli

    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [3.0, 5.0, 9.0]})
    stats = normcli.fit(frame, gamma=0.0)
    np.testing.assert_array_equal(stats.transform(frame)[["a", "b"]].to_numpy(), 0.0)
    with pytest.raises(UsageError, match="column 'a' was transformed with gamma 0, which cannot be inverted"):
        stats.inverse(frame)
    frame.to_csv(tmp_path / "d.csv", index=False)
    stats.save(tmp_path / "s.json")
    r = run_cli("inverse", tmp_path / "d.csv", "--stats", tmp_path / "s.json", "-o", tmp_path / "o.csv")
    assert r.code == 2 and r.err.startswith("Error: column 'a' was transformed with gamma 0"), r.err
    assert not (tmp_path / "o.csv").exists()


def test_a_sparse_column_is_a_data_error_unless_left_out():
    """pyarrow cannot hold a sparse pandas column: a DataError naming it, not a TypeError; a fit
    that leaves it out reads it not at all, and transform passes it through untouched."""
    frame = pd.DataFrame({"x": [1.0, 2.0, 4.0], "sp": pd.arrays.SparseArray([0.0, 1.0, 0.0])})
    with pytest.raises(DataError, match=r"^cannot read column 'sp' of the DataFrame: a sparse column \(Sparse\[float64, .*\]\) is not supported"):
        normcli.fit(frame)
    stats = normcli.fit(frame, exclude="sp")
    out = stats.transform(frame)
    np.testing.assert_allclose(out["x"], (frame.x - frame.x.mean()) / frame.x.std(ddof=0), rtol=1e-15)
    assert out["sp"].equals(frame["sp"])
    with pytest.raises(DataError, match="column 'sp'"):
        normcli.fit(pd.DataFrame({"sp": [1.0, 2.0, 4.0]})).transform(frame)


def test_api_arguments_of_the_wrong_kind_are_usage_errors(tmp_path):
    """A method that is not a spec, a merge of something that is not statistics, and output= for
    a frame (which is returned, not written) each say so, rather than a TypeError or nothing."""
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0]})
    stats = normcli.fit(frame)
    for method in (None, ["zscore", 3], 3):
        with pytest.raises(UsageError, match="method must be a method spec or a list of them"):
            normcli.fit(frame, method)
    with pytest.raises(UsageError, match="merge takes fitted statistics or stats file paths, not int"):
        normcli.merge(stats, 3)
    with pytest.raises(UsageError, match="output= is for a path"):
        stats.transform(frame, output=str(tmp_path / "x.csv"))
    assert not (tmp_path / "x.csv").exists()
    for option in ({"fmt": "tsv"}, {"delimiter": ";"}):  # how to read a file: a frame is no file
        with pytest.raises(UsageError, match=f"^{next(iter(option))}= is for a path"):
            normcli.fit(frame, **option)
        with pytest.raises(UsageError, match=f"^{next(iter(option))}= is for a path"):
            normcli.fit(pa.table(frame), **option)


def test_the_api_warns_about_constant_and_empty_columns_and_unseen_groups_at_the_callers_line():
    """The CLI's warnings, as Python warnings that point at the line that called normcli (so
    that the default filter, once per location, does not hide later calls)."""
    import inspect
    import warnings

    here = inspect.currentframe()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        normcli.fit(pd.DataFrame({"a": [3.0, 3.0, 3.0], "v": [1.0, 2.0, 4.0]})); line = here.f_lineno  # noqa: E702
        normcli.fit(pd.DataFrame({"a": [np.nan, np.nan], "v": [1.0, 2.0]}), columns=["a", "v"])
        grouped = normcli.fit(pd.DataFrame({"g": ["a", "b"], "x": [1.0, 2.0]}), group_by="g")
        grouped.transform(pd.DataFrame({"g": ["c"], "x": [1.0]}))
        normcli.transform(grouped, pd.DataFrame({"g": ["c"], "x": [1.0]}))
    got = [(w.category, w.filename, w.lineno - line, str(w.message)) for w in caught]
    assert got == [
        (UserWarning, __file__, 0, "column 'a' is constant (policy scale1)"),
        (UserWarning, __file__, 1, "column 'a' has no values: fitted as constant (policy scale1)"),
        (UserWarning, __file__, 2, "column 'x' is constant in 2 of 2 groups (policy scale1)"),
        *[(UserWarning, __file__, i, "1 rows belong to groups not seen in fit (e.g. g='c'); they were normalized "
           "with the overall statistics (unseen_group='global')") for i in (3, 4)]]


def test_layer_takes_one_gamma_and_beta_for_every_column_in_the_cli_and_the_api(tmp_path):
    """One number for every column the row-wise method spans, or one per column, as zscore's
    --gamma: the CLI and the API agree (a wrong count is the same UsageError in both)."""
    import json

    from conftest import run_cli

    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 3))
    df = pd.DataFrame(x, columns=list("abc"))
    df.to_csv(tmp_path / "l.csv", index=False)
    r = run_cli("fit", tmp_path / "l.csv", "--method", "layer:a,b,c", "--gamma", "2", "--beta", "0.5",
                "-o", tmp_path / "s.json")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "s.json").read_text())["rows"][0]["options"]["gamma"] == [2.0, 2.0, 2.0]
    want = layer_reference(x, 1e-5, np.full(3, 2.0), np.full(3, 0.5))
    for gamma in (2.0, [2.0], 2):
        got = normcli.fit(df, "layer:a,b,c", gamma=gamma, beta=0.5).transform(df).to_numpy()
        np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)
    r = run_cli("fit", tmp_path / "l.csv", "--method", "layer:a,b,c", "--gamma", "1,2")
    assert r.code == 2 and r.err == "Error: --gamma has 2 values but layer spans 3 columns\n", r.err
    with pytest.raises(UsageError, match=r"^--gamma has 2 values but layer spans 3 columns$"):
        normcli.fit(df, "layer:a,b,c", gamma=[1.0, 2.0])
    with pytest.raises(UsageError, match=r"^--gamma takes finite numbers, got '2' \(not a number type\)$"):
        normcli.fit(df, "layer:a,b,c", gamma="2")


def test_a_frame_column_arrow_cannot_hold_is_named_or_left_out():
    """A column that is not integers or floats is not fitted by default, whatever its type (a
    complex one included), and one that cannot be read is named in one plain message."""
    x = np.array([1.0, 2.0, 4.0])
    df = pd.DataFrame({"a": x, "c": x * 1j})
    stats = normcli.fit(df)
    assert list(stats.columns) == ["a"]
    out = stats.transform(df)
    np.testing.assert_allclose(out["a"], (x - x.mean()) / x.std(), rtol=TOL)
    assert out["c"].equals(df["c"])
    with pytest.raises(DataError, match=r"^cannot read column 'c' of the DataFrame: complex numbers are not supported$"):
        normcli.fit(df, "zscore:c")
    with pytest.raises(DataError, match=r"^cannot read column 'a' of the DataFrame: Could not convert 'x' with type str"):
        stats.transform(pd.DataFrame({"a": pd.Series([1, "x", None, 2.0], dtype=object)}))


@pytest.mark.parametrize("group_by", [(), "g"])
def test_fill_missing_is_the_normalized_exact_mean(group_by):
    """A null becomes the map of the exact mean: 0 for zscore (beta with gamma/beta), even on
    offset data whose mean needs its low part; for minmax the exact mean's place in the range."""
    from fractions import Fraction

    rng = np.random.default_rng(2)
    x = 1e9 + 1e-3 * rng.standard_normal(600)
    frame = pd.DataFrame({"g": np.repeat(["p", "q"], 300), "x": x})
    frame.loc[[5, 305], "x"] = np.nan
    zs = normcli.fit(frame, "zscore", columns=["x"], group_by=group_by, fill_missing=True).transform(frame)
    assert zs["x"][[5, 305]].tolist() == [0.0, 0.0]
    zb = normcli.fit(frame, "zscore", columns=["x"], group_by=group_by, fill_missing=True,
                     gamma=2.0, beta=0.25).transform(frame)
    assert zb["x"][[5, 305]].tolist() == [0.25, 0.25]
    mm = normcli.fit(frame, "minmax", columns=["x"], group_by=group_by, fill_missing=True).transform(frame)
    parts = [frame[frame.g == k] for k in ("p", "q")] if group_by else [frame, frame]
    for part, row in zip(parts, (5, 305)):
        v = part["x"].dropna().to_numpy()
        mean = sum(map(Fraction, v)) / len(v)
        expected = float((mean - Fraction(v.min())) / (Fraction(v.max()) - Fraction(v.min())))
        assert abs(mm["x"][row] - expected) <= np.spacing(expected)


@pytest.mark.parametrize("method", ["zscore", "minmax", "maxabs", "robust"])
@pytest.mark.parametrize("constant", ["scale1", "zero", "passthrough"])
def test_fill_missing_has_no_value_for_a_column_or_group_fitted_on_none(method, constant):
    """A column (or a group) fitted on no value has no centre: --fill-missing leaves its nulls
    null (the README: its empty fields stay empty) and fills the others; SQL agrees."""
    train = pd.DataFrame({"g": ["p", "p", "q", "q"], "a": [1.0, 2.0, 4.0, 8.0], "b": [np.nan, np.nan, 3.0, 5.0],
                          "e": [np.nan] * 4})
    new = pd.DataFrame({"i": range(4), "g": ["p", "q", "p", "q"], "a": [np.nan, 2.0, 3.0, np.nan],
                        "b": [np.nan, np.nan, 7.0, 1.0], "e": [np.nan, 2.5, np.nan, -1.0]})
    opts = dict(columns=["a", "b", "e"], fill_missing=True, constant=constant)
    plain = normcli.fit(train, method, **opts)
    out = plain.transform(new)
    assert out["e"].isna().tolist() == [True, False, True, False]  # nothing to fill with
    kept = {"scale1": [2.5, -1.0], "zero": [0.0, 0.0], "passthrough": [2.5, -1.0]}[constant]
    assert out["e"][[1, 3]].tolist() == kept  # values of a column fitted on none: as the policy says
    centre = plain.transform(pd.DataFrame({"a": [train.a.mean()], "b": [train.b.mean()], "e": [1.0]}))
    if method in ("zscore", "minmax", "maxabs"):  # their fill is the map of the mean
        assert out["a"][[0, 3]].tolist() == [centre["a"][0]] * 2 and out["b"][0] == pytest.approx(centre["b"][0], abs=1e-15)
    grouped = normcli.fit(train, method, group_by="g", **opts)
    out = grouped.transform(new)
    assert out["b"].isna().tolist() == [True, False, False, False]  # group p's b was never seen; q's is filled
    assert out["e"].isna().tolist() == [True, False, True, False]
    duckdb = pytest.importorskip("duckdb")
    for stats in (plain, grouped):
        # with groups the SQL's rows come in no promised order
        got = duckdb.sql(stats.export("sql", dialect="duckdb", table="new")).df().sort_values("i")
        want = stats.transform(new)
        for c in ("a", "b", "e"):
            np.testing.assert_allclose(got[c].to_numpy(dtype=float), want[c].to_numpy(dtype=float), rtol=1e-12, atol=1e-300)


def test_fill_missing_of_a_column_fitted_on_none_from_the_command_line(tmp_path):
    from tests.conftest import run_cli

    (tmp_path / "e.csv").write_text("a,b\n1,\n2,\n3,\n")
    (tmp_path / "n.csv").write_text("a,b\n1,\n,5\n3,\n")
    assert run_cli("fit", tmp_path / "e.csv", "-c", "a,b", "--fill-missing", "-o", tmp_path / "s.json").code == 0
    r = run_cli("transform", tmp_path / "n.csv", "--stats", tmp_path / "s.json", "-o", tmp_path / "o.csv")
    assert r.code == 0, r.err
    a = np.array([1.0, 2.0, 3.0])
    rows = [line.split(",") for line in (tmp_path / "o.csv").read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == ["", "5.0", ""]  # b's empty fields stay empty, its value as scale1 maps it
    assert [float(r[0]) for r in rows] == [(1 - a.mean()) / a.std(), 0.0, (3 - a.mean()) / a.std()]
    r = run_cli("inverse", tmp_path / "o.csv", "--stats", tmp_path / "s.json", "-o", tmp_path / "back.csv")
    assert r.code == 0 and "('a')" in r.err and "'b'" not in r.err, r.err  # nothing of b was filled
    assert [line.split(",")[1] for line in (tmp_path / "back.csv").read_text().splitlines()[1:]] == ["", "5.0", ""]


def test_robust_quantile_range_ends_are_the_exact_minimum_and_maximum():
    """q0 and q100 are the min and max the statistics hold, not the sketch's estimate of them
    (past k values a KLL sketch estimates ends within its rank error)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(3, 2, 5000), "g": np.repeat(["a", "b"], 2500)})
    stats = normcli.fit(frame[["x"]], "robust", quantile_range=(0, 100))
    assert stats.params("x").scale == frame.x.max() - frame.x.min()
    grouped = normcli.fit(frame, "robust", columns=["x"], group_by="g", quantile_range=(0, 100))
    spans = frame.groupby("g")["x"].agg(lambda v: v.max() - v.min())
    assert grouped.params("x", grouped=True).scale.tolist() == spans.tolist()


@pytest.mark.parametrize("labels", [[("a", 1), ("b", 2)], pd.MultiIndex.from_tuples([("a", 1), ("b", 2)]),
                                    [True, False]])
def test_frames_labelled_by_tuples_or_booleans_transform_as_fitted(labels):
    """A tuple label is one column named by its text, as at transform; a label True is a column,
    not a row mask."""
    values = np.array([[1.0, 3.0], [2.0, 5.0], [4.0, 10.0], [8.0, 7.0]])
    frame = pd.DataFrame(values, columns=labels)
    stats = normcli.fit(frame)
    assert list(stats.columns) == [str(c) for c in frame.columns]
    out = stats.transform(frame)
    assert list(out.columns) == list(frame.columns)
    np.testing.assert_allclose(out.to_numpy(), StandardScaler().fit_transform(values), rtol=1e-15)
    first = list(frame.columns)[0]
    assert list(normcli.fit(frame, columns=[first]).columns) == [str(first)]


def test_a_fitted_column_without_values_stays_empty_in_the_api():
    """As the CLI does: count 0 at fit (with a warning), nulls at transform; a pandas column of
    None and an Arrow column of null type alike."""
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0], "n": [None, None, None]})
    with pytest.warns(UserWarning, match="column 'n' has no values"):
        stats = normcli.fit(frame, columns=["a", "n"])
    assert stats.transform(frame)["n"].isna().all()
    table = pa.table({"a": [1.0, 2.0, 4.0], "n": pa.nulls(3)})
    out = stats.transform(table)
    assert out["n"].null_count == 3 and out["n"].type == pa.float64()


def test_the_api_refuses_what_it_cannot_read_in_its_own_words():
    with pytest.raises(DataError, match="^cannot read column 'z' of the DataFrame: complex numbers are not supported$"):
        normcli.fit(pd.DataFrame({"a": [1.0, 2.0], "z": np.array([1 + 2j, 3 + 0j])}), columns=["a", "z"])
    for data, kind in ((pd.Series([1.0, 2.0]), "pandas.Series"), ({"a": [1.0]}, "dict")):
        with pytest.raises(UsageError, match=rf"^cannot read data of type {kind}: pass a pandas or Polars DataFrame"):
            normcli.fit(data)
    with pytest.raises(UsageError, match="^load takes the path of a stats file, not DataFrame$"):
        normcli.load(pd.DataFrame({"a": [1.0]}))


def test_tables_from_pandas_read_back_into_pandas_after_transform(tmp_path):
    """pandas' schema note is kept (the index comes back) with the normalized columns' new type:
    an Int64 column is float64 now, and pandas would cast it back to integers by the old note."""
    frame = pd.DataFrame({"i": pd.array([1, 2, None, 5], dtype="Int64"), "s": list("abcd")},
                         index=pd.Index([7, 8, 9, 10], name="k"))
    x = np.array([1.0, 2.0, 5.0])
    expected = (x - x.mean()) / x.std()
    table = pa.Table.from_pandas(frame)
    stats = normcli.fit(table, exclude=["k"])
    for back in (stats.transform(table).to_pandas(), None):
        if back is None:
            frame.to_parquet(tmp_path / "p.parquet")
            stats.transform(str(tmp_path / "p.parquet"), output=str(tmp_path / "o.parquet"))
            back = pd.read_parquet(tmp_path / "o.parquet")
        assert back.index.tolist() == [7, 8, 9, 10] and back.index.name == "k"
        assert back["s"].tolist() == list("abcd") and back["i"].dtype == np.float64
        np.testing.assert_allclose(back["i"].dropna(), expected, rtol=1e-15)
        assert back["i"].isna().tolist() == [False, False, True, False]


def test_group_by_and_exclude_none_mean_none(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [3.0, 5.0, 9.0]})
    frame.to_csv(tmp_path / "f.csv", index=False)
    for data in (frame, str(tmp_path / "f.csv")):
        stats = normcli.fit(data, group_by=None, exclude=None)
        assert list(stats.columns) == ["a", "b"] and stats.group_by == []


def test_a_frame_column_without_values_left_out_is_warned_about():
    """As the command line warns of a file's column it cannot type: not left out unsaid."""
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0], "n": [None, None, None]})
    with pytest.warns(UserWarning, match=r"^column 'n' has no values, so its type is unknown: left out"):
        stats = normcli.fit(frame)
    assert list(stats.columns) == ["a"]


@pytest.mark.parametrize("method,options", [("minmax", {"range": (-1.0, 1.0)}), ("zscore", {"beta": 2.0}),
                                            ("zscore", {"gamma": 3.0, "beta": -1.0}), ("robust", {}),
                                            ("maxabs", {})])
@pytest.mark.parametrize("grouped", [False, True])
def test_inverse_of_a_constant_column_under_the_zero_policy_is_its_value(method, options, grouped):
    """``--constant zero`` writes 0 for a constant column, whatever the range or beta: its inverse
    is the constant itself, not 0 undone through the offset (which gave 8.0 for 7.5 with range -1,1)."""
    k = 0.0 if method == "maxabs" else 7.5  # maxabs is degenerate only for a column of zeros
    frame = pd.DataFrame({"g": ["a", "a", "b", "b", "b"], "k": [k] * 5, "v": [0.0, 1.0, 2.0, 5.0, 9.0]})
    stats = normcli.fit(frame, [method], constant="zero", group_by="g" if grouped else None, **options)
    out = stats.transform(frame)
    np.testing.assert_array_equal(out["k"], 0.0)
    with pytest.warns(UserWarning, match=r"inverse cannot undo --constant zero \('k'\)"):
        back = stats.inverse(out)
    np.testing.assert_array_equal(back["k"], frame["k"])
    np.testing.assert_allclose(back["v"], frame["v"], rtol=1e-15, atol=1e-15)


def test_inverse_warns_of_clipping_and_filling_it_cannot_undo(tmp_path):
    """Values clipped and nulls filled by transform come back as the bound's original and the
    centre (by the formula: min + (max - min) * clipped, and the mean); a warning says so."""
    from tests.conftest import run_cli

    x = np.array([1.0, 2.0, 3.0, 4.0])
    pd.DataFrame({"x": x, "id": list("abcd")}).to_csv(tmp_path / "f.csv", index=False)
    (tmp_path / "n.csv").write_text("x,id\n10,p\n,q\n-3,r\n2,s\n")
    stats = tmp_path / "s.json"
    assert run_cli("fit", tmp_path / "f.csv", "-c", "x", "-m", "minmax", "--clip", "--fill-missing", "-o", stats).code == 0
    assert run_cli("transform", tmp_path / "n.csv", "--stats", stats, "-o", tmp_path / "t.csv").code == 0
    r = run_cli("inverse", tmp_path / "t.csv", "--stats", stats, "-o", tmp_path / "b.csv")
    assert r.code == 0, r.err
    assert r.err.splitlines() == [
        "warning: inverse cannot undo clipping ('x'): a clipped value comes back as its bound's original",
        "warning: inverse cannot undo --fill-missing ('x'): a filled null comes back as the centre, not null"]
    np.testing.assert_allclose(pd.read_csv(tmp_path / "b.csv")["x"], [x.max(), x.mean(), x.min(), 2.0], rtol=1e-15)


def test_a_column_left_out_that_arrow_cannot_hold_is_not_called_empty():
    """A complex column, or Python ints beyond 64 bits, left out of the fit: nothing to say of it
    (it is not a column without values); named, each is a DataError naming the column."""
    import warnings

    x = np.array([1.0, 2.0, 4.0])
    frames = [pd.DataFrame({"z": x * 1j, "x": x}),
              pd.DataFrame({"id": pd.Series([2**64 - 1, 5, -3], dtype=object), "x": x})]
    for df, left_out in zip(frames, ({}, {"exclude": "id"})):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = normcli.fit(df, **left_out)
        assert [str(w.message) for w in caught] == []
        assert list(stats.columns) == ["x"]
        np.testing.assert_allclose(stats.transform(df)["x"], (x - x.mean()) / x.std(), rtol=TOL)
    assert list(normcli.fit(frames[1], columns="x").columns) == ["x"]
    with pytest.raises(DataError, match=r"^cannot read column 'x' of the DataFrame: an integer beyond the 64-bit range$"):
        normcli.fit(frames[1][["x"]]).transform(pd.DataFrame({"x": pd.Series([2**64, 1, 2], dtype=object)}))


def test_an_infinite_value_in_a_frame_is_named_by_its_position_in_the_frame():
    x = np.zeros(70000)
    x[69999] = np.inf  # in the frame's second batch of rows
    with pytest.raises(DataError, match=r"^column 'a' holds an infinite value on row 69999 \(counting from 0\); "):
        normcli.fit(pd.DataFrame({"a": x}))


def test_a_value_that_is_not_a_number_is_named_by_its_position_in_the_frame():
    df = pd.DataFrame({"x": pd.Series([1, 2, "oops", 4, 5], dtype=object)})
    assert df["x"].iloc[2] == "oops"
    with pytest.raises(DataError, match=r"^column 'x': value 'oops' on row 2 \(counting from 0\) is not a number"):
        normcli.fit(df)


def test_a_categorical_of_numbers_is_fitted_as_its_numbers():
    # As a Parquet file holds it (and the command line fits it): the categories' values.
    df = pd.DataFrame({"a": [1.0, 2, 3, 4], "c": pd.Categorical([1.0, 2, 2, 5]),
                       "i": pd.Categorical([2**60, 3, 3, 2**60 + 1]), "t": pd.Categorical(["u", "v", "u", "v"])})
    stats = normcli.fit(df)
    assert list(stats.columns) == ["a", "c", "i"]
    out = stats.transform(df)
    want = StandardScaler().fit_transform(df[["a", "c", "i"]].astype(np.float64))
    np.testing.assert_allclose(out[["a", "c", "i"]].to_numpy(), want, rtol=TOL, atol=TOL)
    assert out["t"].equals(df["t"])
    assert list(normcli.fit(df, columns=["c"]).columns) == ["c"]


def test_save_of_something_not_a_path_is_a_usage_error():
    with pytest.raises(UsageError, match=r"^save takes the path of a stats file, not int$"):
        normcli.fit(pd.DataFrame({"a": [1.0, 2.0]})).save(3)


@pytest.mark.parametrize("options", [{"eps": [0.1]}, {"clip_sigma": [3.0]}, {"clip_sigma": (1.0, 2.0)}])
def test_an_option_of_one_number_given_a_list_is_a_usage_error(options):
    df = pd.DataFrame({"a": [1.0, 2.0, 10.0]})
    with pytest.raises(UsageError, match=r"takes one number"):
        normcli.fit(df, **options)
    if "clip_sigma" in options:
        with pytest.raises(UsageError, match=r"^--clip-sigma takes one number"):
            normcli.fit(df).transform(df, **options)


def test_a_zero_dimensional_array_is_its_number_as_an_option():
    x = np.array([1.0, 2.0, 10.0, -4.0])
    df = pd.DataFrame({"a": x})
    stats = normcli.fit(df, clip_sigma=np.array(1.0), eps=np.array(0.5))
    ref = np.clip((x - x.mean()) / np.sqrt(x.var() + 0.5), -1.0, 1.0)
    np.testing.assert_allclose(stats.transform(df)["a"], ref, rtol=TOL)
    plain = normcli.fit(df)
    np.testing.assert_allclose(plain.transform(df, clip_sigma=np.array(1.0))["a"],
                               np.clip((x - x.mean()) / x.std(), -1.0, 1.0), rtol=TOL)


def test_sketch_k_without_a_sketch_to_size_is_refused(tmp_path):
    df = pd.DataFrame({"a": [1.0, 2.0, 10.0]})
    with pytest.raises(UsageError, match=r"^--sketch-k sizes the quantile sketches of robust and --sketch, "
                                         r"neither of which this fit uses \(methods: zscore\)$"):
        normcli.fit(df, sketch_k=100)
    assert normcli.fit(df, "robust", sketch_k=100).columns["a"].stats.sketch.k == 100
    assert normcli.fit(df, sketch=True, sketch_k=100).columns["a"].stats.sketch.k == 100


def test_the_error_kinds_are_part_of_the_public_api():
    from normcli import errors

    assert (normcli.UsageError, normcli.DataError, normcli.StatsFileError, normcli.IOFailure) == (
        errors.UsageError, errors.DataError, errors.StatsFileError, errors.IOFailure)


def test_values_too_close_together_for_a_float64_variance():
    """Apart by about 1e-200, values have a variance float64 cannot hold (their squares
    underflow): minmax and maxabs scale them exactly, zscore refuses them unless an eps scales
    them instead, and they are not a constant column."""
    import warnings
    from fractions import Fraction

    x = np.array([1e-200, 2e-200, 3e-200, 7e-201])
    df = pd.DataFrame({"x": x, "g": ["a", "a", "b", "b"]})
    lo, hi = Fraction(x.min()), Fraction(x.max())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        minmax = normcli.fit(df, "minmax", columns="x").transform(df)["x"].tolist()
        maxabs = normcli.fit(df, "maxabs", columns="x").transform(df)["x"].tolist()
    assert [str(w.message) for w in caught] == []
    # (x - min) / (max - min) rounds twice: within 2 ulps of the exact value
    np.testing.assert_allclose(minmax, [float((Fraction(v) - lo) / (hi - lo)) for v in x], rtol=4.5e-16, atol=0)
    assert maxabs == [float(Fraction(v) / hi) for v in x]
    with pytest.raises(DataError, match=r"^column 'x': its values lie too close together for float64 statistics"):
        normcli.fit(df, "zscore", columns="x")
    with pytest.raises(DataError, match=r"^column 'x' in group g='b': its values lie too close together"):
        normcli.fit(df.assign(x=[1.0, 2.0, 3e-200, 7e-201]), "zscore", columns="x", group_by="g")
    eps = 1e-300
    got = normcli.fit(df, "zscore", columns="x", eps=eps).transform(df)["x"].to_numpy()
    np.testing.assert_allclose(got, (x - x.mean()) / np.sqrt(eps), rtol=1e-12)  # the variance is nothing beside eps
    same = pd.DataFrame({"x": [1e-200, 1e-200]})
    with pytest.warns(UserWarning, match="is constant"):
        assert normcli.fit(same).transform(same)["x"].tolist() == [0.0, 0.0]


def test_minmax_maps_onto_its_range_exactly_for_every_range():
    """The fitted min and max map to a and b exactly and every fitted value lies within [a, b],
    for ranges whose b - a + a does not round back to b (about one in six of these)."""
    x = np.linspace(0.0, 10.0, 41)
    df = pd.DataFrame({"x": x})
    for a10 in range(-100, 101, 13):
        for width10 in range(1, 120, 17):
            a, b = a10 / 10, (a10 + width10) / 10
            for group_by in ((), "g"):
                frame = df.assign(g="k")
                y = normcli.fit(frame, "minmax", columns="x", range=(a, b), group_by=group_by).transform(frame)["x"]
                assert (y.iloc[0], y.iloc[-1]) == (a, b), (a, b)
                assert ((y >= a) & (y <= b)).all(), (a, b)
                # and the map is the formula's, to rounding
                np.testing.assert_allclose(y, a + (x - x.min()) / np.ptp(x) * (b - a), rtol=0, atol=4 * np.spacing(max(abs(a), abs(b))))


@pytest.mark.parametrize("method, override, message", [
    ("zscore", {"clip": True}, r"^--clip is an option of minmax, which the fitted model does not use \(methods: zscore\)$"),
    ("minmax", {"clip_sigma": 2.0}, r"^--clip-sigma is an option of zscore and robust, none of which the fitted model uses"),
    ("layer", {"fill_missing": True}, r"^--fill-missing is an option of zscore, minmax, maxabs and robust, none of which"),
])
def test_a_transform_option_no_fitted_method_reads_is_refused(tmp_path, method, override, message):
    """As fit refuses it: ignored, it would apply something other than what was asked."""
    from tests.conftest import run_cli

    df = pd.DataFrame({"a": [1.0, 2.0, 10.0], "b": [3.0, 5.0, 6.0]})
    stats = normcli.fit(df, method)
    with pytest.raises(UsageError, match=message):
        stats.transform(df, **override)
    src, path = tmp_path / "d.csv", tmp_path / "s.json"
    df.to_csv(src, index=False)
    stats.save(str(path))
    flag = "--" + next(iter(override)).replace("_", "-")
    r = run_cli("transform", src, "--stats", path, flag, *([] if flag != "--clip-sigma" else ["2"]))
    assert r.code == 2 and r.out == b"", r.err
    assert re.match(message.replace("^", "^Error: "), r.err), r.err
    with pytest.raises(UsageError, match=r"^the inverse takes no option"):
        normcli.fit(df).transform(df, inverse=True, clip_sigma=1.0)


def test_an_empty_selection_and_the_same_statistics_twice_are_refused(tmp_path):
    from tests.conftest import run_cli

    df = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [3.0, 5.0, 6.0]})
    with pytest.raises(UsageError, match=r"^--columns names no column"):
        normcli.fit(df, columns=[])
    df.to_csv(tmp_path / "d.csv", index=False)
    r = run_cli("fit", tmp_path / "d.csv", "--columns", "")
    assert r.code == 2 and r.err.startswith("Error: --columns names no column"), r.err
    stats = normcli.fit(df)
    from normcli.errors import StatsFileError
    with pytest.raises(StatsFileError, match=r"the same statistics are given twice"):
        normcli.merge(stats, stats)
    np.testing.assert_allclose(normcli.merge(stats, normcli.fit(df)).columns["a"].stats.m2,
                               ((np.r_[df.a, df.a] - np.r_[df.a, df.a].mean()) ** 2).sum(), rtol=1e-15)


def test_stats_compare_by_what_they_fitted():
    """Two Stats are equal when their stats files would be, but for when and by which version
    they were made: grouped ones too (their arrays made == raise), and across save and load."""
    import copy
    import pickle
    import tempfile

    df = pd.DataFrame({"g": ["a", "b", "a", "b", "c"], "x": [1.0, 2.0, 4.0, 8.0, 3.0], "y": [0.5, 1.5, 1.0, 2.0, 9.0]})
    for group_by in ((), "g"):
        a, b = normcli.fit(df, group_by=group_by), normcli.fit(df, group_by=group_by)
        b.info["created"] = "2001-01-01T00:00:00+00:00"
        assert a == b and not a != b
        with tempfile.TemporaryDirectory() as d:
            a.save(f"{d}/s.json")
            assert normcli.load(f"{d}/s.json") == a
        assert pickle.loads(pickle.dumps(a)) == a and copy.deepcopy(a) == a
        other = normcli.fit(df.assign(x=df.x * 2), group_by=group_by)
        assert a != other and other.to_json() != a.to_json()
        assert a != normcli.fit(df, "minmax", group_by=group_by)  # same data, another method
    assert (a == 3) is False
    with pytest.raises(TypeError):
        hash(a)


def test_stats_show_in_one_short_line_what_was_fitted():
    """repr (a notebook's cell, a log line) names the methods, the first columns, the rows and
    the groups; its length does not grow with the columns or the groups."""
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"k": rng.integers(0, 10_000, 20_000).astype(str), "x": rng.normal(size=20_000),
                       **{f"c{i}": rng.normal(size=20_000) for i in range(500)}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        stats = normcli.fit(df, ["zscore", "minmax:x"], group_by="k")
    groups = df["k"].nunique()
    assert repr(stats) == str(stats) == (
        f"<normcli.Stats: 501 columns (minmax 'x'; zscore 'c0', 'c1', 'c2', 'c3' and 496 more), "
        f"20,000 rows, {groups:,} groups of 'k'>")
    small = normcli.fit(pd.DataFrame({"a b": [1.0, 2.0], "y": [3.0, 5.0]}), ["zscore", "layer:a b,y"])
    assert repr(small) == "<normcli.Stats: 2 columns (layer 'a b', 'y'), 2 rows>"
    with pytest.warns(UserWarning, match="constant"):
        one = normcli.fit(pd.DataFrame({"k": ["a"], "x": [1.0]}), group_by="k")
    assert repr(one) == "<normcli.Stats: 1 column (zscore 'x'), 1 row, 1 group of 'k'>"


def test_transform_refuses_what_is_not_stats_and_an_output_that_is_not_a_path(tmp_path):
    df = pd.DataFrame({"x": [1.0, 2.0, 4.0]})
    stats = normcli.fit(df)
    for bad in ("stats.json", None, df):
        with pytest.raises(UsageError, match=r"^transform takes fitted Stats \(normcli.fit or normcli.load\), not a "):
            normcli.transform(bad, df)
    df.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(UsageError, match=r"^output= takes the path of the output, not int$"):
        stats.transform(str(tmp_path / "d.csv"), output=5)
    with pytest.raises(UsageError, match=r"^the inverse takes no option 'foo' \(it undoes the map fitted\)$"):
        stats.inverse(df, foo=1)
    # nor rounding or narrowing of what it restores: the command line's inverse has neither option
    t = stats.transform(df)
    for option in ({"decimals": 2}, {"dtype": "float32"}):
        with pytest.raises(UsageError, match=rf"^the inverse takes no option '{next(iter(option))}' "):
            stats.inverse(t, **option)
    np.testing.assert_allclose(stats.inverse(t, dtype="float64", decimals=None)["x"], df["x"], rtol=1e-15)


def test_a_frame_of_another_library_is_refused_without_being_queried():
    """A Polars LazyFrame is refused with the one UsageError, before anything asks it for its
    columns (Polars warns that resolving them costs a query)."""
    pl = pytest.importorskip("polars")
    lazy = pl.LazyFrame({"x": [1.0, 2.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UsageError, match=r"^cannot read data of type polars.LazyFrame: "
                                             r"pass a pandas or Polars DataFrame"):
            normcli.fit(lazy, columns=["x"])


def test_a_polars_frame_is_fitted_and_transformed_into_a_polars_frame():
    """A Polars DataFrame is read as the Arrow table it holds: the same statistics as the pandas
    frame of the same data, scikit-learn's z-scores, and its other columns untouched in place."""
    pl = pytest.importorskip("polars")
    rng = np.random.default_rng(8)
    n = 2_000
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(n)], "x": rng.normal(5, 2, n),
                          "k": rng.choice(["a", "b", "c"], n), "y": rng.integers(-50, 50, n),
                          "when": pd.date_range("2024-01-01", periods=n, freq="s")})
    frame = frame.with_columns(pl.when(pl.col("y") > 40).then(None).otherwise(pl.col("x")).alias("x"))
    stats = normcli.fit(frame)
    assert stats == normcli.fit(frame.to_pandas())
    out = stats.transform(frame)
    assert isinstance(out, pl.DataFrame) and out.columns == frame.columns
    for name in ("id", "k", "when"):
        assert out[name].equals(frame[name])
    ref = StandardScaler().fit_transform(frame.select("x", "y").to_pandas().astype(float))
    got = out.select("x", "y").to_numpy()
    assert (np.isnan(got) == np.isnan(ref)).all() and out["x"].null_count() == frame["x"].null_count()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    back = stats.inverse(out)
    np.testing.assert_allclose(back["x"].to_numpy(), frame["x"].to_numpy(), rtol=1e-14, atol=1e-14)  # about 5 +- 2
    grouped = normcli.fit(frame, group_by="k")
    assert grouped == normcli.fit(frame.to_pandas(), group_by="k")
    np.testing.assert_array_equal(grouped.transform(frame)["x"].to_numpy(),
                                  grouped.transform(frame.to_pandas())["x"].to_numpy())


@pytest.mark.parametrize("method, options", [("maxabs", {}), ("zscore", {"constant": "passthrough"}),
                                             ("minmax", {"constant": "passthrough"})])
def test_inverse_keeps_the_sign_of_a_negative_zero(method, options):
    """Through a zero centre (maxabs; a constant column passed through) the inverse is a pure
    scaling or the identity, and -0.0 comes back as -0.0, as scikit-learn's MaxAbsScaler gives it."""
    from sklearn.preprocessing import MaxAbsScaler

    df = pd.DataFrame({"x": [-0.0, 2.0, -4.0, 0.0], "c": [3.0, 3.0, 3.0, 3.0]})
    if method != "maxabs":
        df = df.assign(x=[-0.0, -0.0, -0.0, -0.0])  # constant: passed through
    stats = normcli.fit(df, method, **options)
    back = stats.inverse(stats.transform(df)).to_numpy(np.float64)
    want = df.to_numpy(np.float64)
    if method == "maxabs":
        want = MaxAbsScaler().fit(df).inverse_transform(MaxAbsScaler().fit(df).transform(df))
    np.testing.assert_array_equal(back, want)
    np.testing.assert_array_equal(np.signbit(back), np.signbit(want))


def _row_exact(method: str, row: list[float], eps: float = 0.0, eps_mode: str = "inside") -> list[float]:
    """The row-wise formula in exact rationals, with the square root taken to 80 digits."""
    import decimal
    from fractions import Fraction

    def dec(q: Fraction) -> decimal.Decimal:
        return decimal.Decimal(q.numerator) / decimal.Decimal(q.denominator)

    with decimal.localcontext() as ctx:
        ctx.prec, ctx.Emax, ctx.Emin = 80, 10**6, -10**6
        xs = [Fraction(v) for v in row]
        if method == "layer":
            mean = sum(xs) / len(xs)
            var = sum((v - mean) ** 2 for v in xs) / len(xs)
            den = dec(var + Fraction(eps)).sqrt() if eps_mode == "inside" else dec(var).sqrt() + dec(Fraction(eps))
            return [float(dec(v - mean) / den) for v in xs]
        norm = dec(sum(v * v for v in xs)).sqrt() if method == "l2" else dec(sum(abs(v) for v in xs))
        return [float(dec(v) / norm) for v in xs]


@pytest.mark.parametrize("row", [[1e300, -1e300, 0.0], [1.5e308, 1.6e308, 1e308], [1e-300, 3e-300, 2e-300],
                                 [5e-324, 1e-323, 0.0], [1e200, 3.0, -2e199], [1.0, 2.0, 3.5]])
def test_row_methods_hold_rows_whose_squares_overflow_or_underflow(row):
    """Layer, l1 and l2 of a row of magnitudes near the ends of float64 are those of the
    formula in exact arithmetic (their squares or sums overflowed to 0 or NaN outputs, exit 0)."""
    from normcli import methods as M

    x = np.array([row])
    cases = [("layer", {"eps": eps, "eps_mode": mode}) for eps in (1e-5, 0.0) for mode in ("inside", "std")]
    for method, options in cases + [("l1", {}), ("l2", {})]:
        if method == "layer" and options["eps"] and max(map(abs, row)) < 1e-200:
            continue  # the exact answer is about 1e-298: a subnormal result, compared below
        got = M.row_apply(method, x, options)[0]
        want = _row_exact(method, row, **options)
        # within two ulps of the row's largest output: a deviation from the mean cancels digits
        np.testing.assert_allclose(got, want, rtol=4.5e-16, atol=4.5e-16 * max(map(abs, want)),
                                   err_msg=f"{method} {options}")
    tiny = M.row_apply("layer", np.array([[1e-300, 3e-300, 2e-300]]), {"eps": 1e-5, "eps_mode": "inside"})[0]
    want = _row_exact("layer", [1e-300, 3e-300, 2e-300], 1e-5)  # the middle one is -1.7e-314: 0 within the row's scale
    np.testing.assert_allclose(tiny, want, rtol=1e-12, atol=1e-15 * max(map(abs, want)))
