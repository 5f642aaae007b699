"""The fitted model: which column gets which method, fitted from batches, applied to batches.

:class:`FitPlan` decides (once, from the options and the input's header) what to fit;
:meth:`FitPlan.partial` turns one record batch into mergeable statistics; :class:`Stats` is
the fitted result that transforms and inverts record batches and converts to and from the
stats file's dict form. Nothing here reads or writes files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from normcli import methods as M
from normcli import sketch as _sketch
from normcli.errors import DataError, StatsFileError, UsageError
from normcli.stats import ColumnStats

DEFAULT_METHOD = "zscore"


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


@dataclass
class FitPlan:
    """What to fit: per-column methods and options, row-wise methods, and the sketch size."""

    columns: dict[str, ColumnFit]
    rows: list[RowFit]
    sketch_k: int | None = None
    sketch_all: bool = False  # a quantile sketch for every column, not only robust ones

    @property
    def numeric(self) -> list[str]:
        """The columns to read as float64, in data order."""
        return list(self.columns)

    def partial(self, batch: pa.RecordBatch | pa.Table) -> dict[str, ColumnStats]:
        """Statistics of one batch for every planned column (pure; safe to run in threads)."""
        out = {}
        for name, col in self.columns.items():
            x = _float_values(batch.column(name))
            needs_sketch = self.sketch_k is not None and (col.method == "robust" or self.sketch_all)
            st = ColumnStats.of(x, _sketch.new(self.sketch_k) if needs_sketch else None)
            if st.count and not (np.isfinite(st.min) and np.isfinite(st.max)):
                raise DataError(f"column '{name}' holds an infinite value; fit takes finite numbers only")
            out[name] = st
        return out

    def empty(self) -> dict[str, ColumnStats]:
        """The statistics of no rows, the start of a merge."""
        return {name: ColumnStats() for name in self.columns}

    def finish(self, stats: Mapping[str, ColumnStats], info: dict[str, Any] | None = None) -> Stats:
        """The fitted :class:`Stats` from merged statistics; applies the constant-column policy."""
        cols = {}
        for name, col in self.columns.items():
            st = stats[name]
            if col.method in M.PER_COLUMN and col.options.get("constant") == "error" and st.is_constant():
                raise DataError(f"column '{name}' is constant (--constant error)")
            cols[name] = ColumnFit(name, col.method, col.options, st)
        return Stats(cols, list(self.rows), info or {})


def merge_partials(a: Mapping[str, ColumnStats], b: Mapping[str, ColumnStats]) -> dict[str, ColumnStats]:
    """Column-wise merge of two partial results of the same plan."""
    return {name: a[name].merge(b[name]) for name in a}


def plan_fit(types: Mapping[str, pa.DataType], methods: Sequence[str] = (), *,
             columns: Sequence[str] | None = None, exclude: Sequence[str] = (),
             options: Mapping[str, Any] | None = None, sketch_k: int | None = None,
             sketch_all: bool = False) -> FitPlan:
    """Decide what to fit from the input's column types and the user's method specs.

    ``methods`` holds specs ``NAME`` (the default for every selected column not named
    elsewhere) or ``NAME:col1,col2`` (those columns; for a row-wise method, the columns it
    spans, in order). ``columns`` restricts the default selection, which is every numeric
    column; ``exclude`` removes columns from it. ``options`` are method options (ddof, range,
    eps, ...); each method takes the ones it knows. ``sketch_all`` keeps a quantile sketch of
    every column (for ``check``), not only of the ``robust`` ones.
    """
    options = dict(options or {})
    for name in [*(columns or ()), *exclude]:
        if name not in types:
            raise DataError(f"column '{name}' is not in the input")
    if columns:
        for name in columns:
            if not is_numeric_type(types[name]):
                raise DataError(f"column '{name}' is not numeric (its values read as {types[name]})")
        selected = [c for c in types if c in set(columns)]
    else:
        selected = [c for c, t in types.items() if is_numeric_type(t)]
    selected = [c for c in selected if c not in set(exclude)]

    default, named = DEFAULT_METHOD, []
    bare = [m for m in methods if ":" not in m]
    if len(bare) > 1:
        raise UsageError(f"only one default method may be given, got {', '.join(bare)}")
    if bare:
        default = bare[0]
    for spec in methods:
        if ":" in spec:
            name, _, cols = spec.partition(":")
            named.append((name, [c for c in cols.split(",") if c]))
    for name in [default, *(n for n, _ in named)]:
        if name not in M.METHODS:
            raise UsageError(f"unknown method '{name}' (choose from {', '.join(M.METHODS)})")

    claimed: dict[str, str] = {}
    rows: list[RowFit] = []
    for method, cols in named:
        if not cols:
            raise UsageError(f"--method {method}: names no columns")
        for c in cols:
            if c not in types:
                raise DataError(f"column '{c}' is not in the input")
            if not is_numeric_type(types[c]):
                raise DataError(f"column '{c}' is not numeric (its values read as {types[c]})")
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
        raise DataError("no numeric columns to fit (name them with --columns)")
    for row in rows:
        _check_row_options(row)
    fits = {c: ColumnFit(c, claimed[c], M.options_for(claimed[c], options) if claimed[c] in M.PER_COLUMN else {})
            for c in types if c in claimed}
    needs_sketch = sketch_all or any(f.method == "robust" for f in fits.values())
    return FitPlan(fits, rows, (sketch_k or _sketch.DEFAULT_K) if needs_sketch else None, sketch_all)


def plan_from_stats(stats: Stats) -> FitPlan:
    """The plan that fitted ``stats``: its columns, methods, options and sketches, to fit more data
    the same way (``fit --update``) and merge the result into it."""
    cols = {n: ColumnFit(n, f.method, dict(f.options)) for n, f in stats.columns.items()}
    ks = [f.stats.sketch.k for f in stats.columns.values() if f.stats.sketch is not None]
    sketch_all = any(f.stats.sketch is not None and f.method != "robust" for f in stats.columns.values())
    return FitPlan(cols, [RowFit(r.method, list(r.columns), dict(r.options)) for r in stats.rows],
                   ks[0] if ks else None, sketch_all)


def _check_row_options(row: RowFit) -> None:
    for key in ("gamma", "beta"):
        v = row.options.get(key)
        if v is not None:
            if isinstance(v, (int, float)):
                row.options[key] = [float(v)] * len(row.columns)
            elif len(v) != len(row.columns):
                raise UsageError(f"--{key} has {len(v)} values but {row.method} spans {len(row.columns)} columns")
    if row.method == "layer" and row.options.get("eps_mode") not in M.EPS_MODES:
        raise UsageError(f"--eps-mode must be one of {', '.join(M.EPS_MODES)}")


@dataclass
class Stats:
    """Fitted normalization statistics: apply with :meth:`transform_batch`, undo with :meth:`inverse_batch`."""

    columns: dict[str, ColumnFit]
    rows: list[RowFit] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._params: dict[str, M.Affine] = {}

    @property
    def needed_columns(self) -> list[str]:
        """Every column the stats file normalizes, in fitted order."""
        return list(self.columns)

    def params(self, name: str, overrides: Mapping[str, Any] | None = None) -> M.Affine:
        """The affine map of per-column ``name`` (cached when there are no overrides)."""
        fit = self.columns[name]
        if overrides:
            return M.column_params(fit.method, fit.stats, {**fit.options, **overrides})
        if name not in self._params:
            self._params[name] = M.column_params(fit.method, fit.stats, fit.options)
        return self._params[name]

    def check_columns(self, names: Iterable[str]) -> None:
        """Raise if a fitted column is missing from ``names`` (the input's columns)."""
        have = set(names)
        missing = [c for c in self.columns if c not in have]
        if missing:
            raise StatsFileError(f"column '{missing[0]}' of the stats file is not in the input"
                                 + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))

    def transform_batch(self, batch: pa.RecordBatch, overrides: Mapping[str, Any] | None = None) -> pa.RecordBatch:
        """Normalize the fitted columns of ``batch``; every other column passes through as is."""
        return self._map(batch, inverse=False, overrides=overrides)

    def inverse_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Undo :meth:`transform_batch` for per-column methods."""
        if self.rows:
            methods = ", ".join(sorted({r.method for r in self.rows}))
            raise UsageError(f"row-wise methods ({methods}) cannot be inverted")
        return self._map(batch, inverse=True, overrides=None)

    def transform(self, data: Any, **overrides: Any) -> Any:
        """Normalize ``data`` (a DataFrame or Arrow table), returning the same kind."""
        from normcli import api

        return api.transform(self, data, **overrides)

    def inverse(self, data: Any) -> Any:
        """Undo :meth:`transform` on ``data``."""
        from normcli import api

        return api.transform(self, data, inverse=True)

    def save(self, path: str) -> None:
        """Write the stats file to ``path`` atomically."""
        from normcli import statsfile

        statsfile.save(self, path)

    def to_json(self) -> str:
        """The stats file's text."""
        from normcli import statsfile

        return statsfile.dumps(self)

    def _map(self, batch: pa.RecordBatch, inverse: bool, overrides: Mapping[str, Any] | None) -> pa.RecordBatch:
        self.check_columns(batch.schema.names)
        arrays = list(batch.columns)
        index = {n: i for i, n in enumerate(batch.schema.names)}
        for name, fit in self.columns.items():
            if fit.method not in M.PER_COLUMN:
                continue
            i = index[name]
            p = self.params(name, overrides)
            x = _float_values(arrays[i])
            y = p.inverse(x) if inverse else p.apply(x)
            arrays[i] = _to_arrow(y, arrays[i], keep_nulls=inverse or p.fill is None)
        for row in self.rows:
            idx = [index[c] for c in row.columns]
            x = np.column_stack([_float_values(arrays[i]) for i in idx])
            y = M.row_apply(row.method, x, row.options)
            for j, i in enumerate(idx):
                arrays[i] = _to_arrow(np.ascontiguousarray(y[:, j]), arrays[i], keep_nulls=True)
        schema = pa.schema([pa.field(n, a.type) for n, a in zip(batch.schema.names, arrays)])
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


