"""Naming inputs and outputs: globs and directories expanded, stdin spooled, files fingerprinted,
output paths derived, and :func:`open_source`, which opens one input by its format."""
from __future__ import annotations

import glob as _glob
import hashlib
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import DataError, IOFailure, UsageError
from ..tuning import MOST_BLOCK_SIZE, env_count
from .source import (DEFAULT_BLOCK_SIZE, _EXTENSIONS, _PARQUET_BATCH_ROWS, Source, _read_failure, begins_as_parquet,
                     copy_stdin, detect_format, field_separator, format_of, spool_failure, stdin_stream)
from .csv_source import _CsvSource, _peek
from .gunzip import GZIP_MAGIC
from .parquet_source import _DatasetSource, _ParquetSource, _hive_parts


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


def expand_inputs(specs: Sequence[str], skip: str | None = None) -> list[InputFile]:
    """The ordered list of input files named by ``specs``: files, ``-``, directories and globs.

    A directory stands for every CSV, TSV and Parquet file under it (recursively, sorted by path,
    skipping names starting with ``.`` or ``_``); a Parquet file under ``key=value`` directories
    is read with those keys as columns. A glob (``*``, ``?``, ``[..]``, ``**``) stands for the
    files it matches, sorted. A file named twice is read once. Nothing found is an IOFailure.
    A directory or glob leaves out the files under ``skip`` when that directory (an output
    directory) lies strictly inside it, so that yesterday's outputs are not read as today's inputs.
    """
    out: list[InputFile] = []
    seen: set[str] = set()
    skipped = None if skip is None else os.path.join(os.path.realpath(skip), "")

    def below(root: str) -> str | None:
        """``skipped`` if it lies strictly inside the directory ``root``, else None."""
        inside = os.path.join(os.path.realpath(root or "."), "")
        return skipped if skipped is not None and skipped != inside and skipped.startswith(inside) else None

    def add(item: InputFile, skip_under: str | None = None) -> None:
        key = item.path if item.path == "-" else os.path.realpath(item.path)
        if skip_under is not None and key.startswith(skip_under):
            return
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
                add(InputFile(f, rel, spec if hive else None), below(spec))
        elif _glob.has_magic(spec) and not os.path.exists(spec):
            matches = sorted(m for m in _glob.glob(spec, recursive=True) if os.path.isfile(m))
            if not matches:
                raise IOFailure(f"cannot read '{spec}': no file matches")
            root = _glob_root(spec)
            for m in matches:
                add(InputFile(m, os.path.relpath(m, root) if root else m), below(root))
        else:
            add(InputFile(spec, os.path.basename(spec) or spec))
    return out


def check_readable(items: Sequence[InputFile]) -> None:
    """Raise the IOFailure that opening would raise, for the first of ``items`` that is missing
    or cannot be opened.

    Run before a transform of several inputs writes its first output, so that a name mistyped
    in a cron job fails the run before it leaves the outputs of the inputs ahead of it. A file
    that is not a regular one is only looked up: opening a named pipe would take its data.
    """
    for item in items:
        if item.path == "-":
            continue
        try:
            if stat.S_ISREG(os.stat(item.path).st_mode):
                os.close(os.open(item.path, os.O_RDONLY))
        except OSError as exc:
            raise _read_failure(item.path, exc) from exc


def open_input(item: InputFile, fmt: str | None = None, delimiter: str | None = None,
               label: str | None = None) -> Source:
    """Open an :class:`InputFile`: hive-partitioned Parquet through ``pyarrow.dataset``, else
    :func:`open_source` (whose messages name ``label``, if given, for the path)."""
    if item.base is not None and fmt in (None, "parquet"):
        return _DatasetSource(item.path, item.base)
    return open_source(item.path, fmt=fmt, delimiter=delimiter, label=label)


_FINGERPRINT_SPAN = 1 << 20


def fingerprint(path: str) -> dict | None:
    """Identity of an input file: its path with links resolved, size, mtime and a SHA-256 of its content.

    The hash covers the whole file when it is under 2 MiB, else its first and last MiB (so that
    the cost does not grow with the file). ``-`` (stdin) has no fingerprint: raises UsageError.
    Nor has anything but a regular file (a named pipe, ``<(zcat ...)``): None, for reading it
    here would consume the data its reader is to get.
    """
    if path == "-":
        raise UsageError("standard input has no fingerprint")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None
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
    # the file itself, not a symbolic link to it: absorbing it through a link is absorbing it again
    return {"path": path_text(os.path.realpath(path)), "size": st.st_size, "mtime": st.st_mtime,
            "sha256": digest.hexdigest()}


def input_entry(path: str, local: bool = True) -> dict:
    """The start of an input's ``fitted_on.inputs`` entry: its path as text and, for a regular
    ``local`` file (not stdin, not a URL), its fingerprint; the caller adds ``rows`` and ``bytes``."""
    entry: dict = {"path": path_text(path)}
    if local and path != "-" and (found := fingerprint(path)) is not None:
        entry["fingerprint"] = found
    return entry


