"""SQL: one SELECT that reproduces ``transform``, for DuckDB, PostgreSQL, SQLite and Spark SQL.

Per-column methods become ``((CAST(x AS DOUBLE) - center) - center_lo) / scale * gain + offset``
in the order NumPy evaluates it, with the clip, fill and constant-column policies; row-wise
methods become row expressions over helper columns computed in derived tables (row norm; for
``layer`` the row count and mean, then the row variance). NULL in, NULL out, like ``transform``.

Other columns pass through in place: DuckDB's ``SELECT * EXCLUDE (...) REPLACE (...)`` keeps every
input column without knowing them; the other dialects have no such syntax and take ``columns``,
the full list of input columns in order. Numbers are written with ``repr`` (round-trip exact)
and an exponent, so every dialect reads them as DOUBLE rather than DECIMAL.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from normcli import methods as M
from normcli.errors import UsageError
from normcli.exports import options_checked
from normcli.model import RowFit, Stats, as_names


@dataclass(frozen=True)
class Dialect:
    """How one SQL dialect quotes identifiers, names DOUBLE and text, takes a row maximum and
    compares NULL-safely; whether its DOUBLE holds NaN (which normcli reads as null), and
    whether a backslash escapes in its text literals (Spark: ``\\'`` for a quote, not ``''``)."""

    quote: str
    double: str
    greatest: str
    star_replace: bool
    text: str
    null_safe_eq: str
    has_nan: bool
    backslash_escapes: bool = False


# DuckDB, PostgreSQL and Spark hold NaN and take NaN = NaN as true; SQLite stores NaN as NULL.
DIALECTS = {
    "duckdb": Dialect('"', "DOUBLE", "GREATEST", True, "VARCHAR", "IS NOT DISTINCT FROM", True),
    "postgres": Dialect('"', "DOUBLE PRECISION", "GREATEST", False, "TEXT", "IS NOT DISTINCT FROM", True),
    "sqlite": Dialect('"', "REAL", "MAX", False, "TEXT", "IS", False),
    "spark": Dialect("`", "DOUBLE", "GREATEST", False, "STRING", "<=>", True, backslash_escapes=True),
}
GROUP_POLICIES = ("global", "passthrough", "null")
HELPER = "__normcli_"  # prefix of the helper columns of row-wise methods


@options_checked
def to_sql(stats: Stats, dialect: str = "duckdb", table: str = "data",
           columns: Sequence[str] | None = None, unseen_group: str = "global") -> str:
    """One SELECT over ``table`` that normalizes like ``normcli transform`` with ``stats``.

    ``columns`` lists every input column in order (fitted or not); without it the query uses
    DuckDB's ``* REPLACE``, so it is required for the other dialects. ``table`` may be
    ``schema.table`` (each dot-separated part is quoted). Per-group statistics come from a
    LEFT JOIN against an inline ``VALUES`` table, one line per group, keys compared as text
    (NULL-safely); a row whose key is not there follows ``unseen_group`` (global, passthrough
    or null; ``error`` cannot be expressed in portable SQL).
    """
    if dialect not in DIALECTS:
        raise UsageError(f"unknown SQL dialect '{dialect}' (choose from {', '.join(DIALECTS)})")
    if unseen_group not in GROUP_POLICIES:  # refused without groups too, as transform refuses a bad policy
        raise UsageError(f"--unseen-group {unseen_group} has no SQL form (choose from {', '.join(GROUP_POLICIES)})")
    d = DIALECTS[dialect]
    if columns is None and not d.star_replace:
        raise UsageError(f"{dialect} has no SELECT * REPLACE: pass --columns with every input column in order")
    if not isinstance(table, str) or not table:
        raise UsageError(f"--table takes a table name, got {table!r}")
    if columns is not None:
        columns = as_names(columns)
        known = set(columns)
        missing = [c for c in stats.columns if c not in known]
        if missing:
            raise UsageError(f"--columns lacks the fitted column '{missing[0]}'")
    q = _Quoter(d)
    per_column = [name for name, fit in stats.columns.items() if fit.method in M.PER_COLUMN]
    source = ".".join(q.ident(p) for p in table.split("."))
    prefix, grouped_helpers = "", []
    if stats.groups is None:
        out = {name: _column_sql(q, name, stats.params(name)) for name in per_column}
    else:
        prefix, source, out, grouped_helpers = _grouped(q, stats, per_column, source, unseen_group)
    # Helper columns (expression, name) of the first and second derived table.
    levels: list[list[tuple[str, str]]] = [[], []]
    for i, row in enumerate(stats.rows):
        out.update(_row_sql(q, i, row, levels))
    for helpers in levels:
        if helpers:
            items = [f"{expr} AS {q.ident(name)}" for expr, name in helpers]
            source = "(\n  SELECT *,\n    " + ",\n    ".join(items) + f"\n  FROM {source}\n) AS t"
    helper_names = [q.ident(name) for name in grouped_helpers] + [q.ident(name) for lvl in levels for _, name in lvl]
    if columns is None:
        items = [f"{expr} AS {q.ident(name)}" for name, expr in out.items()]
        exclude = f"EXCLUDE ({', '.join(helper_names)}) " if helper_names else ""
        select = f"SELECT * {exclude}REPLACE (\n  " + ",\n  ".join(items) + "\n)"
    else:
        items = [f"{out[c]} AS {q.ident(c)}" if c in out else q.ident(c) for c in columns]
        select = "SELECT\n  " + ",\n  ".join(items)
    return f"{prefix}{select}\nFROM {source}\n"


class _Quoter:
    def __init__(self, dialect: Dialect) -> None:
        self.d = dialect
        self.quote = dialect.quote

    def ident(self, name: str) -> str:
        """``name`` as a quoted identifier (the quote character doubled inside)."""
        return self.quote + name.replace(self.quote, self.quote * 2) + self.quote

    def col(self, name: str) -> str:
        """The column ``name`` read as DOUBLE, NaN as NULL (as ``transform`` reads it)."""
        x = f"CAST({self.ident(name)} AS {self.d.double})"
        return f"NULLIF({x}, CAST('NaN' AS {self.d.double}))" if self.d.has_nan else x


def num(v: float) -> str:
    """A float literal that round-trips exactly and reads as DOUBLE in every dialect."""
    v = float(v)
    if not math.isfinite(v):
        raise UsageError(f"cannot write the non-finite number {v} in SQL")
    r = repr(v)
    if "e" not in r:
        r += "e0"
    return f"({r})" if v < 0 else r


def _column_sql(q: _Quoter, name: str, p: M.Affine) -> str:
    """The SQL of :meth:`normcli.methods.Affine.apply` on column ``name``."""
    x = q.col(name)
    e = x
    if p.center != 0.0:
        e = f"({e} - {num(p.center)})"
    if p.center_lo != 0.0:
        e = f"({e} - {num(p.center_lo)})"
    if p.scale != 1.0:
        e = f"({e} / {num(p.scale)})"
    if p.gain != 1.0:
        e = f"({e} * {num(p.gain)})"
    if p.offset != 0.0:
        e = f"({e} + {num(p.offset)})"
    if p.const_zero:
        e = f"CASE WHEN {x} IS NULL THEN NULL ELSE 0e0 END"
    if p.clip is not None:
        lo, hi = num(p.clip[0]), num(p.clip[1])
        e = f"CASE WHEN {e} < {lo} THEN {lo} WHEN {e} > {hi} THEN {hi} ELSE {e} END"
    if p.fill is not None and not math.isnan(p.fill):  # NaN: a column fitted on no value, not filled
        e = f"COALESCE({e}, {num(p.fill)})"
    return e


def _grouped(q: _Quoter, stats: Stats, names: list[str], source: str,
             policy: str) -> tuple[str, str, dict[str, str], list[str]]:
    """A ``WITH`` table of per-group parameters (one line per group), the source joined to it,
    each column's expression over the joined parameters, and the helper columns to drop."""
    keys = list(stats.group_by)
    fields: list[str] = [f"{HELPER}k{i}" for i in range(len(keys))] + [f"{HELPER}hit"]
    per_group: dict[str, M.Affine] = {}
    for j, name in enumerate(names):
        per_group[name] = stats.params(name, grouped=True)
        fields += [f"{HELPER}{j}_{k}" for k in ("c", "l", "s", "z", "p", "f")]
    rows = []
    for g, key in enumerate(stats.groups.keys):
        vals = ["NULL" if v is None else _text(q, v) for v in key] + ["1"]
        for name in names:
            p = per_group[name]
            fill = _at(p.fill, g)
            vals += [num(_at(p.center, g)), num(_at(p.center_lo, g)), num(_at(p.scale, g)),
                     "1" if _at(p.const_zero, g) else "0", "1" if _at(p.keep, g) else "0",
                     "NULL" if fill is None or math.isnan(fill) else num(fill)]
        rows.append("(" + ", ".join(vals) + ")")
    table = q.ident(f"{HELPER}groups")
    prefix = (f"WITH {table}({', '.join(q.ident(f) for f in fields)}) AS (VALUES\n  "
              + ",\n  ".join(rows) + "\n)\n")
    on = " AND ".join(f"CAST(s.{q.ident(k)} AS {q.d.text}) {q.d.null_safe_eq} {table}.{q.ident(f'{HELPER}k{i}')}"
                      for i, k in enumerate(keys))
    joined = f"(\n  SELECT *\n  FROM {source} AS s\n  LEFT JOIN {table}\n  ON {on}\n) AS t"
    hit = q.ident(f"{HELPER}hit")
    out = {}
    for j, name in enumerate(names):
        col = {k: q.ident(f"{HELPER}{j}_{k}") for k in ("c", "l", "s", "z", "p", "f")}
        glob = stats.params(name)
        p = per_group[name]
        x = q.col(name)
        e = f"(((({x} - {col['c']}) - {col['l']}) / {col['s']}) * {num(p.gain)}) + {num(p.offset)}"
        e = f"CASE WHEN {x} IS NULL THEN NULL WHEN {col['z']} = 1 THEN 0e0 ELSE {e} END"
        if p.clip is not None:
            lo, hi = num(p.clip[0]), num(p.clip[1])
            e = f"CASE WHEN {e} < {lo} THEN {lo} WHEN {e} > {hi} THEN {hi} ELSE {e} END"
        e = f"CASE WHEN {col['p']} = 1 THEN {x} ELSE {e} END"
        if p.fill is not None:
            e = f"COALESCE({e}, {col['f']})"
        unseen = {"global": _column_sql(q, name, glob), "passthrough": x, "null": "NULL"}[policy]
        out[name] = f"CASE WHEN {hit} IS NULL THEN {unseen} ELSE {e} END"
    return prefix, joined, out, fields


def _at(v, g: int):
    """Entry ``g`` of a per-group parameter (a scalar applies to every group)."""
    if v is None:
        return None
    return v[g].item() if hasattr(v, "ndim") and v.ndim else (v.item() if hasattr(v, "item") else v)


def _text(q: _Quoter, v: str) -> str:
    """A text literal, typed so that the VALUES table's column is text: quotes doubled, or, where
    a backslash escapes, backslashes and quotes escaped with one (Spark reads 'a''b' as 'a' 'b',
    two literals joined: "ab")."""
    text = str(v)
    if q.d.backslash_escapes:
        text = text.replace("\\", "\\\\").replace("'", "\\'")
    else:
        text = text.replace("'", "''")
    return f"CAST('{text}' AS {q.d.text})"


def _row_sql(q: _Quoter, i: int, row: RowFit, levels: list[list[tuple[str, str]]]) -> dict[str, str]:
    """Expressions of row-wise method ``i``; adds its helper columns to ``levels``."""
    xs = [q.col(c) for c in row.columns]
    nz = [f"COALESCE({x}, 0e0)" for x in xs]
    h = {k: f"{HELPER}r{i}_{k}" for k in ("norm", "n", "mean", "var")}
    ref = {k: q.ident(v) for k, v in h.items()}
    if row.method == "layer":
        n = " + ".join(f"CASE WHEN {x} IS NULL THEN 0e0 ELSE 1e0 END" for x in xs)
        levels[0].append((f"({n})", h["n"]))
        levels[0].append((f"({' + '.join(nz)}) / NULLIF({n}, 0e0)", h["mean"]))
        sq = " + ".join(f"COALESCE(({x} - {ref['mean']}) * ({x} - {ref['mean']}), 0e0)" for x in xs)
        levels[1].append((f"({sq}) / NULLIF({ref['n']}, 0e0)", h["var"]))
        eps = num(row.options["eps"])
        if row.options["eps_mode"] == "std":
            denom = f"(SQRT({ref['var']}) + {eps})"
        else:
            denom = f"SQRT({ref['var']} + {eps})"
        out = {}
        for j, (c, x) in enumerate(zip(row.columns, xs)):
            e = f"(({x} - {ref['mean']}) / {denom})"
            if row.options.get("gamma") is not None:
                e = f"({e} * {num(row.options['gamma'][j])})"
            if row.options.get("beta") is not None:
                e = f"({e} + {num(row.options['beta'][j])})"
            out[c] = e
        return out
    if row.method == "l1":
        norm = " + ".join(f"ABS({v})" for v in nz)
    elif row.method == "l2":
        norm = "SQRT(" + " + ".join(f"{v} * {v}" for v in nz) + ")"
    elif row.method == "max":
        absv = [f"ABS({v})" for v in nz]
        norm = absv[0] if len(absv) == 1 else f"{q.d.greatest}({', '.join(absv)})"
    else:
        raise UsageError(f"'{row.method}' is not a row-wise method")
    levels[0].append((f"({norm})", h["norm"]))
    denom = f"CASE WHEN {ref['norm']} > 0e0 THEN {ref['norm']} ELSE 1e0 END"
    return {c: f"({x} / {denom})" for c, x in zip(row.columns, xs)}