def merge_stats(a: Stats, b: Stats) -> Stats:
    """``a`` and ``b`` merged column by column; both must fit the same columns the same way."""
    if list(a.columns) != list(b.columns):
        only = sorted(set(a.columns) ^ set(b.columns)) or ["(column order)"]
        raise StatsFileError(f"cannot merge: the files fit different columns ({', '.join(only)})")
    for name, fa in a.columns.items():
        fb = b.columns[name]
        if (fa.method, fa.options) != (fb.method, fb.options):
            raise StatsFileError(f"cannot merge: column '{name}' is fitted as {fa.method} {fa.options} "
                                 f"in one file and {fb.method} {fb.options} in the other")
    if [(r.method, r.columns, r.options) for r in a.rows] != [(r.method, r.columns, r.options) for r in b.rows]:
        raise StatsFileError("cannot merge: the files have different row-wise methods")
    cols = {n: ColumnFit(n, f.method, f.options, f.stats.merge(b.columns[n].stats)) for n, f in a.columns.items()}
    inputs = list(a.info.get("inputs", [])) + list(b.info.get("inputs", []))
    info = {**a.info, "inputs": inputs, "rows": a.info.get("rows", 0) + b.info.get("rows", 0)}
    info.pop("created", None)
    return Stats(cols, list(a.rows), info)


def _float_values(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """float64 NumPy values of an Arrow column, NaN where null (zero-copy when possible)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.float64():
        try:
            arr = pc.cast(arr, pa.float64())
        except pa.ArrowInvalid as exc:
            raise DataError(f"cannot read a column as numbers: {exc}") from None
    return arr.to_numpy(zero_copy_only=False)


def _to_arrow(y: np.ndarray, like: pa.Array, keep_nulls: bool) -> pa.Array:
    """``y`` as a float64 Arrow array carrying ``like``'s nulls (NaN elsewhere stays NaN)."""
    if isinstance(like, pa.ChunkedArray):
        like = like.combine_chunks()
    if not keep_nulls or like.null_count == 0:
        return pa.array(y, type=pa.float64())
    if like.offset == 0 and like.buffers()[0] is not None:
        return pa.Array.from_buffers(pa.float64(), len(y), [like.buffers()[0], pa.py_buffer(y)],
                                     null_count=like.null_count)
    return pa.array(y, type=pa.float64(), mask=like.is_null().to_numpy(zero_copy_only=False))
