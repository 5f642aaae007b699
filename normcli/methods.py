"""The normalization methods: per column (parameters from statistics, apply, inverse) and per row.

Every per-column method is an affine map ``y = (x - center) / scale * gain + offset`` whose
parameters come from a column's :class:`~normcli.stats.ColumnStats` and options; the row-wise
methods need no statistics at all. Nothing here reads files or knows about columns' names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from numbers import Integral, Real
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np

from normcli import sketch as _sketch
from normcli.errors import DataError, UsageError

PER_COLUMN = ("zscore", "minmax", "maxabs", "robust")
PER_ROW = ("layer", "l1", "l2", "max")
METHODS = PER_COLUMN + PER_ROW
CONSTANT_POLICIES = ("scale1", "zero", "passthrough", "error")
EPS_MODES = ("inside", "std")

# Options each method takes, with their defaults. The stats file records them per column.
DEFAULTS: dict[str, dict[str, Any]] = {
    "zscore": {"ddof": 0, "eps": 0.0, "gamma": 1.0, "beta": 0.0, "clip_sigma": None},
    "minmax": {"range": [0.0, 1.0], "clip": False},
    "maxabs": {},
    "robust": {"quantile_range": [25.0, 75.0], "clip_sigma": None},
    "layer": {"eps": 1e-5, "eps_mode": "inside", "gamma": None, "beta": None},
    "l1": {},
    "l2": {},
    "max": {},
}
COMMON_DEFAULTS: dict[str, Any] = {"constant": "scale1", "fill_missing": False}
OPTIONS = tuple(sorted({key for d in (*DEFAULTS.values(), COMMON_DEFAULTS) for key in d}))
_CHOICES = {"constant": CONSTANT_POLICIES, "eps_mode": EPS_MODES}  # the options that are not numbers
_SWITCHES = ("clip", "fill_missing")
_ONE_NUMBER = ("eps", "clip_sigma")  # gamma and beta may be lists (layer: one per column)


def check_options(given: Mapping[str, Any]) -> None:
    """Reject options no method knows and values no method can use, naming the option as the
    command line does (None means not given).

    ``ddof`` is 0 or 1; ``constant`` and ``eps_mode`` one of their choices; ``clip`` and
    ``fill_missing`` true or false; every other value a finite number (or a list of them);
    ``eps`` and ``clip_sigma`` must not be negative; ``range`` needs a < b and
    ``quantile_range`` 0 <= a < b <= 100.
    """
    def flag(key: str) -> str:
        return "--" + key.replace("_", "-")

    for key in given:
        if key not in OPTIONS:
            raise UsageError(f"unknown option '{key}' (options: {', '.join(OPTIONS)})")
    given = {k: plain(v) for k, v in given.items()}  # a 0-d NumPy array is its number
    for key in _ONE_NUMBER:
        if isinstance(given.get(key), list):
            raise UsageError(f"{flag(key)} takes one number, got '{','.join(map(str, given[key]))}'")
    ddof = given.get("ddof")
    if ddof is not None and (isinstance(ddof, (bool, np.bool_)) or not isinstance(ddof, Integral) or ddof not in (0, 1)):
        raise UsageError("--ddof must be 0 or 1")
    for key, choices in _CHOICES.items():
        if given.get(key) is not None and given[key] not in choices:
            raise UsageError(f"{flag(key)} must be one of {', '.join(choices)}")
    for key in _SWITCHES:
        if given.get(key) is not None and not isinstance(given[key], (bool, np.bool_)):
            raise UsageError(f"{flag(key)} takes true or false, got '{given[key]}'")
    for key, value in given.items():
        if value is None or key in _CHOICES or key in _SWITCHES:
            continue
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        if not all(isinstance(v, Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v) for v in values):
            shown = ",".join(map(str, values))
            kind = "" if all(isinstance(v, Real) for v in values) else " (not a number type)"  # "2" from Python
            raise UsageError(f"{flag(key)} takes finite numbers, got '{shown}'{kind}")
    for key in ("eps", "clip_sigma"):
        if given.get(key) is not None and given[key] < 0:
            raise UsageError(f"{flag(key)} must not be negative")
    for key in ("range", "quantile_range"):
        bounds = given.get(key)
        if bounds is not None and not (isinstance(bounds, (list, tuple, np.ndarray)) and len(bounds) == 2):
            raise UsageError(f"{flag(key)} takes two numbers a,b, got '{bounds}'")
    rng = given.get("range")
    if rng is not None and not rng[0] < rng[1]:
        raise UsageError(f"--range needs a < b, got '{','.join(map(str, rng))}'")
    if rng is not None and not math.isfinite(rng[1] - rng[0]):  # the scale b - a: inf maps values to inf and NaN
        raise UsageError(f"--range needs b - a within the float64 range, got '{','.join(map(str, rng))}'")
    qr = given.get("quantile_range")
    if qr is not None and not 0 <= qr[0] < qr[1] <= 100:
        raise UsageError(f"--quantile-range needs 0 <= a < b <= 100, got '{','.join(map(str, qr))}'")


def takes(method: str) -> set[str]:
    """The options ``method`` reads."""
    return set(DEFAULTS[method]) | (set(COMMON_DEFAULTS) if method in PER_COLUMN else set())


def check_used(methods: Sequence[str], given: Mapping[str, Any], user: str = "this fit") -> None:
    """Refuse a given option (not None) that none of ``methods`` reads: ignored, ``--ddof 1``
    with ``layer`` would quietly fit something other than what was asked (and ``--clip`` at the
    transform of zscore statistics apply something else). ``user`` names who uses ``methods``."""
    for key, value in given.items():
        if value is None or any(key in takes(m) for m in methods):
            continue
        users = [m for m in METHODS if key in takes(m)]
        which = (f"{users[0]}, which {user} does not use" if len(users) == 1
                 else ", ".join(users[:-1]) + f" and {users[-1]}, none of which {user} uses")
        raise UsageError(f"--{key.replace('_', '-')} is an option of {which} (methods: {', '.join(dict.fromkeys(methods))})")


def options_for(method: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The full option set of ``method``: its defaults updated with the ``given`` ones it knows
    (checked by :func:`check_options`)."""
    if method not in DEFAULTS:
        raise UsageError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
    check_options(given)
    out = dict(DEFAULTS[method])
    if method in PER_COLUMN:
        out.update(COMMON_DEFAULTS)
    out.update({k: plain(v) for k, v in given.items() if k in out and v is not None})
    return out


