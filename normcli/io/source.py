"""What every source shares: the formats, the :class:`Source` interface and its :class:`Piece`,
and the helpers both readers use (error messages, a bad value's position, pyarrow.parquet)."""
from __future__ import annotations

import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa

from ..errors import DataError, IOFailure, UsageError
from .sample import TextSample

FORMATS = ("csv", "tsv", "parquet")

_EXTENSIONS = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_PARQUET_BATCH_ROWS = 32768
PARQUET_MAGIC = b"PAR1"  # the first (and last) bytes of a Parquet file
DEFAULT_BLOCK_SIZE = 2 << 20


def begins_as_parquet(head: bytes) -> bool:
    """Whether the first bytes ``head`` (5 of them, or the 4 a pipe has given so far) are those
    of a Parquet file: its magic, then binary, not text such as a CSV header "PAR1,x"."""
    after = head[4:5]
    binary = after >= b"\x7f" or (after < b" " and after not in b"\t\r\n")
    return head.startswith(PARQUET_MAGIC) and (after == b"" or binary)


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
    return format_of(path) or "csv"


def format_of(path: str) -> str | None:
    """The format ``path``'s extension names (see :func:`detect_format`), None when it names none."""
    lower = path.lower()
    if lower.endswith((".parquet.gz", ".pq.gz")):
        raise no_gzip_parquet(path)
    for ext, name in _EXTENSIONS.items():
        if lower.endswith(ext):
            return name
    return None


def field_separator(fmt: str, delimiter: str | None) -> str:
    """The separator of a CSV or TSV input or output: ``delimiter`` if given, else the format's.

    UsageError unless it is one ASCII character that is neither a quote nor a line end (the
    parsers take a single byte, and those two mean something else in CSV).
    """
    if delimiter is None:
        return "\t" if fmt == "tsv" else ","
    if delimiter == "\\t":  # -d '\t', as a shell passes it: the tab it means
        delimiter = "\t"
    if len(delimiter) != 1:
        raise UsageError(f"the delimiter must be one character, not '{delimiter}'")
    if not delimiter.isascii() or delimiter in '"\r\n':
        raise UsageError(f"the delimiter must be an ASCII character other than a quote or a line end, "
                         f"not {delimiter!r}")
    return delimiter


def no_gzip_parquet(path: str) -> UsageError:
    """The error for a gzip name (``x.parquet.gz``, or ``x.gz`` written as Parquet) on Parquet."""
    return UsageError(f"'{path}': Parquet is not gzip-compressed as a whole (it compresses its own pages); "
                      "name it .parquet")


def _display(path: str) -> str:
    return "standard input" if path == "-" else f"'{path}'"


def _pq():
    """``pyarrow.parquet``, imported at first use: CSV runs need not pay its start-up."""
    import pyarrow.parquet as pq

    return pq


def stdin_stream():
    """Standard input as a binary stream; IOFailure when the process has none (started with
    ``<&-``, as some service managers start their jobs)."""
    if sys.stdin is None:
        raise IOFailure("cannot read standard input: it is closed")
    return sys.stdin.buffer


def spool_failure(exc: OSError, path: str = "-") -> IOFailure:
    """The error for a temporary copy of standard input (or of the pipe ``path``) that cannot
    be made (a full disk, say)."""
    what = "standard input" if path == "-" else _display(path)
    return IOFailure(f"cannot write a temporary copy of {what} in '{tempfile.gettempdir()}': "
                     f"{exc.strerror or exc}")


def copy_stdin(out: BinaryIO, stream: BinaryIO | None = None, path: str = "-") -> None:
    """Copy standard input (or ``stream``, the opened ``path``) into the temporary file ``out``,
    1 MiB at a time: a failure to read is the input's error, one to write is :func:`spool_failure`."""
    stdin = stdin_stream() if stream is None else stream
    while True:
        try:
            chunk = stdin.read(1 << 20)
        except OSError as exc:
            raise _read_failure(path, exc) from exc
        if not chunk:
            return
        try:
            out.write(chunk)
        except OSError as exc:
            raise spool_failure(exc, path) from exc


def _read_failure(path: str, exc: OSError) -> IOFailure:
    reason = exc.strerror or str(exc)
    return IOFailure(f"cannot read {_display(path)}: {reason}")


