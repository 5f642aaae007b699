"""The Dask engine: ``fit``, ``transform`` and ``check`` on a Dask cluster (``--engine dask``).

The input files are cut into partitions on the client: a CSV file at record boundaries every
:data:`PARTITION_BYTES` (a quote-parity scan, no parsing), a Parquet file into runs of row
groups, anything else (gzip, hive-partitioned Parquet, fsspec URLs) as a whole file. Each
partition is one Dask task that reads its share with :mod:`normcli.io`, so values and
pass-through text are exactly what the local engine reads, and runs the local engine over it:
``fold`` (the plan's mergeable partial statistics, merged in order) or ``pipe`` into one output
part. Partial results are then merged on the cluster in a tree, in partition order. The plan is
made once on the client from the first input, as locally; there is no second implementation of
any statistic or method.

Local paths must be readable (and, for ``transform``, the output directory writable) by the
workers under the same path: a shared file system, or the client's machine for a local cluster.
"""
from __future__ import annotations

import contextlib
import functools
import glob as _glob
import mmap
import os
import pickle
import re
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq

from normcli import engine, io, threads
from normcli.errors import IOFailure, UsageError, naming_input
from normcli.io.csv_source import _counted_quotes, last_record_end
from normcli.io.inputs import _is_data_file
from normcli.model import OutputOptions, UnseenGroups

INSTALL_HINT = "pip install 'normcli[dask]'"
PARTITION_BYTES = 64 << 20  # CSV bytes per partition
PARTITION_ROWS = 1 << 20  # Parquet rows per partition (whole row groups)
FAN_IN = 8  # partial results merged per reduction task
_QUOTE, _NL = ord('"'), ord("\n")
_SCAN = 16 << 20  # bytes counted at a time by the partition scan
_PART = re.compile(r"part-\d{5,}\.(csv|tsv|parquet)$")  # the name of an output part


def require() -> None:
    """Raise a :class:`UsageError` naming the extra to install when dask or distributed is missing."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(f"--engine dask needs dask and distributed: {INSTALL_HINT}") from None


@contextlib.contextmanager
def connect(scheduler: str | None = None, log: Callable[[str, dict], None] | None = None) -> Iterator[DaskEngine]:
    """A :class:`DaskEngine` on the scheduler at ``scheduler``, or on a new local cluster sized to
    the machine (announced through ``log`` as a ``note`` event); closed on exit."""
    require()
    import logging

    from distributed import Client, LocalCluster

    if scheduler:
        client = _client(Client, scheduler)
        with client:
            yield DaskEngine(client)
        return
    with contextlib.ExitStack() as stack:
        with _deaf_workers():  # a signal held meanwhile arrives as this ends: the cluster is closed
            cluster = stack.enter_context(
                LocalCluster(processes=True, dashboard_address=":0", silence_logs=logging.CRITICAL))
        workers = cluster.scheduler_info.get("workers", {}).values()
        threads = sum(w.get("nthreads", 0) for w in workers)
        if log is not None:
            log("note", {"message": f"started a local Dask cluster: {len(workers)} workers, {threads} threads "
                                    f"(dashboard {cluster.dashboard_link}); --scheduler ADDRESS uses a running one"})
        with Client(cluster) as client:
            yield DaskEngine(client)


# How long a scheduler has to answer (Client's own timeout), and how much longer the command
# waits for the client: that timeout does not bound every wait (a server that accepts the
# connection and never speaks would hold it for ever).
CONNECT_SECONDS = 20.0
CONNECT_GRACE = 5.0


def _client(client_class: Any, scheduler: str) -> Any:
    """A client of the scheduler at ``scheduler``, made in a thread of its own so that no answer
    within :data:`CONNECT_SECONDS` is an IOFailure, as is an answer that is not a scheduler's."""
    done: dict[str, Any] = {}

    def make() -> None:
        try:
            done["client"] = client_class(scheduler, timeout=f"{CONNECT_SECONDS}s")
        except BaseException as exc:  # handed to the caller
            done["error"] = exc

    # a daemon: should the scheduler never answer, nothing waits for this thread at exit
    thread = threading.Thread(target=make, name="normcli-dask-connect", daemon=True)
    threads.start(thread)
    thread.join(CONNECT_SECONDS + CONNECT_GRACE)
    where = f"cannot connect to the Dask scheduler at '{scheduler}'"
    if thread.is_alive():
        raise IOFailure(f"{where}: no answer in {CONNECT_SECONDS + CONNECT_GRACE:g} s")
    exc = done.get("error")
    if isinstance(exc, (OSError, TimeoutError, ValueError)):
        raise IOFailure(f"{where}: {exc}") from None
    if isinstance(exc, Exception):  # bytes that are not Dask's (a web server, say) read as a message
        raise IOFailure(f"{where}: what answers there is not a Dask scheduler ({type(exc).__name__})") from None
    if exc is not None:
        raise exc
    return done["client"]


