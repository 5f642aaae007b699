"""CSV and TSV input, plain or gzip, from a file or stdin.

Reading is split in two so that parsing can use every core: :meth:`Source.pieces` cuts the raw
bytes at record boundaries (cheap, sequential, one producer thread) and :meth:`Source.decode`
parses one piece (heavy, thread-safe, a worker pool): with Polars when that provably reads what
pyarrow reads, else with ``pyarrow.csv.read_csv``. pyarrow's own streaming reader parses on one
core only (see MEASUREMENTS.md).

Pieces read for statistics alone (fit, check) of a file under :data:`POLARS_FROM` of at most
:data:`NARROW` columns are parsed by pyarrow: both give the same batch, and there Polars' import
costs more than its parse saves.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..bitmaps import first_bad_float, float64_values, from_values, validity
from ..errors import DataError, IOFailure
from .gunzip import GZIP_MAGIC, GzipError, open_gunzip
from .sample import TextSample, text_samples
from .source import (LineCounts, Piece, Source, _display, _read_failure, begins_as_parquet, import_polars,
                     stdin_stream)

_BOM = b"\xef\xbb\xbf"
_NULLS = tuple(pacsv.ConvertOptions().null_values)  # pyarrow's null values (empty, NA, NaN, ...)
_QUOTE = b'"'
_NL = b"\n"
# The longest record read: memory stays bounded when a quote is left open early in a large file.
MAX_RECORD_BYTES = 32 << 20
# Pieces of a wide file: rows enough to spread the per-column work, within a bound.
_WIDE_ROWS = 256
_WIDE_PIECE = 16 << 20
# The smallest file whose pieces read for statistics Polars parses. Of those (numeric columns
# only) its parse costs about the CPU time of pyarrow's, each piece having a thread of its own,
# and importing Polars takes 0.1-0.2 s: on two cores, fitting a 30 MB CSV without it took 0.81x
# the time, 114 MB 0.97x, 570 MB 1.01x-1.04x. Whole rows (transform) it parses faster, in the
# string_view layout the CSV writer takes: those it parses whatever the size.
POLARS_FROM = 64 << 20
# The most columns a file may have for that: pyarrow's parse costs more per column. Fitting a
# 28 MB CSV without Polars took 0.84x the time with 50 or 500 columns, 0.97x with 1,000, 1.06x
# with 2,000.
NARROW = 500


def _peek(stream, n: int) -> bytes:
    """The next ``n`` bytes of ``stream`` without consuming them (fewer if it cannot peek)."""
    try:
        return bytes(stream.peek(n)[:n])
    except (AttributeError, OSError, ValueError):
        return b""


_IRREGULAR = -2  # _record_boundary: the quotes cannot be counted, see _exact_boundary


def _record_boundary(buf: bytes, end: int | None = None, start: int = 0, parity: int = 0,
                     delimiter: str = ",") -> int:
    """Return the index just past the last newline outside quotes in ``buf[start:end]``, or -1.

    ``buf`` must start at a record boundary. A newline is outside quotes when the number of
    quote characters before it is even (RFC 4180 doubling keeps the parity right). ``parity`` is
    that number's parity for ``buf[:start]``, a stretch already known to hold no boundary and
    to follow the parity (up to a newline). Returns ``_IRREGULAR`` when a quote in
    ``buf[start:]`` does not (see :func:`_counted_quotes`): then only
    :func:`_exact_boundary` over the whole of ``buf`` can tell.
    """
    end = len(buf) if end is None else end
    pos = buf.rfind(_NL, start, end)
    if pos < 0:
        return -1
    if not parity and buf.find(_QUOTE, start, pos) < 0:  # the common case, at memchr speed: no quotes
        return pos + 1
    quotes = _counted_quotes(buf, start, pos, parity, delimiter)
    if quotes < 0:
        return _IRREGULAR
    before = parity + quotes
    for _ in range(8):  # a record spanning a few lines: walk back line by line
        if before % 2 == 0:
            return pos + 1
        prev = buf.rfind(_NL, start, pos)
        if prev < 0:
            return -1
        before -= buf.count(_QUOTE, prev, pos)
        pos = prev
    return _last_boundary(buf, start, pos + 1, parity)


def last_record_end(buf: bytes, delimiter: str) -> int:
    """The index just past the last whole record of ``buf`` (which starts at a record boundary),
    or -1: :func:`_record_boundary`, exact also where a quote stands inside an unquoted field."""
    cut = _record_boundary(buf, delimiter=delimiter)
    return _exact_boundary(buf, len(buf), delimiter) if cut == _IRREGULAR else cut


def _last_boundary(buf: bytes, start: int, end: int, parity: int) -> int:
    """:func:`_record_boundary` by array operations, for a long stretch inside quotes (rare).

    Without it, an unclosed quote early in a large input took time quadratic in what follows.
    """
    arr = np.frombuffer(buf, dtype=np.uint8)[start:end]
    newlines = np.flatnonzero(arr == _NL[0])
    # Quotes up to each newline, counted modulo 256: the parity is all that matters.
    before = np.cumsum(arr == _QUOTE[0], dtype=np.uint8)[newlines] + parity
    outside = newlines[before % 2 == 0]
    return start + int(outside[-1]) + 1 if len(outside) else -1


def _quoted_spans(data: bytes, delimiter: str, end: int | None = None) -> Iterator[tuple[int, int]]:
    """The quoted fields of ``data[:end]`` as (opening quote, closing quote) offsets, in order;
    a field still open at ``end`` closes at -1 (rare path: a Python loop over the quotes).

    ``data`` starts at a record boundary. Quotes are read as pyarrow reads them: a quote opens a
    quoted field only at the start of a field, two quotes inside one stand for one quote, and
    any other quote inside one closes it; a quote elsewhere is text.
    """
    quotes = np.flatnonzero(np.frombuffer(data, dtype=np.uint8)[:end] == _QUOTE[0]).tolist()
    field_start = {ord(delimiter), ord("\n"), ord("\r")}
    i = 0
    while i < len(quotes):
        opening = quotes[i]
        i += 1
        if opening and data[opening - 1] not in field_start:
            continue
        while i < len(quotes):
            if i + 1 < len(quotes) and quotes[i + 1] == quotes[i] + 1:
                i += 2  # a doubled quote, inside the field
            else:
                yield opening, quotes[i]  # the closing quote
                i += 1
                break
        else:
            yield opening, -1


def _unclosed_quote(data: bytes, delimiter: str, end: int | None = None) -> int:
    """Offset of the quote opening a field still open at the end of ``data[:end]``, or -1."""
    last = None
    for last in _quoted_spans(data, delimiter, end):
        pass
    return last[0] if last is not None and last[1] < 0 else -1


def _exact_boundary(buf: bytes, end: int, delimiter: str) -> int:
    """:func:`_record_boundary` for a ``buf`` whose quotes parity cannot follow (a quote inside
    an unquoted field, ``a"b``): the last newline of ``buf[:end]`` outside the quoted fields."""
    spans = list(_quoted_spans(buf, delimiter, end))
    pos = buf.rfind(_NL, 0, end)
    # Walk back over the spans from the last: a newline inside one moves before its opening.
    for opening, closing in reversed(spans):
        if pos < 0 or (0 <= closing < pos):
            break
        if opening < pos:
            pos = buf.rfind(_NL, 0, opening)
    return pos + 1 if pos >= 0 else -1


def _counted_quotes(buf: bytes, start: int, end: int, parity: int, delimiter: str) -> int:
    """The number of quotes in ``buf[start:end]``, or -1 when one does not stand where counting
    quotes expects one.

    Counting takes every other quote (from a record boundary) as one opening a quoted field and
    the ones between as closing it or as half of a doubled quote. That is how pyarrow reads them
    when each opening quote starts a field (or doubles the quote before it) and each closing one
    ends a field (or is doubled). ``parity`` is the count's parity before ``start``; the byte
    after ``end`` must be in ``buf``.
    """
    arr = np.frombuffer(buf, dtype=np.uint8)
    at = np.flatnonzero(arr[start:end] == _QUOTE[0]) + start
    sep = ord(delimiter)

    def edge(v: np.ndarray) -> np.ndarray:  # a field's edge, or the other half of a doubled quote
        return (v == sep) | (v == _NL[0]) | (v == 13) | (v == _QUOTE[0])

    # Counted from a record boundary, quote i opens a field when i + parity is even.
    opens, closes = at[parity::2], at[1 - parity::2]
    if not (np.all(edge(arr[np.maximum(opens - 1, 0)]) | (opens == 0)) and np.all(edge(arr[closes + 1]))):
        return -1
    return len(at)


def _count(buf: bytes, byte: bytes, start: int = 0, end: int | None = None) -> int:
    """``buf.count(byte, start, end)`` for one byte, about 5x faster through NumPy."""
    arr = np.frombuffer(buf, dtype=np.uint8)[start:end]
    return int(np.count_nonzero(arr == byte[0]))


def _fields_exact(data: bytes, sep: bytes, fields: int, rows: int) -> bool:
    """Whether ``data`` (``rows`` lines, no quotes) holds ``fields`` fields on every line."""
    arr = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(arr == _NL[0])
    if not len(ends) or ends[-1] != len(arr) - 1:
        ends = np.append(ends, len(arr))
    per_line = np.diff(np.searchsorted(np.flatnonzero(arr == sep[0]), ends), prepend=0)
    return len(per_line) == rows and bool((per_line == fields - 1).all())


def _lone_carriage_return(data: bytes) -> bool:
    """Whether ``data`` holds a CR not followed by LF (pyarrow ends a line there)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    at = np.flatnonzero(arr == 13)
    return bool(len(at)) and (at[-1] == len(arr) - 1 or bool((arr[at + 1] != 10).any()))


def _has_blank_line(data: bytes) -> bool:
    """Whether ``data`` (whole lines) holds an empty line, LF or CRLF ended."""
    return data[:1] == _NL or data[:2] == b"\r\n" or b"\n\n" in data or b"\n\r\n" in data


def _blanks(columns: Sequence[pa.ChunkedArray]) -> list[str]:
    """The distinct values of the text ``columns`` made of spaces and tabs only.

    Spaces and tabs around a number are not part of it (pyarrow and Polars both read " 3 " as 3):
    in a numeric column a field of them alone is empty, hence null, as Polars reads it. pyarrow
    refuses such a field instead, unless it is one of its null values.
    """
    return sorted({v for column in columns for v in column.to_pylist() if v and not v.strip(" \t")})


def _record_lines(data: bytes, first_line: int, delimiter: str) -> np.ndarray:
    """File line number of every non-empty record in ``data`` (error path only).

    Mirrors pyarrow, which skips empty lines and numbers only the records it keeps, and reads
    quotes as it does (see :func:`_quoted_spans`): a quote inside an unquoted field is text.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(arr == ord("\n"))
    ends = newlines
    if data.find(_QUOTE) >= 0 and len(newlines):
        spans = np.array(list(_quoted_spans(data, delimiter)), dtype=np.int64).reshape(-1, 2)
        if len(spans):
            opens, closes = spans[:, 0], np.where(spans[:, 1] < 0, len(data), spans[:, 1])
            # a newline ends a record unless it lies inside the last quoted field opened before it
            last = np.searchsorted(opens, newlines) - 1
            inside = (last >= 0) & (newlines < closes[np.maximum(last, 0)])
            ends = newlines[~inside]
    if len(data) and (not len(ends) or ends[-1] != len(data) - 1):
        ends = np.append(ends, len(data))  # a last record without a trailing newline
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    length = ends - starts
    cr_only = np.zeros(len(starts), dtype=bool)
    one = length == 1
    cr_only[one] = arr[starts[one]] == ord("\r")
    keep = (length > 0) & ~cr_only
    line_of_start = first_line + np.searchsorted(newlines, starts)
    return line_of_start[keep]


def _row_handler(fn):
    """Mark ``fn`` as an ``invalid_row_handler`` whose undecodable rows stay quiet.

    pyarrow decodes a bad row's text before calling the handler; when that text is not UTF-8 the
    decode fails inside pyarrow, which prints the UnicodeDecodeError as an "Exception ignored"
    traceback on stderr and then reports the row as a parse error anyway (a DataError here).
    """
    fn._normcli_row_handler = True
    if not getattr(sys.unraisablehook, "_normcli", False):  # chained once, on first use
        sys.unraisablehook = _quiet_row_handlers(sys.unraisablehook)
    return fn


def _quiet_row_handlers(hook):
    """``hook`` minus the undecodable-row reports of normcli's own row handlers."""
    def unraisable(info) -> None:
        if not (getattr(info.object, "_normcli_row_handler", False) and info.exc_type is UnicodeDecodeError):
            hook(info)
    unraisable._normcli = True
    return unraisable


@dataclasses.dataclass
class _Sample:
    """The first block of a CSV input parsed with inferred types, and where its rows are."""

    table: pa.Table
    data: bytes
    first_line: int
    skipped: tuple[int, ...]  # the records (1-based) the parse left out, ragged ones
    delimiter: str
    _lines: np.ndarray | None = None

    def line(self, row: int) -> str | None:
        """``"line N"``: the file line of the table's ``row``; None if pyarrow did not number a
        skipped record."""
        if self._lines is None:
            if any(n < 1 for n in self.skipped):
                return None
            self._lines = np.delete(_record_lines(self.data, self.first_line, self.delimiter), [n - 1 for n in self.skipped])
        return f"line {self._lines[row]}" if row < len(self._lines) else None


class _CsvSource(Source):
    def __init__(self, path: str, fmt: str, delimiter: str, block_size: int, encoding: str,
                 default_size: bool = False, label: str | None = None, stream: BinaryIO | None = None):
        self._default_size = default_size  # block size not chosen by the caller: may be tuned
        self.path = label or path  # what messages name
        self._stdin = path == "-"
        self.format = fmt
        self._delimiter = delimiter
        self._block_size = block_size
        self._encoding = encoding
        # The Polars parser is used for UTF-8 with a one-byte separator; otherwise pyarrow.
        self._utf8 = encoding.lower().replace("-", "") == "utf8"
        self._polars_ok = self._utf8 and len(delimiter.encode()) == 1
        self._raw = None  # the file whose position measures progress (compressed for .gz)
        self._used = False
        if path == "-":
            self.size = None
            self._stream = stdin_stream()
            if _peek(self._stream, 2) == GZIP_MAGIC:  # `zcat`-free pipelines: gzip is recognised
                self._stream = open_gunzip(self._stream)
        else:
            try:
                # Opened once (or by the caller, ``stream``, to peek at its first bytes): a named
                # pipe closed and opened again can lose its writer between.
                stream = stream or open(path, "rb")  # noqa: SIM115 - closed with the source
                info = os.fstat(stream.fileno())
            except OSError as exc:
                raise _read_failure(self.path, exc) from exc
            # a named pipe's size says nothing about its data: unknown, as stdin's
            self.size = info.st_size if stat.S_ISREG(info.st_mode) else None
            self._stream = stream
            if path.lower().endswith(".gz") or _peek(stream, 2) == GZIP_MAGIC:  # by name, or as stdin is
                if self.size is not None:  # a pipe has no position to tell
                    self._raw = stream
                self._stream = open_gunzip(stream)
        self._consumed = 0
        self._lines: LineCounts | None = None  # of the pieces read
        self._sampled: _Sample | bool | None = None  # see _sample(); False: no record
        self._read_header()
        # Polars parses pieces read for statistics but those of a regular file under POLARS_FROM
        # (gzip: the compressed file's size) at most NARROW columns wide
        small = self.size is not None and self.size < POLARS_FROM and len(self.columns) <= NARROW
        self._polars_for_statistics = self._polars_ok and not small
        if self._polars_for_statistics:
            import_polars()  # here, not first in a worker thread (see there)

    @property
    def delimiter(self) -> str:
        """The field separator."""
        return self._delimiter

    @property
    def decode_waits(self) -> bool:
        """Polars, where it parses pieces read for statistics, does so on its own threads while
        the caller waits."""
        return self._polars_for_statistics

    def _by_polars(self, piece: Piece) -> bool:
        """Whether Polars is to try ``piece`` first (see :data:`POLARS_FROM`)."""
        return self._polars_for_statistics or (piece.keep_others and self._polars_ok)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Around one read of the input: a failure becomes an IOFailure or a DataError naming it."""
        try:
            yield
        except GzipError as exc:  # the file was read, its content is bad
            raise DataError(f"cannot read {_display(self.path)}: a damaged gzip stream ({exc})") from exc
        except OSError as exc:
            raise _read_failure(self.path, exc) from exc

    def _read(self, n: int) -> bytes:
        with self._reading():
            data = bytes(self._stream.read(n))
        self._advance(len(data))
        return data

    def _read_into(self, buf: bytearray, start: int, end: int) -> int:
        """Read into ``buf[start:end]``; the number of bytes read, 0 at the end of the input."""
        with self._reading(), memoryview(buf) as view:
            n = self._stream.readinto(view[start:end]) or 0
        self._advance(n)
        return n

    def _check_whole(self) -> None:
        """At the end of a file: refuse one that was cut short while being read (a log rotated
        by truncation, say), whose last record may be cut in the middle of a number."""
        if self.size is not None and self._position() < self.size:
            raise IOFailure(f"cannot read {_display(self.path)}: it was truncated while being read "
                            f"({self._position():,} of {self.size:,} bytes)")

    def _advance(self, n: int) -> None:
        """After a read of ``n`` bytes (0: the end of the input)."""
        if self._raw is None:  # for gzip, progress is the compressed file's position instead
            self._consumed += n
        if not n:
            self._check_whole()

    def _position(self) -> int:
        """Input bytes consumed so far (compressed bytes for gzip)."""
        return self._raw.tell() if self._raw is not None else self._consumed

    def _read_header(self) -> None:
        buf = self._read(self._block_size)
        if buf.startswith(_BOM):
            buf = buf[len(_BOM):]
        if begins_as_parquet(buf):
            raise DataError(f"{_display(self.path)} is a Parquet file, not {self.format.upper()} text: "
                            "--format parquet reads it")
        line = 1
        while True:
            cut = self._first_boundary(buf)
            while cut < 0:
                self._check_line_ends(buf, len(buf))  # before reading on: such a file has no newline
                more = self._read(self._block_size)
                if not more:
                    self._check_quotes_closed(buf, line)
                    cut = len(buf)  # a header without a trailing newline
                    break
                buf += more
                cut = self._first_boundary(buf)
            self._check_line_ends(buf, cut)
            header, buf = buf[:cut], buf[cut:]
            if header.strip(b"\r\n"):
                break
            if not buf:
                raise DataError(f"{_display(self.path)} is empty")
            line += header.count(_NL)  # blank lines before the header, skipped like pyarrow
        if not header.endswith(_NL):
            header += _NL
        try:
            table = pacsv.read_csv(
                pa.BufferReader(header),
                # a block must hold the whole header line (pyarrow's default is 1 MiB)
                read_options=pacsv.ReadOptions(use_threads=False, encoding=self._encoding,
                                               block_size=max(len(header), 1 << 20)),
                parse_options=self._parse_options(),
            )
            # pyarrow decodes the names only when asked: bytes that are not text fail here.
            self.columns = table.column_names
        except pa.ArrowInvalid as exc:
            raise DataError(f"{_display(self.path)}: cannot parse the header: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise DataError(f"{_display(self.path)}: the header is not {self._encoding} text "
                            f"({exc.reason})") from exc
        seen: set[str] = set()
        dupes = [c for c in self.columns if c in seen or seen.add(c)]
        if dupes:
            names = ", ".join(f"'{c}'" for c in dict.fromkeys(dupes))
            raise DataError(f"{_display(self.path)} has duplicate column names: {names}")
        nul = next((c for c in self.columns if "\0" in c), None)
        if nul is not None:  # the parser's column names are C strings: it would abort the process
            raise DataError(f"{_display(self.path)}: the column name '{nul}' holds a NUL character")
        self._header_bytes = len(header)
        self._first_line = line + header.count(_NL)
        self._pending = buf

    def _check_line_ends(self, buf: bytes, end: int) -> None:
        """Refuse a line of ``buf[:end]`` that ends in a carriage return alone (old Mac line ends).

        pyarrow ends a record there, but records are cut at newlines: the header would be read
        with every record after it and they would be dropped. A lone carriage return in a later
        line is read as pyarrow reads it, as a line end.
        """
        pos = buf.find(b"\r", 0, end)
        while pos >= 0:
            # At the end of buf, the newline of a CRLF may not have been read yet.
            if pos + 1 < len(buf) and buf[pos + 1] != _NL[0] and buf.count(_QUOTE, 0, pos) % 2 == 0:
                raise DataError(f"{_display(self.path)}: lines end in a carriage return alone (old Mac "
                                "line endings); convert them to \\n first")
            pos = buf.find(b"\r", pos + 1, end)

    def _first_boundary(self, buf: bytes) -> int:
        """The index just past the first record of ``buf`` (the header), or -1."""
        pos = buf.find(_NL)
        if pos < 0 or buf.find(_QUOTE, 0, pos) < 0:
            return pos + 1 if pos >= 0 else -1
        for opening, closing in _quoted_spans(buf, self._delimiter):
            if pos < opening:
                break
            if closing < 0:
                return -1
            pos = buf.find(_NL, closing)  # the first newline after the quoted field
            if pos < 0:
                return -1
        return pos + 1

    def _parse_options(self, handler=None) -> pacsv.ParseOptions:
        return pacsv.ParseOptions(delimiter=self._delimiter, invalid_row_handler=handler)

    def sample_types(self) -> dict[str, pa.DataType]:
        sample = self._sample()
        if sample is None:
            return {name: pa.null() for name in self.columns}
        return {name: sample.table.schema.field(name).type for name in self.columns}

    def sample_text(self) -> dict[str, TextSample]:
        sample = self._sample()
        return {} if sample is None else text_samples(sample.table, _NULLS, sample.line)

    def _sample(self) -> _Sample | None:
        """The first block parsed with inferred types (None if it holds no record), kept until
        :meth:`pieces` starts."""
        if self._sampled is None:
            self._sampled = self._read_sample()
        return self._sampled or None

    def _read_sample(self) -> _Sample | bool:
        buf = self._pending[: self._block_size]
        cut = last_record_end(buf, self._delimiter)
        while cut < 0:  # a first record longer than the block: read on to its end
            if len(self._pending) > MAX_RECORD_BYTES:
                self._record_too_long(self._pending, len(self._pending), self._first_line)
            # doubling (each search is from the start), never past the bound
            more = self._read(min(max(self._block_size, len(self._pending)), MAX_RECORD_BYTES + 1 - len(self._pending)))
            self._pending = buf = self._pending + more
            if not more:
                cut = len(buf)  # the whole input: decode() would report a quote left open
                self._check_quotes_closed(buf, self._first_line)
            else:
                cut = last_record_end(buf, self._delimiter)
        data = buf[:cut]
        if not data.strip(b"\r\n"):
            return False
        skipped: list[int] = []
        first_skipped: list = []

        @_row_handler
        def skip(row) -> str:
            skipped.append(row.number)
            first_skipped[:] = first_skipped or [row]
            return "skip"

        def infer(null_values: Sequence[str], as_text: Sequence[str] = ()) -> pa.Table:
            skipped.clear()
            try:
                return pacsv.read_csv(
                    pa.BufferReader(data),
                    read_options=pacsv.ReadOptions(
                        column_names=self.columns,
                        use_threads=False,
                        block_size=max(cut, 1 << 16),
                        encoding=self._encoding,
                    ),
                    # Bad rows are reported by decode(), with their line numbers.
                    parse_options=self._parse_options(skip),
                    convert_options=pacsv.ConvertOptions(null_values=list(null_values),
                                                         column_types={n: pa.string() for n in as_text}),
                )
            except pa.ArrowInvalid as exc:
                raise DataError(f"cannot parse {_display(self.path)}: {exc}") from exc

        nulls = _NULLS
        table = infer(nulls)
        # A column of numbers and blank fields is numeric, as decode() reads it: blanks are null.
        if buf.find(b" ", 0, cut) >= 0 or buf.find(b"\t", 0, cut) >= 0:
            blanks = _blanks([table.column(name) for name in self.columns
                              if pa.types.is_string(table.schema.field(name).type)])
            if blanks:
                nulls += tuple(blanks)
                table = infer(nulls)
        # pyarrow reads 0x1f as the integer 31; decode() reads numbers as floats, which have no hex
        # form (nor in Polars, pandas or DuckDB): a column of such codes is text.
        ints = [name for name in self.columns if pa.types.is_integer(table.schema.field(name).type)]
        # (only "0x..." reads as hex: a text that merely holds an "x" costs no second look)
        if ints and (buf.find(b"0x", 0, cut) >= 0 or buf.find(b"0X", 0, cut) >= 0):
            import pyarrow.compute as pc  # imported where used: it costs a transform's start-up 40 ms

            text = infer(nulls, ints)
            hexed = [name for name in ints if pc.any(pc.match_substring_regex(text.column(name), "[xX]")).as_py()]
            if hexed:
                table = infer(nulls, hexed)
        if table.num_rows == 0 and first_skipped and first_skipped[0].number >= 1:
            # every record ragged: no column has a type, and "no numeric columns" would hide why
            raise self._ragged(data, self._first_line, first_skipped[0])
        return _Sample(table, data, self._first_line, tuple(skipped), self._delimiter)

    def pieces(self, numeric: Sequence[str], keep_others: bool, keep: Sequence[str] = ()) -> Iterator[Piece]:
        if keep_others and self._polars_ok:
            import_polars()  # by the caller, before the generator runs in a reader thread (see there)
        return self._pieces(numeric, keep_others, keep)

    def _pieces(self, numeric: Sequence[str], keep_others: bool, keep: Sequence[str]) -> Iterator[Piece]:
        numeric, keep = self._claim(numeric, keep)
        self._sampled = None
        # Reading a few columns of a piece (fit, check) holds far less than transforming all of
        # them: twice the bytes per piece then halves the per-piece overhead at the same memory.
        size = self._block_size if keep_others or not self._default_size else 2 * self._block_size
        if self._default_size:
            # A wide file (thousands of columns) would give pieces of a few rows each, and the
            # per-column work of a piece would dominate: at least about _WIDE_ROWS rows (a
            # record is about as long as the header), up to _WIDE_PIECE bytes.
            size = max(size, min(_WIDE_ROWS * self._header_bytes, _WIDE_PIECE))
        # One buffer, read into and reused: a piece is copied once, out of it, and the partial
        # record after the piece's last boundary moves to the front for the next piece.
        buf = bytearray(max(size, len(self._pending)))
        filled = len(self._pending)
        buf[:filled], self._pending = self._pending, b""
        lines = self._lines = LineCounts(self._first_line)
        mark = 0  # input position at the start of the next piece
        eof = False
        # A record longer than a piece: the bytes of it already searched, and their quotes' parity.
        scanned = parity = 0
        exact = False  # a quote inside an unquoted field: parity is no guide for this piece
        while filled or not eof:
            # Gather at least size bytes, or a whole record if one is longer than that.
            while not eof and filled < size:
                n = self._read_into(buf, filled, size)
                eof = n == 0
                filled += n
            if eof:
                cut = filled
            elif exact:
                cut = _exact_boundary(buf, filled, self._delimiter)
            else:
                cut = _record_boundary(buf, filled, scanned, parity, self._delimiter)
                if cut == _IRREGULAR:
                    exact = True  # for this piece: the quotes before scanned were counted
                    cut = _exact_boundary(buf, filled, self._delimiter)
            if cut < 0:
                if filled > MAX_RECORD_BYTES:
                    self._record_too_long(buf, filled, lines.next_line())
                # The next search starts after the last newline searched: the quotes up to it
                # follow the parity (checked), the ones after it are checked next time.
                searched = buf.rfind(_NL, scanned, filled) + 1
                if searched:
                    parity = (parity + _count(buf, _QUOTE, scanned, searched)) % 2
                    scanned = searched
                # Read on by a block, but never past the bound: a record one byte longer is refused.
                room = min(filled + self._block_size, MAX_RECORD_BYTES + 1)
                if len(buf) < room:
                    buf.extend(bytes(room - len(buf)))
                n = self._read_into(buf, filled, room)
                eof = n == 0
                filled += n
                continue
            with memoryview(buf) as view:
                data = view[:cut].tobytes()
            buf[:filled - cut] = buf[cut:filled]
            filled -= cut
            scanned = parity = 0
            exact = False
            # Only blank lines (or nothing): no record to parse. Checking the first byte first
            # avoids copying a whole piece in strip().
            if data[:1] in (b"", b"\n", b"\r") and not data.strip(b"\r\n"):
                lines.record(lines.issue(), _count(data, _NL))
                continue
            pos = self._position()
            # The piece's lines are counted by its decode (see LineCounts).
            yield Piece(data, pos - mark, lines.issue(), numeric, keep_others, keep, lines)
            mark = pos

    def _convert_options(self, piece: Piece) -> pacsv.ConvertOptions:
        wanted = set(piece.numeric)
        types = {name: pa.float64() if name in wanted else pa.string() for name in self.columns}
        return pacsv.ConvertOptions(
            column_types=types,
            include_columns=self._output_columns(piece),
            # Pass-through text is kept as read; numeric columns still get pyarrow's default
            # null values (empty, NA, NaN, null, ...) because they are float-typed.
            strings_can_be_null=False,
        )

    def _read_piece(self, piece: Piece, convert: pacsv.ConvertOptions, handler=None) -> pa.Table:
        return pacsv.read_csv(
            pa.BufferReader(piece.data),
            read_options=pacsv.ReadOptions(
                column_names=self.columns,
                use_threads=False,
                block_size=max(len(piece.data) + 1, 1 << 16),
                encoding=self._encoding,
            ),
            parse_options=self._parse_options(handler),
            convert_options=convert,
        )

    def decode(self, piece: Piece) -> pa.RecordBatch:
        newlines = None
        try:
            if self._by_polars(piece):
                try:
                    batch = self._decode_polars(piece)
                    # Polars read one row per line (a blank line fails its checks): the last
                    # line lacks its newline only at the end of the input
                    newlines = batch.num_rows - (not piece.data.endswith(_NL))
                    return batch
                except Exception:  # any doubt (null tokens, ragged rows, bad text): the exact path
                    pass
            if not piece.keep_others and self._utf8:
                self._check_text(piece)  # Polars, where it parsed, validated every byte
            return self._decode_arrow(piece)
        finally:
            if piece.lines is not None:
                piece.lines.record(piece.start, _count(piece.data, _NL) if newlines is None else newlines)

    def _check_text(self, piece: Piece) -> None:
        """Refuse bytes that are not UTF-8 in the columns a piece read for a fit leaves out.

        A transform reads every column and refuses them: the fit of the same input does too,
        with the same message, rather than succeed on a file its transform will refuse.
        """
        if not (piece.data.isascii() or _is_utf8(piece.data)):  # isascii: the common case, at memchr speed
            self._decode_arrow(dataclasses.replace(piece, keep_others=True))  # raises the transform's error

    def _decode_polars(self, piece: Piece) -> pa.RecordBatch:
        """Parse with Polars (about twice as fast as pyarrow on one core).

        Gives the same batch as :meth:`_decode_arrow` on well-formed input: NaN in a numeric
        column becomes null (pyarrow reads "NaN" as null), text columns are strings as read. A
        piece read for statistics only (``keep_others`` false) keeps NaN: they count it as null.
        Anything Polars rejects, such as the null tokens ``NA`` or ``null`` in a numeric
        column or bytes that are not UTF-8 anywhere in the piece (it validates the whole piece,
        also the columns the caller leaves out), goes to the pyarrow path, which also produces
        the exact error messages.
        Pieces with quotes go there too: only without them does Polars' field count hold (it pads
        a short row where pyarrow reports it).
        """
        if piece.data.find(_QUOTE) >= 0:
            raise ValueError("quoted fields")
        if piece.data.find(b"\r") >= 0 and _lone_carriage_return(piece.data):
            raise ValueError("a carriage return that ends no line")  # pyarrow's line end, Polars' text
        if len(self.columns) == 1 and _has_blank_line(piece.data):
            # pyarrow skips a blank line; Polars reads it as a null row of a one-column file
            # (with more columns it is a short row, which the field count below catches)
            raise ValueError("blank lines")
        import polars as pl  # imported where used: Parquet-only runs need not pay for it

        wanted = set(piece.numeric)
        schema = {name: pl.Float64 if name in wanted else pl.String for name in self.columns}
        # Every column is parsed, even one the caller leaves out: only then does Polars refuse a
        # row with too many fields (with some columns it ignores the extra ones). That costs less
        # than counting separators, even beside a long text column.
        frame = pl.read_csv(piece.data, has_header=False, schema=schema, separator=self._delimiter,
                            # the piece holds no quote (checked above): quote handling would
                            # change nothing and costs about a tenth of the parse
                            quote_char=None,
                            empty_string_is_null=True, raise_if_empty=False,
                            truncate_ragged_lines=False)
        if frame.width != len(self.columns):
            raise ValueError("column count")
        # Polars pads a short row with nulls: a last column without nulls proves that no row is
        # short; else the separators of every line are counted.
        if frame.get_column(self.columns[-1]).null_count() and not _fields_exact(
                piece.data, self._delimiter.encode(), len(self.columns), frame.height):
            raise ValueError("ragged rows")
        columns = self._output_columns(piece)
        if columns != self.columns:
            frame = frame[columns]  # not select(), a lazy query: 0.6 ms more a piece, 20 ms with 2,000 columns
        # Text stays in Polars' layout, Arrow's string_view: no copy here or in the CSV writer.
        # Polars joins its parse chunks faster than Arrow does: 0.56 ms against 0.79 ms (2 MiB)
        batch = _as_batch(frame.rechunk().to_arrow(compat_level=pl.CompatLevel.newest()))
        if not piece.keep_others:  # statistics only: they count NaN and null alike as missing
            return batch
        return pa.RecordBatch.from_arrays(
            [_nan_as_null(batch.column(c)) if c in wanted else batch.column(c) for c in columns], names=columns)

    def _decode_arrow(self, piece: Piece) -> pa.RecordBatch:
        # Every piece but the input's last ends outside quotes: an odd count of quotes means
        # a quoted field may be open at the end of the input, which pyarrow would read quietly.
        if piece.data.find(_QUOTE) >= 0 and _count(piece.data, _QUOTE) % 2:
            self._check_quotes_closed(piece.data, piece.first_line)
        bad: list = []

        @_row_handler
        def on_invalid(row) -> str:
            bad.append(row)
            return "error"

        try:
            table = self._read_piece(piece, self._convert_options(piece), on_invalid)
        except pa.ArrowInvalid as exc:
            if bad:
                raise self._ragged(piece.data, piece.first_line, bad[0]) from exc
            # Numbers blank but for spaces are null, as the Polars path reads them.
            try:
                blanks = _blanks(self._numbers_as_text(piece, _NULLS).columns)
            except pa.ArrowInvalid:  # not a number problem: the message says what it is
                blanks = []
            if not blanks:
                raise self._conversion_error(piece, exc) from exc
            convert = self._convert_options(piece)
            convert.null_values = [*_NULLS, *blanks]
            try:
                table = self._read_piece(piece, convert)
            except pa.ArrowInvalid as again:
                raise self._conversion_error(piece, again, convert.null_values) from again
        batch = _empty_text_as_null(_as_batch(table), piece.numeric, lambda names: self._empty_fields(piece, names))
        # "NaN" is one of pyarrow's null values, but "NAN" or "+nan" parse as NaN: null too, as
        # the Polars path reads every NaN
        numeric = set(piece.numeric)
        return pa.RecordBatch.from_arrays(
            [_nan_as_null(batch.column(i)) if name in numeric else batch.column(i)
             for i, name in enumerate(batch.schema.names)], names=batch.schema.names)

    def _line(self, data: bytes, first_line: int, record: int) -> int:
        """The file line of record ``record`` (0-based, empty lines skipped) of ``data``."""
        return int(_record_lines(data, first_line, self._delimiter)[record])

    def where(self, piece: Piece, row: int) -> str:
        return f"line {self._line(piece.data, piece.first_line, row)}"

    def _ragged(self, data: bytes, first_line: int, row) -> DataError:
        """The error for pyarrow's invalid ``row`` of ``data``: a record with the wrong number of fields."""
        return DataError(f"{_display(self.path)}, line {self._line(data, first_line, row.number - 1)}: "
                         f"expected {row.expected_columns} fields, found {row.actual_columns}")

    def _empty_fields(self, piece: Piece, names: Sequence[str]) -> dict[str, pa.Array] | None:
        """Where the text columns ``names`` hold an empty field rather than ``""``; None if nowhere.

        ``""`` is the only way to write a quoted empty text: without two quotes in a row, every
        empty value is an empty field. Else the piece is read once more, those columns only.
        """
        quotes = np.flatnonzero(np.frombuffer(piece.data, dtype=np.uint8) == _QUOTE[0])
        if not (np.diff(quotes) == 1).any():
            return None
        convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in names}, include_columns=list(names),
                                       null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False)
        batch = _as_batch(self._read_piece(piece, convert))
        return {name: batch.column(name).is_null() for name in names}

    def _record_too_long(self, buf: bytearray, end: int, first_line: int) -> None:
        """Raise the DataError for a record that runs on past :data:`MAX_RECORD_BYTES` from
        ``first_line`` (``buf[:end]``): name the line of the quote that holds it open, if one does."""
        opening = max(_unclosed_quote(buf, self._delimiter, end), 0)
        raise DataError(f"{_display(self.path)}, line {first_line + _count(buf, _NL, 0, opening)}: a record "
                        f"runs on for more than {MAX_RECORD_BYTES >> 20} MiB (a quoted field not closed?)")

    def _check_quotes_closed(self, data: bytes, first_line: int) -> None:
        """Raise a DataError if a quoted field is open at the end of ``data``, the input's end."""
        opening = _unclosed_quote(data, self._delimiter)
        if opening >= 0:
            line = first_line + _count(data, _NL, 0, opening)
            raise DataError(f"{_display(self.path)}, line {line}: a quoted field is not closed "
                            "before the end of the file")

    def _numbers_as_text(self, piece: Piece, null_values: Sequence[str]) -> pa.Table:
        """The piece's numeric columns as text, ``null_values`` null as in the float parse."""
        convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in self.columns},
            include_columns=list(piece.numeric),
            null_values=list(null_values),
            strings_can_be_null=True,
        )
        return self._read_piece(piece, convert)

    def _conversion_error(self, piece: Piece, exc: Exception, null_values: Sequence[str] = _NULLS) -> DataError:
        """Find the value behind a failed conversion by re-reading the piece (error path)."""
        try:
            text = self._numbers_as_text(piece, null_values)
            found = [(i, name) for name in piece.numeric
                     if (i := first_bad_float(text.column(name))) is not None]
        except pa.ArrowInvalid:
            found = []
        if not found:  # not a number problem (say, invalid UTF-8): report pyarrow's message
            message = str(exc)
            where = re.search(r"Row #(\d+)", message)
            if where:  # pyarrow counts records within the piece; say the file line instead
                lines = _record_lines(piece.data, piece.first_line, self._delimiter)
                number = int(where.group(1))
                if 0 < number <= len(lines):
                    message = message.replace(where.group(0), f"line {lines[number - 1]}")
            # pyarrow names bytes that are not UTF-8 in a text column as such, and in a number
            # column as a value that is no number, shown with replacement characters
            text = re.fullmatch(r"In CSV column #(\d+): (line \d+): CSV conversion error to "
                                r"(?:string: invalid UTF8 data|double: invalid value '.*\ufffd.*')", message, re.S)
            if text and text.group(0).endswith("'") and _is_utf8(piece.data):
                text = None  # a value that holds U+FFFD itself
            if text and int(text.group(1)) < len(self.columns):  # pyarrow counts the file's columns
                name = self.columns[int(text.group(1))]
                return DataError(f"{_display(self.path)}, {text.group(2)}: column '{name}' holds bytes "
                                 "that are not UTF-8")
            return DataError(f"cannot parse {_display(self.path)}: {message}")
        index, name = min(found, key=lambda item: item[0])
        line = self._line(piece.data, piece.first_line, index)
        value = text.column(name)[index].as_py()
        return DataError(f"column '{name}': value '{value}' on line {line} is not a number")

    def close(self) -> None:
        if self._lines is not None:
            self._lines.close()
        if not self._stdin:  # standard input is not this source's to close
            self._stream.close()
        if self._raw is not None:
            self._raw.close()


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _nan_as_null(column: pa.Array) -> pa.Array:
    """A float64 column with NaN as null, as pyarrow's CSV reader reads "NaN" (no copy without NaN)."""
    if not len(column):
        return column
    values = float64_values(column)
    valid = ~np.isnan(values)
    if valid.all():
        return column
    if column.null_count:
        valid &= validity(column)
    return from_values(values, pa.float64(), valid)


