"""Cron and pipeline operations through the real CLI: many inputs, merge, update, check,
fit-transform, exit codes, pipes, signals and JSON logs. References are computed with NumPy."""
from __future__ import annotations

import glob
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, read_csv_exact, run_cli
from reliability.helpers import assert_error
import normcli
import normcli.engine
from normcli import errors

TOL = 1e-12


def day_frame(day: int, n: int = 400, shift: float = 0.0, seed: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed if seed is not None else day)
    x = rng.normal(100.0, 5.0, n) + shift
    y = rng.normal(0.0, 1.0, n)
    y[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({"id": [f"{day:02d}-{i:05d}" for i in range(n)], "x": x, "y": y})


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, float_format="%.17g")
    return path


def load_stats(path: Path) -> dict:
    return json.loads(path.read_text())


def assert_moments(col: dict, values: np.ndarray) -> None:
    v = values[~np.isnan(values)]
    st = col["stats"]
    assert st["count"] == v.size
    assert st["nulls"] == values.size - v.size
    assert abs(st["mean"] - v.mean()) <= TOL * abs(v.mean())
    assert abs(st["m2"] / st["count"] - v.var()) <= 1e-11 * v.var()
    assert st["min"] == v.min() and st["max"] == v.max()


def csv_values(path: Path, col: str) -> np.ndarray:
    return pd.read_csv(path)[col].to_numpy(dtype=np.float64)


# -- many inputs -------------------------------------------------------------------------------


def test_fit_directory_of_csv_equals_numpy_over_all_files(tmp_path):
    frames = [day_frame(d) for d in (1, 2, 3)]
    write_csv(frames[0], tmp_path / "in" / "a.csv")
    write_csv(frames[1], tmp_path / "in" / "sub" / "b.csv")
    write_csv(frames[2], tmp_path / "in" / "c.csv")
    (tmp_path / "in" / ".hidden.csv").write_text("x\nnot a number\n")
    r = run_cli("fit", tmp_path / "in", "-o", tmp_path / "s.json")
    assert r.code == 0, r.err
    doc = load_stats(tmp_path / "s.json")
    allx = np.concatenate([f["x"].to_numpy() for f in frames])
    assert_moments(doc["columns"]["x"], allx)
    paths = [Path(i["path"]).name for i in doc["fitted_on"]["inputs"]]
    assert paths == ["a.csv", "c.csv", "b.csv"]  # sorted by path: in/a, in/c, in/sub/b
    assert doc["fitted_on"]["rows"] == 1200


def test_fit_hive_partitioned_parquet_directory(tmp_path):
    frames = {}
    for day in ("2024-01-01", "2024-01-02"):
        df = day_frame(int(day[-1]))[["x", "y"]]
        frames[day] = df
        part = tmp_path / "ds" / f"day={day}"
        part.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), part / "part-0.parquet",
                       row_group_size=100)
    r = run_cli("fit", tmp_path / "ds", "-o", tmp_path / "s.json")
    assert r.code == 0, r.err
    doc = load_stats(tmp_path / "s.json")
    assert list(doc["columns"]) == ["x", "y"]  # the partition key is text, not fitted
    assert_moments(doc["columns"]["y"], np.concatenate([f["y"].to_numpy() for f in frames.values()]))
    # the key is a column: it can be excluded or named, and a numeric-only plan ignores it
    r = run_cli("fit", tmp_path / "ds", "--columns", "day", "-o", tmp_path / "t.json")
    assert r.code == errors.EXIT_DATA and "'day' is not numeric" in r.err


def test_a_hive_directory_whose_files_hold_their_keys_reads_the_files_columns(tmp_path):
    """Polars' write_parquet(partition_by=...) keeps the key in each file as well (an integer
    here, text in the directory name): the file's column is the one read, and written back."""
    import polars as pl

    df = day_frame(4)[["x"]].assign(n=np.arange(400) % 2 + 1)
    pl.from_pandas(df).write_parquet(tmp_path / "ds", partition_by="n")
    r = run_cli("fit", tmp_path / "ds", "--columns", "x", "-o", tmp_path / "s.json")
    assert r.code == 0, r.err
    assert_moments(load_stats(tmp_path / "s.json")["columns"]["x"], df["x"].to_numpy())
    r = run_cli("transform", tmp_path / "ds", "--stats", tmp_path / "s.json", "-o", str(tmp_path / "out") + "/")
    assert r.code == 0, r.err
    x = df["x"].to_numpy()
    for n in (1, 2):
        (name,) = (tmp_path / "out" / f"n={n}").iterdir()
        got = pq.read_table(name)
        assert got.column_names == ["x", "n"] and set(got.column("n").to_pylist()) == {n}
        np.testing.assert_allclose(got.column("x").to_numpy(), ((x - np.nanmean(x)) / np.nanstd(x))[df["n"] == n],
                                   rtol=1e-12, atol=1e-12)


def test_transform_hive_directory_grouped_by_partition_key(tmp_path):
    """Stats grouped by a partition key apply to the directory: the key comes from the names."""
    frames = {}
    for store, shift in (("a", 0.0), ("b", 40.0)):
        df = day_frame(3, shift=shift, seed=len(frames))[["x", "y"]]
        frames[store] = df
        part = tmp_path / "ds" / f"store={store}"
        part.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), part / "part-0.parquet")
    assert run_cli("fit", tmp_path / "ds", "--group-by", "store", "-o", tmp_path / "s.json").code == 0
    for command, extra in (("transform", ()), ("transform", ("--to", "csv")), ("inverse", ())):
        out = tmp_path / f"out-{command}-{len(extra)}"
        src = tmp_path / "out-transform-0" if command == "inverse" else tmp_path / "ds"
        r = run_cli(command, src, "--stats", tmp_path / "s.json", "-o", str(out) + "/", *extra)
        assert r.code == 0, r.err
        for store, df in frames.items():
            name = out / f"store={store}" / ("part-0.csv" if extra else "part-0.parquet")
            got = pd.read_csv(name) if extra else pq.read_table(name).to_pandas()
            assert list(got.columns) == ["x", "y"]  # the key stays in the directory name
            for col in ("x", "y"):
                v = df[col].to_numpy()
                mean, std = np.nanmean(v), np.nanstd(v)
                expected = v if command == "inverse" else (v - mean) / std
                assert np.allclose(got[col].to_numpy(), expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    # into one file the key has no directory name to live in: it stays a column
    (tmp_path / "one").mkdir()
    os.rename(tmp_path / "ds" / "store=b", tmp_path / "one" / "store=b")
    r = run_cli("transform", tmp_path / "one", "--stats", tmp_path / "s.json", "-o", tmp_path / "b.parquet")
    assert r.code == 0, r.err
    got = pq.read_table(tmp_path / "b.parquet").to_pandas()
    assert list(got.columns) == ["x", "y", "store"] and set(got["store"]) == {"b"}
    v = frames["b"]["x"].to_numpy()
    assert np.allclose(got["x"].to_numpy(), (v - v.mean()) / v.std(), rtol=1e-12, atol=1e-12)


def test_a_failed_input_leaves_no_directory_it_made(tmp_path):
    write_csv(day_frame(1), tmp_path / "in" / "a" / "x.csv")
    bad = day_frame(2).astype({"x": object})
    bad.loc[len(bad) - 1, "x"] = "abc"  # found bad in its rows, after the output of a is written
    write_csv(bad, tmp_path / "in" / "b" / "deep" / "x.csv")
    assert run_cli("fit", tmp_path / "in" / "a", "-o", tmp_path / "s.json").code == 0
    (tmp_path / "out" / "b").mkdir(parents=True)  # there before the run: kept
    r = run_cli("transform", tmp_path / "in", "--stats", tmp_path / "s.json", "-o", str(tmp_path / "out") + "/")
    assert r.code == errors.EXIT_DATA, r.err
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")) == [
        "a", "a/x.csv", "b"]  # the first input's output is whole; b/deep is gone
    r = run_cli("transform", tmp_path / "in" / "b", "--stats", tmp_path / "s.json", "-o", str(tmp_path / "new") + "/")
    assert r.code == errors.EXIT_DATA and not (tmp_path / "new").exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_input_lacking_a_fitted_column_fails_the_run_before_any_output(tmp_path, fmt):
    """Its header (or Parquet footer) tells: the run stops before the first output is written,
    as for a missing input, not after the outputs of the inputs ahead of it."""
    def write(df, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path, index=False)

    write(day_frame(1), tmp_path / "in" / f"a.{fmt}")
    write(day_frame(2)[["id", "y"]], tmp_path / "in" / f"b.{fmt}")  # lacks x
    assert run_cli("fit", tmp_path / "in" / f"a.{fmt}", "-o", tmp_path / "s.json").code == 0
    for command in ("transform", "inverse"):
        r = run_cli(command, tmp_path / "in", "--stats", tmp_path / "s.json", "-o", str(tmp_path / "out") + "/")
        assert r.code == errors.EXIT_STATS and r.err == (f"Error: '{tmp_path / 'in' / f'b.{fmt}'}': column 'x' of the "
                                                         "stats file is not in the input\n"), r.err
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["transform", "inverse"])
def test_a_missing_one_of_several_inputs_fails_before_any_output_is_written(tmp_path, command):
    a = write_csv(day_frame(1), tmp_path / "in" / "a.csv")
    assert run_cli("fit", a, "-o", tmp_path / "s.json").code == 0
    missing = tmp_path / "in" / "b.csv"
    out = str(tmp_path / "out") + "/"
    r = run_cli(command, a, missing, "--stats", tmp_path / "s.json", "-o", out)
    assert r.code == errors.EXIT_IO, r.err
    assert r.err == f"Error: cannot read '{missing}': No such file or directory\n", r.err
    assert not (tmp_path / "out").exists()  # not even the output of a.csv, which comes first
    write_csv(day_frame(2), missing)
    r = run_cli(command, a, missing, "--stats", tmp_path / "s.json", "-o", out)
    assert r.code == 0, r.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.csv", "b.csv"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_wide_fit_gives_each_column_the_statistics_a_narrow_one_does(tmp_path, fmt):
    """Many columns are summed over one 2-D array: each column's statistics must be those of a
    fit of that column alone, bit for bit, and right against pandas and an exact mean."""
    rng = np.random.default_rng(11)
    n, k = 3000, 40
    frame = pd.DataFrame({f"c{j}": rng.normal(j, 1 + j, n) for j in range(k)})
    frame["c3"] = 1e9 + rng.normal(0, 1e-3, n)  # offset: the shifted sums must hold it
    frame["c5"] = 2.5  # constant
    frame.loc[rng.random(n) < 0.2, "c7"] = np.nan  # nulls
    frame.loc[200:1500, "c9"] = np.nan  # empty for whole pieces
    frame.insert(0, "id", [f"r{i}" for i in range(n)])
    path = tmp_path / f"w.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
    env = {"NORMCLI_BLOCK_SIZE": "16384" if fmt == "csv" else "200"}  # many pieces, many merges
    assert run_cli("fit", path, "-o", tmp_path / "wide.json", env=env).code == 0
    wide = load_stats(tmp_path / "wide.json")["columns"]
    assert list(wide) == [f"c{j}" for j in range(k)]
    for name in ("c0", "c3", "c5", "c7", "c9", f"c{k - 1}"):
        assert run_cli("fit", path, "-c", name, "-o", tmp_path / "one.json", env=env).code == 0
        assert load_stats(tmp_path / "one.json")["columns"][name] == wide[name], name
    for name in frame.columns[1:]:
        if name != "c3":  # NumPy's own variance is 2e-8 off there: the exact one below
            assert_moments(wide[name], frame[name].to_numpy())
        v = frame[name].dropna().to_numpy()
        assert (wide[name]["stats"]["min"], wide[name]["stats"]["max"]) == (v.min(), v.max())
    from fractions import Fraction

    values = [Fraction(float(v)) for v in frame["c3"]]
    mean = sum(values) / n
    st = wide["c3"]["stats"]
    assert abs(Fraction(st["mean"]) + Fraction(st["mean_lo"]) - mean) <= Fraction(1e-15) * mean
    var = sum((v - mean) ** 2 for v in values) / n
    assert abs(Fraction(st["m2"]) / n / var - 1) <= Fraction(1e-12)


