"""Drift of new data against fitted statistics: the metrics behind ``normcli check``.

:class:`DriftPlan` is built from a fitted :class:`~normcli.model.Stats`; :meth:`DriftPlan.partial`
turns one record batch into mergeable partial results (in threads), :func:`merge` combines them
in order and :meth:`DriftPlan.report` computes, per fitted column:

- ``mean_shift``: (new mean - fitted mean) / fitted std (population std);
- ``std_ratio``: new std / fitted std;
- ``null_rate_change``: new null rate - fitted null rate (null rate = nulls / rows);
- ``out_of_range``: share of the new non-null values outside the fitted [min, max];
- where the stats file holds a quantile sketch of the column: ``psi``, the population stability
  index over 10 bins cut at the fitted deciles, sum((a - e) * ln(a / e)) with each share floored
  at 1e-4, and ``ks``, the Kolmogorov-Smirnov distance max |F_new - F_fitted| evaluated at every
  value either sketch retains (exact while both sketches hold all their values, else within the
  sum of their rank errors).

Nothing here reads files: batches come in, a plain dict goes out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from normcli import sketch as _sketch
from normcli.model import Stats, _float_values
from normcli.stats import ColumnStats

PSI_BINS = 10
PSI_FLOOR = 1e-4
DEFAULT_THRESHOLDS = {"max_shift": 3.0, "max_null_rate_change": 0.1, "max_psi": 0.25}


@dataclass
class ColumnPartial:
    """What a batch (or several, merged) showed of one column."""

    stats: ColumnStats
    outside: int = 0
    bins: np.ndarray | None = None

    def merge(self, other: ColumnPartial) -> ColumnPartial:
        """Both partials together."""
        bins = None if self.bins is None else self.bins + other.bins
        return ColumnPartial(self.stats.merge(other.stats), self.outside + other.outside, bins)


def merge(a: Mapping[str, ColumnPartial], b: Mapping[str, ColumnPartial]) -> dict[str, ColumnPartial]:
    """Column-wise merge of two partial results of the same plan."""
    return {name: a[name].merge(b[name]) for name in a}


class DriftPlan:
    """The drift measurement of new data against ``stats`` (every fitted column)."""

    def __init__(self, stats: Stats) -> None:
        self.fitted = {name: fit.stats for name, fit in stats.columns.items()}
        self.edges: dict[str, np.ndarray] = {}
        for name, st in self.fitted.items():
            if st.sketch is not None and st.count:
                qs = _sketch.quantiles(st.sketch, [i / PSI_BINS for i in range(1, PSI_BINS)])
                self.edges[name] = np.unique(qs)

    @property
    def numeric(self) -> list[str]:
        """The columns to read, in fitted order."""
        return list(self.fitted)

    def empty(self) -> dict[str, ColumnPartial]:
        """The partial result of no rows."""
        return {name: ColumnPartial(ColumnStats(), 0, self._no_bins(name)) for name in self.fitted}

    def _new_sketch(self, name: str) -> Any:
        sk = self.fitted[name].sketch
        return _sketch.new(sk.k) if sk is not None else None

    def _no_bins(self, name: str) -> np.ndarray | None:
        edges = self.edges.get(name)
        return None if edges is None else np.zeros(len(edges) + 1, dtype=np.int64)

    def partial(self, batch: pa.RecordBatch) -> dict[str, ColumnPartial]:
        """Statistics, out-of-range count and decile-bin counts of one batch (pure, thread-safe)."""
        out = {}
        for name, fitted in self.fitted.items():
            x = _float_values(batch.column(name), name)
            st = ColumnStats.of(x, self._new_sketch(name))
            values = x[~np.isnan(x)] if st.nulls else x
            outside = int(np.count_nonzero((values < fitted.min) | (values > fitted.max))) if fitted.count else 0
            bins = self._no_bins(name)
            if bins is not None:
                bins = np.bincount(np.searchsorted(self.edges[name], values, side="left"),
                                   minlength=len(bins)).astype(np.int64)
            out[name] = ColumnPartial(st, outside, bins)
        return out

    def report(self, acc: Mapping[str, ColumnPartial], thresholds: Mapping[str, float | None] | None = None
               ) -> dict[str, Any]:
        """The drift report: per-column metrics and the reasons a column drifted, strict-JSON-ready
        (an undefined or infinite metric is ``None``). ``drift`` is true when any column drifted."""
        limits = {**DEFAULT_THRESHOLDS, **{k: v for k, v in (thresholds or {}).items() if v is not None}}
        columns = []
        for name, fitted in self.fitted.items():
            metrics = self._metrics(name, fitted, acc[name])
            reasons = _reasons(metrics, limits, _exact_rate_change(fitted, acc[name].stats))
            columns.append({"column": name, **{k: _finite(v) for k, v in metrics.items()}, "drift": reasons})
        rows = max((p.stats.count + p.stats.nulls for p in acc.values()), default=0)
        # a limit of inf (none) is null in strict JSON
        return {"rows": rows, "thresholds": {k: _finite(v) for k, v in limits.items()},
                "drift": any(c["drift"] for c in columns),
                "columns": columns}

    def _metrics(self, name: str, fitted: ColumnStats, part: ColumnPartial) -> dict[str, Any]:
        new = part.stats
        out: dict[str, Any] = {"count": new.count, "nulls": new.nulls, "mean": None, "std": None,
                               "mean_shift": None, "std_ratio": None}
        fit_std = fitted.std(0)
        if new.count and fitted.count:
            infinite = _infinite_mean(new)
            if infinite is None and not (math.isfinite(new.mean) and math.isfinite(new.m2)):
                infinite = math.inf  # finite values whose moments overflow float64 (near 1e308): as far
            if infinite is not None:  # the moments of values with an infinity are NaN
                diff = infinite - (fitted.mean + fitted.mean_lo)
                out["mean"], out["std"] = infinite, math.nan
            else:
                diff = (new.mean - fitted.mean) + (new.mean_lo - fitted.mean_lo)
                out["mean"], out["std"] = new.mean, new.std(0)
            if math.isnan(diff) or math.isnan(fit_std):  # a moment unknown (imported, or overflowed): undefined
                out["mean_shift"] = None
            else:
                out["mean_shift"] = diff / fit_std if fit_std > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
            out["std_ratio"] = out["std"] / fit_std if fit_std > 0 else None
        fit_rate = _null_rate(fitted)
        new_rate = _null_rate(new)
        out["null_rate_fitted"], out["null_rate"] = fit_rate, new_rate
        out["null_rate_change"] = None if fit_rate is None or new_rate is None else new_rate - fit_rate
        # no fitted range (no fitted values, or an imported scaler without min and max): undefined
        ranged = fitted.count and not (math.isnan(fitted.min) or math.isnan(fitted.max))
        out["out_of_range"] = part.outside / new.count if new.count and ranged else None
        out["psi"] = out["ks"] = None
        if part.bins is not None and new.count:
            out["psi"] = psi(_expected_shares(fitted.sketch, self.edges[name]), part.bins / new.count)
            out["ks"] = ks_distance(fitted.sketch, new.sketch)
        return out


def _infinite_mean(st: ColumnStats) -> float | None:
    """The mean of values among which is an infinity: that infinity; None when every value is
    finite. With both signs the mean is undefined but its distance from any number is not:
    ``inf``, so that the shift counts as drift."""
    above, below = st.max == math.inf, st.min == -math.inf
    if not (above or below):
        return None
    return -math.inf if below and not above else math.inf


def _null_rate(st: ColumnStats) -> float | None:
    if st.nulls is None:  # not known (imported statistics): no rate to compare with
        return None
    total = st.count + st.nulls
    return st.nulls / total if total else None


def _expected_shares(sk: Any, edges: np.ndarray) -> np.ndarray:
    cdf = np.array([sk.get_rank(float(e), True) for e in edges] + [1.0])
    if _sketch.is_exact(sk):  # it holds every value: counts, so that shares are the new data's to the bit
        counts = np.rint(cdf * sk.n)
        return np.diff(np.concatenate(([0.0], counts))) / sk.n
    return np.diff(np.concatenate(([0.0], cdf)))


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index sum((a - e) * ln(a / e)) of two share vectors, shares floored at ``floor``."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    a = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_distance(a: Any, b: Any) -> float:
    """Two-sample Kolmogorov-Smirnov distance sup |F_a - F_b| of two quantile sketches.

    Both CDFs are step functions that change only at retained values, so the supremum is taken
    at every value either sketch retains: exact while both sketches hold all their values, else
    within the sum of their rank errors. NaN when either sketch is empty."""
    if a.is_empty() or b.is_empty():
        return math.nan
    at = np.unique(np.concatenate([_sketch.items(a), _sketch.items(b)]))
    fa = np.asarray(a.get_cdf(at, True))[:-1]
    fb = np.asarray(b.get_cdf(at, True))[:-1]
    return float(np.max(np.abs(fa - fb)))


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _exact_rate_change(fitted: ColumnStats, new: ColumnStats) -> Fraction | None:
    """The change of the null rate as an exact fraction of the counts (None where undefined):
    compared with a threshold, 0.4 - 0.3 is 0.1, not 0.10000000000000003."""
    if fitted.nulls is None or new.nulls is None or not (fitted.count + fitted.nulls) or not (new.count + new.nulls):
        return None
    return Fraction(new.nulls, new.count + new.nulls) - Fraction(fitted.nulls, fitted.count + fitted.nulls)


def _reasons(m: Mapping[str, Any], limits: Mapping[str, float], rate_change: Fraction | None) -> list[str]:
    out = []
    if m["mean_shift"] is not None and abs(m["mean_shift"]) > limits["max_shift"]:
        out.append("mean_shift")
    limit = limits["max_null_rate_change"]
    if rate_change is not None and math.isfinite(limit) and abs(rate_change) > Fraction(limit):
        out.append("null_rate_change")
    if m["psi"] is not None and m["psi"] > limits["max_psi"]:
        out.append("psi")
    return out
