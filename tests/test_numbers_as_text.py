"""A column of numbers with a few stray values is refused by fit, wherever those values are,
instead of being left out of the default selection without a word; text columns still are."""
from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import normcli
from conftest import run_cli
from normcli import io
from normcli.errors import DataError
from reliability.helpers import assert_error

SMALL_BLOCK = {"NORMCLI_BLOCK_SIZE": "1024"}  # the sample is the first KiB (about 60 rows here)


def table(tmp_path, stray: bytes | None = None, at: int = 5, rows: int = 400, name: str = "d.csv"):
    """A CSV of an id, a numeric column ``x`` (``stray`` on line ``at`` when given) and ``y``."""
    lines = [b"id,x,y"] + [b"u%04d,%d.5,%d" % (i, i, i % 7) for i in range(rows)]
    if stray is not None:
        i = at - 1  # lines[0] is the header, line 1
        lines[i] = b"u%04d,%s,%d" % (i, stray, i % 7)
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def fitted(path) -> list[str]:
    return list(json.loads(path.read_text())["columns"])


@pytest.mark.parametrize("stray,shown", [(b"-", "-"), (b"abc", "abc"), (b'"1,5"', "1,5"), (b"?", "?"),
                                         (b"1.2.3", "1.2.3"), (b"12 kg", "12 kg")])
def test_a_stray_value_in_the_sample_is_an_error_naming_column_value_and_line(tmp_path, stray, shown):
    src, out = table(tmp_path, stray), tmp_path / "s.json"
    line = assert_error(run_cli("fit", src, "-o", out), 3, "column 'x'", f"'{shown}'", "line 5", "--exclude x")
    assert line == (f"Error: column 'x': value '{shown}' on line 5 is not a number, though 399 of its first "
                    "400 values are; fix or empty such values, or leave the column out with --exclude x")
    assert not out.exists()


@pytest.mark.parametrize("at", [5, 380])
def test_the_same_stray_value_early_or_late_is_exit_3(tmp_path, at):
    src, out = table(tmp_path, b"abc", at=at), tmp_path / "s.json"
    r = run_cli("fit", src, "-o", out, env=SMALL_BLOCK)
    assert_error(r, 3, "column 'x'", "'abc'", f"line {at}")
    assert not out.exists()


def test_exclude_gets_past_it_and_transform_passes_the_column_through(tmp_path):
    src, stats, out = table(tmp_path, b"-"), tmp_path / "s.json", tmp_path / "o.csv"
    r = run_cli("fit", src, "-o", stats, "--exclude", "x")
    assert r.code == 0 and r.err == "", r.err
    assert fitted(stats) == ["y"]
    assert run_cli("transform", src, "--stats", stats, "-o", out).code == 0
    got = [line.split(b",")[1] for line in out.read_bytes().splitlines()]
    assert got == [line.split(b",")[1] for line in src.read_bytes().splitlines()]


def test_text_columns_are_still_left_out_quietly(tmp_path):
    src, out = tmp_path / "t.csv", tmp_path / "s.json"
    # ids, names, dates, codes starting with digits, a column of numbers only as a minority
    rows = [b"id,name,day,code,few,x"] + [b"u%04d,Ann %d,2024-01-%02d,%dA,%s,%d" % (i, i, i % 28 + 1, i, b"7" if i % 3 == 0 else b"n.a.", i)
                                          for i in range(300)]
    src.write_bytes(b"\n".join(rows) + b"\n")
    r = run_cli("fit", src, "-o", out)
    assert r.code == 0 and r.err == "", r.err
    assert fitted(out) == ["x"]


def test_null_tokens_and_blank_fields_are_not_stray_values(tmp_path):
    src, out = tmp_path / "n.csv", tmp_path / "s.json"
    src.write_bytes(b"x,y\n1,2\nn/a,3\nNA,4\n,5\n  ,6\n7,7\n")
    r = run_cli("fit", src, "-o", out)
    assert r.code == 0, r.err
    assert fitted(out) == ["x", "y"]
    assert json.loads(out.read_text())["columns"]["x"]["stats"]["count"] == 2


@pytest.mark.parametrize("values,refused", [
    (["1", "2", "x", "y"], True),  # half the values are numbers: refused
    (["1", "x", "y"], False),  # a minority: text
    (["x", "y", "z"], False),  # no number at all: text
    (["1", "NA", "", "-"], True),  # nulls do not count: one number, one other
])
def test_the_rule_at_least_one_number_and_at_least_half(tmp_path, values, refused):
    src, out = tmp_path / "r.csv", tmp_path / "s.json"
    src.write_text("v,y\n" + "".join(f"{v},{i}\n" for i, v in enumerate(values)))
    r = run_cli("fit", src, "-o", out)
    if refused:
        assert_error(r, 3, "column 'v'", "--exclude v")
        assert not out.exists()
    else:
        assert r.code == 0, r.err
        assert fitted(out) == ["y"]