def test_fit_glob_and_duplicate_paths_are_read_once(tmp_path):
    a = write_csv(day_frame(1), tmp_path / "d" / "day1.csv")
    write_csv(day_frame(2), tmp_path / "d" / "day2.csv")
    r = run_cli("fit", str(tmp_path / "d" / "day*.csv"), str(a), "-o", tmp_path / "s.json")
    assert r.code == 0, r.err
    assert load_stats(tmp_path / "s.json")["fitted_on"]["rows"] == 800
    r = run_cli("fit", str(tmp_path / "d" / "nothing*.csv"))
    assert r.code == errors.EXIT_IO and "no file matches" in r.err


def test_transform_many_inputs_to_directory_keeps_relative_names(tmp_path):
    frames = {"a.csv": day_frame(1), "sub/b.csv": day_frame(2)}
    for name, df in frames.items():
        write_csv(df, tmp_path / "in" / name)
    assert run_cli("fit", tmp_path / "in", "-o", tmp_path / "s.json").code == 0
    r = run_cli("transform", tmp_path / "in", "--stats", tmp_path / "s.json", "-o", str(tmp_path / "out") + "/")
    assert r.code == 0, r.err
    allx = np.concatenate([f["x"].to_numpy() for f in frames.values()])
    for name, df in frames.items():
        out = pd.read_csv(tmp_path / "out" / name, dtype={"id": str})
        assert out["id"].tolist() == df["id"].tolist()
        expected = (df["x"].to_numpy() - allx.mean()) / allx.std()
        assert np.max(np.abs(out["x"].to_numpy() - expected)) < 1e-12
    assert not list((tmp_path / "out").rglob("*normcli-tmp"))
    # --to changes the extension; several inputs without a directory are a usage error
    r = run_cli("transform", str(tmp_path / "in" / "**" / "*.csv"), "--stats", tmp_path / "s.json",
                "-o", str(tmp_path / "pq") + "/", "--to", "parquet")
    assert r.code == 0, r.err
    assert sorted(p.relative_to(tmp_path / "pq").as_posix() for p in (tmp_path / "pq").rglob("*.parquet")) == \
        ["a.parquet", "sub/b.parquet"]
    r = run_cli("transform", tmp_path / "in", "--stats", tmp_path / "s.json")
    assert r.code == errors.EXIT_USAGE and "-o DIR/" in r.err and r.out == b""


@pytest.mark.parametrize("to,names", [("csv", ["a.csv.gz", "b.csv"]), ("tsv", ["a.tsv.gz", "b.tsv"]),
                                      ("parquet", ["a.parquet", "b.parquet"])])
