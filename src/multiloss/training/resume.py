"""Saving checkpoints of a training run and resuming from them exactly."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import multiloss
from multiloss._modules import unwrap
from multiloss.training._base import TrainerState
from multiloss.training.checkpoint import find_checkpoints, load_latest, save_checkpoint
from multiloss.training.rng import get_rng_state, set_rng_state
from multiloss.training.state import check_compatible

__all__ = ["CheckpointMixin"]


class CheckpointMixin(TrainerState):
    """What ``Trainer`` saves, and how it restores it."""

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of everything needed to continue exactly.

        Under ``torch.distributed`` every rank must call it (the hook does): each rank's RNG
        state and data position are gathered, and rank 0 writes the file.
        """
        if self.run_dir is None:
            raise ValueError("save_checkpoint() needs a `run_dir`; the trainer has none")
        ranks = self.dist.gather({"rng": get_rng_state(), "data": self._data.state_dict()})
        if not self.dist.is_main:
            return None
        state = self._state()
        state["ranks"] = ranks
        return save_checkpoint(
            self.run_dir / "checkpoints", self.step, state, keep=self.keep_checkpoints
        )

    def _refuse_foreign_checkpoints(self) -> None:
        if self.run_dir is None:
            return
        found = find_checkpoints(self.run_dir / "checkpoints")
        if found:
            raise ValueError(
                f"`run_dir` {self.run_dir} already holds checkpoints of another run (latest "
                f"{found[0].stem}); pass resume=True to continue that run, or use a new run_dir"
            )

    def _state(self) -> dict[str, Any]:
        return {
            "format": 1,
            "multiloss": multiloss.__version__,
            "step": self.step,
            "skipped": self.skipped,
            "model": unwrap(self.net).state_dict(),
            "optimizers": [g.optimizer.state_dict() for g in self.groups],
            "optimizer_types": [type(g.optimizer).__name__ for g in self.groups],
            "schedulers": [
                g.scheduler.state_dict() if g.scheduler is not None else None for g in self.groups
            ],
            "scaler": self.amp.scaler.state_dict() if self.amp.scaler is not None else None,
            "balancer": self.balancer.state_dict() if self.balancer is not None else None,
            "hooks": [hook.state_dict() for hook in self.hooks],
            "world_size": self.dist.world_size,
            # The log period in progress: a resumed run's next row averages the same steps.
            "period": {"metrics": self._metrics.state_dict()},
        }

    def _resume(self) -> Path:
        if self.run_dir is None:
            raise ValueError("resume=True needs a `run_dir` to find checkpoints in")
        state, path = load_latest(self.run_dir / "checkpoints", map_location=self.device)
        target = unwrap(self.net)
        check_compatible(state["model"], target.state_dict(), source=str(path))
        target.load_state_dict(state["model"])
        if self.balancer is not None and state["balancer"] is not None:
            # Before the optimizers: loading creates the balancer's per-loss parameters, whose
            # param group is part of the saved optimizer state.
            self.balancer.load_state_dict(state["balancer"])
            self.balancer.add_parameters_to(self.groups[0].optimizer)
        if len(state["optimizers"]) != len(self.groups):
            raise ValueError(
                f"checkpoint {path} has {len(state['optimizers'])} optimizers; this trainer "
                f"has {len(self.groups)}"
            )
        saved_types = state.get("optimizer_types")  # absent from earlier checkpoints
        for index, (group, opt_state, sched_state) in enumerate(
            zip(self.groups, state["optimizers"], state["schedulers"], strict=True)
        ):
            kind = type(group.optimizer).__name__
            if saved_types is not None and saved_types[index] != kind:
                raise ValueError(
                    f"checkpoint {path} was written with a {saved_types[index]} optimizer "
                    f"(group {group.name!r}); this trainer has a {kind}: resume with the same "
                    "optimizer class, or start a new run_dir"
                )
            try:
                group.optimizer.load_state_dict(opt_state)
            except (KeyError, ValueError) as error:
                raise ValueError(
                    f"the optimizer state in checkpoint {path} does not fit this trainer's "
                    f"{kind} (group {group.name!r}): {error!r}; resume with the optimizer and "
                    "parameter groups the run was started with"
                ) from error
            if group.scheduler is not None and sched_state is not None:
                group.scheduler.load_state_dict(sched_state)
        if self.amp.scaler is not None and state["scaler"] is not None:
            self.amp.scaler.load_state_dict(state["scaler"])
        for hook, hook_state in zip(self.hooks, state["hooks"], strict=False):
            hook.load_state_dict(hook_state)
        self.step = int(state["step"])
        self.skipped = int(state["skipped"])
        period = state.get("period")  # absent from checkpoints of earlier versions
        if period is not None:
            self._metrics.load_state_dict(period["metrics"])
        ranks = state["ranks"]
        if len(ranks) != self.dist.world_size:
            warnings.warn(
                f"checkpoint {path.name} was written by {len(ranks)} process(es) and is resumed "
                f"by {self.dist.world_size}: model, optimizer and schedules are restored, but "
                "the data order and random state cannot continue exactly",
                RuntimeWarning,
                stacklevel=3,
            )
        mine = ranks[self.dist.rank % len(ranks)]
        self._data.load_state_dict(mine["data"])
        set_rng_state(mine["rng"])  # last: skipping batches above may have drawn numbers
        self._checked_weight_keys = True
        return path
