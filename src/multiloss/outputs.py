"""``NamedLosses``: raw losses by name, with the weights that combine them.

A model (or a spec's training net) may return a plain ``dict`` of losses, all weighted 1. When
the losses carry weights (a scaled term, a maximized one) it returns ``NamedLosses`` instead:
still a ``dict`` of raw values, so it reads naturally, plus ``weights``. The trainer keeps raw
value and weight apart in its logs, so a maximized loss is shown as itself with weight -1.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from multiloss._validation import check_finite_float, check_loss_name, check_loss_tensor

__all__ = ["NamedLosses"]


class NamedLosses(dict[str, Tensor]):
    """A ``dict`` of raw scalar losses plus a ``weights`` mapping (default 1.0 per loss).

    Args:
        losses: Name -> raw (unweighted) scalar loss.
        weights: Name -> finite weight; names missing here weigh 1.0. Negative maximizes.

    Example:
        >>> import torch
        >>> out = NamedLosses({"nll": torch.tensor(2.0), "entropy": torch.tensor(0.5)},
        ...                   weights={"entropy": -0.1})
        >>> round(float(out.total()), 4)
        1.95
        >>> out.weights
        {'nll': 1.0, 'entropy': -0.1}
    """

    def __init__(
        self, losses: Mapping[str, Tensor], *, weights: Mapping[str, float] | None = None
    ) -> None:
        super().__init__(losses)
        given = dict(weights or {})
        unknown = sorted(set(given) - set(self))
        if unknown:
            raise ValueError(
                f"`weights` of NamedLosses names losses that are not there: {unknown}; "
                f"the losses are {sorted(self)}"
            )
        self.weights: dict[str, float] = {}
        for name, value in self.items():
            check_loss_name(name, "each loss name of NamedLosses")
            check_loss_tensor(value, name, where="NamedLosses")
            self.weights[name] = check_finite_float(
                given.get(name, 1.0), f"`weight` for loss {name!r}"
            )

    def weighted(self) -> dict[str, Tensor]:
        """Name -> weight * raw value."""
        return {name: value * self.weights[name] for name, value in self.items()}

    def total(self) -> Tensor:
        """The sum of weight * value (what is minimized)."""
        if not self:
            raise ValueError("NamedLosses is empty: there is no loss to total")
        values = list(self.weighted().values())
        total = values[0]
        for value in values[1:]:
            total = total + value
        return total

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{name!r}: {self.weights[name]:g}*{value!r}" for name, value in self.items()
        )
        return f"NamedLosses({{{inner}}})"
