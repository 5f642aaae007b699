"""The quick schema check against the jsonschema library: it must never accept a document the
library rejects, and must accept the files normcli writes (else every load pays the import)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import jsonschema
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import normcli
from conftest import SAMPLE
from normcli import schemacheck, statsfile

SCHEMA = statsfile.schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def _documents() -> list[dict]:
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0, None], "b": [10.0, 20.0, 30.0, 40.0],
                          "c": [5.0, 5.0, 5.0, 5.0], "g": ["x", "y", "x", None]})
    fits = [
        normcli.fit(frame),
        normcli.fit(frame, ["minmax:a", "robust:b", "maxabs:c"]),
        normcli.fit(frame, ["layer:a,b,c"]),
        normcli.fit(frame, ["zscore", "robust:b"], group_by="g"),
        normcli.fit(str(SAMPLE / "sales.csv")),
    ]
    return [statsfile._without_group_arrays(statsfile.to_dict(s)) for s in fits]


DOCUMENTS = _documents()


@pytest.mark.parametrize("doc", DOCUMENTS, ids=["zscore", "mixed", "layer", "grouped", "from a file"])
def test_files_normcli_writes_pass_the_quick_check(doc):
    assert VALIDATOR.is_valid(doc)
    assert schemacheck.conforms(doc, SCHEMA)


def _at(doc, path):
    """The node of ``doc`` at ``path``."""
    for p in path:
        doc = doc[p]
    return doc


def _paths(node, prefix=()):
    """Every path to a node of a JSON document, the root included."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


# Values at the schema's edges: each bound on either side, look-alikes of the right type.
EDGE_VALUES = [
    None, True, False, -1, 0, 1, 2, 7, 8, 100, 101, 65535, 65536, -0.5, 0.0, 1.0, 2.5, 100.5, 1e300,
    "", "x", "zscore", "layer", "scale1", "kll_doubles", "normcli-stats",
    "0" * 64, "0" * 64 + "\n", "g" * 64, "0" * 63,
]
_json_scalars = st.sampled_from(EDGE_VALUES)
_json_values = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "count", "method", "k"]), inner, max_size=3)),
    max_leaves=6)


@st.composite
def _mutants(draw):
    doc = copy.deepcopy(draw(st.sampled_from(DOCUMENTS)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))[1:]))
        *parents, last = path
        node = _at(doc, parents)
        action = draw(st.sampled_from(["replace", "delete", "add", "duplicate"]))
        if action == "replace":
            node[last] = draw(_json_values)
        elif action == "delete":
            del node[last]
        elif action == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(["extra", "count", "sketch", "groups", "constant"]))] = draw(_json_values)
        elif action == "duplicate" and isinstance(node, list):
            node.append(copy.deepcopy(node[last]))
    return doc


_DELETE, _REPEAT = object(), object()


def _single_edits(doc):
    """Every document one edit away from ``doc``: a node replaced by an edge value, a key
    deleted or added, a list item repeated."""
    for path in _paths(doc):
        if isinstance(_at(doc, path), dict):
            for key in ("extra", "sketch", "groups", "center", "scale"):
                edited = copy.deepcopy(doc)
                _at(edited, path)[key] = 1.0
                yield edited
        if not path:
            continue
        *parents, last = path
        for value in [*EDGE_VALUES, [], {}, _DELETE, _REPEAT]:
            edited = copy.deepcopy(doc)
            node = _at(edited, parents)
            if value is _DELETE:
                del node[last]
            elif value is _REPEAT:
                if not isinstance(node, list):
                    continue
                node.append(copy.deepcopy(node[last]))
            else:
                node[last] = value
            yield edited


@pytest.mark.parametrize("doc", DOCUMENTS, ids=["zscore", "mixed", "layer", "grouped", "from a file"])
def test_every_single_edit_is_judged_soundly(doc):
    for edited in _single_edits(doc):
        if schemacheck.conforms(edited, SCHEMA):
            assert VALIDATOR.is_valid(edited), next(VALIDATOR.iter_errors(edited)).message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutants())
def test_the_quick_check_never_accepts_what_jsonschema_rejects(doc):
    if schemacheck.conforms(doc, SCHEMA):
        assert VALIDATOR.is_valid(doc), next(VALIDATOR.iter_errors(doc)).message


@pytest.mark.parametrize("value,valid", [(1, True), (1.0, True), (True, False), ("1", False), (None, False)])
def test_json_equality_tells_true_from_1(value, valid):
    doc = {**DOCUMENTS[0], "version": value}
    assert VALIDATOR.is_valid(doc) is valid
    assert schemacheck.conforms(doc, SCHEMA) is valid


def test_unknown_keywords_and_foreign_refs_are_doubts():
    assert not schemacheck.conforms(3, {"multipleOf": 2})
    assert not schemacheck.conforms(3, {"$ref": "https://example.invalid/s.json"})
    assert schemacheck.conforms(3, {"type": "integer", "minimum": 0, "description": "a count"})


# Which of the heavier modules a transform loads, with a valid stats file.
_LOADED_PROBE = """
import sys
from normcli import cli
code = cli.main(sys.argv[1:])
print(code, sorted(m for m in ("jsonschema", "pyarrow.compute", "pandas") if m in sys.modules))
"""


@pytest.mark.parametrize("data", ["sales.csv", "sales.parquet"])
def test_a_transform_loads_neither_jsonschema_nor_pyarrow_compute(tmp_path, data):
    stats = tmp_path / "s.json"
    statsfile.save(normcli.fit(str(SAMPLE / "sales.csv")), str(stats))
    p = subprocess.run([sys.executable, "-c", _LOADED_PROBE, "transform", str(SAMPLE / data), "--stats", str(stats),
                        "-o", str(tmp_path / f"out_{data}")], capture_output=True, text=True)
    assert p.stdout.split(None, 1) == ["0", "[]\n"], p.stderr


def test_a_doubtful_file_still_gets_the_jsonschema_message(tmp_path):
    doc = json.loads(statsfile.dumps(normcli.fit(str(SAMPLE / "sales.csv"))))
    doc["columns"][next(iter(doc["columns"]))]["stats"]["count"] = "4"
    with pytest.raises(normcli.NormcliError, match=r"stats\.count: '4' is not of type 'integer'"):
        statsfile.loads(json.dumps(doc))
