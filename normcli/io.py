"""Batch sources and sinks: CSV/TSV/Parquet files and stdin/stdout, with atomic commit.

Arrow record batches are the currency; this module knows nothing of normalization methods.

Reading CSV is split in two so that parsing can use every core: :meth:`Source.pieces` cuts
the raw bytes at record boundaries (cheap, sequential, one producer thread) and
:meth:`Source.decode` parses one piece (heavy, thread-safe, a worker pool): with Polars when
that provably reads what pyarrow reads, else with ``pyarrow.csv.read_csv``. pyarrow's own
streaming reader parses on one core only (see MEASUREMENTS.md).

Writing CSV goes through Polars' ``write_csv`` because pyarrow's CSV writer cannot quote only
where needed, which byte-exact pass-through of text columns requires, and formats floats
about 1.8x slower.

Writing Parquet encodes in the workers too: pyarrow's ``ParquetWriter`` encodes on the one
thread that writes, so each batch is encoded as a complete Parquet file in memory (in a worker),
and the sink appends the column chunks of each in order and ends the output with one footer
listing all their row groups (:mod:`normcli.parquet_footer`). The bytes are those
``ParquetWriter`` itself would write for the same batches.
"""
from __future__ import annotations

import contextlib
import glob as _glob
import hashlib
import io as _pyio
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from . import parquet_footer
from .bitmaps import validity
from .errors import DataError, IOFailure, UsageError

FORMATS = ("csv", "tsv", "parquet")

_EXTENSIONS = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_BOM = b"\xef\xbb\xbf"
_QUOTE = b'"'
_NL = b"\n"
_PARQUET_BATCH_ROWS = 32768
DEFAULT_BLOCK_SIZE = 2 << 20


def detect_format(path: str, fmt: str | None) -> str:
    """Return the format of ``path``: ``fmt`` if given, else from the extension.

    ``.csv``/``.csv.gz`` -> csv, ``.tsv``/``.tsv.gz`` -> tsv, ``.parquet``/``.pq`` -> parquet.
    Stdin (``"-"``) and unknown extensions default to csv. An unknown ``fmt`` is a UsageError.
    """
    if fmt is not None:
        name = fmt.lower()
        if name not in FORMATS:
            raise UsageError(f"unknown format '{fmt}' (expected one of: {', '.join(FORMATS)})")
        return name
    lower = path.lower()
    for ext, name in _EXTENSIONS.items():
        if lower.endswith(ext):
            return name
    return "csv"


def _display(path: str) -> str:
    return "standard input" if path == "-" else f"'{path}'"


def _pq():
    """``pyarrow.parquet``, imported at first use: CSV runs need not pay its start-up."""
    import pyarrow.parquet as pq

    return pq


def _read_failure(path: str, exc: OSError) -> IOFailure:
    reason = exc.strerror or str(exc)
    return IOFailure(f"cannot read {_display(path)}: {reason}")


@dataclass
class Piece:
    """One unit of work for :meth:`Source.decode`.

    ``nbytes`` is the input bytes it covers (for progress); ``first_line`` is the file line
    number of its first record (CSV, header = line 1) or its first row number, 1-based
    (Parquet). ``data`` holds the raw CSV bytes or the Parquet record batch.
    """

    data: bytes | pa.RecordBatch
    nbytes: int
    first_line: int
    numeric: tuple[str, ...] = ()
    keep_others: bool = True
    keep: tuple[str, ...] = ()


