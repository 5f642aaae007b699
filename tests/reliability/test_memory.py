"""Bounded memory: the peak RSS of a transform does not grow with its input.

The same streaming transform runs over a file and over one five times its size; were the input,
the output or any per-row state held whole, the larger run would peak tens of MB higher.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB is Linux's")

ROWS = 120_000


def _table(rows: int) -> pa.Table:
    rng = np.random.default_rng(7)
    cols = {"id": pa.array([f"id{i:09d}" for i in range(rows)]),
            "count": pa.array(rng.integers(0, 1000, rows))}
    cols.update({f"f{j}": pa.array(np.round(rng.normal(10 * j, 1 + j, rows), 6)) for j in range(8)})
    return pa.table(cols)


def _write(table: pa.Table, path: str) -> None:
    if path.endswith(".parquet"):
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)


def _peak_mib(*args: str, block: str) -> float:
    """Run the CLI in a child process with pieces of ``block``; its own peak RSS in MiB (it must succeed)."""
    env = {**os.environ, "NORMCLI_BLOCK_SIZE": block}
    # stderr goes to a file, not a pipe: a child filling a pipe nobody reads would never exit.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "normcli", *args], stdout=subprocess.DEVNULL,
                                stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        assert proc.returncode == 0, err.read().decode()
    return usage.ru_maxrss / 1024


# Small pieces (256 KiB of CSV, 8,192 Parquet rows) so that even the smaller file fills the
# pipeline: its peak is then the steady state's.
@pytest.mark.parametrize("ext, block", [("csv", "262144"), ("parquet", "8192")])
def test_transform_memory_does_not_grow_with_the_input(tmp_path, ext, block):
    small, large = str(tmp_path / f"small.{ext}"), str(tmp_path / f"large.{ext}")
    table = _table(ROWS)
    _write(table, small)
    _write(pa.concat_tables([table] * 5), large)
    stats = str(tmp_path / "stats.json")
    subprocess.run([sys.executable, "-m", "normcli", "fit", small, "-o", stats], check=True)
    peaks = {}
    for name, path in (("small", small), ("large", large)):
        peaks[name] = _peak_mib("transform", path, "--stats", stats, "-o", str(tmp_path / f"out_{name}.{ext}"),
                                block=block)
    # 480,000 more rows: holding them (44 MB of CSV text, 38 MB of floats) would show; measured
    # growth is 0-2 MiB.
    assert peaks["large"] - peaks["small"] < 12, peaks
