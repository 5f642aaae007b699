"""The JSON stats file: to and from the fitted model, save atomically, load and validate.

Strict JSON (no NaN or Infinity tokens), one key per line, validated on load against the JSON
Schema shipped in ``normcli/schema/stats.schema.json``. Loading never executes anything.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import tempfile
from functools import lru_cache
from importlib import resources
from typing import Any

from normcli import __version__
from normcli import methods as M
from normcli.errors import IOFailure, StatsFileError
from normcli.model import ColumnFit, RowFit, Stats
from normcli.stats import ColumnStats

FORMAT = "normcli-stats"
# The statistics each method needs when its column has values (others may be null: unknown,
# as in statistics imported from scikit-learn).
_REQUIRED = {"zscore": ("mean", "mean_lo", "m2"), "minmax": ("min", "max"), "maxabs": ("min", "max")}
VERSION = 1


def to_dict(stats: Stats) -> dict[str, Any]:
    """The stats file's content for ``stats``."""
    info = stats.info
    return {
        "format": FORMAT,
        "version": VERSION,
        "normcli_version": __version__,
        "created": info.get("created") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "fitted_on": {"inputs": info.get("inputs", []),
                      "rows": info.get("rows", sum(i.get("rows", 0) for i in info.get("inputs", [])))},
        "columns": {
            name: {"method": fit.method, "options": fit.options,
                   "constant": fit.stats.is_constant(), "stats": fit.stats.to_dict()}
            for name, fit in stats.columns.items()
        },
        "rows": [{"method": r.method, "columns": r.columns, "options": r.options} for r in stats.rows],
    }


def from_dict(doc: Any, source: str = "stats") -> Stats:
    """Validate ``doc`` (parsed JSON) and build the fitted model; StatsFileError names the field."""
    _validate(doc, source)
    columns = {}
    for name, c in doc["columns"].items():
        options = M.options_for(c["method"], c["options"]) if c["method"] in M.PER_COLUMN else {}
        try:
            st = ColumnStats.from_dict(c["stats"])
        except ValueError as exc:
            raise StatsFileError(f"{source}: columns.{name}.stats.sketch: {exc}") from None
        columns[name] = ColumnFit(name, c["method"], options, st)
    rows = []
    for i, r in enumerate(doc["rows"]):
        where = f"{source}: rows[{i}]"
        for c in r["columns"]:
            if c not in columns or columns[c].method != r["method"]:
                raise StatsFileError(f"{where}.columns: '{c}' is not a {r['method']} column of this file")
        options = M.options_for(r["method"], r["options"])
        for key in ("gamma", "beta"):
            if options.get(key) is not None and len(options[key]) != len(r["columns"]):
                raise StatsFileError(f"{where}.options.{key}: has {len(options[key])} values for "
                                     f"{len(r['columns'])} columns")
        rows.append(RowFit(r["method"], list(r["columns"]), options))
    in_rows = {c for r in rows for c in r.columns}
    for name, fit in columns.items():
        if fit.method in M.PER_ROW and name not in in_rows:
            raise StatsFileError(f"{source}: columns.{name}.method: {fit.method} column in no 'rows' entry")
    info = {"created": doc["created"], "inputs": doc["fitted_on"]["inputs"],
            "rows": doc["fitted_on"]["rows"], "normcli_version": doc["normcli_version"]}
    return Stats(columns, rows, info)


def dumps(stats: Stats) -> str:
    """The stats file's text: strict JSON, indented, ending in a newline."""
    return json.dumps(to_dict(stats), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def save(stats: Stats, path: str) -> None:
    """Write ``stats`` to ``path`` atomically (a temporary file beside it, renamed into place)."""
    write_atomic(path, dumps(stats).encode("utf-8"))


def write_atomic(path: str, text: bytes) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it, renamed into place."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".normcli-tmp", dir=directory)
    except OSError as exc:
        raise IOFailure(f"cannot write '{path}': {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise IOFailure(f"cannot write '{path}': {exc.strerror}") from None
        raise


def loads(text: str | bytes, source: str = "stats") -> Stats:
    """Parse and validate a stats file's text."""
    def reject(token: str) -> None:
        raise StatsFileError(f"{source}: not strict JSON ({token} is not allowed)")

    try:
        doc = json.loads(text, parse_constant=reject)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StatsFileError(f"{source}: not a valid stats file (not JSON: {exc})") from None
    return from_dict(doc, source)


def load(path: str) -> Stats:
    """Read, parse and validate the stats file at ``path``."""
    return loads(read_bytes(path, "stats file"), source=f"stats file '{path}'")


def read_bytes(path: str, what: str) -> bytes:
    """The content of ``path``; IOFailure naming ``what`` it is when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise IOFailure(f"cannot read {what} '{path}': {exc.strerror}") from None


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema of the stats file (shipped with the package)."""
    text = resources.files("normcli").joinpath("schema/stats.schema.json").read_text("utf-8")
    return json.loads(text)


def _validate(doc: Any, source: str) -> None:
    if not isinstance(doc, dict):
        raise StatsFileError(f"{source}: not a valid stats file (top level is not an object)")
    if doc.get("format") != FORMAT:
        raise StatsFileError(f"{source}: format: expected '{FORMAT}', found {doc.get('format')!r}")
    if doc.get("version") != VERSION:
        raise StatsFileError(f"{source}: version: this normcli reads version {VERSION}, "
                             f"the file is version {doc.get('version')!r}")
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    err = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if err is not None:
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise StatsFileError(f"{source}: {where}: {err.message}")
    for name, c in doc["columns"].items():
        st = c["stats"]
        need = _REQUIRED.get(c["method"], ())
        if st.get("scale") is not None and c["method"] in ("maxabs", "robust"):
            need = ()  # imported fixed parameters stand in for the moments
        if st["count"] > 0 and any(st[k] is None for k in need):
            raise StatsFileError(f"{source}: columns.{name}.stats: a {c['method']} column with values "
                                 f"needs {', '.join(need)}")
        if st["count"] > 0 and None not in (st["min"], st["max"]) and st["min"] > st["max"]:
            raise StatsFileError(f"{source}: columns.{name}.stats.min: greater than max")
        for k in ("mean", "m2"):
            if st[k] is not None and not math.isfinite(st[k]):
                raise StatsFileError(f"{source}: columns.{name}.stats.{k}: not finite")
