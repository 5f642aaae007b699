"""Parquet input: one file (or stdin, spooled to a file), or one file of a hive-partitioned directory."""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import pyarrow as pa

from ..bitmaps import decimals_as_float64, first_bad_float, is_text, numbers_as_float64
from ..errors import DataError, IOFailure
from .sample import TextSample, text_samples
from .source import (_PARQUET_BATCH_ROWS, Piece, Source, _display, _pq, _read_failure, copy_stdin,
                     spool_failure, stdin_stream)


# Memory per batch is bounded in bytes, not rows: a batch holds at most _PARQUET_BATCH_ROWS rows
# and about _BATCH_BYTES of decoded data (several are in flight), so that wide rows (200 float
# columns, a long text column) cost what narrow ones do. Each column's reader buffers
# _COLUMN_BUFFER bytes, less in a file so wide that its buffers would pass _BUFFERS.
_BATCH_BYTES = 16 << 20
_MIN_BATCH_ROWS = 256
_COLUMN_BUFFER = 1 << 20
_BUFFERS = 16 << 20


def _unreadable_type(path: str, exc: Exception) -> DataError:
    """The error for a file with a column type Arrow has not (Polars' Int128, say)."""
    return DataError(f"{_display(path)} holds a type Arrow cannot read: {exc}")


def _rows_per_batch(probe: pa.Table | pa.RecordBatch | None, most: int) -> int:
    """Rows per batch: as many as fit in _BATCH_BYTES at the decoded size per row of ``probe``
    (the input's first rows), between _MIN_BATCH_ROWS and ``most``. The file's metadata cannot
    tell: a dictionary-encoded text column is small there and full-size once decoded."""
    if probe is None or probe.num_rows == 0:
        return most
    per_row = max(probe.nbytes / probe.num_rows, 1.0)
    return max(min(most, int(_BATCH_BYTES / per_row)), min(most, _MIN_BATCH_ROWS))


