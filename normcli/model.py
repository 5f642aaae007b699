"""The fitted model: which column gets which method, fitted from batches, applied to batches.

:class:`FitPlan` decides (once, from the options and the input's header) what to fit;
:meth:`FitPlan.partial` turns one record batch into mergeable statistics; :class:`Stats` is
the fitted result that transforms and inverts record batches and converts to and from the
stats file's dict form. Nothing here reads or writes files.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import threading
from dataclasses import dataclass, field
from numbers import Integral
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from normcli import methods as M
from normcli.bitmaps import (decimals_as_float64, first_bad_float, float64_values, from_values, is_text,
                             numbers_as_float64, validity)
from normcli import sketch as _sketch
from normcli.errors import DataError, RowError, StatsFileError, UsageError
from normcli.groups import Grouped, GroupStats, Key, describe, factorize, key_text
from normcli.stats import TINY_VAR, ColumnStats, variance

if TYPE_CHECKING:
    from normcli.io import TextSample

DEFAULT_METHOD = "zscore"
UNSEEN_POLICIES = ("global", "passthrough", "null", "error")
DTYPES = ("float64", "float32")


@dataclass
class ColumnFit:
    """One fitted column: its method (per-column, or the row-wise one it feeds) and statistics."""

    name: str
    method: str
    options: dict[str, Any]
    stats: ColumnStats = field(default_factory=ColumnStats)


@dataclass
class RowFit:
    """A row-wise method over ``columns`` (in this order) with its options."""

    method: str
    columns: list[str]
    options: dict[str, Any]


def is_numeric_type(t: pa.DataType) -> bool:
    """Integer, floating point or decimal: the types ``fit`` selects by default."""
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _fittable(t: pa.DataType) -> bool:
    """The types of a column named for fitting: numeric, or null (no value in the sample)."""
    return is_numeric_type(t) or pa.types.is_null(t)


@dataclass(frozen=True)
class Partial:
    """Mergeable statistics of some rows: per column, and per group when the plan groups."""

    columns: dict[str, ColumnStats]
    groups: Grouped | None = None

    def merge(self, other: Partial, reuse: bool = False) -> Partial:
        """Both parts together (column-wise, and group-wise when grouped; ``reuse``: see
        :meth:`~normcli.groups.GroupStats.merge`)."""
        if len(self.columns) >= _STACKED:
            cols = dict(zip(self.columns, ColumnStats.merge_all(list(self.columns.values()),
                                                                [other.columns[n] for n in self.columns])))
        else:
            cols = {name: st.merge(other.columns[name]) for name, st in self.columns.items()}
        groups = None if self.groups is None else self.groups.merge(other.groups, reuse)
        return Partial(cols, groups)


# From this many columns without a sketch, a batch's statistics are taken over 2-D arrays of
# about _STACK_BYTES each.
_STACKED = 32
_STACK_BYTES = 1 << 20


@dataclass
class FitPlan:
    """What to fit: per-column methods and options, row-wise methods, group keys and the sketch size."""

    columns: dict[str, ColumnFit]
    rows: list[RowFit]
    sketch_k: int | None = None
    group_by: list[str] = field(default_factory=list)
    sketch_all: bool = False  # a quantile sketch for every column, not only robust ones
    # Columns without a value in the sample: their type is unknown, so no default fits them.
    unsampled: list[str] = field(default_factory=list)
    # Row labels (a stored pandas index) the default selection left out.
    labels: list[str] = field(default_factory=list)

    @property
    def numeric(self) -> list[str]:
        """The columns to read as float64, in data order."""
        return list(self.columns)

    @property
    def grouped(self) -> list[str]:
        """The per-column columns, fitted per group when the plan groups."""
        return [n for n, c in self.columns.items() if c.method in M.PER_COLUMN]

    def _sketch_k(self, col: ColumnFit, overall: bool = False) -> int | None:
        """The sketch size for ``col``: robust columns, and with ``sketch_all`` every column
        overall (per group only robust ones need it)."""
        wanted = col.method == "robust" or (overall and self.sketch_all)
        return self.sketch_k if self.sketch_k is not None and wanted else None

    def partial(self, batch: pa.RecordBatch | pa.Table) -> Partial:
        """Statistics of one batch for every planned column (pure; safe to run in threads)."""
        out, values = {}, {}
        plain = [n for n, col in self.columns.items() if self._sketch_k(col, overall=True) is None]
        if len(plain) >= _STACKED:  # wide data: the same statistics, column by column costs more
            # a few MiB of columns at a time: a block (and its deviations) of every column of a
            # long batch would hold the batch twice over
            step = max(1, _STACK_BYTES // max(8 * batch.num_rows, 1))
            for start in range(0, len(plain), step):
                names = plain[start:start + step]
                block = np.empty((len(names), batch.num_rows))
                for i, name in enumerate(names):
                    block[i] = _float_values(batch.column(name), name)
                    values[name] = block[i]
                out.update(zip(names, ColumnStats.of_rows(block)))
        for name, col in self.columns.items():
            if name not in out:
                values[name] = _float_values(batch.column(name), name)
                k = self._sketch_k(col, overall=True)
                out[name] = ColumnStats.of(values[name], None if k is None else _sketch.new(k))
            st = out[name]
            if st.count and not (np.isfinite(st.min) and np.isfinite(st.max)):
                raise RowError(f"column '{name}' holds an infinite value", "; fit takes finite numbers only",
                               int(np.flatnonzero(np.isinf(values[name]))[0]))
        out = {name: out[name] for name in self.columns}  # in the plan's order
        if not self.group_by:
            return Partial(out)
        f = factorize([key_text(batch.column(k), k) for k in self.group_by])
        groups = {name: GroupStats.of(values[name], f, self._sketch_k(self.columns[name])) for name in self.grouped}
        return Partial(out, Grouped(f.keys, groups))

    def empty(self) -> Partial:
        """The statistics of no rows, the start of a merge."""
        groups = None
        if self.group_by:
            groups = Grouped([], {n: GroupStats.empty(0, self._sketch_k(self.columns[n]) is not None)
                                  for n in self.grouped})
        def start(col: ColumnFit) -> ColumnStats:  # with its empty sketch: a fit of no rows has one
            k = self._sketch_k(col, overall=True)
            return ColumnStats(sketch=None if k is None else _sketch.new(k))

        return Partial({name: start(col) for name, col in self.columns.items()}, groups)

    def finish(self, part: Partial, info: dict[str, Any] | None = None) -> Stats:
        """The fitted :class:`Stats` from merged statistics; applies the constant-column policy."""
        cols = {}
        for name, col in self.columns.items():
            st = part.columns[name]
            if col.method in M.PER_COLUMN and col.options.get("constant") == "error":
                if M.degenerate(col.method, st, col.options):
                    what = "has no values" if st.count == 0 else "is constant"
                    raise DataError(f"column '{name}' {what} (--constant error)")
                if part.groups is not None:
                    gs = part.groups.columns[name]
                    flat = np.flatnonzero(M.degenerate(col.method, gs, col.options))
                    if flat.size:
                        key = describe(self.group_by, part.groups.keys[flat[0]])
                        what = "has no values" if gs.count[flat[0]] == 0 else "is constant"
                        raise DataError(f"column '{name}' {what} in group {key} (--constant error)")
            grouped = part.groups is not None and name in part.groups.columns
            if col.method in ("minmax", "robust") and (np.any(M.scale_overflows(col.method, st, col.options)) or (
                    grouped and np.any(M.scale_overflows(col.method, part.groups.columns[name], col.options)))):
                raise DataError(f"column '{name}': its values are too far apart for float64 "
                                f"({'max - min' if col.method == 'minmax' else 'the IQR'} overflows)")
            if col.method == "zscore":  # the one method that normalizes with the moments
                _require_finite(name, st.mean, st.mean_lo, st.m2)
                _require_resolved(name, col.options, st)
                if grouped:
                    gs = part.groups.columns[name]
                    filled = gs.count > 0
                    _require_finite(name, gs.mean[filled], gs.mean_lo[filled], gs.m2[filled])
                    _require_resolved(name, col.options, gs, self.group_by, part.groups.keys)
            else:  # moments that overflowed (values near +-1.8e308) are unknown: null in the file
                st = _unknown_if_overflowed(st)
                if grouped:
                    part.groups.columns[name] = _unknown_if_overflowed(part.groups.columns[name])
            cols[name] = ColumnFit(name, col.method, col.options, st)
        return Stats(cols, list(self.rows), info or {}, list(self.group_by), part.groups)


def _require_finite(name: str, *moments: Any) -> None:
    """DataError when a fitted moment overflowed float64 (values near +-1.8e308 spread too wide)."""
    if not all(m is None or np.isfinite(m).all() for m in moments):
        raise DataError(f"column '{name}': its values are too large for float64 statistics "
                        "(the mean or variance overflows)")


def _require_resolved(name: str, options: Mapping[str, Any], st: Any, group_by: Sequence[str] = (),
                      keys: Sequence[Any] = ()) -> None:
    """DataError when zscore's scale would come from a variance too small for float64 (values
    apart by less than about 1e-146): its square root would be far off, or 0. An ``eps`` added
    to the variance is what scales it then, and is exact enough."""
    if options.get("eps"):
        return
    with np.errstate(invalid="ignore"):
        lost = np.atleast_1d((variance(st.count, st.m2) < TINY_VAR) & (np.asarray(st.max) > np.asarray(st.min)))
    if lost.any():
        where = f" in group {describe(group_by, keys[int(np.flatnonzero(lost)[0])])}" if group_by else ""
        raise DataError(f"column '{name}'{where}: its values lie too close together for float64 statistics "
                        "(a standard deviation below about 1e-146, whose square underflows); "
                        "minmax and maxabs scale it, or give zscore an --eps")


def _unknown_if_overflowed(st: Any) -> Any:
    """``st`` (a ColumnStats or GroupStats) with NaN for mean, mean_lo and M2 where one of them
    is not finite: what an imported statistic that lacks them holds."""
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(st.mean) & np.isfinite(st.mean_lo) & np.isfinite(st.m2))
    if not np.any(bad):
        return st
    unknown = {k: np.where(bad, np.nan, getattr(st, k)) for k in ("mean", "mean_lo", "m2")}
    if np.ndim(st.mean) == 0:
        unknown = {k: float(v) for k, v in unknown.items()}
    return dataclasses.replace(st, **unknown)


def merge_partials(a: Partial, b: Partial) -> Partial:
    """Merge two partial results of the same plan: ``a``, an accumulator, is the caller's to give
    away (its per-group sketches are updated in place); ``b`` is left unchanged."""
    return a.merge(b, reuse=True)


def as_names(value: Any) -> list[str]:
    """Column names given as one label or a list of them, as text (a frame's labels become text:
    0 names the column labelled 0). A string is one name, not a sequence of one-letter names."""
    if value is None:  # group_by=None, exclude=None: none
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [str(value)]
    return [str(c) for c in value]


def delimiter_hint(names: Sequence[str]) -> str:
    """The end of a message about missing columns when the input read as one column whose name
    holds a likely separator (``id;x;y``): its delimiter was not the one read with."""
    seps = [c for c in ";\t|," if len(names) == 1 and c in names[0]]
    if not seps:
        return ""
    return f"; the input reads as the one column {_shown(names[0])}: is its delimiter {seps[0]!r} (--delimiter)?"


def names_argument(names: Sequence[str]) -> str:
    """``names`` as the shell argument of a list option (``--exclude``, ``--columns``): the
    inverse of :func:`split_names`, a name with a comma, a quote or a line break (or none at
    all) quoted as in CSV."""
    def field(name: str) -> str:
        return '"' + name.replace('"', '""') + '"' if not name or any(c in name for c in ',"\r\n') else name

    return shlex.quote(",".join(field(n) for n in names))


def split_names(text: str) -> list[str]:
    """The column names of a comma-separated list (``--columns a,b``, ``zscore:a,b``), empty ones
    left out. A name that holds a comma or a quote, or no character, is quoted as in CSV:
    ``"a,b",c`` names ``a,b`` and ``c``; ``""`` the column without a name."""
    if '"' not in text:
        return [v for v in text.split(",") if v]
    import csv

    try:
        return next(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise UsageError(f"cannot read the column list {text!r}: {exc}") from None


def named_specs(methods: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The ``NAME:col1,col2`` specs among ``methods`` as (method, columns), in order."""
    return [(m.partition(":")[0], split_names(m.partition(":")[2])) for m in methods if ":" in m]


