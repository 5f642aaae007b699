"""Damaged stats files: each is rejected by the loader with a message naming the field (exit 4),
and loading never executes anything."""
from __future__ import annotations

import copy
import json
import pickle

import pytest

from conftest import run_cli
from normcli import cli
from reliability.helpers import assert_error, fit

GOOD = {
    "format": "normcli-stats", "version": 1, "normcli_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00",
    "fitted_on": {"inputs": [{"path": "d.csv", "rows": 4}], "rows": 4},
    "columns": {
        "a": {"method": "zscore",
              "options": {"ddof": 0, "eps": 0.0, "gamma": 1.0, "beta": 0.0, "clip_sigma": None,
                          "constant": "scale1", "fill_missing": False},
              "stats": {"count": 4, "nulls": 0, "mean": 2.5, "mean_lo": 0.0, "m2": 5.0, "min": 1.0, "max": 4.0}},
        "b": {"method": "layer", "options": {},
              "stats": {"count": 4, "nulls": 0, "mean": 25.0, "mean_lo": 0.0, "m2": 500.0, "min": 10.0, "max": 40.0}},
        "c": {"method": "layer", "options": {},
              "stats": {"count": 4, "nulls": 0, "mean": 1.0, "mean_lo": 0.0, "m2": 0.0, "min": 1.0, "max": 1.0}},
    },
    "rows": [{"method": "layer", "columns": ["b", "c"],
              "options": {"eps": 1e-5, "eps_mode": "inside", "gamma": [1.0, 2.0], "beta": None}}],
}
DATA = b"a,b,c\n1,10,1\n2,20,1\n3,30,1\n4,40,1\n"


def mutated(path: str, value, *more) -> str:
    """GOOD as JSON text with the field at dotted ``path`` set to ``value`` (and so on for each
    further ``path, value`` pair in ``more``)."""
    doc = copy.deepcopy(GOOD)
    pairs = [(path, value), *zip(more[::2], more[1::2])]
    for path, value in pairs:
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return json.dumps(doc)


def run_transform(tmp_path, capsys, text: str | bytes) -> tuple[int, str]:
    """``normcli transform`` in-process with the stats file ``text``; returns (code, stderr)."""
    data, stats = tmp_path / "d.csv", tmp_path / "s.json"
    data.write_bytes(DATA)
    stats.write_bytes(text.encode() if isinstance(text, str) else text)
    code = cli.main(["transform", str(data), "--stats", str(stats), "-o", str(tmp_path / "o.csv")])
    return code, capsys.readouterr().err


def test_the_good_file_loads(tmp_path, capsys):
    assert run_transform(tmp_path, capsys, json.dumps(GOOD))[0] == 0


