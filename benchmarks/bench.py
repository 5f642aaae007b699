"""Reproducible benchmark: normcli against Polars, DuckDB and pandas + scikit-learn.

    pip install '.[bench]'
    python benchmarks/bench.py                     # 5,000,000 rows, 3 runs of each command
    python benchmarks/bench.py --rows 1000000 --runs 5 --tools normcli,polars

Generates a deterministic dataset (a string id, an integer and ten float columns) as CSV and
Parquet, then times three tasks as whole processes: fit (mean, std, min, max of every numeric
column, from the CSV), transform CSV -> CSV and Parquet -> Parquet with the same z-score
statistics. Every peer's output is checked against normcli's; the table gives the median wall
time, the largest peak RSS of the runs, and each time as a ratio to normcli's. Each run starts
after a ``sync``, so that no command pays for writing back another's output.
"""
from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = {"fit": ("csv", "json"), "csv": ("csv", "csv"), "parquet": ("parquet", "parquet")}
TASK_NAMES = {"fit": "fit (CSV)", "csv": "transform CSV -> CSV", "parquet": "transform Parquet -> Parquet"}


def command(tool: str, task: str, src: str, dst: str, stats: str) -> list[str]:
    if tool == "normcli":
        if task == "fit":
            return [sys.executable, "-m", "normcli", "fit", src, "-o", dst, "-q"]
        return [sys.executable, "-m", "normcli", "transform", src, "--stats", stats, "-o", dst, "-q"]
    if tool == "normcli-dask":  # a LocalCluster started by the command itself; parts into a directory
        extra = ["--engine", "dask", "-q"]
        if task == "fit":
            return [sys.executable, "-m", "normcli", "fit", src, "-o", dst, *extra]
        return [sys.executable, "-m", "normcli", "transform", src, "--stats", stats, "-o", dst + "/", *extra]
    return [sys.executable, os.path.join(HERE, "peers.py"), tool, "fit" if task == "fit" else "transform", src, dst, stats]


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one whole process, started on a quiet disk."""
    # Untimed: the peers leave their output for the kernel to write back later, which would
    # otherwise happen during (and be charged to) whichever command runs next.
    if hasattr(os, "sync"):
        os.sync()
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if status != 0:
        raise SystemExit(f"failed ({status}): {shlex.join(cmd)}\n{err}")
    return wall, usage.ru_maxrss / 1024


def byte_compile(package: str) -> None:
    """Write the missing ``.pyc`` files of ``package``, as a regular ``pip install`` does.

    An editable install run with ``PYTHONDONTWRITEBYTECODE`` set (as in some containers) would
    otherwise compile normcli's source at every start: about 0.1 s that no user of an installed
    normcli pays, and that the peers, installed with their bytecode, do not pay either.
    """
    spec = importlib.util.find_spec(package)  # finds without importing: this process stays small
    for folder in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(folder, quiet=1)


def read_output(path: str):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.endswith(".json"):
        return json.load(open(path))
    if os.path.isdir(path):  # the Dask engine's output parts, in order
        import pyarrow as pa

        return pa.concat_tables([read_output(os.path.join(path, p)) for p in sorted(os.listdir(path))])
    if path.endswith(".parquet"):
        return pq.read_table(path)
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"id": "string"}))


def fit_summary(path: str) -> dict[str, float]:
    """mean/std/min/max per column, from a normcli stats file or a peer's JSON."""
    doc = json.load(open(path))
    if "columns" not in doc:
        return doc
    out = {}
    for name, col in doc["columns"].items():
        st = col["stats"]
        out.update({f"{name}:mean": st["mean"] + st["mean_lo"], f"{name}:std": (st["m2"] / st["count"]) ** 0.5,
                    f"{name}:min": st["min"], f"{name}:max": st["max"]})
    return out


