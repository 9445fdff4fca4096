"""Hooks: the trainer's loop knows nothing; everything periodic or optional is a hook.

In the manner of detectron2's ``HookBase``: a hook is registered with the trainer, which sets
``hook.trainer`` and calls its methods at fixed points of the loop. Hooks with state implement
``state_dict`` / ``load_state_dict`` and are saved in checkpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multiloss._validation import check_int

if TYPE_CHECKING:
    from collections.abc import Iterable

    from multiloss.training.trainer import Trainer

__all__ = ["CheckpointHook", "EvalHook", "Hook"]


class Hook:
    """Base class of trainer hooks; override the methods you need.

    Example:
        >>> class PrintLR(Hook):
        ...     def on_log(self, record):
        ...         if record["kind"] == "train":
        ...             print(record["step"], record["lr"])
        >>> PrintLR()
        PrintLR()
    """

    trainer: Trainer

    def before_train(self) -> None:
        """Once, before the first step (after a resume has restored state)."""

    def after_train(self) -> None:
        """Once, after the last step (also when training stops on an error)."""

    def before_step(self) -> None:
        """Before each optimizer step's forward passes."""

    def after_step(self) -> None:
        """After each optimizer step (``trainer.step`` already counts it)."""

    def on_log(self, record: dict[str, Any]) -> None:
        """Each time a train or val row is written to the sinks."""

    def state_dict(self) -> dict[str, Any]:
        """State to save in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EvalHook(Hook):
    """Evaluate on ``data`` every ``every`` steps, or after every epoch; and at the end.

    Args:
        data: Validation batches.
        every: Period in optimizer steps; None evaluates after each epoch instead.
    """

    def __init__(self, data: Iterable[Any], *, every: int | None = None) -> None:
        self.data = data
        self.every = None if every is None else check_int(every, "`val_every`", min_value=1)
        self._last_step = -1

    def _run(self) -> None:
        if self.trainer.step == self._last_step:
            return
        self._last_step = self.trainer.step
        self.trainer.validate(self.data)

    def after_step(self) -> None:
        due = (
            self.trainer.step % self.every == 0
            if self.every is not None
            else self.trainer.epoch_ended
        )
        if due:
            self._run()

    def after_train(self) -> None:
        if self.trainer.completed:
            self._run()

    def __repr__(self) -> str:
        return f"EvalHook(every={self.every})"


class CheckpointHook(Hook):
    """Save a checkpoint every ``every`` steps and at the end of training.

    Registered last, so every other hook's state is saved after its own ``after_step``.
    """

    def __init__(self, every: int | None = None) -> None:
        self.every = None if every is None else check_int(every, "`checkpoint_every`", min_value=1)
        self._last_step = -1

    def _save(self) -> None:
        if self.trainer.step != self._last_step:
            self._last_step = self.trainer.step
            self.trainer.save_checkpoint()

    def after_step(self) -> None:
        if self.every is not None and self.trainer.step % self.every == 0:
            self._save()

    def after_train(self) -> None:
        if self.trainer.completed:
            self._save()

    def __repr__(self) -> str:
        return f"CheckpointHook(every={self.every})"