def test_a_gzip_input_gives_a_gzip_output_in_either_text_format(tmp_path, to, names):
    """--to keeps the compression of a text input (as an output named .gz is written gzipped),
    whichever text format it names; Parquet is never gzipped."""
    import gzip

    frames = {"a": day_frame(1), "b": day_frame(2)}
    (tmp_path / "in").mkdir()
    with gzip.open(tmp_path / "in" / "a.csv.gz", "wt") as f:
        frames["a"].to_csv(f, index=False)
    write_csv(frames["b"], tmp_path / "in" / "b.csv")
    assert run_cli("fit", tmp_path / "in", "-o", tmp_path / "s.json").code == 0
    r = run_cli("transform", tmp_path / "in", "--stats", tmp_path / "s.json", "-o", str(tmp_path / "out") + "/", "--to", to)
    assert r.code == 0, r.err
    assert sorted(os.listdir(tmp_path / "out")) == names
    allx = np.concatenate([f["x"].to_numpy() for f in frames.values()])
    for name, df in zip(names, frames.values()):
        path = tmp_path / "out" / name
        if to == "parquet":
            out = pq.read_table(path).to_pandas()
        else:
            assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
            out = pd.read_csv(path, sep="\t" if to == "tsv" else ",", dtype={"id": str})
        np.testing.assert_allclose(out["x"], (df["x"] - allx.mean()) / allx.std(), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_fit_update_and_check_read_a_named_pipe(tmp_path):
    """A pipe has no fingerprint (hashing it would consume the data): fit, fit --update and
    check read it once, as transform does, and record no size for it."""
    import threading

    df = day_frame(1)
    src = write_csv(df, tmp_path / "d.csv")
    pipe = tmp_path / "p.csv"
    os.mkfifo(pipe)

    def feed() -> None:
        with open(pipe, "wb") as f:
            f.write(src.read_bytes())

    for args in (["fit", pipe, "-o", tmp_path / "s.json"], ["fit", pipe, "--update", tmp_path / "u.json"],
                 ["check", pipe, "--stats", tmp_path / "s.json", "--json"]):
        if args[2] == "--update":
            assert run_cli("fit", src, "-o", tmp_path / "u.json").code == 0
        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        r = run_cli(*args, timeout=60)
        writer.join(5)
        assert r.code == 0, r.err
    doc = load_stats(tmp_path / "s.json")
    assert doc["fitted_on"]["inputs"] == [{"path": str(pipe), "rows": 400, "bytes": None}]
    assert_moments(doc["columns"]["x"], df["x"].to_numpy())
    updated = load_stats(tmp_path / "u.json")  # the pipe's rows were merged in: twice the data
    assert_moments(updated["columns"]["x"], np.concatenate([df["x"].to_numpy()] * 2))
    assert json.loads(r.text)["rows"] == 400


def test_an_error_in_one_of_several_inputs_names_that_input(tmp_path):
    """"line 3" alone does not say which file: with several inputs the error names it, for
    fit and transform; one input's errors stay as they are (the file is the one named)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("x\n1\n2\n")
    (tmp_path / "in" / "b.csv").write_text("x\n3\n4\n")
    assert run_cli("fit", tmp_path / "in", "-o", tmp_path / "s.json").code == 0
    (tmp_path / "in" / "b.csv").write_text("x\n3\nabc\n")
    bad = tmp_path / "in" / "b.csv"
    for args in (["fit", tmp_path / "in", "-o", tmp_path / "t.json"],
                 ["transform", tmp_path / "in", "--stats", tmp_path / "s.json", "-o", str(tmp_path / "out") + "/"]):
        r = run_cli(*args)
        assert r.code == 3 and r.err == f"Error: '{bad}': column 'x': value 'abc' on line 3 is not a number\n", r.err
    r = run_cli("transform", bad, "--stats", tmp_path / "s.json", "-o", tmp_path / "o.csv")
    assert r.code == 3 and r.err == "Error: column 'x': value 'abc' on line 3 is not a number\n", r.err
    (tmp_path / "in" / "b.csv").write_text("y\n3\n")
    r = run_cli("transform", tmp_path / "in", "--stats", tmp_path / "s.json", "-o", str(tmp_path / "out") + "/")
    assert r.code == 4 and r.err == f"Error: '{bad}': column 'x' of the stats file is not in the input\n", r.err


@pytest.mark.parametrize("first", ["header only", "empty column"])
def test_a_fit_of_several_inputs_does_not_depend_on_which_comes_first(tmp_path, first):
    # A day with no rows (or no values of a column so far) that sorts first: the types come from
    # the inputs that have values, as they would in the other order.
    day = day_frame(2)
    (tmp_path / "in").mkdir()
    head = "id,x,y\n" if first == "header only" else "id,x,y\n01-1,,5\n01-2,,6\n"
    (tmp_path / "in" / "2024-01-01.csv").write_text(head)
    write_csv(day, tmp_path / "in" / "2024-01-02.csv")
    r = run_cli("fit", tmp_path / "in", "-o", tmp_path / "s.json")
    assert r.code == 0 and "warning" not in r.err, r.err
    files = sorted((tmp_path / "in").iterdir())
    r = run_cli("fit", files[1], files[0], "-o", tmp_path / "r.json")
    assert r.code == 0, r.err
    doc, other = load_stats(tmp_path / "s.json"), load_stats(tmp_path / "r.json")
    assert list(doc["columns"]) == list(other["columns"]) == ["x", "y"]
    both = pd.concat([read_csv_exact(f) for f in files])
    for col in ("x", "y"):
        for fitted in (doc, other):
            assert_moments(fitted["columns"][col], both[col].to_numpy(dtype=np.float64))
    # no input with values: the column is left out, with a warning that says so
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "a.csv").write_text("id,x,y\na,,2\n")
    (tmp_path / "none" / "b.csv").write_text("id,x,y\nb,,4\n")
    r = run_cli("fit", tmp_path / "none", "-o", tmp_path / "n.json")
    assert r.code == 0 and "column 'x' has no values in the first block of any input" in r.err, r.err
    assert list(load_stats(tmp_path / "n.json")["columns"]) == ["y"]


# -- merge -------------------------------------------------------------------------------------


def test_merge_equals_one_fit_over_all_data(tmp_path):
    d1, d2 = day_frame(1), day_frame(2)
    write_csv(d1, tmp_path / "d1.csv")
    write_csv(d2, tmp_path / "d2.csv")
    for d in ("d1", "d2"):
        assert run_cli("fit", tmp_path / f"{d}.csv", "-o", tmp_path / f"{d}.json").code == 0
    r = run_cli("merge", tmp_path / "d1.json", tmp_path / "d2.json", "-o", tmp_path / "all.json")
    assert r.code == 0, r.err
    doc = load_stats(tmp_path / "all.json")
    for col in ("x", "y"):
        assert_moments(doc["columns"][col], np.concatenate([d1[col].to_numpy(), d2[col].to_numpy()]))
    assert doc["fitted_on"]["rows"] == 800
    # to stdout, strict JSON
    r = run_cli("merge", tmp_path / "d1.json", tmp_path / "d2.json")
    assert r.code == 0 and json.loads(r.text)["fitted_on"]["rows"] == 800


@pytest.mark.parametrize("grouped", [False, True])
def test_merge_of_files_whose_columns_come_in_another_order(tmp_path, grouped):
    # Shards written by different systems order their columns differently: merge, as fit over
    # both files and fit --update do, gives one fit over all the data, in the first file's order.
    d1, d2 = day_frame(1), day_frame(2)
    d2["g"] = d1["g"] = np.arange(len(d1)) % 3
    write_csv(d1[["g", "x", "y"]], tmp_path / "d1.csv")
    write_csv(d2[["y", "g", "x"]], tmp_path / "d2.csv")
    by = ["--group-by", "g"] if grouped else ["-c", "x,y"]
    for d in ("d1", "d2"):
        assert run_cli("fit", tmp_path / f"{d}.csv", *by, "-o", tmp_path / f"{d}.json").code == 0
    assert list(load_stats(tmp_path / "d2.json")["columns"]) == ["y", "x"]
    r = run_cli("merge", tmp_path / "d1.json", tmp_path / "d2.json", "-o", tmp_path / "all.json")
    assert r.code == 0, r.err
    doc = load_stats(tmp_path / "all.json")
    assert list(doc["columns"]) == ["x", "y"]
    both = pd.concat([d1, d2])
    for col in ("x", "y"):
        assert_moments(doc["columns"][col], both[col].to_numpy())
    if grouped:
        for key, part in both.groupby("g"):
            i = doc["group_keys"].index([str(key)])
            for col in ("x", "y"):
                stats, v = doc["columns"][col]["groups"], part[col].dropna().to_numpy()
                assert stats["count"][i] == len(v)
                # within float64's error of a sum of these values, against the exact mean
                assert abs(stats["mean"][i] + stats["mean_lo"][i] - math.fsum(v) / len(v)) <= 1e-14 * np.abs(v).mean()
                np.testing.assert_allclose(stats["m2"][i], ((v - v.mean()) ** 2).sum(), rtol=1e-11)


def test_merge_mismatch_and_overlap_are_stats_errors(tmp_path):
    write_csv(day_frame(1), tmp_path / "d1.csv")
    write_csv(day_frame(2), tmp_path / "d2.csv")
    assert run_cli("fit", tmp_path / "d1.csv", "-o", tmp_path / "z.json").code == 0
    assert run_cli("fit", tmp_path / "d2.csv", "-m", "minmax", "-o", tmp_path / "m.json").code == 0
    r = run_cli("merge", tmp_path / "z.json", tmp_path / "m.json", "-o", tmp_path / "bad.json")
    assert r.code == errors.EXIT_STATS
    assert "cannot merge: column 'x' is fitted as zscore in one file and minmax in the other" in r.err, r.err
    # options that differ are named in the stats file's terms, the rest left out
    assert run_cli("fit", tmp_path / "d2.csv", "--ddof", "1", "-o", tmp_path / "z1.json").code == 0
    r = run_cli("merge", tmp_path / "z.json", tmp_path / "z1.json", "-o", tmp_path / "bad.json")
    assert r.code == errors.EXIT_STATS
    assert "column 'x' is fitted with options ddof 0 in one file and ddof 1 in the other" in r.err, r.err
    r = run_cli("merge", tmp_path / "z.json", tmp_path / "z.json", "-o", tmp_path / "bad.json")
    assert r.code == errors.EXIT_STATS and "disjoint" in r.err
    # a quantile sketch in one file only would describe that file's values alone
    assert run_cli("fit", tmp_path / "d2.csv", "--sketch", "-o", tmp_path / "k.json").code == 0
    for pair in (("z.json", "k.json"), ("k.json", "z.json")):
        r = run_cli("merge", *(tmp_path / p for p in pair), "-o", tmp_path / "bad.json")
        assert r.code == errors.EXIT_STATS and "quantile sketch in one file only" in r.err, r.err
    # sketches of another accuracy: the merged one would be no better than the coarser
    assert run_cli("fit", tmp_path / "d1.csv", "-m", "robust", "-o", tmp_path / "r200.json").code == 0
    assert run_cli("fit", tmp_path / "d2.csv", "-m", "robust", "--sketch-k", "100", "-o", tmp_path / "r100.json").code == 0
    r = run_cli("merge", tmp_path / "r200.json", tmp_path / "r100.json", "-o", tmp_path / "bad.json")
    assert r.code == errors.EXIT_STATS and "fitted with --sketch-k 200 in one file and 100 in the other" in r.err, r.err
    assert not (tmp_path / "bad.json").exists()


# -- fit --update and the cron scenario -------------------------------------------------------


def test_two_day_cron_scenario(tmp_path):
    """fit day 1, update with day 2, update with day 2 again (skipped), check day 3 with drift."""
    days = {1: day_frame(1), 2: day_frame(2), 3: day_frame(3, shift=40.0)}
    for d, df in days.items():
        write_csv(df, tmp_path / f"day{d}.csv")
    stats = tmp_path / "stats.json"
    script = f"""
set -u
cd {tmp_path}
run() {{ {sys.executable} -m normcli "$@"; echo "$1=$?" >> codes.txt; }}
run fit day1.csv -o stats.json --sketch
run fit day2.csv --update stats.json
cp stats.json after_day2.json
run fit day2.csv --update stats.json 2> rerun.err
run check day3.csv --stats stats.json --json > drift.json
"""
    p = subprocess.run(["bash", "-c", script], capture_output=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    codes = (tmp_path / "codes.txt").read_text().split()
    assert codes == ["fit=0", "fit=0", "fit=0", f"check={errors.EXIT_DRIFT}"]
    doc = load_stats(stats)
    assert stats.read_bytes() == (tmp_path / "after_day2.json").read_bytes()  # the rerun changed nothing
    assert "skipped" in (tmp_path / "rerun.err").read_text()
    for col in ("x", "y"):
        assert_moments(doc["columns"][col], np.concatenate([days[1][col].to_numpy(), days[2][col].to_numpy()]))
    assert doc["fitted_on"]["rows"] == 800
    assert [Path(i["path"]).name for i in doc["fitted_on"]["inputs"]] == ["day1.csv", "day2.csv"]
    for entry in doc["fitted_on"]["inputs"]:
        import hashlib

        fp = entry["fingerprint"]
        data = Path(fp["path"]).read_bytes()
        assert fp["size"] == len(data) and fp["sha256"] == hashlib.sha256(data).hexdigest()
    report = json.loads((tmp_path / "drift.json").read_text())
    drifted = {c["column"]: c["drift"] for c in report["columns"]}
    assert "mean_shift" in drifted["x"] and drifted["y"] == []


def test_update_of_stats_read_from_a_pipe_needs_an_output(tmp_path):
    """Written back in place, the update would go into the pipe it was read from: lost (exit 0),
    or a hang once it fills the pipe. It is a usage error; with -o the pipe's stats are updated."""
    d1, d2 = day_frame(1), day_frame(2)
    assert run_cli("fit", write_csv(d1, tmp_path / "d1.csv"), "-o", tmp_path / "s.json").code == 0
    day2 = write_csv(d2, tmp_path / "d2.csv")
    stats = (tmp_path / "s.json").read_bytes()
    r = run_cli("fit", day2, "--update", "/dev/stdin", stdin=stats, timeout=60)
    assert r.code == errors.EXIT_USAGE and r.out == b""
    for named in ("/dev/stdin", "-"):
        r = run_cli("fit", day2, "--update", named, stdin=stats, timeout=60)
        assert r.code == errors.EXIT_USAGE and r.out == b""
        assert r.err == (f"Error: --update writes the stats file back in place, and '{named}' is standard input, "
                         "a pipe or a device: name the updated stats file with -o\n")
        r = run_cli("fit", day2, "--update", named, "-o", tmp_path / "u.json", stdin=stats, timeout=60)
        assert r.code == 0, r.err
        assert_moments(load_stats(tmp_path / "u.json")["columns"]["x"],
                       np.concatenate([d1["x"].to_numpy(), d2["x"].to_numpy()]))
    assert not Path("-").exists()


def test_stats_file_on_standard_input(tmp_path):
    """``--stats -`` (and inspect's, merge's ``-``) read the stats file from stdin, plain or gzip,
    as from its path; stdin named twice (data and stats) is a usage error, before anything is read."""
    import gzip

    d1, d2 = day_frame(1), day_frame(2)
    src = write_csv(d1, tmp_path / "d1.csv")
    assert run_cli("fit", src, "-o", tmp_path / "s.json").code == 0
    assert run_cli("fit", write_csv(d2, tmp_path / "d2.csv"), "-o", tmp_path / "s2.json").code == 0
    stats = (tmp_path / "s.json").read_bytes()
    for fed in (stats, gzip.compress(stats)):
        for args in (["transform", src], ["inverse", src], ["check", src, "--json"]):
            by_path = run_cli(*args, "--stats", tmp_path / "s.json")
            piped = run_cli(*args, "--stats", "-", stdin=fed)
            named = by_path.out.replace(f'"stats": "{tmp_path / "s.json"}"'.encode(), b'"stats": "-"')  # check's report names it
            assert (piped.code, piped.out) == (by_path.code, named) and by_path.out, piped.err
        assert run_cli("inspect", "-", "--json", stdin=fed).out == run_cli("inspect", tmp_path / "s.json", "--json").out
        merged = run_cli("merge", "-", tmp_path / "s2.json", stdin=fed)
        assert merged.code == 0, merged.err
        assert_moments(json.loads(merged.out)["columns"]["x"], np.concatenate([d1["x"].to_numpy(), d2["x"].to_numpy()]))
    for args in (["transform", "-", "--stats", "-"], ["check", "-", "--stats", "-"], ["merge", "-", "-"],
                 ["fit", "-", "--update", "-", "-o", tmp_path / "u.json"]):
        r = run_cli(*args, stdin=stats)
        assert (r.code, r.out) == (errors.EXIT_USAGE, b""), r.err
        assert r.err == "Error: stdin (-) can be read only once (as an input or as the stats file)\n"
    r = run_cli("transform", src, "--stats", "-", stdin=b"{")
    assert r.code == errors.EXIT_STATS and r.err.startswith("Error: stats file on standard input: not a valid stats file")


def test_update_with_a_changed_file_absorbs_it(tmp_path):
    src = write_csv(day_frame(1), tmp_path / "day.csv")
    assert run_cli("fit", src, "-o", tmp_path / "s.json").code == 0
    d2 = day_frame(2)
    write_csv(d2, src)  # same path, new content
    r = run_cli("fit", src, "--update", tmp_path / "s.json", "-o", tmp_path / "u.json")
    assert r.code == 0, r.err
    doc = load_stats(tmp_path / "u.json")
    assert_moments(doc["columns"]["x"], np.concatenate([day_frame(1)["x"].to_numpy(), d2["x"].to_numpy()]))
    # the file's own plan is kept: fit options are refused with --update
    r = run_cli("fit", src, "--update", tmp_path / "s.json", "-m", "minmax")
    assert r.code == errors.EXIT_USAGE
    # a new file lacking a fitted column: the stats file does not fit it
    (tmp_path / "nox.csv").write_text("id,y\n1,2\n")
    r = run_cli("fit", tmp_path / "nox.csv", "--update", tmp_path / "s.json")
    assert r.code == errors.EXIT_STATS and "'x'" in r.err


def test_update_keeps_sketches_of_robust_columns(tmp_path):
    d1, d2 = day_frame(1, n=60), day_frame(2, n=60)
    write_csv(d1, tmp_path / "d1.csv")
    write_csv(d2, tmp_path / "d2.csv")
    assert run_cli("fit", tmp_path / "d1.csv", "-m", "robust", "-o", tmp_path / "s.json").code == 0
    assert run_cli("fit", tmp_path / "d2.csv", "--update", tmp_path / "s.json").code == 0
    r = run_cli("transform", tmp_path / "d1.csv", "--stats", tmp_path / "s.json")
    x = np.concatenate([d1["x"].to_numpy(), d2["x"].to_numpy()])
    q25, q50, q75 = np.quantile(x, [0.25, 0.5, 0.75])
    out = pd.read_csv(__import__("io").BytesIO(r.out))["x"].to_numpy()
    assert np.max(np.abs(out - (d1["x"].to_numpy() - q50) / (q75 - q25))) < 1e-12


# -- check -------------------------------------------------------------------------------------


def _ecdf(sample: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.sort(sample), t, side="right") / sample.size


def test_check_metrics_against_numpy(tmp_path):
    fit_df = day_frame(1, n=150)  # few enough values for the sketch to be exact
    new_df = day_frame(2, n=120, shift=2.0)
    new_df.loc[:30, "y"] = np.nan
    write_csv(fit_df, tmp_path / "fit.csv")
    write_csv(new_df, tmp_path / "new.csv")
    assert run_cli("fit", tmp_path / "fit.csv", "--sketch", "-o", tmp_path / "s.json").code == 0
    r = run_cli("check", tmp_path / "new.csv", "--stats", tmp_path / "s.json", "--json",
                "--max-shift", "100", "--max-psi", "100", "--max-null-rate-change", "1")
    assert r.code == 0, r.err
    report = json.loads(r.text)
    cols = {c["column"]: c for c in report["columns"]}
    for name in ("x", "y"):
        a = fit_df[name].to_numpy()
        a = a[~np.isnan(a)]
        raw = new_df[name].to_numpy()
        b = raw[~np.isnan(raw)]
        c = cols[name]
        assert abs(c["mean_shift"] - (b.mean() - a.mean()) / a.std()) < 1e-9
        assert abs(c["std_ratio"] - b.std() / a.std()) < 1e-9
        rate_fit = fit_df[name].isna().mean()
        assert abs(c["null_rate_change"] - (np.isnan(raw).mean() - rate_fit)) < 1e-12
        assert c["out_of_range"] == np.mean((b < a.min()) | (b > a.max()))
        edges = np.quantile(a, np.arange(1, 10) / 10)
        e = np.bincount(np.searchsorted(edges, a, side="left"), minlength=10) / a.size
        o = np.bincount(np.searchsorted(edges, b, side="left"), minlength=10) / b.size
        e, o = np.maximum(e, 1e-4), np.maximum(o, 1e-4)
        assert abs(c["psi"] - np.sum((o - e) * np.log(o / e))) < 1e-9
        t = np.concatenate([a, b])
        ks = np.max(np.abs(_ecdf(a, t) - _ecdf(b, t)))
        assert abs(c["ks"] - ks) <= 1e-12  # both sketches hold every value: exact


@pytest.mark.parametrize("sizes", [(20, 7), (150, 120), (3, 200)])
def test_ks_distance_of_exact_sketches_is_scipys(sizes):
    from scipy.stats import ks_2samp

    from normcli import sketch
    from normcli.drift import ks_distance

    rng = np.random.default_rng(sum(sizes))
    a = rng.normal(0, 1, sizes[0])
    b = np.round(rng.normal(0.4, 1.5, sizes[1]), 1)  # ties within b and across both samples
    b[:2] = a[:2]
    sa, sb = sketch.new(), sketch.new()
    sa.update(a)
    sb.update(b)
    assert sketch.is_exact(sa) and sketch.is_exact(sb)
    assert abs(ks_distance(sa, sb) - ks_2samp(a, b).statistic) <= 1e-12


def test_ks_distance_of_estimating_sketches_within_their_rank_errors():
    from scipy.stats import ks_2samp

    from normcli import sketch
    from normcli.drift import ks_distance

    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 200_000), rng.standard_t(4, 150_000)
    sa, sb = sketch.new(), sketch.new()
    sa.update(a)
    sb.update(b)
    bound = sketch.rank_error(sa) + sketch.rank_error(sb)
    assert 0 < bound < 0.05
    assert abs(ks_distance(sa, sb) - ks_2samp(a, b).statistic) <= bound


