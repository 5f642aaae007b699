"""Per-group statistics for instance normalization of tables (``--group-by``).

A batch's rows are factorized by their key (the text form of the key columns, a null key being
a group of its own); every statistic of :class:`~normcli.stats.ColumnStats` is then computed for
all groups at once on the rows sorted by group (``reduceat`` over contiguous runs), relative to a
per-group shift, and merged across batches with the same Chan and double-double update, one
array operation per statistic. Only the quantile sketches of ``robust`` need a loop per group.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from normcli import sketch as _sketch
from normcli.errors import DataError
from normcli.stats import ColumnStats, chan_merge, is_constant, two_sum, variance

Key = tuple  # one entry (str or None) per key column


def key_text(column: pa.Array | pa.ChunkedArray, name: str) -> pa.Array:
    """The values of key column ``name`` in their text form (nulls stay null).

    CSV keys arrive as the text read; other types (Parquet, DataFrames) are cast to string,
    so a key compares equal in fit and transform whatever the integer or string type holding it.
    A float key's NaN is a null key (as NaN is null everywhere else, and in a DataFrame's key),
    and its -0.0 is 0.0 (equal numbers: one group, as pandas' groupby has them).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.type == pa.string():
        return column
    if pa.types.is_floating(column.type):
        import pyarrow.compute as pc

        if column.type == pa.float16():  # no compute kernels for it: its values as float32's
            column = column.cast(pa.float32())
        column = pc.add(pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column),
                        pa.scalar(0.0, column.type))  # -0.0 + 0.0 is 0.0
    try:
        return column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"group key column '{name}' of type {column.type} has no text form") from None


@dataclass(frozen=True)
class Factorized:
    """The rows of one batch by group: ``keys[g]`` is group ``g``'s key, ``codes[row]`` its group.

    ``order`` lists the rows sorted by group (stable) and group ``g`` occupies
    ``order[starts[g]:starts[g] + sizes[g]]``; every group has at least one row.
    """

    keys: list[Key]
    codes: np.ndarray

    @cached_property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=len(self.keys)).astype(np.int64)

    @cached_property
    def starts(self) -> np.ndarray:
        starts = np.zeros(len(self.keys), dtype=np.int64)
        np.cumsum(self.sizes[:-1], out=starts[1:])
        return starts

    @cached_property
    def order(self) -> np.ndarray:
        return np.argsort(self.codes, kind="stable")


def factorize(columns: Sequence[pa.Array]) -> Factorized:
    """Group rows by the tuple of their values in ``columns`` (string arrays, see :func:`key_text`)."""
    codes = None
    parts: list[np.ndarray] = []
    dictionaries: list[list[Any]] = []
    for col in columns:
        enc = col.dictionary_encode(null_encoding="encode")
        idx = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        words = enc.dictionary.to_pylist()
        dictionaries.append(words)
        if codes is None:
            codes, parts = idx, [np.arange(len(words))]
            continue
        # combine with the groups so far and renumber densely, keeping each group's parts
        uniq, codes = np.unique(codes * len(words) + idx, return_inverse=True)
        prev, own = np.divmod(uniq, max(len(words), 1))
        parts = [p[prev] for p in parts] + [own]
    assert codes is not None
    codes = codes.reshape(-1)
    keys = list(zip(*[[words[i] for i in p.tolist()] for words, p in zip(dictionaries, parts)]))
    return Factorized(keys, codes)


def describe(names: Sequence[str], key: Key) -> str:
    """A key for messages: ``store='s1', region=null``."""
    return ", ".join(f"{n}={'null' if v is None else repr(v)}" for n, v in zip(names, key))


_FLOATS = ("mean", "mean_lo", "m2", "min", "max")
_FIELDS = ("count", "nulls", *_FLOATS)  # in the order GroupStats takes them


