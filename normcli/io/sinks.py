"""Outputs: CSV/TSV/Parquet files and stdout, written through a temporary file renamed into place.

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
import gzip
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .. import parquet_footer
from ..errors import DataError, IOFailure, UsageError
from .outfile import Writeback, is_special, open_output, settled
from .source import _pq, detect_format, field_separator, import_polars, no_gzip_parquet


class Sink:
    """An output opened by :func:`open_sink`: ``encode`` in workers, ``write`` in order.

    Output goes to a temporary file beside the target, renamed into place by ``commit``. As a
    context manager it commits on success and aborts on any exception.
    """

    def __init__(self, path: str | None, fmt: str, schema: pa.Schema, out, tmp: str | None, target: str | None):
        self.path = path
        self.format = fmt
        self.schema = schema
        self._out = out
        self._tmp = tmp  # None: stdout or a device, FIFO or socket, written as is
        self._target = target
        self._done = False
        self._writeback: Writeback | None = None

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
            if self._tmp is not None:
                self._install()
            elif self.path is None:
                self._out.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            self._remove_tmp()
            raise self._write_failure(exc) from exc
        except BaseException:
            # SIGINT (KeyboardInterrupt) or SIGTERM (Interrupted) during the close, the fsync or
            # the rename: abort() does nothing once _done is set, so the temporary goes here.
            self._remove_tmp()
            raise

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
        """Close the output file (stdout stays open)."""
        if self.path is not None:
            self._out.close()

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
            self._start_writeback()  # opens the temporary file again: gone if its directory is
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._write_failure(exc) from exc

    def _start_writeback(self) -> None:
        """After each write to the temporary file: its write-back to disk goes on behind (see
        :class:`Writeback`)."""
        if self._tmp is None:
            return
        if self._writeback is None:
            self._writeback = Writeback(self._tmp)
        self._writeback.written()

    def _remove_tmp(self) -> None:
        if self._writeback is not None:
            self._writeback.abandon()
            self._writeback = None
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
            settled(self._tmp)
            self._tmp = None

    def _install(self) -> None:
        """fsync the temporary file and rename it over the target."""
        writeback, self._writeback = self._writeback or Writeback(self._tmp), None
        writeback.finish()
        os.replace(self._tmp, self._target)
        settled(self._tmp)
        self._tmp = None


def _quote_field(name: str, sep: str) -> str:
    if any(ch in name for ch in (sep, '"', "\n", "\r")):
        return '"' + name.replace('"', '""') + '"'
    return name


def _polars_cannot_write(kind: pa.DataType) -> bool:
    """Types Polars' CSV writer fails on, which Arrow writes as text: a decimal wider than 128
    bits (no Int256 in Polars), a time zone given as an offset (``+05:30``) rather than a name."""
    return pa.types.is_decimal256(kind) or (pa.types.is_timestamp(kind) and kind.tz is not None
                                             and kind.tz[:1] in ("+", "-"))


# The days Polars' CSV writer can show (chrono's dates: the years -262143 to 262142); beyond
# them it panics, and Rust prints the panic on stderr before Python sees an error.
_FIRST_DAY, _LAST_DAY = -96465292, 95026236
_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000}


def _day_bounds(kind: pa.DataType) -> tuple[int, int] | None:
    """The smallest and largest stored value of a date or timestamp type that Polars can write
    as text; None for a type whose every value it can (timestamps in ns) or that is no date."""
    if pa.types.is_date32(kind):
        return _FIRST_DAY, _LAST_DAY
    per_day = 86_400_000 if pa.types.is_date64(kind) else None
    if pa.types.is_timestamp(kind):
        per_day = _PER_DAY.get(kind.unit)
    if per_day is None:
        return None
    margin = 1 if pa.types.is_timestamp(kind) and kind.tz else 0  # a day for the zone's offset
    return (_FIRST_DAY + margin) * per_day, (_LAST_DAY + 1 - margin) * per_day - 1


def _check_days(batch: pa.RecordBatch, bounds: dict[int, tuple[int, int]]) -> None:
    """DataError for a date or time beyond what the CSV writer can show."""
    import pyarrow.compute as pc

    for i, (first, last) in bounds.items():
        column = batch.column(i)
        storage = column.view(pa.int32() if pa.types.is_date32(column.type) else pa.int64())
        ends = pc.min_max(storage)
        if ends["min"].is_valid and (ends["min"].as_py() < first or ends["max"].as_py() > last):
            raise DataError(f"cannot write column '{batch.schema.field(i).name}' as CSV: it holds a "
                            "date beyond the years -262143 to 262142, which CSV text does not show "
                            "(Parquet output holds it)")


def _arrow_text(column: pa.Array) -> pa.Array:
    """``column`` as Arrow's text, a timestamp in the form Polars writes (``T`` between date and time)."""
    import pyarrow.compute as pc

    text = column.cast(pa.string())
    if pa.types.is_timestamp(column.type):
        text = pc.replace_substring(text, " ", "T", max_replacements=1)
    return text


