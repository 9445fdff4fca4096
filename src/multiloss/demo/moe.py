"""``multiloss demo --moe``: the digits model with a Mixture-of-Experts layer, balanced or not.

The same model is trained three times from the same seed: without balancing, with the Switch
loss (coefficient 0.01) and with aux-loss-free bias balancing. The per-expert load and the
balance metrics, measured on the test set after training, are printed side by side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import multiloss as ml
from multiloss.demo.data import load_digits_data
from multiloss.layers import MixtureOfExperts

__all__ = ["DEFAULT_RUNS", "DigitsMoE", "MoEDemoResult", "format_balance_table", "run_moe_demo"]

#: The demo's runs: a label and the ``balance`` of the MoE layer.
DEFAULT_RUNS: Mapping[str, Mapping[str, float]] = {
    "no balancing": {},
    "switch 0.01": {"switch": 0.01},
    "bias 1e-3": {"bias": 1e-3},
}
_METRICS = ("cv", "max_vio", "dead_fraction", "router_entropy")


class DigitsMoE(nn.Module):
    """Digits classifier: an embedding, a residual MoE block (8 experts, top-2), a linear head.

    ``forward(x, y)`` returns ``{"cls": cross-entropy}`` (the MoE layer adds its balancing
    terms as ``moe/<type>``); ``forward(x)`` returns logits.

    Example:
        >>> net = DigitsMoE({"switch": 0.01})
        >>> net(torch.rand(3, 64)).shape
        torch.Size([3, 10])
    """

    def __init__(
        self,
        balance: Mapping[str, float],
        *,
        width: int = 64,
        hidden: int = 64,
        experts: int = 8,
        top_k: int = 2,
    ) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(64, width), nn.ReLU())
        self.moe = MixtureOfExperts(width, hidden, experts, top_k, balance=balance)
        self.head = nn.Linear(width, 10)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        h = self.embed(x)  # (batch, width)
        h = h + self.moe(h)
        logits: torch.Tensor = self.head(h)
        if y is None:
            return logits
        return {"cls": F.cross_entropy(logits, y)}


@dataclass
class MoEDemoResult:
    """Per run label: balance metrics and per-expert loads on the test set, and accuracy."""

    diagnostics: dict[str, dict[str, float]]
    accuracy: dict[str, float]
    seconds: float


def format_balance_table(
    diagnostics: Mapping[str, Mapping[str, float]], accuracy: Mapping[str, float]
) -> str:
    """Runs side by side: per-expert load (% of assignments), balance metrics, accuracy."""
    labels = list(diagnostics)
    width = max(14, *(len(label) for label in labels))
    first = next(iter(diagnostics.values()))
    experts = sorted(int(key.split("/")[1]) for key in first if key.startswith("load/"))
    lines = [f"{'':<16}" + "".join(f"{label:>{width + 2}}" for label in labels)]
    for i in experts:
        cells = "".join(f"{diagnostics[label][f'load/{i}']:>{width + 2}.1%}" for label in labels)
        lines.append(f"{f'load/{i}':<16}{cells}")
    for key in _METRICS:
        lines.append(
            f"{key:<16}" + "".join(f"{diagnostics[label][key]:>{width + 2}.3f}" for label in labels)
        )
    lines.append(
        f"{'test accuracy':<16}" + "".join(f"{accuracy[label]:>{width + 2}.1%}" for label in labels)
    )
    return "\n".join(lines)


def _train_once(
    balance: Mapping[str, float], *, steps: int, seed: int, progress: bool
) -> tuple[dict[str, float], float]:
    torch.manual_seed(seed)
    data = load_digits_data(seed=seed)
    model = DigitsMoE(balance)
    sinks: list[ml.sinks.Sink] = [ml.sinks.ProgressBar(disable=False)] if progress else []
    trainer = ml.Trainer(
        model, torch.optim.Adam(model.parameters(), lr=3e-3), sinks=sinks, log_every=steps
    )
    trainer.fit(data.train, steps=steps)
    model.eval()
    with torch.no_grad():  # one pass over the whole test set: its routing is what we report
        logits = model(data.test_x)
    accuracy = float((logits.argmax(dim=1) == data.test_y).float().mean())
    return model.moe.aux_loss_diagnostics(), accuracy


def run_moe_demo(
    *,
    steps: int = 300,
    seed: int = 0,
    runs: Mapping[str, Mapping[str, float]] = DEFAULT_RUNS,
    progress: bool = False,
    echo: Callable[..., Any] = print,
) -> MoEDemoResult:
    """Train :class:`DigitsMoE` once per entry of ``runs`` and print the loads side by side.

    Args:
        steps: Optimizer steps per run.
        seed: Seeds the model, the split and the shuffling (the same for every run).
        runs: Label -> ``balance`` of the MoE layer.
        progress: Show a progress bar per run.
        echo: Where lines are printed.
    """
    echo(
        f"multiloss demo --moe: digits, MixtureOfExperts with 8 experts (top-2), {steps} steps "
        f"per run, {len(runs)} runs: {', '.join(runs)}"
    )
    started = time.perf_counter()
    diagnostics: dict[str, dict[str, float]] = {}
    accuracy: dict[str, float] = {}
    # A 64-wide model gains nothing from intra-op threads, and on a busy machine their
    # spin-waiting barriers can make each step many times slower: use one, then restore.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for label, balance in runs.items():
            diagnostics[label], accuracy[label] = _train_once(
                balance, steps=steps, seed=seed, progress=progress
            )
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - started
    echo("")
    echo("Expert load on the test set after training (share of the top-2 assignments):")
    echo(format_balance_table(diagnostics, accuracy))
    echo("")
    echo(
        "cv: coefficient of variation of the loads (0 = perfect balance); max_vio: (max load - "
        "mean) / mean; dead_fraction: experts that got no token."
    )
    echo(f"{len(runs)} runs in {seconds:.1f} s")
    return MoEDemoResult(diagnostics, accuracy, seconds)
