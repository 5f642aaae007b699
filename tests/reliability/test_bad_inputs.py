"""Bad inputs through the real CLI: each gives correct output (checked against NumPy or pandas)
or one clear error line with a documented exit code, and the input is never modified."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from reliability.helpers import assert_error, csv_column, fit, no_leftovers, zscore

@pytest.fixture
def ab_stats(tmp_path):
    """Stats of a (1, 2, 3, 4) and b (10, 20, 30, 40), fitted with zscore."""
    src = tmp_path / "fit.csv"
    src.write_bytes(b"a,b\n1,10\n2,20\n3,30\n4,40\n")
    fit(src, tmp_path / "s.json")
    (tmp_path / "fit.csv").unlink()
    return tmp_path / "s.json"


A = np.array([1.0, 2, 3, 4])
B = np.array([10.0, 20, 30, 40])


def transform(src, stats, out, *args, **kw):
    """Transform ``src`` and check that the input file was not modified."""
    before = src.read_bytes()
    r = run_cli("transform", src, "--stats", stats, "-o", out, *args, **kw)
    assert src.read_bytes() == before
    return r


def test_empty_file(tmp_path, ab_stats):
    src = tmp_path / "empty.csv"
    src.write_bytes(b"")
    assert_error(run_cli("fit", src), 3, "'", "is empty")
    assert_error(transform(src, ab_stats, tmp_path / "o.csv"), 3, "is empty")
    no_leftovers(tmp_path, "empty.csv", "s.json")


def test_header_only(tmp_path, ab_stats):
    src = tmp_path / "h.csv"
    src.write_bytes(b"a,b\n")
    assert_error(run_cli("fit", src), 3, "no numeric columns")
    assert transform(src, ab_stats, tmp_path / "o.csv").code == 0
    assert (tmp_path / "o.csv").read_bytes() == b"a,b\n"


def test_bom_and_crlf(tmp_path):
    src = tmp_path / "w.csv"
    src.write_bytes(b"\xef\xbb\xbfa,note,b\r\n1,x,10\r\n2,y,20\r\n3,z,30\r\n4,w,40\r\n")
    stats, out = tmp_path / "s.json", tmp_path / "o.csv"
    fit(src, stats)
    doc = json.loads(stats.read_text())
    assert list(doc["columns"]) == ["a", "b"]  # the BOM is not part of the first name
    st = doc["columns"]["a"]["stats"]
    assert (st["count"], st["mean"], st["m2"]) == (4, A.mean(), ((A - A.mean()) ** 2).sum())
    assert transform(src, stats, out).code == 0
    ref = pd.read_csv(io.BytesIO(src.read_bytes()), encoding="utf-8-sig", dtype={"note": str})
    got = pd.read_csv(out, dtype={"note": str})
    assert list(got.columns) == ["a", "note", "b"]
    assert got["note"].tolist() == ref["note"].tolist()  # no stray carriage return
    np.testing.assert_allclose(got["a"], zscore(A), rtol=1e-15)
    np.testing.assert_allclose(got["b"], zscore(B), rtol=1e-15)


def test_quoted_fields_with_commas_and_newlines(tmp_path):
    text = (b'id,note,x\n'
            b'1,"a, b",1.5\n'
            b'2,"two\nlines, and ""quotes""",2.5\n'
            b'3,"",-1\n'
            b'4,"x\r\ny",4\n')
    src = tmp_path / "q.csv"
    src.write_bytes(text)
    stats, out = tmp_path / "s.json", tmp_path / "o.csv"
    fit(src, stats, "--columns", "x")
    assert transform(src, stats, out).code == 0
    ref = pd.read_csv(src, dtype=str, keep_default_na=False)
    got = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert got["note"].tolist() == ref["note"].tolist()
    assert got["id"].tolist() == ref["id"].tolist()
    x = ref["x"].astype(float).to_numpy()
    np.testing.assert_allclose(got["x"].astype(float), zscore(x), rtol=1e-15)


