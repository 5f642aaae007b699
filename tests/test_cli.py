"""The core commands through the real CLI (a subprocess), asserted against independent references."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.preprocessing import MinMaxScaler, StandardScaler

import normcli
from conftest import SAMPLE, run_cli
from reliability.helpers import assert_error

NUMERIC = ["units", "price", "sales", "temperature"]


def read_csv_text(path) -> pd.DataFrame:
    """Every column as text, exactly as in the file (for pass-through comparisons)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture
def stats_file(tmp_path, sample_csv):
    out = tmp_path / "stats.json"
    r = run_cli("fit", sample_csv, "-o", out)
    assert r.code == 0, r.err
    return out


def test_fit_matches_standard_scaler(stats_file, sample_csv):
    doc = json.loads(stats_file.read_text())
    assert list(doc["columns"]) == NUMERIC  # numeric columns only, in data order
    df = pd.read_csv(sample_csv)
    for name in NUMERIC:
        x = df[name].to_numpy(dtype=float)
        st = doc["columns"][name]["stats"]
        valid = x[~np.isnan(x)]
        assert st["count"] == valid.size and st["nulls"] == x.size - valid.size
        assert st["mean"] + st["mean_lo"] == pytest.approx(valid.mean(), rel=1e-14)
        assert st["m2"] / st["count"] == pytest.approx(valid.var(), rel=1e-12)
        assert (st["min"], st["max"]) == (valid.min(), valid.max())


@pytest.mark.parametrize("inp,out", [("sales.csv", "o.csv"), ("sales.parquet", "o.parquet"),
                                     ("sales.csv", "o.parquet"), ("sales.parquet", "o.tsv")])
def test_transform_equals_standard_scaler_and_keeps_other_columns(tmp_path, stats_file, inp, out):
    target = tmp_path / out
    r = run_cli("transform", SAMPLE / inp, "--stats", stats_file, "-o", target)
    assert r.code == 0, r.err
    assert r.out == b""
    got = pq.read_table(target).to_pandas() if out.endswith(".parquet") else pd.read_csv(target, sep="," if out.endswith(".csv") else "\t")
    src = pd.read_csv(SAMPLE / "sales.csv")
    assert list(got.columns) == list(src.columns)
    ref = StandardScaler().fit_transform(src[NUMERIC])
    np.testing.assert_allclose(got[NUMERIC].to_numpy(float), ref, rtol=1e-12, atol=1e-12)
    for name in ("order_id", "date", "store"):
        assert got[name].astype(str).tolist() == src[name].astype(str).tolist()


def test_csv_pass_through_is_byte_exact(tmp_path, stats_file, sample_csv):
    out = tmp_path / "o.csv"
    assert run_cli("transform", sample_csv, "--stats", stats_file, "-o", out).code == 0
    a, b = read_csv_text(sample_csv), read_csv_text(out)
    for name in ("order_id", "date", "store"):
        assert b[name].tolist() == a[name].tolist()
    # the whole line structure too: only the fitted fields differ
    src_lines = sample_csv.read_bytes().split(b"\n")
    out_lines = out.read_bytes().split(b"\n")
    assert len(src_lines) == len(out_lines) and src_lines[0] == out_lines[0]
    assert [l.split(b",")[:3] for l in src_lines] == [l.split(b",")[:3] for l in out_lines]


def test_tricky_text_passes_through_byte_for_byte(tmp_path):
    text = (b'zip,day,x,note,empty\n'
            b'007,2012/01/01,1.5,"a, b",\n'
            b'0042,2012/01/02,2.5,"say ""hi""",z\n'
            b'00,31.12.2012,-1,"two\nlines",\n'
            b'1e3,2012-01-04,4,NA,null\n')
    src = tmp_path / "t.csv"
    src.write_bytes(text)
    stats, out = tmp_path / "s.json", tmp_path / "o.csv"
    assert run_cli("fit", src, "--columns", "x", "-o", stats).code == 0
    r = run_cli("transform", src, "--stats", stats, "-o", out)
    assert r.code == 0, r.err
    got = out.read_bytes()
    x = np.array([1.5, 2.5, -1.0, 4.0])
    z = (x - x.mean()) / x.std()
    expected = (b'zip,day,x,note,empty\n'
                b'007,2012/01/01,' + repr(float(z[0])).encode() + b',"a, b",\n'
                b'0042,2012/01/02,' + repr(float(z[1])).encode() + b',"say ""hi""",z\n'
                b'00,31.12.2012,' + repr(float(z[2])).encode() + b',"two\nlines",\n'
                b'1e3,2012-01-04,' + repr(float(z[3])).encode() + b',NA,null\n')
    assert got == expected


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_inverse_round_trip(tmp_path, stats_file, ext):
    norm, back = tmp_path / f"n.{ext}", tmp_path / f"b.{ext}"
    assert run_cli("transform", SAMPLE / f"sales.{ext}", "--stats", stats_file, "-o", norm).code == 0
    r = run_cli("inverse", norm, "--stats", stats_file, "-o", back)
    assert r.code == 0, r.err
    read = (lambda p: pq.read_table(p).to_pandas()) if ext == "parquet" else pd.read_csv
    orig, got = read(SAMPLE / f"sales.{ext}"), read(back)
    np.testing.assert_allclose(got[NUMERIC].to_numpy(float), orig[NUMERIC].to_numpy(float), rtol=1e-12, atol=1e-12)
    assert got["order_id"].tolist() == orig["order_id"].tolist()


def test_inverse_of_row_wise_method_is_a_clear_error(tmp_path, sample_csv):
    stats = tmp_path / "l.json"
    assert run_cli("fit", sample_csv, "--method", "layer", "-o", stats).code == 0
    r = run_cli("inverse", sample_csv, "--stats", stats, "-o", tmp_path / "x.csv")
    assert r.code == 2 and r.err.startswith("Error: row-wise methods (layer) cannot be inverted")
    assert not (tmp_path / "x.csv").exists()


def test_chunk_independence(tmp_path):
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"k": [f"k{i % 7}" for i in range(20_000)], "a": rng.normal(5, 2, 20_000),
                       "b": rng.integers(-50, 50, 20_000)})
    df.loc[rng.random(20_000) < 0.05, "a"] = np.nan
    src = tmp_path / "d.csv"
    df.to_csv(src, index=False)
    outs = {}
    for block in ("200", "1000000"):
        env = {"NORMCLI_BLOCK_SIZE": block}
        s, o = tmp_path / f"s{block}.json", tmp_path / f"o{block}.csv"
        assert run_cli("fit", src, "-o", s, env=env).code == 0
        assert run_cli("transform", src, "--stats", s, "-o", o, env=env).code == 0
        outs[block] = (json.loads(s.read_text())["columns"], pd.read_csv(o))
    (small, small_out), (big, big_out) = outs["200"], outs["1000000"]
    for name in ("a", "b"):
        s, b = small[name]["stats"], big[name]["stats"]
        assert (s["count"], s["nulls"], s["min"], s["max"]) == (b["count"], b["nulls"], b["min"], b["max"])
        assert s["mean"] + s["mean_lo"] == pytest.approx(b["mean"] + b["mean_lo"], rel=1e-15)
        assert s["m2"] == pytest.approx(b["m2"], rel=1e-13)
    np.testing.assert_allclose(small_out[["a", "b"]].to_numpy(), big_out[["a", "b"]].to_numpy(), rtol=1e-13, atol=1e-13)
    assert small_out["k"].tolist() == big_out["k"].tolist()


def test_large_offset_is_stable_against_exact_reference(tmp_path):
    # 1e9 + N(0, 1e-3): a naive sum of squares fails; z-scores must match the exact ones.
    x = 1e9 + np.random.default_rng(4).normal(0, 1e-3, 5_000)
    src = tmp_path / "big.csv"
    src.write_text("x\n" + "\n".join(repr(float(v)) for v in x) + "\n")
    stats, out = tmp_path / "s.json", tmp_path / "o.csv"
    assert run_cli("fit", src, "-o", stats, env={"NORMCLI_BLOCK_SIZE": "4096"}).code == 0
    assert run_cli("transform", src, "--stats", stats, "-o", out).code == 0
    fx = [Fraction(float(v)) for v in x]
    mean = sum(fx) / len(fx)
    std = math.sqrt(float(sum((v - mean) ** 2 for v in fx) / len(fx)))
    exact_z = np.array([float(v - mean) / std for v in fx])
    got = pd.read_csv(out)["x"].to_numpy()
    assert np.max(np.abs(got - exact_z)) < 1e-12
    st = json.loads(stats.read_text())["columns"]["x"]["stats"]
    assert abs(st["m2"] / st["count"] / (std * std) - 1) < 1e-12


def test_stdin_to_stdout_pipeline(tmp_path, stats_file, sample_csv):
    r = run_cli("transform", "-", "--stats", stats_file, stdin=sample_csv.read_bytes())
    assert r.code == 0, r.err
    ref = run_cli("transform", sample_csv, "--stats", stats_file)
    assert r.out == ref.out and r.out.startswith(b"order_id,date,store,units")
    assert r.err == ""
    fit = run_cli("fit", "-", stdin=sample_csv.read_bytes())
    assert fit.code == 0 and json.loads(fit.out)["columns"].keys() == json.loads(stats_file.read_text())["columns"].keys()


