"""``explain(model, spec, batch)``: which loss goes to which port, and why."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import torch
from torch import nn

from multiloss._modules import unwrap
from multiloss._validation import describe
from multiloss.spec.base import SpecLike
from multiloss.spec.term import describe_loss
from multiloss.spec.training_net import TrainingNet, find_training_net

__all__ = ["ExplainedLoss", "Explanation", "explain"]


@dataclass(frozen=True)
class ExplainedLoss:
    """One loss of a spec, explained.

    Attributes:
        name: The reported name.
        port: The output port it reads.
        loss: The loss applied, in words (``"the output itself"`` for a port that is a loss).
        target: The batch key of the target, or None.
        weight: The scale at the explained step (negative: maximized).
        rule: ``"port"``, ``"attach"``, or the Automatic rule that fired.
        reason: Why this loss, in words.
        values: The loss value(s) on the explained batch, by reported name.
        term: The spec term, in spec syntax.
    """

    name: str
    port: str
    loss: str
    target: str | None
    weight: float
    rule: str
    reason: str
    values: dict[str, float]
    term: str


class Explanation(list[ExplainedLoss]):
    """The explained losses of a spec, as a list; ``str()`` gives the printed table."""

    def __init__(self, rows: Sequence[ExplainedLoss], *, model: str, step: int) -> None:
        super().__init__(rows)
        self.model = model
        self.step = step

    def by_port(self) -> dict[str, list[ExplainedLoss]]:
        """Port -> the losses attached to it."""
        ports: dict[str, list[ExplainedLoss]] = {}
        for row in self:
            ports.setdefault(row.port, []).append(row)
        return ports

    def __str__(self) -> str:
        header = ("loss", "port", "attached", "target", "weight", "value")
        table = [header]
        for row in self:
            if len(row.values) == 1:
                value = ", ".join(f"{v:.4g}" for v in row.values.values())
            else:  # the parts of a loss with several outputs, by their own names
                value = ", ".join(
                    f"{key.removeprefix(row.name + '/')}={v:.4g}" for key, v in row.values.items()
                )
            target = f"batch[{row.target!r}]" if row.target is not None else "-"
            table.append((row.name, row.port, row.loss, target, f"{row.weight:g}", value))
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        lines = [f"Losses of {self.model} at step {self.step}:"]
        for index, line in enumerate(table):
            lines.append(
                "  "
                + "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            )
            if index:
                row = self[index - 1]
                lines.append(f"    [{row.rule}] {row.reason}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Explanation({list.__repr__(self)})"


def explain(
    model: nn.Module,
    spec: SpecLike | None = None,
    batch: Any = None,
    *,
    inputs: str | Sequence[str] | None = None,
    file: TextIO | None = None,
    quiet: bool = False,
) -> Explanation:
    """Print which loss is attached to which output port and why; return it as data.

    Runs the model once on ``batch`` (with gradients on, so the autograd graph can be read;
    no backward, but modules that update state in ``forward``, such as batch norm in training
    mode, do so as usual).

    Args:
        model: A model, or a training net from ``attach`` (its spec and plan are used).
        spec: The spec (default ``Automatic``); leave it out for a training net.
        batch: One batch, as the data loader yields it.
        inputs: As in :func:`~multiloss.spec.attach`.
        file: Where to print (default: standard output).
        quiet: Return the explanation without printing it.

    Example:
        >>> import torch
        >>> from multiloss.spec import explain
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LogSoftmax(dim=1))
        >>> batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
        >>> [(row.port, row.loss, row.rule) for row in explain(model, batch=batch, quiet=True)]
        [('output', 'NLL()', 'log_probabilities/index')]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` of explain() must be an nn.Module (a model or a training net from "
            f"attach()); got {describe(model)}"
        )
    if batch is None:
        raise ValueError("`batch` of explain() is required: the rules read the outputs it gives")
    found = find_training_net(model)
    if found is not None:
        net = found
        if spec is not None:
            raise ValueError(
                "explain() got a training net and a spec; a training net has its spec already"
            )
    else:
        net = TrainingNet(model, spec if spec is not None else _default_spec(), inputs=inputs)
    with torch.enable_grad():
        out = net(batch)
    step = net.current_step()
    rows = []
    for item in net.plan or ():
        values = {
            name: float(value.detach())
            for name, value in out.items()
            if name == item.name or name.startswith(f"{item.name}/")
        }
        rows.append(
            ExplainedLoss(
                name=item.name,
                port=item.port,
                loss="the output itself" if item.loss is None else describe_loss(item.loss),
                target=item.target,
                weight=item.weight(step),
                rule=item.rule,
                reason=item.reason,
                values=values,
                term=item.term.describe(),
            )
        )
    explanation = Explanation(rows, model=type(unwrap(net.net)).__name__, step=step)
    if not quiet:
        print(explanation, file=file if file is not None else sys.stdout)
    return explanation


def _default_spec() -> SpecLike:
    from multiloss.spec.forms import Automatic

    return Automatic
