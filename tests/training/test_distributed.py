"""Two processes, gloo on CPU: the trainer under torch.distributed (issue 8)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import multiloss as ml
from tests.training import dist_workers
from tests.training.dist_workers import dataset, make_model

pytestmark = pytest.mark.slow


def _single_process_reference(steps: int, balancer: str = "Sum") -> tuple[list, list]:
    """One process on the global batch: rank 0's and rank 1's shards side by side."""
    shards = [
        list(DistributedSampler(dataset(), num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)
    ]
    data = dataset()
    batches = []
    for i in range(steps):
        index = shards[0][8 * i : 8 * i + 8] + shards[1][8 * i : 8 * i + 8]
        batches.append((data.tensors[0][index], data.tensors[1][index]))
    model = make_model()
    chosen = None if balancer == "Sum" else getattr(ml.balancing, balancer)()
    trainer = ml.Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), sinks=[], log_every=2, balancer=chosen
    )
    trainer.fit(batches, steps=steps)
    return [p.detach() for p in model.parameters()], trainer.history.train


BALANCERS = ["Sum", "Normalize", "GradNorm", "MGDA", "UPGrad", "CAGrad", "NashMTL"]


def test_two_processes_match_one_process_on_the_global_batch(tmp_path: Path) -> None:
    """For the weighted sum, a loss-weighting balancer driven by loss values (Normalize), one
    with learned weights and per-loss gradients of the last shared layer (GradNorm), and
    gradient-level methods, whose per-loss gradients on the shared parameters are averaged over
    the ranks before the method combines them (MGDA, UPGrad, CAGrad, Nash-MTL)."""
    dist_workers.spawn(dist_workers.train, tmp_path, BALANCERS, 4)
    for name in BALANCERS:
        ranks = [torch.load(tmp_path / f"result-{name}-{r}.pt", weights_only=False) for r in (0, 1)]
        assert [rank["ddp"] for rank in ranks] == [True, True]  # the trainer wrapped the model
        for a, b in zip(ranks[0]["params"], ranks[1]["params"], strict=True):
            assert torch.equal(a, b), name  # identical parameters on every rank
        reference, reference_rows = _single_process_reference(4, name)
        for ours, theirs in zip(ranks[0]["params"], reference, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)

        # Logs are written once (rank 0), with values equal to the global mean.
        rows = [
            json.loads(line)
            for line in (tmp_path / f"run-{name}" / "metrics.jsonl").read_text().splitlines()
        ]
        assert [row["step"] for row in rows if row["kind"] == "train"] == [2, 4]
        for ours_row, theirs_row in zip(rows, reference_rows, strict=True):
            for key in ("loss/first", "loss/second", "loss/activity", "total"):
                assert ours_row[key] == pytest.approx(theirs_row[key], rel=1e-5), (name, key)
        # Every rank holds the same reduced values (only rank 0 writes them).
        for first, second in zip(ranks[0]["history"], ranks[1]["history"], strict=True):
            for key in first:
                if key.startswith(("loss/", "weighted/", "weight/")):
                    assert first[key] == second[key], (name, key)


def test_nan_on_one_rank_is_handled_alike_on_both(tmp_path: Path) -> None:
    dist_workers.spawn(dist_workers.nonfinite, tmp_path, timeout=90)  # no hang: or it times out
    skip = [torch.load(tmp_path / f"skip-{r}.pt", weights_only=False) for r in (0, 1)]
    assert [o["skipped"] for o in skip] == [1, 1]
    assert [o["step"] for o in skip] == [4, 4]
    raised = [torch.load(tmp_path / f"raise-{r}.pt", weights_only=False) for r in (0, 1)]
    assert [o["step"] for o in raised] == [2, 2]
    assert "on another rank" in raised[0]["raised"]
    assert "'second' = nan" in raised[1]["raised"]


def test_kill_and_resume_under_two_processes_is_bit_identical(tmp_path: Path) -> None:
    dist_workers.spawn(dist_workers.resumable, tmp_path, "reference", None, False)

    # Kill both ranks with SIGKILL after step 8 (checkpoint at 5), then resume.
    context = dist_workers.start(dist_workers.resumable, tmp_path, "killed", 8, False)
    deadline = time.monotonic() + 120
    try:
        while not all((tmp_path / f"ready-{r}").exists() for r in (0, 1)):
            assert all(p.is_alive() for p in context.processes), "a rank died before step 8"
            assert time.monotonic() < deadline, "the training processes never reached step 8"
            time.sleep(0.05)
    finally:
        for process in context.processes:
            os.kill(process.pid, signal.SIGKILL)
            process.join(timeout=30)
    assert all(p.exitcode == -signal.SIGKILL for p in context.processes)

    dist_workers.spawn(dist_workers.resumable, tmp_path, "killed", None, True)
    for rank in (0, 1):
        ours = torch.load(tmp_path / f"killed-resumed-{rank}.pt", weights_only=False)
        theirs = torch.load(tmp_path / f"reference-done-{rank}.pt", weights_only=False)
        for a, b in zip(ours["params"], theirs["params"], strict=True):
            assert torch.equal(a, b)
        assert torch.equal(ours["rng"], theirs["rng"])
        assert str(ours["optimizer"]) == str(theirs["optimizer"])


def test_sharding_gives_each_rank_its_part_and_sets_epochs() -> None:
    from multiloss.training.distributed import DistContext
    from multiloss.training.sharding import shard

    loader = DataLoader(dataset(), batch_size=8, shuffle=True)
    assert shard(loader, DistContext()) is loader  # one process: unchanged
    sharded = shard(loader, DistContext(rank=1, world_size=2))
    assert isinstance(sharded.sampler, DistributedSampler)
    assert sharded.sampler.rank == 1
    assert sharded.sampler.shuffle
    assert len(sharded) == 4


def test_moe_global_counts_and_bias_see_every_rank_and_micro_batch(tmp_path: Path) -> None:
    steps = 3
    dist_workers.spawn(dist_workers.moe_train, tmp_path, steps)
    ranks = [torch.load(tmp_path / f"moe-{r}.pt", weights_only=False) for r in (0, 1)]
    assert torch.equal(ranks[0]["bias"], ranks[1]["bias"])  # identical on every rank
    assert ranks[0]["bias"].abs().sum() > 0  # the bias did move

    # One process, each micro-batch the union of the two ranks' micro-batches: same counts.
    shards = [
        list(DistributedSampler(dataset(), num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)
    ]
    data = dataset()
    micro = []
    for i in range(2 * steps):
        index = shards[0][4 * i : 4 * i + 4] + shards[1][4 * i : 4 * i + 4]
        micro.append((data.tensors[0][index], data.tensors[1][index]))
    model = dist_workers.make_moe()
    trainer = ml.Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), sinks=[], accumulate=2, log_every=steps
    )
    trainer.fit(micro, steps=steps)
    torch.testing.assert_close(ranks[0]["bias"], model.moe.expert_bias)
    for ours, theirs in zip(ranks[0]["params"], model.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-6)
    assert ranks[0]["history"][-1]["loss/moe/global"] == pytest.approx(
        trainer.history.last()["loss/moe/global"], rel=1e-5
    )