def test_every_such_column_goes_into_the_exclude_hint(tmp_path):
    src = tmp_path / "m.csv"
    src.write_bytes(b"a,b c,d\n1,2,3\n-,?,4\n5,6,7\n")
    line = assert_error(run_cli("fit", src), 3)
    assert line == ("Error: column 'a': value '-' on line 3 is not a number, though 2 of its first 3 values are "
                    "(likewise 'b c'); fix or empty such values, or leave those columns out with --exclude 'a,b c'")
    r = run_cli("fit", src, "--exclude", "a,b c")
    assert r.code == 0 and list(json.loads(r.text)["columns"]) == ["d"]


@pytest.mark.parametrize("header, names, hint", [
    (b'id,"x,1","a""b"', ["x,1", 'a"b'], """'"x,1","a""b"'"""),
    (b"id,", [""], """'""'"""),
])
def test_the_exclude_hint_quotes_names_as_the_option_reads_them(tmp_path, header, names, hint):
    """The hint is a working argument: a name with a comma, a quote or a line break, or none,
    is quoted as in CSV (as --exclude reads it), and then for the shell."""
    src = tmp_path / "n.csv"
    src.write_bytes(header + b"\n1,1" + b",1" * (len(names) - 1) + b"\n2,2" + b",2" * (len(names) - 1)
                    + b"\n3,oops" + b",z" * (len(names) - 1) + b"\n")
    line = assert_error(run_cli("fit", src), 3)
    assert line.endswith(f" out with --exclude {hint}"), line
    import shlex

    r = run_cli("fit", src, "--exclude", *shlex.split(hint), "-o", tmp_path / "s.json")
    assert r.code == 0 and fitted(tmp_path / "s.json") == ["id"], r.err


@pytest.mark.parametrize("option", ["--exclude", "--group-by"])
def test_a_list_option_that_names_no_column_is_a_usage_error(tmp_path, option):
    """--exclude '' excluded nothing, silently; the column without a name is written ""."""
    src = tmp_path / "e.csv"
    src.write_bytes(b"x,\n1,1\n2,2\n")
    for value in ("", ","):
        assert_error(run_cli("fit", src, option, value, "-o", tmp_path / "s.json"), 2,
                     f'{option} names no column (the column without a name is written "")')
    r = run_cli("fit", src, option, '""', "-o", tmp_path / "s.json")
    assert r.code == 0 and fitted(tmp_path / "s.json") == ["x"], r.err


def test_a_quoted_line_break_in_the_value_keeps_the_error_on_one_line(tmp_path):
    src = tmp_path / "q.csv"
    src.write_bytes(b'x,y\n1,1\n"4\n2",2\n3,3\n')
    assert_error(run_cli("fit", src), 3, "value '4\\n2' on line 3")


def test_line_numbers_count_blank_lines_and_skip_ragged_rows(tmp_path):
    src = tmp_path / "l.csv"
    src.write_bytes(b"x,y\n\n1,1\n2,2,2\n\n3,3\noops,4\n5,5\n")
    with io.open_source(str(src)) as source:
        sample = source.sample_text()["x"]
    assert (sample.values, sample.numbers, sample.example, sample.where) == (4, 3, "oops", "line 7")


def test_stdin_is_judged_alike(tmp_path):
    src = table(tmp_path, b"abc")
    assert_error(run_cli("fit", "-", stdin=src.read_bytes()), 3, "column 'x'", "'abc' on line 5")


def test_named_columns_name_the_value(tmp_path):
    src = table(tmp_path, b"abc")
    assert_error(run_cli("fit", src, "--columns", "x"), 3,
                 "column 'x' is not numeric (its values read as string: 'abc' on line 5 is not a number)")
    assert_error(run_cli("fit", src, "--method", "minmax:x"), 3,
                 "column 'x' is not numeric (its values read as string: 'abc' on line 5 is not a number)")
    assert_error(run_cli("fit", src, "--columns", "id"), 3,
                 "column 'id' is not numeric (its values read as string: 'u0000' on line 2 is not a number)")


