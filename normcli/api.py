"""The Python API: fit, transform, inverse, load and merge over DataFrames, Arrow tables and files.

The CLI is a thin layer over these functions; notebooks and services call them directly.
``data`` may be a pandas DataFrame, a pyarrow Table or RecordBatch, or a path; results come back
in the same kind.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import os
import sys
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa

from normcli import engine, statsfile
from normcli import methods as M
from normcli.errors import DataError, NormcliError, RowError, StatsFileError, UsageError, naming_input
from normcli.model import (FitPlan, OutputOptions, Partial, Stats, UnseenGroups, as_names, is_numeric_type, merge_partials,
                           delimiter_hint, names_argument, numbers_as_text,
                           plan_fit, named_specs, pandas_index_columns, plan_from_stats, with_pandas_types)

BATCH_ROWS = 65536
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep  # warnings point past its frames


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# what pyarrow raises for a frame it cannot hold (a TypeError for sparse columns, an
# OverflowError for a Python int beyond 64 bits in an object column)
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, OverflowError)


def _as_table(data: Any, mixed_as_text: bool = False, unread: Collection[str] = ()) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        return _frame_to_arrow(data, mixed_as_text, unread)
    if _is_polars_frame(data):
        return data.to_arrow()  # its columns as they are: no copy of numbers
    module = type(data).__module__.partition(".")[0]
    kind = type(data).__name__ if module == "builtins" else f"{module}.{type(data).__name__}"
    raise UsageError(f"cannot read data of type {kind}: pass a pandas or Polars DataFrame, an Arrow table or a path")


def _is_polars_frame(data: Any) -> bool:
    """Whether ``data`` is a Polars DataFrame (told without importing Polars)."""
    polars = sys.modules.get("polars")
    return polars is not None and isinstance(data, polars.DataFrame)


def _frame_to_arrow(frame: Any, mixed_as_text: bool | Collection[str] = False,
                    unread: Collection[str] = ()) -> pa.Table:
    """A pandas DataFrame as an Arrow table (column names as text); DataError for what Arrow
    cannot hold, such as an object column mixing text and numbers, or a name given twice.

    With ``mixed_as_text`` (True, or the names of the columns it applies to), such an object
    column becomes text instead (each value's ``str``), for fit to judge as it judges a text
    column of a file; a column named in ``unread`` (one fit leaves out) that Arrow cannot hold,
    such as a complex one, becomes a column of nulls.
    """
    names = [str(c) for c in frame.columns]
    if len(set(names)) < len(names):
        twice = next(n for i, n in enumerate(names) if n in names[:i])
        raise DataError(f"the DataFrame has two columns named '{twice}'")
    try:
        # named by each label's text: pyarrow names a tuple label by its elements' text
        return pa.Table.from_pandas(frame, preserve_index=False).rename_columns(names)
    except _ARROW_ERRORS:
        pass  # one column at a time, to name the one at fault
    arrays = []
    for name in frame.columns:
        column = frame[name]
        try:
            arrays.append(pa.Array.from_pandas(column))
        except _ARROW_ERRORS as exc:
            if str(name) in unread:  # text, so that no fit takes it for a column without values
                arrays.append(pa.nulls(len(column), pa.string()))
                continue
            if column.dtype != object or not (mixed_as_text is True or str(name) in mixed_as_text):
                reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else exc
                if getattr(column.dtype, "kind", "") == "c":
                    reason = "complex numbers are not supported"
                elif isinstance(exc, OverflowError):
                    reason = "an integer beyond the 64-bit range"
                elif str(column.dtype).startswith("Sparse"):
                    reason = f"a sparse column ({column.dtype}) is not supported: make it dense first"
                raise DataError(f"cannot read column '{name}' of the DataFrame: {reason}") from None
            arrays.append(pa.array([_text_or_none(v) for v in column], pa.string()))
    return pa.Table.from_arrays(arrays, names=names)


def _text_or_none(value: Any) -> str | None:
    """A value of an object column as text; None for pandas' missing values (None, NaN, NA)."""
    import pandas as pd

    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return str(value)


def _is_path(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike))


def _unread(data: Any, methods: Sequence[str], columns: list[str] | None, exclude: list[str],
            group_by: list[str]) -> set[str]:
    """The columns of a pandas DataFrame that a fit with these arguments does not read (nothing
    of anything else: asking another library's frame for its columns may cost a query)."""
    pd = sys.modules.get("pandas")
    if pd is None or not isinstance(data, pd.DataFrame):
        return set()
    named = set(group_by) | set(columns or ()) | {c for _, cols in named_specs(methods) for c in cols}
    labels = {str(c) for c in getattr(data, "columns", ())}
    left_out = set(exclude) | (set() if columns is None else labels - set(columns))
    # Complex numbers are not among the numeric columns a fit reads (integers and floats).
    dtypes = getattr(data, "dtypes", None)
    if hasattr(dtypes, "items"):  # a pandas DataFrame's (not a Series', not another library's)
        left_out |= {str(c) for c, kind in dtypes.items() if getattr(kind, "kind", "") == "c"}
    return left_out - named


