"""Sequence-wise balancing with padding: each digit image is a sequence of 16 tokens.

Each 8x8 digit becomes 16 tokens of 4 pixels (half rows); a random number (0 to 8) of the last
tokens of each image is padding, marked by the mask, so sequences have different lengths. A
residual MoE block (8 experts, top-2) routes every token; a masked mean over real tokens feeds
a linear head. Three runs from the same initialization: no balancing, the batch-level
``switch`` loss, and DeepSeek-V3's per-sequence ``sequence`` loss. The script prints, on the
test set: the cv of expert load over the whole batch and the mean cv inside each sequence
(what the sequence loss targets), the accuracy, and checks that padding tokens took no part in
the counts.

    PYTHONPATH=src python examples/moe_sequence.py [--steps 400] [--compile]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import multiloss as ml
from multiloss.demo.data import load_digits_data
from multiloss.layers import MixtureOfExperts

TOKENS, PIXELS, EXPERTS = 16, 4, 8


class SequenceMoE(nn.Module):
    def __init__(self, balance: dict[str, float], width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Linear(PIXELS, width)
        self.position = nn.Parameter(torch.zeros(TOKENS, width))
        self.moe = MixtureOfExperts(width, 64, EXPERTS, 2, balance=balance)
        self.head = nn.Linear(width, 10)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        h = F.relu(self.embed(x.view(-1, TOKENS, PIXELS)) + self.position)  # (B, 16, width)
        h = h + self.moe(h, mask)
        weights = mask.to(h.dtype)[..., None]
        pooled = (h * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        logits: torch.Tensor = self.head(pooled)
        return logits if y is None else {"cls": F.cross_entropy(logits, y)}


def random_mask(count: int, generator: torch.Generator) -> torch.Tensor:
    lengths = TOKENS - torch.randint(0, 9, (count,), generator=generator)
    return torch.arange(TOKENS)[None] < lengths[:, None]


def per_sequence_cv(layer: MixtureOfExperts) -> float:
    cache = layer._aux_cache  # the last call's routing (a documented RoutingCache)
    chosen = cache.chosen.view(-1, TOKENS, 2)
    valid = cache.valid.view(-1, TOKENS, 1).expand_as(chosen)
    counts = torch.zeros(chosen.shape[0], EXPERTS).scatter_add_(
        1, chosen.reshape(chosen.shape[0], -1), valid.reshape(chosen.shape[0], -1).float()
    )
    load = counts / counts.sum(1, keepdim=True)
    return float((load.std(1, correction=0) / load.mean(1)).mean())


def train(balance: dict[str, float], steps: int, compile_model: bool) -> tuple[float, ...]:
    torch.manual_seed(0)
    data = load_digits_data(seed=0)
    generator = torch.Generator().manual_seed(0)
    batches = [(x, random_mask(len(x), generator), y) for x, y in data.train]
    model = SequenceMoE(balance)
    net = torch.compile(model, fullgraph=True) if compile_model else model
    trainer = ml.Trainer(
        net, torch.optim.Adam(model.parameters(), lr=3e-3), sinks=[], log_every=steps
    )
    trainer.fit(batches, steps=steps)
    model.eval()
    mask = random_mask(len(data.test_x), generator)
    with torch.no_grad():
        logits = model(data.test_x, mask)
    assert isinstance(logits, torch.Tensor)
    stats = model.moe.aux_loss_diagnostics()
    routed = float(model.moe._aux_cache.routed.sum())
    assert routed == 2 * float(mask.sum()), "padding tokens were counted"
    accuracy = float((logits.argmax(1) == data.test_y).float().mean())
    return stats["cv"], per_sequence_cv(model.moe), accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--compile", action="store_true", help="torch.compile(fullgraph=True)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'balancing':<16} {'batch cv':>9} {'per-sequence cv':>16} {'accuracy':>9}")
    for label, balance in (
        ("none", {}),
        ("switch 0.01", {"switch": 0.01}),
        ("sequence 0.01", {"sequence": 0.01}),
    ):
        batch_cv, sequence_cv, accuracy = train(balance, args.steps, args.compile)
        print(f"{label:<16} {batch_cv:>9.3f} {sequence_cv:>16.3f} {accuracy:>9.1%}")


if __name__ == "__main__":
    main()