@pytest.mark.parametrize("method,train,today", [
    ("maxabs", "x\n0\n1e-300\n", "x\n1e308\n-1e308\n"),
    ("l2:x,y,z", "x,y,z\n1,2,3\n4,5,6\n", "x,y,z\n1e308,1e308,-1e308\n"),
    ("layer", "x,y,z\n1,2,3\n4,5,6\n", "x,y,z\n1e308,-1e308,1e308\n"),
])
def test_values_beyond_float64_become_inf_or_nan_without_a_warning(tmp_path, method, train, today):
    """Overflow gives IEEE results (as NumPy computes them from the formula), and stderr stays
    empty: no RuntimeWarning with a source line, with --quiet or without. A row-wise method's
    row is scale-free: its formula is taken on the row scaled by 2**-1023 (exact), where its
    squares do not overflow (eps, beside such a row, is nothing)."""
    (tmp_path / "train.csv").write_text(train)
    (tmp_path / "today.csv").write_text(today)
    assert run_cli("fit", tmp_path / "train.csv", "-m", method, "-o", tmp_path / "s.json").code == 0
    r = run_cli("transform", tmp_path / "today.csv", "--stats", tmp_path / "s.json")
    assert r.code == 0 and r.err == "", r.err
    got = pd.read_csv(io.BytesIO(r.out)).to_numpy()
    x = pd.read_csv(tmp_path / "today.csv").to_numpy()
    stats = json.loads((tmp_path / "s.json").read_text())
    with np.errstate(all="ignore"):
        if method == "maxabs":
            want = x / 1e-300
        elif method.startswith("l2"):
            xs = x / 2.0**1023
            want = xs / np.sqrt((xs * xs).sum(axis=1, keepdims=True))
        else:
            assert stats["rows"][0]["options"]["eps"] / 2.0**1023 / 2.0**1023 == 0.0
            xs = x / 2.0**1023
            mean = xs.mean(axis=1, keepdims=True)
            want = (xs - mean) / np.sqrt(((xs - mean) ** 2).mean(axis=1, keepdims=True))
    assert np.isfinite(want).all() or method == "maxabs"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


def test_parquet_transform_refuses_a_bool_column_that_was_fitted(tmp_path):
    """True is castable to 1.0, but a fitted column that became bool is not numbers: transform
    refuses it as fit does (exit 3), rather than normalize ones and zeros."""
    pq.write_table(pa.table({"x": [1.0, 2.0, 4.0]}), tmp_path / "train.parquet")
    pq.write_table(pa.table({"x": [True, False, True]}), tmp_path / "today.parquet")
    assert run_cli("fit", tmp_path / "train.parquet", "-o", tmp_path / "s.json").code == 0
    r = run_cli("transform", tmp_path / "today.parquet", "--stats", tmp_path / "s.json", "-o", tmp_path / "o.parquet")
    assert_error(r, 3, "column 'x' of type bool is not numeric")
    assert not (tmp_path / "o.parquet").exists()
    assert_error(run_cli("fit", tmp_path / "today.parquet", "--columns", "x", "-o", tmp_path / "t.json"), 3,
                 "column 'x' is not numeric")


def test_parquet_to_stdout_is_parquet(tmp_path, stats_file, sample_parquet):
    r = run_cli("transform", sample_parquet, "--stats", stats_file)
    assert r.code == 0, r.err
    table = pq.read_table(pa.BufferReader(r.out))
    assert table.column_names == pq.read_schema(sample_parquet).names


def test_gzip_and_tsv_inputs(tmp_path, stats_file, sample_csv):
    import gzip

    gz = tmp_path / "s.csv.gz"
    gz.write_bytes(gzip.compress(sample_csv.read_bytes()))
    tsv = tmp_path / "s.tsv"
    tsv.write_bytes(sample_csv.read_bytes().replace(b",", b"\t"))
    plain = run_cli("transform", sample_csv, "--stats", stats_file).out
    assert run_cli("transform", gz, "--stats", stats_file).out == plain
    assert run_cli("transform", tsv, "--stats", stats_file).out == plain.replace(b",", b"\t")


def test_inspect_table_and_json(stats_file):
    r = run_cli("inspect", stats_file)
    assert r.code == 0
    for name in NUMERIC:
        assert name in r.text
    j = run_cli("inspect", stats_file, "--json")
    assert json.loads(j.out) == json.loads(stats_file.read_text())


def test_constant_column_scale_one_flag_and_warning(tmp_path):
    src = tmp_path / "c.csv"
    src.write_text("a,b\n1,5\n2,5\n3,5\n")
    stats = tmp_path / "s.json"
    r = run_cli("fit", src, "-o", stats)
    assert r.code == 0 and "column 'b' is constant" in r.err
    assert json.loads(stats.read_text())["columns"]["b"]["constant"] is True
    out = run_cli("transform", src, "--stats", stats).text
    assert [l.split(",")[1] for l in out.splitlines()[1:]] == ["0.0", "0.0", "0.0"]  # (5 - 5) / 1
    assert "constant" in run_cli("inspect", stats).text
    assert run_cli("fit", src, "-q", "-o", stats).err == ""


def test_options_recorded_and_applied(tmp_path, sample_csv):
    stats = tmp_path / "s.json"
    assert run_cli("fit", sample_csv, "--method", "minmax", "--range", "-1,1", "--columns", "price,sales", "-o", stats).code == 0
    doc = json.loads(stats.read_text())
    assert list(doc["columns"]) == ["price", "sales"]
    assert doc["columns"]["price"]["options"]["range"] == [-1.0, 1.0]
    out = pd.read_csv(pd.io.common.StringIO(run_cli("transform", sample_csv, "--stats", stats).text))
    src = pd.read_csv(sample_csv)
    ref = MinMaxScaler((-1, 1)).fit_transform(src[["price", "sales"]])
    np.testing.assert_allclose(out[["price", "sales"]].to_numpy(float), ref, rtol=1e-12, atol=1e-12)
    ddof = tmp_path / "d.json"
    assert run_cli("fit", sample_csv, "--ddof", "1", "-o", ddof).code == 0
    out = pd.read_csv(pd.io.common.StringIO(run_cli("transform", sample_csv, "--stats", ddof).text))
    np.testing.assert_allclose(out["price"], (src["price"] - src["price"].mean()) / src["price"].std(ddof=1), rtol=1e-12, atol=1e-12)


def test_exclude_and_stdout_json(sample_csv):
    r = run_cli("fit", sample_csv, "--exclude", "units,temperature")
    assert r.code == 0
    assert list(json.loads(r.out)["columns"]) == ["price", "sales"]
    # a column both named and excluded: a conflict, said as such (it was "no numeric columns to fit")
    for columns in ("price", "price,sales"):
        r = run_cli("fit", sample_csv, "--columns", columns, "--exclude", "units,price")
        assert r.code == 2 and r.err == "Error: column 'price' is named by both --columns and --exclude\n", r.err


# ---- errors: one line on stderr, a documented exit code, no traceback, no output file ----

def _write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


ERRORS = [
    # (files to create, args (with {tmp}), exit code, message start)
    ({}, ["fit", "{tmp}/missing.csv"], 5, "Error: cannot read '{tmp}/missing.csv': No such file or directory"),
    ({"r.csv": b"a,b\n1,2\n3,4,5\n"}, ["fit", "{tmp}/r.csv"], 3, "Error: '{tmp}/r.csv', line 3: expected 2 fields, found 3"),
    ({"r.csv": b"id,a,b\nx,1,2\ny,3,4,5\n"}, ["fit", "{tmp}/r.csv"], 3, "Error: '{tmp}/r.csv', line 3: expected 3 fields, found 4"),
    # every record ragged (a trailing separator, as some exports write): the record, not "no numeric columns"
    ({"r.csv": b"id,x\na,1,\nb,2,\n"}, ["fit", "{tmp}/r.csv"], 3, "Error: '{tmp}/r.csv', line 2: expected 2 fields, found 3"),
    ({"r.tsv": b"id\tx\na\t1\t\nb\t2\t\n"}, ["fit", "{tmp}/r.tsv"], 3, "Error: '{tmp}/r.tsv', line 2: expected 2 fields, found 3"),
    ({"n.csv": b"a,b\n1,2\n3,x\n"}, ["fit", "{tmp}/n.csv", "--columns", "a"], 0, ""),
    ({"n.csv": b"a,b\n1,2\n3,x\n"}, ["fit", "{tmp}/n.csv"], 3, "Error: column 'b': value 'x' on line 3 is not a number, though 1 of its first 2 values are; fix or empty such values, or leave the column out with --exclude b\n"),
    ({"n.csv": b"a,b\n1,2\n3,4\n" + b"5,6\n" * 3 + b"7,oops\n"}, ["fit", "{tmp}/n.csv", "--columns", "a,b"], 3, "Error: column 'b' is not numeric (its values read as string: 'oops' on line 7 is not a number)\n"),
    ({"s.csv": b"a,name\n1,x\n"}, ["fit", "{tmp}/s.csv", "--columns", "name"], 3, "Error: column 'name' is not numeric"),
    ({"s.csv": b"a,name\n1,x\n"}, ["fit", "{tmp}/s.csv", "--columns", "nope"], 3, "Error: column 'nope' is not in the input"),
    ({"s.csv": b"a\n1\n"}, ["fit", "{tmp}/s.csv", "--method", "bogus"], 2, "Error: unknown method 'bogus'"),
    ({"s.csv": b"a\n1\n"}, ["fit", "{tmp}/s.csv", "--range", "1,0"], 2, "Error: --range needs a < b"),
    # option values no method can use: a usage error, not a failure to write the stats file
    ({"s.csv": b"a\n1\n"}, ["fit", "{tmp}/s.csv", "--eps", "inf"], 2, "Error: --eps takes finite numbers"),
    ({"s.csv": b"a\n1\n"}, ["fit", "{tmp}/s.csv", "--gamma", "nan"], 2, "Error: --gamma takes finite numbers"),
    ({"s.csv": b"a\n1\n"}, ["fit", "{tmp}/s.csv", "--beta", "1e999"], 2, "Error: --beta takes finite numbers"),
    ({"s.csv": b"a\n1\n"}, ["fit", "{tmp}/s.csv", "--clip-sigma", "nan"], 2, "Error: --clip-sigma takes finite numbers"),
    ({"s.csv": b"a\n1\n"}, ["fit", "{tmp}/s.csv", "--method", "minmax", "--range", "0,inf"], 2, "Error: --range takes finite numbers"),
    ({"s.csv": b"a\n1\n"}, ["fit", "{tmp}/s.csv", "--method", "robust", "--quantile-range", "10,200"], 2, "Error: --quantile-range needs 0 <= a < b <= 100"),
    ({"s.csv": b"a\n1\n2\n", "st.json": None}, ["transform", "{tmp}/s.csv", "--stats", "{tmp}/st.json", "--clip-sigma", "nan", "-o", "{tmp}/out.csv"], 2, "Error: --clip-sigma takes finite numbers"),
    ({"s.csv": b"a\n1\n2\n", "st.json": None}, ["transform", "{tmp}/s.csv", "--stats", "{tmp}/st.json", "--clip-sigma", "-1", "-o", "{tmp}/out.csv"], 2, "Error: --clip-sigma must not be negative"),
    ({"s.csv": b"a\n1\n2\n"}, ["check", "{tmp}/s.csv", "--stats", "{tmp}/s.csv", "--max-shift", "nan"], 2, "Error: --max-shift must be a number >= 0"),
    ({"s.csv": b"a\n1\n", "bad.json": b"{not json"}, ["transform", "{tmp}/s.csv", "--stats", "{tmp}/bad.json"], 4, "Error: stats file '{tmp}/bad.json': not a valid stats file (not JSON"),
    ({"s.csv": b"a\n1\n", "v.json": b'{"format": "normcli-stats", "version": 99}'}, ["transform", "{tmp}/s.csv", "--stats", "{tmp}/v.json"], 4, "Error: stats file '{tmp}/v.json': version: this normcli reads version 1, the file is version 99"),
    ({"s.csv": b"a\n1\n"}, ["transform", "{tmp}/s.csv", "--stats", "{tmp}/none.json"], 5, "Error: cannot read stats file '{tmp}/none.json'"),
    ({"s.csv": b"a\n1\n2\n"}, ["transform", "{tmp}/s.csv", "--stats", "{tmp}/s.csv"], 4, "Error: stats file '{tmp}/s.csv': not a valid stats file"),
    ({"s.csv": b"a\n1\n"}, ["transform", "{tmp}/s.csv"], 2, "Error: Missing option '--stats'"),
    ({"s.csv": b"a\n1\n"}, ["fit", "{tmp}/s.csv", "--bogus"], 2, "Error: No such option: --bogus"),
    ({"e.csv": b""}, ["fit", "{tmp}/e.csv"], 3, "Error: '{tmp}/e.csv' is empty"),
]


