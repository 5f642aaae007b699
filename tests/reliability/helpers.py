"""Helpers of the reliability suite: run the CLI, check an error is one clean line."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import Result, run_cli  # tests/conftest.py

DOCUMENTED_EXITS = {0, 2, 3, 4, 5}


def assert_error(r: Result, code: int, *needles: str) -> str:
    """``r`` failed with ``code`` and exactly one ``Error:`` line on stderr naming every needle."""
    assert r.code == code, (r.code, r.err)
    assert "Traceback" not in r.err, r.err
    lines = r.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def fit(src: Path, stats: Path, *args: str, **kw) -> Result:
    """``normcli fit SRC -o STATS ARGS``; the run must succeed."""
    r = run_cli("fit", src, "-o", stats, *args, **kw)
    assert r.code == 0, r.err
    return r


def zscore(x: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """(x - mean) / std (ddof 0) with the moments of ``ref`` (default ``x``), NaN ignored."""
    ref = x if ref is None else ref
    return (x - np.nanmean(ref)) / np.nanstd(ref)


def csv_column(data: bytes, name: str) -> np.ndarray:
    """A column of CSV bytes (no quoting) as float64, an empty field as NaN."""
    lines = data.decode().splitlines()
    i = lines[0].split(",").index(name)
    return np.array([float(l.split(",")[i]) if l.split(",")[i] else np.nan for l in lines[1:]])


def no_leftovers(directory: Path, *allowed: str) -> None:
    """Nothing in ``directory`` but the ``allowed`` names (no output, no temporary file)."""
    assert sorted(p.name for p in directory.iterdir()) == sorted(allowed)