class Source:
    """A tabular input opened by :func:`open_source`.

    Attributes: ``path`` (as given, ``"-"`` is stdin), ``format``, ``columns`` (header names in
    file order), ``size`` (bytes of the file, None for stdin).
    """

    path: str
    format: str
    columns: list[str]
    size: int | None

    def sample_types(self) -> dict[str, pa.DataType]:
        """Types pyarrow infers from the first block (CSV) or the schema (Parquet).

        Does not consume the stream.
        """
        raise NotImplementedError

    def pieces(self, numeric: Sequence[str], keep_others: bool, keep: Sequence[str] = ()) -> Iterator[Piece]:
        """Yield the input as pieces, sequentially and cheaply. Single use.

        Without ``keep_others``, the ``keep`` columns are still read, as pass-through columns.
        """
        raise NotImplementedError

    def decode(self, piece: Piece) -> pa.RecordBatch:
        """Turn a piece into a record batch (thread-safe).

        The batch holds the ``numeric`` columns as float64 and, if ``keep_others``, every other
        column too, all in file order (without ``keep_others``: ``numeric`` in the order given,
        then the ``keep`` columns).
        CSV pass-through columns are strings exactly as read; Parquet ones keep their type.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the underlying file or stream."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_columns(self, numeric: Sequence[str]) -> tuple[str, ...]:
        known = set(self.columns)
        missing = [c for c in numeric if c not in known]
        if missing:
            names = ", ".join(f"'{c}'" for c in missing)
            raise DataError(f"{_display(self.path)} has no column {names}")
        return tuple(dict.fromkeys(numeric))

    def _output_columns(self, piece: Piece) -> list[str]:
        if piece.keep_others:
            return list(self.columns)
        return list(piece.numeric) + [c for c in piece.keep if c not in piece.numeric]


def _record_boundary(buf: bytes, end: int | None = None) -> int:
    """Return the index just past the last newline outside quotes in ``buf[:end]``, or -1.

    ``buf`` must start at a record boundary. A newline is outside quotes when the number of
    quote characters before it is even (RFC 4180 doubling keeps the parity right).
    """
    end = len(buf) if end is None else end
    pos = buf.rfind(_NL, 0, end)
    if pos < 0:
        return -1
    if buf.find(_QUOTE, 0, pos) < 0:  # the common case, at memchr speed: no quotes at all
        return pos + 1
    before = _count(buf, _QUOTE, 0, pos)
    while before % 2:
        prev = buf.rfind(_NL, 0, pos)
        if prev < 0:
            return -1
        before -= buf.count(_QUOTE, prev, pos)
        pos = prev
    return pos + 1


def _count(buf: bytes, byte: bytes, start: int = 0, end: int | None = None) -> int:
    """``buf.count(byte, start, end)`` for one byte, about 5x faster through NumPy."""
    arr = np.frombuffer(buf, dtype=np.uint8)[start:end]
    return int(np.count_nonzero(arr == byte[0]))


def _fields_exact(data: bytes, sep: bytes, fields: int, rows: int, each_line: bool) -> bool:
    """Whether ``data`` (``rows`` lines, no quotes) holds ``fields`` fields on every line.

    Without ``each_line``, the total count of separators is compared: enough when no line can
    hold fewer (no null was padded in). With it, every line is counted.
    """
    if not each_line:
        return _count(data, sep) == rows * (fields - 1)
    arr = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(arr == _NL[0])
    if not len(ends) or ends[-1] != len(arr) - 1:
        ends = np.append(ends, len(arr))
    per_line = np.diff(np.searchsorted(np.flatnonzero(arr == sep[0]), ends), prepend=0)
    return len(per_line) == rows and bool((per_line == fields - 1).all())


def _record_lines(data: bytes, first_line: int) -> np.ndarray:
    """File line number of every non-empty record in ``data`` (error path only).

    Mirrors pyarrow, which skips empty lines and numbers only the records it keeps.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(arr == ord("\n"))
    quotes_before = np.cumsum(arr == ord('"'))
    # Quotes strictly before each newline; a newline is a record end when that count is even.
    counts = quotes_before[newlines] if len(newlines) else newlines
    ends = newlines[counts % 2 == 0]
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


