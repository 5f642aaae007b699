"""The Dask engine against the local one on a real two-process LocalCluster: the same stats file,
the same transformed bytes, the same drift report, through the API and the CLI."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

distributed = pytest.importorskip("distributed")

from normcli import api, sketch  # noqa: E402
from normcli.engine_dask import DaskEngine, discard_staging, partitions  # noqa: E402
from normcli.errors import DataError  # noqa: E402
from normcli.io import expand_inputs  # noqa: E402
from normcli.model import OutputOptions  # noqa: E402
from tests.conftest import SAMPLE, run_cli  # noqa: E402

REL = 1e-12
ROWS = 12000


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as lc, distributed.Client(lc) as client:
        yield client


@pytest.fixture(scope="module")
def eng(cluster):
    # Small partitions, so that even small files are cut into many.
    return DaskEngine(cluster, partition_bytes=40_000, partition_rows=3000)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A CSV with quoted commas, quoted line breaks, leading zeros, empty fields and a group key;
    the same table as Parquet with several row groups."""
    d = tmp_path_factory.mktemp("dask")
    rng = np.random.default_rng(7)
    g = rng.integers(0, 23, ROWS)
    x = rng.normal(0, 1, ROWS) * (g + 1) + 5 * g
    y = rng.uniform(-3, 9, ROWS)
    z = rng.integers(0, 1000, ROWS).astype(float)
    notes = np.array(["plain", "a, b", 'say "hi"', "two\nlines", "", "007"])
    rows = []
    for i in range(ROWS):
        rows.append([f"{i:06d}", "" if i % 97 == 0 else f"k{g[i]}",
                     "" if i % 13 == 0 else repr(float(x[i])), "" if i % 17 == 0 else repr(float(y[i])),
                     str(int(z[i])), notes[i % len(notes)]])
    path = d / "data.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "key", "x", "y", "z", "note"])
        w.writerows(rows)
    table = pa.table({"id": [r[0] for r in rows], "key": [r[1] or None for r in rows],
                      "x": pa.array([None if i % 13 == 0 else float(v) for i, v in enumerate(x)]),
                      "y": pa.array([None if i % 17 == 0 else float(v) for i, v in enumerate(y)]),
                      "z": pa.array(z.astype(np.int64)), "note": [r[5] for r in rows]})
    pq.write_table(table, d / "data.parquet", row_group_size=1000)
    return {"csv": str(path), "parquet": str(d / "data.parquet"), "dir": d}


def test_partitions_cut_at_record_boundaries(data):
    parts = partitions(expand_inputs([data["csv"]]), partition_bytes=40_000)
    assert len(parts) > 10
    with open(data["csv"], "rb") as f:
        raw = f.read()
    assert parts[0].start == raw.index(b"\n") + 1 and parts[-1].end == len(raw)
    for a, b in zip(parts, parts[1:]):
        assert a.end == b.start
        assert raw[: b.start].count(b'"') % 2 == 0 and raw[b.start - 1:b.start] == b"\n"
        assert b.first_line == raw[: b.start].count(b"\n") + 1
    pq_parts = partitions(expand_inputs([data["parquet"]]), partition_rows=3000)
    assert [p.row_groups for p in pq_parts] == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11)]


def test_a_quote_inside_an_unquoted_field_keeps_the_file_whole(tmp_path, eng):
    """Counting quotes cannot cut such a file: it is one partition, read exactly."""
    rows = [f"r{i},{i}.5\n" for i in range(6000)]
    rows[10] = 'x"y,10.5\n'                     # a quote that is text
    rows[4000] = '"two\nlines",4000.5\n'        # a quoted line break far after it
    path = tmp_path / "s.csv"
    path.write_text("id,v\n" + "".join(rows))
    assert len(partitions(expand_inputs([str(path)]), partition_bytes=40_000)) == 1
    regular = tmp_path / "r.csv"
    regular.write_text("id,v\n" + "".join(rows[:10] + rows[11:]))
    assert len(partitions(expand_inputs([str(regular)]), partition_bytes=40_000)) > 1
    local = api.fit_paths([str(path)], ["zscore"])
    dask = api.fit_paths([str(path)], ["zscore"], engine=eng)
    v = np.arange(6000) + 0.5
    assert local.columns["v"].stats.count == dask.columns["v"].stats.count == 6000
    assert _close(dask.columns["v"].stats.mean, v.mean()) and _close(local.columns["v"].stats.mean, v.mean())