def plan_fit(types: Mapping[str, pa.DataType], methods: Sequence[str] = (), *,
             columns: Sequence[str] | None = None, exclude: Sequence[str] = (),
             options: Mapping[str, Any] | None = None, sketch_k: int | None = None,
             group_by: Sequence[str] = (), sketch_all: bool = False,
             text: Mapping[str, TextSample] | None = None, labels: Sequence[str] = ()) -> FitPlan:
    """Decide what to fit from the input's column types and the user's method specs.

    ``methods`` holds specs ``NAME`` (the default for every selected column not named
    elsewhere) or ``NAME:col1,col2`` (those columns; for a row-wise method, the columns it
    spans, in order). ``columns`` restricts the default selection, which is every numeric
    column; ``exclude`` removes columns from it. ``text`` tells how the sampled values of the
    text columns read as numbers: the default selection refuses (DataError) a text column that
    holds numbers (see :func:`numbers_as_text`) rather than leave it out unsaid, and the error
    for a text column named for fitting quotes its first value that is not a number.
    ``options`` are method options (ddof, range, eps, ...); each method takes the ones it knows.
    ``group_by`` names key columns: every per-column statistic is then fitted per key value as
    well as overall; key columns are never normalized themselves. ``sketch_all`` keeps a
    quantile sketch of every column (for ``check``), not only of the ``robust`` ones.
    ``labels`` are row labels (a stored pandas index, see :func:`pandas_index_columns`): the
    default selection leaves them out (the plan lists those it did), a column named anywhere is fitted.
    """
    options = dict(options or {})
    if sketch_k is not None and (isinstance(sketch_k, bool) or not isinstance(sketch_k, Integral)
                                 or not 8 <= sketch_k <= 65535):
        raise UsageError("--sketch-k must be between 8 and 65535")
    if columns is not None and not columns:  # an empty list computed by a caller is no selection
        raise UsageError("--columns names no column (leave it out to fit every numeric column)")
    group_by = list(dict.fromkeys(group_by))
    for name in [*(columns or ()), *exclude, *group_by]:
        if name not in types:
            raise DataError(f"column '{name}' is not in the input{delimiter_hint(list(types))}")
    specs = named_specs(methods)
    in_specs = {c for _, cols in specs for c in cols}
    for name in group_by:
        if name in (columns or ()) or name in in_specs:
            raise UsageError(f"column '{name}' is a --group-by key and cannot be normalized")
    both = next((c for c in (columns or ()) if c in exclude), None)
    if both is not None:  # which of the two the user meant cannot be told
        raise UsageError(f"column '{both}' is named by both --columns and --exclude")
    text = text or {}
    unsampled, left_labels = [], []
    if columns:
        for name in columns:
            if not _fittable(types[name]):
                raise _not_numeric(name, types[name], text.get(name))
        wanted = set(columns)
        selected = [c for c in types if c in wanted]
    else:
        selected = [c for c, t in types.items() if is_numeric_type(t)]
        left_out = {*exclude, *group_by, *in_specs}
        suspects = [c for c in types if c not in left_out and numbers_as_text(text.get(c))]
        if suspects:
            raise _numbers_as_text_error(suspects, text)
        unsampled = [c for c, t in types.items() if pa.types.is_null(t) and c not in left_out]
        left_labels = [c for c in labels if c in selected and c not in left_out]
    dropped = {*exclude, *group_by, *left_labels}
    selected = [c for c in selected if c not in dropped]

    default = DEFAULT_METHOD
    bare = [m for m in methods if ":" not in m]
    if len(bare) > 1:
        raise UsageError(f"only one default method may be given, got {', '.join(bare)}")
    if bare:
        default = bare[0]
    for name in [default, *(n for n, _ in specs)]:
        if name not in M.METHODS:
            raise UsageError(f"unknown method '{name}' (choose from {', '.join(M.METHODS)})")

    claimed: dict[str, str] = {}
    rows: list[RowFit] = []
    for method, cols in specs:
        if not cols:
            raise UsageError(f"--method {method}: names no columns")
        for c in cols:
            if c not in types:
                raise DataError(f"column '{c}' is not in the input{delimiter_hint(list(types))}")
            if not _fittable(types[c]):
                raise _not_numeric(c, types[c], text.get(c))
            if c in claimed:
                raise UsageError(f"column '{c}' is claimed by both {claimed[c]} and {method}")
            claimed[c] = method
        if method in M.PER_ROW:
            rows.append(RowFit(method, list(cols), M.options_for(method, options)))
    rest = [c for c in selected if c not in claimed]
    if default in M.PER_ROW:
        if rest:
            rows.append(RowFit(default, rest, M.options_for(default, options)))
        claimed.update({c: default for c in rest})
    else:
        claimed.update({c: default for c in rest})
    if not claimed:
        raise DataError("no numeric columns to fit (name them with --columns)" + delimiter_hint(list(types)))
    M.check_options(options)  # values first: a bad value is named as such, used or not
    M.check_used([*dict.fromkeys(claimed.values()), *(r.method for r in rows)], options)
    for row in rows:
        _check_row_options(row)
    fits = {c: ColumnFit(c, claimed[c], M.options_for(claimed[c], options) if claimed[c] in M.PER_COLUMN else {})
            for c in types if c in claimed}
    _spread_zscore_options(fits)
    needs_sketch = sketch_all or any(f.method == "robust" for f in fits.values())
    if sketch_k is not None and not needs_sketch:  # ignored, it would read as kept
        methods_used = ", ".join(dict.fromkeys([*claimed.values(), *(r.method for r in rows)]))
        raise UsageError(f"--sketch-k sizes the quantile sketches of robust and --sketch, neither of which "
                         f"this fit uses (methods: {methods_used})")
    return FitPlan(fits, rows, (sketch_k or _sketch.DEFAULT_K) if needs_sketch else None, group_by, sketch_all,
                   unsampled, left_labels)