@pytest.mark.parametrize("files,args,code,message", ERRORS)
def test_error_paths(tmp_path, files, args, code, message):
    for name, data in files.items():
        if data is None:  # a stats file fitted on the CSV input
            assert run_cli("fit", tmp_path / "s.csv", "-o", tmp_path / name).code == 0
        else:
            _write(tmp_path, name, data)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = run_cli(*args)
    assert r.code == code, r.err
    if code:
        assert r.err.startswith(message.replace("{tmp}", str(tmp_path))), r.err
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
        assert not (tmp_path / "out.csv").exists()


def test_non_number_after_the_first_block_names_column_and_line(tmp_path):
    src = _write(tmp_path, "n.csv", b"a,b\n" + b"1,2\n" * 5000 + b"7,oops\n" + b"1,2\n" * 10)
    r = run_cli("fit", src, "-o", tmp_path / "s.json", env={"NORMCLI_BLOCK_SIZE": "1024"})
    assert r.code == 3 and r.err == "Error: column 'b': value 'oops' on line 5002 is not a number\n"
    assert not (tmp_path / "s.json").exists()


def test_missing_fitted_column_is_a_stats_error(tmp_path, stats_file):
    other = _write(tmp_path, "o.csv", b"units,price\n1,2\n")
    r = run_cli("transform", other, "--stats", stats_file, "-o", tmp_path / "x.csv")
    assert r.code == 4 and r.err.startswith("Error: column 'sales' of the stats file is not in the input")
    assert not (tmp_path / "x.csv").exists()


def test_output_may_not_be_input(tmp_path, stats_file, sample_csv):
    copy = _write(tmp_path, "in.csv", sample_csv.read_bytes())
    r = run_cli("transform", copy, "--stats", stats_file, "-o", copy)
    assert r.code == 2 and "Error:" in r.err
    assert copy.read_bytes() == sample_csv.read_bytes()


OK_CSV = b"x,y\n1,a\n2,b\n3,c\n"
# (args with {d} for the directory holding data.csv, a stats file s.json and links to data.csv, the message)
WRITES_OVER_AN_INPUT = [
    (["fit", "data.csv", "-o", "data.csv"], "the output 'data.csv' is the input"),
    (["fit", "data.csv", "-o", "./data.csv"], "the output './data.csv' is the input 'data.csv'"),
    (["fit", "data.csv", "-o", "soft.csv"], "the output 'soft.csv' is the input 'data.csv'"),
    (["fit", "data.csv", "-o", "hard.csv"], "the output 'hard.csv' is the input 'data.csv'"),
    (["fit", "{d}", "-o", "data.csv"], "the output 'data.csv' is the input '{d}/data.csv'"),
    (["fit", "data.csv", "--update", "s.json", "-o", "data.csv"], "the output 'data.csv' is the input"),
    (["fit-transform", "data.csv", "--stats-out", "data.csv", "-o", "o.csv"],
     "the stats would be written to 'data.csv', which is the input"),
    (["fit-transform", "data.csv", "--stats-out", "o.json", "-o", "soft.csv"],
     "the transformed data would be written to 'soft.csv', which is the input 'data.csv'"),
    (["fit-transform", "data.csv", "--stats-out", "s.json", "-o", "s.json"],
     "the stats and the transformed data would both be written to 's.json'"),
    (["fit-transform", "-", "--stats-out", "s.json", "-o", "./s.json"],
     "the stats and the transformed data would both be written to './s.json'"),
    # the stats file is read too: writing the data over it would lose the statistics
    (["transform", "data.csv", "--stats", "s.json", "-o", "s.json"], "the output 's.json' is the stats file"),
    (["inverse", "data.csv", "--stats", "s.json", "-o", "./s.json"], "the output './s.json' is the stats file 's.json'"),
    (["transform", "data.csv", "--stats", "s.json", "--to", "parquet", "-o", "soft.json"],
     "the output 'soft.json' is the stats file 's.json'"),
]


@pytest.mark.parametrize("args,message", WRITES_OVER_AN_INPUT)
def test_refuses_to_write_over_an_input_or_its_other_output(tmp_path, args, message):
    data = _write(tmp_path, "data.csv", OK_CSV)
    (tmp_path / "soft.csv").symlink_to("data.csv")
    (tmp_path / "soft.json").symlink_to("s.json")
    os.link(data, tmp_path / "hard.csv")
    assert run_cli("fit", "data.csv", "-o", "s.json", cwd=tmp_path).code == 0
    stats = (tmp_path / "s.json").read_bytes()
    r = run_cli(*[a.replace("{d}", str(tmp_path)) for a in args], stdin=OK_CSV, cwd=tmp_path)
    assert_error(r, 2, message.replace("{d}", str(tmp_path)) + "; choose another output path")
    assert data.read_bytes() == OK_CSV and (tmp_path / "s.json").read_bytes() == stats
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "hard.csv", "s.json", "soft.csv", "soft.json"]
    assert (tmp_path / "soft.csv").is_symlink() and (tmp_path / "soft.json").is_symlink()


def test_fit_update_in_place_is_still_allowed(tmp_path):
    _write(tmp_path, "a.csv", OK_CSV)
    _write(tmp_path, "b.csv", b"x,y\n4,d\n")
    assert run_cli("fit", "a.csv", "-o", "s.json", cwd=tmp_path).code == 0
    r = run_cli("fit", "b.csv", "--update", "s.json", cwd=tmp_path)
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "s.json").read_text())["fitted_on"]["rows"] == 4


# (inputs, extra args, the message): c1/x.csv holds "x,y\n1,a\n", c1/x.tsv and c2/x.csv another row each
TRANSFORM_COLLISIONS = [
    (["c1/x.csv", "c2/x.csv"], ["-o", "out/"],
     "the output of 'c1/x.csv' and the output of 'c2/x.csv' would both be written to 'out/x.csv'"),
    (["c1/"], ["-o", "out/", "--to", "parquet"],
     "the output of 'c1/x.csv' and the output of 'c1/x.tsv' would both be written to 'out/x.parquet'"),
    (["c1/x.csv", "c1/x.tsv"], ["-o", "c1/", "--to", "tsv"],
     "the output of 'c1/x.csv' would be written to 'c1/x.tsv', which is the input"),
    (["c2/x.csv", "c1/x.csv"], ["-o", "c1/"],
     "the output of 'c2/x.csv' would be written to 'c1/x.csv', which is the input"),
]