def _close(a, b, rel=REL):
    if a is None or b is None:
        return a == b
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def _same_sketch(a: dict, b: dict) -> None:
    """Two serialized KLL sketches of the same data agree within their rank-error bounds: every
    quantile of one has, in the other, a rank interval (ties) within both bounds of q."""
    assert a["n"] == b["n"] and a["k"] == b["k"]
    sa, sb = sketch.from_dict(a), sketch.from_dict(b)
    bound = sketch.rank_error(sa) + sketch.rank_error(sb) + 1.0 / max(a["n"], 1)
    for q in np.linspace(0, 1, 21):
        va, vb = sketch.quantile(sa, q), sketch.quantile(sb, q)
        if sketch.is_exact(sa) and sketch.is_exact(sb):
            assert va == vb
        else:
            assert sa.get_rank(vb, False) - bound <= q <= sa.get_rank(vb, True) + bound


def _same_stats(a, b, path="") -> None:
    """Stats-file dicts equal: moments to REL, everything else (counts, extremes) exactly, sketches
    within their bound."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            if k == "created":
                continue
            if k == "sketch" and a[k] is not None and "kind" in a[k] and isinstance(a[k]["n"], int):
                _same_sketch(a[k], b[k])
            elif k == "sketch" and isinstance(a[k], dict):  # a group's columnar sketches
                assert a[k]["n"] == b[k]["n"]
                for da, db, n in zip(a[k]["data"], b[k]["data"], a[k]["n"]):
                    if da is not None:
                        _same_sketch({"k": a[k]["k"], "n": n, "data": da}, {"k": b[k]["k"], "n": n, "data": db})
            elif k in ("mean", "m2"):
                va, vb = (a[k], b[k]) if isinstance(a[k], list) else ([a[k]], [b[k]])
                assert all(_close(p, q) for p, q in zip(va, vb)), f"{path}.{k}"
            elif k == "mean_lo":
                continue  # the rounding residue of the mean: covered by the mean's tolerance
            else:
                _same_stats(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (p, q) in enumerate(zip(a, b)):
            _same_stats(p, q, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


CASES = [
    (["zscore"], {}),
    (["minmax"], {}),
    (["maxabs"], {}),
    (["robust"], {}),
    (["zscore", "layer:x,y"], {}),
    (["l2"], {}),
    (["zscore"], {"sketch_all": True}),
    (["zscore"], {"group_by": ["key"]}),
    (["robust", "minmax:z"], {"group_by": ["key"]}),
    (["maxabs"], {"group_by": ["key"], "options": {"constant": "zero"}}),
]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("methods,kw", CASES)
def test_fit_equals_local(data, eng, kind, methods, kw):
    local = api.fit_paths([data[kind]], methods, **kw)
    dask = api.fit_paths([data[kind]], methods, engine=eng, **kw)
    _same_stats(json.loads(local.to_json()), json.loads(dask.to_json()))


def test_fit_many_inputs_and_update(data, eng, tmp_path):
    inputs = [data["csv"], data["parquet"]]
    local = api.fit_paths(inputs, ["robust"], group_by=["key"])
    dask = api.fit_paths(inputs, ["robust"], group_by=["key"], engine=eng)
    _same_stats(json.loads(local.to_json()), json.loads(dask.to_json()))
    first = api.fit_paths([data["csv"]], ["zscore"], engine=eng)
    updated, n = api.update(first, inputs, engine=eng)
    assert n == 1
    _same_stats(json.loads(api.fit_paths(inputs, ["zscore"]).to_json()), json.loads(updated.to_json()))


def test_a_first_input_without_values_takes_its_types_from_the_next(eng, tmp_path):
    (tmp_path / "a.csv").write_text("k,x,y\n")
    rows = [(f"r{i}", i * 0.5, (-1.0) ** i * i) for i in range(5000)]
    (tmp_path / "b.csv").write_text("k,x,y\n" + "".join(f"{k},{x!r},{y!r}\n" for k, x, y in rows))
    dask = api.fit_paths([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")], ["zscore"], engine=eng)
    assert list(dask.columns) == ["x", "y"]
    for j, name in enumerate(("x", "y"), start=1):
        v = np.array([r[j] for r in rows])
        st = dask.columns[name].stats
        assert st.count == len(v) and abs(st.mean - v.mean()) <= 1e-14 * np.abs(v).mean()
        assert abs(st.m2 - ((v - v.mean()) ** 2).sum()) <= 1e-12 * ((v - v.mean()) ** 2).sum()


def _parts(directory, ext):
    names = sorted(n for n in os.listdir(directory) if n.endswith(ext))
    assert names == [f"part-{i:05d}{ext}" for i in range(len(names))]
    return [os.path.join(directory, n) for n in names]


@pytest.mark.parametrize("methods,kw,out", [
    (["zscore"], {}, "csv"),
    (["robust", "l2:y,z"], {}, "parquet"),
    (["minmax"], {"group_by": ["key"]}, "csv"),
    (["zscore"], {"group_by": ["key"]}, "parquet"),
])
def test_transform_equals_local(data, eng, tmp_path, methods, kw, out):
    stats = api.fit_paths([data["csv"]], methods, **kw)
    for kind in ("csv", "parquet"):
        local = str(tmp_path / f"local-{kind}.{out}")
        api.transform_file(stats, data[kind], local, to=out)
        target = tmp_path / f"dask-{kind}"
        summaries = api.transform_paths(stats, [data[kind]], str(target), to=out, engine=eng)
        assert [s.rows for s in summaries] == [ROWS]
        parts = _parts(target, "." + out)
        assert len(parts) > 1
        if out == "csv":
            chunks = [open(p, "rb").read() for p in parts]
            joined = chunks[0] + b"".join(c[c.index(b"\n") + 1:] for c in chunks[1:])
            assert joined == open(local, "rb").read()
        else:
            joined = pa.concat_tables([pq.read_table(p) for p in parts])
            assert joined.equals(pq.read_table(local))


def test_the_parts_of_a_hive_directory_hold_its_keys_as_one_local_output_does(eng, tmp_path):
    """The flat part-* files have no key=value directories: the key is written into them as a
    column, as into one local output file (the README's Scaling out)."""
    for day, xs in (("a", [1.0, 2.0]), ("b", [3.0, 5.0])):
        (tmp_path / "h" / f"day={day}").mkdir(parents=True)
        pq.write_table(pa.table({"x": xs}), tmp_path / "h" / f"day={day}" / "p.parquet")
    stats = api.fit_paths([str(tmp_path / "h")], ["zscore"], group_by=["day"])
    api.transform_paths(stats, [str(tmp_path / "h")], str(tmp_path / "dk"), engine=eng)
    joined = pa.concat_tables([pq.read_table(p) for p in _parts(tmp_path / "dk", ".parquet")])
    # each day's x has its mean in the middle and a std of half the gap: -1 and 1
    assert joined.to_pydict() == {"x": [-1.0, 1.0, -1.0, 1.0], "day": ["a", "a", "b", "b"]}
    api.transform_paths(stats, [str(tmp_path / "h")], str(tmp_path / "lo") + "/")
    for day in ("a", "b"):  # locally the key stays in the directory names
        assert pq.read_table(tmp_path / "lo" / f"day={day}" / "p.parquet").column_names == ["x"]


def test_transform_replaces_earlier_parts(data, eng, tmp_path):
    stats = api.fit_paths([data["csv"]], ["zscore"])
    api.transform_paths(stats, [data["csv"]], str(tmp_path), engine=eng)
    many = len(_parts(tmp_path, ".csv"))
    small = DaskEngine(eng.client, partition_bytes=10 << 20)
    api.transform_paths(stats, [data["csv"]], str(tmp_path), engine=small)
    assert many > 1 and _parts(tmp_path, ".csv") == [str(tmp_path / "part-00000.csv")]


def test_transform_replaces_parts_of_another_format(data, eng, tmp_path):
    """DIR/part-* is one complete output: a run writing CSV parts removes an earlier run's
    Parquet parts, which would otherwise read as part of the same output."""
    stats = api.fit_paths([data["csv"]], ["zscore"])
    api.transform_paths(stats, [data["parquet"]], str(tmp_path), engine=eng)
    assert len(_parts(tmp_path, ".parquet")) > 1
    api.transform_paths(stats, [data["csv"]], str(tmp_path), engine=eng)
    assert _parts(tmp_path, ".parquet") == [] and len(_parts(tmp_path, ".csv")) > 1
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in _parts(tmp_path, ".csv"))


