"""Mergeable sufficient statistics of one numeric column.

Moments are accumulated the numerically stable way: within a batch, two passes over the values
taken relative to the batch's first value (so a column like 1e9 + N(0, 1e-3) loses nothing to
cancellation); across batches, Chan et al.'s pairwise update. The mean is kept as an
unevaluated sum ``mean + mean_lo`` of two float64 (the shift plus the deviations' mean, as the
double nearest that sum and its exact remainder), so the shift survives merging and saving: it is
the reason z-scores of badly offset data come out right to ~1e-13 instead of ~1e-4. The
deviations' mean itself carries float64 rounding, of the order of eps times the data's spread:
``mean`` is not the correctly rounded mean of data whose mean is small against their spread.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from normcli import sketch as _sketch

_EPS = float(np.finfo(np.float64).eps)
# Below this variance (a std of about 1e-146) the squares of deviations near the std are
# subnormal: M2 loses precision, and from a std of about 1e-162 it is 0.
TINY_VAR = 2.0 ** -970


def two_sum(a: float, b: float) -> tuple[float, float]:
    """Return ``(s, e)`` with ``s = fl(a + b)`` and ``a + b == s + e`` exactly (Knuth)."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf in, NaN out: callers check
        s = a + b
        bb = s - a
        return s, (a - (s - bb)) + (b - bb)


def chan_merge(n_a: Any, mean_a: Any, lo_a: Any, m2_a: Any,
               n_b: Any, mean_b: Any, lo_b: Any, m2_b: Any) -> tuple[Any, Any, Any]:
    """Mean (as ``mean + lo``) and M2 of two non-empty parts (Chan, Golub and LeVeque).

    Works elementwise on NumPy arrays as well as on floats; the difference of the means is
    taken on the double-double form so that a large common offset cancels exactly.
    """
    # Values near the float64 limit overflow to inf/NaN here; the fit rejects those (no warning).
    with np.errstate(over="ignore", invalid="ignore"):
        frac = n_b / (n_a + n_b)
        delta = (mean_b - mean_a) + (lo_b - lo_a)
        mean, lo = two_sum(mean_a, lo_a + delta * frac)
        return mean, lo, m2_a + m2_b + delta * delta * (n_a * frac)


def variance(count: Any, m2: Any, ddof: int = 0) -> Any:
    """``m2 / (count - ddof)``, 0 where there are fewer than ``ddof + 1`` values (elementwise)."""
    count = np.asarray(count)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > ddof, m2 / np.maximum(count - ddof, 1), 0.0)


def is_constant(count: Any, mean: Any, mean_lo: Any, m2: Any, lo: Any, hi: Any) -> Any:
    """True where a column (or group) holds one distinct value or none (elementwise).

    scikit-learn's bound ``var <= n*eps*var + (n*mean*eps)**2`` covers the rounding of an
    unshifted accumulation; ours is shifted, so the mean term is measured from the minimum.
    For an exactly constant column M2 is exactly 0. Values that differ with a variance below
    ``TINY_VAR`` are not constant: the bound holds of the exact variance, which M2 can no longer
    give (the values are that small themselves: no rounding of larger ones spreads so little).
    """
    count = np.asarray(count)
    var = variance(count, m2)
    with np.errstate(invalid="ignore", over="ignore"):
        spread = (mean - np.where(count > 0, lo, 0.0)) + mean_lo
        bound = count * _EPS * var + (count * spread * _EPS) ** 2
        return (count == 0) | (hi == lo) | ((var <= bound) & ~(var < TINY_VAR))


