"""AuxiliaryHead: deep supervision speeds up early training of a deep plain network.

A 10-layer tanh MLP without normalization or skip connections (PyTorch's default
initialization, Adam) learns the digits slowly: its early layers get almost
no gradient. An auxiliary classifier tapped onto the 4th hidden layer gives them a short
gradient path. The head lives outside the model (``Tapped``), its weight fades from 1 to 0 with
a cosine schedule over the run, and the deployed model is ``tapped.net``: the original object,
whose ``state_dict`` holds no head parameter. The script prints the test accuracy of the main
output after each epoch, with and without the head, for several seeds.

    PYTHONPATH=src python examples/layers/head.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _digits import digits  # the shared split, beside this script
from torch import nn

import multiloss as ml
from multiloss.layers import AuxiliaryHead, Tapped
from multiloss.schedules import Cosine

DEPTH = 10  # hidden layers
TAP = "7"  # nn.Sequential index of the 4th hidden layer's activation (Linear, Tanh, ...)
BATCH = 32


def deep_plain_net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(DEPTH):
        layers += [nn.Linear(64, 64), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(64, 10))


def run(with_head: bool, data: tuple[torch.Tensor, ...], epochs: int, seed: int) -> list[float]:
    x_train, x_test, y_train, y_test = data
    net = deep_plain_net(seed)
    model: nn.Module = net
    if with_head:
        steps = epochs * -(-len(x_train) // BATCH)
        head = AuxiliaryHead(
            nn.Linear(64, 10), target=1, aux_loss_schedule=Cosine(steps, start=1.0, end=0.0)
        )
        model = Tapped(net, {TAP: head})  # batches are (x, y): the target is item 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    step, accuracies = 0, []
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(len(x_train), generator=generator).split(BATCH):
            x, y = x_train[index], y_train[index]
            with ml.collect(model, step=step, batch=(x, y)) as book:
                book.add("task", F.cross_entropy(model(x), y))
            optimizer.zero_grad()
            book.total().backward()
            optimizer.step()
            step += 1
        net.eval()
        with torch.no_grad():  # the deployed model alone: no head runs
            accuracies.append(float((net(x_test).argmax(1) == y_test).float().mean()))
    if with_head and seed == 0:
        assert isinstance(model, Tapped)
        with ml.collect(model, batch=(x_test, y_test)), torch.no_grad():
            model(x_test)  # one pass with the head, to read its diagnostics on the test set
        head_accuracy = model.taps[TAP].aux_loss_diagnostics()["accuracy"]
        clean = not any(key.startswith("taps") for key in net.state_dict())
        print(
            f"seed 0: the head's own test accuracy {head_accuracy:.2f}; the deployed model is "
            f"the original object: {model.net is net}; no head entry in its state_dict: {clean}"
        )
    return accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread

    start = time.perf_counter()
    curves: dict[bool, list[list[float]]] = {False: [], True: []}
    for seed in range(args.seeds):
        data = digits(seed)
        for with_head in (False, True):
            curves[with_head].append(run(with_head, data, args.epochs, seed))

    print(
        f"{DEPTH}-layer tanh MLP on digits, Adam; test accuracy of the main output per epoch "
        f"(median of {args.seeds} seeds)"
    )
    print(f"{'epoch':<22}" + "".join(f"{epoch:>6}" for epoch in range(1, args.epochs + 1)))
    for with_head, label in ((False, "without head"), (True, "with head (fading)")):
        medians = [
            statistics.median(run[e] for run in curves[with_head]) for e in range(args.epochs)
        ]
        print(f"{label:<22}" + "".join(f"{value:>6.2f}" for value in medians))
    for with_head, label in ((False, "without head"), (True, "with head")):
        reached = [
            next((e + 1 for e, value in enumerate(run) if value >= 0.8), None)
            for run in curves[with_head]
        ]
        shown = ", ".join("never" if e is None else str(e) for e in reached)
        print(f"first epoch at >= 80% test accuracy, {label}: {shown} (per seed)")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