def test_a_failed_transform_leaves_the_earlier_parts_as_they_were(data, eng, tmp_path):
    """A bad value in the last partition fails the run after the first parts were written:
    the output directory keeps the earlier run's parts, byte for byte, and nothing else."""
    stats = api.fit_paths([data["csv"]], ["zscore"])
    out = tmp_path / "out"
    api.transform_paths(stats, [data["csv"]], str(out), engine=eng)
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    bad = tmp_path / "bad.csv"
    bad.write_bytes(open(data["csv"], "rb").read() + b"999999,k1,oops,1,2,x\n")
    with pytest.raises(DataError, match="oops"):
        api.transform_paths(stats, [str(bad)], str(out), engine=eng, out_options=OutputOptions(decimals=2))
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


def test_a_failed_transform_removes_the_directory_it_made(data, eng, tmp_path):
    stats = api.fit_paths([data["csv"]], ["zscore"])
    bad = tmp_path / "bad.csv"
    bad.write_bytes(open(data["csv"], "rb").read() + b"999999,k1,oops,1,2,x\n")
    with pytest.raises(DataError, match="oops"):
        api.transform_paths(stats, [str(bad)], str(tmp_path / "new" / "out"), engine=eng)
    assert sorted(os.listdir(tmp_path)) == ["bad.csv"]