def numbers_as_text(sample: TextSample | None) -> bool:
    """Whether a text column with this sample holds numbers: at least one of its values reads as
    a number, and at least half of them do (nulls, blanks and null tokens aside).

    Such a column is a numeric one with a few stray values (``-``, ``?``, ``1,5``), not text:
    left out of the default selection, it would be lost without a word.
    """
    return sample is not None and sample.numbers > 0 and 2 * sample.numbers >= sample.values


def _numbers_as_text_error(names: Sequence[str], text: Mapping[str, TextSample]) -> DataError:
    """The error for text columns of numbers met by the default selection (``names[0]`` quoted)."""
    first = text[names[0]]
    others = ", ".join(f"'{n}'" for n in names[1:])
    likewise = f" (likewise {others})" if others else ""
    if first.example is None:
        what = (f"column '{names[0]}' holds numbers as text (all {first.values:,} values sampled)"
                f"{likewise}; convert it to numbers")
    else:
        what = (f"column '{names[0]}': value {_shown(first.example)}{_at(first)} is not a number, though "
                f"{first.numbers:,} of its first {first.values:,} values are{likewise}; fix or empty such values")
    them = "the column" if len(names) == 1 else "those columns"
    return DataError(f"{what}, or leave {them} out with --exclude {names_argument(names)}")


