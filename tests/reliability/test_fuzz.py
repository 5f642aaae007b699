"""Fuzzing fit and transform with generated CSV text (valid and malformed) and stats JSON.

Most examples run the CLI in-process (``normcli.cli.main``) for speed, a few as a real process.
Never a traceback, never an undocumented exit code; for valid input the output satisfies the
method's invariants. Examples per test: the ``ci`` profile by default, ``fuzz`` for a long run
(see conftest.py)."""
from __future__ import annotations

import copy
import csv
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli
from normcli import cli
from reliability.conftest import PROFILE
from reliability.helpers import DOCUMENTED_EXITS

FUZZ = settings.get_profile(PROFILE)
NUMERIC = ["a", "b", "c"]

# Magnitudes where float64 moments stay well within range, with nulls mixed in: two values
# nearer than about 1e-146 are refused by zscore (their variance underflows), a documented exit 3.
finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False).filter(
    lambda v: v == 0 or abs(v) > 1e-100)
cell = st.one_of(finite, finite.map(lambda v: round(v, 2)), st.integers(-10**6, 10**6), st.none())
text_cell = st.text(alphabet=st.sampled_from(list('ab ,"\n;x0é')), max_size=8)  # a bare CR is a line end


@st.composite
def valid_tables(draw) -> tuple[list[str], list[list]]:
    """A header of the numeric columns and a text column ``t``, and 2..40 rows."""
    names = draw(st.permutations(NUMERIC + ["t"]))
    n = draw(st.integers(2, 40))
    rows = [[draw(text_cell) if c == "t" else draw(cell) for c in names] for _ in range(n)]
    for j, c in enumerate(names):  # every numeric column holds at least one value
        if c != "t" and all(r[j] is None for r in rows):
            rows[0][j] = draw(finite)
    return names, rows


def to_csv(names: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    w.writerows([["" if v is None else repr(v) if isinstance(v, float) else v for v in r] for r in rows])
    return buf.getvalue().encode()


def read_csv(data: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    return rows[0], rows[1:]


def run(capsys, *args: str) -> tuple[int, str]:
    """``normcli ARGS`` in-process: the exit code and stderr, checked to be clean."""
    code = cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    check_clean(code, err)
    return code, err


def check_clean(code: int, err: str) -> None:
    assert code in DOCUMENTED_EXITS, (code, err)
    assert "Traceback" not in err and "internal error" not in err, err
    if code != 0:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), err


def column(values: list[str]) -> np.ndarray:
    return np.array([float(v) if v else np.nan for v in values])


@FUZZ
@given(table=valid_tables(), method=st.sampled_from(["zscore", "minmax"]),
       rng=st.tuples(st.integers(-100, 100), st.integers(1, 100)))
def test_fuzz_valid_csv_satisfies_the_method_invariants(capsys, table, method, rng):
    names, rows = table
    data = to_csv(names, rows)
    lo, hi = rng[0] / 10, (rng[0] + rng[1]) / 10  # ends such as -9.7, 6.3: b - a + a need not round to b
    with tempfile.TemporaryDirectory() as d:
        src, stats, out = Path(d, "in.csv"), Path(d, "s.json"), Path(d, "out.csv")
        src.write_bytes(data)
        extra = ["--range", f"{lo},{hi}"] if method == "minmax" else []
        assert run(capsys, "fit", src, "-o", stats, "--columns", ",".join(NUMERIC), "-m", method, "-q", *extra)[0] == 0
        assert run(capsys, "transform", src, "--stats", stats, "-o", out, "-q")[0] == 0
        assert src.read_bytes() == data
        got_names, got = read_csv(out.read_bytes())
    _, src_rows = read_csv(data)
    assert got_names == names and len(got) == len(src_rows)
    t = names.index("t")
    assert [r[t] for r in got] == [r[t] for r in src_rows]  # text passes through exactly
    for c in NUMERIC:
        j = names.index(c)
        x, y = column([r[j] for r in src_rows]), column([r[j] for r in got])
        assert np.array_equal(np.isnan(x), np.isnan(y))  # nulls stay null
        x, y = x[~np.isnan(x)], y[~np.isnan(y)]
        spread = np.ptp(x)
        if method == "minmax":
            if spread > 0:  # exactly: the fitted min and max map to the range's ends
                assert np.all((y >= lo) & (y <= hi)), (x, y)
                assert (y.min(), y.max()) == (lo, hi)
            else:
                assert np.all(y == lo)
        elif x.std() > 1e-6 * np.abs(x).max():  # well-conditioned: the invariants hold tightly
            assert abs(y.mean()) <= 1e-9 and y.std() == pytest.approx(1.0, abs=1e-9), (x, y)
        elif spread == 0:
            assert np.all(y == 0)  # constant column, scale 1
        else:
            assert np.isfinite(y).all()


_line = st.lists(st.one_of(st.sampled_from(["1", "-2.5", "", "x", '"', '"a,b"', "nan", "inf", "1e400",
                                             "9007199254740993", " 3 ", "\r", "\x00", "é"]),
                           st.text(max_size=5)), max_size=5).map(",".join)
malformed_csv = st.one_of(
    st.binary(max_size=300),
    st.lists(_line, max_size=8).map(lambda ls: "\n".join(["a,b"] + ls).encode()),
    st.lists(_line, max_size=8).map(lambda ls: "\r\n".join(ls).encode()),
    st.tuples(st.lists(_line, max_size=6), st.binary(max_size=20)).map(
        lambda p: "\n".join(["a,b,t"] + p[0]).encode() + p[1]),
)
GOOD_STATS = None


def _good_stats(d: Path) -> Path:
    """A stats file of columns a and b (fitted once per test process)."""
    global GOOD_STATS
    if GOOD_STATS is None:
        src = d / "fit.csv"
        src.write_bytes(b"a,b\n1,10\n2,20\n4,40\n")
        path = d / "good.json"
        assert cli.main(["fit", str(src), "-o", str(path), "-q"]) == 0
        GOOD_STATS = path.read_text()
    path = d / "good.json"
    path.write_text(GOOD_STATS)
    return path


@FUZZ
@given(data=malformed_csv, block=st.sampled_from([None, "7", "64"]))
def test_fuzz_malformed_csv_is_a_clean_error_or_a_result(capsys, monkeypatch, data, block):
    if block:
        monkeypatch.setenv("NORMCLI_BLOCK_SIZE", block)
    with tempfile.TemporaryDirectory() as d:
        src, out = Path(d, "in.csv"), Path(d, "o.csv")
        src.write_bytes(data)
        stats = _good_stats(Path(d))
        run(capsys, "fit", src, "-o", Path(d, "s.json"), "-q")
        code, _ = run(capsys, "transform", src, "--stats", stats, "-o", out, "-q")
        assert out.exists() == (code == 0)
        assert src.read_bytes() == data
        assert not list(Path(d).glob(".*normcli-tmp"))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8)