@pytest.mark.parametrize("block", [None, "64"])
def test_ragged_row_names_its_line(tmp_path, ab_stats, block):
    rows = "".join(f"{i},{i * 10}\n" for i in range(1, 40))
    src = tmp_path / "r.csv"
    src.write_text("a,b\n" + rows + "7\n" + rows)  # the short row is on line 41
    env = {"NORMCLI_BLOCK_SIZE": block} if block else None
    assert_error(run_cli("fit", src, env=env), 3, "line 41", "expected 2 fields, found 1")
    assert_error(transform(src, ab_stats, tmp_path / "o.csv", env=env), 3, "line 41")
    no_leftovers(tmp_path, "r.csv", "s.json")


def test_duplicate_column_names(tmp_path, ab_stats):
    src = tmp_path / "d.csv"
    src.write_bytes(b"a,b,a\n1,2,3\n")
    assert_error(run_cli("fit", src), 3, "duplicate column names: 'a'")
    assert_error(transform(src, ab_stats, tmp_path / "o.csv"), 3, "duplicate")


def test_a_nul_in_a_column_name(tmp_path, ab_stats):
    """Polars takes column names as C strings: a NUL in one aborted it with a Rust panic and two
    tracebacks (exit 1). It is bad data, one line (a NUL in a value is only text)."""
    src = tmp_path / "n.csv"
    src.write_bytes(b"a,b\0c\n1,2\n3,4\n")
    for r in (run_cli("fit", src), transform(src, ab_stats, tmp_path / "o.csv"), run_cli("fit", "-", stdin=src.read_bytes())):
        assert_error(r, 3, "the column name 'b\\x00c' holds a NUL character")
    no_leftovers(tmp_path, "n.csv", "s.json")


def test_a_huge_bad_value_is_not_echoed_whole(tmp_path, ab_stats):
    """A 1 MiB stray value (or a name as long) made a 1 MB error line in every cron log: the
    quoted value is cut to its first 200 characters, with its length, and the line number stays."""
    value = "v" * (1 << 20)
    src = tmp_path / "h.csv"
    src.write_text("a,b\n" + "1,10\n" * 400_000 + f"{value},20\n")  # past the first block: a numeric column
    line = assert_error(run_cli("fit", src, "-c", "a"), 3,
                        f"column 'a': value '{value[:200]}...' ({len(value):,} characters) on line 400002 is not a number")
    assert len(line) < 400
    line = assert_error(transform(src, ab_stats, tmp_path / "o.csv"), 3, "column 'a'", "on line 400002 is not a number")
    assert len(line) < 400
    r = run_cli("fit", src, "-c", "a", "--log-format", "json")
    error = next(e for e in map(json.loads, r.err.splitlines()) if e["event"] == "error")
    assert len(error["message"]) < 400 and "on line 400002" in error["message"]
    no_leftovers(tmp_path, "h.csv", "s.json")


def test_bytes_that_are_not_utf8(tmp_path, ab_stats):
    header = tmp_path / "h.csv"
    header.write_bytes(b"a,caf\xe9\n1,2\n")
    assert_error(run_cli("fit", header), 3, "h.csv'", "the header is not utf8 text")
    body = tmp_path / "t.csv"
    body.write_bytes(b"a,b,t\n1,10,ok\n2,20,caf\xe9\n")
    assert_error(transform(body, ab_stats, tmp_path / "o.csv"), 3, "t.csv', line 3: column 't' holds bytes that are not UTF-8")
    no_leftovers(tmp_path, "h.csv", "t.csv", "s.json")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_garbage(tmp_path, ab_stats, seed):
    src = tmp_path / "g.csv"
    src.write_bytes(np.random.default_rng(seed).bytes(20000))
    assert_error(run_cli("fit", src), 3)
    assert_error(transform(src, ab_stats, tmp_path / "o.csv"), 3)
    no_leftovers(tmp_path, "g.csv", "s.json")


def test_ten_megabyte_single_line(tmp_path, ab_stats):
    note = b"n" * (10 << 20)
    src = tmp_path / "long.csv"
    src.write_bytes(b"a,note,b\n1,short,10\n2," + note + b",20\n3,\"q,\",30\n4,,40\n")
    out = tmp_path / "o.csv"
    assert transform(src, ab_stats, out, env={"NORMCLI_BLOCK_SIZE": "65536"}).code == 0
    z, w = zscore(A), zscore(B)
    expected = b"a,note,b\n" + b"".join(
        repr(float(z[i])).encode() + b"," + t + b"," + repr(float(w[i])).encode() + b"\n"
        for i, t in enumerate([b"short", note, b'"q,"', b""]))
    assert out.read_bytes() == expected
    # the same line as a header: one 10 MB column name
    wide = tmp_path / "wide.csv"
    wide.write_bytes(b"a," + note + b"\n1,2\n")
    assert_error(run_cli("fit", wide, "--columns", "b"), 3, "column 'b' is not in the input")


