"""Deterministic benchmark data: a string id, an integer column and ten float64 columns.

    python benchmarks/gendata.py --rows 5000000 --out benchmarks/data
writes data_5000000.csv and data_5000000.parquet.
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


def write(rows: int, out: str) -> tuple[str, str]:
    """Write ``data_{rows}.csv`` and ``data_{rows}.parquet`` into ``out``; return their paths."""
    import polars as pl

    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, f"data_{rows}.csv")
    pq_path = os.path.join(out, f"data_{rows}.parquet")
    writer = None
    with open(csv_path, "wb") as f:
        for i, t in enumerate(chunks(rows)):
            pl.from_arrow(t).write_csv(f, include_header=i == 0)
            if writer is None:
                writer = pq.ParquetWriter(pq_path, t.schema)
            writer.write_table(t)
    writer.close()
    return csv_path, pq_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data"))
    args = ap.parse_args()
    for path in write(args.rows, args.out):
        print(path)


if __name__ == "__main__":
    main()
