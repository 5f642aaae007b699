"""Generators that turn a fitted model into another system's form, one small module per target.

Every target reads only the fitted :class:`~normcli.model.Stats` (never files, never the CLI):
``sql`` gives text, ``sklearn`` a fitted estimator, ``torch`` safetensors bytes, ``onnx`` a
``ModelProto``. :func:`export` dispatches by name; :func:`export_bytes` gives what the CLI writes.
"""
from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any, Callable, TypeVar

from normcli.errors import UsageError
from normcli.model import Stats

TARGETS = ("sql", "sklearn", "torch", "onnx")
F = TypeVar("F", bound=Callable[..., Any])
# The pip extra that brings each optional module.
_EXTRAS = {"sklearn": "sklearn", "skops": "sklearn", "safetensors": "torch", "onnx": "onnx"}


def options_checked(fn: F) -> F:
    """``fn`` with a keyword it does not take refused as a UsageError that names the ones it
    does (a bare TypeError would name an internal function)."""
    params = inspect.signature(fn).parameters
    names = [n for n, p in params.items() if p.kind is not p.VAR_KEYWORD][1:]

    @functools.wraps(fn)
    def checked(*args: Any, **options: Any) -> Any:
        unknown = next((k for k in options if k not in params), None)
        if unknown is not None:
            raise UsageError(f"unknown option '{unknown}' (options: {', '.join(names) or 'none'})")
        return fn(*args, **options)
    return checked  # type: ignore[return-value]


def require(module: str) -> Any:
    """Import ``module`` or raise one UsageError naming the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = _EXTRAS.get(module.split(".")[0], module)
        raise UsageError(f"this needs the '{module}' package: pip install 'normcli[{extra}]'") from None


def require_stats(stats: Any, what: str) -> None:
    """Raise a UsageError when ``stats`` is not a fitted :class:`Stats` (a DataFrame, say)."""
    if not isinstance(stats, Stats):
        raise UsageError(f"{what} takes fitted Stats (normcli.fit or normcli.load), not a {type(stats).__name__}")


def check_ungrouped(stats: Stats, target: str) -> None:
    """Raise a UsageError when ``stats`` holds per-group statistics the ``target`` cannot express yet."""
    if stats.groups is not None:
        raise UsageError(f"export to {target} is not yet supported for grouped stats (--group-by)")


def export(stats: Stats, target: str, **options: Any) -> Any:
    """The ``target`` form of ``stats``: SQL text, a scikit-learn estimator, safetensors bytes or an ONNX model.

    ``options`` go to the target's function: :func:`normcli.exports.sql.to_sql`,
    :func:`normcli.exports.sklearn.to_sklearn`, :func:`normcli.exports.torch.to_torch`,
    :func:`normcli.exports.onnx.to_onnx`.
    """
    if target not in TARGETS:
        raise UsageError(f"unknown export target '{target}' (choose from {', '.join(TARGETS)})")
    require_stats(stats, "export")
    module = importlib.import_module(f"normcli.exports.{target}")
    return getattr(module, f"to_{target}")(stats, **options)


def export_bytes(stats: Stats, target: str, **options: Any) -> bytes:
    """What ``normcli export --to TARGET`` writes: UTF-8 SQL, a skops file, safetensors or ONNX bytes."""
    out = export(stats, target, **options)
    if isinstance(out, str):
        return out.encode("utf-8")
    if isinstance(out, bytes):
        return out
    if target == "sklearn":
        return require("skops.io").dumps(out)
    return out.SerializeToString()  # an onnx.ModelProto
