"""Lists: several losses minimized jointly; only the ports named are trained.

The three-head digits model of ``spec_automatic.py``, trained on two of its outputs only: the
digit (an explicit ``Attach``) and the parity (``Automatic`` for that one port). The ``ink``
head is named by no term, so it gets no gradient: its weights come out of training unchanged.

    PYTHONPATH=src python examples/spec_list.py
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

import multiloss as ml
from multiloss.losses import CrossEntropy
from multiloss.spec import Attach, Automatic
from spec_automatic import DigitsDicts, ThreeHeads


def main(steps: int = 300, quiet: bool = False) -> dict[str, float]:
    torch.manual_seed(0)
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16.0, dtype=torch.float32)
    y = torch.tensor(labels)
    loader = DataLoader(DigitsDicts(x[:1500], y[:1500]), batch_size=64, shuffle=True)

    model = ThreeHeads()
    ink_before = model.ink.weight.detach().clone()
    spec = [Attach("digit", CrossEntropy(class_dim=-1)), Automatic("is_even")]
    trainer = ml.Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=3e-3),
        losses=spec,
        sinks=[] if quiet else None,
    )
    history = trainer.fit(loader, steps=steps)
    with torch.no_grad():
        out = model(x[1500:])
    results = {
        "digit accuracy": float((out["digit"].argmax(1) == y[1500:]).float().mean()),
        "even accuracy": float(((out["is_even"] > 0.5) == (y[1500:] % 2 == 0)).float().mean()),
        "ink head unchanged": float(torch.equal(model.ink.weight, ink_before)),
    }
    print("trained losses:", sorted(history.losses()))
    for key, value in results.items():
        print(f"{key}: {value:.3f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
