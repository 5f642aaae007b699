"""Deterministic benchmark data: a string id, an integer column and ten float64 columns.

    python benchmarks/gendata.py --rows 5000000 --out benchmarks/data
writes data.csv and data.parquet (and stats.json is fitted by the benchmark itself).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK = 500_000


def chunks(rows: int, seed: int = 42):
    rng = np.random.default_rng(seed)
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        cols = {"id": pa.array([f"id{i:09d}" for i in range(start, start + n)]),
                "count": pa.array(rng.integers(0, 1000, n))}
        for j in range(10):
            cols[f"f{j}"] = pa.array(np.round(rng.normal(j * 10.0, 1.0 + j, n), 6))
        yield pa.table(cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    import polars as pl

    csv_path = os.path.join(args.out, f"data_{args.rows}.csv")
    pq_path = os.path.join(args.out, f"data_{args.rows}.parquet")
    writer = None
    with open(csv_path, "wb") as f:
        for i, t in enumerate(chunks(args.rows)):
            pl.from_arrow(t).write_csv(f, include_header=i == 0)
            if writer is None:
                writer = pq.ParquetWriter(pq_path, t.schema)
            writer.write_table(t)
    writer.close()
    print(csv_path)
    print(pq_path)


if __name__ == "__main__":
    main()