def test_all_null_column(tmp_path, ab_stats):
    src = tmp_path / "n.csv"
    src.write_bytes(b"a,b,c\n1,,\n2,,\n3,,\n4,,\n")
    r = run_cli("fit", src)
    assert r.code == 0, r.err
    assert list(json.loads(r.text)["columns"]) == ["a"]  # an all-null column has no known type
    assert "column 'b' has no values in the input's first block" in r.err
    # named, it is fitted: no values, four nulls
    r = run_cli("fit", src, "--columns", "a,b")
    assert r.code == 0, r.err
    st = json.loads(r.text)["columns"]["b"]["stats"]
    assert (st["count"], st["nulls"], st["mean"], st["m2"]) == (0, 4, None, None)
    assert r.err == "warning: column 'b' has no values: fitted as constant (policy scale1)\n"
    assert_error(run_cli("fit", src, "--columns", "a,b", "--constant", "error"), 3,
                 "column 'b' has no values (--constant error)")
    # A fitted column that is all null today stays null; the others are still normalized.
    out = tmp_path / "o.csv"
    assert transform(src, ab_stats, out).code == 0
    got = out.read_bytes()
    assert np.isnan(csv_column(got, "b")).all()
    np.testing.assert_allclose(csv_column(got, "a"), zscore(A), rtol=1e-15)
    assert got.decode().splitlines()[1].endswith(",,")


@pytest.mark.parametrize("block", ["16", None])
@pytest.mark.parametrize("value", [b"inf", b"-1e400", b"Infinity"])
def test_an_infinite_value_refused_by_fit_is_named_by_its_line(tmp_path, block, value):
    # line numbers from Python's csv module: a quoted newline makes a record two lines
    rows = [b"u%d,%d" % (i, i) for i in range(40)] + [b'"q\nr",1'] + [b"v%d,%d" % (i, i) for i in range(30)]
    at = 55
    rows[at] = b"w," + value
    text = b"id,x{at}\n" + b"\n".join(rows) + b"\n"  # braces in a name are text, not a place to fill
    import csv

    reader = csv.reader(io.StringIO(text.decode(), newline=""))
    line = next(reader) and 2
    for i, _ in enumerate(reader):
        if i == at:
            break
        line = reader.line_num + 1
    src = tmp_path / "i.csv"
    src.write_bytes(text)
    env = {"NORMCLI_BLOCK_SIZE": block} if block else None
    assert_error(run_cli("fit", src, env=env), 3, f"column 'x{{at}}' holds an infinite value on line {line};")
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"x": [1.0] * 9 + [float("inf")]}), tmp_path / "i.parquet")
    assert_error(run_cli("fit", tmp_path / "i.parquet"), 3, "column 'x' holds an infinite value on row 10;")


def test_inf_rejected_by_fit_and_mapped_by_transform(tmp_path, ab_stats):
    src = tmp_path / "i.csv"
    src.write_bytes(b"a,b\n1,inf\n2,-inf\n3,30\n4,-Infinity\n")
    assert_error(run_cli("fit", src), 3, "column 'b' holds an infinite value")
    out = tmp_path / "o.csv"
    assert transform(src, ab_stats, out).code == 0
    b = np.array([np.inf, -np.inf, 30, -np.inf])
    np.testing.assert_array_equal(csv_column(out.read_bytes(), "b"), zscore(b, B))


def test_values_whose_variance_overflows_float64(tmp_path):
    src = tmp_path / "h.csv"
    src.write_bytes(b"g,a\nk,1e308\nk,-1.7e308\nk,1.7e308\n")
    assert_error(run_cli("fit", src), 3, "column 'a'", "too large")
    assert_error(run_cli("fit", src, "--group-by", "g"), 3, "column 'a'", "too large")