@pytest.mark.parametrize("inputs,args,message", TRANSFORM_COLLISIONS)
@pytest.mark.parametrize("out_exists", [False, True])
def test_transform_refuses_outputs_that_collide_before_writing_any(tmp_path, inputs, args, message, out_exists):
    files = {"c1/x.csv": b"x,y\n1,a\n", "c1/x.tsv": b"x\ty\n2\tb\n", "c2/x.csv": b"x,y\n3,c\n"}
    if out_exists:
        files.update({"out/x.csv": b"old\n", "out/x.parquet": b"old\n"})
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    _write(tmp_path, "ok.csv", OK_CSV)
    assert run_cli("fit", "ok.csv", "-o", "s.json", cwd=tmp_path).code == 0
    r = run_cli("transform", *inputs, "--stats", "s.json", *args, cwd=tmp_path)
    assert_error(r, 2, message + "; choose another output path")
    after = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == {**files, "ok.csv": OK_CSV, "s.json": (tmp_path / "s.json").read_bytes()}
    assert (tmp_path / "out").exists() == out_exists  # not even the directory is made


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_stats_files_get_the_mode_of_a_plain_create(tmp_path, umask):
    _write(tmp_path, "data.csv", OK_CSV)
    old = os.umask(umask)
    try:
        assert run_cli("fit", "data.csv", "-o", "new.json", cwd=tmp_path).code == 0
        replaced = _write(tmp_path, "old.json", b"{}")
        replaced.chmod(0o640)
        assert run_cli("fit", "data.csv", "-o", "old.json", cwd=tmp_path).code == 0
        assert run_cli("export", "new.json", "--to", "sql", "-o", "q.sql", cwd=tmp_path).code == 0
    finally:
        os.umask(old)
    for name in ("new.json", "old.json", "q.sql"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def _device(path, minor: int):
    """A character device like /dev/null (minor 3) or /dev/full (7) at ``path``, made in the test's
    own directory so that a regression replaces this one and never the system's."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
        with open(path, "wb"):
            pass
    except OSError as exc:
        pytest.skip(f"cannot make a device here: {exc}")
    return path


@pytest.mark.parametrize("command", ["transform", "fit"])
def test_output_to_a_device_writes_into_it(tmp_path, command):
    _write(tmp_path, "data.csv", OK_CSV)
    assert run_cli("fit", "data.csv", "-o", "s.json", cwd=tmp_path).code == 0
    args = ["transform", "data.csv", "--stats", "s.json"] if command == "transform" else ["fit", "data.csv"]
    null, full = _device(tmp_path / "null", 3), _device(tmp_path / "full", 7)
    r = run_cli(*args, "-o", null, cwd=tmp_path)
    assert r.code == 0 and r.err == "", r.err
    assert_error(run_cli(*args, "-o", full, cwd=tmp_path), 5, f"cannot write '{full}': No space left on device")
    for dev in (null, full):
        assert stat.S_ISCHR(dev.stat().st_mode), dev  # still the device, not a file put in its place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "full", "null", "s.json"]


@pytest.mark.parametrize("command", ["transform", "fit"])
def test_output_to_a_fifo_streams_to_its_reader(tmp_path, command):
    import threading

    _write(tmp_path, "data.csv", OK_CSV)
    assert run_cli("fit", "data.csv", "-o", "s.json", cwd=tmp_path).code == 0
    args = ["transform", "data.csv", "--stats", "s.json"] if command == "transform" else ["fit", "data.csv"]
    assert run_cli(*args, "-o", "expected", cwd=tmp_path).code == 0
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    r = run_cli(*args, "-o", fifo, cwd=tmp_path, timeout=60)
    reader.join(timeout=30)
    assert r.code == 0, r.err
    assert not reader.is_alive()
    expected = (tmp_path / "expected").read_bytes()
    if command == "fit":  # the stats name when they were made
        got, expected = [json.loads(got[0])], json.loads(expected)
        got[0].pop("created"), expected.pop("created")
    assert got == [expected]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "expected", "fifo", "s.json"]


def test_output_to_a_link_to_stdout_is_stdout(tmp_path):
    """What -o /dev/stdout does, with a link of the test's own (a regression replaces this one)."""
    _write(tmp_path, "data.csv", OK_CSV)
    (tmp_path / "stdout").symlink_to("/proc/self/fd/1")
    r = run_cli("fit", "data.csv", "-o", "stdout", cwd=tmp_path)
    assert r.code == 0, r.err
    assert json.loads(r.out)["fitted_on"]["rows"] == 3
    assert os.readlink(tmp_path / "stdout") == "/proc/self/fd/1"


@pytest.mark.parametrize("command,name", [("transform", "out.csv"), ("transform", "out.parquet"), ("fit", "s2.json")])
def test_output_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path, command, name):
    _write(tmp_path, "data.csv", OK_CSV)
    assert run_cli("fit", "data.csv", "-o", "s.json", cwd=tmp_path).code == 0
    args = ["transform", "data.csv", "--stats", "s.json"] if command == "transform" else ["fit", "data.csv"]
    assert run_cli(*args, "-o", f"expected-{name}", cwd=tmp_path).code == 0
    (tmp_path / "real").mkdir()
    target = _write(tmp_path / "real", name, b"old\n")
    (tmp_path / name).symlink_to(f"real/{name}")
    r = run_cli(*args, "-o", name, cwd=tmp_path)
    assert r.code == 0, r.err
    assert os.readlink(tmp_path / name) == f"real/{name}"
    expected = (tmp_path / f"expected-{name}").read_bytes()
    if command == "fit":
        assert json.loads(target.read_bytes())["columns"] == json.loads(expected)["columns"]
    else:
        assert target.read_bytes() == expected
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == [name]  # no temporary left


@pytest.mark.parametrize("command", ["transform", "fit", "export"])
def test_output_that_is_a_loop_of_links_is_refused_and_stays(tmp_path, command):
    """A loop of links points to no file: exit 5 with the system's words, and both links stay."""
    _write(tmp_path, "data.csv", OK_CSV)
    assert run_cli("fit", "data.csv", "-o", "s.json", cwd=tmp_path).code == 0
    (tmp_path / "l2").symlink_to("l1")
    (tmp_path / "l1").symlink_to("l2")
    args = {"transform": ["transform", "data.csv", "--stats", "s.json"], "fit": ["fit", "data.csv"],
            "export": ["export", "s.json", "--to", "sql"]}[command]
    r = run_cli(*args, "-o", "l1", cwd=tmp_path)
    assert_error(r, 5, "cannot write 'l1': Too many levels of symbolic links")
    assert os.readlink(tmp_path / "l1") == "l2" and os.readlink(tmp_path / "l2") == "l1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "l1", "l2", "s.json"]


@pytest.mark.parametrize("name", ["n" * 251 + ".csv", "é" * 125 + ".csv"], ids=["ascii", "two-byte"])
def test_output_of_the_longest_name_the_file_system_takes(tmp_path, name):
    """The temporary beside it must not be what is too long (255 bytes here)."""
    _write(tmp_path, "data.csv", OK_CSV)
    assert run_cli("fit", "data.csv", "-o", "s.json", cwd=tmp_path).code == 0
    assert run_cli("transform", "data.csv", "--stats", "s.json", "-o", "expected.csv", cwd=tmp_path).code == 0
    r = run_cli("transform", "data.csv", "--stats", "s.json", "-o", name, cwd=tmp_path)
    assert r.code == 0, r.err
    assert (tmp_path / name).read_bytes() == (tmp_path / "expected.csv").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data.csv", "s.json", "expected.csv", name])


def test_failed_transform_leaves_no_output_and_replaces_nothing(tmp_path, stats_file):
    bad = _write(tmp_path, "bad.csv", b"order_id,date,store,units,price,sales,temperature\n" + b"a,b,c,1,2,3,4\n" * 50_000 + b"a,b,c,1,2,3,oops\n")
    out = _write(tmp_path, "out.csv", b"previous result\n")
    r = run_cli("transform", bad, "--stats", stats_file, "-o", out, env={"NORMCLI_BLOCK_SIZE": "65536"})
    assert r.code == 3 and "value 'oops' on line 50002" in r.err
    assert out.read_bytes() == b"previous result\n"  # the target is replaced only on success
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "out.csv", "stats.json"]


def test_killed_run_leaves_no_target(tmp_path, stats_file):
    rows = b"".join(b"id%d,2024-01-01,north,%d,%d.5,%d.25,%d\n" % (i, i % 50, i % 30, i % 700, i % 40) for i in range(400_000))
    big = _write(tmp_path, "big.csv", b"order_id,date,store,units,price,sales,temperature\n" + rows)
    out = tmp_path / "out.csv"
    p = subprocess.Popen([sys.executable, "-m", "normcli", "transform", str(big), "--stats", str(stats_file), "-o", str(out)],
                         env={**os.environ, "NORMCLI_THREADS": "1"}, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline and not any(n.name.endswith(".normcli-tmp") for n in tmp_path.iterdir()):
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not out.exists()
    assert big.read_bytes().endswith(rows[-100:])  # the input is untouched


def test_head_closes_pipe_quietly(tmp_path, stats_file):
    rows = b"".join(b"id%d,2024-01-01,north,%d,%d.5,%d.25,%d\n" % (i, i % 50, i % 30, i % 700, i % 40) for i in range(200_000))
    big = _write(tmp_path, "big.csv", b"order_id,date,store,units,price,sales,temperature\n" + rows)
    cmd = f"{sys.executable} -m normcli transform {big} --stats {stats_file} | head -1"
    p = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"order_id,date,store,units,price,sales,temperature\n"
    assert p.stderr == b""


def test_python_m_and_version():
    r = run_cli("--version")
    assert r.code == 0 and r.text.startswith("normcli ")


_POOL_PROBE = "import normcli.cli, pyarrow as pa; print(pa.default_memory_pool().backend_name)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="jemalloc is chosen on Linux only")
def test_the_command_line_allocates_from_jemalloc_unless_told_otherwise():
    env = {k: v for k, v in os.environ.items() if k not in ("ARROW_DEFAULT_MEMORY_POOL", "JE_ARROW_MALLOC_CONF")}
    p = subprocess.run([sys.executable, "-c", _POOL_PROBE], env=env, capture_output=True, text=True)
    assert (p.stdout.strip(), p.stderr) == ("jemalloc", "")
    p = subprocess.run([sys.executable, "-c", _POOL_PROBE], env={**env, "ARROW_DEFAULT_MEMORY_POOL": "system"},
                       capture_output=True, text=True)
    assert (p.stdout.strip(), p.stderr) == ("system", "")


# Threads of a process that imported NumPy, as the kernel lists them.
_THREADS_PROBE = "{}import numpy, os; print(len(os.listdir('/proc/self/task')))"


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_the_command_line_leaves_numpy_one_blas_thread():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}

    def threads(prefix: str) -> int:
        p = subprocess.run([sys.executable, "-c", _THREADS_PROBE.format(prefix)], env=env,
                           capture_output=True, text=True, check=True)
        return int(p.stdout)

    plain = threads("")
    if plain == 1:
        pytest.skip("this NumPy starts no BLAS threads")
    assert threads("import normcli.cli; normcli.cli._tune_process(); ") == 1


def test_column_names_that_look_like_markup_are_shown_as_text(tmp_path):
    """inspect, check and the fit warning print names such as "[/]" or "[red]y" as they are."""
    src = _write(tmp_path, "m.csv", b"[red]y,[/]\n1,2\n3,2\n")
    stats = tmp_path / "m.json"
    r = run_cli("fit", src, "-o", stats)
    assert r.code == 0, r.err
    assert r.err == "warning: column '[/]' is constant (policy scale1)\n"
    shown = run_cli("inspect", stats)
    assert shown.code == 0, shown.err
    rows = [line for line in shown.text.splitlines() if "zscore" in line]
    assert [line.split("│")[1].strip() for line in rows] == ["[red]y", "[/]"]
    drift = run_cli("check", src, "--stats", stats)
    assert drift.code == 0, drift.err
    assert [line.split("│")[1].strip() for line in drift.text.splitlines() if "│" in line] == ["[red]y", "[/]"]