def fit(data: Any, method: str | Sequence[str] = "zscore", *, columns: Sequence[str] | None = None,
        exclude: Sequence[str] = (), group_by: str | Sequence[str] = (), fmt: str | None = None,
        delimiter: str | None = None, sketch_k: int | None = None, sketch: bool = False,
        progress: engine.Progress | None = None, **options: Any) -> Stats:
    """Fit normalization statistics.

    Parameters
    ----------
    data : pandas or Polars DataFrame, pyarrow Table, path, or list of paths
        The training data. Paths are streamed in bounded memory.
    method : str or list of str
        Method specs: ``"zscore"`` (default for every numeric column), or ``"minmax:a,b"`` for
        named columns; see the README's method table.
    columns, exclude : str or list of str
        Restrict, or remove from, the default selection of numeric columns. A text column
        whose values mostly read as numbers is not left out of that selection quietly: it is a
        DataError, unless ``exclude`` names it.
    group_by : str or list of str
        Key columns: every per-column statistic is also fitted per key value (instance
        normalization), and ``transform`` uses each row's group. Keys compare by their text form;
        a null key is a group of its own.
    sketch : bool
        Keep a quantile sketch of every column (the CLI's ``--sketch``), for the PSI and KS
        metrics of ``check``; ``sketch_k`` sets its accuracy.
    **options
        Method options: ``ddof``, ``range``, ``eps``, ``eps_mode``, ``gamma``, ``beta``,
        ``clip``, ``clip_sigma``, ``constant``, ``fill_missing``, ``quantile_range``.

    Returns
    -------
    Stats
        The fitted statistics; ``stats.transform(df)`` applies them.

    Examples
    --------
    >>> import pandas as pd, normcli
    >>> stats = normcli.fit(pd.DataFrame({"x": [1.0, 2.0, 3.0]}))
    >>> stats.transform(pd.DataFrame({"x": [2.0]}))["x"].tolist()
    [0.0]
    """
    methods = [method] if isinstance(method, str) else list(method) if isinstance(method, (list, tuple)) else None
    if methods is None or not all(isinstance(m, str) for m in methods):
        raise UsageError(f"method must be a method spec or a list of them (e.g. 'zscore', 'minmax:a,b'), "
                         f"got {method!r}")
    columns = None if columns is None else as_names(columns)
    exclude = as_names(exclude)
    group_by = as_names(group_by)
    if _is_path(data) or (isinstance(data, (list, tuple)) and data and all(_is_path(p) for p in data)):
        paths = [os.fspath(data)] if _is_path(data) else [os.fspath(p) for p in data]
        stats = fit_paths(paths, methods, columns=columns, exclude=exclude, group_by=group_by, fmt=fmt,
                          delimiter=delimiter, sketch_k=sketch_k, progress=progress, options=options,
                          sketch_all=sketch, log=_warn_event)
    else:
        given = next((k for k, v in (("fmt", fmt), ("delimiter", delimiter)) if v is not None), None)
        if given:  # silently unused, it would read as applied
            raise UsageError(f"{given}= is for a path: a DataFrame or table is fitted as it is")
        stats = _fit_table(data, methods, columns, exclude, group_by, sketch_k, sketch, options)
    for message in constant_warnings(stats):
        _warn(message)
    return stats


def _value_type(kind: pa.DataType) -> pa.DataType:
    """The type a column's values have: a categorical of numbers (Arrow dictionary) is numbers,
    as it is once written to a file."""
    if pa.types.is_dictionary(kind) and is_numeric_type(kind.value_type):
        return kind.value_type
    return kind


def _fit_table(data: Any, methods: list[str], columns: list[str] | None, exclude: list[str],
               group_by: list[str], sketch_k: int | None, sketch: bool, options: dict[str, Any]) -> Stats:
    """:func:`fit` of a DataFrame, Table or RecordBatch."""
    from normcli import io

    table = _as_table(data, mixed_as_text=True, unread=_unread(data, methods, columns, exclude, group_by))
    # Text columns are judged on the first rows, as a file on its first block.
    plan = plan_fit({f.name: _value_type(f.type) for f in table.schema}, methods, columns=columns, exclude=exclude,
                    options=options, sketch_k=sketch_k, group_by=group_by, sketch_all=sketch,
                    # a place in the frame as df.iloc takes it, as the errors of its values say it
                    text=io.text_samples(table.slice(0, BATCH_ROWS), locate=lambda row: f"row {row} (counting from 0)"),
                    labels=pandas_index_columns(table.schema.metadata))
    for name in plan.unsampled:  # as the command line says it of a file
        _warn(f"column '{name}' has no values, so its type is unknown: left out (columns=[..., '{name}'] fits it)")
    acc, start = plan.empty(), 0
    for batch in table.select(plan.numeric + plan.group_by).to_batches(max_chunksize=BATCH_ROWS):
        try:
            acc = merge_partials(acc, plan.partial(batch))
        except RowError as exc:  # named by its position in the whole frame, as df.iloc takes it
            raise exc.located(f"row {start + exc.row} (counting from 0)") from None
        start += batch.num_rows
    return plan.finish(acc, {"created": _now(), "inputs": [{"path": "<memory>", "rows": table.num_rows,
                                                             "bytes": None}], "rows": table.num_rows})


Log = Callable[[str, dict], None]


def _no_log(event: str, fields: dict) -> None:
    pass


