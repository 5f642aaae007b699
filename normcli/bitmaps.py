"""Arrow arrays and NumPy, read and built through their buffers: shared by the io and math layers.

Going through the buffers avoids pyarrow's own conversions, which import pandas (~0.3 s).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def validity(arr: pa.Array) -> np.ndarray:
    """The validity bitmap of ``arr`` as booleans, True where there is a value."""
    bitmap = arr.buffers()[0]
    if bitmap is None:  # no bitmap: every value there, or a null-type array (none there)
        return np.full(len(arr), arr.null_count == 0)
    bits = np.frombuffer(bitmap, dtype=np.uint8)
    return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset:].astype(bool)


def float64_values(arr: pa.Array) -> np.ndarray:
    """The values of a non-empty float64 ``arr`` as a read-only view (what nulls hold is unspecified)."""
    return _values(arr, np.float64)


def _values(arr: pa.Array, dtype) -> np.ndarray:
    """The values buffer of a non-empty primitive ``arr``, read as ``dtype`` from its offset."""
    n, offset = len(arr), arr.offset
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=offset + n)[offset:]


def numbers_as_float64(arr: pa.Array) -> pa.Array:
    """An integer or float32 ``arr`` as float64, nulls kept.

    Large integers round to the nearest double, as in Arrow's unsafe cast; NumPy does it here
    because Arrow's cast loads ``pyarrow.compute``, some 60 ms of start-up.
    """
    kind = arr.type
    if not (pa.types.is_integer(kind) or kind == pa.float32()):
        raise TypeError(f"not an integer or float32 array: {kind}")
    if len(arr) == 0:
        return from_values(np.empty(0), pa.float64())
    # the dtype named here, not kind.to_pandas_dtype(), which imports pandas on pyarrow 25
    sign = "u" if pa.types.is_unsigned_integer(kind) else "i"
    dtype = np.dtype(np.float32) if kind == pa.float32() else np.dtype(f"{sign}{kind.byte_width}")
    values = _values(arr, dtype).astype(np.float64)
    return from_values(values, pa.float64(), validity(arr) if arr.null_count else None)


def decimals_as_float64(arr: pa.Array) -> pa.Array:
    """A decimal ``arr`` as float64, each value the double nearest it, nulls kept.

    Arrow's decimal cast divides by a power of ten in floating point, which can land an ulp
    off (8.761 as 8.761000000000001); the decimal's exact text, parsed, is correctly rounded,
    as the CSV readers and ``float(Decimal)`` give it.
    """
    return arr.cast(pa.string()).cast(pa.float64())


def from_values(y: np.ndarray, kind: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    """``y`` (float32 or float64) as an Arrow array of ``kind``, null where ``valid`` is False."""
    y = np.ascontiguousarray(y)
    if valid is None or valid.all():
        return pa.Array.from_buffers(kind, len(y), [None, pa.py_buffer(y)], null_count=0)
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(kind, len(y), [bitmap, pa.py_buffer(y)], null_count=int(len(y) - valid.sum()))


def first_bad_float(column: pa.Array | pa.ChunkedArray) -> int | None:
    """Index of the first text value of ``column`` that does not cast to float64, by bisection;
    None if all do. Arrow's cast error names a failing value, not its place, nor always the first."""

    def ok(lo: int, hi: int) -> bool:
        try:
            column.slice(lo, hi - lo).cast(pa.float64())
            return True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return False

    lo, hi = 0, len(column)
    if ok(lo, hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if not ok(lo, mid):
            hi = mid
        else:
            lo = mid
    return lo


def is_text(kind: pa.DataType) -> bool:
    """Whether a column of this type holds text (also as a dictionary, a pandas categorical)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