def agrees(task: str, ours: str, theirs: str) -> str:
    """'yes' when the peer's output equals normcli's (floats to 1e-9 relative, or absolute below
    1e-3), else what differs."""
    if task == "fit":
        a, b = fit_summary(ours), fit_summary(theirs)
        if set(a) != set(b):
            return "columns differ"
        worst = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-300) for k in a)
        return "yes" if worst < 1e-9 else f"max rel diff {worst:.1e}"
    a, b = read_output(ours), read_output(theirs)
    if a.column_names != b.column_names or a.num_rows != b.num_rows:
        return "shape differs"
    worst = 0.0
    for name in a.column_names:
        x, y = a.column(name), b.column(name)
        if name == "id":
            if not x.cast("string").equals(y.cast("string")):
                return "id differs"
            continue
        x, y = x.to_numpy().astype(float), y.to_numpy().astype(float)
        # relative to the value, or absolute near zero (z-scores cross zero)
        worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(np.abs(x), 1e-3))))
    return "yes" if worst < 1e-9 else f"max rel diff {worst:.1e}"


def agrees_in_child(task: str, ours: str, theirs: str) -> str:
    """:func:`agrees` in a child process: a child's peak RSS starts at its parent's (Linux keeps
    the high-water mark across fork and exec), so this process must stay small."""
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--check", task, ours, theirs],
                       capture_output=True, text=True)
    return p.stdout.strip() or f"check failed: {p.stderr.strip()[-200:]}"


def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="normcli,polars,duckdb,pandas",
                    help="comma-separated: normcli, normcli-dask, polars, duckdb, pandas")
    ap.add_argument("--tasks", default="fit,csv,parquet")
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--check", nargs=3, metavar=("TASK", "OURS", "THEIRS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.check:
        print(agrees(*args.check))
        return
    tools, tasks = args.tools.split(","), args.tasks.split(",")
    os.makedirs(args.data, exist_ok=True)
    base = os.path.join(args.data, f"data_{args.rows}")
    if not (os.path.exists(base + ".csv") and os.path.exists(base + ".parquet")):
        print(f"generating {args.rows:,} rows in {args.data} ...", file=sys.stderr)
        # in a child: a child's peak RSS starts at its parent's, so this process stays small
        subprocess.run([sys.executable, os.path.join(HERE, "gendata.py"), "--rows", str(args.rows),
                        "--out", args.data], check=True, stdout=subprocess.DEVNULL)
    out_dir = os.path.join(args.data, "out")
    os.makedirs(out_dir, exist_ok=True)
    stats = os.path.join(out_dir, "stats.json")
    byte_compile("normcli")
    run(command("normcli", "fit", base + ".csv", stats, stats))
    for ext in ("csv", "parquet"):  # warm the page cache so that no tool pays for the first read
        with open(f"{base}.{ext}", "rb") as f:
            while f.read(1 << 24):
                pass

    rows = []
    for task in tasks:
        src_ext, out_ext = TASKS[task]
        order = ["normcli"] + [t for t in tools if t != "normcli"]
        dst = {tool: os.path.join(out_dir, f"{task}.{tool}.{out_ext}") for tool in order}
        times: dict[str, list[float]] = {tool: [] for tool in order}
        rss: dict[str, list[float]] = {tool: [] for tool in order}
        # Round robin: a machine whose speed drifts during the run weighs on every tool alike.
        for _ in range(args.runs):
            for tool in order:
                wall, peak = run(command(tool, task, f"{base}.{src_ext}", dst[tool], stats))
                times[tool].append(wall)
                rss[tool].append(peak)
        ours = statistics.median(times["normcli"])
        for tool in order:
            median = statistics.median(times[tool])
            check = "reference" if tool == "normcli" else agrees_in_child(task, dst["normcli"], dst[tool])
            rows.append((TASK_NAMES[task], tool, median, max(rss[tool]), median / ours, check))
            print(f"{TASK_NAMES[task]:30} {tool:13} {median:7.2f} s {max(rss[tool]):7.0f} MiB", file=sys.stderr)

    print(f"\n{args.rows:,} rows (CSV {os.path.getsize(base + '.csv') / 1e6:.0f} MB, "
          f"Parquet {os.path.getsize(base + '.parquet') / 1e6:.0f} MB); median of {args.runs} runs; {machine()}\n")
    print("| task | tool | wall (s) | peak RSS (MiB) | time / normcli's | output equals normcli's |")
    print("|---|---|---|---|---|---|")
    for task, tool, median, peak, ratio, check in rows:
        print(f"| {task} | {tool} | {median:.2f} | {peak:.0f} | {ratio:.2f}x | {check} |")


if __name__ == "__main__":
    main()