class _CsvSink(Sink):
    def __init__(self, path, fmt, schema, delimiter, out, tmp, target=None):
        super().__init__(path, fmt, schema, out, tmp, target)
        import_polars()  # here, not first in a worker thread (see there)
        self._sep = delimiter
        self._header = (
            delimiter.join(_quote_field(name, delimiter) for name in schema.names) + "\n"
        ).encode()
        self._header_written = False
        self._as_text = [i for i, field in enumerate(schema) if _polars_cannot_write(field.type)]
        self._days = {i: b for i, field in enumerate(schema) if (b := _day_bounds(field.type)) is not None}

    def encode(self, batch: pa.RecordBatch) -> list[bytes]:
        """CSV bytes of the rows, in the parts the writer made, no header: null as an empty
        field, "" as `""`."""
        import polars as pl

        if self._days:
            _check_days(batch, self._days)
        for i in self._as_text:
            batch = batch.set_column(i, batch.schema.field(i).name, _arrow_text(batch.column(i)))
        frame = pl.from_arrow(batch)
        if not isinstance(frame, pl.DataFrame):
            frame = frame.to_frame()
        out = _Parts()
        try:
            # A one-column null written as an empty field would be a blank line, which readers
            # skip (pyarrow, normcli): it is written `""`, which reads back as a null number.
            frame.write_csv(out, include_header=False, quote_style="necessary", separator=self._sep,
                            null_value='""' if frame.width == 1 else "")
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException) as exc:
            raise _unwritable(frame, batch.schema) from exc
        return out.parts

    def _emit(self, data: bytes) -> None:
        with self._writing():
            self._out.write(data)

    def write(self, encoded: list[bytes]) -> None:
        if not self._header_written:
            self._header_written = True
            self._emit(self._header)
        for part in encoded:
            if part:
                self._emit(part)

    def _finish(self) -> None:
        if not self._header_written:
            self.write([])


def _unwritable(frame: Any, schema: pa.Schema) -> DataError:
    """The error for a batch Polars cannot write as CSV, naming the first column it fails on."""
    import polars as pl

    for name in frame.columns:
        try:
            frame.select(name).write_csv()
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException):
            return DataError(f"cannot write column '{name}' as CSV: it holds {schema.field(name).type} values "
                             "(Parquet output holds them)")
    return DataError("cannot write this data as CSV")


class _GzipOutput(gzip.GzipFile):
    """CSV output compressed with gzip (an output named ``.gz``): closing it ends the gzip stream
    and closes the file beneath. No name or time is stored, so the same data give the same bytes."""

    def __init__(self, raw) -> None:
        super().__init__(filename="", mode="wb", compresslevel=6, fileobj=raw, mtime=0)
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


