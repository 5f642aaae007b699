"""The JSON stats file: to and from the fitted model, save atomically, load and validate.

Strict JSON (no NaN or Infinity tokens), one key per line (a list of numbers or strings on one
line, so that per-group arrays stay readable), validated on load against the JSON Schema shipped
in ``normcli/schema/stats.schema.json``. Loading never executes anything.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import gzip
import io
import json
import math
import os
import sys
import zlib
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from normcli import __version__
from normcli import methods as M
from normcli import schemacheck
from normcli.errors import IOFailure, StatsFileError, UsageError
from normcli.groups import Grouped, GroupStats
from normcli.model import ColumnFit, RowFit, Stats
from normcli.stats import ColumnStats

FORMAT = "normcli-stats"
# The statistics each method needs when its column has values (others may be null: unknown,
# as in statistics imported from scikit-learn).
_REQUIRED = {"zscore": ("mean", "mean_lo", "m2"), "minmax": ("min", "max"), "maxabs": ("min", "max")}
VERSION = 1
_GZIP_MAGIC = b"\x1f\x8b"  # normcli.io.gunzip's, not imported: reading stats skips normcli.io


def to_dict(stats: Stats) -> dict[str, Any]:
    """The stats file's content for ``stats``."""
    info = stats.info
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "normcli_version": __version__,
        "created": info.get("created") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "fitted_on": {"inputs": info.get("inputs", []),
                      "rows": info.get("rows", sum(i.get("rows", 0) for i in info.get("inputs", [])))},
    }
    if stats.groups is not None:
        doc["group_by"] = list(stats.group_by)
        doc["group_keys"] = [list(k) for k in stats.groups.keys]
    columns = {}
    for name, fit in stats.columns.items():
        col = {"method": fit.method, "options": fit.options,
               "constant": stats.is_constant(name), "stats": fit.stats.to_dict()}
        if stats.groups is not None and name in stats.groups.columns:
            col["groups"] = stats.groups.columns[name].to_dict()
        columns[name] = col
    doc["columns"] = columns
    doc["rows"] = [{"method": r.method, "columns": r.columns, "options": r.options} for r in stats.rows]
    return doc


def from_dict(doc: Any, source: str = "stats") -> Stats:
    """Validate ``doc`` (parsed JSON) and build the fitted model; StatsFileError names the field."""
    _validate(doc, source)
    columns = {}
    per_group = {}
    for name, c in doc["columns"].items():
        where = f"{source}: columns.{name}"
        options = _options(c["method"], c["options"], where) if c["method"] in M.PER_COLUMN else {}
        try:
            st = ColumnStats.from_dict(c["stats"])
            _check_sketch_range(st.sketch, st.min, st.max, f"{where}.stats.sketch")
            if c.get("groups") is not None:
                where += ".groups"
                g = per_group[name] = GroupStats.from_dict(c["groups"])
                for i, sk in enumerate(g.sketch or ()):
                    _check_sketch_range(sk, g.min[i], g.max[i], f"{where}.sketch", f" (group_keys[{i}])")
        except ValueError as exc:
            raise StatsFileError(f"{where}.sketch: {exc}") from None
        columns[name] = ColumnFit(name, c["method"], options, st)
    rows = []
    claimed: dict[str, int] = {}
    for i, r in enumerate(doc["rows"]):
        where = f"{source}: rows[{i}]"
        for c in r["columns"]:
            if c not in columns or columns[c].method != r["method"]:
                raise StatsFileError(f"{where}.columns: '{c}' is not a {r['method']} column of this file")
            if c in claimed:  # it would be normalized twice
                raise StatsFileError(f"{where}.columns: '{c}' is in rows[{claimed[c]}] too")
            claimed[c] = i
        options = _options(r["method"], r["options"], where)
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
    if not doc.get("group_by"):
        return Stats(columns, rows, info)
    groups = Grouped([tuple(k) for k in doc["group_keys"]], per_group)
    return Stats(columns, rows, info, list(doc["group_by"]), groups)


