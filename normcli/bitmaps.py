"""Arrow validity bitmaps as NumPy booleans: shared by the io layer and the math layer."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def validity(arr: pa.Array) -> np.ndarray:
    """The validity bitmap of ``arr`` (which has one) as booleans, True where there is a value."""
    bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
    return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset:].astype(bool)