@dataclass(frozen=True)
class Pending:
    """Values of many groups not yet in sketches: group ``g``'s are ``values[starts[g]:starts[g] +
    sizes[g]]``, for sketches of accuracy ``k``."""

    values: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    k: int

    def take(self, index: np.ndarray) -> Pending:
        """The groups at ``index``, none where the index is -1."""
        hit = index >= 0
        starts, sizes = np.zeros(len(index), np.int64), np.zeros(len(index), np.int64)
        starts[hit], sizes[hit] = self.starts[index[hit]], self.sizes[index[hit]]
        return Pending(self.values, starts, sizes, self.k)

    def add_to(self, sketches: list, reuse: bool) -> None:
        """Add each group's values to its sketch in ``sketches`` (aligned with the groups): a new
        sketch where there is none; else the sketch itself with ``reuse``, or a copy of it."""
        for g in np.flatnonzero(self.sizes).tolist():
            start = int(self.starts[g])
            sk = sketches[g]
            if sk is None:
                sk = _sketch.new(self.k)
            elif not reuse:
                sk = _sketch.copy(sk)
            sk.update(self.values[start:start + int(self.sizes[g])])
            sketches[g] = sk


@dataclass(frozen=True)
class GroupStats(_sketch.PickledSketches):
    """:class:`~normcli.stats.ColumnStats` of one column for many groups, as parallel arrays.

    An empty group (no non-null value) has mean 0, M2 0, min +inf and max -inf, like an empty
    ColumnStats. ``sketch`` is a list with one quantile sketch (or None when empty) per group,
    or None when no sketch is kept.

    The statistics of one batch (:meth:`of`) keep a sketched column's values as ``pending``
    instead: a sketch per group and batch would hold about 2 KB each in every batch in flight
    (100k groups: 185 MB a column and batch). They go into sketches when merged.
    """

    count: np.ndarray
    nulls: np.ndarray
    mean: np.ndarray
    mean_lo: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    sketch: list | None = field(default=None, compare=False)
    pending: Pending | None = field(default=None, compare=False, repr=False)
    # quantiles by their qs: a fit asks for the same ones twice (overflow check, constant groups)
    _quantiles: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    @classmethod
    def empty(cls, n: int, sketched: bool = False) -> GroupStats:
        """The statistics of ``n`` groups without any row."""
        zeros = np.zeros(n)
        return cls(np.zeros(n, np.int64), np.zeros(n, np.int64), zeros, zeros.copy(), zeros.copy(),
                   np.full(n, math.inf), np.full(n, -math.inf), [None] * n if sketched else None)

    @classmethod
    def of(cls, values: np.ndarray, groups: Factorized, sketch_k: int | None = None) -> GroupStats:
        """Statistics of float64 ``values`` (NaN meaning null) for every group of ``groups``."""
        n_groups = len(groups.keys)
        if n_groups == 0:
            return cls.empty(0, sketch_k is not None)
        starts, sizes = groups.starts, groups.sizes
        xs = values[groups.order]
        valid = ~np.isnan(xs)
        has_null = not bool(valid.all())
        lo, hi = np.fmin.reduceat(xs, starts), np.fmax.reduceat(xs, starts)  # fmin/fmax skip NaN
        count = np.add.reduceat(valid, starts, dtype=np.int64) if has_null else sizes.copy()
        filled = count > 0
        shift = np.where(filled, lo, 0.0)  # any value of the group will do; its minimum is at hand
        # Overflowing spreads give inf/NaN moments, rejected by the fit without a RuntimeWarning.
        with np.errstate(over="ignore", invalid="ignore"):
            d = xs - np.repeat(shift, sizes)
            if has_null:
                d[~valid] = 0.0
            dmean = np.add.reduceat(d, starts) / np.maximum(count, 1)
            d -= np.repeat(dmean, sizes)
            if has_null:
                d[~valid] = 0.0
            np.square(d, out=d)
            m2 = np.add.reduceat(d, starts)
            mean, mean_lo = two_sum(shift, dmean)
        sketches = pending = None
        if sketch_k is not None:
            sketches = [None] * n_groups
            # the batch's non-null values sorted by group, each group's in row order
            pending = Pending(xs[valid] if has_null else xs, np.cumsum(count) - count, count, sketch_k)
        return cls(count, sizes - count, mean, mean_lo, m2,
                   np.where(filled, lo, math.inf), np.where(filled, hi, -math.inf), sketches, pending)

    def resolved(self) -> GroupStats:
        """These statistics with their pending values in sketches (self when there are none)."""
        if self.pending is None:
            return self
        sketches = list(self.sketch)
        self.pending.add_to(sketches, reuse=False)
        return replace(self, sketch=sketches, pending=None)

    def __len__(self) -> int:
        return len(self.count)

    def take(self, index: np.ndarray) -> GroupStats:
        """The groups at ``index``, an empty group where the index is -1."""
        out = GroupStats.empty(len(index), self.sketch is not None)
        hit = index >= 0
        src = index[hit]
        for name in ("count", "nulls", *_FLOATS):
            getattr(out, name)[hit] = getattr(self, name)[src]
        sketches = None
        if self.sketch is not None:
            sketches = [self.sketch[i] if i >= 0 else None for i in index.tolist()]
        pending = self.pending.take(index) if self.pending is not None else None
        return GroupStats(out.count, out.nulls, out.mean, out.mean_lo, out.m2, out.min, out.max, sketches, pending)

    def grown(self, n: int) -> GroupStats:
        """These groups and ``n`` empty ones after them (pending values put in sketches first)."""
        st = self.resolved()
        tail = GroupStats.empty(n, st.sketch is not None)
        return GroupStats(*(np.concatenate([getattr(st, f), getattr(tail, f)]) for f in _FIELDS),
                          None if st.sketch is None else st.sketch + tail.sketch)

    def put(self, index: np.ndarray, part: GroupStats, reuse: bool = False) -> GroupStats:
        """These groups with those at ``index`` replaced by ``part``'s (aligned with ``index``).

        With ``reuse`` this object's arrays are written in place: the caller gives it away."""
        st = self.resolved()
        arrays = [getattr(st, f) if reuse else getattr(st, f).copy() for f in _FIELDS]
        for array, f in zip(arrays, _FIELDS):
            array[index] = getattr(part, f)
        sketch = None
        if st.sketch is not None or part.sketch is not None:
            sketch = (st.sketch if reuse else list(st.sketch)) if st.sketch is not None else [None] * len(st)
            for i, sk in zip(index.tolist(), part.sketch or [None] * len(index)):
                sketch[i] = sk
        return GroupStats(*arrays, sketch)

    def merge(self, other: GroupStats, reuse: bool = False) -> GroupStats:
        """Group by group, the statistics of both inputs (the groups are aligned).

        With ``reuse`` the sketches of ``self`` are updated in place rather than copied: for an
        accumulator its caller gives away (a fold's), whose old state nothing reads again.
        """
        na, nb = self.count, other.count
        with np.errstate(divide="ignore", invalid="ignore"):
            mean, lo, m2 = chan_merge(na, self.mean, self.mean_lo, self.m2,
                                      nb, other.mean, other.mean_lo, other.m2)
        both, only_b = (na > 0) & (nb > 0), (na == 0) & (nb > 0)
        mean = np.where(both, mean, np.where(only_b, other.mean, self.mean))
        lo = np.where(both, lo, np.where(only_b, other.mean_lo, self.mean_lo))
        m2 = np.where(both, m2, np.where(only_b, other.m2, self.m2))
        sketches = None
        if self.sketch is not None or other.sketch is not None:
            a = self.sketch or [None] * len(self)
            b = other.sketch or [None] * len(other)
            sketches = [_join(x, y, reuse) for x, y in zip(a, b)]
            for part in (self.pending, other.pending):
                if part is not None:
                    part.add_to(sketches, reuse)
        return GroupStats(na + nb, self.nulls + other.nulls, mean, lo, m2,
                          np.minimum(self.min, other.min), np.maximum(self.max, other.max), sketches)

    def group(self, i: int) -> ColumnStats:
        """Group ``i`` as a :class:`~normcli.stats.ColumnStats`."""
        sk = self.resolved().sketch[i] if self.sketch is not None else None
        if self.count[i] == 0:
            return ColumnStats(nulls=int(self.nulls[i]), sketch=sk)
        return ColumnStats(int(self.count[i]), int(self.nulls[i]), *(float(getattr(self, k)[i]) for k in _FLOATS),
                           sketch=sk)

    def var(self, ddof: int = 0) -> np.ndarray:
        """Per-group variance (0 where fewer than ``ddof + 1`` values)."""
        return variance(self.count, self.m2, ddof)

    @property
    def maxabs(self) -> np.ndarray:
        """Per-group largest absolute value (0 for an empty group)."""
        return np.where(self.count > 0, np.maximum(np.abs(self.min), np.abs(self.max)), 0.0)

    def is_constant(self) -> np.ndarray:
        """Per group, True when it holds one distinct value or none."""
        return is_constant(self.count, self.mean, self.mean_lo, self.m2, self.min, self.max)

    def quantiles(self, qs: Sequence[float]) -> np.ndarray:
        """Per-group quantiles from the sketches, one row per ``qs`` entry (NaN for an empty group)."""
        if self.sketch is None:
            raise DataError("robust needs quantile sketches in the stats file; refit with --method robust")
        key = tuple(map(float, qs))
        found = self._quantiles.get(key)
        if found is None:
            found = self._quantiles[key] = _sketch.quantiles_of_many(self.resolved().sketch, qs)
            found.flags.writeable = False
        return found

    def to_dict(self) -> dict[str, Any]:
        """Columnar, strict-JSON-ready form (floats of empty groups, and unknown ones, are null)."""
        empty = self.count == 0
        out: dict[str, Any] = {"count": self.count.tolist(), "nulls": self.nulls.tolist()}
        for name in _FLOATS:
            column = getattr(self, name)
            values: list[Any] = column.tolist()
            for i in np.flatnonzero(empty | np.isnan(column)).tolist():
                values[i] = None
            out[name] = values
        if self.sketch is not None:
            dicts = [None if sk is None else _sketch.to_dict(sk) for sk in self.resolved().sketch]
            k = next((d["k"] for d in dicts if d is not None), _sketch.DEFAULT_K)
            out["sketch"] = {"kind": "kll_doubles", "k": k,
                             "n": [0 if d is None else d["n"] for d in dicts],
                             "rank_error": [0.0 if d is None else d["rank_error"] for d in dicts],
                             "data": [None if d is None else d["data"] for d in dicts]}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroupStats:
        """Inverse of :meth:`to_dict`; ``d`` has been validated. Raises ValueError on a damaged sketch."""
        count = np.asarray(d["count"], dtype=np.int64)
        empty = count == 0
        floats = {}
        for name, fill in zip(_FLOATS, (0.0, 0.0, 0.0, math.inf, -math.inf)):
            # null: the empty group's value, or unknown (NaN) where a group has values
            values = np.array([math.nan if v is None else v for v in d[name]], dtype=np.float64)
            values[empty] = fill
            floats[name] = values
        sketches = None
        if d.get("sketch") is not None:
            s = d["sketch"]
            sketches = [None if data is None else
                        _sketch.from_dict({"k": s["k"], "n": n, "data": data})
                        for n, data in zip(s["n"], s["data"])]
        return cls(count, np.asarray(d["nulls"], dtype=np.int64), sketch=sketches, **floats)