def test_a_part_finished_while_the_staging_directory_is_removed_is_not_left_behind(tmp_path, monkeypatch):
    """After a failure, tasks still running finish on their own: one that renames its part into
    the staging directory while that is being removed must not keep the directory alive."""
    staging = tmp_path / ".normcli-x"
    staging.mkdir()
    (staging / "part-00000.csv").write_bytes(b"a\n1\n")
    temp = staging / ".part-00001.csv.y.normcli-tmp"
    temp.write_bytes(b"a\n2\n")  # a task's part, written, about to be renamed into place
    real_unlink, renamed = os.unlink, []

    def unlink(path, *args, **kwargs):
        if not renamed:  # the task renames its part just as the removal starts
            try:
                os.replace(temp, staging / "part-00001.csv")
                renamed.append(True)
            except OSError:
                renamed.append(False)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    discard_staging(str(staging))
    assert renamed == [False] and os.listdir(tmp_path) == []


def test_transform_refuses_an_input_that_is_a_part_of_its_output(data, tmp_path):
    """Writing into the directory that holds the input as part-00001.csv would remove the input
    as a stale part (or write over it): exit 2, and the directory stays as it was."""
    src = tmp_path / "part-00001.csv"
    src.write_bytes(open(data["csv"], "rb").read())
    assert run_cli("fit", src, "-o", tmp_path / "s.json").code == 0
    listing = sorted(os.listdir(tmp_path))
    r = run_cli("transform", src, "--stats", tmp_path / "s.json", "-o", tmp_path, "--engine", "dask")
    assert r.code == 2 and "is a part of the output directory" in r.err, r.err
    assert sorted(os.listdir(tmp_path)) == listing and src.read_bytes() == open(data["csv"], "rb").read()