def test_help_names_the_dask_extra():
    r = run_cli("transform", "--help", env={"COLUMNS": "200"})
    assert "pip install 'normcli[dask]'" in r.text


def test_constant_means_a_zero_scale_for_maxabs_and_robust(tmp_path):
    """maxabs counts a column as constant only when it is all zero, robust when its IQR is zero:
    the flag, the warning, inspect and --constant error follow the scale, as scikit-learn does."""
    from sklearn.preprocessing import MaxAbsScaler, RobustScaler

    src = _write(tmp_path, "c.csv", b"five,zero,spiky\n" + b"".join(
        f"5,0,{v}\n".encode() for v in (1, 1, 1, 1, 1, 9)))
    frame = pd.read_csv(src)
    for method, ref, constant in (("maxabs", MaxAbsScaler(), {"five": False, "zero": True, "spiky": False}),
                                  ("robust", RobustScaler(), {"five": True, "zero": True, "spiky": True})):
        stats = tmp_path / f"{method}.json"
        r = run_cli("fit", src, "--method", method, "-o", stats)
        assert r.code == 0, r.err
        doc = json.loads(stats.read_text())
        assert {c: doc["columns"][c]["constant"] for c in constant} == constant
        warned = {line.split("'")[1] for line in r.err.splitlines()}
        assert warned == {c for c, flag in constant.items() if flag}
        shown = run_cli("inspect", stats).text
        cells = [[c.strip() for c in line.split("│")] for line in shown.splitlines() if "│" in line]
        assert {c[1] for c in cells if "constant" in c[-2].split(", ")} == warned
        out = pd.read_csv(pd.io.common.StringIO(run_cli("transform", src, "--stats", stats).text))
        np.testing.assert_allclose(out.to_numpy(float), ref.fit_transform(frame), rtol=1e-12, atol=1e-12)
        r = run_cli("fit", src, "--method", method, "--constant", "error", "--columns", "five", "-o", tmp_path / f"e-{method}.json")
        assert (r.code, (tmp_path / f"e-{method}.json").exists()) == ((3, False) if constant["five"] else (0, True)), r.err


def test_a_quote_left_open_is_an_error_in_fit_transform_and_from_stdin(tmp_path):
    good = _write(tmp_path, "ok.csv", b"x,y\n1,a\n2,b\n3,c\n")
    stats = tmp_path / "s.json"
    assert run_cli("fit", good, "-o", stats).code == 0
    # Before the fix the open field swallowed every later record: 1 row out of 300,002.
    bad = _write(tmp_path, "q.csv", b'x,y\n1,a\n2,"b\n' + b"".join(b"%d,c\n" % i for i in range(300_000)))
    expected = "line 3: a quoted field is not closed before the end of the file\n"
    out = tmp_path / "o.csv"
    for args, stdin, name in [(("transform", bad, "--stats", stats, "-o", out), None, f"'{bad}'"),
                              (("fit", bad, "-o", tmp_path / "f.json"), None, f"'{bad}'"),
                              (("transform", "-", "--stats", stats), bad.read_bytes(), "standard input"),
                              (("fit", "-"), bad.read_bytes(), "standard input")]:
        r = run_cli(*args, stdin=stdin)
        assert (r.code, r.err) == (3, f"Error: {name}, {expected}"), args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.csv", "q.csv", "s.json"]


def test_carriage_return_line_ends_are_refused_and_crlf_still_read(tmp_path):
    lf = _write(tmp_path, "lf.csv", b"x,y\n1,a\n2, b \n3,c\n")
    stats = tmp_path / "s.json"
    assert run_cli("fit", lf, "-o", stats).code == 0
    cr = _write(tmp_path, "cr.csv", lf.read_bytes().replace(b"\n", b"\r"))
    message = f"Error: '{cr}': lines end in a carriage return alone (old Mac line endings); convert them to \\n first\n"
    for args in (("transform", cr, "--stats", stats, "-o", tmp_path / "o.csv"), ("fit", cr, "-o", tmp_path / "f.json")):
        r = run_cli(*args)
        assert (r.code, r.err) == (3, message)
    r = run_cli("fit", "-", stdin=cr.read_bytes())
    assert (r.code, r.err) == (3, message.replace(f"'{cr}'", "standard input"))
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "f.json").exists()
    # CRLF is read as LF is: the same output, byte for byte
    crlf = _write(tmp_path, "crlf.csv", lf.read_bytes().replace(b"\n", b"\r\n"))
    outs = [run_cli("transform", f, "--stats", stats) for f in (lf, crlf)]
    assert [r.code for r in outs] == [0, 0]
    assert outs[0].out == outs[1].out and outs[0].out.splitlines()[2].endswith(b", b ")


def test_quoted_empty_text_passes_through_as_an_empty_string(tmp_path):
    data = b'x,note\n1,""\n2,\n3,"a,b"\n4,""\n'
    src = _write(tmp_path, "in.csv", data)
    stats = tmp_path / "s.json"
    assert run_cli("fit", src, "-o", stats).code == 0
    doc = json.loads(stats.read_text())
    assert list(doc["columns"]) == ["x"]  # fitting is unaffected: x alone, its moments as pandas'
    x = pd.read_csv(src)["x"].to_numpy(float)
    assert doc["columns"]["x"]["stats"]["count"] == 4 and doc["columns"]["x"]["stats"]["m2"] == pytest.approx(((x - x.mean()) ** 2).sum())
    r = run_cli("transform", src, "--stats", stats)
    assert r.code == 0, r.err
    z = (x - x.mean()) / x.std()
    assert r.out == b"x,note\n" + b"".join(b"%s,%s\n" % (repr(float(v)).encode(), t)
                                          for v, t in zip(z, [b'""', b"", b'"a,b"', b'""']))
    out = tmp_path / "o.parquet"
    assert run_cli("transform", src, "--stats", stats, "-o", out).code == 0
    assert pq.read_table(out).column("note").to_pylist() == ["", None, "a,b", ""]


def test_fit_and_transform_agree_on_blank_numbers_and_bytes_that_are_not_utf8(tmp_path):
    blank = _write(tmp_path, "w.csv", b"x,y\n1,a\n ,b\n3,c\n")
    stats = tmp_path / "s.json"
    for args in (("fit", blank, "-o", stats), ("fit", blank, "--columns", "x", "-o", stats)):
        r = run_cli(*args)
        assert r.code == 0, r.err
        st = json.loads(stats.read_text())["columns"]["x"]["stats"]
        assert (st["count"], st["nulls"], st["mean"], st["m2"]) == (2, 1, 2.0, 2.0)  # 1 and 3; the blank is null
    r = run_cli("transform", blank, "--stats", stats)
    assert (r.code, r.out) == (0, b"x,y\n-1.0,a\n,b\n1.0,c\n")
    bad = _write(tmp_path, "u.csv", b"a,b\n1,\xff\xfe\n3,x\n")
    message = f"Error: '{bad}', line 2: column 'b' holds bytes that are not UTF-8\n"
    fit = run_cli("fit", bad, "-o", tmp_path / "u.json")
    assert run_cli("fit", _write(tmp_path, "ok.csv", b"a,b\n1,y\n3,x\n"), "-o", tmp_path / "u.json").code == 0
    transform = run_cli("transform", bad, "--stats", tmp_path / "u.json")
    assert (fit.code, fit.err) == (transform.code, transform.err) == (3, message)


def test_gzip_output_and_gzip_on_stdin(tmp_path, stats_file, sample_csv):
    """An output named .gz is gzip (decompressing to the plain output, no name or time stored) and
    reads back; gzip on stdin is recognised by its magic bytes."""
    import gzip

    plain, packed = tmp_path / "o.csv", tmp_path / "o.csv.gz"
    assert run_cli("transform", sample_csv, "--stats", stats_file, "-o", plain).code == 0
    r = run_cli("transform", sample_csv, "--stats", stats_file, "-o", packed)
    assert r.code == 0, r.err
    data = packed.read_bytes()
    assert data[:2] == b"\x1f\x8b" and data[3] & 0x08 == 0 and data[4:8] == b"\0\0\0\0"  # no FNAME, mtime 0
    assert gzip.decompress(data) == plain.read_bytes()
    back = run_cli("inverse", packed, "--stats", stats_file)
    assert back.code == 0, back.err
    src = pd.read_csv(sample_csv)
    out = pd.read_csv(pd.io.common.StringIO(back.text))
    np.testing.assert_allclose(out[NUMERIC].to_numpy(float), src[NUMERIC].to_numpy(float), rtol=1e-12, atol=1e-12)

    zipped = gzip.compress(sample_csv.read_bytes())
    piped = run_cli("transform", "-", "--stats", stats_file, stdin=zipped)
    assert piped.code == 0, piped.err
    assert piped.out == plain.read_bytes()
    fitted = run_cli("fit", "-", stdin=zipped)
    assert fitted.code == 0, fitted.err
    assert json.loads(fitted.out)["columns"] == json.loads(stats_file.read_text())["columns"]


@pytest.mark.parametrize("args", [["-o", "{tmp}/o.parquet.gz"], ["--to", "parquet", "-o", "{tmp}/o.gz"]])
def test_gzip_parquet_is_a_usage_error(tmp_path, stats_file, sample_csv, args):
    r = run_cli("transform", sample_csv, "--stats", stats_file, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.code == 2 and "Parquet is not gzip-compressed" in r.err and len(r.err.splitlines()) == 1, r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]


def test_a_one_column_file_keeps_its_null_rows_through_transform_and_inverse(tmp_path):
    # An empty field alone on its line is a blank line, which CSV readers skip: a null must
    # come out as a field that reads back as a null row.
    src = _write(tmp_path, "one.csv", b"x\n1\nNA\n2\n\n6\n")  # NA is null; the blank line is no row
    x = np.array([1.0, 2.0, 6.0])
    assert run_cli("fit", src, "-o", tmp_path / "s.json").code == 0
    out, back = tmp_path / "n.csv", tmp_path / "b.csv"
    assert run_cli("transform", src, "--stats", tmp_path / "s.json", "-o", out).code == 0
    assert run_cli("inverse", out, "--stats", tmp_path / "s.json", "-o", back).code == 0
    read = pd.read_csv(out, skip_blank_lines=True)["x"]
    assert read.isna().tolist() == [False, True, False, False]
    np.testing.assert_allclose(read.dropna(), (x - x.mean()) / x.std(), rtol=1e-15)
    again = pd.read_csv(back)["x"]
    assert again.isna().tolist() == [False, True, False, False]
    np.testing.assert_allclose(again.dropna(), x, rtol=1e-15)