def test_check_table_thresholds_and_exit_codes(tmp_path):
    write_csv(day_frame(1), tmp_path / "fit.csv")
    write_csv(day_frame(2), tmp_path / "same.csv")
    nulls = day_frame(3)
    nulls.loc[: len(nulls) // 2, "y"] = np.nan
    write_csv(nulls, tmp_path / "nulls.csv")
    assert run_cli("fit", tmp_path / "fit.csv", "-o", tmp_path / "s.json").code == 0
    r = run_cli("check", tmp_path / "same.csv", "--stats", tmp_path / "s.json")
    assert r.code == 0, r.err
    assert "mean shift" in r.text and r.err == ""
    r = run_cli("check", tmp_path / "nulls.csv", "--stats", tmp_path / "s.json")
    assert r.code == errors.EXIT_DRIFT and "null_rate_change" in r.text
    r = run_cli("check", tmp_path / "nulls.csv", "--stats", tmp_path / "s.json", "--max-null-rate-change", "0.9")
    assert r.code == 0
    # no sketch in the file: no PSI or KS, but the other metrics
    r = run_cli("check", tmp_path / "same.csv", "--stats", tmp_path / "s.json", "--json")
    c = json.loads(r.text)["columns"][0]
    assert c["psi"] is None and c["ks"] is None and c["mean_shift"] is not None


def test_check_of_statistics_without_a_mean_reports_no_shift(tmp_path):
    """A MaxAbsScaler imported from scikit-learn has no mean: the shift is undefined (null), not
    an infinite one, and is no drift."""
    pytest.importorskip("sklearn")
    from sklearn.preprocessing import MaxAbsScaler

    x = np.array([1.0, -3.0, 2.0, 5.0])
    normcli.from_sklearn(MaxAbsScaler().fit(x[:, None]), ["x"]).save(tmp_path / "s.json")
    (tmp_path / "d.csv").write_text("x\n" + "".join(f"{v}\n" for v in x))
    r = run_cli("check", tmp_path / "d.csv", "--stats", tmp_path / "s.json", "--json")
    assert r.code == 0, (r.err, r.text)
    c = json.loads(r.text)["columns"][0]
    assert c["mean_shift"] is None and c["drift"] == [] and c["out_of_range"] is None  # no fitted min, max


def test_check_shows_the_infinite_shift_of_a_constant_column(tmp_path):
    """A constant fitted column whose mean moved: drift, null in strict JSON, inf in the table
    (blank is for undefined metrics, as std_ratio here)."""
    (tmp_path / "fit.csv").write_text("k,x\n5,1\n5,2\n5,4\n")
    (tmp_path / "new.csv").write_text("k,x\n6,1\n6,2\n6,4\n")
    assert run_cli("fit", tmp_path / "fit.csv", "-o", tmp_path / "s.json").code == 0
    r = run_cli("check", tmp_path / "new.csv", "--stats", tmp_path / "s.json", "--json")
    assert r.code == errors.EXIT_DRIFT
    k, x = json.loads(r.text)["columns"]
    assert (k["mean_shift"], k["std_ratio"], k["drift"]) == (None, None, ["mean_shift"])
    assert (x["mean_shift"], x["drift"]) == (0.0, [])
    r = run_cli("check", tmp_path / "new.csv", "--stats", tmp_path / "s.json", env={"COLUMNS": "200"})
    row = next(line for line in r.text.splitlines() if line.strip("│ ").startswith("k "))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert r.code == errors.EXIT_DRIFT and cells[2] == "inf" and cells[3] == "" and cells[-1] == "mean_shift", r.text


@pytest.mark.parametrize("values", [["1", "inf", "2"], ["-inf", "3"], ["inf", "-inf", "0"],
                                    ["1e308", "1.7e308"] * 3, ["1", "1.7e308", "-1.7e308", "2"]])
def test_check_counts_new_infinite_values_as_drift(tmp_path, values):
    """New values with an infinity have an infinite mean (or, with both signs, one infinitely far
    from any number): the shift is infinite, which is drift. So is the shift of finite values
    near 1e308, whose sum overflows (it was a null shift, no drift, exit 0)."""
    (tmp_path / "fit.csv").write_text("x\n1\n2\n4\n")
    (tmp_path / "new.csv").write_text("x\n" + "".join(f"{v}\n" for v in values))
    assert run_cli("fit", tmp_path / "fit.csv", "-o", tmp_path / "s.json").code == 0
    r = run_cli("check", tmp_path / "new.csv", "--stats", tmp_path / "s.json", "--json")
    assert r.code == errors.EXIT_DRIFT, (r.err, r.text)
    (x,) = json.loads(r.text)["columns"]
    assert (x["mean_shift"], x["std_ratio"], x["drift"]) == (None, None, ["mean_shift"])
    assert x["count"] == len(values)
    assert x["out_of_range"] == pytest.approx(sum(not 1 <= float(v) <= 4 for v in values) / len(values))


@pytest.mark.parametrize("fitted_nulls, new_nulls, drift", [(300, 400, False), (300, 200, False), (50, 150, False),
                                                            (300, 401, True), (300, 199, True)])
def test_check_compares_a_null_rate_change_with_its_threshold_exactly(tmp_path, fitted_nulls, new_nulls, drift):
    """300 -> 400 nulls of 1,000 is a change of exactly 0.1, which is not above --max-null-rate-change
    0.1, whichever way it goes; in floats 0.4 - 0.3 is 0.10000000000000003, which was drift."""
    def write(nulls, path):  # a blank line is no row: an id beside the empty field
        path.write_text("id,x\n" + "".join(f"{i},\n" for i in range(nulls))
                        + "".join(f"{i},{i % 7}.5\n" for i in range(1000 - nulls)))

    write(fitted_nulls, tmp_path / "fit.csv")
    write(new_nulls, tmp_path / "new.csv")
    assert run_cli("fit", tmp_path / "fit.csv", "-o", tmp_path / "s.json").code == 0
    r = run_cli("check", tmp_path / "new.csv", "--stats", tmp_path / "s.json", "--json", "--max-shift", "inf")
    (_, x) = json.loads(r.text)["columns"]
    assert x["null_rate_change"] == pytest.approx((new_nulls - fitted_nulls) / 1000, abs=1e-15)
    assert (r.code, x["drift"]) == ((errors.EXIT_DRIFT, ["null_rate_change"]) if drift else (0, [])), r.text


def test_check_of_an_input_without_rows_says_so(tmp_path):
    """An empty extract (a header only) has no drift to find: exit 0, as documented, but with a
    warning, so that a cron job's log does not read as "no drift"."""
    (tmp_path / "fit.csv").write_text("x\n1\n2\n4\n")
    (tmp_path / "empty.csv").write_text("x\n")
    assert run_cli("fit", tmp_path / "fit.csv", "-o", tmp_path / "s.json").code == 0
    r = run_cli("check", tmp_path / "empty.csv", "--stats", tmp_path / "s.json", "--json")
    assert r.code == 0 and json.loads(r.text)["rows"] == 0
    assert r.err == "warning: the input has no rows: every metric is undefined, so no drift can be found\n"
    r = run_cli("check", tmp_path / "fit.csv", "--stats", tmp_path / "s.json", "--json")
    assert r.code == 0 and r.err == ""


def test_check_of_the_fitted_data_against_an_exact_sketch_has_a_psi_of_zero(tmp_path):
    """The sketch holds every value: the fitted shares are counts, as the new data's are, so the
    same data gives 0 (it gave about 1e-31, drift under --max-psi 0)."""
    rng = np.random.default_rng(1)
    (tmp_path / "fit.csv").write_text("x\n" + "".join(f"{float(v)!r}\n" for v in rng.normal(10, 2, 1000)))
    assert run_cli("fit", tmp_path / "fit.csv", "--sketch", "--sketch-k", "5000", "-o", tmp_path / "s.json").code == 0
    r = run_cli("check", tmp_path / "fit.csv", "--stats", tmp_path / "s.json", "--max-psi", "0", "--json")
    (x,) = json.loads(r.text)["columns"]
    assert (r.code, x["psi"], x["ks"], x["drift"]) == (0, 0.0, 0.0, []), r.text


# -- fit-transform -----------------------------------------------------------------------------


@pytest.mark.parametrize("from_stdin", [False, True, "gzip"])
def test_fit_transform_file_and_stdin(tmp_path, from_stdin):
    """From a file, from stdin, and from gzip on stdin (recognised by its first bytes, as by
    fit and transform); the JSON log names standard input "-", never the spooled copy."""
    import gzip

    df = day_frame(1)
    src = write_csv(df, tmp_path / "in.csv")
    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    args = ["fit-transform", "-" if from_stdin else src, "--stats-out", tmp_path / "s.json",
            "-o", tmp_path / "out.csv", "-m", "minmax:x", "--log-format", "json"]
    stdin = None if not from_stdin else gzip.compress(src.read_bytes()) if from_stdin == "gzip" else src.read_bytes()
    r = run_cli(*args, stdin=stdin, env={"TMPDIR": str(spool_dir)})
    assert r.code == 0, r.err
    paths = {json.loads(line).get("path") for line in r.err.splitlines()} - {None}
    assert paths == ({"-"} if from_stdin else {str(src)}), r.err
    x = df["x"].to_numpy()
    out = csv_values(tmp_path / "out.csv", "x")
    assert np.max(np.abs(out - (x - x.min()) / (x.max() - x.min()))) < 1e-12
    doc = load_stats(tmp_path / "s.json")
    assert doc["columns"]["x"]["method"] == "minmax"
    assert_moments(doc["columns"]["y"], df["y"].to_numpy())
    assert list(spool_dir.iterdir()) == []  # the spooled copy of stdin is gone
    if from_stdin:
        assert doc["fitted_on"]["inputs"][0]["path"] == "-"


# -- exit codes --------------------------------------------------------------------------------


def test_exit_code_table_in_readme_matches_errors():
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+(?:, \d+)*) \| (.+) \|$", readme, re.M))
    codes = {c for key in table for c in key.split(", ")}
    declared = {str(v) for k, v in vars(errors).items() if k.startswith("EXIT_")}
    assert codes == declared