def _join(x: Any, y: Any, reuse: bool) -> Any:
    """One group's sketch from two (None: no sketch). With ``reuse``, ``x`` may be updated and
    the result is never ``y`` itself, which later merges would update."""
    if y is None:
        return x
    if x is None:
        return _sketch.copy(y) if reuse else y
    return _sketch.merge(x, y, reuse)


@dataclass(frozen=True)
class Grouped:
    """The group keys seen so far and, per column, the :class:`GroupStats` aligned with them."""

    keys: list[Key]
    columns: dict[str, GroupStats]
    index: dict[Key, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.index) != len(self.keys):
            self.index.clear()
            self.index.update((k, i) for i, k in enumerate(self.keys))

    def lookup(self, keys: Sequence[Key]) -> np.ndarray:
        """The position of each of ``keys`` among this object's keys, -1 for an unseen one."""
        get = self.index.get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def merge(self, other: Grouped, reuse: bool = False) -> Grouped:
        """Both inputs' groups: the union of the keys (in order of first appearance), merged stats
        (``reuse``: see :meth:`GroupStats.merge`)."""
        if not other.keys:
            return self
        pos = self.lookup(other.keys)
        new = np.flatnonzero(pos < 0)
        n_old = len(self.keys)
        pos[new] = n_old + np.arange(len(new))
        # Only the groups ``other`` holds are merged, so a batch costs what its own groups do,
        # not what all the groups seen so far do; given away (``reuse``), keys and arrays grow in place.
        keys, index = (self.keys, self.index) if reuse else (list(self.keys), dict(self.index))
        keys.extend(other.keys[i] for i in new.tolist())
        index.update((keys[j], j) for j in range(n_old, len(keys)))
        cols = {}
        for name, st in self.columns.items():
            grown = st.grown(len(new)) if len(new) else st
            cols[name] = grown.put(pos, grown.take(pos).merge(other.columns[name], reuse), reuse or len(new) > 0)
        return Grouped(keys, cols, index)
