"""ONNX: a graph (opset 17) mapping X [rows, k] in the recorded column order to its normalized form.

Per-column methods are evaluated as ``((X - center) - center_lo) / scale * gain + offset`` on
their columns with vectors of parameters, then the constant ``zero`` policy, clip and fill
(``Where`` nodes, so NaN - the null of a tensor - stays NaN unless filled). Each row-wise method
takes its columns with ``Gather`` and computes its row norm (or row mean and variance, for
``layer``) over the non-NaN entries. The pieces are concatenated and put back in column order.
A float32 graph casts to float64 inside, so its only error is the final rounding.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from normcli import methods as M
from normcli.errors import UsageError
from normcli.exports import check_ungrouped, options_checked, require
from normcli.model import RowFit, Stats

OPSET = 17
DOUBLE = 11  # onnx.TensorProto.DOUBLE


class _Graph:
    """A tiny node builder: every call adds one node and returns its output's name."""

    def __init__(self, helper: Any, numpy_helper: Any) -> None:
        self.h, self.nh = helper, numpy_helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, value: Any, dtype: Any = np.float64) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(self.nh.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def sum(self, x: str) -> str:
        """Row sums of ``x``, keeping the axis."""
        return self.op("ReduceSum", x, self.const([1], np.int64), keepdims=1)

    def op(self, kind: str, *inputs: str, **attrs: Any) -> str:
        name = f"n{len(self.nodes)}"
        self.nodes.append(self.h.make_node(kind, list(inputs), [name], **attrs))
        return name


@options_checked
def to_onnx(stats: Stats, dtype: str = "float64") -> Any:
    """An ``onnx.ModelProto`` whose input ``X`` and output ``Y`` are [rows, k] in ``stats``' column order.

    ``dtype`` is ``float64`` or ``float32`` (computed in float64 inside). The column order is
    also in the model's metadata (``columns``, a JSON list).
    """
    onnx = require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    check_ungrouped(stats, "onnx")
    if dtype not in ("float64", "float32"):
        raise UsageError(f"--dtype must be float64 or float32, got '{dtype}'")
    names = list(stats.columns)
    index = {c: i for i, c in enumerate(names)}
    g = _Graph(helper, numpy_helper)
    x = "X" if dtype == "float64" else g.op("Cast", "X", to=TensorProto.DOUBLE)
    pieces, order = [], []
    per = [n for n, f in stats.columns.items() if f.method in M.PER_COLUMN]
    if per:
        pieces.append(_per_column(g, g.op("Gather", x, g.const([index[n] for n in per], np.int64), axis=1),
                                  [stats.params(n) for n in per]))
        order += per
    for row in stats.rows:
        pieces.append(_row(g, g.op("Gather", x, g.const([index[c] for c in row.columns], np.int64), axis=1), row))
        order += row.columns
    y = pieces[0] if len(pieces) == 1 else g.op("Concat", *pieces, axis=1)
    if order != names:
        y = g.op("Gather", y, g.const([order.index(n) for n in names], np.int64), axis=1)
    elem = TensorProto.DOUBLE if dtype == "float64" else TensorProto.FLOAT
    if dtype == "float32":
        y = g.op("Cast", y, to=TensorProto.FLOAT)
    g.nodes.append(helper.make_node("Identity", [y], ["Y"]))
    graph = helper.make_graph(g.nodes, "normcli", [helper.make_tensor_value_info("X", elem, ["rows", len(names)])],
                              [helper.make_tensor_value_info("Y", elem, ["rows", len(names)])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="normcli")
    model.ir_version = min(model.ir_version, 8)
    helper.set_model_props(model, {"columns": json.dumps(names, ensure_ascii=False)})
    onnx.checker.check_model(model)
    return model


def _per_column(g: _Graph, x: str, ps: list[M.Affine]) -> str:
    """The affine maps ``ps`` (one per column of ``x``) with their constant, clip and fill policies."""
    vec = lambda attr: g.const([float(getattr(p, attr)) for p in ps])  # noqa: E731
    y = g.op("Sub", x, vec("center"))
    if any(p.center_lo != 0.0 for p in ps):
        y = g.op("Sub", y, vec("center_lo"))
    y = g.op("Mul", g.op("Div", y, vec("scale")), vec("gain"))
    y = g.op("Add", y, vec("offset"))
    if any(p.const_zero for p in ps):
        zero = g.op("Where", g.op("IsNaN", x), x, g.const(0.0))  # 0, or NaN where x is null (x * 0 is NaN at inf too)
        y = g.op("Where", g.const([bool(p.const_zero) for p in ps], np.bool_), zero, y)
    if any(p.clip is not None for p in ps):
        lo = g.const([p.clip[0] if p.clip else -np.inf for p in ps])
        hi = g.const([p.clip[1] if p.clip else np.inf for p in ps])
        y = g.op("Where", g.op("Less", y, lo), lo, y)
        y = g.op("Where", g.op("Greater", y, hi), hi, y)
    if any(p.fill is not None for p in ps):
        fill = g.const([np.nan if p.fill is None else p.fill for p in ps])
        y = g.op("Where", g.op("IsNaN", y), fill, y)
    return y


def _row(g: _Graph, x: str, row: RowFit) -> str:
    """Row-wise ``row.method`` over ``x`` (its columns), statistics over the non-NaN entries."""
    nan = g.op("IsNaN", x)
    xz = g.op("Where", nan, g.const(0.0), x)
    if row.method == "layer":
        n = g.sum(g.op("Cast", g.op("Not", nan), to=DOUBLE))
        mean = g.op("Div", g.sum(xz), n)
        d = g.op("Sub", x, mean)
        dz = g.op("Where", nan, g.const(0.0), d)
        var = g.op("Div", g.sum(g.op("Mul", dz, dz)), n)
        eps = g.const(float(row.options["eps"]))
        if row.options["eps_mode"] == "std":
            y = g.op("Div", d, g.op("Add", g.op("Sqrt", var), eps))
        else:
            y = g.op("Div", d, g.op("Sqrt", g.op("Add", var, eps)))
        if row.options.get("gamma") is not None:
            y = g.op("Mul", y, g.const(row.options["gamma"]))
        if row.options.get("beta") is not None:
            y = g.op("Add", y, g.const(row.options["beta"]))
        return y
    if row.method == "l1":
        norm = g.sum(g.op("Abs", xz))
    elif row.method == "l2":
        norm = g.op("Sqrt", g.sum(g.op("Mul", xz, xz)))
    elif row.method == "max":
        norm = g.op("ReduceMax", g.op("Abs", xz), axes=[1], keepdims=1)
    else:
        raise UsageError(f"'{row.method}' is not a row-wise method")
    norm = g.op("Where", g.op("Greater", norm, g.const(0.0)), norm, g.const(1.0))
    return g.op("Div", x, norm)