def _not_numeric(name: str, kind: pa.DataType, sample: TextSample | None) -> DataError:
    """The error for a column named for fitting whose values are not numbers."""
    why = f"its values read as {kind}"
    if sample is not None and sample.example is not None:
        why += f": {_shown(sample.example)}{_at(sample)} is not a number"
    return DataError(f"column '{name}' is not numeric ({why})")


def _counted(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``, ``3,000 rows``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _first_names(names: Sequence[str], most: int = 4) -> str:
    """The first ``most`` of ``names``, each quoted as a message quotes a value, and how many more."""
    shown = ", ".join(_shown(n) for n in names[:most])
    return shown + (f" and {len(names) - most:,} more" if len(names) > most else "")


def _shown(value: str) -> str:
    """``value`` quoted for a one-line message: line breaks escaped, cut after 40 characters."""
    if len(value) > 40:
        value = value[:37] + "..."
    return "'" + value.replace("\r", "\\r").replace("\n", "\\n") + "'"


def _at(sample: TextSample) -> str:
    return f" on {sample.where}" if sample.where else ""


def _spread_zscore_options(fits: Mapping[str, ColumnFit]) -> None:
    """zscore's ``gamma``/``beta``: one number for every zscore column, or one per column in order."""
    names = [c for c, f in fits.items() if f.method == "zscore"]
    for key in ("gamma", "beta"):
        for i, c in enumerate(names):
            v = fits[c].options.get(key)
            if isinstance(v, (list, tuple)):
                if len(v) not in (1, len(names)):
                    raise UsageError(f"--{key} has {len(v)} values but {len(names)} columns are fitted with zscore")
                fits[c].options[key] = float(v[0] if len(v) == 1 else v[i])
def plan_from_stats(stats: Stats) -> FitPlan:
    """The plan that fitted ``stats``: its columns, methods, options and sketches, to fit more data
    the same way (``fit --update``) and merge the result into it."""
    cols = {n: ColumnFit(n, f.method, dict(f.options)) for n, f in stats.columns.items()}
    ks = [f.stats.sketch.k for f in stats.columns.values() if f.stats.sketch is not None]
    sketch_all = any(f.stats.sketch is not None and f.method != "robust" for f in stats.columns.values())
    return FitPlan(cols, [RowFit(r.method, list(r.columns), dict(r.options)) for r in stats.rows],
                   ks[0] if ks else None, list(stats.group_by), sketch_all)


def _check_row_options(row: RowFit) -> None:
    """A row-wise method's ``gamma``/``beta``: one number for every column it spans, or one per
    column in order (as zscore's)."""
    for key in ("gamma", "beta"):
        v = row.options.get(key)
        if v is not None:
            v = [v] if isinstance(v, (int, float)) else v
            if len(v) == 1:
                row.options[key] = [float(v[0])] * len(row.columns)
            elif len(v) != len(row.columns):
                raise UsageError(f"--{key} has {len(v)} values but {row.method} spans {len(row.columns)} columns")
    if row.method == "layer" and row.options.get("eps_mode") not in M.EPS_MODES:
        raise UsageError(f"--eps-mode must be one of {', '.join(M.EPS_MODES)}")


@dataclass
class UnseenGroups:
    """What transform met of group keys absent from the fit: rows and a few of the keys.

    Filled in by :meth:`Stats.transform_batch` from worker threads.
    """

    rows: int = 0
    keys: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, rows: int, keys: Sequence[Any]) -> None:
        """Count ``rows`` more unseen rows, remembering the five first of the distinct ``keys`` in
        their sort order (nulls last): whatever order worker threads report them in, a run
        names the same ones."""
        def order(key: Key) -> tuple:
            return tuple((v is None, v or "") for v in key)

        with self._lock:
            self.rows += rows
            self.keys = sorted(set(self.keys).union(keys), key=order)[:5]


