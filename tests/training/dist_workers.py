"""Workers for test_distributed.py: each runs in its own process of a 2-process gloo group."""

from __future__ import annotations

import datetime
import gc
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import multiloss as ml


class Shared(nn.Module):
    """A trunk shared by two regression heads, plus an emitted activity penalty."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 16), nn.Tanh())
        self.a = nn.Linear(16, 1)
        self.b = nn.Linear(16, 1)
        self.nan_at: tuple[int, int] | None = None  # (rank, call) that returns NaN
        self.calls = 0

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.trunk(x)
        ml.add_loss("activity", hidden.pow(2).mean(), weight=0.01)
        first = F.mse_loss(self.a(hidden).squeeze(-1), y)
        second = F.mse_loss(self.b(hidden).squeeze(-1), -y)
        rank = dist.get_rank() if dist.is_initialized() else 0
        if self.nan_at == (rank, self.calls):
            second = second * float("nan")
        self.calls += 1
        return {"first": first, "second": second}


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.randn(64, 4, generator=generator), torch.randn(64, generator=generator)
    )


def make_model() -> Shared:
    torch.manual_seed(0)
    return Shared()


def start(worker: Callable[..., None], folder: Path, *args: Any, world: int = 2) -> Any:
    """Start ``worker(rank, world, folder, *args)`` in ``world`` processes; do not wait.

    Every start rendezvouses through a file of its own: a file left by an earlier group (whose
    processes were killed, or had not removed it yet) holds that group's addresses, and a rank
    that reads them tries to connect to a port nobody listens on any more (seen once in CI:
    "failed to connect ... Connection refused", then the rank died).
    """
    rendezvous = folder / f"rendezvous-{uuid.uuid4().hex}"
    return mp.start_processes(
        _entry,
        args=(world, str(folder), str(rendezvous), worker, args),
        nprocs=world,
        join=False,
        start_method="spawn",
    )


def spawn(
    worker: Callable[..., None], folder: Path, *args: Any, world: int = 2, timeout: float = 120.0
) -> None:
    """Run ``worker(rank, world, folder, *args)`` in ``world`` processes; fail on hang or error."""
    context = start(worker, folder, *args, world=world)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"the {world} processes did not finish within {timeout} s")


def _entry(
    rank: int,
    world: int,
    folder: str,
    rendezvous: str,
    worker: Callable[..., None],
    args: tuple[Any, ...],
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{rendezvous}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        worker(rank, world, Path(folder), *args)
        # Tear down only once every rank is done with the group: a rank that destroys its
        # gloo pairs while its peer still has them open makes the peer's C++ threads abort
        # ("terminate called without an active exception", SIGABRT), seen once in CI.
        gc.collect()  # drop DDP reducers that still hold the group before the barrier
        dist.barrier()
    finally:
        dist.destroy_process_group()


def train(rank: int, world: int, folder: Path, balancers: list[str], steps: int) -> None:
    """Train with the trainer's defaults (DDP, sharded loader), once per balancer ("Sum" is
    the trainer's own weighted sum); save params and history."""
    for name in balancers:
        model = make_model()
        loader = DataLoader(dataset(), batch_size=8, shuffle=False)
        balancer = None if name == "Sum" else _balancer(name)
        trainer = ml.Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            sinks=None,
            run_dir=folder / f"run-{name}",
            log_every=2,
            balancer=balancer,
        )
        trainer.fit(loader, steps=steps)
        torch.save(
            {
                "params": [p.detach().clone() for p in model.parameters()],
                "history": trainer.history.train,
                "ddp": trainer._ddp,
            },
            folder / f"result-{name}-{rank}.pt",
        )


def _balancer(name: str) -> Any:
    from multiloss import balancing

    return getattr(balancing, name)()


def nonfinite(rank: int, world: int, folder: Path) -> None:
    """NaN on rank 1 only at its third forward: both ranks must skip, or both must raise."""
    for policy in ("skip", "raise"):
        model = make_model()
        model.nan_at = (1, 2)
        loader = DataLoader(dataset(), batch_size=8)
        trainer = ml.Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            sinks=[],
            nonfinite=policy,
            log_every=100,
        )
        outcome: dict[str, Any] = {}
        try:
            trainer.fit(loader, steps=4)
            outcome["skipped"] = trainer.skipped
        except FloatingPointError as error:
            outcome["raised"] = str(error)
        outcome["step"] = trainer.step
        torch.save(outcome, folder / f"{policy}-{rank}.pt")


class Stall(ml.Hook):
    def __init__(self, step: int, folder: Path) -> None:
        self.step = step
        self.folder = folder

    def after_step(self) -> None:
        if self.trainer.step == self.step:
            (self.folder / f"ready-{self.trainer.dist.rank}").write_text("ready")
            while True:
                time.sleep(1)


def resumable(
    rank: int, world: int, folder: Path, run: str, stall_at: int | None, resume: bool
) -> None:
    """Shuffled, sharded data, dropout, Adam: continue exactly after a kill."""
    torch.manual_seed(rank)  # different RNG per rank: each rank's state must be restored
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    torch.manual_seed(0)
    model.load_state_dict(
        nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1)).state_dict()
    )
    torch.manual_seed(100 + rank)
    loader = DataLoader(
        dataset(), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    hooks = [Stall(stall_at, folder)] if stall_at is not None else []

    def forward(net: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(net(x).squeeze(-1), y)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    trainer = ml.Trainer(
        model,
        optimizer,
        run_dir=folder / run,
        checkpoint_every=5,
        log_every=5,
        hooks=hooks,
        forward=forward,
        sinks=[],
    )
    trainer.fit(loader, steps=16, resume=resume)
    torch.save(
        {
            "params": [p.detach().clone() for p in model.parameters()],
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
        },
        folder / f"{run}-{'resumed' if resume else 'done'}-{rank}.pt",
    )


class MoENet(nn.Module):
    """A regression model around one MoE layer with global and bias balancing."""

    def __init__(self) -> None:
        super().__init__()
        from multiloss.layers import MixtureOfExperts

        self.moe = MixtureOfExperts(4, 8, 4, top_k=2, balance={"global": 0.01, "bias": 0.01})
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.head(self.moe(x)).squeeze(-1), y)


def make_moe() -> MoENet:
    torch.manual_seed(0)
    return MoENet()


def moe_train(rank: int, world: int, folder: Path, steps: int) -> None:
    """Global load balancing and the aux-loss-free bias under DDP with 2 micro-batches."""
    model = make_moe()
    loader = DataLoader(dataset(), batch_size=4, shuffle=False)
    trainer = ml.Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), sinks=[], accumulate=2, log_every=steps
    )
    trainer.fit(loader, steps=steps)
    torch.save(
        {
            "params": [p.detach().clone() for p in model.parameters()],
            "bias": model.moe.expert_bias.clone(),
            "history": trainer.history.train,
        },
        folder / f"moe-{rank}.pt",
    )