@contextlib.contextmanager
def _deaf_workers() -> Iterator[None]:
    """Around starting a local cluster: its processes start with SIGINT, SIGHUP and SIGQUIT blocked.

    A Ctrl-C or a closed terminal signals the whole process group; the command answers it (one
    line, the cluster closed, the exit code), where each worker would print a traceback. The
    signals are blocked, not ignored, in the thread that starts the cluster (the cluster's own
    thread is made then and keeps the mask, for workers it restarts later): one that arrives
    meanwhile reaches the command when they are unblocked."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    from multiprocessing import resource_tracker

    held = {signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        # Started on the first worker's start otherwise, the tracker of shared resources unblocks
        # SIGINT after it is spawned, whatever the mask was: so it is started here, and then
        # the mask is set again.
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def is_url(path: str) -> bool:
    """True for an fsspec URL (``s3://bucket/key``, ``file:///tmp/x.csv``)."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


@dataclass(frozen=True)
class Partition:
    """One task's share of the input: a whole file, a byte range of a CSV file (starting and
    ending at record boundaries, ``first_line`` its first line number) or row groups of a Parquet
    file. ``path`` is absolute (or a URL), ``label`` the path as given; ``index`` is the input
    file's position."""

    index: int
    path: str
    name: str
    label: str
    base: str | None = None
    nbytes: int | None = None
    start: int = 0
    end: int = -1
    first_line: int = 1
    row_groups: tuple[int, ...] = ()
    first_row: int = 1


def refuse_stdin(specs: Sequence[str]) -> None:
    """UsageError when ``specs`` name standard input, which the workers cannot read (called
    before a cluster is started for them, too)."""
    if "-" in specs:
        raise UsageError("--engine dask reads files, not standard input")


def expand_inputs(specs: Sequence[str]) -> list[io.InputFile]:
    """:func:`normcli.io.expand_inputs`, plus fsspec URLs (a file, a glob or a directory prefix)."""
    refuse_stdin(specs)
    out: list[io.InputFile] = []
    for spec in specs:
        out.extend(_expand_url(spec) if is_url(spec) else io.expand_inputs([spec]))
    seen: set[str] = set()
    return [i for i in out if not (i.path in seen or seen.add(i.path))]


def _fs(url: str) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"cannot open '{url}': {exc} (install the fsspec package for its scheme)") from None


def _expand_url(spec: str) -> list[io.InputFile]:
    fs, path = _fs(spec)
    try:
        if _glob.has_magic(path):
            found = sorted(p for p in fs.glob(path) if fs.isfile(p))
        elif fs.isdir(path):
            found = sorted(p for p in fs.find(path) if _is_data_file(os.path.basename(p))
                           and not any(part.startswith((".", "_")) for part in p[len(path):].split("/")[:-1]))
        else:
            found = [path] if fs.exists(path) else []
    except OSError as exc:
        raise IOFailure(f"cannot read '{spec}': {exc}") from exc
    if not found:
        raise IOFailure(f"cannot read '{spec}': no file found")
    root = path.rstrip("/") if not _glob.has_magic(path) and len(found) > 1 else os.path.dirname(path.split("*")[0])
    return [io.InputFile(fs.unstrip_protocol(p), os.path.relpath(p, root) if root else os.path.basename(p))
            for p in found]


