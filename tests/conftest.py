"""Shared fixtures and helpers: run the real CLI in-process or as a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"


def read_csv_exact(source, **kwargs):
    """``pandas.read_csv`` reading every number as the double nearest its text.

    pandas 2's default float parser is not correctly rounded (about a third of printed doubles
    come back an ulp off); its round-trip parser is, and so is pandas 3's default, which
    deprecates the option.
    """
    import pandas as pd

    if int(pd.__version__.split(".")[0]) < 3:
        kwargs.setdefault("float_precision", "round_trip")
    return pd.read_csv(source, **kwargs)


@dataclass
class Result:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode("utf-8")


def run_cli(*args: str, stdin: bytes | None = None, cwd: str | os.PathLike | None = None,
            env: dict | None = None, timeout: float = 120) -> Result:
    """Run ``python -m normcli ARGS`` as a real process and capture everything."""
    full_env = {**os.environ, **(env or {})}
    p = subprocess.run([sys.executable, "-m", "normcli", *map(str, args)], input=stdin,
                       capture_output=True, cwd=cwd, env=full_env, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def sample_csv() -> Path:
    return SAMPLE / "sales.csv"


@pytest.fixture
def sample_parquet() -> Path:
    return SAMPLE / "sales.parquet"