class _ParquetSource(Source):
    def __init__(self, path: str, batch_rows: int = _PARQUET_BATCH_ROWS, label: str | None = None,
                 stream: BinaryIO | None = None):
        self._setup(label or path, batch_rows)
        try:
            # ``stream``: ``path`` opened by the caller to peek at its first bytes (a pipe)
            stream = stream or (None if path == "-" else open(path, "rb"))  # noqa: SIM115 - closed below
            if stream is None or not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                # Parquet needs random access: spool stdin, or a pipe (<(...), a FIFO), to an
                # anonymous temp file.
                with stream or contextlib.nullcontext():
                    if stream is None:
                        stdin_stream()  # refused first if there is none
                    try:
                        self._spool = tempfile.TemporaryFile(prefix="normcli-stdin-")
                    except OSError as exc:
                        raise spool_failure(exc, path) from exc
                    copy_stdin(self._spool, stream, path)
                self._spool.seek(0)
                self.size = None
                target = self._spool
            else:
                stream.close()
                self.size = os.path.getsize(path)
                target = path
            if self.size == 0 or (self._spool is not None and not self._spool_size()):
                raise DataError(f"{_display(self.path)} is empty")
            self._file = _pq().ParquetFile(target, pre_buffer=False, buffer_size=_COLUMN_BUFFER)
            columns = self._file.metadata.num_columns
            if columns * _COLUMN_BUFFER > _BUFFERS:  # a wide file: smaller read buffers, one per column
                self._file.close()  # a path's handle; a spool stays open (not the reader's to close)
                self._file = _pq().ParquetFile(target, pre_buffer=False,
                                               buffer_size=max(64 << 10, _BUFFERS // columns))
        except OSError as exc:
            self._close_spool()
            raise self._failure(exc) from exc
        except pa.ArrowInvalid as exc:
            self._close_spool()
            raise DataError(f"{_display(self.path)} is not a Parquet file: {exc}") from exc
        except pa.ArrowNotImplementedError as exc:  # a type Arrow has not (Polars' Int128, say)
            self._close_spool()
            raise _unreadable_type(self.path, exc) from exc
        except (DataError, IOFailure):
            self._close_spool()
            raise
        self._schema = self._file.schema_arrow
        self.columns = list(self._schema.names)
        seen: set[str] = set()
        dupes = sorted({c for c in self.columns if c in seen or seen.add(c)})  # count() would be quadratic
        if dupes:
            names = ", ".join(f"'{c}'" for c in dupes)
            raise DataError(f"{_display(path)} has duplicate column names: {names}")

    def _setup(self, path: str, batch_rows: int) -> None:
        """The fields every Parquet source has before it opens its input."""
        self._text: dict[str, TextSample] | None = None
        self._batch_rows = batch_rows
        self.path = path
        self.format = "parquet"
        self.size = None
        self._spool = None
        self._used = False

    def sample_types(self) -> dict[str, pa.DataType]:
        return {f.name: f.type for f in self._schema}

    def sample_text(self) -> dict[str, TextSample]:
        """How the text columns of the first batch read as numbers: declared text, a column of
        numbers with stray values is still one (see :func:`normcli.io.text_samples`), as in a CSV
        input or a DataFrame. Partition keys are text by design, and not sampled."""
        if self._text is None:
            names = [f.name for f in self._schema if f.name not in self.partition_keys and is_text(f.type)]
            self._text = {}
            if names:
                try:
                    first = next(iter(self._batches(names)), None)
                except OSError as exc:
                    raise self._failure(exc) from exc
                except pa.ArrowInvalid as exc:
                    raise DataError(f"cannot read {_display(self.path)}: {exc}") from exc
                if first is not None:
                    self._text = text_samples(pa.Table.from_batches([first]))
        return self._text

    def fields(self) -> pa.Schema:
        return self._schema

    def _total_rows(self) -> int:
        return self._file.metadata.num_rows

    def _batches(self, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        # Decoded on the reader's thread alone: Arrow's own thread pool would compete with the
        # workers for the same cores, and costs 40% more CPU (the 5M-row benchmark file reads in
        # 0.64 s of CPU with it, 0.46 s without, in about the same wall time).
        first = self._file.iter_batches(batch_size=_MIN_BATCH_ROWS, columns=columns, use_threads=False)
        try:
            rows = _rows_per_batch(next(first, None), self._batch_rows)
        finally:
            first.close()
        return self._file.iter_batches(batch_size=rows, columns=columns, use_threads=False)

    def pieces(self, numeric: Sequence[str], keep_others: bool, keep: Sequence[str] = ()) -> Iterator[Piece]:
        numeric, keep = self._claim(numeric, keep)
        total_rows = max(self._total_rows(), 1)
        size = self.size if self.size is not None else self._spool_size()
        columns = None if keep_others else list(dict.fromkeys([*numeric, *keep]))
        row = 1
        try:
            for batch in self._batches(columns):
                yield Piece(batch, size * batch.num_rows // total_rows, row, numeric, keep_others, keep)
                row += batch.num_rows
        except OSError as exc:
            raise self._failure(exc) from exc
        except pa.ArrowInvalid as exc:
            raise DataError(f"cannot read {_display(self.path)}: {exc}") from exc

    def _failure(self, exc: OSError) -> DataError | IOFailure:
        """What an OSError of the Parquet reader means: the system's error (it carries an errno),
        or the file changing under the reader, is an I/O failure; else the file is damaged (a
        corrupt page or footer), bad input like any other."""
        if exc.errno is None and not self._changed():
            return DataError(f"{_display(self.path)} is damaged: {exc}")
        return _read_failure(self.path, exc)

    def _changed(self) -> bool:
        """Whether the input's size is no longer the one it had when opened."""
        if self.size is None:  # a spool of stdin, this process's own
            return False
        try:
            return os.path.getsize(self.path) != self.size
        except OSError:
            return True

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

    def where(self, piece: Piece, row: int) -> str:
        return f"row {piece.first_line + row}"

    def _to_float(self, name: str, column: pa.Array, first_row: int) -> pa.Array:
        if pa.types.is_integer(column.type) or column.type == pa.float32():
            return numbers_as_float64(column)  # a large int64 rounds to the nearest double
        if pa.types.is_decimal(column.type):
            return decimals_as_float64(column)
        if pa.types.is_boolean(column.type):  # castable (True is 1.0), but not numbers: fit refuses it too
            raise DataError(f"column '{name}' of type {column.type} is not numeric")
        try:
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                return column.cast(pa.float64())
            return column.cast(pa.float64(), safe=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                index = first_bad_float(column)
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
            # A key the file holds itself (Polars writes them so) is the file's column, as read
            own = set(_pq().read_schema(path).names)
            keys = [k for k in keys if k not in own]
            import pyarrow.dataset as pads  # only here: it pulls in pandas, ~0.2 s and 40 MB

            partitioning = pads.partitioning(pa.schema([(k, pa.string()) for k in keys]), flavor="hive")
            self._dataset = pads.dataset([path], format="parquet", partitioning=partitioning,
                                         partition_base_dir=base)
        except OSError as exc:
            raise self._failure(exc) from exc
        except pa.ArrowInvalid as exc:
            raise DataError(f"{_display(path)} is not a Parquet file: {exc}") from exc
        except pa.ArrowNotImplementedError as exc:
            raise _unreadable_type(path, exc) from exc
        self._schema = self._dataset.schema
        self.columns = list(self._schema.names)
        self.partition_keys = tuple(keys)

    def _total_rows(self) -> int:
        return self._dataset.count_rows()

    def _batches(self, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        rows = _rows_per_batch(self._dataset.head(_MIN_BATCH_ROWS, columns=columns), self._batch_rows)
        return self._dataset.to_batches(columns=columns, batch_size=rows, batch_readahead=2, fragment_readahead=1)

    def close(self) -> None:
        pass


def _hive_parts(reldir: str) -> list[str]:
    parts = [p for p in reldir.split(os.sep) if p and p != "."]
    return parts if parts and all("=" in p and not p.startswith("=") for p in parts) else []