class _CsvSource(Source):
    def __init__(self, path: str, fmt: str, delimiter: str, block_size: int, encoding: str,
                 default_size: bool = False):
        self._default_size = default_size  # block size not chosen by the caller: may be tuned
        self.path = path
        self.format = fmt
        self._delimiter = delimiter
        self._block_size = block_size
        self._encoding = encoding
        # The Polars parser is used for UTF-8 with a one-byte separator; otherwise pyarrow.
        self._polars_ok = encoding.lower().replace("-", "") == "utf8" and len(delimiter.encode()) == 1
        self._raw = None  # the file whose position measures progress (compressed for .gz)
        self._used = False
        if path == "-":
            self.size = None
            self._stream = sys.stdin.buffer
        else:
            try:
                with open(path, "rb"):
                    pass
                self.size = os.path.getsize(path)
                if path.lower().endswith(".gz"):
                    self._raw = pa.OSFile(path, "rb")
                    self._stream = pa.CompressedInputStream(self._raw, "gzip")
                else:
                    self._stream = open(path, "rb")
            except OSError as exc:
                raise _read_failure(path, exc) from exc
        self._consumed = 0
        self._read_header()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Around one read of the input: a failure becomes an IOFailure or a DataError naming it."""
        try:
            yield
        except OSError as exc:
            raise _read_failure(self.path, exc) from exc
        except pa.ArrowInvalid as exc:  # a damaged gzip stream
            raise DataError(f"cannot read {_display(self.path)}: {exc}") from exc

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

    def _advance(self, n: int) -> None:
        if self._raw is None:  # for gzip, progress is the compressed file's position instead
            self._consumed += n

    def _position(self) -> int:
        """Input bytes consumed so far (compressed bytes for gzip)."""
        return self._raw.tell() if self._raw is not None else self._consumed

    def _read_header(self) -> None:
        buf = self._read(self._block_size)
        if buf.startswith(_BOM):
            buf = buf[len(_BOM):]
        line = 1
        while True:
            cut = self._first_boundary(buf)
            while cut < 0:
                more = self._read(self._block_size)
                if not more:
                    cut = len(buf)  # a header without a trailing newline
                    break
                buf += more
                cut = self._first_boundary(buf)
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
        self._first_line = line + header.count(_NL)
        self._pending = buf

    @staticmethod
    def _first_boundary(buf: bytes) -> int:
        quotes, start = 0, 0
        pos = buf.find(_NL)
        while pos >= 0:
            quotes += buf.count(_QUOTE, start, pos)
            if quotes % 2 == 0:
                return pos + 1
            start, pos = pos, buf.find(_NL, pos + 1)
        return -1

    def _parse_options(self, handler=None) -> pacsv.ParseOptions:
        return pacsv.ParseOptions(delimiter=self._delimiter, invalid_row_handler=handler)

    def sample_types(self) -> dict[str, pa.DataType]:
        buf = self._pending[: self._block_size]
        cut = _record_boundary(buf)
        if cut < 0:
            cut = len(buf) if len(self._pending) <= self._block_size else 0
        if not buf[:cut].strip(b"\r\n"):
            return {name: pa.null() for name in self.columns}
        try:
            table = pacsv.read_csv(
                pa.BufferReader(buf[:cut]),
                read_options=pacsv.ReadOptions(
                    column_names=self.columns,
                    use_threads=False,
                    block_size=max(cut, 1 << 16),
                    encoding=self._encoding,
                ),
                # Bad rows are reported by decode(), with their line numbers.
                parse_options=self._parse_options(_row_handler(lambda row: "skip")),
            )
        except pa.ArrowInvalid as exc:
            raise DataError(f"cannot parse {_display(self.path)}: {exc}") from exc
        return {name: table.schema.field(name).type for name in self.columns}

    def pieces(self, numeric: Sequence[str], keep_others: bool, keep: Sequence[str] = ()) -> Iterator[Piece]:
        if self._used:
            raise RuntimeError("Source.pieces() can be used only once")
        self._used = True
        numeric = self._check_columns(numeric)
        keep = self._check_columns(keep)
        # Reading a few columns of a piece (fit, check) holds far less than transforming all of
        # them: twice the bytes per piece then halves the per-piece overhead at the same memory.
        size = self._block_size if keep_others or not self._default_size else 2 * self._block_size
        # One buffer, read into and reused: a piece is copied once, out of it, and the partial
        # record after the piece's last boundary moves to the front for the next piece.
        buf = bytearray(max(size, len(self._pending)))
        filled = len(self._pending)
        buf[:filled], self._pending = self._pending, b""
        line = self._first_line
        mark = 0  # input position at the start of the next piece
        eof = False
        while filled or not eof:
            # Gather at least size bytes, or a whole record if one is longer than that.
            while not eof and filled < size:
                n = self._read_into(buf, filled, size)
                eof = n == 0
                filled += n
            cut = filled if eof else _record_boundary(buf, filled)
            if cut < 0:
                buf.extend(bytes(self._block_size))
                n = self._read_into(buf, filled, len(buf))
                eof = n == 0
                filled += n
                continue
            with memoryview(buf) as view:
                data = view[:cut].tobytes()
            buf[:filled - cut] = buf[cut:filled]
            filled -= cut
            newlines = _count(data, _NL)
            # Only blank lines (or nothing): no record to parse. Checking the first byte first
            # avoids copying a whole piece in strip().
            if data[:1] in (b"", b"\n", b"\r") and not data.strip(b"\r\n"):
                line += newlines
                continue
            pos = self._position()
            yield Piece(data, pos - mark, line, numeric, keep_others, keep)
            mark = pos
            line += newlines

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
        if self._polars_ok:
            try:
                return self._decode_polars(piece)
            except Exception:  # any doubt (null tokens, ragged rows, bad text): the exact path
                pass
        return self._decode_arrow(piece)

    def _decode_polars(self, piece: Piece) -> pa.RecordBatch:
        """Parse with Polars (about twice as fast as pyarrow on one core).

        Gives the same batch as :meth:`_decode_arrow` on well-formed input: NaN in a numeric
        column becomes null (pyarrow reads "NaN" as null), text columns are strings as read.
        Anything Polars rejects, such as the null tokens ``NA`` or ``null`` in a numeric
        column, goes to the pyarrow path, which also produces the exact error messages.
        Pieces with quotes go there too: only without them does counting separators prove
        that every row has as many fields as the header (Polars pads a short row where pyarrow
        reports it, and ignores the extra fields of a long row when it parses some columns only).
        """
        if piece.data.find(_QUOTE) >= 0:
            raise ValueError("quoted fields")
        import polars as pl  # imported where used: Parquet-only runs need not pay for it

        wanted = set(piece.numeric)
        schema = {name: pl.Float64 if name in wanted else pl.String for name in self.columns}
        columns = self._output_columns(piece)
        # The last column is always parsed: Polars pads a short row with nulls, so a last column
        # without nulls proves that no row is short, without counting separators.
        last = self.columns[-1]
        parsed = columns if last in columns else [*columns, last]
        index = {name: i for i, name in enumerate(self.columns)}
        frame = pl.read_csv(piece.data, has_header=False, schema=schema,
                            columns=sorted(index[c] for c in parsed), separator=self._delimiter,
                            # the piece holds no quote (checked above): quote handling would
                            # change nothing and costs about a tenth of the parse
                            quote_char=None,
                            empty_string_is_null=True, raise_if_empty=False,
                            truncate_ragged_lines=False)
        if frame.width != len(parsed):
            raise ValueError("column count")
        # Polars pads a short row with nulls, and when columns are left out it does not see a
        # long one at all: the separators tell, counted per line where a last field is empty.
        short = frame.get_column(last).null_count() > 0
        if (short or len(parsed) < len(self.columns)) and not _fields_exact(
                piece.data, self._delimiter.encode(), len(self.columns), frame.height, each_line=short):
            raise ValueError("ragged rows")
        # Text stays in Polars' layout, Arrow's string_view: no copy here or in the CSV writer.
        batch = _as_batch(frame.to_arrow(compat_level=pl.CompatLevel.newest()))
        return pa.RecordBatch.from_arrays(
            [_nan_as_null(batch.column(c)) if c in wanted else batch.column(c) for c in columns], names=columns)

    def _decode_arrow(self, piece: Piece) -> pa.RecordBatch:
        bad: list = []

        @_row_handler
        def on_invalid(row) -> str:
            bad.append(row)
            return "error"

        try:
            table = self._read_piece(piece, self._convert_options(piece), on_invalid)
        except pa.ArrowInvalid as exc:
            if bad:
                row = bad[0]
                line = _record_lines(piece.data, piece.first_line)[row.number - 1]
                raise DataError(
                    f"{_display(self.path)}, line {line}: expected {row.expected_columns} "
                    f"fields, found {row.actual_columns}"
                ) from exc
            raise self._conversion_error(piece, exc) from exc
        return _empty_text_as_null(_as_batch(table), piece.numeric)

    def _conversion_error(self, piece: Piece, exc: Exception) -> DataError:
        """Find the value behind a failed conversion by re-reading the piece (error path)."""
        # Numeric columns as text, with the same null values the float parse accepts.
        convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in self.columns},
            include_columns=list(piece.numeric),
            strings_can_be_null=True,
        )
        try:
            text = self._read_piece(piece, convert)
            found = [(i, name) for name in piece.numeric
                     if (i := _first_bad_float(text.column(name))) is not None]
        except pa.ArrowInvalid:
            found = []
        if not found:  # not a number problem (say, invalid UTF-8): report pyarrow's message
            message = str(exc)
            where = re.search(r"Row #(\d+)", message)
            if where:  # pyarrow counts records within the piece; say the file line instead
                lines = _record_lines(piece.data, piece.first_line)
                number = int(where.group(1))
                if 0 < number <= len(lines):
                    message = message.replace(where.group(0), f"line {lines[number - 1]}")
            return DataError(f"cannot parse {_display(self.path)}: {message}")
        index, name = min(found, key=lambda item: item[0])
        line = _record_lines(piece.data, piece.first_line)[index]
        value = text.column(name)[index].as_py()
        return DataError(f"column '{name}': value '{value}' on line {line} is not a number")

    def close(self) -> None:
        if self._stream is not sys.stdin.buffer:
            self._stream.close()
        if self._raw is not None:
            self._raw.close()


def _first_bad_float(column: pa.ChunkedArray) -> int | None:
    """Index of the first value that does not cast to float64, by bisection; None if all do."""

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


def _nan_as_null(column: pa.Array) -> pa.Array:
    """A float64 column with NaN as null, as pyarrow's CSV reader reads "NaN" (no copy without NaN)."""
    n, offset = len(column), column.offset
    if not n:
        return column
    values = np.frombuffer(column.buffers()[1], dtype=np.float64, count=offset + n)[offset:]
    valid = ~np.isnan(values)
    if valid.all():
        return column
    if column.null_count:
        valid &= validity(column)
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.float64(), n, [bitmap, pa.py_buffer(np.ascontiguousarray(values))],
                                 null_count=n - int(np.count_nonzero(valid)))