@pytest.mark.parametrize("method", ["minmax", "maxabs", "robust"])
@pytest.mark.parametrize("grouped", [False, True])
def test_methods_without_moments_fit_values_whose_variance_overflows(tmp_path, method, grouped):
    """minmax, maxabs and robust need no mean or variance: values near the float64 limit fit
    (the moments are unknown, null in the file) and transform as scikit-learn's scalers do."""
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler

    a = np.array([1.7e308, 1.6e308, 1.5e308, 1.2e308])  # M2 overflows, max - min does not
    b = np.array([1.0, 2.0, 4.0, 8.0])
    src = tmp_path / "h.csv"
    src.write_text("g,a\n" + "".join(f"k,{float(v)!r}\n" for v in a) + "".join(f"j,{float(v)!r}\n" for v in b))
    stats, out = tmp_path / "s.json", tmp_path / "o.csv"
    fit(src, stats, "-m", method, "--columns", "a", *(["--group-by", "g"] if grouped else []))
    doc = json.loads(stats.read_text())["columns"]["a"]
    assert doc["stats"]["mean"] is None and doc["stats"]["m2"] is None
    if grouped:
        assert doc["groups"]["mean"][0] is None and doc["groups"]["mean"][1] == b.mean()
    assert transform(src, stats, out).code == 0
    scaler = {"minmax": MinMaxScaler, "maxabs": MaxAbsScaler, "robust": RobustScaler}[method]
    parts = [a, b] if grouped else [np.concatenate([a, b])]
    # The scalers' output does not change when the data are scaled by a power of 2 (exactly):
    # scikit-learn's own quantiles overflow at this magnitude.
    want = np.concatenate([scaler().fit_transform(p[:, None] * (2.0**-1000 if p.max() > 1e300 else 1.0)).ravel()
                           for p in parts])
    np.testing.assert_allclose(csv_column(out.read_bytes(), "a"), want, rtol=1e-15)


@pytest.mark.parametrize("method", ["zscore", "minmax", "maxabs", "robust"])
@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("how", ["merge", "update"])
def test_parts_whose_moments_overflow_together_merge_as_one_fit(tmp_path, method, grouped, how):
    """Each part's variance fits float64, the variance of both does not (NumPy: inf). As in a fit
    of all the data: zscore, which needs it, is refused (exit 3); the others keep the moments
    unknown (null) with the exact count, min and max. It was an internal error (exit 1)."""
    a, b = np.linspace(-9e152, 9e152, 50), np.linspace(1e154, 1.2e154, 50)
    both = np.concatenate([a, b])
    assert np.isfinite(a.var()) and np.isfinite(b.var())
    with np.errstate(over="ignore"):
        assert not np.isfinite(both.var())
    grouping = ["--group-by", "g"] if grouped else []
    parts = []
    for name, values in (("a", a), ("b", b)):
        src = tmp_path / f"{name}.csv"
        src.write_text("g,x\n" + "".join(f"k,{float(v)!r}\n" for v in values))
        parts.append(src)
    first, out = tmp_path / "a.json", tmp_path / "ab.json"
    fit(parts[0], first, "-m", method, "-c", "x", *grouping)
    if how == "merge":
        fit(parts[1], tmp_path / "b.json", "-m", method, "-c", "x", *grouping)
        r = run_cli("merge", first, tmp_path / "b.json", "-o", out)
    else:
        r = run_cli("fit", parts[1], "--update", first, "-o", out)
    if method == "zscore":
        assert_error(r, 3, "column 'x'", "too large for float64")
        assert not out.exists()
        return
    assert r.code == 0, r.err
    doc = json.loads(out.read_text())["columns"]["x"]
    st = doc["groups"] if grouped else doc["stats"]
    first_of = (lambda v: v[0]) if grouped else (lambda v: v)
    assert first_of(st["mean"]) is None and first_of(st["m2"]) is None
    assert first_of(st["count"]) == len(both)
    assert (first_of(st["min"]), first_of(st["max"])) == (both.min(), both.max())


