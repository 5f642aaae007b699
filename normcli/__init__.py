"""normcli: learn normalization statistics from tabular data and apply them, streaming.

The public API (``fit``, ``load``, ``merge``, ``transform``, ``export``, ``to_sklearn``,
``from_sklearn``, ``Stats``, ``NormcliError`` and its kinds ``UsageError``, ``DataError``,
``StatsFileError``, ``IOFailure``) is imported on first use, so that ``import
normcli`` stays cheap and the command line can set up Arrow before pyarrow is loaded.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "fit": "normcli.api", "load": "normcli.api", "merge": "normcli.api", "transform": "normcli.api",
    "export": "normcli.exports", "to_sklearn": "normcli.exports.sklearn",
    "from_sklearn": "normcli.exports.sklearn", "Stats": "normcli.model", "NormcliError": "normcli.errors",
    "UsageError": "normcli.errors", "DataError": "normcli.errors", "StatsFileError": "normcli.errors",
    "IOFailure": "normcli.errors",
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'normcli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
