"""The mergeable quantile sketch behind ``robust`` (Apache DataSketches' KLL, float64).

While a sketch has seen no more values than it can hold it keeps them all and quantiles are
exact (linear interpolation between order statistics, as NumPy's and scikit-learn's); beyond
that they are within the sketch's normalized rank error.
"""
from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_K = 200


def new(k: int = DEFAULT_K) -> Any:
    """An empty KLL sketch with accuracy parameter ``k`` (8 to 65535)."""
    from datasketches import kll_doubles_sketch

    return kll_doubles_sketch(k)


def merge(a: Any, b: Any, reuse: bool = False) -> Any:
    """A sketch holding both ``a`` and ``b``: a new one, or with ``reuse`` ``a`` itself, updated;
    ``b`` is left unchanged."""
    out = a if reuse else copy(a)
    out.merge(b)
    return out


def copy(sk: Any) -> Any:
    """An independent copy of ``sk``."""
    from datasketches import kll_doubles_sketch

    return kll_doubles_sketch.deserialize(sk.serialize())


def rank_error(sk: Any) -> float:
    """The normalized rank error bound of ``sk`` (0 while it is exact)."""
    return 0.0 if is_exact(sk) else float(sk.normalized_rank_error(False))


def is_exact(sk: Any) -> bool:
    """True while the sketch still holds every value it was given."""
    return not sk.is_estimation_mode()


def quantile(sk: Any, q: float) -> float:
    """The ``q`` quantile (0 <= q <= 1); exact with linear interpolation while the sketch is."""
    return float(quantiles(sk, (q,))[0])


def quantiles(sk: Any, qs: Sequence[float]) -> np.ndarray:
    """:func:`quantile` of each of ``qs``, the sketch's values read once (NaN for an empty one)."""
    return quantiles_of_many([sk], qs)[:, 0]


def quantiles_of_many(sketches: Sequence[Any], qs: Sequence[float]) -> np.ndarray:
    """:func:`quantiles` of each of ``sketches`` (None or empty: NaN), one row per ``qs`` entry.

    While a sketch is exact, its quantiles are ``np.quantile``'s of its values, to the bit. The
    exact sketches are done together, NumPy's linear interpolation written out over one sort of
    all their values: ``np.quantile`` per sketch costs tens of microseconds a call, which
    thousands of groups turn into seconds.
    """
    out = np.full((len(qs), len(sketches)), np.nan)
    exact, values = [], []
    for i, sk in enumerate(sketches):
        if sk is None or sk.is_empty():
            continue
        if is_exact(sk):
            exact.append(i)
            values.append(items(sk))
        else:
            out[:, i] = [sk.get_quantile(q, True) for q in qs]
    if exact:
        sizes = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
        flat = np.concatenate(values)
        flat = flat[np.lexsort((flat, np.repeat(np.arange(len(sizes)), sizes)))]
        starts = np.cumsum(sizes) - sizes
        for row, q in enumerate(qs):
            out[row, exact] = _sorted_quantile(flat, starts, sizes, float(q))
    return out


