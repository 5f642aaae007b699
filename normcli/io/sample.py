"""How the text columns of a sample read as numbers, for fit to tell a column of numbers with
a few stray values from a column of text.

Read from the Arrow buffers with NumPy: pyarrow's compute functions and Polars' conversion
from Arrow load ``pyarrow.compute`` (some 0.1 s of start-up), and a Python loop over the values
of a 2 MiB sample takes some 0.3 s.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..bitmaps import is_text, validity


@dataclass(frozen=True)
class TextSample:
    """How the sampled values of one text column read as numbers.

    ``values`` counts the values that are not null (nor blank, nor a null token), ``numbers``
    those of them that read as numbers; ``example`` is the first of the others (None when there
    is none), at ``row`` of the sample.
    """

    values: int
    numbers: int
    example: str | None = None
    row: int | None = None
    locate: Callable[[int], str | None] = field(default=lambda row: f"row {row + 1}", repr=False, compare=False)

    @property
    def where(self) -> str | None:
        """Where ``example`` is: ``"line 7"`` of a file, ``"row 3"`` of a table; None when unknown.

        Found when asked: for a file it takes a pass over the sample, which only an error needs.
        """
        return None if self.row is None else self.locate(self.row)


def text_samples(table: pa.Table, null_values: Sequence[str] = (),
                 locate: Callable[[int], str | None] | None = None) -> dict[str, TextSample]:
    """A :class:`TextSample` of every text column of ``table`` (a sample of an input).

    A value reads as a number when pyarrow's CSV reader reads it as a float64: ``1``, ``-2.5``,
    ``.5``, ``1e-3``, ``inf``, ``NaN``, spaces and tabs around it aside. ``null_values`` are the
    texts that read as null (the CSV reader's null tokens); a value of spaces and tabs only is
    null too, as a numeric column reads it. ``locate(row)`` names the place of the table's
    ``row`` (default ``"row N"``, counted from 1).
    """
    tokens = [t.encode() for t in null_values]
    extra = {} if locate is None else {"locate": locate}
    out = {}
    for name, column in zip(table.column_names, table.columns):
        kind = column.type
        if not is_text(kind):
            continue
        if pa.types.is_dictionary(kind):  # a categorical of text: its values
            column = pa.chunked_array([c.dictionary_decode() for c in column.chunks], kind.value_type)
            kind = kind.value_type
        if pa.types.is_string_view(kind):  # rare (Polars' frames): a cast, which loads pyarrow.compute
            column = column.cast(pa.large_string())
        values = numbers = seen = 0
        example = row = None
        for chunk in column.chunks:
            present, number = _read_as_numbers(chunk, tokens)
            values += int(present.sum())
            numbers += int(number.sum())
            if example is None:
                other = np.flatnonzero(present & ~number)
                if len(other):
                    example, row = chunk[int(other[0])].as_py(), seen + int(other[0])
            seen += len(chunk)
        out[name] = TextSample(values, numbers, example, row, **extra)
    return out


# Byte classes and the automaton of a decimal number: [+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?
_DIGIT, _SIGN, _DOT, _EXP, _OTHER = range(5)
_CLASS = np.full(256, _OTHER, dtype=np.int8)
_CLASS[np.frombuffer(b"0123456789", dtype=np.uint8)] = _DIGIT
_CLASS[np.frombuffer(b"+-", dtype=np.uint8)] = _SIGN
_CLASS[ord(".")] = _DOT
_CLASS[np.frombuffer(b"eE", dtype=np.uint8)] = _EXP
_DEAD = 9
# State: 0 start, 1 sign, 2 digits, 3 digits and a dot, 4 a dot alone, 5 fraction digits,
# 6 exponent mark, 7 exponent sign, 8 exponent digits; per state, the next one by class.
_STEP = np.array([
    # digit sign dot exp other
    [2, 1, 4, _DEAD, _DEAD],
    [2, _DEAD, 4, _DEAD, _DEAD],
    [2, _DEAD, 3, 6, _DEAD],
    [5, _DEAD, _DEAD, 6, _DEAD],
    [5, _DEAD, _DEAD, _DEAD, _DEAD],
    [5, _DEAD, _DEAD, 6, _DEAD],
    [8, 7, _DEAD, _DEAD, _DEAD],
    [8, _DEAD, _DEAD, _DEAD, _DEAD],
    [8, _DEAD, _DEAD, _DEAD, _DEAD],
    [_DEAD] * 5,
], dtype=np.int8)
_NEXT = _STEP.ravel()  # flat: the next state of (state, class) at state * 5 + class
_ACCEPT = np.zeros(_DEAD + 1, dtype=bool)
_ACCEPT[[2, 3, 5, 8]] = True
_WORDS = (b"inf", b"infinity", b"nan")  # any case, after an optional sign
_BLANK = np.zeros(256, dtype=bool)
_BLANK[np.frombuffer(b" \t", dtype=np.uint8)] = True


def _read_as_numbers(arr: pa.Array, tokens: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Per value of a string or large_string ``arr``: whether it is present (not null, blank or
    one of ``tokens``) and whether it reads as a number."""
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    buffers = arr.buffers()
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(buffers[1], dtype=width)[arr.offset:arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    start, end = offsets[:-1].copy(), offsets[1:]
    present = validity(arr) if arr.null_count else np.ones(n, dtype=bool)
    present &= ~_among(data, start, end, tokens)  # matched as written, as pyarrow matches them
    end = end.copy()
    _trim(data, start, end)
    present &= end > start
    number = present & (_decimal(data, start, end) | _word(data, start, end))
    return present, number


def _among(data: np.ndarray, start: np.ndarray, end: np.ndarray, texts: Sequence[bytes],
           fold: bool = False) -> np.ndarray:
    """Which values ``data[start:end]`` are one of ``texts`` (``fold``: ASCII letters in any case)."""
    found = np.zeros(len(start), dtype=bool)
    length = end - start
    for size in {len(t) for t in texts}:
        same = np.flatnonzero(length == size)
        for text in (t for t in texts if len(t) == size):
            at = same
            for j, byte in enumerate(text):
                got = data[start[at] + j]
                if fold:
                    got = got | 0x20  # lower case; no other byte folds onto a letter of _WORDS
                at = at[got == byte]
            found[at] = True
    return found


def _trim(data: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
    """Move ``start`` and ``end`` past the spaces and tabs around each value (in place)."""
    at = np.flatnonzero(end > start)
    while len(at):
        at = at[_BLANK[data[start[at]]]]
        start[at] += 1
        at = at[end[at] > start[at]]
    at = np.flatnonzero(end > start)
    while len(at):
        at = at[_BLANK[data[end[at] - 1]]]
        end[at] -= 1
        at = at[end[at] > start[at]]


def _decimal(data: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Which values are decimal numbers: the automaton runs one byte of every live value a step."""
    accept = np.zeros(len(start), dtype=bool)
    at = np.flatnonzero(end > start)
    pos, state = start[at], np.zeros(len(at), dtype=np.int8)
    while len(at):
        state = _NEXT[state * 5 + _CLASS[data[pos]]]
        pos = pos + 1
        done = pos == end[at]
        accept[at[done]] = _ACCEPT[state[done]]
        live = ~done & (state != _DEAD)
        at, pos, state = at[live], pos[live], state[live]
    return accept


def _word(data: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Which values are ``inf``, ``infinity`` or ``nan`` in any case, with an optional sign."""
    signed = np.zeros(len(start), dtype=bool)
    some = np.flatnonzero(end > start)
    signed[some] = _CLASS[data[start[some]]] == _SIGN
    return _among(data, start + signed, end, _WORDS, fold=True)