@dataclass(frozen=True)
class OutputOptions:
    """How transform writes: the unseen-group policy, the float type and the rounding of fitted columns."""

    unseen_group: str = "global"
    dtype: str = "float64"
    decimals: int | None = None

    def __post_init__(self) -> None:
        if self.unseen_group not in UNSEEN_POLICIES:
            raise UsageError(f"--unseen-group must be one of {', '.join(UNSEEN_POLICIES)}")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}")
        if self.decimals is not None and (not isinstance(self.decimals, Integral) or isinstance(self.decimals, bool)
                                          or not 0 <= self.decimals <= 15):
            raise UsageError("--decimals must be a whole number between 0 and 15")

    @property
    def arrow_type(self) -> pa.DataType:
        """The Arrow type of the fitted columns in the output."""
        return pa.float32() if self.dtype == "float32" else pa.float64()


@dataclass
class Stats:
    """Fitted normalization statistics: apply with :meth:`transform_batch`, undo with :meth:`inverse_batch`.

    With ``group_by`` key columns, ``groups`` holds the per-group statistics of every
    per-column method; rows are then normalized with their group's statistics.
    """

    columns: dict[str, ColumnFit]
    rows: list[RowFit] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    group_by: list[str] = field(default_factory=list)
    groups: Grouped | None = None

    def __post_init__(self) -> None:
        self._params: dict[Any, M.Affine] = {}
        # transform's worker threads ask at once: per group, the map costs quantiles per sketch
        self._params_lock = threading.Lock()

    def __eq__(self, other: object) -> bool:
        """Equal when their stats files would be, but for when and by which version they were made."""
        if not isinstance(other, Stats):
            return NotImplemented
        from normcli import statsfile

        def content(stats: Stats) -> dict[str, Any]:
            doc = statsfile.to_dict(stats)
            del doc["created"], doc["normcli_version"]
            return doc

        return content(self) == content(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq is

    def __repr__(self) -> str:
        """One line saying what was fitted, as short for a million groups or columns as for one:
        the dataclass's own repr lists every statistic (megabytes in a notebook's cell)."""
        by_method: dict[str, list[str]] = {}
        for name, fit in self.columns.items():
            by_method.setdefault(fit.method, []).append(name)
        methods = "; ".join(f"{method} {_first_names(names)}" for method, names in by_method.items())
        rows = self.info.get("rows")
        fitted = f", {_counted(rows, 'row')}" if isinstance(rows, int) else ""
        groups = ""
        if self.groups is not None:
            groups = f", {_counted(len(self.groups.keys), 'group')} of {_first_names(self.group_by)}"
        return f"<normcli.Stats: {_counted(len(self.columns), 'column')} ({methods}){fitted}{groups}>"

    def __getstate__(self) -> dict[str, Any]:  # sent to Dask workers: without the lock and cache
        return {**self.__dict__, "_params": {}, "_params_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._params_lock = threading.Lock()

    def check_overrides(self, overrides: Mapping[str, Any]) -> None:
        """Refuse transform options (``clip``, ``clip_sigma``, ``fill_missing``; None is not
        given) of a bad value, or that no per-column method of these statistics reads."""
        M.check_options(overrides)
        M.check_used([f.method for f in self.columns.values() if f.method in M.PER_COLUMN], overrides,
                     "the fitted model")

    @property
    def needed_columns(self) -> list[str]:
        """Every column the stats file normalizes, in fitted order."""
        return list(self.columns)

    def params(self, name: str, overrides: Mapping[str, Any] | None = None, grouped: bool = False) -> M.Affine:
        """The affine map of per-column ``name``; with ``grouped``, one entry per group (cached)."""
        fit = self.columns[name]
        key = (name, grouped, tuple(sorted((overrides or {}).items())))
        found = self._params.get(key)
        if found is None:
            with self._params_lock:
                found = self._params.get(key)
                if found is None:
                    M.check_options(overrides or {})
                    stats = self.groups.columns[name] if grouped else fit.stats
                    found = self._params[key] = M.column_params(fit.method, stats,
                                                                {**fit.options, **(overrides or {})})
        return found

    def is_constant(self, name: str, grouped: bool = False) -> Any:
        """Whether column ``name`` counts as constant, so that its ``constant`` policy applies: its
        method's fitted scale is unusable (:func:`normcli.methods.degenerate`; for zscore and minmax
        one distinct value, for maxabs all zero, for robust a zero IQR). A column of a row-wise
        method: one distinct value. With ``grouped``, one bool per group with values."""
        fit = self.columns[name]
        if grouped:
            gs = self.groups.columns[name]
            flags = M.degenerate(fit.method, gs, fit.options) if fit.method in M.PER_COLUMN else gs.is_constant()
            return np.atleast_1d(flags) & (gs.count > 0)
        if fit.method in M.PER_COLUMN:
            return bool(M.degenerate(fit.method, fit.stats, fit.options))
        return fit.stats.is_constant()

    def inverse_losses(self) -> list[str]:
        """What :meth:`inverse_batch` cannot undo, one message per kind (warned of before an inverse)."""
        def constant_somewhere(name: str) -> bool:
            grouped = self.groups is not None and name in self.groups.columns
            return bool(self.is_constant(name)) or (grouped and bool(np.any(self.is_constant(name, True))))

        def listed(names: list[str]) -> str:
            return ", ".join(f"'{n}'" for n in names)

        per_column = {n: f.options for n, f in self.columns.items() if f.method in M.PER_COLUMN}
        clipped = [n for n, o in per_column.items() if o.get("clip") or o.get("clip_sigma")]
        # a column fitted on no value has nothing to fill with: its nulls stay null
        filled = [n for n, o in per_column.items() if o.get("fill_missing") and self.columns[n].stats.count]
        zeroed = [n for n, o in per_column.items() if o.get("constant") == "zero" and constant_somewhere(n)]
        out = []
        if clipped:
            out.append(f"inverse cannot undo clipping ({listed(clipped)}): a clipped value comes back as its bound's original")
        if filled:
            out.append(f"inverse cannot undo --fill-missing ({listed(filled)}): a filled null comes back as the centre, not null")
        if zeroed:
            out.append(f"inverse cannot undo --constant zero ({listed(zeroed)}): a constant column (or group) "
                       "comes back as the value fitted")
        return out

    def check_columns(self, names: Iterable[str]) -> None:
        """Raise if a fitted column or a group key is missing from ``names`` (the input's columns)."""
        names = list(names)
        have = set(names)
        missing = [c for c in [*self.columns, *self.group_by] if c not in have]
        if missing:
            raise StatsFileError(f"column '{missing[0]}' of the stats file is not in the input"
                                 + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                                 + delimiter_hint(names))

    def transform_batch(self, batch: pa.RecordBatch, overrides: Mapping[str, Any] | None = None,
                        output: OutputOptions | None = None, unseen: UnseenGroups | None = None) -> pa.RecordBatch:
        """Normalize the fitted columns of ``batch``; every other column passes through as is.

        ``output`` sets the unseen-group policy, dtype and rounding; rows of unseen groups are
        counted into ``unseen`` when given.
        """
        # Values beyond the float64 range become inf (and inf - inf NaN), as IEEE arithmetic
        # gives: a result written as such, not a RuntimeWarning on stderr.
        with np.errstate(all="ignore"):
            return self._map(batch, False, overrides, output or OutputOptions(), unseen)

    def inverse_batch(self, batch: pa.RecordBatch, output: OutputOptions | None = None,
                      unseen: UnseenGroups | None = None) -> pa.RecordBatch:
        """Undo :meth:`transform_batch` for per-column methods."""
        if self.rows:
            methods = ", ".join(sorted({r.method for r in self.rows}))
            raise UsageError(f"row-wise methods ({methods}) cannot be inverted")
        flat = next((name for name, fit in self.columns.items() if fit.options.get("gamma") == 0), None)
        if flat is not None:  # every value went to beta
            raise UsageError(f"column '{flat}' was transformed with gamma 0, which cannot be inverted")
        with np.errstate(all="ignore"):  # as in transform_batch
            return self._map(batch, True, None, output or OutputOptions(), unseen)

    def transform(self, data: Any, **options: Any) -> Any:
        """Normalize ``data`` (a DataFrame or Arrow table), returning the same kind.

        A path is streamed into ``output=`` (a path), which is returned.
        """
        from normcli import api

        return api.transform(self, data, **options)

    def inverse(self, data: Any, **options: Any) -> Any:
        """Undo :meth:`transform` on ``data`` (a path is streamed into ``output=``)."""
        from normcli import api

        return api.transform(self, data, inverse=True, **options)

    def export(self, target: str, **options: Any) -> Any:
        """This model as SQL text, a scikit-learn estimator, safetensors bytes or an ONNX model.

        See :func:`normcli.exports.export`; e.g. ``stats.export("sql", dialect="sqlite", columns=[...])``.
        """
        from normcli.exports import export

        return export(self, target, **options)

    def save(self, path: str) -> None:
        """Write the stats file to ``path`` atomically."""
        from normcli import statsfile

        if not isinstance(path, (str, os.PathLike)):
            raise UsageError(f"save takes the path of a stats file, not {type(path).__name__}")

        statsfile.save(self, path)

    def to_json(self) -> str:
        """The stats file's text."""
        from normcli import statsfile

        return statsfile.dumps(self)

    def _group_rows(self, batch: pa.RecordBatch, policy: str, unseen: UnseenGroups | None) -> np.ndarray:
        """Each row's group index, -1 for a key not seen in fit."""
        assert self.groups is not None
        f = factorize([key_text(batch.column(k), k) for k in self.group_by])
        pos = self.groups.lookup(f.keys)
        missing = np.flatnonzero(pos < 0)
        if missing.size:
            keys = [f.keys[i] for i in missing.tolist()]
            if policy == "error":
                raise DataError(f"group {describe(self.group_by, keys[0])} was not seen in fit "
                                f"(--unseen-group error)")
            if unseen is not None:
                unseen.add(int(f.sizes[missing].sum()), keys)
        return pos[f.codes]

    def _map(self, batch: pa.RecordBatch, inverse: bool, overrides: Mapping[str, Any] | None,
             output: OutputOptions, unseen: UnseenGroups | None) -> pa.RecordBatch:
        self.check_columns(batch.schema.names)
        arrays = list(batch.columns)
        read = arrays.copy()
        index = {n: i for i, n in enumerate(batch.schema.names)}
        rows = self._group_rows(batch, output.unseen_group, unseen) if self.groups is not None else None
        lost = None if rows is None or rows.min(initial=0) >= 0 else rows < 0
        null_rows = lost if output.unseen_group == "null" else None
        for name, fit in self.columns.items():
            if fit.method not in M.PER_COLUMN:
                continue
            i = index[name]
            p = self.params(name, overrides)
            x = _float_values(arrays[i], name)
            if rows is None:
                y = p.inverse(x) if inverse else p.apply(x)
            else:
                if lost is not None and lost.all():  # no row of a fitted group (say, none was fitted)
                    y = x.copy()  # what the unseen-group policy below leaves of it
                else:
                    pg = self.params(name, overrides, grouped=True).take(np.maximum(rows, 0))
                    y = pg.inverse(x) if inverse else pg.apply(x)
                if lost is not None and output.unseen_group == "global":
                    y[lost] = (p.inverse if inverse else p.apply)(x[lost])
                elif lost is not None and output.unseen_group == "passthrough":
                    y[lost] = x[lost]
            nulls = null_rows
            if not inverse and p.fill is not None and arrays[i].null_count:
                # a null left unfilled (an unseen group's passed through, or of a column or group
                # fitted on no value) stays null
                unfilled = ~validity(arrays[i]) & np.isnan(y)
                nulls = unfilled if nulls is None else nulls | unfilled
            arrays[i] = _to_arrow(y, arrays[i], inverse or p.fill is None, output, nulls)
        for row in self.rows:
            idx = [index[c] for c in row.columns]
            x = np.column_stack([_float_values(arrays[i], c) for c, i in zip(row.columns, idx)])
            y = M.row_apply(row.method, x, row.options)
            for j, i in enumerate(idx):
                arrays[i] = _to_arrow(np.ascontiguousarray(y[:, j]), arrays[i], True, output)
        # every field as the input declares it (nullability, metadata), a mapped one with its new
        # type and nullable (an unseen group may give null); the schema's metadata kept too
        fields = [f if a is b else f.with_type(a.type).with_nullable(True)
                  for f, a, b in zip(batch.schema, arrays, read)]
        metadata = with_pandas_types(batch.schema.metadata, {f.name: f.type for f, a, b in zip(fields, arrays, read)
                                                             if a is not b})
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata))


