"""PyTorch: BatchNorm1d and LayerNorm tensors in a safetensors file (needs only ``safetensors``).

Per-column methods (z-score and the other affine ones) share one ``BatchNorm1d`` over their
columns in fitted order: ``batchnorm.running_mean``, ``.running_var``, ``.weight``, ``.bias``,
``.num_batches_tracked``, so that in eval mode ``(x - mean) / sqrt(var + eps) * weight + bias``
equals ``transform``. A z-score column stores its variance as is (its ``eps`` is BatchNorm's);
any other column stores ``scale**2 - eps``. Each ``layer`` row method ``i`` gives ``layer{i}.weight``
and ``.bias``; ``l1``/``l2``/``max`` have no tensors and are listed for
``torch.nn.functional.normalize``. The metadata (string to string, JSON values) holds the column
order of each part and the eps. Torch has no nulls: rows must be complete.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from normcli import methods as M
from normcli.errors import UsageError
from normcli.exports import check_ungrouped, options_checked, require
from normcli.model import Stats

FORMAT = "normcli-torch"
P = {"l1": 1.0, "l2": 2.0, "max": float("inf")}


@options_checked
def to_torch(stats: Stats) -> bytes:
    """The safetensors bytes of ``stats``; see the module docstring for the layout."""
    st = require("safetensors.numpy")
    check_ungrouped(stats, "torch")
    tensors: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"format": FORMAT, "columns": list(stats.columns)}
    per = [(n, f) for n, f in stats.columns.items() if f.method in M.PER_COLUMN]
    if per:
        eps_set = {f.options["eps"] for _, f in per if f.method == "zscore"}
        if len(eps_set) > 1:
            raise UsageError("BatchNorm1d has one eps: the zscore columns use several")
        eps = float(eps_set.pop()) if eps_set else 0.0
        rows = [_batchnorm_row(n, f, stats.params(n), eps) for n, f in per]
        for k, key in enumerate(("running_mean", "running_var", "weight", "bias")):
            tensors[f"batchnorm.{key}"] = np.array([r[k] for r in rows], dtype=np.float64)
        tensors["batchnorm.num_batches_tracked"] = np.zeros((), dtype=np.int64)
        meta["batchnorm"] = {"columns": [n for n, _ in per], "eps": eps}
    layers, norms = [], []
    for row in stats.rows:
        if row.method == "layer":
            if row.options["eps_mode"] != "inside":
                raise UsageError("torch's LayerNorm adds eps inside the square root: --eps-mode std has no equivalent")
            i, k = len(layers), len(row.columns)
            tensors[f"layer{i}.weight"] = np.array(row.options.get("gamma") or [1.0] * k, dtype=np.float64)
            tensors[f"layer{i}.bias"] = np.array(row.options.get("beta") or [0.0] * k, dtype=np.float64)
            layers.append({"columns": row.columns, "eps": row.options["eps"]})
        else:
            norms.append({"columns": row.columns, "p": P[row.method]})
    meta["layer"], meta["normalize"] = layers, norms
    return st.save(tensors, metadata={k: json.dumps(v) for k, v in meta.items()})


def _batchnorm_row(name: str, fit: Any, p: M.Affine, eps: float) -> tuple[float, float, float, float]:
    """(running_mean, running_var, weight, bias) reproducing column ``name``'s affine map."""
    if p.fill is not None or p.clip is not None:
        raise UsageError(f"column '{name}': clipping and fill-missing have no BatchNorm1d equivalent")
    if p.const_zero:
        return 0.0, 1.0 - eps, 0.0, 0.0
    # As transform decides (a zero scale is degenerate too: an imported StandardScaler's var_ of 0,
    # with no minimum or maximum to show the column constant), else the stored variance gives 0/0.
    exact = (fit.method == "zscore" and fit.stats.scale is None and fit.stats.count > 0
             and not M.degenerate(fit.method, fit.stats, fit.options))
    var = fit.stats.var(fit.options["ddof"]) if exact else float(p.scale) ** 2 - eps
    return float(p.center) + float(p.center_lo), var, float(p.gain), float(p.offset)
