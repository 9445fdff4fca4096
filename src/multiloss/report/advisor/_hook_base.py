"""A stand-in for ``multiloss.training.Hook`` until the trainer lands (docs/contracts.md §5)."""

from __future__ import annotations

from typing import Any

__all__ = ["Hook"]


class Hook:
    """The hook contract: the trainer sets ``trainer`` and calls these at its events."""

    trainer: Any

    def before_train(self) -> None:
        """Called once before the first step."""

    def after_train(self) -> None:
        """Called once after the last step."""

    def before_step(self) -> None:
        """Called before each optimizer step."""

    def after_step(self) -> None:
        """Called after each optimizer step."""

    def on_log(self, record: dict[str, float]) -> None:
        """Called with each train or validation row written to the log."""

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state from ``state_dict``."""