def fit_paths(paths: Sequence[str], methods: Sequence[str], *, columns: Sequence[str] | None = None,
              exclude: Sequence[str] = (), group_by: Sequence[str] = (), fmt: str | None = None, delimiter: str | None = None,
              sketch_k: int | None = None, progress: engine.Progress | None = None,
              options: Mapping[str, Any] | None = None, sketch_all: bool = False,
              log: Log | None = None, engine: Any = None) -> Stats:
    """Fit over files, directories, globs (or ``-`` for stdin), streaming; the plan comes from the
    first file, and a column without values in its first block takes its type from the first
    block of the next file that has some. Every input file is recorded in ``fitted_on.inputs``
    with its fingerprint.

    ``engine`` runs the work elsewhere: a :class:`normcli.engine_dask.DaskEngine` (default: the
    local streaming engine)."""

    def make_plan(source: Any, later: Sequence[Callable[[], Any]] = ()) -> FitPlan:
        # later: what opens each later input, for the types the first leaves unknown
        types, text = sampled_types(source, later_samples(later))
        declared = {}
        if source.format == "parquet" and not columns:  # text by declaration: left out, not refused, but said
            named = {*exclude, *group_by, *(c for _, cols in named_specs(methods) for c in cols)}
            declared = {c: s for c, s in text.items() if c not in named and numbers_as_text(s)}
        plan = plan_fit(types, methods, columns=columns, exclude=[*exclude, *declared],
                        options=options, sketch_k=sketch_k, group_by=group_by, sketch_all=sketch_all,
                        text=text, labels=pandas_index_columns(source.fields().metadata))
        for name, sample in declared.items():
            warn("warning", {"message": f"column '{name}' is text in the Parquet file, though {sample.numbers:,} "
                                        f"of its first {sample.values:,} values read as numbers: left out (convert "
                                        "it to numbers to fit it)"})
        for name in plan.labels:
            warn("note", {"message": f"column '{name}' is a stored pandas index: left out "
                                     f"(--columns {names_argument([name])} fits it)"})
        where = "the first block of any input" if later else "the input's first block"
        for name in plan.unsampled:
            warn("warning", {"message": f"column '{name}' has no values in {where}, "
                             f"so its type is unknown: left out (--columns {names_argument([name])} fits it)"})
        return plan

    warn = log or _no_log

    expand, fold = _engine(engine)
    plan, acc, inputs = fold(expand(paths), make_plan, merge_partials, _require_columns,
                             fmt, delimiter, progress, log)
    return plan.finish(acc, {"created": _now(), "inputs": inputs, "rows": sum(i["rows"] for i in inputs)})


def constant_warnings(stats: Stats) -> list[str]:
    """The warnings a fit gives about its constant and empty columns (and groups)."""
    out = []
    for name, col in stats.columns.items():
        if col.method in ("layer", "l1", "l2", "max") or not stats.is_constant(name):
            continue
        what = "has no values: fitted as constant" if col.stats.count == 0 else "is constant"
        out.append(f"column '{name}' {what} (policy {col.options.get('constant', 'scale1')})")
    if stats.groups is not None:
        for name, gs in stats.groups.columns.items():
            policy = stats.columns[name].options.get("constant", "scale1")
            empty = int((gs.count == 0).sum())
            if empty:
                out.append(f"column '{name}' has no values in {empty:,} of {len(gs):,} groups: fitted as "
                           f"constant (policy {policy})")
            n = int(stats.is_constant(name, grouped=True).sum())
            if n:
                out.append(f"column '{name}' is constant in {n:,} of {len(gs):,} groups (policy {policy})")
    return out


def _warn(message: str) -> None:
    """A UserWarning pointing at the caller's first line outside normcli."""
    import warnings

    frame, level = sys._getframe(1), 2  # 1 would be this function
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _warn_event(event: str, fields: dict) -> None:
    """A ``log`` for the path functions that turns their warnings into Python warnings."""
    if event == "warning":
        _warn(fields["message"])


def check_output(paths: Sequence[str], output: str | None, *, engine: Any = None) -> None:
    """Raise UsageError when ``output`` (a file to be written; None or ``-`` is stdout) is one of
    the input files ``paths`` names (files, directories, globs; ``engine`` as in :func:`fit_paths`).

    Call it before anything is written: fitting reads every input before the stats file is saved,
    but a stats file written over a data file would destroy it.
    """
    from normcli import io

    if output in (None, "-") and not io.stdout_file_keys():
        return  # stdout is a terminal, a pipe or a device: no input to overwrite, nothing to list
    expand, _ = _engine(engine)
    io.check_outputs([(output, None)], [item.path for item in expand(paths)])


def _engine(engine: Any) -> tuple[Callable, Callable]:
    """How ``engine`` lists inputs and folds them: the local ones when it is None."""
    from normcli import io

    if engine is None:
        return io.expand_inputs, _fold_inputs
    return engine.expand_inputs, engine.fold_inputs