def partitions(items: Sequence[io.InputFile], fmt: str | None = None, delimiter: str | None = None,
               partition_bytes: int = PARTITION_BYTES, partition_rows: int = PARTITION_ROWS) -> list[Partition]:
    """Cut every input into partitions, in input order (see the module's notes)."""
    out: list[Partition] = []
    for index, item in enumerate(items):
        if is_url(item.path):
            fs, path = _fs(item.path)
            out.append(Partition(index, item.path, item.name, item.path, None, fs.size(path)))
            continue
        path = os.path.abspath(item.path)
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise IOFailure(f"cannot read '{item.path}': {exc.strerror or exc}") from exc
        whole = Partition(index, path, item.name, item.path, item.base and os.path.abspath(item.base), size)
        kind = io.input_format(item.path, fmt)
        if item.base is not None or item.path.lower().endswith(".gz"):
            out.append(whole)
        elif kind == "parquet":
            out.extend(_parquet_parts(whole, partition_rows))
        else:
            out.extend(_csv_parts(whole, partition_bytes, io.field_separator(kind, delimiter)))
    return out


def _parquet_parts(whole: Partition, rows: int) -> list[Partition]:
    try:
        meta = pq.ParquetFile(whole.path).metadata
    except Exception:  # not readable as Parquet: the task reports it as io does
        return [whole]
    groups: list[list[int]] = [[]]
    count = 0
    for i in range(meta.num_row_groups):
        if groups[-1] and count >= rows:
            groups.append([])
            count = 0
        groups[-1].append(i)
        count += meta.row_group(i).num_rows
    if len(groups) < 2:
        return [whole]
    out, first = [], 1
    total = max(meta.num_rows, 1)
    for g in groups:
        n = sum(meta.row_group(i).num_rows for i in g)
        # Bytes in proportion to rows (for progress), summing to the file's size.
        nbytes = whole.nbytes * (first - 1 + n) // total - whole.nbytes * (first - 1) // total
        out.append(Partition(whole.index, whole.path, whole.name, whole.label, None, nbytes,
                             row_groups=tuple(g), first_row=first))
        first += n
    return out


