"""Run by test_resume.py in a subprocess: train, optionally stall (to be killed), save result.

usage: resume_script.py RUN_DIR OUT_FILE [--resume] [--stall-at STEP] [--accumulate N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path[:0] = [
    str(Path(__file__).resolve().parents[2] / "src"),
    str(Path(__file__).resolve().parents[2]),
]

import multiloss as ml  # noqa: E402
from tests.training.models import Dropper  # noqa: E402


class Stall(ml.Hook):
    """Signal readiness at a step, then hang until the parent kills the process."""

    def __init__(self, step: int, ready: Path) -> None:
        self.step = step
        self.ready = ready

    def after_step(self) -> None:
        if self.trainer.step == self.step:
            self.ready.write_text("ready")
            while True:
                time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--stall-at", type=int, default=None)
    parser.add_argument("--accumulate", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(96, 4), torch.randn(96))
    loader = DataLoader(
        data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    model = Dropper()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.9)
    hooks = []
    if args.stall_at is not None:
        hooks.append(Stall(args.stall_at, Path(args.run_dir) / "ready"))
    trainer = ml.Trainer(
        model,
        optimizer,
        scheduler=scheduler,
        run_dir=args.run_dir,
        checkpoint_every=7,
        log_every=5,
        hooks=hooks,
        sinks=None,
        accumulate=args.accumulate,
    )
    trainer.fit(loader, steps=30, resume=args.resume)
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
