"""The data stream: batches across epochs, with a position that a checkpoint can restore.

Resuming must continue with exactly the batch that would have come next. For a shuffling
``DataLoader`` the order of an epoch is drawn from the global RNG when the epoch's iterator
starts, so the stream records the RNG state at the start of each epoch; on resume it restores
that state, starts the epoch's iterator again (same permutation), and skips the batches already
consumed. Samplers with ``set_epoch`` (``DistributedSampler``) get the epoch number each epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from multiloss._validation import describe
from multiloss.training.rng import get_rng_state, set_rng_state

__all__ = ["DataStream", "check_batches"]


def _set_epoch(data: Any, epoch: int) -> None:
    for owner in (getattr(data, "sampler", None), getattr(data, "batch_sampler", None), data):
        set_epoch = getattr(owner, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
            return


def check_batches(data: Any, what: str) -> None:
    """TypeError naming ``what`` unless ``data`` is an iterable of batches (a string, bytes or
    a single tensor iterate too, but are not batches)."""
    if isinstance(data, str | bytes | Tensor) or not isinstance(data, Iterable):
        raise TypeError(
            f"{what} must be an iterable of batches (a DataLoader, a list of batches); got "
            f"{describe(data)}"
        )


class DataStream:
    """Yields batches over repeated passes of ``data`` and knows where it is.

    Args:
        data: Any re-iterable of batches (a ``DataLoader``, a list of batches, ...). A one-shot
            iterator (a generator) is accepted and gives a single epoch.
        max_epochs: Stop (``StopIteration``) instead of starting epoch number ``max_epochs``.
    """

    def __init__(self, data: Iterable[Any], *, max_epochs: int | None = None) -> None:
        check_batches(data, "`data`")
        self.data = data
        self.max_epochs = max_epochs
        self.epoch = 0  # epochs completed
        self.position = 0  # batches consumed in the current epoch
        self.one_shot = isinstance(data, Iterator)
        try:
            self.length: int | None = len(data)  # type: ignore[arg-type]
        except TypeError:
            self.length = None
        if self.length == 0:
            raise ValueError("`data` is empty: it has length 0")
        self._iterator: Iterator[Any] | None = None
        self._epoch_rng: dict[str, Any] | None = None
        self._loader_rng: torch.Tensor | None = None

    def _generator(self) -> torch.Generator | None:
        generator = getattr(self.data, "generator", None)
        return generator if isinstance(generator, torch.Generator) else None

    def _start_epoch(self) -> Iterator[Any]:
        if self.max_epochs is not None and self.epoch >= self.max_epochs:
            raise StopIteration
        if self.one_shot and self.epoch > 0:
            raise StopIteration
        _set_epoch(self.data, self.epoch)
        self._epoch_rng = get_rng_state()
        generator = self._generator()
        self._loader_rng = generator.get_state() if generator is not None else None
        self._iterator = iter(self.data)
        self.position = 0
        return self._iterator

    def _finish_epoch(self) -> None:
        self.epoch += 1
        self.position = 0
        self._iterator = None

    def next(self) -> Any:
        """The next batch.

        Raises:
            StopIteration: ``max_epochs`` epochs are done, or a one-shot iterator is exhausted.
            ValueError: The data yielded no batch at all in an epoch.
        """
        iterator = self._iterator if self._iterator is not None else self._start_epoch()
        try:
            batch = next(iterator)
        except StopIteration:
            if self.position == 0:
                raise ValueError(f"`data` yielded no batch in epoch {self.epoch}") from None
            # An epoch end found only by running out (data without a length).
            self._finish_epoch()
            iterator = self._start_epoch()
            try:
                batch = next(iterator)
            except StopIteration:
                raise ValueError(f"`data` yielded no batch in epoch {self.epoch}") from None
        self.position += 1
        if self.length is not None and self.position >= self.length:
            # Known length: close the epoch now, so stopping at an epoch boundary never starts
            # (and draws random numbers for) an epoch that will not be used.
            self._finish_epoch()
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Where the stream is: epoch, position in it, and the RNG states the epoch began with."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "epoch_rng": self._epoch_rng if self.position else None,
            "loader_rng": self._loader_rng if self.position else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Return to a saved position: replay the epoch's shuffle and skip consumed batches.

        The global RNG is left as the epoch start had it; the caller then restores the RNG
        state saved with the checkpoint.
        """
        self.epoch = int(state["epoch"])
        position = int(state["position"])
        self._iterator = None
        self.position = 0
        if position == 0:
            return
        if state["epoch_rng"] is None:
            raise ValueError("the saved data position has no epoch RNG state; cannot resume")
        set_rng_state(state["epoch_rng"])
        generator = self._generator()
        if generator is not None and state["loader_rng"] is not None:
            generator.set_state(state["loader_rng"])
        iterator = self._start_epoch()
        for skipped in range(position):
            try:
                next(iterator)
            except StopIteration:
                raise ValueError(
                    f"cannot resume at batch {position} of epoch {self.epoch}: the data now "
                    f"yields only {skipped} batches per epoch; resume with the same data"
                ) from None
        self.position = position