def test_fit_refuses_an_option_its_methods_do_not_read(tmp_path, sample_csv):
    """``--ddof 1`` with ``layer`` used to be dropped quietly: a usage error, nothing written."""
    out = tmp_path / "s.json"
    r = run_cli("fit", sample_csv, "--method", "layer", "--ddof", "1", "-o", out)
    assert r.code == 2 and r.err == ("Error: --ddof is an option of zscore, which this fit does not use "
                                     "(methods: layer)\n"), r.err
    assert not out.exists()


def test_parquet_to_csv_writes_wide_decimals_and_offset_time_zones_as_text(tmp_path):
    """Polars' CSV writer has no 256-bit decimal and no time zone given as an offset: such
    columns used to end in a panic or an internal error (exit 1). They are written as text that
    reads back to the same values; the named zone keeps Polars' form, which they follow."""
    import datetime as dt
    from decimal import Decimal

    instants = [0, 1_700_000_000_123, None]
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({
        "x": [1.0, 2.0, 4.0],
        "d": pa.array([Decimal("1.25"), Decimal("-123456789012345678901234567890.50"), None], pa.decimal256(50, 2)),
        "off": pa.array(instants, pa.timestamp("ms", tz="+05:30")),
        "named": pa.array(instants, pa.timestamp("ms", tz="America/New_York")),
    }), src)
    (tmp_path / "c.csv").write_text("x\n1\n2\n4\n")
    assert run_cli("fit", tmp_path / "c.csv", "-o", tmp_path / "s.json").code == 0
    r = run_cli("transform", src, "--stats", tmp_path / "s.json", "--to", "csv")
    assert r.code == 0 and r.err == "", r.err
    rows = [line.split(",") for line in r.text.splitlines()[1:]]
    assert [row[1] for row in rows] == ["1.25", "-123456789012345678901234567890.50", ""]
    for column, zone in ((2, dt.timezone(dt.timedelta(hours=5, minutes=30))), (3, None)):
        for row, ms in zip(rows, instants):
            if ms is None:
                assert row[column] == ""
                continue
            when = dt.datetime.strptime(row[column], "%Y-%m-%dT%H:%M:%S.%f%z")
            assert when == dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=ms)
            if zone is not None:
                assert when.utcoffset() == zone.utcoffset(None)
    assert rows[0][3] == "1969-12-31T19:00:00.000-0500" and rows[0][2] == "1970-01-01T05:30:00.000+0530"


@pytest.mark.parametrize("column, kind", [(pa.array([b"a", b"b", None]), "binary"),
                                          (pa.array([[1], [2], None]), "list<element: int64>")])
def test_a_column_csv_cannot_hold_is_named(tmp_path, column, kind):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, 4.0], "c": column}), src)
    assert run_cli("fit", src, "-o", tmp_path / "s.json").code == 0
    r = run_cli("transform", src, "--stats", tmp_path / "s.json", "-o", tmp_path / "o.csv")
    assert r.code == 3 and r.err == f"Error: cannot write column 'c' as CSV: it holds {kind} values (Parquet output holds them)\n"
    assert sorted(os.listdir(tmp_path)) == ["s.json", "t.parquet"]


def test_parquet_output_keeps_the_fields_and_metadata_the_input_declares(tmp_path):
    """Pass-through columns keep their nullability and field metadata (Parquet field ids), a
    normalized column its field id, and the file its key-value metadata; the Python API keeps
    them on an Arrow table as well."""
    schema = pa.schema([
        pa.field("x", pa.int64(), nullable=False, metadata={"PARQUET:field_id": "1"}),
        pa.field("s", pa.string(), nullable=False, metadata={"PARQUET:field_id": "2", "comment": "name"}),
        pa.field("t", pa.float64(), metadata={"PARQUET:field_id": "3"})], metadata={"owner": "data-team"})
    table = pa.table({"x": [1, 2, 4], "s": ["a", "b", "c"], "t": [0.5, None, 1.5]}, schema=schema)
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(table, src)
    assert run_cli("fit", src, "--columns", "x", "-o", tmp_path / "s.json").code == 0
    assert run_cli("transform", src, "--stats", tmp_path / "s.json", "-o", out).code == 0
    got = pq.read_schema(out)
    assert got.metadata == {b"owner": b"data-team"}
    assert got.field("s") == schema.field("s") and got.field("s").metadata == schema.field("s").metadata
    assert got.field("t") == schema.field("t") and got.field("t").metadata == schema.field("t").metadata
    assert got.field("x").type == pa.float64() and got.field("x").nullable
    assert got.field("x").metadata == {b"PARQUET:field_id": b"1"}
    assert [pq.ParquetFile(out).schema.column(i).max_definition_level for i in range(3)] == [1, 0, 1]
    x = np.array([1.0, 2.0, 4.0])
    assert pq.read_table(out)["x"].to_pylist() == pytest.approx(((x - x.mean()) / x.std()).tolist(), rel=1e-15)
    stats = normcli.load(str(tmp_path / "s.json"))
    api = stats.transform(table).schema
    assert api.metadata == schema.metadata and api.field("s").metadata == schema.field("s").metadata
    assert not api.field("s").nullable and api.field("x").metadata == schema.field("x").metadata


def test_fit_transform_leaves_the_data_output_when_the_stats_cannot_be_written_to_stdout(tmp_path, sample_csv):
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "normcli", "fit-transform", str(sample_csv), "--stats-out", "-",
                            "-o", str(out)], stdout=full, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 5 and p.stderr.decode().startswith("Error: cannot write standard output")
    assert out.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["out.csv"]


@pytest.mark.parametrize("stderr", ["full", "closed"])
def test_messages_that_cannot_be_written_do_not_change_the_run(tmp_path, sample_csv, stderr):
    """A full disk behind ``2>> run.log`` or a closed stderr: the run does its work and exits
    with its own code; the messages are lost, not the run (it used to be exit 1, nothing written)."""
    const = tmp_path / "const.csv"
    const.write_text("a,b\n1,2\n1,3\n")  # a constant column: a warning to print

    def run(*args: object) -> int:
        with open("/dev/full", "w") as full:
            kw = {"stderr": full} if stderr == "full" else {"preexec_fn": lambda: os.close(2)}
            return subprocess.run([sys.executable, "-m", "normcli", *map(str, args)], stdout=subprocess.DEVNULL,
                                  timeout=120, **kw).returncode

    assert run("fit", sample_csv, "-o", tmp_path / "a.json", "--log-format", "json") == 0
    assert run("fit", const, "-o", tmp_path / "c.json") == 0
    assert json.loads((tmp_path / "c.json").read_text())["columns"]["a"]["constant"] is True
    assert run("transform", sample_csv, "--stats", tmp_path / "a.json", "-o", tmp_path / "t.csv") == 0
    assert pd.read_csv(tmp_path / "t.csv").shape == pd.read_csv(sample_csv).shape
    assert run("fit", tmp_path / "missing.csv", "-o", tmp_path / "m.json") == 5
    assert run("fit", sample_csv, "--bogus") == 2


def test_bare_normcli_prints_its_help_on_stderr():
    r = run_cli()
    assert r.code == 2 and r.out == b"" and "Usage: normcli" in r.err


def _parsed(command, args: list[str]) -> tuple:
    """What parsing ``args`` prints and raises, in process."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            command.main(args=args, prog_name="normcli", standalone_mode=False)
        except Exception as exc:
            return type(exc).__name__, getattr(exc, "format_message", exc.__str__)(), out.getvalue()
    return None, None, out.getvalue()


def test_a_run_builds_only_its_own_command_and_parses_as_the_whole_group_does():
    """Each command is parsed by a group that holds it alone: the same help, the same usage errors."""
    import typer.main

    from normcli import cli

    group = typer.main.get_command(cli.app)
    assert len(group.commands) == 9
    for name in group.commands:
        alone = cli._command([name, "--help"])
        assert list(alone.commands) == [name]
        for args in ([name, "--help"], [name, "--no-such-option"], [name]):
            assert _parsed(alone, args) == _parsed(group, args)
    for args in ([], ["--help"], ["--version"], ["fitt"]):  # no command named first: the whole group
        assert list(cli._command(args).commands) == list(group.commands)


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_stats_on_stdout_are_utf8_whatever_the_locale_encoding(tmp_path, encoding):
    """A stats file written to stdout is UTF-8 JSON, as one written with -o, also where the
    locale's encoding cannot hold a column's name; a table shows the name escaped."""
    src = tmp_path / "d.csv"
    src.write_text("温度,b\n1.5,2\n4,3\n", encoding="utf-8")
    env = {"PYTHONIOENCODING": encoding}
    fit = run_cli("fit", src, env=env)
    assert (fit.code, fit.err) == (0, "")
    doc = json.loads(fit.out.decode("utf-8"))
    assert list(doc["columns"]) == ["温度", "b"]
    assert doc["columns"]["温度"]["stats"]["mean"] == np.mean([1.5, 4.0])
    stats = tmp_path / "s.json"
    stats.write_bytes(fit.out)
    shown = run_cli("inspect", stats, "--json", env=env)
    assert (shown.code, shown.err, shown.out) == (0, "", fit.out)  # the file's text, unchanged
    more = tmp_path / "e.csv"
    more.write_text("温度,b\n10,1\n", encoding="utf-8")
    (tmp_path / "s2.json").write_bytes(run_cli("fit", more, env=env).out)
    merged = run_cli("merge", stats, tmp_path / "s2.json", env=env)
    assert (merged.code, merged.err) == (0, "")
    st = json.loads(merged.out.decode("utf-8"))["columns"]["温度"]["stats"]
    assert st["count"] == 3 and st["mean"] + st["mean_lo"] == pytest.approx(np.mean([1.5, 4.0, 10.0]), rel=1e-15)
    table = run_cli("inspect", stats, env=env)
    assert (table.code, table.err) == (0, "")
    assert b"\\u6e29\\u5ea6" in table.out and table.out.decode("ascii")


def test_json_log_on_a_terminal_is_json_alone(tmp_path, sample_csv):
    """No progress bar between the events when stderr is a terminal (a pty here)."""
    import pty

    big = tmp_path / "big.csv"
    frame = pd.read_csv(sample_csv)
    pd.concat([frame] * 400).to_csv(big, index=False)
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "normcli", "fit", str(big), "-o", str(tmp_path / "s.json"),
                          "--log-format", "json"], stderr=slave, stdout=subprocess.DEVNULL)
    os.close(slave)
    data = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    assert p.wait(timeout=120) == 0
    lines = data.decode().replace("\r\n", "\n").strip().split("\n")
    events = [json.loads(line)["event"] for line in lines]
    assert events[0] == "start" and events[-1] == "end", events


def test_an_output_directory_inside_the_input_directory_is_not_read_back(tmp_path, sample_csv):
    """The daily job `transform data -o data/out/`: the second run must not take the first
    run's outputs for inputs (it used to refuse them as inputs it would overwrite)."""
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "a" / "x.csv").write_bytes(sample_csv.read_bytes())
    assert run_cli("fit", data, "-o", tmp_path / "s.json").code == 0
    for spec in (data, data, f"{data}/**/*.csv"):
        r = run_cli("transform", spec, "--stats", tmp_path / "s.json", "-o", f"{data}/out/")
        assert r.code == 0, r.err
        found = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file())
        assert found == ["a/x.csv", "out/a/x.csv"]
    # the input directory itself as the output: the outputs would be the inputs, refused as before
    r = run_cli("transform", data, "--stats", tmp_path / "s.json", "-o", f"{data}/")
    assert r.code == 2 and "which is the input" in r.err
    frame = pd.read_csv(sample_csv)
    got = pd.read_csv(data / "out" / "a" / "x.csv")
    x = frame["price"].to_numpy(float)
    np.testing.assert_allclose(got["price"], (x - np.nanmean(x)) / np.nanstd(x), rtol=1e-13)