def _csv_parts(whole: Partition, block: int, delimiter: str = ",") -> list[Partition]:
    """Byte ranges of a CSV file cut at the first record boundary after every ``block`` bytes.

    A newline ends a record when the count of quote characters before it is even (as
    :mod:`normcli.io` cuts its pieces); the scan only counts bytes, it parses nothing. A file
    with a quote the count cannot follow (inside an unquoted field, ``a"b``) is one partition,
    which normcli's reader cuts exactly.
    """
    if not whole.nbytes or whole.nbytes <= block:
        return [whole]
    with open(whole.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        data = np.frombuffer(mm, dtype=np.uint8)
        quotes = mm.find(b'"') >= 0
        try:
            start = _next_boundary(mm, data, 3 if mm[:3] == b"\xef\xbb\xbf" else 0, 0, quotes, header=True)
            if start < 0:
                return [whole]
            cuts = [start]
            while cuts[-1] + block < len(mm):
                at = cuts[-1] + block
                parity = _count(data, _QUOTE, cuts[-1], at) % 2 if quotes else 0
                cut = _next_boundary(mm, data, at, parity, quotes)
                if cut < 0 or cut >= len(mm):
                    break
                cuts.append(cut)
            cuts.append(len(mm))
            if quotes and not _quotes_counted(mm, data, cuts, delimiter):
                return [whole]
            lines = [1 + _count(data, _NL, 0, cuts[0])]
            for a, b in zip(cuts[1:-1], cuts[:-2]):
                lines.append(lines[-1] + _count(data, _NL, b, a))
        finally:
            del data
    # The first partition's bytes include the header's, so that they sum to the file's size.
    return [Partition(whole.index, whole.path, whole.name, whole.label, None, b - (a if i else 0), start=a, end=b,
                      first_line=line)
            for i, (a, b, line) in enumerate(zip(cuts[:-1], cuts[1:], lines))]


def _quotes_counted(mm: mmap.mmap, data: np.ndarray, cuts: Sequence[int], delimiter: str) -> bool:
    """Whether every quote after ``cuts[0]`` (the first record) follows the parity the cuts were
    found by; scanned about ``_SCAN`` bytes at a time, each stretch ending at a newline."""
    at, parity = cuts[0], 0
    while at < len(mm):
        nl = mm.find(b"\n", min(at + _SCAN, len(mm) - 1))
        end = len(mm) - 1 if nl < 0 else nl  # the last byte (a newline, or the record's end)
        quotes = _counted_quotes(mm, at, end, parity, delimiter)
        if quotes < 0:
            return False
        parity = (parity + quotes) % 2
        at = end + 1
    return True


def _count(data: np.ndarray, byte: int, start: int, end: int) -> int:
    return sum(int(np.count_nonzero(data[i:min(i + _SCAN, end)] == byte)) for i in range(start, end, _SCAN))


def _next_boundary(mm: mmap.mmap, data: np.ndarray, at: int, parity: int, quotes: bool, header: bool = False) -> int:
    """The offset just past the first record-ending newline at or after ``at`` (``parity``: quotes
    between the last boundary and ``at``, mod 2); with ``header``, of the first non-blank record."""
    line_start = at
    while True:
        nl = mm.find(b"\n", at)
        if nl < 0:
            return -1
        if quotes:
            parity = (parity + _count(data, _QUOTE, at, nl)) % 2
        at = nl + 1
        if parity == 0:
            if not header or mm[line_start:nl].strip(b"\r"):
                return at
            line_start = at


class PartSource:
    """A :class:`normcli.engine.Source` over one :class:`Partition`: its pieces come from the
    partition's byte range or row groups, decoded by the file's own :mod:`normcli.io` source."""

    def __init__(self, part: Partition, fmt: str | None = None, delimiter: str | None = None) -> None:
        self.part = part
        self._fetched = _fetch(part.path, part.name) if is_url(part.path) else None
        local = self._fetched or part.path
        self._inner = io.open_input(io.InputFile(local, part.name, part.base), fmt=fmt, delimiter=delimiter,
                                    label=part.label)
        self.path, self.size = local, part.nbytes
        self.format, self.columns = self._inner.format, self._inner.columns

    def sample_types(self) -> dict:
        """The types of the whole file's sample, as :meth:`normcli.io.Source.sample_types`."""
        return self._inner.sample_types()

    def sample_text(self) -> dict:
        """How the text columns of that sample read as numbers, as :meth:`normcli.io.Source.sample_text`."""
        return self._inner.sample_text()

    def fields(self) -> pa.Schema:
        """The file's Arrow fields, as :meth:`normcli.io.Source.fields`."""
        return self._inner.fields()

    def pieces(self, numeric: Sequence[str], keep_others: bool, keep: Sequence[str] = ()) -> Iterator[io.Piece]:
        """The partition as :class:`normcli.io.Piece` objects for :meth:`decode`."""
        missing = [c for c in [*numeric, *keep] if c not in self.columns]
        if missing:  # the message io gives for a missing column
            yield from self._inner.pieces(numeric, keep_others, keep)
            return
        numeric, keep = tuple(dict.fromkeys(numeric)), tuple(dict.fromkeys(keep))
        if self.part.row_groups:
            yield from self._row_group_pieces(numeric, keep_others, keep)
        elif self.part.end >= 0:
            yield from self._range_pieces(numeric, keep_others, keep)
        else:
            yield from self._inner.pieces(numeric, keep_others, keep)

    def _row_group_pieces(self, numeric: tuple, keep_others: bool, keep: tuple) -> Iterator[io.Piece]:
        columns = None if keep_others else list(dict.fromkeys([*numeric, *keep]))
        row = self.part.first_row
        with pq.ParquetFile(self.path) as f:
            for batch in f.iter_batches(batch_size=65536, row_groups=list(self.part.row_groups), columns=columns):
                yield io.Piece(batch, 0, row, numeric, keep_others, keep)
                row += batch.num_rows

    def _range_pieces(self, numeric: tuple, keep_others: bool, keep: tuple) -> Iterator[io.Piece]:
        block = io.DEFAULT_BLOCK_SIZE
        with open(self.path, "rb") as f:
            f.seek(self.part.start)
            data = f.read(self.part.end - self.part.start)
        pos, line = 0, self.part.first_line
        while pos < len(data):
            span = block
            cut = len(data) - pos
            while pos + span < len(data):
                cut = last_record_end(data[pos:pos + span], self._inner.delimiter)
                if cut > 0:
                    break
                span *= 2
                cut = len(data) - pos
            chunk = data[pos:pos + cut]
            pos += cut
            if chunk.strip(b"\r\n"):
                yield io.Piece(chunk, len(chunk), line, numeric, keep_others, keep)
            line += chunk.count(b"\n")

    def decode(self, piece: io.Piece) -> Any:
        """The piece as a record batch (:meth:`normcli.io.Source.decode`)."""
        return self._inner.decode(piece)

    def close(self) -> None:
        """Close the file (and remove a fetched copy)."""
        self._inner.close()
        if self._fetched is not None:
            shutil.rmtree(os.path.dirname(self._fetched), ignore_errors=True)


def _fetch(url: str, name: str) -> str:
    """A local copy of the file at ``url`` in a new temporary directory, keeping its name."""
    fs, path = _fs(url)
    tmp = tempfile.mkdtemp(prefix="normcli-fetch-")
    target = os.path.join(tmp, os.path.basename(name) or "input")
    try:
        fs.get_file(path, target)
    except (OSError, FileNotFoundError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise IOFailure(f"cannot read '{url}': {exc}") from exc
    return target


# ---- tasks (run on the workers) ----

def _fold_task(part: Partition, plan: Any, merge: Callable, require: Callable, fmt: str | None,
               delimiter: str | None) -> tuple[Any, list[tuple[int, int]]]:
    keys = list(getattr(plan, "group_by", []))
    source = PartSource(part, fmt, delimiter)
    try:
        require(plan.numeric + keys, source.columns, part.label)
        acc, summary = engine.fold(source, plan.numeric, plan.partial, merge, plan.empty(), workers=1, keep=keys)
    finally:
        source.close()
    return acc, [(part.index, summary.rows)]


def _merge_task(merge: Callable, *parts: tuple[Any, list]) -> tuple[Any, list]:
    acc, rows = parts[0]
    # merge updates its first argument in place: a copy, since Dask may hand this task's inputs
    # to another (a retry) as they are
    acc = pickle.loads(pickle.dumps(acc))
    for other, more in parts[1:]:
        acc, rows = merge(acc, other), rows + more
    return acc, rows


def _transform_task(part: Partition, target: str, stats: Any, fmt: str | None, to: str | None,
                    delimiter: str | None, inverse: bool, overrides: Any, out_options: OutputOptions
                    ) -> tuple[int, int, list]:
    from normcli import api

    source = PartSource(part, fmt, delimiter)
    try:
        summary = api.transform_source(stats, source, target, to=to, delimiter=delimiter, inverse=inverse,
                                       overrides=overrides, out_options=out_options, workers=1)
    finally:
        source.close()
    unseen = summary.extra["unseen"]
    return summary.rows, unseen.rows, list(unseen.keys)


class DaskEngine:
    """Runs the folds of :mod:`normcli.api` (``fit``, ``fit --update``, ``check``) and ``transform``
    on a :class:`distributed.Client`; pass it as ``engine=`` to those functions."""

    def __init__(self, client: Any, partition_bytes: int = PARTITION_BYTES, partition_rows: int = PARTITION_ROWS):
        self.client = client
        self.partition_bytes = partition_bytes
        self.partition_rows = partition_rows

    @staticmethod
    def expand_inputs(specs: Sequence[str]) -> list[io.InputFile]:
        """The input files named by ``specs`` (see :func:`expand_inputs`)."""
        return expand_inputs(specs)

    def partitions(self, items: Sequence[io.InputFile], fmt: str | None, delimiter: str | None) -> list[Partition]:
        """The partitions of ``items`` at this engine's sizes."""
        return partitions(items, fmt, delimiter, self.partition_bytes, self.partition_rows)

    def fold_inputs(self, items: Sequence[io.InputFile], make_plan: Callable, merge: Callable, require: Callable,
                    fmt: str | None, delimiter: str | None, progress: engine.Progress | None,
                    log: Callable | None) -> tuple[Any, Any, list]:
        """As :func:`normcli.api._fold_inputs`, on the cluster: the plan from the first input (read
        on the client), one task per partition, a tree of merges in partition order."""
        log = log or (lambda event, fields: None)
        parts = self.partitions(items, fmt, delimiter)
        first = PartSource(parts[0], fmt, delimiter)
        try:
            # the first partition of each later file, where the first leaves a type unknown
            later = {p.index: p for p in reversed(parts) if p.index != parts[0].index}
            plan = make_plan(first, [functools.partial(PartSource, p, fmt, delimiter) for _, p in sorted(later.items())])
        finally:
            first.close()
        plan_f = self.client.scatter(plan, broadcast=True, hash=False)
        for index, item in enumerate(items):
            log("input", {"path": item.path, "bytes": _size(parts, index)})
        leaves = [self.client.submit(_fold_task, p, plan_f, merge, require, fmt, delimiter, pure=False)
                  for p in parts]
        root = _tree(self.client, leaves, functools.partial(_merge_task, merge))
        _advance(self.client, leaves, parts, progress)
        acc, rows = root.result()
        counts = [0] * len(items)
        for index, n in rows:
            counts[index] += n
        inputs = []
        for index, item in enumerate(items):
            entry = io.input_entry(item.path, local=not is_url(item.path))
            entry.update(rows=counts[index], bytes=_size(parts, index))
            inputs.append(entry)
            log("rows", {"path": item.path, "rows": counts[index]})
        return plan, acc, inputs

    def transform_paths(self, stats: Any, paths: Sequence[str], output: str | None, *, fmt: str | None = None,
                        to: str | None = None, delimiter: str | None = None, inverse: bool = False,
                        progress: engine.Progress | None = None, overrides: Any = None,
                        out_options: OutputOptions | None = None,
                        log: Callable | None = None) -> list[engine.InputSummary]:
        """Transform ``paths`` into the directory ``output``: one part per partition, in input
        order, named ``part-00000.<ext>`` (the format of ``to``, else of the first input).

        The tasks write their parts into a hidden directory inside ``output``; only when every
        task has succeeded are the parts moved into place and the parts of an earlier run that
        this run does not replace (more of them, or of another format) removed. So a failed or
        interrupted run leaves ``output`` as it was. Returns one summary per input file."""
        log = log or (lambda event, fields: None)
        check_parts_directory(output)
        directory = os.path.realpath(output)
        items = self.expand_inputs(paths)
        for item in items:
            here = None if is_url(item.path) else os.path.realpath(item.path)
            if here and os.path.dirname(here) == directory and _PART.match(os.path.basename(here)):
                raise UsageError(f"the input '{item.path}' is a part of the output directory, which this run "
                                 "replaces; choose another -o")
        parts = self.partitions(items, fmt, delimiter)
        out_fmt = to or io.input_format(items[0].path, fmt)
        ext = {"csv": ".csv", "tsv": ".tsv", "parquet": ".parquet"}[out_fmt]
        names = [f"part-{i:05d}{ext}" for i in range(len(parts))]
        # A failed run removes the directory (and parents) it made, as the local engine does.
        with io.parent_directories(os.path.join(directory, names[0])):
            try:
                staging = tempfile.mkdtemp(prefix=".normcli-", dir=directory)
            except OSError as exc:
                raise IOFailure(f"cannot write '{output}': {exc.strerror or exc}") from exc
            futures: list = []
            try:
                stats_f = self.client.scatter(stats, broadcast=True, hash=False)
                for item in items:
                    log("input", {"path": item.path, "output": output})
                futures = [self.client.submit(_transform_task, p, os.path.join(staging, name), stats_f, fmt, to,
                                              delimiter, inverse, overrides, out_options or OutputOptions(),
                                              pure=False)
                           for p, name in zip(parts, names)]
                _advance(self.client, futures, parts, progress)
                results = self.client.gather(futures)
                try:
                    for name in names:
                        os.replace(os.path.join(staging, name), os.path.join(directory, name))
                except OSError as exc:
                    raise IOFailure(f"cannot write '{output}': {exc.strerror or exc}") from exc
                _remove_stale_parts(directory, set(names))
            except BaseException:
                try:  # the tasks not started yet; running ones finish on their own
                    self.client.cancel(futures)
                except Exception:  # a cluster that is gone has nothing to cancel: the first error stands
                    pass
                raise
            finally:
                discard_staging(staging)
        summaries = [engine.InputSummary(item.path, 0, _size(parts, i), {"unseen": UnseenGroups()})
                     for i, item in enumerate(items)]
        for part, (rows, unseen_rows, keys) in zip(parts, results):
            summary = summaries[part.index]
            summary.rows += rows
            if unseen_rows:
                summary.extra["unseen"].add(unseen_rows, keys)
        for summary in summaries:
            log("rows", {"path": summary.path, "rows": summary.rows})
        return summaries


def check_parts_directory(output: str | None) -> None:
    """UsageError unless ``output`` can be the local directory a Dask transform writes its parts
    into: checked before a cluster is started for nothing."""
    if output in (None, "-") or is_url(output):
        raise UsageError("--engine dask writes one part per partition into a local directory: -o DIR/")
    directory = os.path.realpath(output)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"--engine dask writes one part per partition into a directory: '{output}' is a file")
    named_like_a_file = not output.endswith(("/", os.sep)) and _is_data_file(os.path.basename(output))
    if named_like_a_file and not os.path.isdir(directory):
        raise UsageError(f"--engine dask writes one part per partition into a directory, not into "
                         f"'{output}': give -o DIR/")


def _size(parts: Sequence[Partition], index: int) -> int | None:
    sizes = [p.nbytes for p in parts if p.index == index]
    return None if any(s is None for s in sizes) else sum(sizes)


def _tree(client: Any, futures: list, combine: Callable) -> Any:
    """One future holding ``combine`` folded over ``futures`` in order, by rounds of :data:`FAN_IN`."""
    while len(futures) > 1:
        futures = [client.submit(combine, *futures[i:i + FAN_IN], pure=False) if len(futures[i:i + FAN_IN]) > 1
                   else futures[i] for i in range(0, len(futures), FAN_IN)]
    return futures[0]


def _advance(client: Any, futures: list, parts: Sequence[Partition], progress: engine.Progress | None) -> None:
    """Wait for ``futures``, advancing ``progress`` by each partition's bytes as it finishes; the
    first failed task's error is raised."""
    from distributed import as_completed

    where = {f.key: p for f, p in zip(futures, parts)}
    several = len({p.index for p in parts}) > 1
    for future in as_completed(futures):
        if future.status == "error":
            with naming_input(where[future.key].label, several):
                future.result()  # raises the task's exception
        if progress is not None:
            progress.advance(where[future.key].nbytes or 0, 0)


def discard_staging(staging: str) -> None:
    """Remove a transform's staging directory, whose tasks may still be running after a failure.

    It is renamed first: a task that finishes later then finds no directory to put its part in
    (its paths name the old one), where removing it in place would race with the task renaming
    its finished part into it, leaving the directory and that part behind."""
    gone = staging + ".discarded"
    try:
        os.rename(staging, gone)
    except OSError:
        gone = staging
    shutil.rmtree(gone, ignore_errors=True)


def _remove_stale_parts(directory: str, keep: set[str]) -> None:
    """Remove the parts in ``directory`` (of any format) that are not named in ``keep``."""
    for name in os.listdir(directory):
        if _PART.match(name) and name not in keep:
            io.discard(os.path.join(directory, name))