def _sorted_quantile(flat: np.ndarray, starts: np.ndarray, sizes: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile of each sorted run ``flat[starts[i]:starts[i] + sizes[i]]``, computed
    step for step as ``np.quantile`` (method "linear") computes it, hence to the same bits."""
    virtual = (sizes - 1) * q
    above = virtual >= sizes - 1
    before = np.floor(virtual).astype(np.int64)
    after = before + 1
    before[above] = after[above] = -1  # NumPy's index of the last value, from which gamma is taken
    gamma = virtual - before
    a = flat[starts + np.where(before < 0, sizes - 1, before)]
    b = flat[starts + np.where(after < 0, sizes - 1, after)]
    with np.errstate(over="ignore", invalid="ignore"):  # between -1e308 and 1e308: inf, quietly
        diff = b - a
        result = a + diff * gamma
        np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5)
    return result


def items(sk: Any) -> np.ndarray:
    """The values ``sk`` retains (every value seen while it is exact), unsorted."""
    return np.fromiter((item for item, _ in sk), dtype=np.float64, count=sk.num_retained)


def pack(value: Any) -> Any:
    """Picklable form of a sketch, a list of sketches (None for none) or None: serialized bytes."""
    if isinstance(value, list):
        return [pack(v) for v in value]
    return None if value is None else bytes(value.serialize())


def unpack(value: Any) -> Any:
    """Inverse of :func:`pack`."""
    from datasketches import kll_doubles_sketch

    if isinstance(value, list):
        return [unpack(v) for v in value]
    return None if value is None else kll_doubles_sketch.deserialize(value)


class PickledSketches:
    """Mixin for a class with a ``sketch`` attribute (a sketch, a list of them, or None): pickle
    carries the sketches as their bytes, e.g. to and from Dask workers."""

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "sketch": pack(self.sketch)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, sketch=unpack(state["sketch"]))


def to_dict(sk: Any) -> dict[str, Any]:
    """JSON form: accuracy, count, rank-error bound and the serialized sketch in base64."""
    return {
        "kind": "kll_doubles",
        "k": int(sk.k),
        "n": int(sk.n),
        "rank_error": rank_error(sk),
        "data": base64.b64encode(sk.serialize()).decode("ascii"),
    }


def from_dict(d: dict[str, Any]) -> Any:
    """Inverse of :func:`to_dict`. Raises ValueError on a damaged sketch."""
    from datasketches import kll_doubles_sketch

    try:
        data = base64.b64decode(d["data"], validate=True)
        check_layout(data)
        sk = kll_doubles_sketch.deserialize(data)
    except Exception as exc:  # the C++ deserializer raises various types on bad bytes
        raise ValueError(f"damaged sketch: {exc}") from None
    if sk.n != d["n"] or sk.k != d["k"]:
        raise ValueError("sketch 'n' or 'k' does not match its data")
    return sk


_KLL_FAMILY, _KLL_M = 15, 8
_POWERS_OF_THREE = [3**i for i in range(31)]


def _level_capacity(k: int, num_levels: int, height: int) -> int:
    """The capacity of level ``height`` of a KLL sketch of ``num_levels`` levels (k (2/3)^depth,
    at least m), computed as DataSketches computes it, in integers."""
    def scaled(k: int, depth: int) -> int:  # round(k (2/3)^depth) for depth <= 30
        return (((2 * k) << depth) // _POWERS_OF_THREE[depth] + 1) >> 1

    depth = num_levels - height - 1
    cap = scaled(k, depth) if depth <= 30 else scaled(scaled(k, depth // 2), depth - depth // 2)
    return max(_KLL_M, cap)


def check_layout(data: bytes) -> None:
    """Raise ValueError unless ``data`` is laid out as a serialized KLL doubles sketch: the
    header's fields, the level offsets and the length agree. DataSketches' deserializer trusts
    them, and reads out of bounds (a crash, not an error) on bytes that lie about them."""
    if len(data) < 8:
        raise ValueError("too short")
    preamble, version, family, flags, m = data[0], data[1], data[2], data[3], data[6]
    k = int.from_bytes(data[4:6], "little")
    if family != _KLL_FAMILY or m != _KLL_M or not 8 <= k <= 65535:
        raise ValueError("not a KLL sketch of doubles (family, k or m)")
    if preamble == 2:  # empty (8 bytes) or of one value (16)
        if (flags & 1 and len(data) == 8) or (flags & 4 and len(data) == 16):
            return
        raise ValueError("an empty or one-value sketch of the wrong length")
    if preamble != 5 or version != 1 or flags & 5 or len(data) < 20:
        raise ValueError("an unknown header")
    num_levels = data[18]
    min_k = int.from_bytes(data[16:18], "little")
    levels_end = 20 + 4 * num_levels
    if not 1 <= num_levels <= 61 or not 8 <= min_k <= k or len(data) < levels_end + 16:
        raise ValueError("an impossible level count or min k")
    levels = [int.from_bytes(data[i:i + 4], "little") for i in range(20, levels_end, 4)]
    capacity = sum(_level_capacity(k, num_levels, h) for h in range(num_levels))
    retained = (len(data) - levels_end - 16) // 8
    if (len(data) - levels_end - 16) % 8 or retained < 1 or levels[0] + retained != capacity \
            or any(b < a for a, b in zip(levels, levels[1:])) or levels[-1] > capacity:
        raise ValueError("level offsets that do not fit its length")