@pytest.mark.parametrize("encode", [False, True])
@pytest.mark.parametrize("x, numbers", [(["1", "2", "abc", None], 2), (["1", "2", "3", "4"], 4)])
def test_parquet_text_keeps_its_type_but_a_column_of_numbers_there_is_named(tmp_path, x, numbers, encode):
    """Declared text stays text (ids written as strings are common), but a text column that
    holds numbers is not left out without a word: a warning names it, as CSV's error would."""
    src, out = tmp_path / "p.parquet", tmp_path / "s.json"
    column = pa.array(x).dictionary_encode() if encode else pa.array(x)
    pq.write_table(pa.table({"x": column, "id": ["a", "b", "1", "c"], "y": [1.0, 2.0, 3.0, 5.0]}), src)
    r = run_cli("fit", src, "-o", out)
    assert r.code == 0 and r.err == (f"warning: column 'x' is text in the Parquet file, though {numbers} of its first "
                                     f"{len([v for v in x if v])} values read as numbers: left out (convert it to "
                                     "numbers to fit it)\n"), r.err
    assert fitted(out) == ["y"]
    assert json.loads(out.read_text())["columns"]["y"]["stats"]["mean"] == 2.75
    r = run_cli("fit", src, "-o", out, "--exclude", "x")  # said, it is quiet
    assert r.code == 0 and r.err == "" and fitted(out) == ["y"]


def test_parquet_partition_keys_are_text_by_design_and_not_named(tmp_path):
    for year in (2023, 2024):
        (tmp_path / "d" / f"year={year}").mkdir(parents=True)
        pq.write_table(pa.table({"y": [1.0, 2.0]}), tmp_path / "d" / f"year={year}" / "part-0.parquet")
    r = run_cli("fit", tmp_path / "d", "-o", tmp_path / "s.json")
    assert r.code == 0 and r.err == "", r.err
    assert fitted(tmp_path / "s.json") == ["y"]


def test_api_refuses_a_categorical_of_numbers_as_text():
    df = pd.DataFrame({"x": pd.Categorical(["1", "2", "abc", "4"]), "y": [1.0, 2.0, 3.0, 5.0]})
    with pytest.raises(DataError, match=r"^column 'x': value 'abc' on row 2 \(counting from 0\) is not a number"):
        normcli.fit(df)
    assert list(normcli.fit(df, exclude="x").columns) == ["y"]


# ---- the Python API ----

@pytest.mark.parametrize("x", [[1.0, 2.0, "abc", 4.0], ["1", "2", "abc", "4"]])
def test_api_refuses_a_frame_column_of_numbers_and_text(x):
    df = pd.DataFrame({"x": x, "y": [1.0, 2.0, 3.0, 5.0]})
    with pytest.raises(DataError, match=r"^column 'x': value 'abc' on row 2 \(counting from 0\) is not a number, though 3 of its "
                                        r"first 4 values are; .* --exclude x$"):
        normcli.fit(df)
    stats = normcli.fit(df, exclude=["x"])
    assert list(stats.columns) == ["y"]
    assert stats.transform(df)["x"].tolist() == x


def test_api_reads_a_csv_as_the_cli_does(tmp_path):
    src = table(tmp_path, b"abc")
    with pytest.raises(DataError, match=r"column 'x': value 'abc' on row 3 \(counting from 0\) is not a number"):
        normcli.fit(pd.read_csv(src))
    with pytest.raises(DataError, match=r"column 'x': value 'abc' on line 5 is not a number"):
        normcli.fit(str(src))


def test_api_leaves_text_out_quietly():
    df = pd.DataFrame({"id": ["u1", "u2", None], "mixed": [1, "u2", "u3"], "y": [1.0, 2.0, 3.0]})
    assert list(normcli.fit(df).columns) == ["y"]