class _Parts:
    """A file object that keeps what is written to it as is.

    Polars' CSV writer hands each write a new ``bytes``; collecting them, instead of copying them
    into a ``BytesIO``, saves a copy of the piece's text (about 0.5 ms of 11 for a 2 MiB piece).
    """

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        # a view into a buffer the writer reuses would change under us: keep a copy of that
        self.parts.append(data if type(data) is bytes else bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


@dataclass
class _EncodedParquet:
    """A batch encoded as a complete Parquet file, with where its footer starts and its row groups."""

    data: pa.Buffer
    footer_start: int
    groups: parquet_footer.RowGroups


# A text column whose dictionary outgrows this within a row group falls back to plain pages
# (pyarrow's default limit is 1 MiB). At 32,768 rows a group, 64 KiB still holds thousands of
# distinct short values, so categories keep their dictionary, while a column of unique ids
# stops hashing after a few thousand rows: a fifth less encoding time for such a batch, and a
# file no larger.
_DICTIONARY_PAGE_LIMIT = 64 << 10


class _ParquetSink(Sink):
    """Parquet encoded in the workers: ``encode`` makes each batch a Parquet file in memory,
    ``write`` appends its column chunks to the output, and the footer listing all their row
    groups comes last. Only ever appends, so stdout works as well as a file."""

    def __init__(self, path, schema, out, tmp, target=None):
        super().__init__(path, "parquet", schema, out, tmp, target)
        self._dictionary = [f.name for f in schema if not pa.types.is_floating(f.type)]
        self._position = 0
        self._footer = parquet_footer.Footer()

    def _parquet_file(self, batch: pa.RecordBatch | None) -> pa.Buffer:
        # No page index (pyarrow's default): its page locations would be offsets to shift too.
        stream = pa.BufferOutputStream()
        with _pq().ParquetWriter(stream, self.schema, use_dictionary=self._dictionary,
                                 dictionary_pagesize_limit=_DICTIONARY_PAGE_LIMIT,
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


def file_keys(path: str) -> list[object]:
    """What identifies the file ``path`` names: its real path and, when it exists, its device
    and inode (so that a symbolic link, a hard link and a ``./`` path all match the file)."""
    keys: list[object] = [os.path.realpath(path)]
    try:
        st = os.stat(path)
    except OSError:
        return keys
    return keys + [(st.st_dev, st.st_ino)]


def same_file(a: str, b: str) -> bool:
    """Whether the paths ``a`` and ``b`` name one file (see :func:`file_keys`)."""
    return not set(file_keys(a)).isdisjoint(file_keys(b))


def check_directory_outputs(directory: str, targets: Sequence[str]) -> None:
    """Refuse outputs under ``directory`` (``-o DIR/``) that are not new or regular files of it:
    a symbolic link or a FIFO planted there would send the output elsewhere (outside DIR) or
    block the run, and a linked directory on the way would lead out of DIR. (A single ``-o``
    may name a link or a FIFO on purpose; a whole directory of outputs is written blind.)"""
    root = os.path.realpath(directory)
    for target in targets:
        if os.path.islink(target) or (os.path.lexists(target) and not os.path.isfile(target)):
            raise UsageError(f"the output '{target}' is a symbolic link or not a regular file: "
                             "outputs in a directory replace only its regular files")
        if os.path.commonpath([root, os.path.realpath(os.path.dirname(target))]) != root:
            raise UsageError(f"the output '{target}' would be written outside '{directory}' "
                             "(a symbolic link among its directories)")


def stdout_file_keys() -> list[object]:
    """The device and inode of standard output when it is a regular file (none for a terminal,
    a pipe, a device or a closed stdout)."""
    try:
        st = os.fstat(1)
    except OSError:
        return []
    return [(st.st_dev, st.st_ino)] if stat.S_ISREG(st.st_mode) else []


def check_outputs(outputs: Sequence[tuple[str | None, str | None]], inputs: Sequence[str],
                  read_as: str = "the input") -> None:
    """Refuse, before anything is written, outputs that would replace an input or one another.

    ``outputs`` pairs each output path (None or ``-``: stdout, checked when it is a regular file) with what is
    written there, for the message (``"the output of 'a.csv'"``, ``"the stats"``; None for a
    run's one output). UsageError when an output is the same file as one of ``inputs`` (``-`` is
    skipped; ``read_as`` names them in the message) or as another output, through symbolic and
    hard links and ``./`` paths.
    """
    read: dict[object, str] = {}
    for path in inputs:
        if path != "-":
            for key in file_keys(path):
                read.setdefault(key, path)
    written: dict[object, str] = {}
    for path, what in outputs:
        if path in (None, "-"):  # stdout redirected onto an input (>> in.csv) would grow or wreck it as it is read
            source = next((read[k] for k in stdout_file_keys() if k in read), None)
            if source is not None:
                raise UsageError(f"standard output is {read_as} '{source}' (redirected onto it); "
                                 "write the output elsewhere")
            continue
        if is_special(path):
            continue  # a device, a FIFO: written as is, never replaced
        keys = file_keys(path)
        source = next((read[k] for k in keys if k in read), None)
        if source is not None:
            named = "" if source == path else f" '{source}'"
            if what is None:
                message = f"the output '{path}' is {read_as}{named}"
            else:
                message = f"{what} would be written to '{path}', which is {read_as}{named}"
            raise UsageError(message + "; choose another output path")
        earlier = next((written[k] for k in keys if k in written), None)
        if earlier is not None:
            raise UsageError(f"{earlier} and {what or 'the output'} would both be written to '{path}'; "
                             "choose another output path")
        for key in keys:
            written.setdefault(key, what or "the output")


def open_sink(
    path: str | None,
    fmt: str,
    schema: pa.Schema,
    delimiter: str | None = None,
    input_path: str | None = None,
) -> Sink:
    """Open an output for batches of ``schema``.

    ``path`` None or ``"-"`` is stdout (Parquet only when stdout is not a terminal). Files are
    written to a temporary file in the target's directory and renamed into place on commit (the
    target of a symbolic link, which stays a link); an existing device, FIFO or socket is written
    directly, like stdout. An output equal to ``input_path`` is a UsageError; an unwritable
    location an IOFailure.
    """
    fmt = detect_format(path or "-", fmt)
    delimiter = field_separator(fmt, delimiter)
    gzipped = path is not None and path.lower().endswith(".gz")
    if gzipped and fmt == "parquet":
        raise no_gzip_parquet(path)
    if path is None or path == "-":
        path, out, tmp, target = None, sys.stdout.buffer, None, None
    else:
        if input_path is not None:
            check_outputs([(path, None)], [input_path])
        if os.path.isdir(path):
            raise IOFailure(f"cannot write '{path}': Is a directory")
        out, tmp, target = open_output(path)
    if gzipped:
        out = _GzipOutput(out)
    if fmt == "parquet":
        if tmp is None and (sys.stdout if path is None else out).isatty():
            if path is not None:
                out.close()
            raise UsageError("refusing to write Parquet to a terminal; use -o FILE")
        return _ParquetSink(path, schema, out, tmp, target)
    return _CsvSink(path, fmt, schema, delimiter, out, tmp, target)
