"""The ``normcli`` command line: parse options, call the library, report errors in one place."""
from __future__ import annotations

import os
import sys

# Arrow's default allocator (mimalloc) keeps freed memory for reuse, which lifts a streaming
# run's peak RSS well above what it holds. jemalloc told to give freed memory back after 100 ms
# peaks lowest (221 MiB on a 5M-row Parquet transform, 241 MiB with the system allocator, whose
# per-thread arenas keep what the worker threads freed) in the same time. pyarrow's Linux builds
# carry jemalloc; elsewhere the system allocator. Both must be chosen before pyarrow is imported.
if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
    if sys.platform.startswith("linux"):
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "jemalloc"
        os.environ.setdefault("JE_ARROW_MALLOC_CONF", "dirty_decay_ms:100,muzzy_decay_ms:100")
    else:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"


def _keep_freed_buffers() -> None:
    """Have glibc's malloc keep freed blocks of up to 4 MiB for reuse (Linux with glibc only).

    A CSV transform allocates a few MiB per piece (the text read, the text written) and frees
    it soon after; by default glibc hands most of that back to the kernel and takes it again,
    zero-filled, one page fault per 4 KiB: 350,000 faults and 2.3 s of system time on a
    5M-row file. Keeping up to 16 MiB free before trimming cuts that to 1.5 s for 11 MiB more
    peak RSS. Other C libraries have no ``mallopt``, and keep their own defaults.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 4 << 20)
    mallopt(m_trim_threshold, 16 << 20)


_keep_freed_buffers()

import contextlib  # noqa: E402
import copy  # noqa: E402
import datetime as _dt  # noqa: E402
import errno  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from typing import Annotated, Any, Optional  # noqa: E402

import typer  # noqa: E402

from normcli import __version__, threads  # noqa: E402
from normcli.errors import (EXIT_DRIFT, EXIT_INTERNAL, EXIT_IO, EXIT_OK, EXIT_USAGE, IOFailure, Interrupted,  # noqa: E402
                            NormcliError, UsageError)

app = typer.Typer(
    name="normcli",
    help="Learn normalization statistics from tabular data and apply them, streaming.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

# Options spelled the same in every command.
FormatOpt = Annotated[Optional[str], typer.Option("--format", "-f", help="Input format: csv, tsv or parquet (default: from the extension).")]
DelimiterOpt = Annotated[Optional[str], typer.Option("--delimiter", "-d", help="Field separator of CSV input (default: comma; tab for TSV).")]
DelimiterOutOpt = Annotated[Optional[str], typer.Option("--delimiter", "-d", help="Field separator of CSV input, and of CSV output (default: comma; tab for TSV).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on stderr but errors.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")]
StatsOpt = Annotated[str, typer.Option("--stats", "-s", help="The stats file written by fit (- reads it from stdin).")]


def _output_path(value: Optional[str]) -> Optional[str]:
    """An output option's value, refused when empty: ``-o ""`` (an unset shell variable) names
    no file, and stdout is ``-`` or no option at all."""
    if value == "":
        raise UsageError("an empty output path names no file (- or no -o writes to stdout)")
    return value


OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", help="Output path; - or none for stdout.",
                                                  callback=_output_path)]
ToOpt = Annotated[Optional[str], typer.Option("--to", help="Output format: csv, tsv or parquet (default: from -o, else the input's).")]
LogFormatOpt = Annotated[str, typer.Option("--log-format", help="Events on stderr: text, or json (one object per line: start, input, skip, rows, note, warning, drift, end, error).")]
EngineOpt = Annotated[str, typer.Option("--engine", help="local (default), or dask: run on a Dask cluster (pip install 'normcli\\[dask]').")]
SchedulerOpt = Annotated[Optional[str], typer.Option("--scheduler", help="With --engine dask: address of a running Dask scheduler (default: start a local cluster).")]
InputsArg = Annotated[list[str], typer.Argument(help="Input files (CSV, TSV, Parquet), directories, globs, or - for stdin.")]
LOG_FORMATS = ("text", "json")


class _EventLog:
    """The events of a run on stderr: as text (warnings and notes only) or one JSON object per line."""

    def __init__(self) -> None:
        self.format = "text"
        self.quiet = False
        self.started = time.monotonic()

    def configure(self, log_format: str, quiet: bool) -> None:
        """Set the format (``text`` or ``json``) and whether only errors are shown."""
        if log_format not in LOG_FORMATS:
            raise UsageError(f"--log-format must be text or json, got '{log_format}'")
        self.format, self.quiet = log_format, quiet

    def __call__(self, event: str, fields: dict) -> None:
        if self.quiet and event not in ("error", "end"):
            return
        if "message" in fields:
            fields = {**fields, "message": _shortened(fields["message"])}
        if self.format == "json":
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
            line = json.dumps(_without_surrogates({"event": event, "time": now, **fields}), allow_nan=False, default=str)
            print(line, file=sys.stderr, flush=True)
        elif event == "warning":
            from rich.markup import escape

            # a column name such as "[/]" is text, not markup
            _stderr().print(f"[yellow]warning:[/yellow] {escape(_visible(fields['message']))}", markup=True)
        elif event == "note":
            print(f"note: {_visible(fields['message'])}", file=sys.stderr, flush=True)
        elif event == "skip":
            print(f"note: skipped '{_visible(fields['path'])}': {_visible(fields['reason'])}", file=sys.stderr,
                  flush=True)
        elif event == "error":
            print(f"Error: {_visible(fields['message'])}", file=sys.stderr, flush=True)


_LONG_QUOTED = re.compile(r"'([^']{300,})'")
_LONGEST_MESSAGE = 4000


def _shortened(message: str) -> str:
    """``message`` with a quoted value or name of 300 characters or more cut to its first 200
    (a 20 MiB stray value made a 20 MB line in every cron log), and the whole kept under
    4,000 characters."""
    message = _LONG_QUOTED.sub(lambda m: f"'{m.group(1)[:200]}...' ({len(m.group(1)):,} characters)", message)
    if len(message) > _LONGEST_MESSAGE:
        message = message[:_LONGEST_MESSAGE - 600] + " ... " + message[-500:]
    return message


def _visible(text: str) -> str:
    """``text`` with the characters a terminal would not show as themselves escaped (a NUL or an
    escape sequence from a data value or column name, a no-break space that reads as a space; a
    byte of a file name that is not UTF-8, which Python holds as a lone surrogate, as ``\\xNN``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(c: str) -> str:
    if "\udc80" <= c <= "\udcff":  # os.fsdecode's stand-in for the byte ord(c) - 0xdc00
        return f"\\x{ord(c) - 0xdc00:02x}"
    return c.encode("unicode_escape").decode("ascii")


def _without_surrogates(value: Any) -> Any:
    """``value`` (a JSON event) with a file name's bytes that are not UTF-8 written as ``\\xNN``
    text: JSON would hold them as lone surrogates, which a strict reader refuses."""
    if isinstance(value, str) and not value.isascii():
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # another lone surrogate (a "\\ud800" escape in a stats file)
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    return value


LOG = _EventLog()


def _table_console():
    """A Rich console for a table on stdout: not a terminal (a pipe, a file), no width limit, so
    nothing is cut off; markup off, so column names show as they are ("[red]x" or "[/]"); and a
    reader that stops reading ends the run as it ends any other, with status 0 (Rich's own
    reaction is exit 1)."""
    from rich.console import Console

    class TableConsole(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    return TableConsole(highlight=False, markup=False, width=None if sys.stdout.isatty() else 1000)


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _warn(message: str, quiet: bool) -> None:
    if not quiet:
        LOG("warning", {"message": message})


def _split(value: Optional[str], option: Optional[str] = None) -> Optional[list[str]]:
    """The names of a list option; given as ``option``, one that names none is a usage error
    (``--exclude ''`` would exclude nothing without a word; the column with no name is ``""``)."""
    from normcli.model import split_names

    names = split_names(value) if value is not None else None
    if option is not None and names == []:
        raise UsageError(f'{option} names no column (the column without a name is written "")')
    return names


def _floats(value: Optional[str], name: str, count: Optional[int] = None) -> Optional[list[float]]:
    if value is None:
        return None
    try:
        out = [float(v) for v in value.split(",")]
    except ValueError:
        raise UsageError(f"{name} takes comma-separated numbers, got '{value}'") from None
    if count is not None and len(out) != count:
        raise UsageError(f"{name} takes {count} numbers, got '{value}'")
    return out


class _RichProgress:
    """Bytes read, rows and rate on stderr; only used when stderr is a terminal."""

    def __init__(self, total: Optional[int], label: str) -> None:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.rows = 0
        self._p = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                           TextColumn("{task.fields[rows]:,} rows"), TransferSpeedColumn(), TimeRemainingColumn(),
                           console=_stderr(), transient=True)
        self._task = self._p.add_task(label, total=total, rows=0)

    def __enter__(self) -> "_RichProgress":
        with threads.signals_held():  # it starts a refresh thread
            self._p.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._p.stop()

    def advance(self, nbytes: int, rows: int) -> None:
        self.rows += rows
        self._p.update(self._task, advance=nbytes, rows=self.rows)


def _progress(paths: list[str], quiet: bool, label: str):
    import contextlib

    if quiet or LOG.format == "json" or not sys.stderr.isatty():  # json: one object per line, no bar
        return contextlib.nullcontext(None)
    sizes = [os.path.getsize(p) for p in paths if p != "-" and os.path.isfile(p)]
    return _RichProgress(sum(sizes) if len(sizes) == len(paths) else None, label)


@contextlib.contextmanager
def _engine(name: str, scheduler: Optional[str], inputs: list[str]):
    """The engine ``--engine`` names for ``inputs``: None for the local one, else a connected
    Dask engine (which reads no standard input: refused before a cluster is started for it)."""
    if name not in ("local", "dask"):
        raise UsageError(f"--engine must be local or dask, got '{name}'")
    if name == "local":
        if scheduler is not None:
            raise UsageError("--scheduler needs --engine dask")
        yield None
        return
    from normcli import engine_dask

    engine_dask.refuse_stdin(inputs)

    with engine_dask.connect(scheduler, LOG) as eng:
        yield eng


def _method_options(ddof, range_, eps, eps_mode, gamma, beta, clip, clip_sigma, constant,
                    fill_missing, quantile_range) -> dict[str, Any]:
    from normcli import methods as M

    options = {"ddof": ddof, "range": _floats(range_, "--range", 2), "eps": eps, "eps_mode": eps_mode,
               "gamma": _floats(gamma, "--gamma"), "beta": _floats(beta, "--beta"),
               "clip": clip or None, "clip_sigma": clip_sigma, "constant": constant,
               "fill_missing": fill_missing or None, "quantile_range": _floats(quantile_range, "--quantile-range", 2)}
    M.check_options(options)
    return options


@app.command()
def fit(
    inputs: InputsArg,
    output: OutputOpt = None,
    update: Annotated[Optional[str], typer.Option("--update", "-u", help="Fold INPUTS into this stats file (same columns and methods); inputs it already absorbed are skipped. Written back in place unless -o is given.")] = None,
    method: Annotated[Optional[list[str]], typer.Option("--method", "-m", help="NAME (default for all selected columns) or NAME:col1,col2; repeatable. Methods: zscore, minmax, maxabs, robust, layer, l1, l2, max.")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", "-c", help="Comma-separated columns to fit (default: every numeric column).")] = None,
    exclude: Annotated[Optional[str], typer.Option("--exclude", "-x", help="Comma-separated columns to leave out.")] = None,
    group_by: Annotated[Optional[str], typer.Option("--group-by", "-g", help="KEY[,KEY2]: also fit every per-column statistic per key value (instance normalization).")] = None,
    ddof: Annotated[Optional[int], typer.Option("--ddof", help="zscore: 0 for population std (default), 1 for sample std.")] = None,
    range_: Annotated[Optional[str], typer.Option("--range", help="minmax: target range a,b (default 0,1).")] = None,
    eps: Annotated[Optional[float], typer.Option("--eps", help="layer: added to the row variance, or to the row std with --eps-mode std (default 1e-5); zscore: added to the variance (default 0).")] = None,
    eps_mode: Annotated[Optional[str], typer.Option("--eps-mode", help="layer: inside (sqrt(var + eps), like torch; the default) or std (std + eps).")] = None,
    gamma: Annotated[Optional[str], typer.Option("--gamma", help="Scale after normalizing: one number, or one per column (zscore: its columns in order; layer: the columns it spans).")] = None,
    beta: Annotated[Optional[str], typer.Option("--beta", help="Shift after normalizing: one number, or one per column (zscore: its columns in order; layer: the columns it spans).")] = None,
    clip: Annotated[bool, typer.Option("--clip", help="minmax: clip output into the range.")] = False,
    clip_sigma: Annotated[Optional[float], typer.Option("--clip-sigma", help="zscore, robust: clip output to +-this (0: no clipping).")] = None,
    constant: Annotated[Optional[str], typer.Option("--constant", help="Constant columns: scale1 (default), zero, passthrough or error.")] = None,
    fill_missing: Annotated[bool, typer.Option("--fill-missing", help="Nulls become the normalized centre.")] = False,
    quantile_range: Annotated[Optional[str], typer.Option("--quantile-range", help="robust: quantiles of the scale, default 25,75.")] = None,
    sketch_k: Annotated[Optional[int], typer.Option("--sketch-k", help="robust: KLL sketch accuracy parameter (default 200).")] = None,
    sketch: Annotated[bool, typer.Option("--sketch", help="Keep a quantile sketch of every column, for the PSI and KS metrics of check.")] = False,
    fmt: FormatOpt = None,
    delimiter: DelimiterOpt = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    log_format: LogFormatOpt = "text",
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = None,
) -> None:
    """Learn normalization statistics from INPUTS and write the stats file (JSON)."""
    from normcli import api, io

    LOG.configure(log_format, quiet)
    fit_options = {k: v for k, v in locals().items() if k in _FIT_ONLY}
    if update is not None:
        if any(v not in (None, False, []) for k, v in fit_options.items() if k not in _READ_OPTIONS):
            raise UsageError("--update fits the stats file's columns, methods and options: drop the fit options")
        _stdin_once([*inputs, update])
        if output is None and (update == "-" or io.is_special(update)):  # written back into a pipe it was read from: lost, or a hang
            raise UsageError(f"--update writes the stats file back in place, and '{update}' is standard input, "
                             "a pipe or a device: name the updated stats file with -o")
        target = output or update
        in_place = io.same_file(target, update)
        # Updates of one file in place take turns: each reads what the one before wrote.
        turn = (io.exclusive(update, lambda: LOG("note", {"message": f"waiting for another update of '{update}'"}))
                if in_place else contextlib.nullcontext())
        with turn:
            with _engine(engine, scheduler, inputs) as eng, _progress(inputs, quiet, "fit") as progress:
                api.check_output(inputs, target, engine=eng)
                stats, absorbed = api.update(api.load(update), inputs, fmt=fmt, delimiter=delimiter,
                                             progress=progress, log=LOG, engine=eng)
            if absorbed == 0 and in_place:
                return
            _write_stats(stats, target)
        return
    with _engine(engine, scheduler, inputs) as eng:
        api.check_output(inputs, output, engine=eng)
        stats = _fit_stats(inputs, **fit_options, fit_fn=functools.partial(api.fit_paths, engine=eng))
    _write_stats(stats, output)


_FIT_ONLY = ("method", "columns", "exclude", "group_by", "ddof", "range_", "eps", "eps_mode", "gamma", "beta", "clip",
             "clip_sigma", "constant", "fill_missing", "quantile_range", "sketch_k", "sketch", "fmt",
             "delimiter", "quiet")
_READ_OPTIONS = ("fmt", "delimiter", "quiet")


def _fit_stats(inputs: list[str], *, method, columns, exclude, group_by, ddof, range_, eps, eps_mode, gamma, beta, clip,
               clip_sigma, constant, fill_missing, quantile_range, sketch_k, sketch, fmt, delimiter, quiet,
               fit_fn=None) -> Any:
    """Validate the fit options and fit ``inputs`` (``fit_fn`` replaces ``api.fit_paths``)."""
    from normcli import api

    options = _method_options(ddof, range_, eps, eps_mode, gamma, beta, clip, clip_sigma, constant,
                              fill_missing, quantile_range)
    _stdin_once(inputs)
    with _progress(inputs, quiet, "fit") as progress:
        stats = (fit_fn or api.fit_paths)(inputs, method or [], columns=_split(columns),
                                          exclude=_split(exclude, "--exclude") or (),
                                          group_by=_split(group_by, "--group-by") or (),
                                          fmt=fmt, delimiter=delimiter, sketch_k=sketch_k, progress=progress,
                                          options=options, sketch_all=sketch, log=LOG)
    for message in api.constant_warnings(stats):
        _warn(message, quiet)
    return stats


@contextlib.contextmanager
def _stdout_writes():
    """Around writing to stdout: an OSError (a full disk behind ``> file``) becomes an IOFailure,
    and stdout is pointed at /dev/null so that Python's flush at exit cannot report it again. A
    closed pipe stays a BrokenPipeError, which ends the run quietly."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        _silence_stdout()
        raise IOFailure(f"cannot write standard output: {exc.strerror or exc}") from exc


def _write_stats(stats: Any, output: Optional[str]) -> None:
    from normcli import statsfile

    if output in (None, "-"):
        _write(None, statsfile.dumps(stats).encode("utf-8"), text=True)
    else:
        stats.save(output)


def _stdin_once(paths: list[str]) -> None:
    """UsageError when standard input (``-``) is named more than once, as inputs, stats files or both."""
    if paths.count("-") > 1:
        raise UsageError("stdin (-) can be read only once (as an input or as the stats file)")


def _transform(inputs: list[str], stats_path: str, output: Optional[str], fmt: Optional[str], to: Optional[str],
               delimiter: Optional[str], quiet: bool, inverse: bool, overrides: dict[str, Any],
               unseen_group: Optional[str], dtype: str = "float64", decimals: Optional[int] = None,
               engine: str = "local", scheduler: Optional[str] = None) -> None:
    from normcli import api, io
    from normcli.model import OutputOptions

    if to is not None and to not in ("csv", "tsv", "parquet"):
        raise UsageError(f"--to must be csv, tsv or parquet, got '{to}'")
    _stdin_once([*inputs, stats_path])
    out_options = OutputOptions(unseen_group or "global", dtype, decimals)
    io.check_outputs([(output, None)], [stats_path], read_as="the stats file")
    if engine == "dask":
        from normcli import engine_dask

        engine_dask.check_parts_directory(output)
    stats = api.load(stats_path)
    _groups_for(unseen_group, stats, stats_path)
    label = "inverse" if inverse else "transform"
    with _engine(engine, scheduler, inputs) as eng, _progress(inputs, quiet, label) as progress:
        summaries = api.transform_paths(stats, inputs, output, fmt=fmt, to=to, delimiter=delimiter,
                                        inverse=inverse, progress=progress, overrides=overrides,
                                        out_options=out_options, log=LOG, engine=eng)
    for summary in summaries:
        unseen = summary.extra["unseen"]
        if unseen.rows and out_options.unseen_group == "global":
            _warn(api.unseen_message(stats, unseen, inverse), quiet)


def _groups_for(unseen_group: Optional[str], stats: Any, path: str) -> None:
    """Refuse ``--unseen-group`` given for statistics without groups: it would do nothing, and
    seem to have been applied (as an option no fitted method reads is refused)."""
    if unseen_group is not None and stats.groups is None:
        raise UsageError(f"--unseen-group is for statistics fitted with --group-by, and '{path}' has no groups")


UnseenOpt = Annotated[Optional[str], typer.Option("--unseen-group", help="With --group-by statistics, rows of a key not seen in fit: global (overall statistics, warned with a count; default), passthrough (unscaled), null or error.")]


@app.command()
def transform(
    inputs: InputsArg,
    stats: StatsOpt,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Output path; - or none for stdout; DIR/ for one output per input, named like it.",
                                                  callback=_output_path)] = None,
    fmt: FormatOpt = None,
    to: ToOpt = None,
    delimiter: DelimiterOutOpt = None,
    clip: Annotated[Optional[bool], typer.Option("--clip/--no-clip", help="Override the fitted clip setting of minmax.")] = None,
    clip_sigma: Annotated[Optional[float], typer.Option("--clip-sigma", help="zscore, robust: clip output to +-this (0: no clipping; at transform it turns a fitted clip off).")] = None,
    fill_missing: Annotated[Optional[bool], typer.Option("--fill-missing/--keep-missing", help="Nulls become the normalized centre (or stay null).")] = None,
    unseen_group: UnseenOpt = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Type of the normalized columns: float64 (default) or float32.")] = "float64",
    decimals: Annotated[Optional[int], typer.Option("--decimals", help="Round normalized values to N decimal places (compact CSV).")] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    log_format: LogFormatOpt = "text",
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = None,
) -> None:
    """Normalize INPUTS with a stats file; every other column passes through unchanged."""
    LOG.configure(log_format, quiet)
    overrides = {"clip": clip, "clip_sigma": clip_sigma, "fill_missing": fill_missing}
    _transform(inputs, stats, output, fmt, to, delimiter, quiet, False,
               {k: v for k, v in overrides.items() if v is not None}, unseen_group, dtype, decimals,
               engine, scheduler)


@app.command()
def inverse(
    inputs: Annotated[list[str], typer.Argument(help="Normalized input files, directories, globs, or - for stdin.")],
    stats: StatsOpt,
    output: OutputOpt = None,
    fmt: FormatOpt = None,
    to: ToOpt = None,
    delimiter: DelimiterOutOpt = None,
    unseen_group: UnseenOpt = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    log_format: LogFormatOpt = "text",
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = None,
) -> None:
    """Undo transform: map normalized per-column values back to the original scale."""
    LOG.configure(log_format, quiet)
    _transform(inputs, stats, output, fmt, to, delimiter, quiet, True, {}, unseen_group,
               engine=engine, scheduler=scheduler)


@app.command()
def merge(
    parts: Annotated[list[str], typer.Argument(help="Stats files fitted on disjoint data with the same columns and methods.")],
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Merge stats files as if one fit had read all their data."""
    from normcli import api, io

    LOG.configure(log_format, quiet)
    _stdin_once(parts)
    io.check_outputs([(output, None)], parts, read_as="one of the stats files merged")
    api.distinct_files(parts)
    loaded = []
    for path in parts:
        loaded.append(api.load(path))
        LOG("input", {"path": path, "rows": loaded[-1].info.get("rows", 0)})
    merged = api.merge(*loaded)
    merged.info["created"] = None
    _write_stats(merged, output)


@app.command()
def check(
    inputs: InputsArg,
    stats: StatsOpt,
    max_shift: Annotated[float, typer.Option("--max-shift", help="Drift when |standardized mean shift| exceeds this.")] = 3.0,
    max_null_rate_change: Annotated[float, typer.Option("--max-null-rate-change", help="Drift when |null rate change| exceeds this.")] = 0.1,
    max_psi: Annotated[float, typer.Option("--max-psi", help="Drift when the population stability index exceeds this (sketched columns).")] = 0.25,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of a table.")] = False,
    fmt: FormatOpt = None,
    delimiter: DelimiterOpt = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    log_format: LogFormatOpt = "text",
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = None,
) -> int:
    """Report drift of INPUTS against a stats file; exit 6 when a column drifted."""
    from normcli import api

    LOG.configure(log_format, quiet)
    for name, value in (("--max-shift", max_shift), ("--max-null-rate-change", max_null_rate_change),
                        ("--max-psi", max_psi)):
        if not value >= 0:  # NaN too; inf means no limit
            raise UsageError(f"{name} must be a number >= 0, got {value}")
    _stdin_once([*inputs, stats])
    fitted = api.load(stats)
    thresholds = {"max_shift": max_shift, "max_null_rate_change": max_null_rate_change, "max_psi": max_psi}
    with _engine(engine, scheduler, inputs) as eng, _progress(inputs, quiet, "check") as progress:
        api.check_output(inputs, None, engine=eng)  # the report on stdout, redirected onto an input
        report = api.check(fitted, inputs, thresholds=thresholds, fmt=fmt, delimiter=delimiter,
                           progress=progress, log=LOG, engine=eng)
    report["stats"] = stats
    if report["rows"] == 0:  # an empty extract: no drift found, and none could be
        LOG("warning", {"message": "the input has no rows: every metric is undefined, so no drift can be found"})
    with _stdout_writes():
        if as_json:
            sys.stdout.write(json.dumps(report, indent=2, allow_nan=False) + "\n")
            sys.stdout.flush()
        else:
            _print_drift(report)
    drifted = [c["column"] for c in report["columns"] if c["drift"]]
    if drifted:
        LOG("drift", {"columns": drifted})
    return EXIT_DRIFT if report["drift"] else EXIT_OK


def _print_drift(report: dict) -> None:
    from rich.table import Table

    def num(v: Any, fmt: str = ".3g") -> str:
        return "" if v is None else format(v, fmt)

    # names from the data and the stats file, shown with what a terminal would act on escaped
    table = Table(title=f"drift of {report['rows']:,} rows against {_visible(report['stats'])}")
    heads = ("column", "rows", "mean shift", "std ratio", "null rate change", "out of range", "PSI", "KS", "drift")
    for head in heads:
        table.add_column(head, justify="left" if head in ("column", "drift") else "right")
    for c in report["columns"]:
        # null in JSON, which has no infinity: the shift of a constant fitted column whose mean moved
        shift = "inf" if c["mean_shift"] is None and "mean_shift" in c["drift"] else num(c["mean_shift"])
        table.add_row(_visible(c["column"]), f"{c['count'] + c['nulls']:,}", shift, num(c["std_ratio"]),
                      num(c["null_rate_change"], "+.3f"), num(c["out_of_range"], ".1%"), num(c["psi"]),
                      num(c["ks"]), ", ".join(c["drift"]) or "ok")
    _table_console().print(table)  # as inspect's


def fit_transform(input: str, stats_out: Optional[str], output: Optional[str], to: Optional[str],
                  log_format: str, debug: bool, **fit_options: Any) -> None:
    """Fit INPUT and transform it in one run: write the stats file and the normalized data."""
    from normcli import api

    LOG.configure(log_format, fit_options["quiet"])
    if to is not None and to not in ("csv", "tsv", "parquet"):
        raise UsageError(f"--to must be csv, tsv or parquet, got '{to}'")
    if stats_out in (None, "-") and output in (None, "-"):
        raise UsageError("fit-transform writes two outputs: give --stats-out FILE or -o FILE")

    def fit_then_transform(inputs: list[str], methods: list[str], **kw: Any) -> Any:
        # statistics for stdout are written there before the data output is put in place:
        # if they cannot be, that output is left as it was
        to_stdout = (lambda stats: _write_stats(stats, None)) if stats_out in (None, "-") else None
        return api.fit_transform(inputs[0], stats_out, output, methods, to=to, fitted=to_stdout, **kw)

    _fit_stats([input], **fit_options, fit_fn=fit_then_transform)


def _fit_transform_signature() -> inspect.Signature:
    """fit-transform takes fit's options (spelled the same) plus its own two outputs."""
    own = [
        inspect.Parameter("input", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          annotation=Annotated[str, typer.Argument(help="Input file (CSV, TSV, Parquet) or - for stdin (spooled to a temporary file).")]),
        inspect.Parameter("stats_out", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[Optional[str], typer.Option("--stats-out", help="Where to write the stats file (- or none: stdout, then -o is needed).", callback=_output_path)]),
        inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=OutputOpt),
        inspect.Parameter("to", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ToOpt),
    ]
    shared = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY,
                        annotation=DelimiterOutOpt if p.name == "delimiter" else p.annotation)  # it writes CSV too
              for p in inspect.signature(fit, eval_str=True).parameters.values()
              if p.name in _FIT_ONLY or p.name in ("debug", "log_format")]
    return inspect.Signature(own + shared)


