"""The ``normcli`` command line: parse options, call the library, report errors in one place."""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from typing import Annotated, Any, Optional

import typer

try:  # Typer vendors its own Click from 0.2x on; older ones use the click package
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc

from normcli import __version__
from normcli.errors import EXIT_INTERNAL, EXIT_USAGE, Interrupted, NormcliError, UsageError

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
DelimiterOpt = Annotated[Optional[str], typer.Option("--delimiter", "-d", help="Field separator of CSV input and output.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on stderr but errors.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")]
StatsOpt = Annotated[str, typer.Option("--stats", "-s", help="The stats file written by fit.")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", help="Output path; - or none for stdout.")]
ToOpt = Annotated[Optional[str], typer.Option("--to", help="Output format: csv, tsv or parquet (default: from -o, else the input's).")]


def _quiet_on_closed_pipe(command):
    """Turn a closed stdout (``| head``) into a quiet success before Click sees it.

    Click answers an EPIPE with exit code 1; a reader that stopped early is not an error.
    """
    import functools

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:
            raise _PipeClosed() from None

    return wrapper


class _PipeClosed(Exception):
    pass


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _warn(message: str, quiet: bool) -> None:
    if not quiet:
        _stderr().print(f"[yellow]warning:[/yellow] {message}", markup=True)


def _split(value: Optional[str]) -> Optional[list[str]]:
    return [v for v in value.split(",") if v] if value else None


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
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self.rows = 0
        self._p = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                           TextColumn("{task.fields[rows]:,} rows"), TimeRemainingColumn(),
                           console=_stderr(), transient=True)
        self._task = self._p.add_task(label, total=total, rows=0)

    def __enter__(self) -> "_RichProgress":
        self._p.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._p.stop()

    def advance(self, nbytes: int, rows: int) -> None:
        self.rows += rows
        self._p.update(self._task, advance=nbytes, rows=self.rows)


def _progress(paths: list[str], quiet: bool, label: str):
    import contextlib

    if quiet or not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    sizes = [os.path.getsize(p) for p in paths if p != "-" and os.path.isfile(p)]
    return _RichProgress(sum(sizes) if len(sizes) == len(paths) else None, label)


def _method_options(ddof, range_, eps, eps_mode, gamma, beta, clip, clip_sigma, constant,
                    fill_missing, quantile_range) -> dict[str, Any]:
    from normcli import methods as M

    if ddof not in (None, 0, 1):
        raise UsageError("--ddof must be 0 or 1")
    if constant is not None and constant not in M.CONSTANT_POLICIES:
        raise UsageError(f"--constant must be one of {', '.join(M.CONSTANT_POLICIES)}")
    if eps_mode is not None and eps_mode not in M.EPS_MODES:
        raise UsageError(f"--eps-mode must be one of {', '.join(M.EPS_MODES)}")
    rng = _floats(range_, "--range", 2)
    if rng is not None and not rng[0] < rng[1]:
        raise UsageError(f"--range needs a < b, got '{range_}'")
    qr = _floats(quantile_range, "--quantile-range", 2)
    if qr is not None and not 0 <= qr[0] < qr[1] <= 100:
        raise UsageError(f"--quantile-range needs 0 <= a < b <= 100, got '{quantile_range}'")
    if eps is not None and eps < 0:
        raise UsageError("--eps must not be negative")
    return {"ddof": ddof, "range": rng, "eps": eps, "eps_mode": eps_mode,
            "gamma": _floats(gamma, "--gamma"), "beta": _floats(beta, "--beta"),
            "clip": clip or None, "clip_sigma": clip_sigma, "constant": constant,
            "fill_missing": fill_missing or None, "quantile_range": qr}