CASES = [
    ("not JSON", "this is not json", "not JSON"),
    ("truncated", json.dumps(GOOD)[:200], "not JSON"),
    ("empty", "", "not JSON"),
    ("binary", b"\x00\xff\xfe\x01", "not JSON"),
    ("top level array", "[1, 2]", "top level is not an object"),
    ("format name", mutated("format", "sklearn-stats"), "format"),
    ("version", mutated("version", 2), "version"),
    # equal to 1 in Python, and 1.0 an integer to JSON Schema, but not version 1
    ("version as a float", mutated("version", 1.0), "version: this normcli reads version 1, the file is version 1.0"),
    ("version true", mutated("version", True), "version: this normcli reads version 1, the file is version true"),
    ("count as a float", mutated("columns.a.stats.count", 4.0), "columns.a.stats.count: expected an integer below 2^63, found 4.0"),
    ("nulls as a float", mutated("columns.a.stats.nulls", 0.0), "columns.a.stats.nulls: expected an integer"),
    ("count as true", mutated("columns.a.stats.count", True), "columns.a.stats.count"),
    ("count beyond int64", mutated("columns.a.stats.count", 2**63), "columns.a.stats.count: expected an integer below 2^63"),
    ("an integer beyond float64", mutated("columns.a.stats.mean", 10**400), "columns.a.stats.mean: not finite"),
    # statistics no data can give
    ("moments of no values", mutated("columns.a.stats.count", 0), "columns.a.stats.mean: must be null where count is 0"),
    ("an extreme of no values", mutated("columns.a.stats.count", 0, "columns.a.stats.mean", None,
                                        "columns.a.stats.mean_lo", None, "columns.a.stats.m2", None,
                                        "columns.a.stats.min", None), "columns.a.stats.max: must be null where count is 0"),
    ("m2 of one value", mutated("columns.a.stats.count", 1), "columns.a.stats.m2: must be 0 where count is 1"),
    ("min below max for one value", mutated("columns.a.stats.count", 1, "columns.a.stats.m2", 0.0),
     "columns.a.stats.min: must equal max where count is 1"),
    ("m2 of equal values", mutated("columns.c.stats.m2", 0.5), "columns.c.stats.m2: must be 0 where min equals max"),
    ("mean above max", mutated("columns.a.stats.mean", 4.5), "columns.a.stats.mean: outside [min, max]"),
    ("mean below min", mutated("columns.b.stats.mean", 9.0), "columns.b.stats.mean: outside [min, max]"),
    ("mean_lo beyond mean's last place", mutated("columns.a.stats.mean_lo", 1e-12),
     "columns.a.stats.mean_lo: larger than the last place of mean"),
    ("fixed scale on a layer column", mutated("columns.b.stats.scale", 2.0),
     "columns.b.stats.scale: a layer column takes no fixed scale"),
    ("fixed center on a layer column", mutated("columns.b.stats.center", 1.0),
     "columns.b.stats.center: a layer column takes no fixed center"),
    ("fixed center without a scale", mutated("columns.a.stats.center", 1.0),
     "columns.a.stats.center: a fixed center needs a fixed scale"),
    ("NaN token", json.dumps(GOOD).replace('"m2": 5.0', '"m2": NaN'), "NaN is not allowed"),
    ("Infinity token", json.dumps(GOOD).replace('"mean": 2.5', '"mean": -Infinity'), "Infinity is not allowed"),
    ("overflowing number", json.dumps(GOOD).replace('"max": 4.0', '"max": 1e999'), "columns.a.stats.max: not finite"),
    ("negative m2", mutated("columns.a.stats.m2", -1.0), "columns.a.stats.m2"),
    ("negative count", mutated("columns.a.stats.count", -4), "columns.a.stats.count"),
    ("negative nulls", mutated("columns.a.stats.nulls", -1), "columns.a.stats.nulls"),
    ("count as text", mutated("columns.a.stats.count", "4"), "columns.a.stats.count"),
    ("min above max", mutated("columns.a.stats.min", 9.0), "columns.a.stats.min"),
    ("missing mean", mutated("columns.a.stats.mean", None), "columns.a.stats"),
    ("unknown method", mutated("columns.a.method", "softmax"), "columns.a.method"),
    ("bad ddof", mutated("columns.a.options.ddof", 7), "columns.a.options.ddof"),
    ("negative eps", mutated("columns.a.options.eps", -1.0), "columns.a.options.eps"),
    ("bad constant policy", mutated("columns.a.options.constant", "ignore"), "columns.a.options.constant"),
    ("clip_sigma as text", mutated("columns.a.options.clip_sigma", "3"), "columns.a.options.clip_sigma"),
    ("gamma of a zscore column as a list", mutated("columns.a.options.gamma", [1, 2]), "columns.a.options.gamma"),
    ("row gamma of the wrong length", mutated("rows.0.options.gamma", [1.0]), "rows[0].options.gamma"),
    ("row beta of the wrong length", mutated("rows.0.options.beta", [0.0, 0.0, 0.0]), "rows[0].options.beta"),
    ("row of an unknown column", mutated("rows.0.columns", ["b", "zz"]), "rows[0].columns"),
    ("unknown row method", mutated("rows.0.method", "softmax"), "rows.0.method"),
    # integers 0 and 1 only, as the command line takes them (1.0 is a float in the file)
    ("ddof as a float", mutated("columns.a.options.ddof", 1.0), "columns.a.options.ddof: --ddof must be 0 or 1"),
    ("an option of another method", mutated("columns.a.options.range", [0.0, 1.0]),
     "columns.a.options.range: a zscore entry takes no option 'range'"),
    ("a column option on a row", mutated("rows.0.options.ddof", 0), "rows[0].options.ddof: a layer entry takes no option 'ddof'"),
    ("a column in two rows", json.dumps(
        {**GOOD, "rows": [GOOD["rows"][0], GOOD["rows"][0]]}), "rows[1].columns: 'b' is in rows[0] too"),
    ("a robust column without its sketch", mutated("columns.a.method", "robust", "columns.a.options", {}),
     "columns.a.stats.sketch: a robust column with values needs its quantile sketch"),
    ("a key that is a fitted column", mutated("group_by", ["a"], "group_keys", [["x"]]),
     "group_by: 'a' is a fitted column"),
    ("a key named twice", mutated("group_by", ["k", "k"], "group_keys", [["x", "x"]]),
     "group_by: 'k' appears twice"),
    ("no columns", mutated("columns", {}), "columns"),
    ("columns as a list", mutated("columns", []), "columns"),
    ("deep nesting", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("an integer of 5000 digits", json.dumps(GOOD).replace('"count": 4,', '"count": 4' + "0" * 4999 + ",", 1),
     "a number of too many digits"),
    ("misspelt option", mutated("columns.a.options.clip_sgima", 3.0), "'clip_sgima' was unexpected"),
    ("a key twice", json.dumps(GOOD).replace('"version": 1,', '"version": 1, "version": 2,'),
     "the key 'version' appears twice"),
    ("a key twice, deeper", json.dumps(GOOD).replace('"m2": 5.0,', '"m2": 5.0, "m2": 50.0,'),
     "the key 'm2' appears twice"),
    # Impossible for any data, though each number alone is fine; each was applied silently.
    # a holds 1, 2, 3, 4: min and max alone give M2 = 4.5 (NumPy: 4 * var = 5.0)
    ("an M2 below what min and max give", mutated("columns.a.stats.m2", 4.4),
     "columns.a.stats.m2: smaller than min and max alone give"),
    ("an M2 of 0 with min < max", mutated("columns.a.stats.m2", 0.0), "columns.a.stats.m2: smaller than"),
    ("an M2 of 1e-300", mutated("columns.a.stats.m2", 1e-300), "columns.a.stats.m2: smaller than"),
    ("a count beyond the rows", mutated("columns.a.stats.count", 400),
     "columns.a.stats.count: count + nulls is 400, but fitted_on.rows is 4"),
    ("nulls beyond the rows", mutated("columns.b.stats.nulls", 1),
     "columns.b.stats.count: count + nulls is 5, but fitted_on.rows is 4"),
]


@pytest.mark.parametrize("text,field", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_damaged_file_is_rejected_naming_the_field(tmp_path, capsys, text, field):
    code, err = run_transform(tmp_path, capsys, text)
    assert code == 4, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: stats file '") and field in lines[0], err
    assert not (tmp_path / "o.csv").exists()


EDGES = [
    ("one value", ("columns.a.stats.count", 1, "columns.a.stats.nulls", 3, "columns.a.stats.m2", 0.0,
                   "columns.a.stats.mean", 1.0, "columns.a.stats.max", 1.0)),
    ("one value of a constant column", ("columns.c.stats.count", 1, "columns.c.stats.nulls", 3)),
    ("no values", ("columns.a.stats.count", 0, "columns.a.stats.nulls", 4, "columns.a.stats.mean", None,
                   "columns.a.stats.mean_lo", None, "columns.a.stats.m2", None, "columns.a.stats.min", None,
                   "columns.a.stats.max", None)),
    ("a mean at max with its last place in mean_lo", ("columns.a.stats.mean", 4.0, "columns.a.stats.mean_lo", -4e-16)),
    ("imported zscore: fixed scale, unknown extremes", ("columns.a.stats.scale", 2.0, "columns.a.stats.center", None,
                                                        "columns.a.stats.min", None, "columns.a.stats.max", None)),
    ("imported zscore without a count: fixed center and scale", (
        "columns.a.stats.count", 0, "columns.a.stats.nulls", None, "columns.a.stats.mean", None, "columns.a.stats.mean_lo", None,
        "columns.a.stats.m2", None, "columns.a.stats.min", None, "columns.a.stats.max", None,
        "columns.a.stats.center", 2.5, "columns.a.stats.scale", 2.0)),
]


@pytest.mark.parametrize("changes", [c[1] for c in EDGES], ids=[c[0] for c in EDGES])
def test_possible_edge_files_load(tmp_path, capsys, changes):
    code, err = run_transform(tmp_path, capsys, mutated(*changes))
    assert code == 0, err


def test_files_normcli_writes_at_the_edges_load(tmp_path):
    pytest.importorskip("sklearn")
    import numpy as np
    import pandas as pd
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    import normcli
    from normcli import api, statsfile

    nan = float("nan")
    one = pd.DataFrame({"k": ["a"], "x": [0.1], "empty": [nan]})
    more = pd.DataFrame({"k": ["a", "b", "b", "c"], "x": [0.1, nan, 0.1, 1e9 + 0.1], "empty": [nan] * 4})
    written = [normcli.fit(one, ["zscore", "minmax:x"]), normcli.fit(one, "zscore", group_by="k"),
               normcli.merge(normcli.fit(one, "robust"), normcli.fit(more, "robust")),
               normcli.merge(normcli.fit(one, "zscore", group_by="k"), normcli.fit(more, "zscore", group_by="k"))]
    path = tmp_path / "more.csv"
    more.to_csv(path, index=False)
    written.append(api.update(normcli.fit(one, "zscore", group_by="k"), [str(path)])[0])
    for est in (StandardScaler(), MinMaxScaler(), MaxAbsScaler(), RobustScaler()):
        written.append(normcli.from_sklearn(est.fit(np.array([[0.1]])), ["x"]))
        written.append(normcli.from_sklearn(est.fit(np.array([[0.1], [0.1], [3.0]])), ["x"]))
    for weights in ([0.1, 0.2, 0.3], [1, 0, 2], [0.5, 0, 0.5]):  # sums of weights: 0.6, 3 and 1
        written.append(normcli.from_sklearn(StandardScaler().fit([[0.1], [0.2], [3.0]], sample_weight=weights), ["x"]))
    for stats in written:
        statsfile.loads(statsfile.dumps(stats))


def test_damaged_file_through_the_real_process(tmp_path):
    stats = tmp_path / "s.json"
    stats.write_text(mutated("columns.a.stats.m2", -1.0))
    (tmp_path / "copy.json").write_text(stats.read_text())
    (tmp_path / "d.csv").write_bytes(DATA)
    for args in (["transform", tmp_path / "d.csv", "--stats", stats], ["inspect", stats],
                 ["fit", tmp_path / "d.csv", "--update", stats], ["merge", stats, tmp_path / "copy.json"]):
        assert_error(run_cli(*args), 4, "columns.a.stats.m2")


def _payloads(marker) -> dict[str, bytes]:
    """Stats files that would run ``touch MARKER`` if a loader executed them."""
    command = f"touch {marker}"

    class Exploit:
        def __reduce__(self):
            import os
            return (os.system, (command,))

    reduce_json = mutated("columns.a.stats", {"__reduce__": ["os.system", [command]]})
    extra_key = json.loads(json.dumps(GOOD))
    extra_key["columns"]["a"]["py/object"] = "os.system"
    extra_key["__reduce__"] = ["os.system", [command]]
    return {
        "pickle": pickle.dumps(Exploit()),
        "yaml tag": f"!!python/object/apply:os.system ['{command}']\n".encode(),
        "json __reduce__ value": reduce_json.encode(),
        "json extra keys": json.dumps(extra_key).encode(),
    }


@pytest.mark.parametrize("kind", ["pickle", "yaml tag", "json __reduce__ value", "json extra keys"])
def test_loading_never_executes_anything(tmp_path, capsys, kind):
    marker = tmp_path / "executed"
    code, err = run_transform(tmp_path, capsys, _payloads(marker)[kind])
    assert code == 4 and err.count("\n") == 1 and err.startswith("Error: stats file"), err
    assert not marker.exists()


def test_a_column_the_data_lacks_is_exit_4(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"a,b,c\n1,2,3\n")
    stats = tmp_path / "s.json"
    fit(tmp_path / "d.csv", stats)
    (tmp_path / "e.csv").write_bytes(b"a,c\n1,3\n")
    assert_error(run_cli("transform", tmp_path / "e.csv", "--stats", stats), 4, "column 'b'")


def test_a_grouped_robust_column_without_its_sketches_is_exit_4(tmp_path):
    """Without them no group has a median: a damaged file, for inspect (which reads no data) too."""
    (tmp_path / "d.csv").write_bytes(b"k,x\n" + b"".join(b"%d,%d\n" % (i % 3, i * i) for i in range(30)))
    stats = tmp_path / "s.json"
    fit(tmp_path / "d.csv", stats, "-m", "robust", "-g", "k")
    doc = json.loads(stats.read_text())
    del doc["columns"]["x"]["groups"]["sketch"]
    stats.write_text(json.dumps(doc))
    for args in (["inspect", stats], ["transform", tmp_path / "d.csv", "--stats", stats]):
        assert_error(run_cli(*args), 4, "columns.x.groups.sketch: a robust column with values needs its quantile sketches")


@pytest.mark.parametrize("field, index, text", [
    ("m2", 1, "1e999"), ("max", 0, "-1e999"), ("mean", 2, "1" + "0" * 400), ("count", 1, "1" + "0" * 400),
], ids=["inf", "-inf", "huge-float-field", "huge-count"])
def test_a_per_group_number_beyond_float64_is_named_by_its_place(tmp_path, field, index, text):
    # A grouped file holds millions of numbers: each is checked, and the first one out of range
    # is named with its place in its list
    (tmp_path / "d.csv").write_bytes(b"k,x\n" + b"".join(b"%d,%d\n" % (i % 3, i * i) for i in range(30)))
    stats = tmp_path / "s.json"
    fit(tmp_path / "d.csv", stats, "-g", "k")
    doc = json.loads(stats.read_text())
    doc["columns"]["x"]["groups"][field][index] = "@@"
    stats.write_text(json.dumps(doc).replace('"@@"', text))
    assert_error(run_cli("inspect", stats), 4, f"columns.x.groups.{field}[{index}]: not finite")


def test_a_stats_file_past_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    """A gzip bomb (or --stats /dev/zero) was read until memory ran out: past the limit, plain
    or decompressed, the file is refused (exit 4) having read one byte more than it allows."""
    import gzip

    import pandas as pd

    import normcli
    from normcli import statsfile
    from normcli.errors import StatsFileError

    path = tmp_path / "s.json"
    normcli.fit(pd.DataFrame({"x": [1.0, 2.0, 4.0]})).save(str(path))
    text = path.read_bytes()
    (tmp_path / "s.json.gz").write_bytes(gzip.compress(text))
    (tmp_path / "bomb.json.gz").write_bytes(gzip.compress(text + b" " * (1 << 20)))  # 1 MiB of blanks after it
    monkeypatch.setattr(statsfile, "MAX_STATS_BYTES", len(text) + 100)
    assert normcli.load(str(path)) == normcli.load(str(tmp_path / "s.json.gz"))  # within it: read
    with pytest.raises(StatsFileError, match=rf"^stats file '.*bomb.json.gz': not a valid stats file "
                                             rf"\(larger than {len(text) + 100:,} bytes\)$"):
        normcli.load(str(tmp_path / "bomb.json.gz"))
    (tmp_path / "big.json").write_bytes(text + b" " * 200)
    with pytest.raises(StatsFileError, match="larger than"):
        normcli.load(str(tmp_path / "big.json"))


def test_sketch_bytes_that_lie_about_their_layout_are_refused_not_read(tmp_path):
    """DataSketches' deserializer trusts a sketch's header and level offsets: one byte changed
    there crashed the process (SIGSEGV, nothing on stderr). Such bytes are now exit 4; every
    sketch DataSketches itself serializes (any k, any n, merged) still loads."""
    import base64
    import subprocess
    import sys

    import numpy as np
    from datasketches import kll_doubles_sketch

    from normcli import sketch

    rng = np.random.default_rng(4)
    valid = []
    for k in (8, 200, 65535):
        for n in (0, 1, 2, 8, 200, 201, 5000, 200_000):
            sk = kll_doubles_sketch(k)
            sk.update(rng.normal(size=n))
            valid.append(bytes(sk.serialize()))
    merged = kll_doubles_sketch(200)
    for n in (3000, 777):
        part = kll_doubles_sketch(200)
        part.update(rng.normal(size=n))
        merged.merge(part)
    valid.append(bytes(merged.serialize()))
    for data in valid:
        sketch.check_layout(data)  # raises on none of them
    # Mutants of the header and level offsets: those the check lets through must load safely
    # (in a child process, which a crash would end with a signal, not this one).
    mutants = []
    for i in range(600):
        data = bytearray(valid[(i % 4) + 4])  # sketches of k 200 with 8 to 200,000 values
        data[int(rng.integers(0, 40))] = int(rng.integers(0, 256))
        try:
            sketch.check_layout(bytes(data))
            mutants.append(base64.b64encode(bytes(data)).decode())
        except ValueError:
            pass
    assert 50 < len(mutants) < 600
    child = ("import base64, sys\nfrom datasketches import kll_doubles_sketch\n"
             "for line in sys.stdin:\n"
             "    try:\n"
             "        sk = kll_doubles_sketch.deserialize(base64.b64decode(line))\n"
             "        sk.get_quantile(0.5); list(sk)\n"
             "    except Exception:\n"
             "        pass\n")
    p = subprocess.run([sys.executable, "-c", child], input="\n".join(mutants).encode(), timeout=120)
    assert p.returncode == 0
    # The command line: the damaged sketch is named, exit 4
    src = tmp_path / "d.csv"
    src.write_text("x\n" + "\n".join(str(v) for v in rng.normal(size=1000)) + "\n")
    fit(src, tmp_path / "s.json", "--method", "robust")
    doc = json.loads((tmp_path / "s.json").read_text())
    raw = bytearray(base64.b64decode(doc["columns"]["x"]["stats"]["sketch"]["data"]))
    raw[24] = 60  # the second level's offset
    doc["columns"]["x"]["stats"]["sketch"]["data"] = base64.b64encode(bytes(raw)).decode()
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    for args in (["inspect", tmp_path / "bad.json"], ["transform", src, "--stats", tmp_path / "bad.json"]):
        assert_error(run_cli(*args), 4, "columns.x.sketch: damaged sketch: level offsets that do not fit its length")