def _options(method: str, given: dict[str, Any], where: str) -> dict[str, Any]:
    """The full options of a ``method`` entry; StatsFileError names an option it does not take
    or a value no method can use."""
    takes = M.options_for(method, {})
    for key, value in given.items():
        if key not in takes:
            raise StatsFileError(f"{where}.options.{key}: a {method} entry takes no option '{key}'")
        try:
            M.check_options({key: value})
        except UsageError as exc:
            raise StatsFileError(f"{where}.options.{key}: {exc}") from None
    return M.options_for(method, given)


def dumps(stats: Stats) -> str:
    """The stats file's text: strict JSON, indented, ending in a newline."""
    return _dump(to_dict(stats), "") + "\n"


# One encoder for every value: json.dumps with options builds a new one per call, which a
# grouped file's 100,000 group keys pay 100,000 times.
_ENCODE = json.JSONEncoder(allow_nan=False, ensure_ascii=False).encode


def _dump(value: Any, indent: str) -> str:
    """JSON with one key per line; a list of scalars stays on one line (per-group arrays)."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        if all(type(k) is str and not isinstance(v, (dict, list)) for k, v in value.items()):
            # the same layout in one call for the common flat dict (moments, options): a wide
            # file's stats otherwise cost one json.dumps per value (20,000 columns: 700,000)
            return json.dumps(value, indent=2, allow_nan=False, ensure_ascii=False).replace("\n", "\n" + indent)
        items = [f"{inner}{_ENCODE(str(k))}: {_dump(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    # the element types, found at C speed: a per-group array holds 100,000 floats
    if isinstance(value, list) and not {dict, list}.isdisjoint(set(map(type, value))):
        return "[\n" + ",\n".join(inner + _dump(v, inner) for v in value) + "\n" + indent + "]"
    return _ENCODE(value)


def save(stats: Stats, path: str) -> None:
    """Write ``stats`` to ``path`` atomically (a temporary file beside it, renamed into place)."""
    write_atomic(path, dumps(stats).encode("utf-8"))


def write_atomic(path: str, text: bytes) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it, renamed into place (an
    existing device, FIFO or socket, ``/dev/stdout`` say, is written directly; a symbolic link
    stays a link and the file it points to is replaced). A ``path`` named ``.gz`` gets ``text``
    gzip-compressed."""
    with staged(path, text):
        pass