@pytest.mark.parametrize("name,message", [("plain.csv", "'{out}' is a file"), ("new.csv", "give -o DIR/")])
def test_transform_refuses_a_file_name_as_the_parts_directory(data, tmp_path, name, message):
    (tmp_path / "plain.csv").write_text("x\n1\n")
    assert run_cli("fit", data["csv"], "-o", tmp_path / "s.json").code == 0
    out = tmp_path / name
    r = run_cli("transform", data["csv"], "--stats", tmp_path / "s.json", "-o", out, "--engine", "dask")
    assert r.code == 2 and message.format(out=out) in r.err, r.err
    assert not (tmp_path / "new.csv").exists() and (tmp_path / "plain.csv").read_text() == "x\n1\n"


def test_an_error_in_one_of_several_inputs_names_that_input(data, eng, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(open(data["csv"], "rb").read() + b"999999,k1,oops,1,2,x\n")
    with pytest.raises(DataError, match=f"^'{bad}': column 'x': value 'oops' on line \\d+ is not a number$"):
        api.fit_paths([data["csv"], str(bad)], ["zscore"], engine=eng)


def test_check_equals_local(data, eng):
    stats = api.fit_paths([data["csv"]], ["zscore"], sketch_all=True)
    local = api.check(stats, [data["parquet"]])
    dask = api.check(stats, [data["parquet"]], engine=eng)
    assert local["rows"] == dask["rows"] == ROWS and local["drift"] == dask["drift"]
    for a, b in zip(local["columns"], dask["columns"]):
        for k in ("count", "nulls", "out_of_range", "null_rate", "drift"):
            assert a[k] == b[k]
        for k in ("mean", "std", "mean_shift", "std_ratio", "psi"):  # no drift: shifts near 0
            assert abs(a[k] - b[k]) <= 1e-12 * max(abs(a[k]), 1.0), k
        assert abs(a["ks"] - b["ks"]) <= 0.05


def test_errors_from_workers_keep_their_type(data, eng, tmp_path):
    from normcli.errors import DataError

    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("x,y\n1,2\n3,4\n")
    bad.write_text("x,y\n" + "1,2\n" * 5000 + "1,oops\n")
    stats = api.fit_paths([str(good)], ["zscore"])
    with pytest.raises(DataError, match="value 'oops' on line 5002 is not a number"):
        api.check(stats, [str(bad)], engine=DaskEngine(eng.client, partition_bytes=1000))
    with pytest.raises(DataError, match="good.csv' has no column"):
        api.fit_paths([data["csv"], str(good)], ["zscore"], group_by=["key"], engine=eng)


# ---- the command line ----

def test_cli_fit_transform_check_on_a_running_scheduler(cluster, tmp_path):
    address = cluster.scheduler.address
    src = str(SAMPLE / "sales.csv")
    local = run_cli("fit", src, "-m", "robust", "-g", "store")
    dask = run_cli("fit", src, "-m", "robust", "-g", "store", "--engine", "dask", "--scheduler", address)
    assert local.code == dask.code == 0, dask.err
    _same_stats(json.loads(local.out), json.loads(dask.out))
    assert "note:" not in dask.err
    (tmp_path / "stats.json").write_bytes(local.out)
    want = tmp_path / "local.csv"
    assert run_cli("transform", src, "-s", tmp_path / "stats.json", "-o", want).code == 0
    got = run_cli("transform", src, "-s", tmp_path / "stats.json", "-o", tmp_path / "out",
                  "--engine", "dask", "--scheduler", address)
    assert got.code == 0, got.err
    assert (tmp_path / "out" / "part-00000.csv").read_bytes() == want.read_bytes()
    check = run_cli("check", SAMPLE / "sales.parquet", "-s", tmp_path / "stats.json", "--json",
                    "--engine", "dask", "--scheduler", address)
    assert check.code == 0, check.err
    assert json.loads(check.out)["rows"] == 3000


def test_cli_inverse_on_a_running_scheduler_equals_local(cluster, data, tmp_path):
    address = cluster.scheduler.address
    assert run_cli("fit", data["csv"], "-m", "minmax", "-g", "key", "-o", tmp_path / "s.json").code == 0
    assert run_cli("transform", data["csv"], "-s", tmp_path / "s.json", "-o", tmp_path / "t.csv").code == 0
    assert run_cli("inverse", tmp_path / "t.csv", "-s", tmp_path / "s.json", "-o", tmp_path / "local.csv").code == 0
    r = run_cli("inverse", tmp_path / "t.csv", "-s", tmp_path / "s.json", "-o", tmp_path / "out/",
                "--engine", "dask", "--scheduler", address)
    assert r.code == 0, r.err
    chunks = [open(p, "rb").read() for p in _parts(tmp_path / "out", ".csv")]
    joined = chunks[0] + b"".join(c[c.index(b"\n") + 1:] for c in chunks[1:])
    assert joined == (tmp_path / "local.csv").read_bytes()
    back = pd.read_csv(tmp_path / "local.csv", dtype={"id": str, "key": str})
    want = pd.read_csv(data["csv"], dtype={"id": str, "key": str})
    assert np.allclose(back["x"], want["x"], rtol=1e-12, atol=1e-12, equal_nan=True)


def test_an_error_names_the_input_as_given_as_the_local_engine_does(cluster, tmp_path):
    """The workers read the absolute path; messages name the path the user gave."""
    (tmp_path / "r.csv").write_bytes(b"a,b\n1,2\n3,4,5\n")
    (tmp_path / "h.parquet").write_bytes(b"not parquet")
    for name in ("r.csv", "h.parquet"):
        local = run_cli("fit", name, cwd=tmp_path)
        dask = run_cli("fit", name, "--engine", "dask", "--scheduler", cluster.scheduler.address, cwd=tmp_path)
        assert local.code == dask.code == 3 and f"'{name}'" in local.err, local.err
        assert dask.err == local.err


def test_a_data_error_with_sketches_in_the_stats_is_one_line(cluster, data, tmp_path):
    """The statistics' sketches, held by the error's traceback, are freed before the interpreter
    tears its modules down: no "nanobind: leaked ..." lines under the error."""
    address = cluster.scheduler.address
    bad = tmp_path / "bad.csv"
    bad.write_bytes(open(data["csv"], "rb").read() + b"999999,k1,oops,1,2,x\n")
    assert run_cli("fit", data["csv"], "--sketch", "-o", tmp_path / "s.json").code == 0
    for args in (["transform", bad, "-s", tmp_path / "s.json", "-o", tmp_path / "out/"],
                 ["check", bad, "-s", tmp_path / "s.json"]):
        r = run_cli(*args, "--engine", "dask", "--scheduler", address)
        assert r.code == 3 and r.err.count("\n") == 1 and "'oops'" in r.err, r.err


@pytest.mark.parametrize("args,message", [
    (["fit", "x.csv", "--scheduler", "tcp://127.0.0.1:8786"], "--scheduler needs --engine dask"),
    (["fit", "x.csv", "--engine", "spark"], "--engine must be local or dask"),
])
def test_cli_usage_errors(args, message):
    r = run_cli(*args)
    assert r.code == 2 and message in r.err


def test_cli_transform_needs_a_directory(cluster, tmp_path):
    api.fit_paths([str(SAMPLE / "sales.csv")], ["zscore"]).save(str(tmp_path / "s.json"))
    r = run_cli("transform", SAMPLE / "sales.csv", "-s", tmp_path / "s.json", "--engine", "dask",
                "--scheduler", cluster.scheduler.address)
    assert r.code == 2 and "-o DIR/" in r.err


def test_cli_without_dask_names_the_extra(tmp_path):
    fake = tmp_path / "fake"
    (fake / "dask").mkdir(parents=True)
    (fake / "dask" / "__init__.py").write_text("raise ImportError('No module named dask')\n")
    r = run_cli("fit", SAMPLE / "sales.csv", "--engine", "dask",
                env={"PYTHONPATH": os.pathsep.join([str(fake), *sys.path])})
    assert r.code == 2
    assert r.err.strip() == "Error: --engine dask needs dask and distributed: pip install 'normcli[dask]'"


def test_cli_starts_a_local_cluster_and_says_so(tmp_path):
    r = run_cli("fit", SAMPLE / "sales.parquet", "--engine", "dask", "-o", tmp_path / "s.json")
    assert r.code == 0, r.err
    assert "note: started a local Dask cluster" in r.err
    assert json.loads((tmp_path / "s.json").read_text())["fitted_on"]["rows"] == 3000
    assert not math.isnan(json.loads((tmp_path / "s.json").read_text())["columns"]["units"]["stats"]["mean"])


def _blocked_signals() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("SigBlk")).split()[1], 16)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_local_cluster_leaves_sigint_and_sighup_to_the_command():
    """A Ctrl-C (or Ctrl-\\) or a hang-up signals the whole process group: the local cluster's worker
    processes hold SIGINT, SIGQUIT and SIGHUP blocked, so that the command alone answers (one line, not a
    traceback per worker), and the thread that started the cluster gets its own mask back."""
    from normcli import engine_dask

    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    with engine_dask.connect() as eng:
        masks = eng.client.run(_blocked_signals)
        assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before
    held = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGHUP - 1)) | (1 << (signal.SIGQUIT - 1))
    assert masks and all(m & held == held for m in masks.values()), masks