@pytest.mark.parametrize("method,what", [("minmax", "max - min overflows"), ("robust", "the IQR overflows")])
@pytest.mark.parametrize("grouped", [False, True])
def test_a_range_beyond_float64_is_refused_quietly(tmp_path, method, what, grouped):
    """max - min (or the IQR) of 1e308 and -1e308 is inf: no constant policy stands in for that
    scale, so fit refuses it, with one line and no RuntimeWarning (scikit-learn maps every value
    to 0 here). maxabs has a finite scale, and check of its sketch stays quiet too."""
    src = tmp_path / "h.csv"
    src.write_text("g,x,c\nk,1e308,5\nk,-1e308,5\n")
    grouping = ["--group-by", "g"] if grouped else []
    assert_error(run_cli("fit", src, "-m", method, "-c", "x", *grouping), 3, "column 'x'", what)
    stats = tmp_path / "s.json"
    fit(src, stats, "-m", "maxabs", "-c", "x", "--sketch", *grouping)
    r = run_cli("check", src, "--stats", stats, "--json")
    assert r.code == 0 and r.err == "", r.err


def test_integers_above_2_53_become_float64(tmp_path):
    big = [9007199254740993, 9007199254740995, 2**62 + 1, -(2**60) - 7]
    src = tmp_path / "big.csv"
    src.write_text("id,n\n" + "".join(f"{i},{v}\n" for i, v in enumerate(big)))
    stats, out = tmp_path / "s.json", tmp_path / "o.csv"
    fit(src, stats, "--columns", "n")
    x = np.array(big, dtype=np.float64)  # what pandas and scikit-learn see: rounded to float64
    st = json.loads(stats.read_text())["columns"]["n"]["stats"]
    assert (st["min"], st["max"]) == (x.min(), x.max())
    assert st["mean"] + st["mean_lo"] == pytest.approx(x.mean(), rel=1e-15)
    assert transform(src, stats, out).code == 0
    np.testing.assert_allclose(csv_column(out.read_bytes(), "n"), zscore(x), rtol=1e-12)


def test_non_numeric_value_after_the_first_block(tmp_path):
    rows = [f"{i * 0.5},{i}\n" for i in range(20000)]
    rows[15000] = "oops,15000\n"  # file line 15002, far past the first 64 KiB piece
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("x,y\n" + "".join(rows[:100]))
    bad.write_text("x,y\n" + "".join(rows))
    env = {"NORMCLI_BLOCK_SIZE": "65536"}
    assert_error(run_cli("fit", bad, env=env), 3, "column 'x': value 'oops' on line 15002 is not a number")
    stats = tmp_path / "s.json"
    fit(good, stats)
    r = transform(bad, stats, tmp_path / "o.csv", env=env)
    assert_error(r, 3, "column 'x': value 'oops' on line 15002")
    no_leftovers(tmp_path, "good.csv", "bad.csv", "s.json")


def test_columns_in_another_order(tmp_path, ab_stats):
    src = tmp_path / "r.csv"
    src.write_bytes(b"b,t,a\n10,p,1\n20,q,2\n30,r,3\n40,s,4\n")
    out = tmp_path / "o.csv"
    assert transform(src, ab_stats, out).code == 0
    got = out.read_bytes()
    assert got.startswith(b"b,t,a\n")  # the file's order is kept
    np.testing.assert_allclose(csv_column(got, "a"), zscore(A), rtol=1e-15)
    np.testing.assert_allclose(csv_column(got, "b"), zscore(B), rtol=1e-15)


def test_missing_fitted_column(tmp_path, ab_stats):
    src = tmp_path / "m.csv"
    src.write_bytes(b"a,c\n1,2\n")
    assert_error(transform(src, ab_stats, tmp_path / "o.csv"), 4, "column 'b'")
    no_leftovers(tmp_path, "m.csv", "s.json")


def test_extra_columns_pass_through_byte_for_byte(tmp_path, ab_stats):
    src = tmp_path / "e.csv"
    src.write_bytes(b"zip,a,b,when\n007,1,10,2024/01/02\n0042,2,20,x\n00,3,30,\n1e3,4,40,NA\n")
    out = tmp_path / "o.csv"
    assert transform(src, ab_stats, out).code == 0
    z, w = zscore(A), zscore(B)
    expected = [b"zip,a,b,when"] + [
        b",".join([zc, repr(float(z[i])).encode(), repr(float(w[i])).encode(), wc])
        for i, (zc, wc) in enumerate([(b"007", b"2024/01/02"), (b"0042", b"x"), (b"00", b""), (b"1e3", b"NA")])]
    assert out.read_bytes() == b"\n".join(expected) + b"\n"