def sampled_types(source: Any, later: Iterable[tuple[Mapping, Mapping]] = ()) -> tuple[dict, dict]:
    """The column types and text samples of ``source``'s first block, where a column without
    values there (null type) takes them from the first of the ``later`` samples (types, text)
    that has some.

    ``later`` is consumed only while such a column is left: an input whose first file is
    empty, or has a column empty so far, is typed as if that file came later.
    """
    types, text = dict(source.sample_types()), dict(source.sample_text())
    for more, more_text in later:
        untyped = [c for c, t in types.items() if pa.types.is_null(t)]
        if not untyped:
            break
        for name in untyped:
            if name in more and not pa.types.is_null(more[name]):
                types[name] = more[name]
                text.pop(name, None)
                if name in more_text:
                    text[name] = more_text[name]
    return types, text


def later_samples(sources: Iterable[Callable[[], Any]]) -> Iterator[tuple[Mapping, Mapping]]:
    """The samples (types, text) of the sources each of ``sources`` opens, one at a time.

    An input whose sample cannot be read is passed over: the fold reports it when it reaches
    it, named and at its line.
    """
    for open_source in sources:
        try:
            with contextlib.closing(open_source()) as source:
                sample = source.sample_types(), source.sample_text()
        except NormcliError:
            continue
        yield sample


def _fold_inputs(items: Sequence[Any], make_plan: Callable[..., Any], merge: Callable[[Any, Any], Any],
                 require: Callable[[Sequence[str], Sequence[str], str], None], fmt: str | None,
                 delimiter: str | None, progress: engine.Progress | None, log: Log | None) -> tuple[Any, Any, list]:
    """Fold every input file with the plan ``make_plan`` returns for the first one (and the
    samples of the later ones, which it opens only as it needs them).

    The plan has ``numeric``, ``empty()`` and ``partial(batch)``; ``require`` checks each file has
    the plan's columns. Returns the plan, the merged partials and one ``fitted_on.inputs`` entry
    per file (with its fingerprint, except for stdin).
    """
    from normcli import io

    log = log or _no_log
    plan, acc, inputs = None, None, []
    for index, item in enumerate(items):
        entry = io.input_entry(item.path)  # fingerprinted before the file is read
        source = io.open_input(item, fmt=fmt, delimiter=delimiter)
        try:
            with naming_input(item.path, len(items) > 1):
                if plan is None:
                    later = [functools.partial(io.open_input, it, fmt=fmt, delimiter=delimiter)
                             for it in items[index + 1:]]
                    plan = make_plan(source, later)
                    acc = plan.empty()
                keys = list(getattr(plan, "group_by", []))
                require(plan.numeric + keys, source.columns, item.path)
                log("input", {"path": item.path, "bytes": source.size})
                acc, summary = engine.fold(source, plan.numeric, plan.partial, merge, acc, progress, keep=keys)
        finally:
            source.close()
        entry.update(rows=summary.rows, bytes=summary.bytes)
        inputs.append(entry)
        log("rows", {"path": item.path, "rows": summary.rows})
    return plan, acc, inputs


def _require_columns(needed: Sequence[str], have: Sequence[str], path: str) -> None:
    from normcli.errors import DataError

    present = set(have)
    missing = [c for c in needed if c not in present]
    if missing:
        raise DataError(f"'{path}' has no column '{missing[0]}'{delimiter_hint(list(have))}")


def _require_fitted(needed: Sequence[str], have: Sequence[str], path: str) -> None:
    present = set(have)
    missing = [c for c in needed if c not in present]
    if missing:
        raise StatsFileError(f"column '{missing[0]}' of the stats file is not in '{path}'{delimiter_hint(list(have))}")


def absorbed(stats: Stats) -> list[dict]:
    """The fingerprints of the inputs ``stats`` was fitted on (inputs without one are left out)."""
    return [i["fingerprint"] for i in stats.info.get("inputs", []) if i.get("fingerprint")]


def _same_file_key(fingerprint: Mapping[str, Any]) -> tuple:
    """What tells one file wherever it lies: a file moved, or copied with its times kept
    (``cp -p``, ``rsync -a``), has a new path and the same size, modification time and content."""
    return fingerprint["size"], fingerprint["mtime"], fingerprint["sha256"]