def test_every_command_uses_the_exit_codes(tmp_path):
    write_csv(day_frame(1), tmp_path / "d.csv")
    (tmp_path / "bad.csv").write_text("x\n1\nabc\n")
    (tmp_path / "bad.json").write_text("{not json")
    assert run_cli("fit", tmp_path / "d.csv", "-o", tmp_path / "s.json").code == 0
    s, d = tmp_path / "s.json", tmp_path / "d.csv"
    cases = [
        (errors.EXIT_OK, ["inspect", s]),
        (errors.EXIT_USAGE, ["fit", d, "--bogus"]),
        (errors.EXIT_USAGE, ["transform", d, "--stats", s, "-o", d]),
        (errors.EXIT_USAGE, ["check", d, "--stats", s, "--max-shift", "-1"]),
        (errors.EXIT_USAGE, ["fit-transform", d]),
        (errors.EXIT_DATA, ["fit", tmp_path / "bad.csv", "--columns", "x"]),
        (errors.EXIT_STATS, ["transform", d, "--stats", tmp_path / "bad.json"]),
        (errors.EXIT_STATS, ["check", d, "--stats", tmp_path / "bad.json"]),
        (errors.EXIT_STATS, ["merge", s, tmp_path / "bad.json"]),
        (errors.EXIT_STATS, ["fit", d, "--update", tmp_path / "bad.json"]),
        (errors.EXIT_IO, ["fit", tmp_path / "missing.csv"]),
        (errors.EXIT_IO, ["merge", s, tmp_path / "missing.json"]),
        (errors.EXIT_IO, ["fit-transform", tmp_path / "missing.csv", "--stats-out", tmp_path / "x.json"]),
    ]
    for code, args in cases:
        r = run_cli(*args)
        assert r.code == code, (args, r.code, r.err)
        if code:
            assert r.err.count("\n") == 1 and r.err.startswith("Error: ") and "Traceback" not in r.err, r.err
            assert r.out == b""


# -- pipes, signals, logs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A CSV of a few tens of MB, large enough to be mid-stream when a signal arrives."""
    d = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(7)
    n = 1_500_000
    with open(d / "big.csv", "w") as f:
        f.write("x,y,label\n")
        block = 100_000
        for start in range(0, n, block):
            xs, ys = rng.normal(size=block), rng.normal(size=block)
            f.write("".join(f"{a:.6f},{b:.6f},r{start + i}\n" for i, (a, b) in enumerate(zip(xs, ys))))
    assert run_cli("fit", d / "big.csv", "-o", d / "s.json").code == 0
    return d


@pytest.mark.parametrize("to", ["csv", "parquet"])
def test_broken_pipe_is_quiet_success(big, to):
    cmd = (f"{sys.executable} -m normcli transform big.csv --stats s.json --to {to} 2>err.txt | head -c 20 "
           f">/dev/null; echo ${{PIPESTATUS[0]}}")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, cwd=big, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.decode().strip() == "0"
    assert (big / "err.txt").read_text() == ""


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, errors.EXIT_SIGTERM), (signal.SIGINT, errors.EXIT_SIGINT),
                                         (signal.SIGHUP, errors.EXIT_SIGHUP), (signal.SIGQUIT, errors.EXIT_SIGQUIT),
                                         (signal.SIGXCPU, errors.EXIT_SIGXCPU)])
def test_signal_stops_and_leaves_no_partial_output(big, tmp_path, signum, code):
    target = tmp_path / "out.csv"
    # The signal's default action in the child, whatever this process inherited: a test session
    # run in the background of a script ignores SIGINT and SIGQUIT, which normcli then keeps ignoring.
    p = subprocess.Popen([sys.executable, "-m", "normcli", "transform", big / "big.csv", "--stats", big / "s.json",
                          "-o", target], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "NORMCLI_THREADS": "1"},
                         preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not glob.glob(str(tmp_path / ".out.csv.*")) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.005)
    assert p.poll() is None, "finished before the signal could be sent"
    sent = time.monotonic()
    p.send_signal(signum)
    out, err = p.communicate(timeout=30)
    assert time.monotonic() - sent < 5
    assert p.returncode == code
    assert err.decode().count("\n") == 1 and "Traceback" not in err.decode()
    assert list(tmp_path.iterdir()) == []  # no target, no temporary file


# Signals sent as fast as they come to a process that starts one thread after another; the
# handler raises only while a start is in progress. CPython's Thread.start() races with such an
# exception: the new thread then died with "Exception ignored in thread started by ... KeyError".
_STARTS_UNDER_SIGNALS = """
import os, signal, subprocess, sys, threading
from normcli import threads

class Stop(Exception):
    pass

armed = False

def stop(signum, frame):
    global armed
    if armed:
        armed = False
        raise Stop()

signal.signal(signal.SIGTERM, stop)
KILLER = '''
import os, random, signal, sys, time
end = time.monotonic() + 2
while time.monotonic() < end:
    try:
        os.kill(int(sys.argv[1]), signal.SIGTERM)
    except ProcessLookupError:
        break
    time.sleep(random.uniform(0, 0.0005))
'''
killer = subprocess.Popen([sys.executable, "-c", KILLER, str(os.getpid())])
stopped = started = 0
while killer.poll() is None:
    try:
        thread = threading.Thread(target=int, daemon=True)  # referenced here: freed while disarmed
        armed = True
        threads.start(thread)
        armed = False
        started += 1
    except Stop:
        stopped += 1
print(stopped, started)
"""


def test_a_stopping_signal_during_a_thread_start_leaves_no_traceback():
    p = subprocess.run([sys.executable, "-c", _STARTS_UNDER_SIGNALS], capture_output=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stderr.decode() == "" and p.returncode == 0
    stopped, started = map(int, p.stdout.split())
    assert stopped > 100 and started > 100  # the signals did stop starts, and starts went on


def test_the_engine_starts_its_threads_with_the_stopping_signals_held(tmp_path, monkeypatch):
    from normcli.io import outfile

    held_at_start = []
    start = threading.Thread.start

    def recording(thread):
        held_at_start.append((thread.name.split("_")[0], signal.pthread_sigmask(signal.SIG_BLOCK, ())))
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", recording)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    assert list(normcli.engine.ordered_map(range(20), abs, workers=3)) == list(range(20))
    monkeypatch.setattr(outfile.Writeback, "STEP", 1)
    target = tmp_path / "out"
    target.write_bytes(b"x" * 10)
    writeback = outfile.Writeback(str(target))
    writeback.written()
    writeback.finish()
    stopping = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGXCPU}
    names = {name for name, _ in held_at_start}
    assert names == {"normcli-reader", "normcli-worker", "normcli-writeback"}
    assert all(stopping <= held for _, held in held_at_start)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, ()) == before  # and the caller's mask is back

def test_a_signal_the_parent_ignores_stays_ignored(big, tmp_path):
    # `nohup`, or a background job of a script: SIGHUP or SIGINT ignored before the run starts
    # (Polars sets a SIGINT handler of its own when imported)
    target = tmp_path / "out.csv"

    def ignore() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    p = subprocess.Popen([sys.executable, "-m", "normcli", "transform", big / "big.csv", "--stats", big / "s.json",
                          "-o", target], cwd=ROOT, stderr=subprocess.PIPE, preexec_fn=ignore,
                         env={**os.environ, "NORMCLI_THREADS": "1"})
    deadline = time.monotonic() + 60

    def written() -> int:  # Polars is imported once data flows
        return sum(os.path.getsize(f) for f in glob.glob(str(tmp_path / ".out.csv.*")))

    while written() < 1 << 20 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.005)
    assert p.poll() is None, "finished before the signals could be sent"
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGHUP)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0 and err == b""
    with open(big / "big.csv", "rb") as f:
        assert sum(1 for _ in open(target, "rb")) == sum(1 for _ in f)


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_a_closed_stdout_or_stderr_is_no_internal_error(big, tmp_path, closed):
    # started with `>&-` or `2>&-`: data to a closed stdout is an output error (exit 5); a closed
    # stderr hides the messages but changes nothing else
    redirect = ">&-" if closed == "stdout" else "2>&-"
    cmd = f"{sys.executable} -m normcli transform big.csv --stats s.json {redirect}; echo $? >{tmp_path}/rc"
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, cwd=big, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    code = int((tmp_path / "rc").read_text())
    if closed == "stdout":
        assert code == errors.EXIT_IO and p.stderr == b"Error: cannot write standard output: the stream is closed\n"
    else:
        assert code == 0 and p.stderr == b""
        with open(big / "big.csv", "rb") as f:
            assert p.stdout.count(b"\n") == sum(1 for _ in f)