fit_transform.__signature__ = _fit_transform_signature()
app.command("fit-transform")(fit_transform)


@app.command()
def inspect(
    stats: Annotated[str, typer.Argument(help="The stats file (- reads it from stdin).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the stats file's JSON instead of a table.")] = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Show the fitted columns of a stats file: method, constant policy, count, nulls, mean, std, min, max, flags."""
    from normcli import api, io, statsfile

    LOG.configure(log_format, quiet)
    io.check_outputs([(None, None)], [stats], read_as="the stats file")
    fitted = api.load(stats)
    if as_json:
        _write(None, statsfile.dumps(fitted).encode("utf-8"), text=True)
        return
    with _stdout_writes():
        _print_stats_table(stats, fitted)


def _option_flags(method: str, options: dict) -> list[str]:
    """``key=value`` for each option of ``method`` that is not its default (``key`` for a switch
    that is on), as the stats file spells them; the constant policy has a column of its own."""
    from normcli import methods

    def shown(v: Any) -> str:
        return ",".join(f"{x:g}" for x in v) if isinstance(v, list) else f"{v:g}"

    defaults = {**methods.DEFAULTS[method], **methods.COMMON_DEFAULTS}
    return [key if value is True else f"{key}={shown(value)}" for key, value in options.items()
            if key != "constant" and key in defaults and value is not None and value != defaults[key]]


def _print_stats_table(stats: str, fitted: Any) -> None:
    """The table of `inspect` on stdout: one row per fitted column, then the row-wise methods."""
    from rich.table import Table

    from normcli import methods

    # names from the stats file, shown with what a terminal would act on escaped (as in errors)
    title = f"{_visible(stats)}: {fitted.info.get('rows', 0):,} rows fitted"
    if fitted.groups is not None:
        title += f", {len(fitted.groups.keys):,} groups by {_visible(', '.join(fitted.group_by))}"
    table = Table(title=title)
    for col in ("column", "method", "constant", "count", "nulls", "mean", "std", "min", "max", "flags"):
        table.add_column(col, justify="left" if col in ("column", "method", "constant", "flags") else "right")
    for name, col in fitted.columns.items():
        st = col.stats
        ddof = col.options.get("ddof", 0) if col.method == "zscore" else 0
        flags = []
        if fitted.is_constant(name) and not (st.count == 0 and st.nulls is None):  # not when nothing is known
            flags.append("constant")
        flags += _option_flags(col.method, col.options)
        if col.method == "robust" and st.sketch is not None and st.count:
            median, spread = methods.robust_center_scale(st, col.options)
            lo, hi = col.options["quantile_range"]
            flags.append(f"median={median:.6g}")
            flags.append(f"{'IQR' if (lo, hi) == (25, 75) else f'q{lo:g}-q{hi:g}'}={spread:.6g}")
        if fitted.groups is not None and name in fitted.groups.columns:
            gs = fitted.groups.columns[name]
            with_values, total = int((gs.count > 0).sum()), len(fitted.groups.keys)
            flags.append(f"{total:,} groups" if with_values == total else f"{with_values:,} of {total:,} groups with values")
            n_const = int(fitted.is_constant(name, grouped=True).sum())
            if n_const:
                flags.append(f"{n_const:,} constant groups")
        flags += [f"fixed {k}={v:.6g}" for k, v in (("center", st.center), ("scale", st.scale)) if v is not None]
        if st.sketch is not None:
            from normcli import sketch

            flags.append(f"sketch k={st.sketch.k} err={sketch.rank_error(st.sketch):.2g}")
        # blank when unknown (null in the file: an import's missing moments or extremes)
        num = (lambda v: "" if math.isnan(v) else f"{v:.6g}") if st.count else (lambda v: "")
        nulls = "" if st.nulls is None else f"{st.nulls:,}"  # unknown for imported statistics
        table.add_row(_visible(name), col.method, col.options.get("constant", ""), f"{st.count:,}", nulls,
                      num(st.mean), num(st.std(ddof)), num(st.min), num(st.max), ", ".join(flags))
    console = _table_console()
    console.print(table)
    for row in fitted.rows:
        opts = ", ".join(f"{k}={v}" for k, v in row.options.items() if v is not None)
        console.print(f"{row.method} over {_visible(', '.join(row.columns))} ({opts})")


# The options of export each target reads.
_EXPORT_OPTIONS = {"sql": ("dialect", "table", "columns", "unseen_group"), "sklearn": ("columns",),
                   "torch": (), "onnx": ("dtype",)}


@app.command()
def export(
    stats: Annotated[str, typer.Argument(help="The stats file (- reads it from stdin).")],
    to: Annotated[str, typer.Option("--to", help="Target: sql, sklearn (skops file), torch (safetensors) or onnx.")],
    output: OutputOpt = None,
    dialect: Annotated[Optional[str], typer.Option("--dialect", help="sql: duckdb (default), postgres, sqlite or spark.")] = None,
    table: Annotated[Optional[str], typer.Option("--table", help="sql: the table to select from (default data).")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", "-c", help="sql, sklearn: every input column in order, to pass the unfitted ones through.")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="onnx: float64 (default) or float32.")] = None,
    unseen_group: Annotated[Optional[str], typer.Option("--unseen-group", help="sql with --group-by statistics: rows of a key not seen in fit: global (default), passthrough or null.")] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Write the fitted statistics as SQL, a scikit-learn estimator, PyTorch tensors or an ONNX graph."""
    from normcli import api, io
    from normcli.exports import export_bytes

    LOG.configure(log_format, quiet)
    io.check_outputs([(output, None)], [stats], read_as="the stats file")
    given = {k: v for k, v in {"dialect": dialect, "table": table, "columns": _split(columns), "dtype": dtype,
                               "unseen_group": unseen_group}.items() if v is not None}
    unread = [key for key in given if key not in _EXPORT_OPTIONS.get(to, given)]  # (an unknown target: export names the choices)
    if unread:  # ignored, the option would seem to have been applied
        users = [f"--to {t}" for t, keys in _EXPORT_OPTIONS.items() if unread[0] in keys]
        raise UsageError(f"--{unread[0].replace('_', '-')} is an option of {' and '.join(users)}, not of --to {to}")
    fitted = api.load(stats)
    data = export_bytes(fitted, to, **given)  # a policy SQL has no form for is refused first
    _groups_for(unseen_group, fitted, stats)
    _write(output, data, text=to == "sql")


@app.command(name="import")
def import_(
    model: Annotated[str, typer.Argument(help="A fitted scikit-learn scaler or ColumnTransformer saved with skops.")],
    output: OutputOpt = None,
    columns: Annotated[Optional[str], typer.Option("--columns", "-c", help="The estimator's input columns in order (default: its feature_names_in_).")] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Turn a fitted scikit-learn scaler (.skops) into a stats file."""
    from normcli import io, statsfile
    from normcli.exports.sklearn import from_sklearn, load_skops

    LOG.configure(log_format, quiet)
    io.check_outputs([(output, None)], [model], read_as="the model file")
    _write(output, statsfile.dumps(from_sklearn(load_skops(model), _split(columns))).encode("utf-8"), text=True)


def _write(output: Optional[str], data: bytes, text: bool) -> None:
    """``data`` to stdout (text only) or atomically to ``output``. Text is bytes here, written
    as they are: a stats file is UTF-8 on stdout too, whatever the locale's encoding."""
    from normcli import statsfile

    if output in (None, "-"):
        if not text and sys.stdout.isatty():
            raise UsageError("refusing to write binary output to a terminal: give -o FILE")
        with _stdout_writes():
            sys.stdout.flush()  # what the text layer holds goes first
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    else:
        statsfile.write_atomic(output, data)


@app.callback(invoke_without_command=True)
def _main(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        print(f"normcli {__version__}")
        raise typer.Exit()


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def _catch_signals() -> None:
    """Stop on SIGTERM, SIGHUP (a closed terminal or ssh session), SIGQUIT (Ctrl-\\) and SIGXCPU
    (a soft CPU time limit, ``ulimit -t``; the hard one follows with SIGKILL) as on
    SIGINT: cleaned up, one line. A signal the parent set to be ignored (``nohup``, a background
    job) stays ignored (Polars' own SIGINT handler is undone where it is imported, see
    :func:`normcli.io.source.import_polars`), and pyarrow is kept from setting its own SIGINT
    handler during long reads."""
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGXCPU):
            if signal.getsignal(signum) != signal.SIG_IGN:
                signal.signal(signum, _on_sigterm)
    except ValueError:  # not in the main thread (embedded use)
        return
    import pyarrow

    pyarrow.enable_signal_handlers(False)


class _ClosedStream:
    """Stands for stdout or stderr when the process was started with it closed (``>&-``):
    writing fails as on a closed file, with an OSError the output's handling reports."""

    def write(self, data: Any) -> int:
        raise OSError(errno.EBADF, "the stream is closed")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError(errno.EBADF, "the stream is closed")

    @property
    def buffer(self) -> _ClosedStream:
        return self


class _MessageStream:
    """stderr as the command line writes to it: messages that cannot be written (a full disk
    behind ``2>> run.log``, a closed stream) are dropped, and the run keeps its own exit code.
    After the first failure fd 2 points at /dev/null, so no later flush fails either."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._failed = False

    def _fail(self) -> None:
        self._failed = True
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def write(self, data: str) -> int:
        if not self._failed:
            try:
                return self._stream.write(data)
            except (OSError, ValueError):
                self._fail()
        return len(data)

    def flush(self) -> None:
        if not self._failed:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._fail()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ... as the stream has them
        return getattr(self._stream, name)


def _prescan_log_format(args: list[str]) -> str:
    """The --log-format value anywhere on the command line, so that even a usage error is logged
    in it; the last one given, as the option's parser takes it."""
    found = "text"
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--log-format" and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith("--log-format="):
            found = arg.split("=", 1)[1]
    return found


def _command_name(args: list[str]) -> str | None:
    """The command the line names: its first word that is neither an option nor --log-format's value."""
    for i, arg in enumerate(args):
        if not arg.startswith("-") and not (i and args[i - 1] == "--log-format"):
            return arg
    return None


def main(argv: Optional[list[str]] = None) -> int:
    """Run the CLI on ``argv`` and return the exit code; every error becomes one line on stderr."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    LOG.started = time.monotonic()
    wanted = _prescan_log_format(args)
    LOG.format = wanted if wanted in LOG_FORMATS else "text"
    LOG.quiet = "-q" in args or "--quiet" in args
    command = _command_name(args)
    if LOG.format == "json":
        LOG("start", {"command": command, "argv": args, "version": __version__, "pid": os.getpid()})
    code = _run(args, debug)
    if LOG.format == "json":
        LOG("end", {"command": command, "status": code,
                    "duration_s": round(time.monotonic() - LOG.started, 6)})
    return code


# The click exception classes Typer raises: recent Typer vendors its own copy of click.
_CX = sys.modules[typer.BadParameter.__module__]
_EXITS = tuple({typer.Exit, getattr(_CX, "Exit", typer.Exit)})
_USAGE = (_CX.UsageError,)
_ABORTS = tuple({KeyboardInterrupt, typer.Abort, getattr(_CX, "Abort", typer.Abort)})


def _command(args: list[str]) -> Any:
    """The click command that runs ``args``: the group with only the subcommand they name.

    Typer builds a command's options by inspecting its signature, about 2 ms each: a run needs
    its own command only. With no subcommand first (``--help``, ``--version``, a misspelt one)
    the whole group is built, to list or suggest the others.
    """
    named = [info for info in app.registered_commands
             if args and args[0] == (info.name or typer.main.get_command_name(info.callback.__name__))]
    if not named:
        return typer.main.get_command(app)
    one = copy.copy(app)
    one.registered_commands = named
    return typer.main.get_command(one)


def _run(args: list[str], debug: bool) -> int:
    asks_for_text = _asks_for_text(args)  # before parsing, which consumes args
    try:
        _catch_signals()  # imports pyarrow: a SIGINT meanwhile is handled as any other, below
        # Not click's main(): it turns a closed pipe into exit 1 and SIGINT into a blank line on
        # stderr before this function could map them.
        command = _command(args)
        # bare `normcli`: the help, which Typer prints as it parses, goes to stderr with the exit
        # code 2 of a usage error (stdout carries only data); `normcli --help` prints it on stdout
        with contextlib.redirect_stdout(sys.stderr) if not args else contextlib.nullcontext():
            ctx = command.make_context("normcli", args)
        with ctx:
            rv = command.invoke(ctx)
        with _stdout_writes():  # what is still buffered: a small output is written only now
            sys.stdout.flush()
        return rv if isinstance(rv, int) else 0
    except NormcliError as exc:
        return _report(str(exc), debug, exc.exit_code)
    except _EXITS as exc:
        return getattr(exc, "exit_code", 0)
    except _USAGE as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `normcli CMD`: the help, on stderr
            exc.show()
            return EXIT_USAGE
        return _report(exc.format_message(), debug, EXIT_USAGE)
    except _ABORTS:
        return _report("interrupted by SIGINT", debug, 128 + signal.SIGINT)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error. Point stdout at /dev/null so the
        # interpreter's final flush does not complain.
        _silence_stdout()
        return 0
    except OSError as exc:
        if not asks_for_text:
            return _report(f"internal error: {type(exc).__name__}: {exc}", debug, EXIT_INTERNAL)
        # --help or --version, whose text is the run's data, written straight by Rich or print
        _silence_stdout()
        return _report(f"cannot write standard output: {exc.strerror or exc}", debug, EXIT_IO)
    except SystemExit:
        if not asks_for_text:
            raise
        return 0  # Rich's own end of a help whose reader went away (it has silenced stdout)
    except MemoryError as exc:  # under a memory limit (ulimit -v, strict overcommit); pyarrow's too
        detail = f" ({type(exc).__name__}: {exc})" if str(exc) else ""
        return _report(f"out of memory{detail}", debug, EXIT_IO)
    except Exception as exc:  # a bug: still one line, the traceback with --debug
        return _report(f"internal error: {type(exc).__name__}: {exc}", debug, EXIT_INTERNAL)
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":  # pyo3's (Polars): a BaseException, not an Exception
            raise
        return _report(f"internal error: a Polars panic: {exc}", debug, EXIT_INTERNAL)
    finally:
        # a temporary file that a signal stopped before its output took charge of it
        outfile = sys.modules.get("normcli.io.outfile")
        if outfile is not None:
            outfile.discard_pending()


def _asks_for_text(args: list[str]) -> bool:
    """Whether the command line asks for the help or the version, which stop a run at parsing."""
    options = args[:args.index("--")] if "--" in args else args
    return any(a in ("--help", "--version") for a in options)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _report(message: str, debug: bool, code: int) -> int:
    # One line, whatever the message quotes (a garbage header, a field with a newline): the log
    # escapes line breaks, as every character a terminal would not show as itself (_visible).
    fields: dict[str, Any] = {"message": message, "exit_code": code}
    if debug and LOG.format == "json":  # stderr stays one JSON object per line
        fields["traceback"] = traceback.format_exc()
    elif debug:
        traceback.print_exc()
    LOG("error", fields)
    return code


def run() -> None:
    """Console-script entry point."""
    _tune_process()
    # Started with stdout or stderr closed: errors go nowhere, data fails to write (exit 5).
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    sys.stderr = _MessageStream(sys.stderr)  # type: ignore[assignment]
    if sys.stdout is None:
        sys.stdout = _ClosedStream()  # type: ignore[assignment]
    else:
        # A table naming a column that stdout's encoding cannot hold shows the name escaped,
        # as stderr does, instead of failing. JSON is written in UTF-8 regardless (see _write).
        with contextlib.suppress(AttributeError, ValueError):
            sys.stdout.reconfigure(errors="backslashreplace")
    code = main()
    if code != 0:
        # An error or a signal stops a run without waiting for its worker threads, which may
        # still be inside pyarrow or Polars: the interpreter's teardown would destroy C++ state
        # under them (SIGABRT, "terminate called without an active exception", now and then)
        # and report the sketches an exception's traceback still holds ("nanobind: leaked").
        # Outputs are already removed or committed: flush what was printed and leave.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    # Python's exit collects every object once more before tearing the modules down: with
    # pyarrow and Polars loaded that walk takes about 75 ms, and nothing it could free matters
    # to a process that is about to end.
    gc.freeze()
    sys.exit(code)


def _tune_process() -> None:
    """Settings for a command-line process, made before the commands import their libraries.

    normcli calls no BLAS routine, but NumPy's OpenBLAS starts a thread per core at import that
    spins for about 0.1 s of CPU before it sleeps: one thread is enough. Importing pyarrow,
    Polars and NumPy creates some 300,000 objects, which Python's default thresholds collect
    138 times (28 ms); once every 50,000 new objects, 25 times (10 ms). Cycles made during the
    run are still collected.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    gc.set_threshold(50_000, 20, 20)
