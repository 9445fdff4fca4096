"""Trainer overhead (issue 2): ``Trainer.fit`` against a hand-written loop doing the same work.

Both train the same model on the same batches with the same optimizer, three named losses
(a returned task loss, an activity penalty and a second head's loss emitted from inside the
model for the trainer; returned as a tuple for the hand loop), logging every 10 steps (JSON
lines to a file). Also: the cost of collection, a forward pass through 32 modules that each
call ``add_loss``, with the collector open versus closed.

    python benchmarks/bench_trainer.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import multiloss as ml

try:
    from benchmarks._timing import interleave
except ImportError:  # run as a script from the benchmarks folder
    from _timing import interleave  # type: ignore[no-redef]


class ThreeLoss(nn.Module):
    """An MLP trunk with a classification head (returned) and two emitted auxiliary losses."""

    def __init__(self, width: int, depth: int, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, classes)
        self.side = nn.Linear(width, width)
        self.emit = True

    def forward(self, x: torch.Tensor, y: torch.Tensor):  # type: ignore[no-untyped-def]
        hidden = self.trunk(x)
        task = F.cross_entropy(self.head(hidden), y)
        activity = hidden.abs().mean()
        recon = F.mse_loss(self.side(hidden), x)
        if self.emit:
            ml.add_loss("activity", activity, weight=1e-3)
            ml.add_loss("recon", recon, weight=0.5)
            return {"task": task}
        return task, activity, recon


class LossyBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.linear(x))
        ml.add_loss("l2", out.pow(2).mean())
        return out


def _batches(width: int, batch: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(batch, width, generator=generator),
            torch.randint(0, 10, (batch,), generator=generator),
        )
        for _ in range(count)
    ]


def _hand_loop(
    model: ThreeLoss, optimizer: torch.optim.Optimizer, batches: list, steps: int, log: Path
) -> float:
    """Per-step seconds of a plain loop, excluding its first 5 steps (warm-up)."""
    model.emit = False
    with open(log, "a") as handle:
        start = 0.0
        for step in range(steps):
            if step == 5:
                start = time.perf_counter()
            x, y = batches[step % len(batches)]
            task, activity, recon = model(x, y)
            total = task + 1e-3 * activity + 0.5 * recon
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            if (step + 1) % 10 == 0:
                values = torch.stack([task, activity, recon, total]).detach().tolist()
                handle.write(json.dumps({"step": step + 1, "values": values}) + "\n")
                handle.flush()
    return (time.perf_counter() - start) / (steps - 5)


class _StepClock(ml.Hook):
    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.start = 0.0
        self.first = 0

    def before_train(self) -> None:
        self.first = self.trainer.step

    def after_step(self) -> None:
        if self.trainer.step - self.first == self.skip:
            self.start = time.perf_counter()


def _trainer_loop(trainer: ml.Trainer, clock: _StepClock, batches: list, steps: int) -> float:
    trainer.model.emit = True  # type: ignore[assignment]
    trainer.fit(batches, steps=trainer.step + steps)
    return (time.perf_counter() - clock.start) / (steps - clock.skip)


def bench_overhead(width: int, depth: int, batch: int, steps: int, rounds: int) -> dict:
    torch.manual_seed(0)
    batches = _batches(width, batch, 16)
    hand_model = ThreeLoss(width, depth)
    ours_model = ThreeLoss(width, depth)
    ours_model.load_state_dict(hand_model.state_dict())
    hand_opt = torch.optim.Adam(hand_model.parameters(), lr=1e-4)
    ours_opt = torch.optim.Adam(ours_model.parameters(), lr=1e-4)
    folder = Path(tempfile.mkdtemp())
    clock = _StepClock(skip=5)
    trainer = ml.Trainer(
        ours_model,
        ours_opt,
        sinks=[ml.sinks.JSONLSink(folder / "ours.jsonl")],
        hooks=[clock],
        log_every=10,
    )
    medians = interleave(
        {
            "hand": lambda: _hand_loop(hand_model, hand_opt, batches, steps, folder / "hand"),
            "trainer": lambda: _trainer_loop(trainer, clock, batches, steps),
        },
        rounds=rounds,
    )
    return {
        "case": f"fit step, {depth}x{width} MLP, batch {batch}",
        "baseline ms": medians["hand"] * 1e3,
        "ours ms": medians["trainer"] * 1e3,
        "ratio": medians["trainer"] / medians["hand"],
    }


def bench_collection(width: int, blocks: int, batch: int, calls: int, rounds: int) -> list[dict]:
    torch.manual_seed(0)
    model = nn.Sequential(*(LossyBlock(width) for _ in range(blocks)))
    x = torch.randn(batch, width)

    def forward(mode: str) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(calls):
                if mode == "off":
                    model(x)
                elif mode == "root":
                    with ml.collect(model):
                        model(x)
                else:
                    with ml.collect():
                        model(x)
        return (time.perf_counter() - start) / calls

    medians = interleave(
        {mode: (lambda m=mode: forward(m)) for mode in ("off", "root", "rootless")}, rounds=rounds
    )
    rows = []
    for mode, label in (("root", "collect(model)"), ("rootless", "collect()")):
        rows.append(
            {
                "case": f"forward, {blocks} x add_loss, {label}, width {width}, batch {batch}",
                "baseline ms": medians["off"] * 1e3,
                "ours ms": medians[mode] * 1e3,
                "ratio": medians[mode] / medians["off"],
            }
        )
    return rows


def run(quick: bool = False) -> list[dict]:
    """Rows: case, baseline ms, ours ms, ratio (target <= 1.03 / 1.20 / 1.02)."""
    rounds = 3 if quick else 9
    steps = 30 if quick else 120
    rows = [
        bench_overhead(width=512, depth=3, batch=256, steps=steps, rounds=rounds),
        bench_overhead(width=64, depth=1, batch=32, steps=steps * 4, rounds=rounds),
    ]
    rows[0]["target"] = "<= 1.03"
    rows[1]["target"] = "<= 1.20"
    for row in bench_collection(
        width=512, blocks=32, batch=256, calls=5 if quick else 20, rounds=rounds
    ):
        row["target"] = "<= 1.02"
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    for row in run(quick=args.quick):
        print(
            f"{row['case']:<70} {row['baseline ms']:8.3f} ms {row['ours ms']:8.3f} ms "
            f"{row['ratio']:6.3f}  (target {row['target']})"
        )


if __name__ == "__main__":
    main()