def _paths(doc, prefix=()):
    """Every path to a value inside ``doc``."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


@st.composite
def damaged_stats(draw) -> bytes:
    """A good stats file with one value replaced or removed, or its text cut, or random JSON."""
    doc = json.loads(GOOD_STATS)
    kind = draw(st.sampled_from(["replace", "delete", "cut", "random"]))
    if kind == "random":
        return json.dumps(draw(json_values)).encode()
    if kind == "cut":
        text = json.dumps(doc).encode()
        return text[:draw(st.integers(0, len(text)))]
    path = draw(st.sampled_from([p for p in _paths(doc) if p]))
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if kind == "delete":
        del node[path[-1]]
    else:
        node[path[-1]] = draw(json_values)
    return json.dumps(doc).encode()


@FUZZ
@given(data=st.data())
def test_fuzz_stats_json_is_loaded_or_rejected_cleanly(capsys, data):
    with tempfile.TemporaryDirectory() as d:
        _good_stats(Path(d))
        text = data.draw(damaged_stats())
        src, stats, out = Path(d, "in.csv"), Path(d, "s.json"), Path(d, "o.csv")
        src.write_bytes(b"a,b,t\n1,10,x\n3,30,y\n")
        stats.write_bytes(text)
        code, err = run(capsys, "transform", src, "--stats", stats, "-o", out, "-q")
        assert code in (0, 4), err
        if code == 0:
            assert len(read_csv(out.read_bytes())[1]) == 2
        code, err = run(capsys, "inspect", stats)
        assert code in (0, 4), err


@settings(FUZZ, max_examples=min(FUZZ.max_examples, 2))
@given(data=malformed_csv)
def test_fuzz_through_the_real_process(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("fz")
    src = d / "in.csv"
    src.write_bytes(data)
    r = run_cli("fit", src, "-q")
    check_clean(r.code, r.err)
    assert src.read_bytes() == data