def test_a_stored_pandas_index_is_left_out_of_the_default_selection(tmp_path):
    """A row label, not a feature: left out with a note, and passed through by transform, so
    pandas reads the output back with its index; named with --columns, it is fitted."""
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0, 8.0]}, index=pd.Index([10, 30, 20, 40], name="id"))
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    frame.to_parquet(src)
    r = run_cli("fit", src, "-o", tmp_path / "s.json")
    assert r.code == 0 and r.err == "note: column 'id' is a stored pandas index: left out (--columns id fits it)\n"
    assert list(json.loads((tmp_path / "s.json").read_text())["columns"]) == ["a"]
    assert run_cli("transform", src, "--stats", tmp_path / "s.json", "-o", out).code == 0
    back = pd.read_parquet(out)
    assert back.index.tolist() == [10, 30, 20, 40]
    np.testing.assert_allclose(back["a"], StandardScaler().fit_transform(frame[["a"]]).ravel(), rtol=1e-15)
    assert run_cli("fit", src, "--columns", "a,id", "-o", tmp_path / "t.json", "-q").code == 0
    assert list(json.loads((tmp_path / "t.json").read_text())["columns"]) == ["a", "id"]
    table = pa.Table.from_pandas(frame.reset_index(drop=True).set_axis([5, 6, 7, 8]))
    assert list(normcli.fit(table).columns) == ["a"]


@pytest.mark.parametrize("note", [b"not json", b"[1, 2]", b'{"columns": 3, "index_columns": "x"}'])
def test_a_pandas_note_that_is_not_pandas_own_is_kept_as_it_is(tmp_path, note):
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, 4.0]}).replace_schema_metadata({b"pandas": note}), src)
    assert run_cli("fit", src, "-o", tmp_path / "s.json").code == 0
    r = run_cli("transform", src, "--stats", tmp_path / "s.json", "-o", out)
    assert r.code == 0, r.err
    assert pq.read_schema(out).metadata == {b"pandas": note}


def test_names_with_commas_and_quotes_are_quoted_as_in_csv(tmp_path):
    """A header name holding a comma or a quote (read by pandas as it is) can be named in
    --columns, --exclude and a method's list, quoted as in CSV; "" names the empty name."""
    src = tmp_path / "n.csv"
    src.write_bytes(b'"c,omma",x,"",y,"q""t"\n1,2,3,4,5\n5,6,7,9,1\n2,2,2,2,8\n')
    frame = pd.read_csv(src)
    assert list(frame.columns)[0] == "c,omma" and list(frame.columns)[4] == 'q"t'
    out = tmp_path / "s.json"

    def fitted(*args):
        r = run_cli("fit", src, "-o", out, *args)
        assert r.code == 0, r.err
        return {k: v["method"] for k, v in json.loads(out.read_text())["columns"].items()}

    assert fitted("--columns", '"c,omma",x') == {"c,omma": "zscore", "x": "zscore"}
    assert fitted("--exclude", '"",y,"q""t"') == {"c,omma": "zscore", "x": "zscore"}
    got = fitted("-m", 'minmax:"c,omma","q""t"', "--columns", '"c,omma","q""t"')
    assert got == {"c,omma": "minmax", 'q"t': "minmax"}
    doc = json.loads(out.read_text())["columns"]["c,omma"]["stats"]
    assert (doc["min"], doc["max"]) == (frame["c,omma"].min(), frame["c,omma"].max())
    r = run_cli("fit", src, "--columns", '"c,omma')
    assert r.code == 2 and r.err.startswith("Error: cannot read the column list")


def test_check_json_with_no_limit_and_a_wide_table_in_a_pipe(tmp_path):
    """A threshold of inf (no limit) is null in the strict JSON report; piped, the table cuts no
    long column name (as inspect's)."""
    name = "a_column_name_long_enough_to_be_cut_at_the_width_of_a_terminal_" * 2
    src = tmp_path / "d.csv"
    src.write_text(f"{name},b\n1,5\n2,6\n3,8\n")
    assert run_cli("fit", src, "-o", tmp_path / "s.json").code == 0
    r = run_cli("check", src, "--stats", tmp_path / "s.json", "--max-psi", "inf", "--max-shift", "1e400", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["thresholds"] == {"max_shift": None, "max_null_rate_change": 0.1, "max_psi": None}
    assert [c["drift"] for c in report["columns"]] == [[], []]
    r = run_cli("check", src, "--stats", tmp_path / "s.json")
    assert r.code == 0 and name in r.text, r.text


def test_export_refuses_an_option_its_target_does_not_read(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("a,b\n1,5\n2,6\n3,8\n")
    assert run_cli("fit", src, "-o", tmp_path / "s.json").code == 0
    for target, extra, message in (("sql", ("--dtype", "float32"), "--dtype is an option of --to onnx, not of --to sql"),
                                   ("onnx", ("--columns", "a,b"), "--columns is an option of --to sql and --to sklearn"),
                                   ("torch", ("--table", "t"), "--table is an option of --to sql, not of --to torch")):
        assert_error(run_cli("export", tmp_path / "s.json", "--to", target, *extra, "-o", tmp_path / "x"), 2, message)
    r = run_cli("export", tmp_path / "s.json", "--to", "sql", "--table", "t", "--dialect", "sqlite", "--columns", "a,b")
    assert r.code == 0 and 'FROM "t"' in r.text, r.err


def test_inspect_leaves_unknown_statistics_blank(tmp_path):
    """An imported StandardScaler has no min and max, a MaxAbsScaler no mean: null in the file,
    blank in the table (not nan)."""
    from sklearn.preprocessing import MaxAbsScaler

    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [3.0, -5.0, 6.0]})
    for est in (StandardScaler().fit(frame), MaxAbsScaler().fit(frame)):
        normcli.from_sklearn(est).save(str(tmp_path / "s.json"))
        r = run_cli("inspect", tmp_path / "s.json")
        assert r.code == 0 and "nan" not in r.text, r.text


def _inspect_flags(stats) -> dict[str, list[str]]:
    """The flags cell of each column in ``inspect``'s table, split at its commas between flags."""
    shown = run_cli("inspect", stats, env={"COLUMNS": "300"})
    assert shown.code == 0, shown.err
    cells = [[c.strip() for c in line.split("│")] for line in shown.text.splitlines() if "│" in line]
    return {c[1]: [f for f in c[-2].split(", ") if f] for c in cells}


def test_inspect_shows_options_and_robust_center_and_scale(tmp_path):
    """Options that are not the defaults are flags, as the file spells them, and robust shows the
    median and spread it divides by, as scikit-learn's RobustScaler fits them (an exact sketch)."""
    from sklearn.preprocessing import RobustScaler

    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"a": rng.normal(3, 2, 150).round(3), "b": rng.exponential(5, 150).round(3)})
    src = tmp_path / "d.csv"
    frame.to_csv(src, index=False)
    for qr in ((25.0, 75.0), (10.0, 90.0)):
        stats = tmp_path / f"r{qr[0]:g}.json"
        assert run_cli("fit", src, "--method", "robust", "--quantile-range", f"{qr[0]:g},{qr[1]:g}",
                       "-o", stats).code == 0
        ref = RobustScaler(quantile_range=qr).fit(frame)
        label = "IQR" if qr == (25.0, 75.0) else f"q{qr[0]:g}-q{qr[1]:g}"
        for i, (name, flags) in enumerate(_inspect_flags(stats).items()):
            found = dict(f.split("=") for f in flags if "=" in f and not f.startswith("sketch"))
            assert float(found["median"]) == pytest.approx(ref.center_[i], rel=1e-5)  # shown with 6 digits
            assert float(found[label]) == pytest.approx(ref.scale_[i], rel=1e-5)
            assert ("quantile_range" in found) == (qr != (25.0, 75.0))
    stats = tmp_path / "z.json"
    assert run_cli("fit", src, "--ddof", "1", "--clip-sigma", "3", "--fill-missing", "-o", stats).code == 0
    assert {f for f in _inspect_flags(stats)["a"]} == {"ddof=1", "clip_sigma=3", "fill_missing"}
    assert run_cli("fit", src, "--method", "minmax", "--range=-1,1", "-o", stats).code == 0
    assert _inspect_flags(stats)["b"] == ["range=-1,1"]
    assert run_cli("fit", src, "-o", stats).code == 0
    assert _inspect_flags(stats) == {"a": [], "b": []}  # the defaults say nothing