@contextlib.contextmanager
def staged(path: str, text: bytes) -> Iterator[None]:
    """:func:`write_atomic` in two steps: ``text`` is written (and synced) to the temporary file
    on entry, which is renamed into place on a normal exit and removed on an exception. Another
    output written inside then lands first, and neither is left alone by a failure before it.
    A closed standard output (BrokenPipeError) is no failure: the file is put in place."""
    from normcli.io.outfile import open_output, settled  # here: commands that only read stats skip normcli.io

    if os.fspath(path).lower().endswith(".gz"):  # as for data outputs: level 6, no name or time stored
        text = gzip.compress(text, compresslevel=6, mtime=0)
    out, tmp, target = open_output(path)
    placed = False

    def place() -> None:
        nonlocal placed
        if tmp is not None:
            os.replace(tmp, target)
            placed = True
            settled(tmp)

    try:
        with out as f:
            f.write(text)
            f.flush()
            if tmp is not None:
                os.fsync(f.fileno())
        try:
            yield
        except BrokenPipeError:
            place()  # stdout's reader stopped reading (`| head`): status 0, and the text is whole
            raise
        place()
    except BaseException as exc:
        if tmp is not None and not placed:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            settled(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            raise IOFailure(f"cannot write '{path}': {exc.strerror}") from None
        raise


def loads(text: str | bytes, source: str = "stats") -> Stats:
    """Parse and validate a stats file's text."""
    def reject(token: str) -> None:
        raise StatsFileError(f"{source}: not strict JSON ({token} is not allowed)")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        doc = dict(pairs)
        if len(doc) < len(pairs):  # json.loads would keep the last of two values, silently
            seen: set[str] = set()
            twice = next(k for k, _ in pairs if k in seen or seen.add(k))
            raise StatsFileError(f"{source}: not strict JSON (the key '{twice}' appears twice in one object)")
        return doc

    try:
        doc = json.loads(text, parse_constant=reject, object_pairs_hook=unique)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StatsFileError(f"{source}: not a valid stats file (not JSON: {exc})") from None
    except ValueError:  # Python refuses to read an integer of more than 4300 digits
        raise StatsFileError(f"{source}: not a valid stats file (a number of too many digits)") from None
    except RecursionError:
        raise StatsFileError(f"{source}: not a valid stats file (nested too deeply)") from None
    return from_dict(doc, source)


def load(path: str) -> Stats:
    """Read, parse and validate the stats file at ``path`` (gzip-compressed or not); ``-``
    reads it from standard input."""
    if path == "-":
        source, data = "stats file on standard input", _stdin_bytes()
    else:
        source, data = f"stats file '{path}'", read_bytes(path, "stats file", MAX_STATS_BYTES + 1)
    return loads(_decompressed(_within_limit(data, source), source), source=source)


#: The largest stats file read (decompressed): a million groups of one column take 43 MB. Past
#: it, a file is refused before it is parsed (a gzip bomb, ``--stats /dev/zero``), not read
#: until memory runs out.
MAX_STATS_BYTES = 1 << 30


def _within_limit(data: bytes, source: str) -> bytes:
    if len(data) > MAX_STATS_BYTES:
        raise StatsFileError(f"{source}: not a valid stats file (larger than {MAX_STATS_BYTES:,} bytes)")
    return data


def _stdin_bytes() -> bytes:
    """All of standard input; IOFailure when it is closed or cannot be read."""
    try:
        if sys.stdin is None:
            raise OSError(errno.EBADF, "it is closed")
        return _read_at_most(sys.stdin.buffer, MAX_STATS_BYTES + 1)
    except OSError as exc:
        raise IOFailure(f"cannot read the stats file from standard input: {exc.strerror}") from None


def _decompressed(data: bytes, source: str) -> bytes:
    """A stats file's bytes, decompressed if they are gzip (a file saved under a ``.gz`` name),
    up to one byte past :data:`MAX_STATS_BYTES`."""
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            return _within_limit(_read_at_most(f, MAX_STATS_BYTES + 1), source)
    except (OSError, EOFError, zlib.error) as exc:
        raise StatsFileError(f"{source}: not a valid stats file (a damaged gzip stream: {exc})") from None


def read_bytes(path: str, what: str, most: int = -1) -> bytes:
    """The content of ``path`` (its first ``most`` bytes, if given); IOFailure naming ``what``
    it is when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read() if most < 0 else _read_at_most(f, most)
    except OSError as exc:
        raise IOFailure(f"cannot read {what} '{path}': {exc.strerror}") from None


def _read_at_most(f: Any, most: int) -> bytes:
    """The first ``most`` bytes of the binary stream ``f`` (fewer at its end), read a MiB at a
    time: ``f.read(most)`` allocates all of ``most`` before it reads, a GiB for a small file,
    which fails under a memory limit (``ulimit -v``, strict overcommit)."""
    parts = []
    while most > 0:
        part = f.read(min(most, 1 << 20))
        if not part:
            break
        parts.append(part)
        most -= len(part)
    return b"".join(parts)


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
    version = doc.get("version")
    if type(version) is not int or version != VERSION:  # 1.0 == True == 1 in Python, not in the format
        found = json.dumps(version) if isinstance(version, (bool, float)) or version is None else repr(version)
        raise StatsFileError(f"{source}: version: this normcli reads version {VERSION}, the file is version {found}")
    where = _non_finite(doc)
    if where is not None:
        raise StatsFileError(f"{source}: {where}: not finite (a number beyond the float64 range)")
    outline = _without_group_arrays(doc)
    if not schemacheck.conforms(outline, schema()):
        import jsonschema  # the last word on a doubtful file, and the words of its error

        validator = jsonschema.Draft202012Validator(schema())
        err = jsonschema.exceptions.best_match(validator.iter_errors(outline))
        if err is not None:
            where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            message = err.message if len(err.message) <= 300 else err.message[:297] + "..."  # it quotes the value
            raise StatsFileError(f"{source}: {where}: {message}")
    for name, c in doc["columns"].items():
        st = c["stats"]
        where = f"{source}: columns.{name}.stats"
        for k in ("count", "nulls"):
            if k == "nulls" and st[k] is None:  # unknown: statistics imported from scikit-learn
                continue
            if type(st[k]) is not int or st[k] > _MAX_COUNT:  # JSON Schema takes 4.0 for an integer
                raise StatsFileError(f"{where}.{k}: expected an integer below 2^63, found {json.dumps(st[k])}")
        for k, methods in _FIXED.items():
            if st.get(k) is not None and c["method"] not in methods:
                raise StatsFileError(f"{where}.{k}: a {c['method']} column takes no fixed {k}")
        if st.get("center") is not None and st.get("scale") is None:
            raise StatsFileError(f"{where}.center: a fixed center needs a fixed scale")
        need = _REQUIRED.get(c["method"], ())
        if st.get("scale") is not None and (c["method"] in ("maxabs", "robust") or st.get("center") is not None):
            need = ()  # imported fixed parameters stand in for the moments
        if st["count"] > 0 and any(st[k] is None for k in need):
            raise StatsFileError(f"{where}: a {c['method']} column with values needs {', '.join(need)}")
        if c["method"] == "robust" and st["count"] > 0 and st.get("scale") is None and st.get("sketch") is None:
            raise StatsFileError(f"{where}.sketch: a robust column with values needs its quantile sketch")
    names = list(doc["columns"])
    stats = [doc["columns"][n]["stats"] for n in names]
    bad = _impossible(np.array([st["count"] for st in stats], dtype=np.int64),
                      {k: _floats([st[k] for st in stats]) for k in _FLOATS})
    if bad is not None:
        k, why, i = bad
        raise StatsFileError(f"{source}: columns.{names[i]}.stats.{k}: {why}")
    rows = doc["fitted_on"].get("rows")
    for name, st in zip(names, stats):
        where = f"{source}: columns.{name}.stats"
        if st["nulls"] is not None and rows is not None and st["count"] + st["nulls"] != rows:
            raise StatsFileError(f"{where}.count: count + nulls is {st['count'] + st['nulls']}, "
                                 f"but fitted_on.rows is {rows}")
        sketch = st.get("sketch")
        if isinstance(sketch, dict) and sketch["n"] != st["count"]:
            raise StatsFileError(f"{where}.sketch.n: {sketch['n']} values sketched, but count is {st['count']}")
    _validate_groups(doc, source)


def _check_sketch_range(sk: Any, lo: float, hi: float, where: str, group: str = "") -> None:
    """A quantile sketch keeps the exact least and greatest of its values: a sketch whose differ
    from its column's min and max is another column's (its n may still match) or damaged."""
    if sk is None or sk.is_empty() or not (math.isfinite(lo) and math.isfinite(hi)):
        return
    low, high = sk.get_min_value(), sk.get_max_value()
    if low != lo or high != hi:
        raise StatsFileError(f"{where}: its values run from {low!r} to {high!r}, but min and max are "
                             f"{float(lo)!r} and {float(hi)!r}{group}")


def _non_finite(value: Any, path: str = "") -> str | None:
    """The dotted path of the first number in ``value`` beyond the float64 range, or None: a float
    that is inf (JSON ``1e999`` parses so), or an integer of 309 digits or more."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "(top level)")
    if isinstance(value, int) and abs(value) > _FLOAT_MAX:
        return path or "(top level)"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, v in items:
        kind = type(v)
        # the common cases, a finite float (inf - inf is NaN), text, null or a small integer,
        # are passed over without a call or a path: a grouped file holds millions of them
        if (kind is float and v - v == 0.0) or kind is str or v is None or (
                kind is int and -_FLOAT_MAX <= v <= _FLOAT_MAX):
            continue
        sub = f"{path}[{key}]" if isinstance(value, list) else f"{path}.{key}" if path else str(key)
        found = _non_finite(v, sub)
        if found is not None:
            return found
    return None


_FLOATS = ("mean", "mean_lo", "m2", "min", "max")
_FLOAT_MAX = float(np.finfo(np.float64).max)
_MAX_COUNT = int(np.iinfo(np.int64).max)  # counts are int64 arrays in GroupStats
# The methods whose imported fixed parameters stand in for statistics (see from_sklearn)
_FIXED = {"scale": ("zscore", "maxabs", "robust"), "center": ("zscore", "robust")}


def _floats(values: list[Any]) -> np.ndarray:
    """``values`` (numbers or nulls) as float64, NaN for null."""
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def _impossible(count: np.ndarray, v: dict[str, np.ndarray]) -> tuple[str, str, int] | None:
    """The first statistic no data can give, as (field, what is wrong, entry), or None.

    Works on parallel arrays, one entry per column or per group: ``count`` and the floats of
    ``_FLOATS`` (NaN for null: unknown, as in imported statistics, which is never wrong here).
    """
    filled = count > 0
    # chan_merge rounds the mean a little; a mean further outside [min, max] than this is damage
    slack = 1e-9 * np.maximum(np.abs(v["min"]), np.abs(v["max"]))
    # the two values min and max alone give M2 = (max - min)^2 / 2: no data gives less (in
    # square roots, which do not overflow; rounding is far inside the 1e-9), unless the squares
    # underflow (a spread below 1e-150)
    with np.errstate(invalid="ignore", over="ignore"):
        spread = v["max"] - v["min"]
        narrow = (count >= 2) & (spread >= 1e-150) & (np.sqrt(2.0 * v["m2"]) < spread * (1 - 1e-9))
        # min - slack may overflow to -inf near -DBL_MAX: the comparison still holds
        below, above = v["min"] - slack, v["max"] + slack
    checks = [
        *((k, "must be null where count is 0", ~filled & ~np.isnan(v[k])) for k in _FLOATS),
        ("m2", "negative", v["m2"] < 0),
        ("min", "greater than max", v["min"] > v["max"]),
        ("m2", "must be 0 where count is 1", (count == 1) & (v["m2"] > 0)),
        ("min", "must equal max where count is 1", (count == 1) & (v["min"] < v["max"])),
        ("m2", "must be 0 where min equals max", (v["min"] == v["max"]) & (v["m2"] > 0)),
        ("m2", "smaller than min and max alone give", narrow),
        ("mean", "outside [min, max]", (v["mean"] < below) | (v["mean"] > above)),
        # mean is the nearest double to mean + mean_lo, so mean_lo is within half a unit of its last place
        ("mean_lo", "larger than the last place of mean", np.abs(v["mean_lo"]) > np.spacing(np.abs(v["mean"]))),
    ]
    for k, why, bad in checks:
        if bad.any():
            return k, why, int(np.argmax(bad))
    return None


def _without_group_arrays(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with the per-group arrays emptied: the schema checks their shape, and
    :func:`_validate_groups` their items with NumPy (jsonschema takes seconds per 10^5 items)."""
    if "group_keys" not in doc or not isinstance(doc.get("columns"), dict):
        return doc
    columns = {}
    for name, c in doc["columns"].items():
        if isinstance(c, dict) and isinstance(c.get("groups"), dict):
            g = {k: [] if isinstance(v, list) else v for k, v in c["groups"].items()}
            if isinstance(g.get("sketch"), dict):
                g["sketch"] = {k: [] if isinstance(v, list) else v for k, v in g["sketch"].items()}
            c = {**c, "groups": g}
        columns[name] = c
    return {**doc, "group_keys": [] if isinstance(doc["group_keys"], list) else doc["group_keys"],
            "columns": columns}


def _validate_group_sketches(sketch: dict[str, Any], count: np.ndarray, needed: bool, where: str) -> None:
    """The items of a column's per-group sketches (the schema has checked their shape only)."""
    if not all(type(v) is int and 0 <= v <= _MAX_COUNT for v in sketch["n"]):
        raise StatsFileError(f"{where}.n: expected integers >= 0 and below 2^63")
    if not all(type(v) in (int, float) and v >= 0 for v in sketch["rank_error"]):
        raise StatsFileError(f"{where}.rank_error: expected numbers >= 0")
    if not all(v is None or isinstance(v, str) for v in sketch["data"]):
        raise StatsFileError(f"{where}.data: expected strings or nulls")
    for i, (n, data) in enumerate(zip(sketch["n"], sketch["data"])):
        if data is None and (n or (needed and count[i])):
            raise StatsFileError(f"{where}.data: a group with values needs its sketch (group_keys[{i}])")
        if data is not None and n != count[i]:
            raise StatsFileError(f"{where}.n: {n} values sketched, but count is {count[i]} (group_keys[{i}])")


def _validate_groups(doc: dict[str, Any], source: str) -> None:
    group_by, keys = doc.get("group_by"), doc.get("group_keys")
    if not group_by:
        if keys is not None or any("groups" in c for c in doc["columns"].values()):
            raise StatsFileError(f"{source}: group_by: per-group statistics without group_by keys")
        return
    if keys is None:
        raise StatsFileError(f"{source}: group_keys: missing (the file is grouped by {group_by})")
    if len(set(group_by)) != len(group_by):
        twice = next(k for k in group_by if group_by.count(k) > 1)
        raise StatsFileError(f"{source}: group_by: '{twice}' appears twice")
    for key in group_by:
        if key in doc["columns"]:
            raise StatsFileError(f"{source}: group_by: '{key}' is a fitted column; a key is never normalized")
    for i, k in enumerate(keys):
        if not (isinstance(k, list) and len(k) == len(group_by) and all(v is None or isinstance(v, str) for v in k)):
            raise StatsFileError(f"{source}: group_keys[{i}]: expected {len(group_by)} strings or nulls, found {k!r}")
    if len({tuple(k) for k in keys}) != len(keys):
        raise StatsFileError(f"{source}: group_keys: a key appears twice")
    n = len(keys)
    for name, c in doc["columns"].items():
        where = f"{source}: columns.{name}.groups"
        g = c.get("groups")
        if g is None:
            if c["method"] in M.PER_COLUMN:
                raise StatsFileError(f"{where}: missing (the file is grouped by {group_by})")
            continue
        arrays = {k: g[k] for k in ("count", "nulls", *_FLOATS)}
        if isinstance(g.get("sketch"), dict):
            arrays.update({f"sketch.{k}": g["sketch"][k] for k in ("n", "rank_error", "data")})
        for k, v in arrays.items():
            if len(v) != n:
                raise StatsFileError(f"{where}.{k}: has {len(v)} entries for {n} groups")
        counts = {}
        for k in ("count", "nulls"):
            if not all(type(v) is int and 0 <= v <= _MAX_COUNT for v in g[k]):
                raise StatsFileError(f"{where}.{k}: expected integers >= 0 and below 2^63")
            counts[k] = np.asarray(g[k], dtype=np.int64)
        filled = counts["count"] > 0
        if c["method"] == "robust" and g.get("sketch") is None and filled.any():
            raise StatsFileError(f"{where}.sketch: a robust column with values needs its quantile sketches")
        if isinstance(g.get("sketch"), dict):
            _validate_group_sketches(g["sketch"], counts["count"], c["method"] == "robust", f"{where}.sketch")
        values = {}
        # only zscore needs the moments; others may lack them (null where they overflowed)
        needed = _FLOATS if c["method"] == "zscore" else ("min", "max")
        for k in _FLOATS:
            if not all(v is None or (type(v) in (int, float)) for v in g[k]):
                raise StatsFileError(f"{where}.{k}: expected numbers or nulls")
            x = _floats(g[k])
            if k in needed and np.isnan(x[filled]).any():
                raise StatsFileError(f"{where}.{k}: a group with values needs a number here")
            values[k] = x
        bad = _impossible(counts["count"], values)
        if bad is not None:
            k, why, i = bad
            raise StatsFileError(f"{where}.{k}: {why} (group_keys[{i}])")
        for k in ("count", "nulls"):
            overall = c["stats"][k]
            if overall is not None and sum(g[k]) != overall:  # every row is in one group
                raise StatsFileError(f"{where}.{k}: the groups' sum is {sum(g[k])}, but stats.{k} is {overall}")
