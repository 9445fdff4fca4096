"""The gradient carrier: balance an MoE router whose loss cannot be returned up the stack.

Pipeline stages and frozen interfaces hand back activations only. With
``gradient_carrier=True`` the layer emits no loss; its balancing gradient rides on the gate
weights instead, scaled by ``set_aux_grad_scale`` (here ``1 / accumulation steps``). This
script trains the digits MoE model twice from the same initialization with a plain loop and
gradient accumulation: once adding the switch loss to the objective, once with the carrier and
the task loss alone. It checks that the first step's gradients agree and prints the expert load
balance and accuracy of both runs.

    PYTHONPATH=src python examples/moe_carrier.py [--steps 300]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import multiloss as ml
from multiloss.demo.data import load_digits_data
from multiloss.demo.moe import DigitsMoE
from multiloss.layers import MixtureOfExperts, set_aux_grad_scale

ACCUMULATE = 4


def build(carrier: bool) -> DigitsMoE:
    torch.manual_seed(0)
    model = DigitsMoE({"switch": 0.01})
    if carrier:  # same weights, carrier on
        state = model.state_dict()
        model.moe = MixtureOfExperts(64, 64, 8, 2, balance={"switch": 0.01}, gradient_carrier=True)
        model.load_state_dict(state)
        set_aux_grad_scale(model, 1.0 / ACCUMULATE)
    return model


def micro_step(model: DigitsMoE, x: torch.Tensor, y: torch.Tensor, carrier: bool) -> None:
    if carrier:  # the stage returns logits only; the balancing gradient is carried
        logits = model(x)
        assert isinstance(logits, torch.Tensor)
        (F.cross_entropy(logits, y) / ACCUMULATE).backward()
        return
    with ml.collect(model) as book:
        losses = model(x, y)
    assert isinstance(losses, dict)
    ((losses["cls"] + book.total()) / ACCUMULATE).backward()


def train(carrier: bool, steps: int) -> tuple[DigitsMoE, list[torch.Tensor]]:
    model = build(carrier)
    data = load_digits_data(seed=0, batch_size=64 // ACCUMULATE)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = iter(())
    first_grads: list[torch.Tensor] = []
    for step in range(steps):
        for _ in range(ACCUMULATE):
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iter(data.train)
                x, y = next(batches)
            micro_step(model, x, y, carrier)
        if step == 0:
            first_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.moe.after_optimizer_step()
    return model, first_grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_digits_data(seed=0)
    results = {}
    for carrier in (False, True):
        model, grads = train(carrier, args.steps)
        model.eval()
        with torch.no_grad():
            logits = model(data.test_x)
        assert isinstance(logits, torch.Tensor)
        stats = model.moe.aux_loss_diagnostics()
        accuracy = float((logits.argmax(1) == data.test_y).float().mean())
        results[carrier] = (grads, stats["cv"], accuracy)
    gap = max(
        float((a - b).abs().max()) for a, b in zip(results[False][0], results[True][0], strict=True)
    )
    print(f"largest gradient difference after the first step: {gap:.2e}")
    for carrier, label in ((False, "loss added to the objective"), (True, "gradient carrier")):
        _, cv, accuracy = results[carrier]
        print(f"{label:<30} cv of expert load {cv:.3f}, test accuracy {accuracy:.1%}")


if __name__ == "__main__":
    main()
