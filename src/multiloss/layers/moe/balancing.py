"""Balancing options: validation, cross-process counts, and the aux-loss-free bias update."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from multiloss._validation import check_choice, check_finite_float, describe

__all__ = [
    "BALANCE_TYPES",
    "LOSS_TYPES",
    "all_reduce_counts",
    "check_balance",
    "update_expert_bias",
]

#: Balancing types a ``balance`` mapping may name; all but ``bias`` are loss terms.
BALANCE_TYPES = ("switch", "sequence", "global", "z", "bias")
#: The balancing types that are loss terms (named ``<layer path>/<type>`` in the logs).
LOSS_TYPES = ("switch", "sequence", "global", "z")


def check_balance(balance: Any, owner: str) -> dict[str, float]:
    """``balance`` as a plain dict, or an error naming the bad type or coefficient.

    Example:
        >>> check_balance({"switch": 0.01, "z": 1e-3}, "MixtureOfExperts")
        {'switch': 0.01, 'z': 0.001}
    """
    if not isinstance(balance, Mapping):
        raise TypeError(
            f"`balance` of {owner} must be a mapping of balancing type to coefficient, e.g. "
            f"{{'switch': 0.01}}; got {describe(balance)}"
        )
    checked: dict[str, float] = {}
    for kind, value in balance.items():
        check_choice(kind, f"balancing type in `balance` of {owner}", BALANCE_TYPES)
        what = "update rate" if kind == "bias" else "coefficient"
        checked[kind] = check_finite_float(
            value, f"{what} of {kind!r} in `balance` of {owner}", min_value=0.0
        )
    return checked


def all_reduce_counts(counts: Tensor, group: Any = None) -> Tensor:
    """Sum ``counts`` over the processes of ``group`` when ``torch.distributed`` is running.

    Returns a new tensor (the input is left alone); without an initialized process group it is
    a copy of the input, so single-process code pays nothing but the copy.
    """
    total = counts.clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return total


@torch.no_grad()
def update_expert_bias(bias: Tensor, counts: Tensor, rate: float) -> None:
    """Aux-loss-free balancing (DeepSeek-V3): ``b_i += rate * sign(mean_load - load_i)``.

    Runs on the device with no host read; an expert with exactly the mean load (or a step with
    no tokens at all) keeps its bias.

    Example:
        >>> bias = torch.zeros(3)
        >>> update_expert_bias(bias, torch.tensor([6, 2, 4]), 0.1)
        >>> bias
        tensor([-0.1000,  0.1000,  0.0000])
    """
    load = counts.to(torch.float32)
    bias.add_(torch.sign(load.mean() - load), alpha=rate)
