"""Per-step values kept on the device and read once per log period.

Logging must not synchronize the device with the host every step. Each forward pass adds one
stacked, detached vector of raw losses (and the weights used) to the period's list; at the log
period everything is stacked and moved to the host in one transfer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["PeriodMetrics"]

Weight = float | Tensor
Reducer = Callable[[Tensor, Sequence[str]], Tensor]


class PeriodMetrics:
    """Raw losses, weights and recorded metrics of the forward passes since the last read."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, ...], list[tuple[Tensor, Sequence[Weight], float]]] = (
            defaultdict(list)
        )
        self._metrics: dict[str, list[Tensor | float]] = defaultdict(list)
        self._extra: dict[str, Tensor | float] = {}
        self.passes = 0

    def add(
        self, names: tuple[str, ...], raw: Tensor, weights: Sequence[Weight], count: float = 1.0
    ) -> None:
        """One forward pass: ``raw`` is the detached vector of losses in ``names`` order.

        ``count`` weighs the pass in the period's mean (evaluation uses the batch size).
        """
        self._rows[names].append((raw, weights, count))
        self.passes += 1

    def add_metrics(self, metrics: Mapping[str, Tensor | float]) -> None:
        """Recorded diagnostics of one forward pass (averaged over the period)."""
        for name, value in metrics.items():
            self._metrics[name].append(value)

    def set_extra(self, values: Mapping[str, Tensor | float]) -> None:
        """Values read as they are at the log step (aux diagnostics, balancer diagnostics)."""
        self._extra.update(values)

    def read(self, reduce: Reducer | None = None) -> dict[str, float]:
        """Means over the period as floats (one device->host transfer), then reset.

        Keys: ``loss/<name>``, ``weighted/<name>``, ``weight/<name>`` (last weight used),
        ``metric/<name>`` and whatever was passed to :meth:`set_extra`, plus ``total``.

        Args:
            reduce: ``reduce(values, keys)`` applied to the flat vector of values (keys in
                sorted order, the same on every rank): the trainer passes the mean over ranks.
        """
        keys: list[str] = []
        parts: list[Tensor] = []
        for names, rows in self._rows.items():
            raw = torch.stack([row[0].double() for row in rows])  # passes x losses
            weights = torch.stack([_as_vector(row[1], raw.device) for row in rows])
            counts = torch.tensor([row[2] for row in rows], device=raw.device)[:, None]
            share = counts / counts.sum()
            keys += [f"loss/{name}" for name in names]
            keys += [f"weighted/{name}" for name in names]
            keys += [f"weight/{name}" for name in names]
            parts += [(raw * share).sum(0), (raw * weights * share).sum(0), weights[-1]]
        for name, values in self._metrics.items():
            keys.append(f"metric/{name}")
            parts.append(_mean(values))
        for name, value in self._extra.items():
            keys.append(name)
            parts.append(_scalar(value).reshape(1))
        numbers: list[float] = []
        if parts:
            device = parts[0].device
            flat = torch.cat([part.reshape(-1).double().to(device) for part in parts])
            order = sorted(range(len(keys)), key=keys.__getitem__)  # rank-consistent order
            keys = [keys[i] for i in order]
            flat = flat[torch.tensor(order, device=device)]
            if reduce is not None:
                flat = reduce(flat, keys)
            numbers = flat.cpu().tolist()
        result: dict[str, float] = dict(zip(keys, numbers, strict=True))
        weighted = [value for key, value in result.items() if key.startswith("weighted/")]
        if weighted:
            result["total"] = sum(weighted)
        self._rows.clear()
        self._metrics.clear()
        self._extra.clear()
        self.passes = 0
        return result

    def __bool__(self) -> bool:
        return self.passes > 0


def _scalar(value: Tensor | float) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().reshape(()).float()
    return torch.tensor(float(value))


def _as_vector(weights: Sequence[Weight], device: torch.device) -> Tensor:
    if all(not isinstance(weight, Tensor) for weight in weights):
        return torch.tensor([float(w) for w in weights], dtype=torch.float64, device=device)
    return torch.stack([_scalar(weight).to(device, torch.float64) for weight in weights])


def _mean(values: list[Any]) -> Tensor:
    tensors = [_scalar(value) for value in values]
    device = next((t.device for t in tensors if t.device.type != "cpu"), tensors[0].device)
    return torch.stack([t.to(device) for t in tensors]).mean().reshape(1)