def test_merge_refuses_one_stats_file_named_twice(tmp_path):
    """Fitted on stdin, the file has no input fingerprints: the path itself (or a link to it) tells."""
    r = run_cli("fit", "-", "-o", tmp_path / "s.json", stdin=b"x\n1\n2\n")
    assert r.code == 0, r.err
    (tmp_path / "link.json").symlink_to(tmp_path / "s.json")
    for other in ("s.json", "link.json"):
        assert_error(run_cli("merge", tmp_path / "s.json", tmp_path / other), 4, "are the same stats file")
        with pytest.raises(normcli.NormcliError, match="are the same stats file"):
            normcli.merge(str(tmp_path / "s.json"), str(tmp_path / other))


@pytest.mark.parametrize("where", [(), ("fitted_on",), ("fitted_on", "inputs", 0), ("columns", "price", "options"),
                                   ("columns", "price", "stats")])
def test_an_unknown_key_anywhere_in_the_stats_file_is_refused_naming_it(tmp_path, stats_file, sample_csv, where):
    """A key the format does not have is a typo or a file of another tool: every command that
    reads the file refuses it (exit 4), naming where it is, as the README's Guarantees say."""
    doc = json.loads(stats_file.read_text())
    node = doc
    for step in where:
        node = node[step]
    node["host"] = "m1"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    place = ".".join(str(s) for s in where)
    message = f"{place + ': ' if place else ''}Additional properties are not allowed ('host' was unexpected)"
    for args in (["inspect", edited], ["transform", sample_csv, "--stats", edited],
                 ["merge", edited, stats_file], ["fit", sample_csv, "--update", edited, "-o", tmp_path / "u.json"]):
        assert_error(run_cli(*args), 4, message)
    assert not (tmp_path / "u.json").exists()


def test_an_input_read_with_the_wrong_delimiter_is_said_to_be_one_column(tmp_path):
    """The stats file does not record the delimiter: read with another, the input is one column
    named 'id;x;y', and the error says so rather than only that 'x' is missing."""
    src = tmp_path / "semi.csv"
    src.write_text("id;x;y\n1;1.5;2\n2;2.5;3\n4;4.5;7\n")
    assert run_cli("fit", src, "--delimiter", ";", "-o", tmp_path / "s.json").code == 0
    hint = "; the input reads as the one column 'id;x;y': is its delimiter ';' (--delimiter)?"
    assert_error(run_cli("transform", src, "--stats", tmp_path / "s.json"), 4,
                 "column 'id' of the stats file is not in the input (and 2 more)" + hint)
    assert_error(run_cli("check", src, "--stats", tmp_path / "s.json"), 4,
                 f"column 'id' of the stats file is not in '{src}'" + hint)
    assert_error(run_cli("fit", src, "-o", tmp_path / "t.json"), 3, "no numeric columns to fit (name them with --columns)" + hint)
    for args in (["-c", "x"], ["-m", "minmax:x"], ["-g", "x"]):
        assert_error(run_cli("fit", src, *args, "-o", tmp_path / "t.json"), 3, "column 'x' is not in the input" + hint)
    (tmp_path / "one.csv").write_text("v\n1\n2\n")  # one column, no separator in its name: no hint
    assert_error(run_cli("transform", tmp_path / "one.csv", "--stats", tmp_path / "s.json"), 4,
                 "column 'id' of the stats file is not in the input (and 2 more)")
    assert "delimiter" not in run_cli("transform", tmp_path / "one.csv", "--stats", tmp_path / "s.json").err
    r = run_cli("transform", src, "--stats", tmp_path / "s.json", "--delimiter", ";")
    assert r.code == 0, r.err
    x = np.array([1.5, 2.5, 4.5])
    np.testing.assert_allclose(pd.read_csv(io.BytesIO(r.out), sep=";")["x"], (x - x.mean()) / x.std(), rtol=1e-15)


def test_messages_show_control_characters_of_the_data_escaped(tmp_path):
    """A NUL or an escape sequence in a value or a column name reaches stderr escaped (a
    terminal would act on them), a line break too (the error stays one line), and a no-break
    space shows as what it is."""
    src = tmp_path / "c.csv"
    src.write_bytes(b'id,"we\x1b[31mred",x\n1,1,1.5\0\n2,2,2.5\n3,oops,3.5\n')
    cases = [([], "column 'we\\x1b[31mred': value 'oops' on line 4 is not a number"),
             (["--columns", "x"], "'1.5\\x00' on line 2 is not a number")]
    for args, shown in cases:
        r = run_cli("fit", src, *args, "-o", tmp_path / "s.json")
        assert_error(r, 3, shown)
        assert r.err.isprintable() is False and r.err[:-1].isprintable(), r.err  # only the final newline
    src.write_bytes(b'x\n1\n\xc2\xa03\n"4\n5"\n')
    assert_error(run_cli("fit", src, "-c", "x", "-o", tmp_path / "s.json"), 3, "'\\xa03' on line 3 is not a number")


def test_tables_show_control_characters_of_names_escaped(tmp_path):
    """inspect's and check's tables printed a column name's escape sequences, NUL and line
    breaks raw (a terminal acts on them; a line break split a row), where errors escape them."""
    src = tmp_path / "c.csv"
    src.write_bytes(b'"a\x1b[31mRED\nFAKE\x07",b\n1,2\n3,5\n')
    assert run_cli("fit", src, "-m", "layer:b", "-o", tmp_path / "s.json").code == 0
    for args in (["inspect", tmp_path / "s.json"], ["check", src, "--stats", tmp_path / "s.json"]):
        r = run_cli(*args, env={"COLUMNS": "200"})
        assert r.code == 0, r.err
        assert "\x1b" not in r.text and "\x07" not in r.text and "FAKE\\x07" in r.text, r.text
        row = next(line for line in r.text.splitlines() if "RED" in line)
        assert "a\\x1b[31mRED\\nFAKE\\x07" in row and row.count("\u2502") >= 3


def test_a_file_name_that_is_not_utf8_is_shown_with_its_bytes_escaped(tmp_path):
    """Its byte 0xff showed as Python's stand-in '\\udcff' in messages, and JSON events held it
    as a lone surrogate, which a strict reader refuses: both now read '\\xff', as the
    shell's $'\\xff' names the file."""
    src = os.fsdecode(bytes(tmp_path) + b"/bad\xff.csv")
    with open(src, "wb") as f:
        f.write(b"x\n1\n2\n")
    missing = os.fsdecode(bytes(tmp_path) + b"/miss\xfe.csv")
    assert_error(run_cli("fit", src, missing), 5, f"cannot read '{tmp_path}/miss\\xfe.csv'")
    r = run_cli("fit", src, "-o", tmp_path / "s.json", "--log-format", "json")
    assert r.code == 0, r.err
    events = [json.loads(line) for line in r.err.splitlines()]
    for event in events:  # every string UTF-8 can hold: no lone surrogate
        json.dumps(event, ensure_ascii=False).encode("utf-8")
    assert {e["path"] for e in events if "path" in e} == {f"{tmp_path}/bad\\xff.csv"}


def test_a_huge_bad_value_in_the_stats_file_is_not_echoed_whole(tmp_path, stats_file):
    """The error quotes the offending key or value: cut short, the line stays a line."""
    for column, key, value, message in (("price", "x" * 100_000, 1, "columns.price.stats: Additional properties are "
                                                                     "not allowed ('xxx"),
                                        ("units", "mean", "y" * 100_000, "columns.units.stats.mean: 'yyy")):
        doc = json.loads(stats_file.read_text())
        doc["columns"][column]["stats"][key] = value
        (tmp_path / "big.json").write_text(json.dumps(doc))
        line = assert_error(run_cli("inspect", tmp_path / "big.json"), 4, message)
        assert len(line) < 500 and line.endswith("...")


@pytest.mark.parametrize("low", ["-1.7976931348623157e308", "0"])
def test_statistics_at_the_largest_double_load_without_numpy_warnings(tmp_path, low):
    # The loader's check of the mean against [min, max] widens them a little: at +-DBL_MAX that
    # overflows to inf, which is still a right bound, and must not print NumPy's warning.
    path = tmp_path / "w.csv"
    path.write_text(f"x\n1.7976931348623157e308\n{low}\n")
    assert run_cli("fit", path, "-m", "maxabs", "-o", tmp_path / "s.json").code == 0
    for args in (["transform", path], ["inverse", path], ["inspect", "--json"]):
        r = run_cli(*args, "--stats", tmp_path / "s.json") if args[0] != "inspect" else \
            run_cli("inspect", tmp_path / "s.json", "--json")
        assert r.code == 0 and r.err == "", (args, r.err)
    values = [float(v) for v in run_cli("transform", path, "--stats", tmp_path / "s.json").text.split()[1:]]
    assert values == [1.0, float(low) / 1.7976931348623157e308]


def test_an_empty_output_path_is_a_usage_error(tmp_path, sample_csv, stats_file):
    """``-o "$OUT"`` with OUT unset: transform blamed standard output ("Is a directory", exit 5),
    the others '' (exit 5). It names no file: exit 2, nothing written, stdout untouched."""
    for args in (["transform", sample_csv, "--stats", stats_file, "-o", ""],
                 ["inverse", sample_csv, "--stats", stats_file, "-o", ""],
                 ["fit", sample_csv, "-o", ""], ["merge", stats_file, "-o", ""],
                 ["export", stats_file, "--to", "sql", "-o", ""],
                 ["fit-transform", sample_csv, "--stats-out", "", "-o", tmp_path / "t.csv"],
                 ["fit-transform", sample_csv, "--stats-out", tmp_path / "t.json", "-o", ""]):
        r = run_cli(*args, cwd=tmp_path)
        assert_error(r, 2, "an empty output path names no file (- or no -o writes to stdout)")
        assert r.out == b"" and os.listdir(tmp_path) == [stats_file.name], args