def update(stats: Stats, paths: Sequence[str], *, fmt: str | None = None, delimiter: str | None = None,
           progress: engine.Progress | None = None, log: Log | None = None,
           engine: Any = None) -> tuple[Stats, int]:
    """Fold new input files into ``stats``: fit them with the same columns, methods, options and
    sketches, then merge exactly. An input whose fingerprint ``stats`` already holds is skipped
    (logged as a ``skip`` event), so running the same update twice counts nothing twice.

    Returns the updated statistics and the number of inputs absorbed (0: ``stats`` unchanged).
    ``engine`` as in :func:`fit_paths`.
    """
    from normcli import io

    log = log or _no_log
    imported = next((n for n, f in stats.columns.items() if f.stats.scale is not None), None)
    if imported is not None:  # checked before any input is read, as merge would refuse them after
        raise StatsFileError(f"cannot update: column '{imported}' holds imported fixed center/scale "
                             "parameters, which cannot be merged")
    expand, fold = _engine(engine)
    seen = absorbed(stats)
    seen_paths = {f["path"] for f in seen}
    seen_files = {_same_file_key(f): f["path"] for f in seen}
    seen_bytes = {(f["size"], f["sha256"]): f["path"] for f in seen}
    fresh = []
    for item in expand(paths):
        found = io.fingerprint(item.path) if item.path != "-" and "://" not in item.path else None
        absorbed_as = None if found is None else seen_files.get(_same_file_key(found))
        if absorbed_as is not None:  # the same file, or one moved or copied with its time
            why = ("" if absorbed_as == found["path"]
                   else f" as '{absorbed_as}' (same size, modification time and content)")
            log("skip", {"path": item.path, "reason": f"already absorbed by the stats file{why}"})
            continue
        if found is not None and found["path"] not in seen_paths and (found["size"], found["sha256"]) in seen_bytes:
            log("warning", {"message": f"'{item.path}' has the size and content of "
                                       f"'{seen_bytes[found['size'], found['sha256']]}', absorbed before (with "
                                       "another modification time): if it is a copy, its rows count twice"})
        if found is not None and found["path"] in seen_paths:
            # a corrected file delivered again, or one touched or rewritten: counted twice
            log("warning", {"message": f"'{item.path}' was absorbed before, with other content or another "
                                       "modification time: its rows are added to those of that earlier "
                                       "read, which statistics cannot take out"})
        fresh.append(item)
    if not fresh:
        return stats, 0
    plan = plan_from_stats(stats)
    _, acc, inputs = fold(fresh, lambda source, later: plan, merge_partials, _require_fitted,
                          fmt, delimiter, progress, log)
    new = plan.finish(acc, {"inputs": inputs, "rows": sum(i["rows"] for i in inputs)})
    merged = merge(stats, new)
    merged.info["created"] = _now()
    return merged, len(fresh)


def check(stats: Stats, paths: Sequence[str], *, thresholds: Mapping[str, float | None] | None = None,
          fmt: str | None = None, delimiter: str | None = None, progress: engine.Progress | None = None,
          log: Log | None = None, engine: Any = None) -> dict[str, Any]:
    """Drift report of the inputs ``paths`` against ``stats`` (see :mod:`normcli.drift`).

    ``thresholds`` may set ``max_shift``, ``max_null_rate_change`` and ``max_psi``; the report's
    ``drift`` is true when a column exceeds one. ``engine`` as in :func:`fit_paths`.
    """
    from normcli import drift

    plan = drift.DriftPlan(stats)
    expand, fold = _engine(engine)
    _, acc, inputs = fold(expand(paths), lambda source, later: plan, drift.merge, _require_fitted,
                          fmt, delimiter, progress, log)
    report = plan.report(acc, thresholds)
    report["inputs"] = [{"path": i["path"], "rows": i["rows"]} for i in inputs]
    return report


def transform_paths(stats: Stats, paths: Sequence[str], output: str | None, *, fmt: str | None = None,
                    to: str | None = None, delimiter: str | None = None, inverse: bool = False,
                    progress: engine.Progress | None = None, overrides: Mapping[str, Any] | None = None,
                    out_options: OutputOptions | None = None, log: Log | None = None,
                    engine: Any = None) -> list[engine.InputSummary]:
    """Transform files, directories or globs. One input goes to ``output`` (a file, ``-`` or a
    directory); several need ``output`` to be a directory (``DIR/``), where each input's output
    gets the input's relative name, each written atomically.

    With a Dask ``engine`` (see :func:`fit_paths`), ``output`` is a directory that receives one
    part per partition (``part-00000.parquet``, ...) instead."""
    from normcli import io

    log = log or _no_log
    stats.check_overrides(overrides or {})
    for message in stats.inverse_losses() if inverse else ():
        log("warning", {"message": message})
    if engine is not None:
        return engine.transform_paths(stats, paths, output, fmt=fmt, to=to, delimiter=delimiter,
                                      inverse=inverse, progress=progress, overrides=overrides,
                                      out_options=out_options, log=log)
    to_dir = output not in (None, "-") and (output.endswith(("/", os.sep)) or os.path.isdir(output))
    items = io.expand_inputs(paths, skip=output if to_dir else None)
    if len(items) > 1 and not to_dir:
        raise UsageError("several inputs need an output directory: -o DIR/")
    if to_dir and any(item.path == "-" for item in items):
        raise UsageError("standard input has no name to give its output in a directory: transform it "
                         "alone, with -o FILE or to standard output")
    # Every output is checked against every input and every other output before the first is
    # written: c1/x.csv and c2/x.csv both map to DIR/x.csv, and DIR/ may hold the inputs.
    targets = [io.output_path(output, item, to) if to_dir else output for item in items]
    if to_dir:
        io.check_directory_outputs(output, targets)
    io.check_outputs([(target, f"the output of '{item.path}'" if to_dir else None)
                      for item, target in zip(items, targets)], [item.path for item in items])
    # Outputs are atomic one by one, not as a set: an input missing among several, or one whose
    # header (or Parquet footer) lacks a fitted column, fails the run before the first is written
    # (one that fails while its rows are read stops the run after those before it).
    io.check_readable(items)
    if len(items) > 1:
        _check_headers(stats, items, fmt, delimiter)
    done = []
    for item, target in zip(items, targets):
        log("input", {"path": item.path, "output": target or "-"})
        source = io.open_input(item, fmt=fmt, delimiter=delimiter)
        try:
            with naming_input(item.path, len(items) > 1), \
                    io.parent_directories(target) if to_dir else contextlib.nullcontext():
                # Under DIR/ the output keeps the key=value directories: the keys stay out of the file.
                summary = transform_source(stats, source, target, to=to, delimiter=delimiter,
                                           inverse=inverse, progress=progress, overrides=overrides,
                                           out_options=out_options, drop=source.partition_keys if to_dir else ())
        finally:
            source.close()
        log("rows", {"path": item.path, "rows": summary.rows})
        done.append(summary)
    return done