def test_fit_transform_stdin_spool_is_removed_on_sigterm(big, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    with open(big / "big.csv", "rb") as stdin:
        p = subprocess.Popen([sys.executable, "-m", "normcli", "fit-transform", "-", "--stats-out",
                              tmp_path / "s.json", "-o", tmp_path / "o.csv"], cwd=ROOT, stdin=stdin,
                             stderr=subprocess.PIPE, env={**os.environ, "TMPDIR": str(spool), "NORMCLI_THREADS": "1"})
        deadline = time.monotonic() + 60
        while not list(spool.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
    assert p.returncode == errors.EXIT_SIGTERM
    assert list(spool.iterdir()) == []
    assert not (tmp_path / "o.csv").exists()


def test_json_log_events(tmp_path):
    df = day_frame(1)
    df["k"] = 1.0  # constant: a warning event
    write_csv(df, tmp_path / "a.csv")
    write_csv(day_frame(2).assign(k=1.0), tmp_path / "b.csv")
    r = run_cli("fit", tmp_path / "a.csv", tmp_path / "b.csv", "--log-format", "json")
    assert r.code == 0
    json.loads(r.text)  # stdout: the stats file only
    events = [json.loads(line) for line in r.err.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("input") == 2 and kinds.count("rows") == 2 and "warning" in kinds
    assert [e["rows"] for e in events if e["event"] == "rows"] == [400, 400]
    assert events[-1]["status"] == 0 and events[-1]["duration_s"] >= 0
    r = run_cli("transform", tmp_path / "missing.csv", "--stats", tmp_path / "x.json", "--log-format", "json")
    events = [json.loads(line) for line in r.err.splitlines()]
    assert [e["event"] for e in events] == ["start", "error", "end"]
    assert events[1]["exit_code"] == events[2]["status"] == r.code == errors.EXIT_IO
    r = run_cli("fit", tmp_path / "a.csv", "--update", tmp_path / "nope.json", "--log-format", "json", "-q")
    assert [json.loads(line)["event"] for line in r.err.splitlines()] == ["error", "end"]
    # --debug: the traceback goes into the error event; every line is still one JSON object
    r = run_cli("fit", tmp_path / "a.csv", "-m", "bogus", "--log-format", "json", "--debug")
    events = [json.loads(line) for line in r.err.splitlines()]
    assert [e["event"] for e in events] == ["start", "error", "end"] and r.code == errors.EXIT_USAGE
    assert events[1]["traceback"].startswith("Traceback") and "unknown method 'bogus'" in events[1]["traceback"]
    # given twice, the last one counts, for the whole run (as the option's parser takes it)
    r = run_cli("transform", tmp_path / "missing.csv", "--stats", tmp_path / "x.json", "--log-format", "text",
                "--log-format", "json")
    assert [json.loads(line)["event"] for line in r.err.splitlines()] == ["start", "error", "end"], r.err
    r = run_cli("transform", tmp_path / "missing.csv", "--stats", tmp_path / "x.json", "--log-format", "json",
                "--log-format", "text")
    assert r.err == f"Error: cannot read stats file '{tmp_path / 'x.json'}': No such file or directory\n", r.err
    # before the command it is refused (an option of the commands), and the command is named right
    r = run_cli("--log-format", "json", "fit", tmp_path / "a.csv")
    events = [json.loads(line) for line in r.err.splitlines()]
    assert r.code == errors.EXIT_USAGE and [e.get("command") for e in events] == ["fit", None, "fit"], r.err


def test_every_command_takes_log_format(tmp_path):
    """A cron script that logs every step as JSON may pass --log-format (and --quiet) to any command."""
    pytest.importorskip("skops.io")
    write_csv(day_frame(1), tmp_path / "a.csv")
    s, m = tmp_path / "s.json", tmp_path / "m.skops"
    assert run_cli("fit", tmp_path / "a.csv", "-c", "x,y", "-o", s).code == 0
    for args in (["inspect", s], ["export", s, "--to", "sklearn", "-o", m], ["import", m, "-o", tmp_path / "b.json"]):
        r = run_cli(*args, "--log-format", "json")
        assert r.code == 0, r.err
        events = [json.loads(line) for line in r.err.splitlines()]
        assert [e["event"] for e in events] == ["start", "end"] and events[1]["status"] == 0, r.err
    assert json.loads((tmp_path / "b.json").read_text())["columns"].keys() == {"x", "y"}
    (tmp_path / "bad.json").write_text("{}")
    for args in (["inspect", tmp_path / "bad.json"], ["export", tmp_path / "bad.json", "--to", "sql"],
                 ["import", tmp_path / "bad.json"]):
        r = run_cli(*args, "--log-format", "json")
        events = [json.loads(line) for line in r.err.splitlines()]
        assert [e["event"] for e in events] == ["start", "error", "end"], r.err
        assert events[1]["exit_code"] == events[2]["status"] == r.code != 0
    r = run_cli("export", s, "--to", "sql", "--log-format", "json", "-q")  # and --quiet: only the end
    assert r.code == 0 and [json.loads(line)["event"] for line in r.err.splitlines()] == ["end"], r.err
    r = run_cli("inspect", s, "--log-format", "xml")
    assert r.code == errors.EXIT_USAGE and r.err == "Error: --log-format must be text or json, got 'xml'\n", r.err


@pytest.mark.parametrize("args,sep", [([], ";"), (["-o", "{tmp}/o.csv"], ";"), (["--to", "csv"], ","),
                                      (["--to", "tsv"], "\t")])
def test_the_output_keeps_the_input_separator_unless_to_names_the_format(tmp_path, args, sep):
    """A ';'-separated CSV stays ';'-separated; --to csv asks for CSV, hence commas."""
    src = tmp_path / "s.txt"
    src.write_text("id;x;note\n1;2.0;a,b\n2;3.0;c\n4;7.0;d\n")
    assert run_cli("fit", src, "--format", "csv", "--delimiter", ";", "-c", "x", "-o", tmp_path / "s.json").code == 0
    r = run_cli("transform", src, "--format", "csv", "--delimiter", ";", "--stats", tmp_path / "s.json",
                *[a.format(tmp=tmp_path) for a in args])
    assert r.code == 0, r.err
    text = (tmp_path / "o.csv").read_text() if "-o" in args else r.out.decode()
    got = pd.read_csv(io.StringIO(text), sep=sep, dtype={"note": str})
    x = np.array([2.0, 3.0, 7.0])
    np.testing.assert_allclose(got["x"], (x - x.mean()) / x.std(), rtol=1e-15)
    assert list(got.columns) == ["id", "x", "note"] and list(got["note"]) == ["a,b", "c", "d"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("via", ["stdin", "named pipe", "/dev/fd"])
def test_fit_transform_reads_a_pipe_once_as_fit_then_transform_do(tmp_path, fmt, via):
    # The fit and the transform both read the input: standard input, a named pipe or <(...) is
    # copied once to a temporary file, Parquet recognised by its first bytes when not named.
    df = day_frame(1)
    src = tmp_path / f"in.{fmt}"
    if fmt == "csv":
        write_csv(df, src)
    else:
        df.to_parquet(src)
    out = tmp_path / f"out.{fmt}"
    assert run_cli("fit", src, "-o", tmp_path / "a.json").code == 0
    assert run_cli("transform", src, "--stats", tmp_path / "a.json", "-o", out).code == 0
    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    common = ["--stats-out", tmp_path / "b.json", "-o", tmp_path / f"got.{fmt}"]
    env = {**os.environ, "TMPDIR": str(spool_dir), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "normcli", "fit-transform"]
    if via == "stdin":
        p = subprocess.run([*cmd, "-", *map(str, common)], input=src.read_bytes(), capture_output=True,
                           env=env, timeout=120)
        code, err = p.returncode, p.stderr
    else:
        if via == "named pipe":
            pipe = tmp_path / f"fifo.{fmt}"
            os.mkfifo(pipe)
            name, fds = str(pipe), ()
        else:  # as bash's <(...) gives it: no name that says the format
            read_end, write_end = os.pipe()
            name, fds = f"/dev/fd/{read_end}", (read_end,)
        p = subprocess.Popen([*cmd, name, *map(str, common)], stderr=subprocess.PIPE, env=env, pass_fds=fds)
        with open(pipe if via == "named pipe" else write_end, "wb") as w:
            w.write(src.read_bytes())
        if fds:
            os.close(read_end)
        err = p.communicate(timeout=120)[1]
        code = p.returncode
    assert code == 0, err
    assert (tmp_path / f"got.{fmt}").read_bytes() == out.read_bytes()
    doc = load_stats(tmp_path / "b.json")
    assert_moments(doc["columns"]["x"], df["x"].to_numpy())
    assert list(spool_dir.iterdir()) == []


def test_fit_transform_of_empty_stdin_says_standard_input(tmp_path):
    r = run_cli("fit-transform", "-", "--stats-out", tmp_path / "s.json", "-o", tmp_path / "o.csv", stdin=b"",
                env={"TMPDIR": str(tmp_path)})
    assert r.code == errors.EXIT_DATA and r.err == "Error: standard input is empty\n", r.err
    assert os.listdir(tmp_path) == []


def test_an_input_whose_name_is_not_utf8_is_fitted_and_recognised(tmp_path):
    # The stats file is UTF-8: the name's stray byte is written as an escape, and --update still
    # knows the file it absorbed
    name = os.fsdecode(b"lat\xe9.csv")
    write_csv(day_frame(1), tmp_path / name)
    r = run_cli("fit", name, "-o", "s.json", cwd=tmp_path)
    assert r.code == 0, r.err
    doc = json.loads((tmp_path / "s.json").read_bytes().decode("utf-8"))
    assert doc["fitted_on"]["inputs"][0]["path"] == "lat\\xe9.csv"
    assert_moments(doc["columns"]["x"], day_frame(1)["x"].to_numpy())
    r = run_cli("fit", name, "--update", "s.json", cwd=tmp_path)
    assert r.code == 0 and "already absorbed" in r.err, r.err


def test_update_warns_when_a_file_it_absorbed_comes_again_changed(tmp_path):
    """A corrected file delivered again under its name is added on top of the first delivery
    (statistics cannot remove rows): said in a warning, while an unchanged one is skipped."""
    day = tmp_path / "day2.csv"
    write_csv(day_frame(1), tmp_path / "day1.csv")
    write_csv(day_frame(2), day)
    assert run_cli("fit", tmp_path / "day1.csv", day, "-o", tmp_path / "s.json").code == 0
    r = run_cli("fit", day, "--update", tmp_path / "s.json")
    assert r.code == 0 and r.err == f"note: skipped '{day}': already absorbed by the stats file\n", r.err
    write_csv(day_frame(2, seed=7), day)  # the corrected delivery
    r = run_cli("fit", day, "--update", tmp_path / "s.json")
    assert r.code == 0, r.err
    assert r.err == (f"warning: '{day}' was absorbed before, with other content or another modification time: "
                     "its rows are added to those of that earlier read, which statistics cannot take out\n"), r.err
    # what the warning says: both deliveries are in the statistics
    both = pd.concat([day_frame(1), day_frame(2), day_frame(2, seed=7)])
    assert_moments(load_stats(tmp_path / "s.json")["columns"]["x"], both["x"].to_numpy())
    r = run_cli("fit", day, "--update", tmp_path / "s.json", "--log-format", "json")
    assert [json.loads(line)["event"] for line in r.err.splitlines()] == ["start", "skip", "end"], r.err


def test_fit_transform_whose_transform_fails_leaves_the_stats_file_as_it_was(tmp_path):
    # the new statistics must not replace the old ones next to data they were not applied to
    write_csv(day_frame(1), tmp_path / "d.csv")
    (tmp_path / "s.json").write_text("old")
    r = run_cli("fit-transform", tmp_path / "d.csv", "--stats-out", tmp_path / "s.json", "-o", "/dev/full")
    assert r.code == errors.EXIT_IO and r.err.startswith("Error: cannot write '/dev/full'"), r.err
    assert (tmp_path / "s.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "s.json"]
    r = run_cli("fit-transform", tmp_path / "d.csv", "--stats-out", tmp_path / "s.json", "-o", tmp_path / "o.csv")
    assert r.code == 0 and load_stats(tmp_path / "s.json")["fitted_on"]["rows"] == len(day_frame(1))


@pytest.mark.parametrize("output", ["", "s.json", "./s.json"])
def test_updates_of_one_stats_file_at_once_take_turns(tmp_path, output):
    # two cron jobs folding new days into one file: each must read what the other wrote, also
    # when one names the file again as its output, however spelled
    rng = np.random.default_rng(3)
    parts = [rng.normal(i, 1 + i, size=300_000) for i in range(3)]
    for i, x in enumerate(parts):
        pd.DataFrame({"x": x}).to_csv(tmp_path / f"d{i}.csv", index=False)
    assert run_cli("fit", tmp_path / "d0.csv", "-o", tmp_path / "s.json").code == 0
    again = ["-o", f"{tmp_path}/{output}"] if output else []
    runs = [subprocess.Popen([sys.executable, "-m", "normcli", "fit", tmp_path / f"d{i}.csv", "--update",
                              tmp_path / "s.json", *(again if i == 2 else [])], cwd=ROOT, stderr=subprocess.PIPE)
            for i in (1, 2)]
    for p in runs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    doc = load_stats(tmp_path / "s.json")
    assert sorted(i["path"] for i in doc["fitted_on"]["inputs"]) == [str(tmp_path / f"d{i}.csv") for i in range(3)]
    assert_moments(doc["columns"]["x"], np.concatenate(parts))


@pytest.mark.parametrize("module", ["typer", "pyarrow"])
def test_a_sigint_while_the_command_line_loads_is_one_line(tmp_path, module):
    # The entry point imports the command line (Typer), which then loads a command's libraries
    # (pyarrow): a SIGINT then, here an import that raises KeyboardInterrupt, is exit 130 and one
    # line, as later in the run
    script = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "sys.argv = ['normcli', 'inspect', 'missing.json']\n"
        "from normcli.launch import run\n"
        "run()\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=tmp_path, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == errors.EXIT_SIGINT and p.stderr == b"Error: interrupted by SIGINT\n", p.stderr[-500:]


def _run_without_stdin(*args) -> tuple[int, str]:
    """``normcli ARGS`` started with no standard input at all (file descriptor 0 closed)."""
    p = subprocess.run([sys.executable, "-m", "normcli", *map(str, args)], stdin=subprocess.DEVNULL,
                       preexec_fn=lambda: os.close(0), capture_output=True, timeout=120)
    return p.returncode, p.stderr.decode()


def test_a_run_started_without_standard_input(tmp_path):
    """Some service managers start jobs with standard input closed: a command that reads files
    runs as usual, one told to read standard input says it is closed (exit 5)."""
    df = day_frame(1)
    write_csv(df, tmp_path / "d.csv")
    code, err = _run_without_stdin("fit", tmp_path / "d.csv", "-o", tmp_path / "s.json")
    assert code == 0, err
    assert load_stats(tmp_path / "s.json")["columns"]["x"]["stats"]["mean"] == pytest.approx(df["x"].mean(), rel=TOL)
    for args in (["fit", "-"], ["fit", "-", "--format", "parquet"], ["transform", "-", "--stats", tmp_path / "s.json"],
                 ["check", "-", "--stats", tmp_path / "s.json"],
                 ["fit-transform", "-", "--stats-out", tmp_path / "t.json", "-o", tmp_path / "t.csv"]):
        code, err = _run_without_stdin(*args)
        assert (code, err) == (errors.EXIT_IO, "Error: cannot read standard input: it is closed\n"), args
    assert sorted(os.listdir(tmp_path)) == ["d.csv", "s.json"]


def test_standard_input_is_refused_as_an_input_of_a_directory_output(tmp_path):
    """An output in DIR/ takes its input's name, which standard input lacks (a file named '-'
    would be read as standard input by the next command): exit 2, nothing written."""
    df = day_frame(1)
    write_csv(df, tmp_path / "a.csv")
    assert run_cli("fit", tmp_path / "a.csv", "-o", tmp_path / "s.json").code == 0
    (tmp_path / "old").mkdir()
    for args in (["-", tmp_path / "a.csv", "-o", str(tmp_path / "new") + "/"], ["-", "-o", tmp_path / "old"]):
        r = run_cli("transform", *args, "--stats", tmp_path / "s.json", stdin=(tmp_path / "a.csv").read_bytes())
        assert r.code == errors.EXIT_USAGE and "standard input has no name" in r.err, r.err
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "old", "s.json"] and os.listdir(tmp_path / "old") == []
    r = run_cli("transform", "-", "--stats", tmp_path / "s.json", "-o", tmp_path / "out.csv",
                stdin=(tmp_path / "a.csv").read_bytes())
    got = pd.read_csv(tmp_path / "out.csv")
    assert r.code == 0 and np.allclose(got["x"], (df["x"] - df["x"].mean()) / df["x"].std(ddof=0), rtol=TOL, atol=TOL)


def test_a_stats_file_named_gz_is_gzip_compressed_and_read_back(tmp_path):
    """As for data outputs, a stats file named .gz is written gzip-compressed (Python's gzip
    module reads it to the plain file's text), and every command reads it."""
    import gzip

    for day in (1, 2):
        write_csv(day_frame(day), tmp_path / f"d{day}.csv")
    assert run_cli("fit", tmp_path / "d1.csv", "-o", tmp_path / "s.json").code == 0
    r = run_cli("fit", tmp_path / "d1.csv", "-o", tmp_path / "s.json.gz")
    assert r.code == 0, r.err
    packed = (tmp_path / "s.json.gz").read_bytes()
    assert packed[:2] == b"\x1f\x8b"
    plain, unpacked = load_stats(tmp_path / "s.json"), json.loads(gzip.decompress(packed))
    plain.pop("created"), unpacked.pop("created")
    assert unpacked == plain
    for stats in ("s.json", "s.json.gz"):
        r = run_cli("transform", tmp_path / "d2.csv", "--stats", tmp_path / stats, "-o", tmp_path / f"{stats}.csv")
        assert r.code == 0, r.err
    assert (tmp_path / "s.json.csv").read_bytes() == (tmp_path / "s.json.gz.csv").read_bytes()
    r = run_cli("fit", tmp_path / "d2.csv", "--update", tmp_path / "s.json.gz")
    assert r.code == 0, r.err
    both = pd.concat([day_frame(1), day_frame(2)])
    got = json.loads(gzip.decompress((tmp_path / "s.json.gz").read_bytes()))
    assert got["fitted_on"]["rows"] == 800
    assert got["columns"]["x"]["stats"]["mean"] == pytest.approx(both["x"].mean(), rel=TOL)
    assert run_cli("merge", tmp_path / "s.json.gz", "-o", tmp_path / "m.json").code == 0
    assert load_stats(tmp_path / "m.json")["fitted_on"]["rows"] == 800
    (tmp_path / "cut.json.gz").write_bytes(packed[:len(packed) // 2])
    r = run_cli("inspect", tmp_path / "cut.json.gz")
    assert r.code == errors.EXIT_STATS and "a damaged gzip stream" in r.err and r.err.count("\n") == 1, r.err


def test_an_input_absorbed_again_through_a_symbolic_link_is_recognised(tmp_path):
    """The fingerprint names the file itself, not the link: --update skips the file read through
    a link, and merge refuses two fits of it (the rows would count twice)."""
    write_csv(day_frame(1), tmp_path / "d.csv")
    (tmp_path / "link.csv").symlink_to(tmp_path / "d.csv")
    assert run_cli("fit", tmp_path / "d.csv", "-o", tmp_path / "s.json").code == 0
    assert run_cli("fit", tmp_path / "link.csv", "-o", tmp_path / "l.json").code == 0
    before = (tmp_path / "s.json").read_bytes()
    r = run_cli("fit", tmp_path / "link.csv", "--update", tmp_path / "s.json")
    assert r.code == 0 and "already absorbed" in r.err, r.err
    assert (tmp_path / "s.json").read_bytes() == before and load_stats(tmp_path / "s.json")["fitted_on"]["rows"] == 400
    r = run_cli("merge", tmp_path / "s.json", tmp_path / "l.json", "-o", tmp_path / "m.json")
    assert r.code == errors.EXIT_STATS and "the data must be disjoint" in r.err, r.err


def test_merge_refuses_to_write_over_one_of_its_inputs(tmp_path):
    for day in (1, 2):
        write_csv(day_frame(day), tmp_path / f"d{day}.csv")
        assert run_cli("fit", tmp_path / f"d{day}.csv", "-o", tmp_path / f"s{day}.json").code == 0
    before = (tmp_path / "s1.json").read_bytes()
    (tmp_path / "alias.json").symlink_to(tmp_path / "s1.json")
    for target in ("s1.json", "alias.json"):
        r = run_cli("merge", tmp_path / "s1.json", tmp_path / "s2.json", "-o", tmp_path / target)
        assert r.code == errors.EXIT_USAGE and "is one of the stats files merged" in r.err, r.err
    assert (tmp_path / "s1.json").read_bytes() == before


def test_check_has_no_out_of_range_share_without_a_fitted_range(tmp_path):
    """A column fitted on no values has no [min, max]: its out-of-range share is undefined (null),
    not 0, while a column with a range gets the share of new values outside it."""
    (tmp_path / "f.csv").write_text("a,b\n1,\n2,\n3,\n4,\n")
    (tmp_path / "n.csv").write_text("a,b\n1,5\n2,\n3,7\n9,\n")
    assert run_cli("fit", tmp_path / "f.csv", "--columns", "a,b", "-o", tmp_path / "s.json").code == 0
    r = run_cli("check", tmp_path / "n.csv", "--stats", tmp_path / "s.json", "--json")
    report = {c["column"]: c for c in json.loads(r.out)["columns"]}
    assert (report["a"]["out_of_range"], report["b"]["out_of_range"]) == (0.25, None), r.out


def test_parquet_from_a_named_pipe_is_read_as_from_stdin(tmp_path):
    """A FIFO (or <(...)) has no size and no random access: it is spooled, not called empty."""
    import threading

    df = day_frame(5)[["x", "y"]]
    real = tmp_path / "real.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), real)
    fifo = tmp_path / "p.parquet"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(real.read_bytes())

    writer = threading.Thread(target=feed, daemon=True)  # one stuck on open() (no reader came) must not hold up the session
    writer.start()
    r = run_cli("fit", fifo, "-o", tmp_path / "s.json")
    writer.join()
    assert r.code == 0, r.err
    doc = load_stats(tmp_path / "s.json")
    for col in ("x", "y"):
        assert_moments(doc["columns"][col], df[col].to_numpy())
    assert "fingerprint" not in doc["fitted_on"]["inputs"][0]


@pytest.mark.parametrize("name", ["day.parq", "part-0", "day.dat"])
def test_a_parquet_file_without_a_known_extension_is_known_by_its_first_bytes(tmp_path, name):
    df = day_frame(5)[["x", "y"]]
    src = tmp_path / name
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), src)
    r = run_cli("fit", src, "-o", tmp_path / "s.json")
    assert r.code == 0, r.err
    doc = load_stats(tmp_path / "s.json")
    for col in ("x", "y"):
        assert_moments(doc["columns"][col], df[col].to_numpy())
    r = run_cli("transform", src, "--stats", tmp_path / "s.json", "-o", tmp_path / "out")
    assert r.code == 0, r.err
    got = pq.read_table(tmp_path / "out").to_pandas()  # in the input's format
    np.testing.assert_allclose(got["x"], (df["x"] - df["x"].mean()) / df["x"].std(ddof=0), rtol=1e-12, atol=1e-12)


def test_a_parquet_file_named_csv_is_named_as_parquet_and_a_header_beginning_par1_is_csv(tmp_path):
    df = day_frame(5)[["x", "y"]]
    src = tmp_path / "day.csv"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), src)
    assert_error(run_cli("fit", src, "-o", tmp_path / "s.json"), 3,
                 f"'{src}' is a Parquet file, not CSV text: --format parquet reads it")
    r = run_cli("fit", src, "--format", "parquet", "-o", tmp_path / "s.json")
    assert r.code == 0, r.err
    (tmp_path / "text").write_text("PAR1,x\n1,2\n3,5\n")  # no extension, text: CSV
    r = run_cli("fit", tmp_path / "text", "-o", tmp_path / "t.json")
    assert r.code == 0, r.err
    assert_moments(load_stats(tmp_path / "t.json")["columns"]["x"], np.array([2.0, 5.0]))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
@pytest.mark.parametrize("content, name", [("csv", "feed"), ("gzip", "feed"), ("parquet", "feed"),
                                           ("gzip", "feed.csv.gz"), ("gzip", "file"), ("gzip", "file.csv")])
def test_an_input_named_for_no_format_is_known_by_its_first_bytes(tmp_path, content, name):
    """A named pipe (``feed``, as ``<(...)`` is) is opened once and peeked at, as stdin is: CSV,
    gzip-compressed CSV or Parquet (spooled); so is a regular file of gzip data not named ``.gz``.
    A pipe named ``.gz`` has no position to measure progress by."""
    import gzip
    import threading

    df = day_frame(5)[["x", "y"]]
    if content == "parquet":
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink)
        data = sink.getvalue().to_pybytes()
    else:
        data = df.to_csv(index=False).encode()
        data = gzip.compress(data) if content == "gzip" else data
    src = tmp_path / name
    writer = None
    if name.startswith("feed"):
        os.mkfifo(src)

        def feed() -> None:
            with open(src, "wb") as f:
                f.write(data)

        writer = threading.Thread(target=feed, daemon=True)  # one stuck on open() (no reader came) must not hold up the session
        writer.start()
    else:
        src.write_bytes(data)
    r = run_cli("fit", src, "-o", tmp_path / "s.json", timeout=60)
    if writer is not None:
        writer.join(5)
    assert r.code == 0, r.err
    for col in ("x", "y"):
        assert_moments(load_stats(tmp_path / "s.json")["columns"][col], df[col].to_numpy())


def test_decimal_parquet_columns_read_as_the_nearest_double(tmp_path):
    """Each decimal value becomes float(Decimal): what the CSV readers give its text (Arrow's
    own decimal cast lands an ulp off for about one value in eight)."""
    from decimal import Decimal

    rng = np.random.default_rng(8)
    values = [Decimal(int(v)).scaleb(-3) for v in rng.integers(-10**9, 10**9, 2000)] + [Decimal("8.761"), None]
    table = pa.table({"x": pa.array(values, pa.decimal128(12, 3))})
    pq.write_table(table, tmp_path / "d.parquet")
    # (a blank line of a one-column CSV is no record: the text leaves the null out)
    (tmp_path / "d.csv").write_text("x\n" + "\n".join(str(v) for v in values if v is not None) + "\n")
    exact = np.array([np.nan if v is None else float(v) for v in values])
    for name in ("d.parquet", "d.csv"):
        r = run_cli("fit", tmp_path / name, "-m", "minmax", "-o", tmp_path / f"{name}.json")
        assert r.code == 0, r.err
        st = load_stats(tmp_path / f"{name}.json")["columns"]["x"]["stats"]
        assert (st["min"], st["max"]) == (np.nanmin(exact), np.nanmax(exact))
    from_parquet, from_text = (load_stats(tmp_path / f"d.{ext}.json")["columns"]["x"]["stats"] for ext in ("parquet", "csv"))
    assert from_parquet.pop("nulls") == 1
    assert from_parquet == {k: v for k, v in from_text.items() if k != "nulls"}
    # applied, the stats of the text and the decimals give the same numbers
    r = run_cli("transform", tmp_path / "d.parquet", "--stats", tmp_path / "d.csv.json", "--to", "csv")
    assert r.code == 0, r.err
    got = read_csv_exact(io.BytesIO(r.out))["x"].to_numpy()
    lo, hi = np.nanmin(exact), np.nanmax(exact)
    np.testing.assert_array_equal(got, (exact - lo) / (hi - lo))


def test_parquet_input_sets_the_format_and_separator_of_outputs_that_name_none(tmp_path):
    """Parquet on stdin is recognised by its first bytes; an output without a known extension is
    in the input's format, as stdout is; a separator given with a Parquet input is the output's."""
    stats = tmp_path / "s.json"
    (tmp_path / "fit.csv").write_text("x\n1\n3\n")
    assert run_cli("fit", tmp_path / "fit.csv", "-o", stats).code == 0
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1.0, 3.0], "t": ["a;b", "c"], "bin": [b"\x00", b"\x01"]}), src)
    r = run_cli("transform", "-", "--stats", stats, stdin=src.read_bytes())
    assert r.code == 0, r.err
    assert pq.read_table(io.BytesIO(r.out)).to_pydict() == {"x": [-1.0, 1.0], "t": ["a;b", "c"], "bin": [b"\x00", b"\x01"]}
    for target in (tmp_path / "out", "/dev/null"):
        r = run_cli("transform", src, "--stats", stats, "-o", target)
        assert r.code == 0, r.err  # Parquet holds the binary column CSV would refuse
    assert pq.read_table(tmp_path / "out").column("bin").to_pylist() == [b"\x00", b"\x01"]
    (tmp_path / "t.csv").write_text("x,t\n1,a\n")
    assert run_cli("transform", tmp_path / "t.csv", "--stats", stats, "-o", tmp_path / "out2").code == 0
    assert (tmp_path / "out2").read_text() == "x,t\n-1.0,a\n"
    pq.write_table(pa.table({"x": [1.0, 3.0], "t": ["a;b", "c"]}), src)
    for extra in ((), ("--to", "csv")):
        r = run_cli("transform", src, "--stats", stats, "-d", ";", "-o", tmp_path / "o.csv", *extra)
        assert r.code == 0, r.err
        assert (tmp_path / "o.csv").read_text() == 'x;t\n-1.0;"a;b"\n1.0;c\n'