def with_pandas_types(metadata: Mapping[bytes, bytes] | None, changed: Mapping[str, pa.DataType]
                      ) -> Mapping[bytes, bytes] | None:
    """Schema ``metadata`` with pandas' note of the ``changed`` columns' types brought up to date
    (float64 or float32): pandas reads a table back by that note, and would cast normalized
    floats back to the integer type the column had."""
    note = _pandas_note(metadata)
    if note is None or not changed:
        return metadata
    import json

    columns = note.get("columns")
    for column in columns if isinstance(columns, list) else []:
        kind = changed.get(column.get("field_name")) if isinstance(column, dict) else None
        if kind is not None:
            name = "float32" if kind == pa.float32() else "float64"
            column.update(pandas_type=name, numpy_type=name, metadata=None)
    return {**metadata, b"pandas": json.dumps(note).encode()}


def pandas_index_columns(metadata: Mapping[bytes, bytes] | None) -> list[str]:
    """The columns pandas' schema note marks as a stored index (``__index_level_0__``, a named
    index): a row label, not a feature."""
    note = _pandas_note(metadata)
    index = note.get("index_columns", []) if note is not None else []
    return [c for c in index if isinstance(c, str)] if isinstance(index, list) else []  # a RangeIndex is no column


def _pandas_note(metadata: Mapping[bytes, bytes] | None) -> dict | None:
    """pandas' note in Arrow schema ``metadata`` (``b"pandas"``), None without one or with one
    that is not the JSON object pandas writes."""
    if not metadata or b"pandas" not in metadata:
        return None
    import json

    try:
        note = json.loads(metadata[b"pandas"])
    except ValueError:
        return None
    return note if isinstance(note, dict) else None