def path_text(path: str) -> str:
    """``path`` as text that UTF-8 (a stats file) can hold: a file name's bytes that are not
    UTF-8 (Python keeps them as surrogates) are written as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def needs_spool(path: str) -> bool:
    """Whether ``path`` can be read only once: standard input, a named pipe or ``<(...)``."""
    if path == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # the reader says what is wrong with it
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))  # as the Parquet reader spools what is not a file


def spool_input(path: str, fmt: str | None) -> tuple[str, str]:
    """Copy standard input (``-``) or the pipe ``path`` to a new temporary file (in chunks), for
    a command that reads its input twice; return the copy's path and the input's format.

    The format is ``fmt``, else the one the name says, else the one the first bytes say: Parquet
    by its magic bytes, else CSV (as for any stdin input). Text that comes gzip-compressed is
    kept so, in a file named ``.gz`` that the readers decompress. The caller removes the file; on
    any failure here it is removed before the error propagates.
    """
    try:
        stream = stdin_stream() if path == "-" else open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise _read_failure(path, exc) from exc
    try:
        head = _peek(stream, 5)
        fmt = detect_format(path, fmt or format_of(path) or ("parquet" if begins_as_parquet(head) else None))
        suffix = "." + fmt + (".gz" if fmt != "parquet" and head[:2] == GZIP_MAGIC else "")
        try:
            fd, tmp = tempfile.mkstemp(prefix="normcli-stdin-", suffix=suffix)
        except OSError as exc:
            raise spool_failure(exc, path) from exc
        done = False
        try:
            with os.fdopen(fd, "wb") as f:
                copy_stdin(f, None if path == "-" else stream, path)
            done = True
        except OSError as exc:  # closing the copy: its last bytes written
            raise spool_failure(exc, path) from exc
        finally:
            if not done:
                discard(tmp)
    finally:
        if path != "-":
            stream.close()
    return tmp, fmt


def discard(path: str) -> None:
    """Delete the file ``path`` if it exists (cleanup: errors are ignored)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def output_path(directory: str, item: InputFile, fmt: str | None) -> str:
    """Where the output of ``item`` goes under ``directory``: the same relative name, with the
    extension of ``fmt`` when that differs from the input's. A gzip-compressed text input gives
    a gzip-compressed text output in either format (``x.csv.gz`` -> ``x.tsv.gz``); Parquet is
    never gzipped."""
    name = item.name
    if fmt is not None and detect_format(name, None) != fmt:
        lower = name.lower()
        gz = False
        for ext in sorted(_EXTENSIONS, key=len, reverse=True):
            if lower.endswith(ext):
                name = name[: -len(ext)]
                gz = ext.endswith(".gz")
                break
        name += {"csv": ".csv", "tsv": ".tsv", "parquet": ".parquet"}[fmt] + (".gz" if gz and fmt != "parquet" else "")
    return os.path.join(directory, name)


def open_source(
    path: str,
    fmt: str | None = None,
    delimiter: str | None = None,
    block_size: int | None = None,
    encoding: str = "utf8",
    label: str | None = None,
) -> Source:
    """Open ``path`` (``"-"`` for stdin) and read its header.

    Missing or unreadable input raises IOFailure; empty input or duplicate column names raise
    DataError. ``tsv`` means a tab delimiter unless ``delimiter`` says otherwise. A UTF-8 BOM is
    stripped. ``block_size`` is the approximate size of a CSV piece (bytes) or of a Parquet
    batch (rows); by default 2 MiB and 32,768 rows (peak memory against speed, measured), or ``NORMCLI_BLOCK_SIZE`` from the environment.
    Messages name ``label`` instead of ``path`` when it is given (a copy read for another name).
    """
    stream = None
    if path == "-" and fmt is None and begins_as_parquet(_peek(stdin_stream(), 5)):
        fmt = "parquet"  # recognised by its first bytes, as gzip is
    elif fmt is None and path != "-" and format_of(path) is None and needs_spool(path):
        # a pipe (<(...), a FIFO) named for no format: opened once and peeked at, as stdin is
        try:
            stream = open(path, "rb")  # noqa: SIM115 - the source owns it
        except OSError as exc:
            raise _read_failure(path, exc) from exc
        if begins_as_parquet(_peek(stream, 5)):
            fmt = "parquet"
    fmt = input_format(path, fmt)
    if block_size is None:
        block_size = env_count("NORMCLI_BLOCK_SIZE", MOST_BLOCK_SIZE)
    if fmt == "parquet":
        return _ParquetSource(path, block_size or _PARQUET_BATCH_ROWS, label, stream)
    default_size = block_size is None
    block_size = block_size or DEFAULT_BLOCK_SIZE
    delimiter = field_separator(fmt, delimiter)
    return _CsvSource(path, fmt, delimiter, max(int(block_size), 1), encoding, default_size, label, stream)


def input_format(path: str, fmt: str | None) -> str:
    """The format of the input file ``path``: ``fmt`` if given, else its extension's (see
    :func:`detect_format`); a name without a known one (``x.parq``, ``part-0``) is Parquet when
    its first bytes are, else CSV."""
    if fmt is None and path != "-" and format_of(path) is None and _begins_as_parquet(path):
        return "parquet"
    return detect_format(path, fmt)


def _begins_as_parquet(path: str) -> bool:
    """Whether the regular file ``path`` begins with Parquet's magic bytes (a pipe is not
    peeked at: that would take bytes from its reader). Any failure: no, and the reader reports it."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: a FIFO's open waits for a writer
            return False
        with open(path, "rb") as f:
            return begins_as_parquet(f.read(5))
    except OSError:
        return False
