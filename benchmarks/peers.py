"""The peers' side of the benchmark: each task as a small program for Polars, DuckDB and pandas.

Run as ``python benchmarks/peers.py TOOL TASK INPUT OUTPUT STATS``; ``STATS`` is a normcli stats
file from which the z-score parameters (mean, population std) are read, so that every tool
applies the same statistics. ``fit`` writes a JSON of mean, std, min and max per column.
"""
from __future__ import annotations

import json
import sys


def params(stats_path: str) -> dict[str, tuple[float, float]]:
    doc = json.load(open(stats_path))
    out = {}
    for name, col in doc["columns"].items():
        st = col["stats"]
        out[name] = (st["mean"] + st["mean_lo"], (st["m2"] / st["count"]) ** 0.5)
    return out


def polars(task: str, src: str, dst: str, stats: str) -> None:
    import polars as pl

    lf = pl.scan_csv(src) if src.endswith(".csv") else pl.scan_parquet(src)
    if task == "fit":
        numeric = [n for n, t in lf.collect_schema().items() if t.is_numeric()]
        aggs = [e for n in numeric for e in (pl.col(n).mean().alias(f"{n}:mean"), pl.col(n).std(ddof=0).alias(f"{n}:std"),
                                             pl.col(n).min().alias(f"{n}:min"), pl.col(n).max().alias(f"{n}:max"))]
        row = lf.select(aggs).collect(engine="streaming").row(0, named=True)
        _write_fit(dst, row)
        return
    p = params(stats)
    lf = lf.with_columns(((pl.col(n) - m) / s).alias(n) for n, (m, s) in p.items())
    lf.sink_csv(dst) if dst.endswith(".csv") else lf.sink_parquet(dst)


def duckdb(task: str, src: str, dst: str, stats: str) -> None:
    import duckdb as ddb

    con = ddb.connect()
    rel = f"read_csv('{src}')" if src.endswith(".csv") else f"read_parquet('{src}')"
    cols = con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()
    if task == "fit":
        numeric = [c[0] for c in cols if c[1] in ("BIGINT", "INTEGER", "DOUBLE", "FLOAT", "SMALLINT", "TINYINT")]
        exprs = ", ".join(f'avg("{n}"), stddev_pop("{n}"), min("{n}"), max("{n}")' for n in numeric)
        values = con.execute(f"SELECT {exprs} FROM {rel}").fetchone()
        row = {f"{n}:{k}": values[4 * i + j] for i, n in enumerate(numeric) for j, k in enumerate(("mean", "std", "min", "max"))}
        _write_fit(dst, row)
        return
    p = params(stats)
    select = ", ".join(f'("{c[0]}" - {p[c[0]][0]!r}) / {p[c[0]][1]!r} AS "{c[0]}"' if c[0] in p else f'"{c[0]}"' for c in cols)
    fmt = "(FORMAT csv, HEADER)" if dst.endswith(".csv") else "(FORMAT parquet)"
    con.execute(f"COPY (SELECT {select} FROM {rel}) TO '{dst}' {fmt}")


def pandas(task: str, src: str, dst: str, stats: str) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.preprocessing import StandardScaler

    df = pd.read_csv(src) if src.endswith(".csv") else pd.read_parquet(src)
    if task == "fit":
        numeric = list(df.select_dtypes("number").columns)
        sc = StandardScaler().fit(df[numeric])
        row = {}
        for i, n in enumerate(numeric):
            row.update({f"{n}:mean": sc.mean_[i], f"{n}:std": sc.scale_[i],
                        f"{n}:min": df[n].min(), f"{n}:max": df[n].max()})
        _write_fit(dst, row)
        return
    p = params(stats)
    names = list(p)
    sc = StandardScaler()
    sc.mean_ = np.array([p[n][0] for n in names])
    sc.scale_ = np.array([p[n][1] for n in names])
    sc.var_ = sc.scale_ ** 2
    sc.n_features_in_ = len(names)
    df[names] = sc.transform(df[names].to_numpy(dtype=np.float64))
    df.to_csv(dst, index=False) if dst.endswith(".csv") else df.to_parquet(dst, index=False)


def _write_fit(dst: str, row: dict) -> None:
    with open(dst, "w") as f:
        json.dump({k: float(v) for k, v in row.items()}, f)


if __name__ == "__main__":
    tool, task, src, dst, stats = sys.argv[1:6]
    {"polars": polars, "duckdb": duckdb, "pandas": pandas}[tool](task, src, dst, stats)
