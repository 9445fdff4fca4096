"""``Static``: a constant multiplier per loss (hand-tuned weights, by name or pattern)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from multiloss._validation import check_finite_float, check_loss_name, describe
from multiloss.balancing.base import _to_device
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.weighting import LossWeighting

__all__ = ["Static"]


class Static(LossWeighting):
    """Multiply each balanced loss by a constant: ``sum_i static_i * weight_i * loss_i``.

    Args:
        weights: Loss name or glob pattern (``"*/balance"``) -> finite multiplier. An exact
            name wins over a pattern; among patterns, the first listed that matches wins.
            Negative maximizes.
        default: Multiplier of balanced losses that nothing in ``weights`` matches.
        balance: The losses to balance (names or glob patterns); default all.

    Raises:
        ValueError: An exact name in ``weights`` is not a balanced loss (a typo would otherwise
            be silently ignored; a pattern may match nothing).

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor(1.0))
        >>> Static({"depth": 0.5, "aux/*": 0.25}).backward({"depth": w, "aux/edge": w, "seg": w})
        {'aux/edge': 0.25, 'depth': 0.5, 'seg': 1.0}
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        *,
        default: float = 1.0,
        balance: str | Iterable[str] | None = None,
    ) -> None:
        super().__init__(balance=balance)
        if not isinstance(weights, Mapping):
            raise TypeError(f"`weights` of Static must be a mapping; got {describe(weights)}")
        self.weights = {
            check_loss_name(key, "each key of `weights` of Static"): check_finite_float(
                value, f"`weights[{key!r}]` of Static"
            )
            for key, value in weights.items()
        }
        self.default = check_finite_float(default, "`default` of Static")
        self._cache: tuple[tuple[str, ...], torch.device, Tensor] | None = None

    def resolve(self, names: Iterable[str]) -> dict[str, float]:
        """The multiplier of each of ``names``."""
        names = list(names)
        used: set[str] = set()
        out: dict[str, float] = {}
        for name in names:
            if name in self.weights:
                out[name] = self.weights[name]
                used.add(name)
                continue
            out[name] = self.default
            for key, value in self.weights.items():
                if key not in names and fnmatch.fnmatchcase(name, key):
                    out[name] = value
                    used.add(key)
                    break
        unused = [key for key in self.weights if key not in used and not set(key) & set("*?[")]
        if unused:
            raise ValueError(
                f"`weights` of Static names {unused} but no balanced loss matches; the "
                f"balanced losses are {names}"
            )
        return out

    def factors(self, ctx: BalanceContext) -> Tensor:
        cached = self._cache
        if cached is None or cached[0] != ctx.names or cached[1] != ctx.device:
            resolved = self.resolve(ctx.names)
            vector = _to_device([resolved[name] for name in ctx.names], ctx.device)
            self._cache = cached = (ctx.names, ctx.device, vector)
        return cached[2]

    def hyperparameters(self) -> dict[str, object]:
        fields: dict[str, object] = {"weights": self.weights}
        if self.default != 1.0:
            fields["default"] = self.default
        return fields