def test_api_numbers_held_as_text():
    df = pd.DataFrame({"x": ["1", "2", "3"], "y": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match=r"^column 'x' holds numbers as text \(all 3 values sampled\); convert"):
        normcli.fit(df)


def test_dask_engine_uses_the_same_sample(tmp_path):
    distributed = pytest.importorskip("distributed")
    from normcli.api import fit_paths
    from normcli.engine_dask import DaskEngine

    src = table(tmp_path, b"abc", rows=2000)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        engine = DaskEngine(client, partition_bytes=4000)
        with pytest.raises(DataError, match=r"^column 'x': value 'abc' on line 5 is not a number"):
            fit_paths([str(src)], [], engine=engine)
        assert list(fit_paths([str(src)], [], exclude=["x"], engine=engine).columns) == ["y"]


# ---- reading text as numbers: the same as pyarrow ----

EDGES = ["1", "-1", "+1", ".5", "5.", "1e5", "1E+5", "1e-5", "1.e5", "5.e3", "00012", "-0", "1e500",
         "inf", "-inf", "+Inf", "INFINITY", "nan", "-NaN", "+nan", " 3", "3 ", "\t3\t",
         ".e5", "e5", "1e", "1_000", "0x10", "1,5", "1.2.3", "-", "+", ".", "--1", "1 2", "1f", "1d5",
         "infinit", "nana", "+-1", "１", "١", "3\r", "é"]


def reads_as_number(text: str) -> bool:
    """pyarrow's own answer: the text, spaces and tabs around it aside, casts to float64."""
    text = text.strip(" \t")
    try:
        pa.array([text]).cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return text != ""


def test_numbers_are_what_pyarrow_reads_as_numbers():
    rng = random.Random(5)
    alphabet = "0123456789+-.eEinfatyINFATY \t,x"
    texts = EDGES + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9))) for _ in range(20000)]
    for kind in (pa.string(), pa.large_string()):
        column = pa.chunked_array([pa.array(texts[:7], kind), pa.array(texts[7:], kind)])
        sample = io.text_samples(pa.table({"t": column}))["t"]
        expected = [reads_as_number(t) for t in texts]
        assert sample.numbers == sum(expected)
        assert sample.example == texts[expected.index(False)]


def test_text_samples_of_a_sliced_array_with_nulls():
    arr = pa.array(["x", None, "1", "NA", " ", "2", "y", None])[1:]
    sample = io.text_samples(pa.table({"t": arr}), null_values=["NA"])["t"]
    assert (sample.values, sample.numbers, sample.example, sample.where) == (3, 2, "y", "row 6")
    assert io.text_samples(pa.table({"n": np.arange(3)})) == {}


def _sparse(tmp_path, later: bool) -> tuple:
    """``x`` of numbers and ``b``, empty in the first KiB (the sample) and, if ``later``, numbers after it."""
    b = np.where(np.arange(400) >= 300, np.arange(400) * 0.25, np.nan) if later else np.full(400, np.nan)
    lines = ["x,b"] + [f"{i}.5," + ("" if np.isnan(v) else repr(float(v))) for i, v in enumerate(b)]
    path = tmp_path / "sparse.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, b


@pytest.mark.parametrize("later", [False, True])
def test_a_column_empty_in_the_sample_is_named_and_can_be_fitted(tmp_path, later):
    src, b = _sparse(tmp_path, later)
    r = run_cli("fit", src, "-o", tmp_path / "s.json", env=SMALL_BLOCK)
    assert r.code == 0, r.err
    assert fitted(tmp_path / "s.json") == ["x"]
    warning = [line for line in r.err.splitlines() if "'b'" in line]
    assert warning == ["warning: column 'b' has no values in the input's first block, so its type is unknown: "
                       "left out (--columns b fits it)"]
    r = run_cli("fit", src, "--columns", "x,b", "-o", tmp_path / "t.json", env=SMALL_BLOCK)
    assert r.code == 0, r.err
    st = json.loads((tmp_path / "t.json").read_text())["columns"]["b"]["stats"]
    values = b[~np.isnan(b)]
    assert (st["count"], st["nulls"]) == (values.size, b.size - values.size)
    if later:
        assert st["mean"] == pytest.approx(values.mean(), rel=1e-12) and st["min"] == values.min()
    r = run_cli("transform", src, "--stats", tmp_path / "t.json", "-o", tmp_path / "o.csv")
    assert r.code == 0, r.err
    got = pd.read_csv(tmp_path / "o.csv")["b"].to_numpy()
    expected = (b - values.mean()) / values.std() if later else b
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("codes", [["0x1f", "0xab", "0X10"], ["0x1f", "0x20", "0x7fffffff"]])
def test_a_column_of_hex_codes_is_text(tmp_path, codes):
    # pyarrow's type guess reads 0x1f as an integer; numbers are parsed as floats, which have no hex
    # form, and pandas reads such a column as text: it is left out of the default fit, as text is.
    src, out = tmp_path / "h.csv", tmp_path / "s.json"
    src.write_text("id,h,x\n" + "".join(f"r{i},{c},{i}.5\n" for i, c in enumerate(codes)))
    assert not pd.api.types.is_numeric_dtype(pd.read_csv(src)["h"])
    r = run_cli("fit", src, "-o", out)
    assert r.code == 0, r.err
    assert fitted(out) == ["x"]
    r = run_cli("transform", src, "--stats", out, "-o", tmp_path / "o.csv")
    assert r.code == 0, r.err
    assert pd.read_csv(tmp_path / "o.csv", dtype=str)["h"].tolist() == codes