def _check_headers(stats: Stats, items: Sequence[Any], fmt: str | None, delimiter: str | None) -> None:
    """Open each input that is a regular file, read its header (a CSV's first block, a Parquet
    footer) and check it holds the fitted columns: the errors its transform would give there.
    A pipe is left alone (opening it would take its data)."""
    from normcli import io

    for item in items:
        if item.path == "-" or io.is_special(item.path):
            continue
        with naming_input(item.path, True):
            with contextlib.closing(io.open_input(item, fmt=fmt, delimiter=delimiter)) as source:
                stats.check_columns(source.columns)


def fit_transform(path: str, stats_out: str | None, output: str | None, methods: Sequence[str], *,
                  fmt: str | None = None, to: str | None = None, delimiter: str | None = None,
                  progress: engine.Progress | None = None, log: Log | None = None,
                  fitted: Callable[[Stats], None] | None = None, **fit_kw: Any) -> Stats:
    """Fit ``path`` and transform it with the result, writing ``stats_out`` and ``output``.

    ``fitted`` (say, a writer of the statistics to standard output) is called with the
    statistics after the fit and before the transform: should it fail, no output is replaced.
    Standard input (``-``), or a pipe (``<(...)``, a named pipe), is spooled to a temporary file
    first (copied in chunks, so memory stays bounded) and the file is removed afterwards,
    whatever happens.
    """
    from normcli import io

    io.check_outputs([(stats_out, "the stats"), (output, "the transformed data")], [path])
    spool = None
    log = log or _no_log
    shown = "standard input" if path == "-" else f"'{path}'"
    try:
        if io.needs_spool(path):  # read twice: by the fit, then by the transform
            spool, fmt = io.spool_input(path, fmt)
        source = spool or path

        def logged(event: str, fields: dict) -> None:  # the input given, not the spool, in events
            log(event, {k: path if v == spool else v for k, v in fields.items()})

        stats = fit_paths([source], methods, fmt=fmt, delimiter=delimiter, log=logged, **fit_kw)
        if spool is not None:
            stats.info["inputs"] = [{"path": path, "rows": stats.info["rows"], "bytes": None}]
        if fitted is not None:
            fitted(stats)
        # The stats file is written first but put in place only once the data are: a failed or
        # interrupted transform leaves both outputs as they were.
        staged = (contextlib.nullcontext() if stats_out in (None, "-")
                  else statsfile.staged(stats_out, statsfile.dumps(stats).encode("utf-8")))
        with staged:
            transform_file(stats, source, output, fmt=fmt, to=to, delimiter=delimiter, progress=progress)
        return stats
    except NormcliError as exc:
        if spool is None or f"'{spool}'" not in str(exc):
            raise
        # the spool is an implementation detail: the user gave standard input or a pipe
        raise type(exc)(str(exc).replace(f"'{spool}'", shown)) from exc
    finally:
        if spool is not None:
            io.discard(spool)


_OVERRIDES = ("clip", "clip_sigma", "fill_missing")  # fitted options a transform may replace