@app.command()
@_quiet_on_closed_pipe
def fit(
    inputs: Annotated[list[str], typer.Argument(help="Input files (CSV, TSV, Parquet) or - for stdin.")],
    output: OutputOpt = None,
    method: Annotated[Optional[list[str]], typer.Option("--method", "-m", help="NAME (default for all selected columns) or NAME:col1,col2; repeatable. Methods: zscore, minmax, maxabs, robust, layer, l1, l2, max.")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", "-c", help="Comma-separated columns to fit (default: every numeric column).")] = None,
    exclude: Annotated[Optional[str], typer.Option("--exclude", "-x", help="Comma-separated columns to leave out.")] = None,
    group_by: Annotated[Optional[str], typer.Option("--group-by", "-g", help="KEY[,KEY2]: also fit every per-column statistic per key value (instance normalization).")] = None,
    ddof: Annotated[Optional[int], typer.Option("--ddof", help="zscore: 0 for population std (default), 1 for sample std.")] = None,
    range_: Annotated[Optional[str], typer.Option("--range", help="minmax: target range a,b (default 0,1).")] = None,
    eps: Annotated[Optional[float], typer.Option("--eps", help="layer: added to the row variance (default 1e-5); zscore: added to the variance (default 0).")] = None,
    eps_mode: Annotated[Optional[str], typer.Option("--eps-mode", help="layer: inside (sqrt(var + eps), like torch) or std (std + eps).")] = None,
    gamma: Annotated[Optional[str], typer.Option("--gamma", help="Scale after normalizing (layer: one per column).")] = None,
    beta: Annotated[Optional[str], typer.Option("--beta", help="Shift after normalizing (layer: one per column).")] = None,
    clip: Annotated[bool, typer.Option("--clip", help="minmax: clip output into the range.")] = False,
    clip_sigma: Annotated[Optional[float], typer.Option("--clip-sigma", help="zscore, robust: clip output to +-this.")] = None,
    constant: Annotated[Optional[str], typer.Option("--constant", help="Constant columns: scale1 (default), zero, passthrough or error.")] = None,
    fill_missing: Annotated[bool, typer.Option("--fill-missing", help="Nulls become the normalized centre.")] = False,
    quantile_range: Annotated[Optional[str], typer.Option("--quantile-range", help="robust: quantiles of the scale, default 25,75.")] = None,
    sketch_k: Annotated[Optional[int], typer.Option("--sketch-k", help="robust: KLL sketch accuracy parameter (default 200).")] = None,
    fmt: FormatOpt = None,
    delimiter: DelimiterOpt = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Learn normalization statistics from INPUTS and write the stats file (JSON)."""
    from normcli import api, statsfile

    options = _method_options(ddof, range_, eps, eps_mode, gamma, beta, clip, clip_sigma, constant,
                              fill_missing, quantile_range)
    if sketch_k is not None and not 8 <= sketch_k <= 65535:
        raise UsageError("--sketch-k must be between 8 and 65535")
    if inputs.count("-") > 1:
        raise UsageError("stdin (-) can be read only once")
    with _progress(inputs, quiet, "fit") as progress:
        stats = api.fit_paths(inputs, method or [], columns=_split(columns), exclude=_split(exclude) or (),
                              group_by=_split(group_by) or (), fmt=fmt, delimiter=delimiter, sketch_k=sketch_k, progress=progress,
                              options=options)
    for name, col in stats.columns.items():
        if col.stats.is_constant() and col.method not in ("layer", "l1", "l2", "max"):
            policy = col.options.get("constant", "scale1")
            _warn(f"column '{name}' is constant (policy {policy})", quiet)
    if stats.groups is not None:
        for name, gs in stats.groups.columns.items():
            n = int(gs.is_constant().sum())
            if n:
                policy = stats.columns[name].options.get("constant", "scale1")
                _warn(f"column '{name}' is constant in {n:,} of {len(gs):,} groups (policy {policy})", quiet)
    if output in (None, "-"):
        sys.stdout.write(statsfile.dumps(stats))
        sys.stdout.flush()
    else:
        stats.save(output)


def _transform(input: str, stats_path: str, output: Optional[str], fmt: Optional[str], to: Optional[str],
               delimiter: Optional[str], quiet: bool, inverse: bool, overrides: dict[str, Any],
               unseen_group: str, dtype: str = "float64", decimals: Optional[int] = None) -> None:
    from normcli import api
    from normcli.model import OutputOptions

    if to is not None and to not in ("csv", "tsv", "parquet"):
        raise UsageError(f"--to must be csv, tsv or parquet, got '{to}'")
    out_options = OutputOptions(unseen_group, dtype, decimals)
    stats = api.load(stats_path)
    with _progress([input], quiet, "inverse" if inverse else "transform") as progress:
        summary = api.transform_file(stats, input, output, fmt=fmt, to=to, delimiter=delimiter, inverse=inverse,
                                     progress=progress, overrides=overrides, out_options=out_options)
    unseen = summary.extra["unseen"]
    if unseen.rows and unseen_group == "global":
        _warn(api.unseen_message(stats, unseen), quiet)


UnseenOpt = Annotated[str, typer.Option("--unseen-group", help="With --group-by statistics, rows of a key not seen in fit: global (overall statistics, warned with a count; default), passthrough (unscaled), null or error.")]


@app.command()
@_quiet_on_closed_pipe
def transform(
    input: Annotated[str, typer.Argument(help="Input file (CSV, TSV, Parquet) or - for stdin.")],
    stats: StatsOpt,
    output: OutputOpt = None,
    fmt: FormatOpt = None,
    to: ToOpt = None,
    delimiter: DelimiterOpt = None,
    clip: Annotated[Optional[bool], typer.Option("--clip/--no-clip", help="Override the fitted clip setting of minmax.")] = None,
    clip_sigma: Annotated[Optional[float], typer.Option("--clip-sigma", help="zscore, robust: clip output to +-this.")] = None,
    fill_missing: Annotated[Optional[bool], typer.Option("--fill-missing/--keep-missing", help="Nulls become the normalized centre (or stay null).")] = None,
    unseen_group: UnseenOpt = "global",
    dtype: Annotated[str, typer.Option("--dtype", help="Type of the normalized columns: float64 (default) or float32.")] = "float64",
    decimals: Annotated[Optional[int], typer.Option("--decimals", help="Round normalized values to N decimal places (compact CSV).")] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Normalize INPUT with a stats file; every other column passes through unchanged."""
    overrides = {"clip": clip, "clip_sigma": clip_sigma, "fill_missing": fill_missing}
    _transform(input, stats, output, fmt, to, delimiter, quiet, False,
               {k: v for k, v in overrides.items() if v is not None}, unseen_group, dtype, decimals)


@app.command()
@_quiet_on_closed_pipe
def inverse(
    input: Annotated[str, typer.Argument(help="Normalized input file or - for stdin.")],
    stats: StatsOpt,
    output: OutputOpt = None,
    fmt: FormatOpt = None,
    to: ToOpt = None,
    delimiter: DelimiterOpt = None,
    unseen_group: UnseenOpt = "global",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Undo transform: map normalized per-column values back to the original scale."""
    _transform(input, stats, output, fmt, to, delimiter, quiet, True, {}, unseen_group)


@app.command()
@_quiet_on_closed_pipe
def inspect(
    stats: Annotated[str, typer.Argument(help="The stats file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the stats file's JSON instead of a table.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Show the fitted columns of a stats file: method, constant policy, count, nulls, mean, std, min, max, flags."""
    from normcli import api, statsfile

    fitted = api.load(stats)
    if as_json:
        sys.stdout.write(statsfile.dumps(fitted))
        return
    from rich.console import Console
    from rich.table import Table

    title = f"{stats}: {fitted.info.get('rows', 0):,} rows fitted"
    if fitted.groups is not None:
        title += f", {len(fitted.groups.keys):,} groups by {', '.join(fitted.group_by)}"
    table = Table(title=title)
    for col in ("column", "method", "constant", "count", "nulls", "mean", "std", "min", "max", "flags"):
        table.add_column(col, justify="left" if col in ("column", "method", "constant", "flags") else "right")
    for name, col in fitted.columns.items():
        st = col.stats
        ddof = col.options.get("ddof", 0) if col.method == "zscore" else 0
        flags = []
        if st.is_constant():
            flags.append("constant")
        if col.method == "zscore":
            flags += [f"{k}={col.options[k]:g}" for k, d in (("eps", 0.0), ("gamma", 1.0), ("beta", 0.0))
                      if col.options.get(k, d) != d]
        if fitted.groups is not None and name in fitted.groups.columns:
            gs = fitted.groups.columns[name]
            flags.append(f"{int((gs.count > 0).sum()):,} groups")
            n_const = int((gs.is_constant() & (gs.count > 0)).sum())
            if n_const:
                flags.append(f"{n_const:,} constant groups")
        if st.sketch is not None:
            from normcli import sketch

            flags.append(f"sketch k={st.sketch.k} err={sketch.rank_error(st.sketch):.2g}")
        num = (lambda v: f"{v:.6g}") if st.count else (lambda v: "")
        table.add_row(name, col.method, col.options.get("constant", ""), f"{st.count:,}", f"{st.nulls:,}",
                      num(st.mean), num(st.std(ddof)), num(st.min), num(st.max), ", ".join(flags))
    # Not a terminal (a pipe, a file): no width limit, so nothing is cut off.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 1000)
    console.print(table)
    for row in fitted.rows:
        opts = ", ".join(f"{k}={v}" for k, v in row.options.items() if v is not None)
        console.print(f"{row.method} over {', '.join(row.columns)} ({opts})")


@app.command()
def export(
    stats: Annotated[str, typer.Argument(help="The stats file.")],
    to: Annotated[str, typer.Option("--to", help="Target: sql, sklearn (skops file), torch (safetensors) or onnx.")],
    output: OutputOpt = None,
    dialect: Annotated[str, typer.Option("--dialect", help="sql: duckdb, postgres, sqlite or spark.")] = "duckdb",
    table: Annotated[str, typer.Option("--table", help="sql: the table to select from.")] = "data",
    columns: Annotated[Optional[str], typer.Option("--columns", "-c", help="sql, sklearn: every input column in order, to pass the unfitted ones through.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="onnx: float64 or float32.")] = "float64",
    debug: DebugOpt = False,
) -> None:
    """Write the fitted statistics as SQL, a scikit-learn estimator, PyTorch tensors or an ONNX graph."""
    from normcli import api
    from normcli.export import export_bytes

    opts: dict[str, Any] = {"sql": {"dialect": dialect, "table": table, "columns": _split(columns)},
                            "sklearn": {"columns": _split(columns)}, "onnx": {"dtype": dtype}}.get(to, {})
    _write(output, export_bytes(api.load(stats), to, **opts), text=to == "sql")


@app.command(name="import")
def import_(
    model: Annotated[str, typer.Argument(help="A fitted scikit-learn scaler or ColumnTransformer saved with skops.")],
    output: OutputOpt = None,
    columns: Annotated[Optional[str], typer.Option("--columns", "-c", help="The estimator's input columns in order (default: its feature_names_in_).")] = None,
    debug: DebugOpt = False,
) -> None:
    """Turn a fitted scikit-learn scaler (.skops) into a stats file."""
    from normcli import statsfile
    from normcli.export.sklearn import from_sklearn, load_skops

    _write(output, statsfile.dumps(from_sklearn(load_skops(model), _split(columns))).encode("utf-8"), text=True)


def _write(output: Optional[str], data: bytes, text: bool) -> None:
    """``data`` to stdout (text only) or atomically to ``output``."""
    from normcli import statsfile

    if output in (None, "-"):
        if not text and sys.stdout.isatty():
            raise UsageError("refusing to write binary output to a terminal: give -o FILE")
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


def main(argv: Optional[list[str]] = None) -> int:
    """Run the CLI on ``argv`` and return the exit code; every error becomes one line on stderr."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not in the main thread (embedded use)
        pass
    try:
        rv = app(args=args, prog_name="normcli", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except NormcliError as exc:
        _report(str(exc), debug)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except click_exc.UsageError as exc:
        if exc.format_message():  # empty when the help was shown for a bare `normcli`
            _report(exc.format_message(), debug)
        return EXIT_USAGE
    except (KeyboardInterrupt, typer.Abort):
        _report("interrupted", debug)
        return 128 + signal.SIGINT
    except (BrokenPipeError, _PipeClosed):
        # The reader went away (`| head`): not an error. Point stdout at /dev/null so the
        # interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: still one line, the traceback with --debug
        _report(f"internal error: {type(exc).__name__}: {exc}", debug)
        return EXIT_INTERNAL


def _report(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"Error: {message}", file=sys.stderr)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