class LineCounts:
    """The newlines of each piece of one read, recorded by whichever thread decodes it.

    The reader that cuts a CSV input into pieces need not count their lines (a pass over every
    byte): a parse that yields one row per line knows the count. A piece's first line number,
    wanted only to report an error, is the sum of the counts before it, so asking for it waits
    until every earlier piece is recorded. Pieces are decoded in the order they are issued, or
    at least started in it (a FIFO pool), and each records its count however its decode ends,
    so the wait ends; :meth:`close` ends it too, for a read that is abandoned.
    """

    def __init__(self, first_line: int) -> None:
        self._counts: list[int | None] = []
        self._known = 0  # the counts before this index are all recorded ...
        self._line = first_line  # ... and this is the line that follows them
        self._closed = False
        self._changed = threading.Condition()

    def issue(self) -> int:
        """A new piece's index."""
        with self._changed:
            self._counts.append(None)
            return len(self._counts) - 1

    def record(self, index: int, newlines: int) -> None:
        """The count of newlines in piece ``index``."""
        with self._changed:
            self._counts[index] = newlines
            while self._known < len(self._counts) and self._counts[self._known] is not None:
                self._line += self._counts[self._known]
                self._known += 1
            self._changed.notify_all()

    def first_line(self, index: int) -> int:
        """The line number of piece ``index``'s first byte, once the pieces before it are counted
        (after :meth:`close`, the line after those counted so far: nobody reads it then)."""
        with self._changed:
            self._changed.wait_for(lambda: self._known >= index or self._closed)
            return self._line - sum(self._counts[min(index, self._known):self._known])  # type: ignore[arg-type]

    def next_line(self) -> int:
        """The line number after every piece issued so far (waits for their counts)."""
        with self._changed:
            return self.first_line(len(self._counts))

    def close(self) -> None:
        """Stop waiting: a read abandoned may leave pieces that no thread will count."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()


@dataclass
class Piece:
    """One unit of work for :meth:`Source.decode`.

    ``nbytes`` is the input bytes it covers (for progress). ``data`` holds the raw CSV bytes or
    the Parquet record batch. ``start`` is the file line number of its first record (CSV, header
    = line 1) or its first row number, 1-based (Parquet); or, with ``lines``, the piece's index
    there, whose decode records the piece's newlines (see :class:`LineCounts`).
    """

    data: bytes | pa.RecordBatch
    nbytes: int
    start: int
    numeric: tuple[str, ...] = ()
    keep_others: bool = True
    keep: tuple[str, ...] = ()
    lines: LineCounts | None = None

    @property
    def first_line(self) -> int:
        """The first record's line number (CSV) or the first row's number (Parquet)."""
        return self.start if self.lines is None else self.lines.first_line(self.start)


class Source:
    """A tabular input opened by :func:`open_source`.

    Attributes: ``path`` (as given, ``"-"`` is stdin), ``format``, ``columns`` (header names in
    file order), ``size`` (bytes of the file, None for stdin), ``decode_waits`` (whether
    :meth:`decode` waits for a parser's own threads), ``partition_keys`` (the columns that come
    from hive ``key=value`` directory names rather than from the file).
    """

    path: str
    format: str
    columns: list[str]
    size: int | None
    decode_waits: bool = False
    partition_keys: tuple[str, ...] = ()

    def sample_types(self) -> dict[str, pa.DataType]:
        """Types pyarrow infers from the first block (CSV) or the schema (Parquet).

        Does not consume the stream.
        """
        raise NotImplementedError

    def fields(self) -> pa.Schema:
        """The input's columns as Arrow fields: for Parquet as the file declares them (nullability,
        field metadata such as Parquet field ids, the file's key-value metadata), else the sample's types."""
        return pa.schema(list(self.sample_types().items()))

    def sample_text(self) -> dict[str, TextSample]:
        """How the text columns of the sample read as numbers (see :func:`normcli.io.text_samples`).

        Empty for Parquet, whose columns have the types they were written with.
        """
        return {}

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
        Without ``keep_others`` (statistics, which count NaN as missing) a CSV "NaN" may be read
        as NaN or as null; with it, it is null.
        """
        raise NotImplementedError

    def where(self, piece: Piece, row: int) -> str | None:
        """Where row ``row`` of ``piece``'s batch is in the input (``"line 7"``), for an error."""
        return None

    def close(self) -> None:
        """Release the underlying file or stream."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _claim(self, numeric: Sequence[str], keep: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Start the one use of :meth:`pieces`: the columns asked for, checked and deduplicated."""
        if self._used:
            raise RuntimeError("Source.pieces() can be used only once")
        self._used = True
        return self._check_columns(numeric), self._check_columns(keep)

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


def import_polars() -> None:
    """Import Polars now, from the calling thread, keeping the process's SIGINT handler.

    Importing Polars installs a SIGINT handler of its own at the C level, in place of the one
    the process had, which Python's ``signal.getsignal`` still reports: a host application whose
    handler does not raise (a graceful shutdown) would have its calls interrupted all the same.
    From the main thread the previous handler is put back; readers and writers call this before
    their worker threads import Polars, where that could not be done.
    """
    if "polars" in sys.modules:
        return
    before = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    import polars  # noqa: F401

    if before is not None:
        signal.signal(signal.SIGINT, before)