def transform(stats: Stats, data: Any, *, inverse: bool = False, output: str | None = None,
              unseen_group: str = "global", dtype: str = "float64", decimals: int | None = None,
              **overrides: Any) -> Any:
    """Apply (or with ``inverse=True`` undo) ``stats`` to ``data``, returning the same kind.

    Fitted columns become ``dtype`` (float64 or float32), rounded to ``decimals`` places when
    given; every other column is returned untouched. With grouped statistics, a row whose key
    was not seen in fit follows ``unseen_group``: ``global`` (the overall statistics, with a
    warning counting the rows), ``passthrough`` (left as is), ``null`` or ``error``.
    ``overrides`` replace fitted options: ``clip``, ``clip_sigma``, ``fill_missing``.
    ``data`` may be a path: it is streamed into ``output`` (required), which is returned.
    """
    from normcli.exports import require_stats

    require_stats(stats, "transform")
    given = [k for k, v in overrides.items() if v is not None or k not in _OVERRIDES]
    given += [k for k, v, default in (("dtype", dtype, "float64"), ("decimals", decimals, None)) if v != default]
    if inverse and given:  # the inverse undoes the fitted map: an override changes nothing, nor
        # does it round or narrow what it restores (as the command line's inverse has no such options)
        raise UsageError(f"the inverse takes no option '{given[0]}' (it undoes the map fitted)")
    unknown = sorted(set(overrides) - set(_OVERRIDES))
    if unknown:
        raise UsageError(f"transform takes no option '{unknown[0]}' (it overrides {', '.join(_OVERRIDES)})")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    stats.check_overrides(overrides)  # before any data is read (and before they key a cache)
    overrides = {k: M.plain(v) for k, v in overrides.items()}
    output_options = OutputOptions(unseen_group, dtype, decimals)
    if not _is_path(data) and output is not None:
        raise UsageError("output= is for a path: a DataFrame or table is transformed and returned")
    if output is not None and not isinstance(output, (str, os.PathLike)):
        raise UsageError(f"output= takes the path of the output, not {type(output).__name__}")
    for message in stats.inverse_losses() if inverse else ():
        _warn(message)
    if _is_path(data):
        if output is None:
            raise UsageError("transforming a file needs output= (a path)")
        transform_file(stats, os.fspath(data), os.fspath(output), inverse=inverse, overrides=overrides,
                       out_options=output_options)
        return output
    unseen = UnseenGroups()
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    wanted = stats.needed_columns + stats.group_by
    if pd is not None and isinstance(data, pd.DataFrame):
        # the stats file names columns as text; a frame may name them 0, 1, ... (as fit read them)
        label = {str(c): i for i, c in enumerate(data.columns)}  # by position: a label True is no row mask
        stats.check_columns(list(label))
        if len(label) < len(data.columns):  # 1 and "1", or a label given twice: which one is meant?
            names = [str(c) for c in data.columns]
            twice = next((n for n in wanted if names.count(n) > 1), None)
            if twice is not None:
                raise DataError(f"the DataFrame has two columns named '{twice}'")
        picked = data.iloc[:, [label[n] for n in wanted]].set_axis(wanted, axis=1)
        # group keys mixing numbers and text are text, as fit read them
        done = _map_table(stats, _frame_to_arrow(picked, mixed_as_text=stats.group_by), inverse, overrides,
                          output_options, unseen)
        out = data.copy()
        for name in stats.needed_columns:
            out.isetitem(label[name], done.column(name).to_numpy(zero_copy_only=False))
    elif _is_polars_frame(data):
        import polars as pl

        stats.check_columns(data.columns)
        done = _map_table(stats, data.select(wanted).to_arrow(), inverse, overrides, output_options, unseen)
        # the other columns stay the frame's own, in their places
        out = data.with_columns([pl.from_arrow(done.column(name)).alias(name) for name in stats.needed_columns])
    else:
        table = _as_table(data)
        done = _map_table(stats, table, inverse, overrides, output_options, unseen)
        out = done
        if isinstance(data, pa.RecordBatch):
            out = done.combine_chunks().to_batches()[0] if done.num_rows else pa.RecordBatch.from_pylist(
                [], schema=done.schema)
    if unseen.rows and unseen_group == "global":
        _warn(unseen_message(stats, unseen, inverse, policy="unseen_group='global'"))
    return out


def unseen_message(stats: Stats, unseen: UnseenGroups, inverse: bool = False,
                   policy: str = "--unseen-group global") -> str:
    """The warning for rows of groups not seen in fit and mapped (normalized, or with ``inverse``
    brought back) with the overall statistics; ``policy`` spells the setting that chose it."""
    from normcli.groups import describe

    examples = "; ".join(describe(stats.group_by, k) for k in unseen.keys)
    done = "brought back" if inverse else "normalized"
    return (f"{unseen.rows:,} rows belong to groups not seen in fit (e.g. {examples}); "
            f"they were {done} with the overall statistics ({policy})")


def _map_table(stats: Stats, table: pa.Table, inverse: bool, overrides: Mapping[str, Any],
               output: OutputOptions, unseen: UnseenGroups) -> pa.Table:
    def one(batch: pa.RecordBatch) -> pa.RecordBatch:
        if inverse:
            return stats.inverse_batch(batch, output, unseen)
        return stats.transform_batch(batch, overrides, output, unseen)

    out, start = [], 0
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        try:
            out.append(one(batch))
        except RowError as exc:  # named by its position in the whole frame, as df.iloc takes it
            raise exc.located(f"row {start + exc.row} (counting from 0)") from None
        start += batch.num_rows
    if not out:
        out = [one(pa.RecordBatch.from_pylist([], schema=table.schema))]
    return pa.Table.from_batches(out)


def transform_file(stats: Stats, input: str, output: str | None, *, fmt: str | None = None,
                   to: str | None = None, delimiter: str | None = None, inverse: bool = False,
                   progress: engine.Progress | None = None, overrides: Mapping[str, Any] | None = None,
                   out_options: OutputOptions | None = None, stdout_is_tty: bool = False) -> engine.InputSummary:
    """Stream ``input`` through ``stats`` into ``output`` (``None`` or ``-``: stdout), atomically.

    The summary's ``extra["unseen"]`` holds the :class:`~normcli.model.UnseenGroups` met.
    """
    from normcli import io

    source = io.open_source(input, fmt=fmt, delimiter=delimiter)
    try:
        return transform_source(stats, source, output, to=to, delimiter=delimiter, inverse=inverse,
                                progress=progress, overrides=overrides, out_options=out_options)
    finally:
        source.close()