def test_a_moved_or_copied_input_is_known_by_its_size_time_and_content(tmp_path):
    """The path is not what makes a file the same: moved to another directory or machine with
    its stats file, or copied with its times kept (cp -p, rsync -a), an input --update absorbed
    is skipped, and merge refuses two files fitted on it. A copy with a new time may be another
    delivery of equal bytes: absorbed, with a warning that it may count twice."""
    import shutil

    (tmp_path / "m1").mkdir()
    write_csv(day_frame(1), tmp_path / "m1" / "day.csv")
    assert run_cli("fit", "day.csv", "-o", "s.json", cwd=tmp_path / "m1").code == 0
    shutil.copytree(tmp_path / "m1", tmp_path / "m2")  # copy2: times kept
    before = (tmp_path / "m2" / "s.json").read_bytes()
    r = run_cli("fit", "day.csv", "--update", "s.json", cwd=tmp_path / "m2")
    assert r.code == 0 and r.err == (f"note: skipped 'day.csv': already absorbed by the stats file as "
                                     f"'{tmp_path / 'm1' / 'day.csv'}' (same size, modification time and content)\n")
    assert (tmp_path / "m2" / "s.json").read_bytes() == before  # untouched: nothing new
    # merge: a file fitted on the copy and one fitted on the original
    assert run_cli("fit", tmp_path / "m2" / "day.csv", "-o", tmp_path / "copy.json").code == 0
    assert_error(run_cli("merge", tmp_path / "m1" / "s.json", tmp_path / "copy.json"), 4,
                 f"cannot merge: both files were fitted on one file, as '{tmp_path / 'm1' / 'day.csv'}' and as "
                 f"'{tmp_path / 'm2' / 'day.csv'}' (same size, modification time and content; the data must be disjoint)")
    # the same bytes with a new time: absorbed, said in a warning
    shutil.copyfile(tmp_path / "m1" / "day.csv", tmp_path / "m2" / "again.csv")
    os.utime(tmp_path / "m2" / "again.csv", (1e9, 1e9))
    r = run_cli("fit", "again.csv", "--update", "s.json", cwd=tmp_path / "m2")
    assert r.code == 0 and r.err == (f"warning: 'again.csv' has the size and content of '{tmp_path / 'm1' / 'day.csv'}', "
                                     "absorbed before (with another modification time): if it is a copy, its rows "
                                     "count twice\n"), r.err
    twice = np.concatenate([day_frame(1)["x"].to_numpy()] * 2)
    assert_moments(load_stats(tmp_path / "m2" / "s.json")["columns"]["x"], twice)