def test_empty_stdin(tmp_path, ab_stats):
    assert_error(run_cli("fit", "-", stdin=b""), 3, "standard input is empty")
    assert_error(run_cli("transform", "-", "--stats", ab_stats, stdin=b""), 3, "standard input is empty")


def test_ragged_row_with_bytes_that_are_not_utf8(tmp_path, ab_stats):
    src = tmp_path / "r.csv"
    src.write_bytes(b"a,b\n1,10\n3,30,\xc3\n")
    assert_error(run_cli("fit", src), 3, "Expected 2 columns, got 3")
    assert_error(transform(src, ab_stats, tmp_path / "o.csv"), 3, "line 3")


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_damaged_gzip_input_is_bad_data(tmp_path, ab_stats, damage):
    """A gzip input that is cut short or damaged is read, but its content is bad: exit 3 (as
    any bad input data), not 5 (which says the input is missing or unreadable)."""
    import gzip

    rng = np.random.default_rng(2)
    text = "a,b\n" + "".join(f"{x},{y}\n" for x, y in rng.normal(size=(20000, 2)))
    packed = gzip.compress(text.encode())
    damaged = packed[: len(packed) // 2] if damage == "truncated" else packed[:20] + bytes(50) + packed[70:]
    src = tmp_path / "in.csv.gz"
    src.write_bytes(damaged)
    assert_error(run_cli("fit", src, "-o", tmp_path / "f.json"), 3, "in.csv.gz", "a damaged gzip stream")
    assert_error(transform(src, ab_stats, tmp_path / "o.csv"), 3, "in.csv.gz", "a damaged gzip stream")
    assert_error(run_cli("fit", "-", "-o", tmp_path / "f.json", stdin=damaged), 3, "standard input")
    no_leftovers(tmp_path, "in.csv.gz", "s.json")


@pytest.mark.parametrize("first", [b'"' + b"ab,c\n" * 700_000 + b'"', b"n" * (3 << 20)], ids=["quoted", "plain"])
def test_a_first_record_longer_than_a_block_is_fitted(tmp_path, first):
    # The first block is the sample that says which columns are numbers: a first record that
    # runs past it (a quoted field with separators and newlines, or plain text) is read to its end.
    src = tmp_path / "long.csv"
    src.write_bytes(b"a,note,b\n1," + first + b",10\n" + b"".join(b"%d,s,%d\n" % (i, 10 * i) for i in range(2, 100)))
    a, b = np.arange(1.0, 100), 10.0 * np.arange(1.0, 100)
    r = run_cli("fit", src, "-o", tmp_path / "s.json")
    assert r.code == 0, r.err
    columns = json.loads((tmp_path / "s.json").read_text())["columns"]
    assert sorted(columns) == ["a", "b"]
    for name, x in (("a", a), ("b", b)):
        stats = columns[name]["stats"]
        assert stats["count"] == 99 and stats["min"] == x.min() and stats["max"] == x.max()
        assert stats["mean"] == pytest.approx(x.mean(), rel=1e-15)


def test_a_small_block_inside_a_quoted_field_is_no_open_quote(tmp_path):
    # The first block ends inside a quoted field of the first record: that is no quote left open.
    src = tmp_path / "q.csv"
    src.write_bytes(b'a,t\r\n1,"x, ""y""\nz"\r\n' + b"".join(b'%d,"w,%d"\r\n' % (i, i) for i in range(2, 2000)))
    r = run_cli("fit", src, "--columns", "a", "-o", tmp_path / "s.json", env={"NORMCLI_BLOCK_SIZE": "16"})
    assert r.code == 0, r.err
    stats = json.loads((tmp_path / "s.json").read_text())["columns"]["a"]["stats"]
    assert stats["count"] == 1999 and stats["mean"] == pytest.approx(1000.0, rel=1e-15)


def test_a_backslash_t_delimiter_is_the_tab(tmp_path):
    # -d '\t' reaches the program as a backslash and a t, as DuckDB and csvkit take it: the tab
    src = tmp_path / "d.txt"
    src.write_bytes(b"a\tb\n1\t10\n2\t20\n4\t20\n")
    r = run_cli("fit-transform", src, "-d", "\\t", "--stats-out", tmp_path / "s.json", "-o", tmp_path / "o.txt")
    assert r.code == 0, r.err
    got = pd.read_csv(tmp_path / "o.txt", sep="\t")
    a = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(got["a"], (a - a.mean()) / a.std(), rtol=1e-15)


@pytest.mark.parametrize("delimiter", ["é", "\n", "\r", '"', "||"])
def test_a_delimiter_no_parser_takes_is_a_usage_error(tmp_path, ab_stats, delimiter):
    src = tmp_path / "d.csv"
    src.write_bytes(b"a,b\n1,10\n2,20\n")
    assert_error(run_cli("fit", src, "-d", delimiter, "-o", tmp_path / "x.json"), 2, "the delimiter must be")
    assert_error(transform(src, ab_stats, tmp_path / "o.csv", "-d", delimiter), 2, "the delimiter must be")
    no_leftovers(tmp_path, "d.csv", "s.json")


def test_parquet_that_arrow_cannot_read_or_that_is_damaged_is_bad_input(tmp_path, ab_stats):
    """A Polars Int128 column, a corrupt page header: exit 3 with one line, nothing left."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    wide = tmp_path / "i128.parquet"
    pl.DataFrame({"a": [1.0, 2.0], "i": pl.Series([1, 2], dtype=pl.Int128)}).write_parquet(wide)
    assert_error(run_cli("fit", wide), 3, "i128.parquet' holds a type Arrow cannot read")
    assert_error(transform(wide, ab_stats, tmp_path / "o.parquet"), 3, "holds a type Arrow cannot read")
    damaged = tmp_path / "c.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}), damaged)
    data = bytearray(damaged.read_bytes())
    data[4:40] = bytes(36)  # the first page's header
    damaged.write_bytes(bytes(data))
    assert_error(transform(damaged, ab_stats, tmp_path / "o.parquet"), 3, "c.parquet' is damaged")
    no_leftovers(tmp_path, "i128.parquet", "c.parquet", "s.json")


@pytest.mark.parametrize("kind", ["date32", "timestamp[ms]", "timestamp[us, tz]"])
def test_a_date_beyond_what_csv_text_shows_is_one_error_line(tmp_path, ab_stats, kind):
    """Polars' CSV writer shows the years -262143 to 262142 and panics beyond them (the panic
    printed on stderr by Rust): the last day is written, the next refused in one line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    last = (np.datetime64("262142-12-31", "D") - np.datetime64("1970-01-01", "D")).astype(int)
    if kind == "date32":
        ok, over = (pa.array([v], pa.int32()).cast(pa.date32()) for v in (last, last + 1))
    else:
        unit = pa.timestamp("ms") if kind == "timestamp[ms]" else pa.timestamp("us", tz="UTC")
        per_day = 86_400_000 if kind == "timestamp[ms]" else 86_400_000_000
        last -= kind != "timestamp[ms]"  # in a time zone, a day short of it (the zone's offset may need it)
        ok, over = (pa.array([v], pa.int64()).cast(unit) for v in (last * per_day, (last + 2) * per_day))
    for arr, good in ((ok, True), (over, False)):
        src = tmp_path / "d.parquet"
        pq.write_table(pa.table({"a": [2.0], "b": [20.0], "d": arr}), src)
        r = transform(src, ab_stats, tmp_path / "o.csv", env={"RUST_BACKTRACE": "1"})
        if good:
            assert (r.code, r.err) == (0, ""), r.err
            day = str(np.datetime64("1970-01-01", "D") + last)
            assert (tmp_path / "o.csv").read_text().splitlines()[1].split(",")[2].startswith("+" + day), day
        else:
            assert_error(r, 3, "cannot write column 'd' as CSV: it holds a date beyond the years -262143 to 262142")
    no_leftovers(tmp_path, "d.parquet", "o.csv", "s.json")
