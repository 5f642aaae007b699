"""scikit-learn: a fitted ``ColumnTransformer`` from the stats, and stats from fitted scalers.

Each per-column method becomes its scaler (``StandardScaler``, ``MinMaxScaler``, ``MaxAbsScaler``,
``RobustScaler``) over that one column, each ``l1``/``l2``/``max`` row method a ``Normalizer``
over its columns, in fitted order; other columns listed in ``columns`` pass through (the
remainder, after them). ``layer`` has no scikit-learn estimator and is refused, as are the
options scikit-learn cannot express (zscore gamma/beta/clip, fill-missing, ``--constant zero``).
scikit-learn keeps the mean as one double: the ``mean_lo`` remainder is dropped, which matters only
for data with a huge offset (1e9 + noise).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from normcli import methods as M
from normcli.errors import UsageError
from normcli.exports import check_ungrouped, options_checked, require, require_stats
from normcli.model import ColumnFit, RowFit, Stats, as_names
from normcli.stats import ColumnStats

NORMS = ("l1", "l2", "max")


@options_checked
def to_sklearn(stats: Stats, columns: Sequence[str] | None = None) -> Any:
    """A fitted ``ColumnTransformer`` whose ``transform`` of a DataFrame equals ``stats.transform``.

    ``columns`` lists every input column (default: the fitted ones); those not fitted pass through.
    The output is a DataFrame (``set_output(transform="pandas")``) with the fitted columns first.
    """
    require("sklearn")
    import pandas as pd
    from sklearn.compose import ColumnTransformer

    require_stats(stats, "to_sklearn")
    check_ungrouped(stats, "sklearn")
    names = as_names(columns) if columns is not None else list(stats.columns)
    known = set(names)
    missing = [c for c in stats.columns if c not in known]
    if missing:
        raise UsageError(f"--columns lacks the fitted column '{missing[0]}'")
    steps, fitted = [], {}
    for i, (name, fit) in enumerate(stats.columns.items()):
        if fit.method in M.PER_COLUMN:
            step = f"{fit.method}_{i}"
            est, attrs = _scaler(fit, stats.params(name))
            steps.append((step, est, [name]))
            fitted[step] = attrs
    for i, row in enumerate(stats.rows):
        if row.method not in NORMS:
            raise UsageError(f"{row.method} has no scikit-learn equivalent (export it to torch or onnx)")
        steps.append((f"{row.method}_rows_{i}", _estimator("Normalizer", norm=row.method), list(row.columns)))
    ct = ColumnTransformer(steps, remainder="passthrough", verbose_feature_names_out=False)
    ct.fit(pd.DataFrame({c: [0.0, 1.0] for c in names}))
    for step, attrs in fitted.items():
        for key, value in attrs.items():
            setattr(ct.named_transformers_[step], key, value)
    return ct.set_output(transform="pandas")


def _estimator(kind: str, **params: Any) -> Any:
    import sklearn.preprocessing as P

    return getattr(P, kind)(**params)


def _scaler(fit: ColumnFit, p: M.Affine) -> tuple[Any, dict[str, Any]]:
    """The unfitted scaler for one column and the fitted attributes that reproduce ``p``."""
    o, st = fit.options, fit.stats
    if p.fill is not None or p.const_zero:
        raise UsageError(f"column '{fit.name}': fill-missing and --constant zero have no scikit-learn equivalent")
    if fit.method == "zscore" and p.center == 0 and p.scale == 1 and st.count and st.mean != 0 \
            and fit.options.get("constant") == "passthrough":
        # a StandardScaler passes x through only with mean_ 0, which partial_fit would then merge
        # as the column's mean
        raise UsageError(f"column '{fit.name}': --constant passthrough of a constant column has no "
                         "scikit-learn equivalent")
    if fit.method != "minmax" and p.clip is not None:
        raise UsageError(f"column '{fit.name}': --clip-sigma has no scikit-learn equivalent")
    one = lambda v: np.array([float(v)])  # noqa: E731
    n = st.count
    if fit.method == "zscore":
        if (p.gain, p.offset) != (1.0, 0.0):
            raise UsageError(f"column '{fit.name}': zscore gamma/beta have no scikit-learn equivalent")
        # var_ is the population variance, what StandardScaler.partial_fit merges with (and takes
        # n_samples_seen_ as a NumPy integer); scale_ the scale applied (ddof, eps and the
        # constant-column rule included)
        return _estimator("StandardScaler"), {"mean_": one(p.center), "scale_": one(p.scale),
                                              "var_": one(st.var(0)), "n_samples_seen_": np.int64(n)}
    if fit.method == "minmax":
        scale = p.gain / p.scale
        return _estimator("MinMaxScaler", feature_range=tuple(o["range"]), clip=bool(o["clip"])), {
            "scale_": one(scale), "min_": one(p.offset - p.center * scale), "data_min_": one(st.min),
            "data_max_": one(st.max), "data_range_": one(st.max - st.min), "n_samples_seen_": n}
    if fit.method == "maxabs":
        return _estimator("MaxAbsScaler"), {"scale_": one(p.scale), "max_abs_": one(p.scale), "n_samples_seen_": n}
    return _estimator("RobustScaler", quantile_range=tuple(o["quantile_range"])), {
        "center_": one(p.center), "scale_": one(p.scale)}


@options_checked
def from_sklearn(estimator: Any, columns: Sequence[str] | None = None) -> Stats:
    """Stats from a fitted scaler, ``Normalizer`` or ``ColumnTransformer`` of them.

    ``columns`` names the estimator's input columns in order; it may be omitted when the
    estimator was fitted on a DataFrame (``feature_names_in_``). ``StandardScaler`` keeps its
    mergeable moments (``n_samples_seen_``, ``mean_``, ``var_`` as count, mean and M2) and
    transforms with its own ``scale_``: as a zscore of ddof 0 or 1 when that reproduces
    ``scale_``, else with ``scale_`` as a fixed scale (an ``--eps``, say), which cannot be merged.
    One whose ``n_samples_seen_`` is a sum of ``sample_weight``, not a count (not a whole number
    above 0, or 1 with ``var_`` > 0), has none: its ``mean_`` and ``scale_`` become a fixed centre
    and scale without moments, as do those fitted ``with_mean=False`` (centre 0) or
    ``with_std=False`` (scale 1). ``MinMaxScaler`` keeps its count, min and max; ``MaxAbsScaler``
    and ``RobustScaler`` carry a fixed scale (and centre) instead.
    """
    require("sklearn")
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except (NotFittedError, TypeError) as exc:  # TypeError: not an estimator at all
        raise UsageError(f"the {type(estimator).__name__} is not a fitted scikit-learn estimator: "
                         "fit it first") from exc
    names = as_names(columns) if columns is not None else _feature_names(estimator)
    twice = next((c for i, c in enumerate(names) if c in names[:i]), None)
    if twice is not None:  # one name for two of the estimator's columns: which statistics are its?
        raise UsageError(f"column '{twice}' is named twice in --columns")
    parts = _parts(estimator, names)
    cols: dict[str, ColumnFit] = {}
    rows: list[RowFit] = []
    n_rows = 0
    for est, cnames in parts:
        kind = type(est).__name__
        if kind == "Normalizer":
            rows.append(RowFit(est.norm, list(cnames), {}))
            # it keeps no statistics: none are known, not even that no value was missing
            cols.update({c: ColumnFit(c, est.norm, {}, ColumnStats(nulls=None)) for c in cnames})
            continue
        for j, c in enumerate(cnames):
            cols[c] = _column(kind, est, j, c)
            n_rows = max(n_rows, cols[c].stats.count)
    if not cols:
        raise UsageError("the estimator scales no columns")
    info = {"inputs": [{"path": f"<scikit-learn {type(estimator).__name__}>", "rows": n_rows, "bytes": None}],
            "rows": n_rows}
    return Stats(cols, rows, info)


def _feature_names(estimator: Any) -> list[str]:
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        raise UsageError("the estimator was not fitted on a DataFrame: name its input columns (--columns)")
    return [str(n) for n in names]


def _parts(estimator: Any, names: list[str]) -> list[tuple[Any, list[str]]]:
    """(fitted scaler, its column names) pairs of a scaler or ColumnTransformer."""
    _check_width(estimator, len(names))
    if type(estimator).__name__ != "ColumnTransformer":
        return [(estimator, names)]
    # a step that picks its columns by name picks them among feature_names_in_: named as
    # ``names`` says at the same places (the identity unless --columns renames them)
    fitted_names = [str(n) for n in getattr(estimator, "feature_names_in_", [])]
    out = []
    for _, est, cols in estimator.transformers_:
        if isinstance(est, str) or _is_identity(est):  # "drop" or "passthrough"
            continue
        if not _all_str(cols):
            picked = [names[i] for i in np.arange(len(names))[cols]]
        else:
            picked = [names[fitted_names.index(c)] if c in fitted_names else c for c in cols]
        out.append((est, picked))
    seen: set[str] = set()
    for _, picked in out:
        twice = next((c for c in picked if c in seen), None)
        if twice is not None:  # scikit-learn outputs it once per step; a stats file holds one method per column
            raise UsageError(f"column '{twice}' is scaled by two steps of the ColumnTransformer; "
                             "a stats file holds one method per column")
        seen.update(picked)
    return out


def _is_identity(est: Any) -> bool:
    """A passthrough step (scikit-learn stores a fitted remainder as an identity FunctionTransformer)."""
    return type(est).__name__ == "FunctionTransformer" and est.func is None and est.inverse_func is None


def _all_str(cols: Any) -> bool:
    return isinstance(cols, (list, tuple, np.ndarray)) and all(isinstance(c, str) for c in cols)


def _check_width(est: Any, k: int) -> None:
    n = getattr(est, "n_features_in_", None)
    if n is not None and n != k:
        raise UsageError(f"the estimator takes {n} columns but {k} names were given")


# Below this a scikit-learn scaler divides by 1 instead (_handle_zeros_in_scale).
_NEAR_ZERO = 10 * float(np.finfo(np.float64).eps)


# The parameters a scaler keeps per column, which normcli imports.
_PARAMETERS = ("mean_", "var_", "scale_", "data_min_", "data_max_", "center_")


def _column(kind: str, est: Any, j: int, name: str) -> ColumnFit:
    """One column of a fitted scaler as a ColumnFit."""
    for attr in _PARAMETERS:
        values = getattr(est, attr, None)
        if values is not None and np.ndim(values) and not math.isfinite(float(values[j])):
            # a column the scaler saw no values of (NaN) or whose values overflowed: a stats file
            # holds only finite numbers
            raise UsageError(f"column '{name}': the {kind}'s {attr} is {float(values[j])}, "
                             "so there is nothing to import (fit the column with normcli)")
    seen = getattr(est, "n_samples_seen_", 0)
    seen = float(seen[j] if np.ndim(seen) else seen)  # scikit-learn may keep a count as a float
    n = int(seen)
    nan = math.nan
    if kind == "StandardScaler":
        if not (est.with_mean and est.with_std):  # x / scale_, x - mean_, or x: a fixed centre and scale
            center = float(est.mean_[j]) if est.with_mean else 0.0
            scale = float(est.scale_[j]) if est.with_std else 1.0
            st = ColumnStats(n if n == seen else 0, None, nan, nan, nan, nan, nan, center=center, scale=scale)
            return ColumnFit(name, "zscore", M.options_for("zscore", {}), st)
        mean, var, scale = float(est.mean_[j]), float(est.var_[j]), float(est.scale_[j])
        if n != seen or n == 0 or (n == 1 and var > 0):
            # fitted with sample_weight: weighted moments and a sum of weights, not a count (one
            # value has no variance)
            st = ColumnStats(nulls=None, center=mean, scale=scale)
            return ColumnFit(name, "zscore", M.options_for("zscore", {}), st)
        return _zscore(name, ColumnStats(n, None, mean, 0.0, var * n, nan, nan), scale)
    if kind == "MinMaxScaler":
        lo, hi = float(est.data_min_[j]), float(est.data_max_[j])
        if hi - lo < _NEAR_ZERO:
            # scikit-learn took the range as 1, treating the column as constant
            # (_handle_zeros_in_scale): as one here, it maps by the same x - min.
            hi = lo
        st = ColumnStats(n, None, nan, nan, nan, lo, hi)
        opts = {"range": [float(v) for v in est.feature_range], "clip": bool(est.clip)}
        return ColumnFit(name, "minmax", M.options_for("minmax", opts), st)
    if kind == "MaxAbsScaler":
        # scale_, not max_abs_: scikit-learn divides by 1 where max_abs_ is below 10 eps
        st = ColumnStats(n, None, nan, nan, nan, nan, nan, scale=float(est.scale_[j]))
        return ColumnFit(name, "maxabs", M.options_for("maxabs", {}), st)
    if kind == "RobustScaler":
        center = float(est.center_[j]) if est.with_centering else 0.0
        scale = float(est.scale_[j]) if est.with_scaling else 1.0
        st = ColumnStats(n, None, nan, nan, nan, nan, nan, center=center, scale=scale)
        opts = {"quantile_range": [float(v) for v in est.quantile_range]}
        return ColumnFit(name, "robust", M.options_for("robust", opts), st)
    raise UsageError(f"cannot import a {kind} (StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, "
                     "Normalizer or a ColumnTransformer of them)")


# Relative difference within which a zscore's scale reproduces scale_: M2 = var_ * n, then
# M2 / (n - ddof) and its square root, round a few times (the ddof 0 and 1 scales of n values
# differ by about 1/(2n), far more than this for any n below 1e14).
_SAME_SCALE = 8 * float(np.finfo(np.float64).eps)


def _zscore(name: str, moments: ColumnStats, scale: float) -> ColumnFit:
    """A StandardScaler's column as zscore: ddof 0, or 1, when that reproduces ``scale`` (the
    column stays mergeable), else ``scale`` carried as a fixed scale beside the moments."""
    for ddof in (0, 1):
        options = M.options_for("zscore", {"ddof": ddof})
        if math.isclose(M.column_params("zscore", moments, options).scale, scale, rel_tol=_SAME_SCALE):
            return ColumnFit(name, "zscore", options, moments)
    return ColumnFit(name, "zscore", M.options_for("zscore", {}), replace(moments, scale=scale))


# What a skops file may hold to be imported: the scalers, their container and NumPy types.
TRUSTED_PREFIXES = ("sklearn.preprocessing.", "sklearn.compose.", "sklearn.pipeline.", "numpy.", "builtins.")


def load_skops(path: str) -> Any:
    """Load a skops file holding only scikit-learn preprocessing types (never unpickles code)."""
    sio = require("skops.io")
    from normcli.statsfile import read_bytes

    data = read_bytes(path, "skops file")
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises several kinds for a damaged file
        raise UsageError(f"'{path}' is not a skops file ({type(exc).__name__}: {exc})") from None
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise UsageError(f"'{path}' holds types normcli does not load: {', '.join(refused)}")
    return sio.loads(data, trusted=untrusted)