def test_stdout_redirected_onto_an_input_is_refused(tmp_path):
    """``normcli transform x.csv ... >> x.csv`` would read its own output back (the input grows,
    or is overwritten while read with ``1<>``), and ``fit x.csv >> x.csv`` would append JSON to
    the data: like ``cat x >> x``, every command refuses stdout onto a file it reads (exit 2),
    leaving the file as it was; stdout onto another regular file works."""
    src = write_csv(day_frame(1), tmp_path / "d.csv")
    stats = tmp_path / "s.json"
    assert run_cli("fit", src, "-o", stats).code == 0
    runs = [(src, ["transform", src, "--stats", stats]), (src, ["inverse", src, "--stats", stats]),
            (src, ["fit", src]), (src, ["check", src, "--stats", stats]),
            (src, ["fit-transform", src, "--stats-out", tmp_path / "s2.json", "-o", "-"]),
            (stats, ["transform", src, "--stats", stats]), (stats, ["merge", stats]),
            (stats, ["inspect", stats, "--json"]), (stats, ["export", stats, "--to", "sql"])]
    for target, args in runs:
        before = target.read_bytes()
        for mode in ("ab", "r+b"):  # >> target, 1<> target
            with open(target, mode) as out:
                p = subprocess.run([sys.executable, "-m", "normcli", *map(str, args)], stdout=out,
                                   stderr=subprocess.PIPE, timeout=120)
            assert p.returncode == errors.EXIT_USAGE, (args, p.stderr)
            what = "the input" if target == src else "the stats file" if args[0] != "merge" else "one of the stats files merged"
            assert p.stderr.decode() == (f"Error: standard output is {what} '{target}' (redirected onto it); "
                                         "write the output elsewhere\n")
            assert target.read_bytes() == before
        with open(tmp_path / "elsewhere", "wb") as out:
            p = subprocess.run([sys.executable, "-m", "normcli", *map(str, args)], stdout=out,
                               stderr=subprocess.PIPE, timeout=120)
        assert p.returncode == 0 and (tmp_path / "elsewhere").stat().st_size > 0, (args, p.stderr)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_outputs_in_a_directory_replace_only_its_regular_files(tmp_path):
    """A link planted in DIR/ sent an output outside DIR (replacing the file it points to), a
    linked directory too, and a FIFO blocked the run: each is refused (exit 2) before anything
    is read or written, and what lies outside DIR is untouched."""
    src = write_csv(day_frame(1), tmp_path / "d.csv")
    assert run_cli("fit", src, "-o", tmp_path / "s.json").code == 0
    (tmp_path / "in" / "sub").mkdir(parents=True)
    write_csv(day_frame(2), tmp_path / "in" / "sub" / "w.csv")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "v.txt").write_text("keep\n")
    for plant, inputs, message in (
            (lambda d: (d / "d.csv").symlink_to(outside / "v.txt"), [src], "is a symbolic link or not a regular file"),
            (lambda d: os.mkfifo(d / "d.csv"), [src], "is a symbolic link or not a regular file"),
            (lambda d: (d / "sub").symlink_to(outside), [tmp_path / "in"], "would be written outside")):
        out = tmp_path / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        plant(out)
        r = run_cli("transform", *inputs, "--stats", tmp_path / "s.json", "-o", f"{out}/", timeout=60)
        assert r.code == errors.EXIT_USAGE and message in r.err and r.err.count("\n") == 1, r.err
        assert sorted(p.name for p in outside.iterdir()) == ["v.txt"] and (outside / "v.txt").read_text() == "keep\n"
    shutil.rmtree(tmp_path / "out")
    r = run_cli("transform", tmp_path / "in", "--stats", tmp_path / "s.json", "-o", f"{tmp_path}/out/")
    assert r.code == 0 and (tmp_path / "out" / "sub" / "w.csv").is_file(), r.err


# A host application whose SIGINT handler only sets a flag (a graceful shutdown), installed before
# normcli's first file call imports Polars. pyarrow's own cancelling of reads, which the README
# tells such hosts to turn off, is off.
_HOST_KEEPS_ITS_SIGINT_HANDLER = """
import os, signal, sys, threading, time
import pyarrow
import normcli

pyarrow.enable_signal_handlers(False)
got = []
signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
stats = normcli.load(sys.argv[1])
done = 0
for i in range(10):
    threading.Timer(0.02 + 0.03 * i, os.kill, (os.getpid(), signal.SIGINT)).start()
    stats.transform(sys.argv[2], output=sys.argv[3])
    done += 1
    time.sleep(0.4)
print(done, len(got))
"""


def test_a_host_s_own_sigint_handler_stays_in_charge(big, tmp_path):
    p = subprocess.run([sys.executable, "-c", _HOST_KEEPS_ITS_SIGINT_HANDLER, big / "s.json", big / "big.csv",
                        tmp_path / "o.csv"], capture_output=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (p.returncode, p.stderr.decode()[-2000:]) == (0, "")
    assert p.stdout.split() == [b"10", b"10"]  # every call completed, every signal reached the handler