@dataclass(frozen=True)
class ColumnStats(_sketch.PickledSketches):
    """Count, nulls, mean, M2 (sum of squared deviations), min and max of one column.

    ``count`` counts the non-null values, ``nulls`` the null or NaN ones. The mean is
    ``mean + mean_lo``, ``mean`` being the float64 nearest that sum. ``sketch`` is an optional
    mergeable quantile sketch (see :mod:`normcli.sketch`), ``None`` when not requested.

    Statistics imported from another library (:func:`normcli.from_sklearn`) may lack some
    fields: an unknown mean, M2, min or max is NaN (null in the stats file). ``center`` and
    ``scale`` are fixed parameters carried instead of a sketch (an imported ``RobustScaler``), a
    max-abs (an imported ``MaxAbsScaler``) or the scale zscore's options give (an imported
    ``StandardScaler`` whose ``scale_`` no ddof reproduces, and its centre too when it has no
    counts); they are not mergeable.
    """

    count: int = 0
    nulls: int | None = 0  # None: unknown (imported from scikit-learn, which does not count them)
    mean: float = 0.0
    mean_lo: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    sketch: Any = field(default=None, compare=False)
    center: float | None = None
    scale: float | None = None

    @classmethod
    def of(cls, values: np.ndarray, sketch: Any = None) -> ColumnStats:
        """Statistics of one batch of float64 values, NaN meaning null.

        ``sketch`` is an empty sketch to fill with the non-null values, or ``None``.
        """
        total = int(values.size)
        if total == 0:
            return cls(sketch=sketch)
        # Ufuncs and methods rather than np.min() or d.mean(), whose Python wrappers cost a
        # quarter of the time on the batch of a 4 MiB piece; the same sums (add.reduce is pairwise).
        lo, hi = float(values.min()), float(values.max())
        if math.isnan(lo):  # NaN propagates through min: only then pay for the mask
            values = values[~np.isnan(values)]
            if values.size == 0:
                return cls(nulls=total, sketch=sketch)
            lo, hi = float(values.min()), float(values.max())
        n = int(values.size)
        shift = float(values[0])
        # inf, or values whose spread overflows float64, give inf/NaN moments that the fit
        # rejects (FitPlan): no RuntimeWarning on stderr.
        with np.errstate(over="ignore", invalid="ignore"):
            d = np.subtract(values, shift)  # exact when values lie within a factor 2 of the shift (Sterbenz)
            dmean = float(np.add.reduce(d)) / n
            np.subtract(d, dmean, out=d)
            np.square(d, out=d)
            m2 = float(np.add.reduce(d))
            mean, mean_lo = two_sum(shift, dmean)
        if sketch is not None:
            # the binding takes only a writable C-contiguous array
            sketch.update(values if values.flags.writeable and values.flags.c_contiguous else values.copy())
        return cls(n, total - n, mean, mean_lo, m2, lo, hi, sketch)

    @classmethod
    def of_rows(cls, values: np.ndarray) -> list[ColumnStats]:
        """:meth:`of` for every row of the C-contiguous 2-D ``values`` (one row per column of a
        batch), without sketches, in a few array operations instead of a few per column.

        Bit for bit what :meth:`of` gives each row: NumPy reduces a contiguous row with the same
        pairwise sum as a 1-D array, and every other step is the same operation elementwise. A
        row holding NaN (a null) goes through :meth:`of`, which drops them.
        """
        k, total = values.shape
        if total == 0:
            return [cls() for _ in range(k)]
        lo, hi = values.min(axis=1), values.max(axis=1)
        clean = ~np.isnan(lo)  # NaN propagates through min
        rows = values[clean] if not clean.all() else values
        shift = rows[:, 0].copy()
        with np.errstate(over="ignore", invalid="ignore"):  # as in of(): the fit rejects inf/NaN moments
            d = np.subtract(rows, shift[:, None])
            dmean = np.add.reduce(d, axis=1) / total
            np.subtract(d, dmean[:, None], out=d)
            np.square(d, out=d)
            m2 = np.add.reduce(d, axis=1)
            mean, mean_lo = two_sum(shift, dmean)
        done = iter(zip(mean.tolist(), mean_lo.tolist(), m2.tolist(), lo[clean].tolist(), hi[clean].tolist()))
        return [cls(total, 0, *next(done)) if ok else cls.of(values[i]) for i, ok in enumerate(clean.tolist())]

    def merge(self, other: ColumnStats) -> ColumnStats:
        """The statistics of both inputs together (Chan, Golub and LeVeque's pairwise update)."""
        if self.scale is not None or other.scale is not None:
            from normcli.errors import StatsFileError

            raise StatsFileError("imported fixed center/scale parameters cannot be merged")
        sketch = _merge_sketches(self.sketch, other.sketch)
        nulls = None if self.nulls is None or other.nulls is None else self.nulls + other.nulls
        if other.count == 0:
            return replace(self, nulls=nulls, sketch=sketch)
        if self.count == 0:
            return replace(other, nulls=nulls, sketch=sketch)
        n = self.count + other.count
        mean, mean_lo, m2 = chan_merge(self.count, self.mean, self.mean_lo, self.m2,
                                       other.count, other.mean, other.mean_lo, other.m2)
        return ColumnStats(n, nulls, mean, mean_lo, m2,
                           _known(min, self.min, other.min), _known(max, self.max, other.max), sketch)

    @classmethod
    def merge_all(cls, a: list[ColumnStats], b: list[ColumnStats]) -> list[ColumnStats]:
        """``[x.merge(y) for x, y in zip(a, b)]``, bit for bit, in array operations where both
        hold values and neither carries a sketch, a fixed scale or an unknown null count."""
        plain = [x.count and y.count and x.sketch is None and y.sketch is None and x.scale is None
                 and y.scale is None and x.nulls is not None and y.nulls is not None for x, y in zip(a, b)]
        pairs = [(x, y) for x, y, ok in zip(a, b, plain) if ok]
        if not pairs:
            return [x.merge(y) for x, y in zip(a, b)]
        fields = ("count", "nulls", "mean", "mean_lo", "m2", "min", "max")
        xa = {f: np.array([getattr(x, f) for x, _ in pairs]) for f in fields}
        ya = {f: np.array([getattr(y, f) for _, y in pairs]) for f in fields}
        mean, mean_lo, m2 = chan_merge(xa["count"], xa["mean"], xa["mean_lo"], xa["m2"],
                                       ya["count"], ya["mean"], ya["mean_lo"], ya["m2"])
        # as _known(min, ...) and _known(max, ...): the first of two equal ends (0.0 and -0.0), NaN if either is
        lo = np.where(np.isnan(xa["min"]) | np.isnan(ya["min"]), np.nan,
                      np.where(ya["min"] < xa["min"], ya["min"], xa["min"]))
        hi = np.where(np.isnan(xa["max"]) | np.isnan(ya["max"]), np.nan,
                      np.where(ya["max"] > xa["max"], ya["max"], xa["max"]))
        merged = iter(zip((xa["count"] + ya["count"]).tolist(), (xa["nulls"] + ya["nulls"]).tolist(),
                          mean.tolist(), mean_lo.tolist(), m2.tolist(), lo.tolist(), hi.tolist()))
        return [cls(*next(merged)) if ok else x.merge(y) for x, y, ok in zip(a, b, plain)]

    def var(self, ddof: int = 0) -> float:
        """Variance with ``ddof`` delta degrees of freedom; 0 when fewer than ``ddof + 1`` values."""
        return float(variance(self.count, self.m2, ddof))

    def std(self, ddof: int = 0) -> float:
        """Standard deviation, ``sqrt(var(ddof))``."""
        return math.sqrt(self.var(ddof))

    @property
    def maxabs(self) -> float:
        """Largest absolute value, 0 for an empty column."""
        return max(abs(self.min), abs(self.max)) if self.count else 0.0

    def is_constant(self) -> bool:
        """True when the column holds one distinct value (or none); see :func:`is_constant`.

        An imported column with a fixed scale is constant when that scale is 0; one that does
        not know its minimum uses scikit-learn's own bound (the mean measured from 0).
        """
        if self.scale is not None:
            return self.scale == 0.0
        lo = 0.0 if math.isnan(self.min) else self.min
        return bool(is_constant(self.count, self.mean, self.mean_lo, self.m2, lo, self.max))

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-ready dict (no NaN or infinity: an empty column has nulls for the floats)."""
        empty = self.count == 0

        def num(v: float) -> float | None:
            return None if empty or math.isnan(v) else v

        out: dict[str, Any] = {
            "count": self.count,
            "nulls": self.nulls,
            "mean": num(self.mean),
            "mean_lo": num(self.mean_lo),
            "m2": num(self.m2),
            "min": num(self.min),
            "max": num(self.max),
        }
        if self.scale is not None:
            out["center"] = self.center
            out["scale"] = self.scale
        if self.sketch is not None:
            from normcli import sketch as _sketch

            out["sketch"] = _sketch.to_dict(self.sketch)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnStats:
        """Inverse of :meth:`to_dict`; ``d`` has been validated against the schema."""
        sk = None
        if d.get("sketch") is not None:
            from normcli import sketch as _sketch

            sk = _sketch.from_dict(d["sketch"])
        fixed = {"center": d.get("center"), "scale": d.get("scale")}
        if d["count"] == 0:
            return cls(nulls=d["nulls"], sketch=sk, **fixed)

        def num(key: str) -> float:
            return math.nan if d.get(key) is None else d[key]

        return cls(d["count"], d["nulls"], num("mean"), num("mean_lo"), num("m2"),
                   num("min"), num("max"), sk, **fixed)


def _known(pick: Any, a: float, b: float) -> float:
    """``pick(a, b)``, or NaN (unknown) when either is unknown."""
    return math.nan if math.isnan(a) or math.isnan(b) else pick(a, b)


def _merge_sketches(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return a if b is None else b
    from normcli import sketch as _sketch

    return _sketch.merge(a, b)
