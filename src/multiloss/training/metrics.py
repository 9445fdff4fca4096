"""Per-step values kept on the device and read once per log period.

Logging must not synchronize the device with the host every step. Each forward pass adds one
stacked, detached vector of raw losses (and the weights used) to the period's list; at the log
period everything is stacked and moved to the host in one transfer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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

    def state_dict(self) -> dict[str, Any]:
        """The period so far, for a checkpoint (a resumed run's next row then averages the
        same passes as an uninterrupted run's)."""
        return {
            "rows": [(names, list(rows)) for names, rows in self._rows.items()],
            "metrics": {name: list(values) for name, values in self._metrics.items()},
            "extra": dict(self._extra),
            "passes": self.passes,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._rows.clear()
        for names, rows in state["rows"]:
            self._rows[tuple(names)] = [(raw, weights, count) for raw, weights, count in rows]
        self._metrics.clear()
        self._metrics.update({name: list(values) for name, values in state["metrics"].items()})
        self._extra = dict(state["extra"])
        self.passes = int(state["passes"])

    def read(self, reduce: Reducer | None = None, *, reset: bool = True) -> dict[str, float]:
        """Means over the period as floats (one device->host transfer), then reset (unless
        ``reset`` is False: the row written when ``fit`` ends, whose period a later ``fit``
        or a resumed run goes on filling).

        Keys: ``loss/<name>``, ``weighted/<name>``, ``weight/<name>`` (last weight used),
        ``metric/<name>`` and whatever was passed to :meth:`set_extra`, plus ``total``.

        Only tensors travel: each group of passes is stacked once and everything goes to the
        host in one transfer; weights (plain floats, unless a balancer learned them) and the
        averaging stay on the host.

        Args:
            reduce: ``reduce(values, labels)`` applied to the flat vector of values before it
                is read (the trainer passes the mean over ranks). Blocks are ordered by name,
                so every rank lays the vector out alike.
        """
        blocks: list[_Block] = []
        groups: list[
            tuple[tuple[str, ...], list[tuple[Sequence[Weight], float]], _Block, _Block | None]
        ] = []
        for names, rows in self._rows.items():
            key = "\x00".join(names)
            raw = _Block(
                f"loss {key}",
                torch.stack([row[0] for row in rows]).reshape(-1),
                [f"loss/{name}" for _ in rows for name in names],
            )
            blocks.append(raw)
            learned = None
            if any(isinstance(w, Tensor) for row in rows for w in row[1]):
                matrix = torch.stack([_as_vector(row[1], raw.values.device) for row in rows])
                learned = _Block(
                    f"weight {key}",
                    matrix.reshape(-1),
                    [f"weight/{name}" for _ in rows for name in names],
                )
                blocks.append(learned)
            groups.append((names, [(row[1], row[2]) for row in rows], raw, learned))
        result: dict[str, float] = {}
        singles: list[_Block] = []
        for name, values in self._metrics.items():
            tensors = [v for v in values if isinstance(v, Tensor)]
            if len(tensors) == len(values):
                device = tensors[0].device
                stacked = torch.stack([t.detach().reshape(()).to(device) for t in tensors])
                singles.append(_Block(f"metric {name}", stacked, [f"metric/{name}"] * len(values)))
            else:  # floats (or a mix): averaged on the host
                result[f"metric/{name}"] = sum(float(v) for v in values) / len(values)
        for name, value in self._extra.items():
            if isinstance(value, Tensor):
                singles.append(_Block(f"extra {name}", value.detach().reshape(1), [name]))
            else:
                result[name] = float(value)
        blocks += singles
        if blocks:
            blocks.sort(key=lambda block: block.key)
            device = blocks[0].values.device
            flat = torch.cat([block.values.to(device, torch.float64) for block in blocks])
            if reduce is not None:
                flat = reduce(flat, [label for block in blocks for label in block.labels])
            numbers = flat.cpu().tolist()
            offset = 0
            for block in blocks:
                block.numbers = numbers[offset : offset + len(block.labels)]
                offset += len(block.labels)
        for block in singles:
            result[block.labels[0]] = sum(block.numbers) / len(block.numbers)
        result.update(
            _means(
                [
                    (names, passes, raw_block.numbers, learned.numbers if learned else None)
                    for names, passes, raw_block, learned in groups
                ]
            )
        )
        weighted = [value for key, value in result.items() if key.startswith("weighted/")]
        if weighted:
            result["total"] = sum(weighted)
        if reset:
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


@dataclass
class _Block:
    """A run of values that travels to the host in the one transfer of a log period."""

    key: str  # sort key: the same layout on every rank
    values: Tensor  # 1-D
    labels: list[str]  # one per value (the reducer checks them across ranks)
    numbers: list[float] = field(default_factory=list)  # the values, read back


def _means(
    groups: list[
        tuple[
            tuple[str, ...], list[tuple[Sequence[Weight], float]], list[float], list[float] | None
        ]
    ],
) -> dict[str, float]:
    """Count-weighted means of the raw and weighted values, and the last weight, per loss.

    Each group holds the passes that produced one set of names: their raw values (and the
    weights a balancer learned, if any) pass by pass; otherwise each pass's plain float weights.
    A loss present in several groups (it was not emitted every step) is averaged over all the
    passes that had it.
    """
    sums: dict[str, list[float]] = {}  # name -> [raw sum, weighted sum, count, last weight]
    for names, rows, raw, learned in groups:
        width = len(names)
        for j, name in enumerate(names):
            acc = sums.setdefault(name, [0.0, 0.0, 0.0, 0.0])
            for i, (weights, count) in enumerate(rows):
                weight = learned[i * width + j] if learned is not None else float(weights[j])
                value = raw[i * width + j]
                acc[0] += value * count
                acc[1] += value * weight * count
                acc[2] += count
                acc[3] = weight
    result: dict[str, float] = {}
    for name, (raw_sum, weighted_sum, count, weight) in sums.items():
        result[f"loss/{name}"] = raw_sum / count
        result[f"weighted/{name}"] = weighted_sum / count
        result[f"weight/{name}"] = weight
    return result