def merge_stats(a: Stats, b: Stats) -> Stats:
    """``a`` and ``b`` merged column by column (and group by group); both must fit the same way."""
    if set(a.columns) != set(b.columns):  # in any order: the merged file keeps a's
        only = sorted(set(a.columns) ^ set(b.columns))
        raise StatsFileError(f"cannot merge: the files fit different columns ({', '.join(only)})")
    for name, fa in a.columns.items():
        fb = b.columns[name]
        if (fa.method, fa.options) != (fb.method, fb.options):
            raise StatsFileError(f"cannot merge: column '{name}' {_fit_difference(fa, fb)}")
        if (fa.stats.sketch is None) != (fb.stats.sketch is None):
            # the merged sketch would describe one file's values only (and check would see drift)
            raise StatsFileError(f"cannot merge: column '{name}' has a quantile sketch in one file only "
                                 "(fit both with --sketch, or neither)")
        if fa.stats.sketch is not None and fa.stats.sketch.k != fb.stats.sketch.k:
            # the merged sketch would keep the larger k's name with the smaller one's accuracy
            raise StatsFileError(f"cannot merge: column '{name}' was fitted with --sketch-k {fa.stats.sketch.k} "
                                 f"in one file and {fb.stats.sketch.k} in the other")
    if [(r.method, r.columns, r.options) for r in a.rows] != [(r.method, r.columns, r.options) for r in b.rows]:
        raise StatsFileError("cannot merge: the files have different row-wise methods")
    if a.group_by != b.group_by:
        raise StatsFileError(f"cannot merge: the files are grouped by {a.group_by or 'nothing'} "
                             f"and {b.group_by or 'nothing'}")
    cols = {n: f.stats.merge(b.columns[n].stats) for n, f in a.columns.items()}
    groups = None if a.groups is None or b.groups is None else a.groups.merge(b.groups)
    inputs = list(a.info.get("inputs", [])) + list(b.info.get("inputs", []))
    info = {**a.info, "inputs": inputs, "rows": a.info.get("rows", 0) + b.info.get("rows", 0)}
    info.pop("created", None)
    # finished as a fit of all the data is: moments that overflow together, a constant column
    # with --constant error, a range too wide for float64
    return plan_from_stats(a).finish(Partial(cols, groups), info)