def plain(value: Any) -> Any:
    """``value`` with NumPy scalars as Python ones and tuples as lists, as the stats file holds it."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    return value


@dataclass(frozen=True)
class Affine:
    """``y = (x - center - center_lo) / scale * gain + offset``, optionally clipped and filled.

    ``center``, ``center_lo``, ``scale``, ``fill``, ``const_zero`` and ``keep`` may be arrays
    with one entry per row (per-group statistics; see :meth:`take`). ``const_zero`` marks a
    constant column under the ``zero`` policy: every value maps to 0. ``keep`` marks values
    passed through unchanged (the ``passthrough`` policies).
    """

    center: Any = 0.0
    center_lo: Any = 0.0
    scale: Any = 1.0
    gain: float = 1.0
    offset: float = 0.0
    clip: tuple[float, float] | None = None
    fill: Any = None
    const_zero: Any = False
    keep: Any = False
    #: minmax's range end b, for ``gain = b - a`` and ``offset = a``: then the map is taken from
    #: the nearer end, so that the fitted min and max map to a and b exactly and the values
    #: between them stay within [a, b] (a + 1 * (b - a) can round past b)
    upper: float | None = None

    @cached_property
    def _uses(self) -> tuple[bool, bool, bool]:
        """Whether ``center_lo``, ``const_zero`` and ``keep`` do anything (tested once, not per batch)."""
        return bool(np.any(self.center_lo)), bool(np.any(self.const_zero)), bool(np.any(self.keep))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalize ``x`` (float64, NaN as null) into a new array."""
        uses_lo, uses_zero, uses_keep = self._uses
        y = np.subtract(x, self.center)
        if uses_lo:
            y -= self.center_lo
        y /= self.scale
        if self.upper is not None:
            with np.errstate(invalid="ignore"):  # NaN compares false either way
                y = np.where(y < 0.5, y * self.gain + self.offset, self.upper - (1.0 - y) * self.gain)
        else:
            if self.gain != 1.0:
                y *= self.gain
            if self.offset != 0.0:
                y += self.offset
        if uses_zero:
            y = np.where(np.isnan(x), np.nan, np.where(self.const_zero, 0.0, y))
        if self.clip is not None:
            np.clip(y, self.clip[0], self.clip[1], out=y)
        if uses_keep:
            y = np.where(self.keep, x, y)
        if self.fill is not None:
            missing = np.isnan(y)
            y[missing] = self.fill[missing] if np.ndim(self.fill) else self.fill
        return y

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply`. What it lost comes back as the nearest it can: a clipped value as
        its bound's original, a filled null as the centre, a value under the ``zero`` policy as
        the constant fitted (the centre)."""
        x = np.subtract(y, self.offset) if self.offset != 0.0 else np.array(y, dtype=np.float64)
        if self.gain != 1.0:
            x /= self.gain
        uses_lo, uses_zero, uses_keep = self._uses
        x *= self.scale
        if uses_lo:
            x += self.center_lo
        x += _signed_zero(self.center)
        if uses_zero:  # 0 stood for the constant, whatever gain and offset would make of it
            x = np.where(self.const_zero & ~np.isnan(y), np.add(self.center, self.center_lo), x)
        if uses_keep:
            x = np.where(self.keep, y, x)
        return x

    def take(self, index: np.ndarray) -> Affine:
        """The per-row map for rows whose group is ``index`` (this map's fields hold one entry per group)."""
        def at(v: Any) -> Any:
            return np.asarray(v)[index] if np.ndim(v) else v

        return replace(self, center=at(self.center), center_lo=at(self.center_lo), scale=at(self.scale),
                       fill=None if self.fill is None else at(self.fill),
                       const_zero=at(self.const_zero), keep=at(self.keep))


def _signed_zero(center: Any) -> Any:
    """``center`` with a zero as -0.0: x + -0.0 is x for every x, where -0.0 + 0.0 is +0.0 (an
    inverse through a zero centre, maxabs or the identity, would lose the sign of a -0.0)."""
    if np.ndim(center):
        return np.where(center == 0.0, -0.0, center)
    return center if center != 0.0 else -0.0


def _scalar(v: Any) -> Any:
    """Python scalars for 0-d results, so an ungrouped map holds plain floats."""
    return v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v


def scale_overflows(method: str, stats: Any, options: Mapping[str, Any]) -> Any:
    """Whether the scale of ``method`` fitted to ``stats`` is beyond float64 (max - min or the
    IQR of values near +-1.8e308): no constant policy can stand in for it. One bool, or one per group."""
    with np.errstate(over="ignore", invalid="ignore"):
        scale = _fitted_map(method, stats, options)[2]
        return _scalar(np.isinf(scale) & (np.asarray(stats.count) > 0))  # no values: -inf - inf, not a span


def degenerate(method: str, stats: Any, options: Mapping[str, Any]) -> Any:
    """Whether the scale of per-column ``method`` fitted to ``stats`` is unusable (zero or not
    finite), so that the ``constant`` policy decides the output: a constant column for zscore and
    minmax, an all-zero one for maxabs, a zero IQR for robust. One bool, or one per group."""
    return _scalar(_fitted_map(method, stats, options)[-1])


def _fitted_map(method: str, stats: Any, options: Mapping[str, Any]) -> tuple:
    """Centre, low part of the centre, scale, gain, offset, clip and degeneracy of ``method``."""
    clip = None
    if method == "zscore":
        center, center_lo = stats.mean, stats.mean_lo
        if getattr(stats, "center", None) is not None:  # an imported StandardScaler without counts
            center, center_lo = stats.center, 0.0
        fixed = getattr(stats, "scale", None)  # an imported StandardScaler's scale_ (see from_sklearn)
        scale = np.sqrt(stats.var(options["ddof"]) + options["eps"]) if fixed is None else fixed
        constant = stats.is_constant()
        gain, offset = float(options["gamma"]), float(options["beta"])
        if options.get("clip_sigma"):
            s = float(options["clip_sigma"])
            clip = (offset - s * abs(gain), offset + s * abs(gain))
    elif method == "minmax":
        a, b = (float(v) for v in options["range"])
        with np.errstate(over="ignore"):  # inf: refused at fit (scale_overflows)
            center, center_lo, scale = stats.min, 0.0, np.subtract(stats.max, stats.min)
        constant = stats.is_constant()
        gain, offset = b - a, a
        if options.get("clip"):
            clip = (a, b)
    elif method == "maxabs":
        fixed = getattr(stats, "scale", None)  # an imported MaxAbsScaler carries its scale
        scale = stats.maxabs if fixed is None else fixed
        center, center_lo, gain, offset = 0.0, 0.0, 1.0, 0.0
        constant = np.equal(scale, 0.0)  # a constant non-zero column has a perfectly good max-abs
    elif method == "robust":
        fixed = getattr(stats, "scale", None)
        if fixed is not None:  # imported: a fixed centre and scale instead of a sketch
            center, center_lo, scale = stats.center or 0.0, 0.0, fixed
        else:
            (center, scale), center_lo = robust_center_scale(stats, options), 0.0
        constant = np.equal(scale, 0.0)  # like scikit-learn: only a zero IQR is degenerate
        gain, offset = 1.0, 0.0
        if options.get("clip_sigma"):
            clip = (-float(options["clip_sigma"]), float(options["clip_sigma"]))
    else:
        raise UsageError(f"'{method}' is not a per-column method")
    with np.errstate(invalid="ignore"):
        degenerate = constant | (scale == 0.0) | ~np.isfinite(scale)
    return center, center_lo, scale, gain, offset, clip, degenerate


def column_params(method: str, stats: Any, options: Mapping[str, Any]) -> Affine:
    """The affine map of a per-column ``method`` fitted to ``stats`` with ``options``.

    ``stats`` is a :class:`~normcli.stats.ColumnStats`, or a
    :class:`~normcli.groups.GroupStats` for a map with one entry per group.
    """
    policy = options.get("constant", "scale1")
    center, center_lo, scale, gain, offset, clip, degenerate = _fitted_map(method, stats, options)
    empty = np.equal(stats.count, 0) & (getattr(stats, "scale", None) is None)
    center, center_lo = np.where(empty, 0.0, center), np.where(empty, 0.0, center_lo)
    scale = np.where(degenerate, 1.0, scale)
    keep = degenerate & (policy == "passthrough")
    const_zero = degenerate & (policy == "zero")
    upper = None
    if method == "minmax" and (gain, offset) != (1.0, 0.0):  # in [0, 1] the ends are exact as they are
        upper = float(options["range"][1])
    fill = None
    if options.get("fill_missing"):
        # the normalized centre: the mean for minmax and maxabs, else the map's own centre (so 0,
        # or beta); its deviation from the map's centre is taken with both low parts, exactly
        if method in ("minmax", "maxabs"):
            hi, lo = np.where(empty, 0.0, stats.mean), np.where(empty, 0.0, stats.mean_lo)
        else:
            hi, lo = center, center_lo
        deviation = np.atleast_1d(np.subtract(hi, center) + np.subtract(lo, center_lo))
        fill = Affine(0.0, 0.0, scale, gain, offset, clip, upper=upper).apply(deviation).reshape(np.shape(hi))
        # NaN, no fill: a column (or group) fitted on no value has no centre to fill with
        fill = _scalar(np.where(empty, np.nan, np.where(const_zero, 0.0, np.where(keep, hi, fill))))
    if np.ndim(keep) == 0 and keep:  # one column left as it is: the identity, plainly
        return Affine(fill=fill)
    return Affine(_scalar(center), _scalar(center_lo), _scalar(scale), gain, offset, clip, fill,
                  _scalar(const_zero), _scalar(keep), upper)


def robust_center_scale(stats: Any, options: Mapping[str, Any]) -> tuple[Any, Any]:
    """The median and the ``quantile_range`` spread (the IQR by default) that robust reads from
    the sketch of ``stats``, before any constant policy: floats, or arrays for a
    :class:`~normcli.groups.GroupStats`."""
    q_lo, q_hi = (float(v) / 100.0 for v in options["quantile_range"])
    center, low, high = _quantiles(stats, (0.5, q_lo, q_hi))
    with np.errstate(over="ignore"):  # inf: refused at fit (scale_overflows)
        return center, high - low


def _quantiles(stats: Any, qs: Sequence[float]) -> Any:
    """The ``qs`` quantiles of a column (floats) or of every group (arrays), the sketches read once.

    The 0 and 1 quantiles are the exact minimum and maximum the statistics hold (a sketch past
    its exact range estimates them within its rank error)."""
    if hasattr(stats, "quantiles"):
        found = stats.quantiles(qs)
    elif stats.sketch is None:
        raise DataError("robust needs a quantile sketch in the stats file; refit with --method robust")
    else:
        found = [float(v) for v in _sketch.quantiles(stats.sketch, qs)]
    ends = {0.0: stats.min, 1.0: stats.max}
    return tuple(_scalar(np.where(np.asarray(stats.count) > 0, ends[q], v)) if q in ends else v
                 for q, v in zip(qs, found))


_SAFE = 2.0 ** 400  # a row whose largest magnitude is within 2**+-400 has squares and sums float64 holds


def _row_scales(x: np.ndarray, tiny: bool) -> np.ndarray | None:
    """Per-row powers of two that bring each row's largest finite magnitude into [1, 2), for the
    rows beyond 2**400 (their squares or sums would overflow) and, with ``tiny``, those under
    2**-400 (their squares would underflow); 1 for every other row. None when no row needs one.

    Row-wise methods are scale-free, and dividing by a power of two is exact, so a scaled row
    gives the very bits the formula gives wherever float64 holds its steps."""
    with np.errstate(invalid="ignore"):
        m = np.fmax.reduce(np.abs(x), axis=1, keepdims=True)  # NaN only for a row of nulls
    need = (m > _SAFE) & np.isfinite(m)
    if tiny:
        need |= (m < 1.0 / _SAFE) & (m > 0.0)
    if not need.any():
        return None
    return np.where(need, np.ldexp(1.0, np.frexp(m)[1] - 1), 1.0)


def row_apply(method: str, x: np.ndarray, options: Mapping[str, Any]) -> np.ndarray:
    """Apply the row-wise ``method`` to ``x`` of shape (rows, columns), NaN as null.

    Row statistics are taken over each row's non-null values; nulls stay null. A row of
    magnitudes beyond 2**400 (or, where it matters, under 2**-400) is scaled by a power of two
    first (see :func:`_row_scales`): its squares would overflow float64 (or underflow).
    """
    has_nan = bool(np.isnan(x).any())
    if method == "layer":
        eps = options["eps"]
        scales = _row_scales(x, tiny=eps == 0.0)  # with eps > 0, a tiny row's variance is nothing beside it
        if scales is not None:
            x = x / scales
            with np.errstate(over="ignore", under="ignore"):  # eps beside a row of huge values: 0
                eps = eps / (scales * scales if options["eps_mode"] == "inside" else scales) if eps else 0.0
        if has_nan:  # by hand: nanmean/nanvar warn on all-null rows, which simply stay null
            n = np.sum(~np.isnan(x), axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.nansum(x, axis=1, keepdims=True) / n
                var = np.nansum((x - mean) ** 2, axis=1, keepdims=True) / n
        else:
            mean = np.mean(x, axis=1, keepdims=True)
            var = np.var(x, axis=1, keepdims=True)
        if options["eps_mode"] == "std":
            y = (x - mean) / (np.sqrt(var) + eps)
        else:
            y = (x - mean) / np.sqrt(var + eps)
        if options.get("gamma") is not None:
            y *= np.asarray(options["gamma"], dtype=np.float64)
        if options.get("beta") is not None:
            y += np.asarray(options["beta"], dtype=np.float64)
        return y
    if method in ("l1", "l2"):
        scales = _row_scales(x, tiny=method == "l2")
        x = x if scales is None else x / scales
    ax = np.abs(x)
    if method == "l1":
        norm = (np.nansum if has_nan else np.sum)(ax, axis=1, keepdims=True)
    elif method == "l2":
        norm = np.sqrt((np.nansum if has_nan else np.sum)(x * x, axis=1, keepdims=True))
    elif method == "max":
        norm = np.max(np.where(np.isnan(ax), 0.0, ax) if has_nan else ax, axis=1, keepdims=True)
    else:
        raise UsageError(f"'{method}' is not a row-wise method")
    norm[~(norm > 0)] = 1.0  # zero (or all-null) rows are left as they are, like scikit-learn
    return x / norm