def _empty_text_as_null(batch: pa.RecordBatch, numeric: Sequence[str],
                        empty_fields: Callable[[list[str]], dict[str, pa.Array] | None]) -> pa.RecordBatch:
    """Text as the Polars path reads it: ``string_view``, an empty field as null.

    A quoted empty text (``""``) stays an empty string: the CSV writer writes null back as an
    empty field and an empty string as ``""``. ``empty_fields`` is asked, with the names of the
    text columns holding empty strings, where those are empty fields (None: everywhere).
    """
    arrays = list(batch.columns)
    names = batch.schema.names
    text = [i for i, name in enumerate(names) if name not in numeric and pa.types.is_string(arrays[i].type)]
    if not text:  # a fit's numeric columns: nothing to do, nor pyarrow.compute to import
        return batch
    import pyarrow.compute as pc  # imported where used, as pyarrow.parquet: 50 ms of start-up

    empty = {}
    for i in text:
        found = pc.equal(pc.utf8_length(arrays[i]), 0)
        if pc.any(found).as_py():
            empty[names[i]] = found
    fields = empty_fields(list(empty)) if empty else None
    for i in text:
        name = names[i]
        if name in empty:
            mask = empty[name] if fields is None else fields[name]
            arrays[i] = pc.if_else(mask, pa.scalar(None, pa.string()), arrays[i])
        arrays[i] = arrays[i].cast(pa.string_view())
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _as_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    if batches:
        return batches[0]
    return pa.RecordBatch.from_pylist([], schema=table.schema)