def _fit_difference(a: ColumnFit, b: ColumnFit) -> str:
    """How two fits of one column differ, in the stats file's terms: the method, or each option."""
    import json

    if a.method != b.method:
        return f"is fitted as {a.method} in one file and {b.method} in the other"
    keys = [k for k in {**a.options, **b.options} if a.options.get(k) != b.options.get(k)]

    def shown(options: Mapping[str, Any]) -> str:
        return ", ".join(f"{k} {json.dumps(options.get(k))}" for k in keys)

    return f"is fitted with options {shown(a.options)} in one file and {shown(b.options)} in the other"


def _float_values(arr: pa.Array | pa.ChunkedArray, name: str) -> np.ndarray:
    """float64 NumPy values of the Arrow column ``name``, NaN where null (zero-copy without nulls).

    Read straight from the Arrow buffers: ``to_numpy(zero_copy_only=False)``, ``pa.array`` and
    ``pa.scalar`` go through pandas, which costs an import of ~0.3 s and 40 MB per process.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):  # a pandas Categorical: its values, as a file holds them
        arr = arr.dictionary_decode()
    if pa.types.is_integer(arr.type) or arr.type == pa.float32():
        # integers beyond 2**53 round to the nearest double, as the file readers do (a safe cast refuses them)
        arr = numbers_as_float64(arr)
    elif pa.types.is_decimal(arr.type):
        arr = decimals_as_float64(arr)
    elif pa.types.is_boolean(arr.type) or isinstance(arr.type, pa.ExtensionType):
        # castable (True is 1.0, a pandas Period its ordinal), but not numbers: fit refuses them too
        raise DataError(f"cannot read column '{name}' as numbers: it holds {arr.type} values")
    elif arr.type != pa.float64():
        try:
            arr = arr.cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if not is_text(arr.type):
                raise DataError(f"cannot read column '{name}' as numbers: it holds {arr.type} values") from None
            row = first_bad_float(arr)
            raise RowError(f"column '{name}': value {_shown(str(arr[row].as_py()))}", " is not a number", row) from None
    if len(arr) == 0:
        return np.empty(0, dtype=np.float64)
    values = float64_values(arr)
    if arr.null_count:
        values = np.where(validity(arr), values, np.nan)
    return values


def _to_arrow(y: np.ndarray, like: pa.Array, keep_nulls: bool, output: OutputOptions,
              nulls: np.ndarray | None = None) -> pa.Array:
    """``y`` as an Arrow array of the output type carrying ``like``'s nulls (when ``keep_nulls``)
    and null where ``nulls`` is True (NaN elsewhere stays NaN), rounded to the output's decimals."""
    if isinstance(like, pa.ChunkedArray):
        like = like.combine_chunks()
    if output.decimals is not None:
        rounded = np.round(y, output.decimals)
        if output.decimals > 0:
            # from 2^52 a double holds no fraction to round, and y * 10^N could overflow to inf
            rounded = np.where(np.abs(y) < 2.0 ** 52, rounded, y)
        y = rounded
    if output.dtype == "float32":
        y = y.astype(np.float32)
    kind = output.arrow_type
    if nulls is None and (not keep_nulls or like.null_count == 0):
        return from_values(y, kind)
    if nulls is None and like.offset == 0 and like.buffers()[0] is not None:
        return pa.Array.from_buffers(kind, len(y), [like.buffers()[0], pa.py_buffer(y)],
                                     null_count=like.null_count)
    valid = ~nulls if nulls is not None else np.ones(len(y), dtype=bool)
    if keep_nulls and like.null_count:
        valid &= validity(like)
    return from_values(y, kind, valid)
