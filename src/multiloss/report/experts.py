"""Find MoE layers in the logged metrics: ``metric/<layer>/load/<i>`` and its companions."""

from __future__ import annotations

import re

import numpy as np
from numpy.typing import NDArray

from multiloss.report.table import Table

__all__ = ["MOE_KEYS", "is_moe_metric", "load_matrix", "moe_layers"]

# Per-layer scalars an MoE layer logs next to its per-expert load (docs/contracts.md §4).
MOE_KEYS = ("cv", "max_vio", "dropped_fraction", "router_entropy", "dead_fraction")
_LOAD = re.compile(r"^(?P<layer>.+)/load/(?P<expert>\d+)$")
_BIAS = re.compile(r"^(?P<layer>.+)/bias/(?P<expert>\d+)$")


def moe_layers(table: Table) -> dict[str, list[int]]:
    """MoE layer path -> sorted expert indices, from the ``metric/<layer>/load/<i>`` keys.

    Example:
        >>> table = Table.from_rows([{"step": 1, "metric/b.0.moe/load/1": 0.5,
        ...                           "metric/b.0.moe/load/0": 0.5}])
        >>> moe_layers(table)
        {'b.0.moe': [0, 1]}
    """
    layers: dict[str, list[int]] = {}
    for name in table.names("metric/"):
        match = _LOAD.match(name)
        if match:
            layers.setdefault(match["layer"], []).append(int(match["expert"]))
    return {layer: sorted(experts) for layer, experts in layers.items()}


def is_moe_metric(name: str, layers: dict[str, list[int]]) -> bool:
    """Whether metric ``name`` (without ``metric/``) belongs to one of the MoE ``layers``."""
    for pattern in (_LOAD, _BIAS):
        match = pattern.match(name)
        if match and match["layer"] in layers:
            return True
    layer, _, key = name.rpartition("/")
    return layer in layers and key in MOE_KEYS


def load_matrix(table: Table, layer: str, experts: list[int]) -> NDArray[np.float64]:
    """Rows x experts load of ``layer``, each row divided by its mean (1.0 = perfectly even).

    Normalizing makes counts and fractions comparable and puts "balanced" at 1 for any number
    of experts.
    """
    raw = np.stack([table.column(f"metric/{layer}/load/{e}") for e in experts], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(np.where(np.isfinite(raw), raw, np.nan), axis=1, keepdims=True)
        return np.where(mean > 0, raw / mean, np.nan)