def transform_source(stats: Stats, source: Any, output: str | None, *, to: str | None = None,
                     delimiter: str | None = None, inverse: bool = False,
                     progress: engine.Progress | None = None, overrides: Mapping[str, Any] | None = None,
                     out_options: OutputOptions | None = None, workers: int | None = None,
                     drop: Sequence[str] = ()) -> engine.InputSummary:
    """Stream an open ``source`` (see :class:`normcli.engine.Source`; the caller closes it) through
    ``stats`` into ``output``, atomically; as :func:`transform_file`. The ``drop`` columns (say,
    partition keys) are read, to select groups, but not written."""
    from normcli import io

    out_options = out_options or OutputOptions()
    unseen = UnseenGroups()
    stats.check_columns(source.columns)
    if inverse and stats.rows:
        stats.inverse_batch(pa.RecordBatch.from_pylist([]))  # raises the row-wise error early
    # An output named without a known extension (/dev/stdout, out) is in the input's format, as stdout is
    out_fmt = io.detect_format("-", to) if to else (output not in (None, "-") and io.format_of(output)) or source.format
    schema = _output_schema(source, stats, out_fmt, out_options.arrow_type, drop)
    if inverse:
        def apply(b: pa.RecordBatch) -> pa.RecordBatch:
            return stats.inverse_batch(b, out_options, unseen)
    else:
        def apply(b: pa.RecordBatch) -> pa.RecordBatch:
            return stats.transform_batch(b, overrides, out_options, unseen)
    fn = apply if not drop else lambda b: apply(b).drop_columns(list(drop))
    # The input's separator carries over to output of its own format, unless --to names the
    # format: then the output is that format's standard text (",", or a tab). A Parquet input
    # has none: the separator given is the text output's.
    same = (to is None and out_fmt == source.format) or (source.format == "parquet" and out_fmt != "parquet")
    with io.open_sink(output, out_fmt, schema, delimiter=delimiter if same else None,
                      input_path=source.path) as sink:
        summary = engine.pipe(source, sink, stats.needed_columns, fn, progress, workers)
    summary.extra["unseen"] = unseen
    return summary


def _output_schema(source: Any, stats: Stats, out_fmt: str, kind: pa.DataType,
                   drop: Sequence[str] = ()) -> pa.Schema:
    """The output's schema. Text output holds text; Parquet keeps the input's fields as declared
    (nullability, metadata such as field ids, the file's key-value metadata), a normalized
    column with its new type, nullable (an unseen group may give null)."""
    declared = source.fields() if source.format == "parquet" else pa.schema([])
    by_name = {f.name: f for f in declared}  # a schema's field(name) is a scan: quadratic on wide data
    dropped = set(drop)
    fields = []
    for name in source.columns:
        if name in dropped:
            continue
        field = by_name.get(name) or pa.field(name, pa.string())
        fields.append(field.with_type(kind).with_nullable(True) if name in stats.columns else field)
    if out_fmt != "parquet":  # text: the types alone
        return pa.schema([pa.field(f.name, f.type) for f in fields])
    return pa.schema(fields, metadata=with_pandas_types(declared.metadata, {n: kind for n in stats.columns}))


def distinct_files(paths: Sequence[str]) -> None:
    """StatsFileError when two of ``paths`` are one stats file (a link included): merged with
    itself, a file fitted on stdin or imported has no input fingerprints to tell."""
    from normcli import io

    seen: dict[object, str] = {}
    for path in paths:
        keys = io.file_keys(path)
        first = next((seen[k] for k in keys if k in seen), None)
        if first is not None:
            raise StatsFileError(f"cannot merge: '{first}' and '{path}' are the same stats file "
                                 "(the data must be disjoint)")
        seen.update((k, path) for k in keys)


def merge(*parts: Stats | str) -> Stats:
    """Exact merge of statistics (or stats files) fitted on disjoint data with the same columns and methods.

    Raises :class:`~normcli.errors.StatsFileError` naming the first mismatch, or the first input
    file (same fingerprint) two parts were both fitted on.
    """
    from normcli.model import merge_stats

    if not parts:
        raise UsageError("merge needs at least one stats file")
    bad = next((p for p in parts if not (_is_path(p) or isinstance(p, Stats))), None)
    if bad is not None:
        raise UsageError(f"merge takes fitted statistics or stats file paths, not {type(bad).__name__}")
    twice = next((p for i, p in enumerate(parts) if isinstance(p, Stats) and any(p is q for q in parts[:i])), None)
    if twice is not None:  # in memory there is no fingerprint to tell: the same object is
        raise StatsFileError("cannot merge: the same statistics are given twice (the data must be disjoint)")
    distinct_files([p for p in parts if _is_path(p)])
    parts = tuple(load(p) if _is_path(p) else p for p in parts)
    out = parts[0]
    for other in parts[1:]:
        mine = {_same_file_key(f): f["path"] for f in absorbed(out)}
        shared = [f for f in absorbed(other) if _same_file_key(f) in mine]
        if shared:
            first, also = mine[_same_file_key(shared[0])], shared[0]["path"]
            if first == also:
                raise StatsFileError(f"cannot merge: both files were fitted on '{first}' (the data must be disjoint)")
            raise StatsFileError(f"cannot merge: both files were fitted on one file, as '{first}' and as '{also}' "
                                 "(same size, modification time and content; the data must be disjoint)")
        out = merge_stats(out, other)
    return out


def load(path: str) -> Stats:
    """Read and validate a stats file."""
    if not _is_path(path):
        raise UsageError(f"load takes the path of a stats file, not {type(path).__name__}")
    return statsfile.load(path)