def test_cli_error_on_a_local_cluster_worker_is_one_line(tmp_path):
    """A failure inside a worker of the local cluster reaches stderr as the local engine words it,
    without the worker's own log of the failed task."""
    (tmp_path / "f.csv").write_bytes(b"k,x\na,1\na,2\n")
    (tmp_path / "t.csv").write_bytes(b"k,x\na,1\nzz,2\n")
    assert run_cli("fit", tmp_path / "f.csv", "--group-by", "k", "-o", tmp_path / "g.json").code == 0
    r = run_cli("transform", tmp_path / "t.csv", "--stats", tmp_path / "g.json", "-o", tmp_path / "out/",
                "--unseen-group", "error", "--engine", "dask", "--quiet")
    assert r.code == 3, r.err
    assert r.err == "Error: group k='zz' was not seen in fit (--unseen-group error)\n"


@pytest.mark.parametrize("server", ["silent", "not dask"])
def test_a_scheduler_address_where_no_scheduler_answers_is_one_io_error(monkeypatch, server):
    """A server that accepts the connection and never speaks (the client waited for ever), or
    one that answers bytes that are not Dask's (an internal error, MemoryError), is exit 5 with
    one line, within the connect timeout."""
    import socket
    import threading
    import time

    from normcli import engine_dask
    from normcli.errors import IOFailure

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            if server == "not dask":
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setattr(engine_dask, "CONNECT_SECONDS", 1.0)
    monkeypatch.setattr(engine_dask, "CONNECT_GRACE", 1.0)
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    why = "no answer in 2 s" if server == "silent" else r"what answers there is not a Dask scheduler \(\w+\)"
    started = time.monotonic()
    try:
        with pytest.raises(IOFailure, match=rf"^cannot connect to the Dask scheduler at '{address}': {why}$"):
            with engine_dask.connect(address):
                pass
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert time.monotonic() - started < 10


def test_standard_input_is_refused_before_a_local_cluster_starts(tmp_path):
    """The workers cannot read stdin: refused (exit 2) before a cluster is started for them,
    where the run started one (and said so on stderr) first."""
    data = b"x\n1\n2\n"
    (tmp_path / "s.json").write_bytes(run_cli("fit", "-", stdin=data).out)
    for args in (["fit", "-"], ["fit", "-", "--update", tmp_path / "s.json", "-o", tmp_path / "u.json"],
                 ["transform", "-", "--stats", tmp_path / "s.json", "-o", f"{tmp_path}/out/"],
                 ["check", "-", "--stats", tmp_path / "s.json"]):
        r = run_cli(*args, "--engine", "dask", stdin=data)
        assert (r.code, r.err, r.out) == (2, "Error: --engine dask reads files, not standard input\n", b""), args