def _empty_text_as_null(batch: pa.RecordBatch, numeric: Sequence[str]) -> pa.RecordBatch:
    """Text as the Polars path reads it: ``string_view``, an empty field as null.

    CSV cannot tell an empty text from a missing one; null is what the writer writes back empty.
    """
    import pyarrow.compute as pc  # imported where used, as pyarrow.parquet: 50 ms of start-up

    arrays = list(batch.columns)
    for i, name in enumerate(batch.schema.names):
        if name not in numeric and pa.types.is_string(arrays[i].type):
            empty = pc.equal(pc.utf8_length(arrays[i]), 0)
            if pc.any(empty).as_py():
                arrays[i] = pc.if_else(empty, pa.scalar(None, pa.string()), arrays[i])
            arrays[i] = arrays[i].cast(pa.string_view())
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _as_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    if batches:
        return batches[0]
    return pa.RecordBatch.from_pylist([], schema=table.schema)


class _ParquetSource(Source):
    def __init__(self, path: str, batch_rows: int = _PARQUET_BATCH_ROWS):
        self._setup(path, batch_rows)
        try:
            if path == "-":
                # Parquet needs random access: spool stdin to an anonymous temp file.
                self._spool = tempfile.TemporaryFile(prefix="normcli-stdin-")
                shutil.copyfileobj(sys.stdin.buffer, self._spool, 1 << 20)
                self._spool.seek(0)
                self.size = None
                target = self._spool
            else:
                with open(path, "rb"):
                    pass
                self.size = os.path.getsize(path)
                target = path
            if self.size == 0 or (self._spool is not None and not self._spool_size()):
                raise DataError(f"{_display(path)} is empty")
            self._file = _pq().ParquetFile(target, pre_buffer=False, buffer_size=1 << 20)
        except OSError as exc:
            self._close_spool()
            raise _read_failure(path, exc) from exc
        except pa.ArrowInvalid as exc:
            self._close_spool()
            raise DataError(f"{_display(path)} is not a Parquet file: {exc}") from exc
        except DataError:
            self._close_spool()
            raise
        self._schema = self._file.schema_arrow
        self.columns = list(self._schema.names)
        dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if dupes:
            names = ", ".join(f"'{c}'" for c in dupes)
            raise DataError(f"{_display(path)} has duplicate column names: {names}")

    def _setup(self, path: str, batch_rows: int) -> None:
        """The fields every Parquet source has before it opens its input."""
        self._batch_rows = batch_rows
        self.path = path
        self.format = "parquet"
        self._spool = None
        self._used = False

    def sample_types(self) -> dict[str, pa.DataType]:
        return {f.name: f.type for f in self._schema}

    def _total_rows(self) -> int:
        return self._file.metadata.num_rows

    def _batches(self, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        return self._file.iter_batches(batch_size=self._batch_rows, columns=columns)

    def pieces(self, numeric: Sequence[str], keep_others: bool, keep: Sequence[str] = ()) -> Iterator[Piece]:
        if self._used:
            raise RuntimeError("Source.pieces() can be used only once")
        self._used = True
        numeric = self._check_columns(numeric)
        keep = self._check_columns(keep)
        total_rows = max(self._total_rows(), 1)
        size = self.size if self.size is not None else self._spool_size()
        columns = None if keep_others else list(dict.fromkeys([*numeric, *keep]))
        row = 1
        try:
            for batch in self._batches(columns):
                yield Piece(batch, size * batch.num_rows // total_rows, row, numeric, keep_others, keep)
                row += batch.num_rows
        except OSError as exc:
            raise _read_failure(self.path, exc) from exc
        except pa.ArrowInvalid as exc:
            raise DataError(f"cannot read {_display(self.path)}: {exc}") from exc

    def decode(self, piece: Piece) -> pa.RecordBatch:
        batch = piece.data
        arrays = []
        names = self._output_columns(piece)
        wanted = set(piece.numeric)
        for name in names:
            column = batch.column(name)
            if name in wanted and column.type != pa.float64():
                column = self._to_float(name, column, piece.first_line)
            arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def _to_float(self, name: str, column: pa.Array, first_row: int) -> pa.Array:
        try:
            # Unsafe: a large int64 rounds to the nearest double rather than failing.
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                return column.cast(pa.float64())
            return column.cast(pa.float64(), safe=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                index = _first_bad_float(pa.chunked_array([column]))
                if index is not None:
                    value = column[index].as_py()
                    raise DataError(
                        f"column '{name}': value '{value}' on row {first_row + index} "
                        "is not a number"
                    ) from exc
            raise DataError(f"column '{name}' of type {column.type} is not numeric") from exc

    def _spool_size(self) -> int:
        return os.fstat(self._spool.fileno()).st_size

    def _close_spool(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def close(self) -> None:
        self._file.close()
        self._close_spool()


class _DatasetSource(_ParquetSource):
    """One Parquet file of a hive-partitioned directory, read through ``pyarrow.dataset``.

    The ``key=value`` directories between ``base`` and the file become string columns after the
    file's own, so they can select or group rows without being fitted as numbers by default.
    """

    def __init__(self, path: str, base: str, batch_rows: int = _PARQUET_BATCH_ROWS):
        self._setup(path, batch_rows)
        try:
            self.size = os.path.getsize(path)
            if self.size == 0:
                raise DataError(f"{_display(path)} is empty")
            keys = [part.split("=", 1)[0] for part in _hive_parts(os.path.relpath(os.path.dirname(path), base))]
            import pyarrow.dataset as pads  # only here: it pulls in pandas, ~0.2 s and 40 MB

            partitioning = pads.partitioning(pa.schema([(k, pa.string()) for k in keys]), flavor="hive")
            self._dataset = pads.dataset([path], format="parquet", partitioning=partitioning,
                                         partition_base_dir=base)
        except OSError as exc:
            raise _read_failure(path, exc) from exc
        except pa.ArrowInvalid as exc:
            raise DataError(f"{_display(path)} is not a Parquet file: {exc}") from exc
        self._schema = self._dataset.schema
        self.columns = list(self._schema.names)

    def _total_rows(self) -> int:
        return self._dataset.count_rows()

    def _batches(self, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        return self._dataset.to_batches(columns=columns, batch_size=self._batch_rows,
                                        batch_readahead=2, fragment_readahead=1)

    def close(self) -> None:
        pass


def _hive_parts(reldir: str) -> list[str]:
    parts = [p for p in reldir.split(os.sep) if p and p != "."]
    return parts if parts and all("=" in p and not p.startswith("=") for p in parts) else []


@dataclass(frozen=True)
class InputFile:
    """One input file found by :func:`expand_inputs`.

    ``path`` opens it; ``name`` is its name relative to the argument that found it (the file's
    own name, its path under a directory, or under a glob's fixed prefix), used to name its
    output; ``base`` is the hive-partitioned directory it lies in, if any.
    """

    path: str
    name: str
    base: str | None = None


def _is_data_file(name: str) -> bool:
    lower = name.lower()
    return not name.startswith((".", "_")) and any(lower.endswith(ext) for ext in _EXTENSIONS)


def _walk(directory: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(directory, onerror=None):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found.extend(os.path.join(root, f) for f in sorted(files) if _is_data_file(f))
    return found


def _glob_root(pattern: str) -> str:
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts[:-1]:
        if _glob.has_magic(part):
            break
        fixed.append(part)
    return os.sep.join(fixed)


def expand_inputs(specs: Sequence[str]) -> list[InputFile]:
    """The ordered list of input files named by ``specs``: files, ``-``, directories and globs.

    A directory stands for every CSV, TSV and Parquet file under it (recursively, sorted by path,
    skipping names starting with ``.`` or ``_``); a Parquet file under ``key=value`` directories
    is read with those keys as columns. A glob (``*``, ``?``, ``[..]``, ``**``) stands for the
    files it matches, sorted. A file named twice is read once. Nothing found is an IOFailure.
    """
    out: list[InputFile] = []
    seen: set[str] = set()

    def add(item: InputFile) -> None:
        key = item.path if item.path == "-" else os.path.realpath(item.path)
        if key not in seen:
            seen.add(key)
            out.append(item)

    for spec in specs:
        if spec == "-":
            add(InputFile("-", "-"))
        elif os.path.isdir(spec):
            files = _walk(spec)
            if not files:
                raise IOFailure(f"cannot read '{spec}': the directory holds no CSV, TSV or Parquet file")
            for f in files:
                rel = os.path.relpath(f, spec)
                hive = _hive_parts(os.path.dirname(rel)) and detect_format(f, None) == "parquet"
                add(InputFile(f, rel, spec if hive else None))
        elif _glob.has_magic(spec) and not os.path.exists(spec):
            matches = sorted(m for m in _glob.glob(spec, recursive=True) if os.path.isfile(m))
            if not matches:
                raise IOFailure(f"cannot read '{spec}': no file matches")
            root = _glob_root(spec)
            for m in matches:
                add(InputFile(m, os.path.relpath(m, root) if root else m))
        else:
            add(InputFile(spec, os.path.basename(spec) or spec))
    return out


def open_input(item: InputFile, fmt: str | None = None, delimiter: str | None = None) -> Source:
    """Open an :class:`InputFile`: hive-partitioned Parquet through ``pyarrow.dataset``, else :func:`open_source`."""
    if item.base is not None and fmt in (None, "parquet"):
        return _DatasetSource(item.path, item.base)
    return open_source(item.path, fmt=fmt, delimiter=delimiter)


_FINGERPRINT_SPAN = 1 << 20


def fingerprint(path: str) -> dict:
    """Identity of an input file: absolute path, size, mtime and a SHA-256 of its content.

    The hash covers the whole file when it is under 2 MiB, else its first and last MiB (so that
    the cost does not grow with the file). ``-`` (stdin) has no fingerprint: raises UsageError.
    """
    if path == "-":
        raise UsageError("standard input has no fingerprint")
    try:
        st = os.stat(path)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            if st.st_size < 2 * _FINGERPRINT_SPAN:
                for chunk in iter(lambda: f.read(_FINGERPRINT_SPAN), b""):
                    digest.update(chunk)
            else:
                digest.update(f.read(_FINGERPRINT_SPAN))
                f.seek(-_FINGERPRINT_SPAN, os.SEEK_END)
                digest.update(f.read(_FINGERPRINT_SPAN))
    except OSError as exc:
        raise _read_failure(path, exc) from exc
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime": st.st_mtime,
            "sha256": digest.hexdigest()}


def spool_stdin(suffix: str) -> str:
    """Copy standard input to a new temporary file (in chunks) and return its path.

    The caller removes the file; on any failure here it is removed before the error propagates.
    """
    fd, tmp = tempfile.mkstemp(prefix="normcli-stdin-", suffix=suffix)
    done = False
    try:
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
        done = True
    except OSError as exc:
        raise _read_failure("-", exc) from exc
    finally:
        if not done:
            discard(tmp)
    return tmp


def discard(path: str) -> None:
    """Delete the file ``path`` if it exists (cleanup: errors are ignored)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def output_path(directory: str, item: InputFile, fmt: str | None) -> str:
    """Where the output of ``item`` goes under ``directory``: the same relative name, with the
    extension of ``fmt`` when that differs from the input's. Parent directories are created."""
    name = item.name
    if fmt is not None and detect_format(name, None) != fmt:
        lower = name.lower()
        for ext in sorted(_EXTENSIONS, key=len, reverse=True):
            if lower.endswith(ext):
                name = name[: -len(ext)]
                break
        name += {"csv": ".csv", "tsv": ".tsv", "parquet": ".parquet"}[fmt]
    path = os.path.join(directory, name)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    except OSError as exc:
        raise IOFailure(f"cannot write '{path}': {exc.strerror or exc}") from exc
    return path


def open_source(
    path: str,
    fmt: str | None = None,
    delimiter: str | None = None,
    block_size: int | None = None,
    encoding: str = "utf8",
) -> Source:
    """Open ``path`` (``"-"`` for stdin) and read its header.

    Missing or unreadable input raises IOFailure; empty input or duplicate column names raise
    DataError. ``tsv`` means a tab delimiter unless ``delimiter`` says otherwise. A UTF-8 BOM is
    stripped. ``block_size`` is the approximate size of a CSV piece (bytes) or of a Parquet
    batch (rows); by default 2 MiB and 32,768 rows (peak memory against speed, measured), or ``NORMCLI_BLOCK_SIZE`` from the environment.
    """
    fmt = detect_format(path, fmt)
    if block_size is None:
        env = os.environ.get("NORMCLI_BLOCK_SIZE", "")
        block_size = int(env) if env.isdigit() and int(env) > 0 else None
    if fmt == "parquet":
        return _ParquetSource(path, block_size or _PARQUET_BATCH_ROWS)
    default_size = block_size is None
    block_size = block_size or DEFAULT_BLOCK_SIZE
    if delimiter is None:
        delimiter = "\t" if fmt == "tsv" else ","
    if len(delimiter) != 1:
        raise UsageError(f"the delimiter must be one character, not '{delimiter}'")
    return _CsvSource(path, fmt, delimiter, max(int(block_size), 1), encoding, default_size)


class Sink:
    """An output opened by :func:`open_sink`: ``encode`` in workers, ``write`` in order.

    Output goes to a temporary file beside the target, renamed into place by ``commit``. As a
    context manager it commits on success and aborts on any exception.
    """

    def __init__(self, path: str | None, fmt: str, schema: pa.Schema):
        self.path = path
        self.format = fmt
        self.schema = schema
        self._tmp: str | None = None
        self._done = False

    def encode(self, batch: pa.RecordBatch) -> object:
        """Prepare a batch for :meth:`write` (thread-safe)."""
        raise NotImplementedError

    def write(self, encoded: object) -> None:
        """Write an encoded batch; call in input order."""
        raise NotImplementedError

    def commit(self) -> None:
        """Finish the output: flush, fsync and rename into place (stdout: flush)."""
        if self._done:
            return
        self._finish()
        self._done = True
        try:
            self._close()
            if self._tmp is None:
                self._out.flush()
                return
        except BrokenPipeError:
            raise
        except OSError as exc:
            self._remove_tmp()
            raise self._write_failure(exc) from exc
        self._install()

    def abort(self) -> None:
        """Discard the output: close and delete the temporary file."""
        if self._done:
            return
        self._done = True
        try:
            self._close()
        except Exception:  # noqa: BLE001 - the output is being thrown away anyway
            pass
        self._remove_tmp()

    def _finish(self) -> None:
        """Write what a complete output needs before it is closed (a header, say)."""

    def _close(self) -> None:
        """Close the format's writer and, for a file, the file."""
        raise NotImplementedError

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()

    def _write_failure(self, exc: OSError) -> IOFailure:
        reason = exc.strerror or str(exc)
        where = f"'{self.path}'" if self.path else "standard output"
        return IOFailure(f"cannot write {where}: {reason}")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Around one write: an OSError becomes an IOFailure naming the output (a closed pipe
        stays a BrokenPipeError, which the CLI treats as a quiet end); then write-back."""
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._write_failure(exc) from exc
        self._start_writeback()

    _WRITEBACK_STEP = 32 << 20

    def _start_writeback(self) -> None:
        """Have the kernel start writing the finished part of the temporary file to disk.

        Called after each write: every 32 MiB it asks for write-back (fadvise DONTNEED starts it
        without waiting, and drops pages already on disk), so that the fsync before the rename
        waits only for the tail instead of the whole output, and the page cache does not fill up.
        """
        if self._tmp is None or not hasattr(os, "posix_fadvise"):
            return
        if getattr(self, "_wb_fd", None) is None:
            self._wb_fd, self._wb_done = os.open(self._tmp, os.O_RDONLY), 0
        size = os.fstat(self._wb_fd).st_size
        if size - self._wb_done >= self._WRITEBACK_STEP:
            os.posix_fadvise(self._wb_fd, 0, size, os.POSIX_FADV_DONTNEED)
            self._wb_done = size

    def _close_writeback(self) -> None:
        if getattr(self, "_wb_fd", None) is not None:
            os.close(self._wb_fd)
            self._wb_fd = None

    def _remove_tmp(self) -> None:
        self._close_writeback()
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
            self._tmp = None

    def _install(self) -> None:
        """fsync the temporary file and rename it over the target."""
        self._close_writeback()
        try:
            fd = os.open(self._tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self._remove_tmp()
            raise self._write_failure(exc) from exc
        self._tmp = None


def _quote_field(name: str, sep: str) -> str:
    if any(ch in name for ch in (sep, '"', "\n", "\r")):
        return '"' + name.replace('"', '""') + '"'
    return name


class _CsvSink(Sink):
    def __init__(self, path, fmt, schema, delimiter, out, tmp):
        super().__init__(path, fmt, schema)
        self._sep = delimiter
        self._out = out
        self._tmp = tmp
        self._header = (
            delimiter.join(_quote_field(name, delimiter) for name in schema.names) + "\n"
        ).encode()
        self._header_written = False

    def encode(self, batch: pa.RecordBatch) -> memoryview:
        """CSV bytes of the rows, no header: null as an empty field, "" as `""`."""
        import polars as pl

        frame = pl.from_arrow(batch)
        if not isinstance(frame, pl.DataFrame):
            frame = frame.to_frame()
        buf = _pyio.BytesIO()
        try:
            frame.write_csv(
                buf, include_header=False, quote_style="necessary", separator=self._sep
            )
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"cannot write this data as CSV: {exc}") from exc
        return buf.getbuffer()  # a view, not a copy of the piece's text

    def _emit(self, data: bytes) -> None:
        with self._writing():
            self._out.write(data)

    def write(self, encoded: bytes) -> None:
        if not self._header_written:
            self._header_written = True
            self._emit(self._header)
        if encoded:
            self._emit(encoded)

    def _finish(self) -> None:
        if not self._header_written:
            self.write(b"")

    def _close(self) -> None:
        if self._tmp is not None:
            self._out.close()


@dataclass
class _EncodedParquet:
    """A batch encoded as a complete Parquet file, with where its footer starts and its row groups."""

    data: pa.Buffer
    footer_start: int
    groups: parquet_footer.RowGroups


class _ParquetSink(Sink):
    """Parquet encoded in the workers: ``encode`` makes each batch a Parquet file in memory,
    ``write`` appends its column chunks to the output, and the footer listing all their row
    groups comes last. Only ever appends, so stdout works as well as a file."""

    def __init__(self, path, schema, out, tmp):
        super().__init__(path, "parquet", schema)
        self._tmp = tmp
        self._out = out
        self._dictionary = [f.name for f in schema if not pa.types.is_floating(f.type)]
        self._position = 0
        self._footer = parquet_footer.Footer()

    def _parquet_file(self, batch: pa.RecordBatch | None) -> pa.Buffer:
        # No page index (pyarrow's default): its page locations would be offsets to shift too.
        stream = pa.BufferOutputStream()
        with _pq().ParquetWriter(stream, self.schema, use_dictionary=self._dictionary,
                              compression="snappy") as writer:
            if batch is not None:
                writer.write_batch(batch)
        return stream.getvalue()

    def encode(self, batch: pa.RecordBatch) -> _EncodedParquet:
        """The batch (text cast to the file's string type) as a Parquet file in memory."""
        if batch.schema != self.schema:
            batch = batch.cast(self.schema)
        data = self._parquet_file(batch)
        start, metadata = parquet_footer.read_footer(data)
        return _EncodedParquet(data, start, parquet_footer.RowGroups(metadata))

    def _emit(self, data) -> None:
        with self._writing():
            self._out.write(data)
        self._position += len(data)

    def write(self, encoded: _EncodedParquet) -> None:
        magic = len(parquet_footer.MAGIC)
        if self._position == 0:
            self._emit(parquet_footer.MAGIC)
        # The piece's column chunks follow its own magic; here they start at _position.
        delta = self._position - magic
        self._emit(memoryview(encoded.data)[magic:encoded.footer_start])
        self._footer.add(encoded.groups, delta)
        # Written: let the bytes go now, not when the engine's reference moves on to the next piece.
        encoded.data = encoded.groups = None

    def _finish(self) -> None:
        """The footer (on commit only: an aborted stream must not look complete)."""
        if self._position == 0:
            self._emit(self._parquet_file(None))
        else:
            self._emit(self._footer.tail())

    def _close(self) -> None:
        if self._tmp is not None:
            self._out.close()


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def open_sink(
    path: str | None,
    fmt: str,
    schema: pa.Schema,
    delimiter: str | None = None,
    input_path: str | None = None,
) -> Sink:
    """Open an output for batches of ``schema``.

    ``path`` None or ``"-"`` is stdout (Parquet only when stdout is not a terminal). Files are
    written to a temporary file in the target's directory and renamed into place on commit. An
    output equal to ``input_path`` is a UsageError; an unwritable location an IOFailure.
    """
    fmt = detect_format(path or "-", fmt)
    if delimiter is None:
        delimiter = "\t" if fmt == "tsv" else ","
    if path is None or path == "-":
        out = sys.stdout.buffer
        if fmt == "parquet":
            if sys.stdout.isatty():
                raise UsageError("refusing to write Parquet to a terminal; use -o FILE")
            return _ParquetSink(None, schema, out, None)
        return _CsvSink(None, fmt, schema, delimiter, out, None)

    if input_path not in (None, "-") and _same_file(path, input_path):
        raise UsageError(f"the output '{path}' is the input; choose another output path")
    if os.path.isdir(path):
        raise IOFailure(f"cannot write '{path}': Is a directory")
    directory, name = os.path.split(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".normcli-tmp", dir=directory)
    except OSError as exc:
        raise IOFailure(f"cannot write '{path}': {exc.strerror or exc}") from exc
    try:
        # mkstemp creates the file 0600; give the output the mode a plain create would.
        os.fchmod(fd, _default_mode())
    except OSError:
        pass
    out = os.fdopen(fd, "wb", buffering=1 << 20)
    if fmt == "parquet":
        return _ParquetSink(path, schema, out, tmp)
    return _CsvSink(path, fmt, schema, delimiter, out, tmp)
