"""Checks on device values that never stall the device.

A balancer must not synchronize the device with the host on the hot path, yet a negative loss
fed to a method that needs positive losses, or a method producing non-finite weights, must stop
training with a clear error. ``DeferredChecks`` resolves that: a failing condition is a boolean
tensor; on the CPU it is read at once (reading a CPU tensor costs nothing), on an accelerator it
is OR-ed into a flag that stays on the device and is read at the next natural sync point (the log
period, ``Balancer.backward``, or an explicit ``Balancer.check()``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["DeferredChecks"]


class DeferredChecks:
    """Failure flags kept on the device until someone reads them.

    Example:
        >>> import torch
        >>> checks = DeferredChecks()
        >>> checks.add("neg", torch.tensor(False), lambda: "never raised")
        >>> checks.add("neg", torch.tensor(True), lambda: "a loss is negative")
        Traceback (most recent call last):
        ...
        ValueError: a loss is negative
    """

    def __init__(self) -> None:
        self._flags: dict[str, tuple[Tensor, Callable[[], str], type[Exception]]] = {}

    def add(
        self,
        key: str,
        failed: Tensor,
        message: Callable[[], str],
        error: type[Exception] = ValueError,
    ) -> None:
        """Record that ``failed`` (a boolean tensor) must be false; raise now if it can be read
        for free, else keep it for :meth:`run`."""
        if failed.device.type == "cpu" and not torch.compiler.is_compiling():
            if bool(failed):
                raise error(message())
            return
        previous = self._flags.get(key)
        flag = failed.detach() if previous is None else previous[0] | failed.detach()
        self._flags[key] = (flag, message, error)

    def run(self) -> None:
        """Read every pending flag (one device sync) and raise the first failure."""
        if not self._flags:
            return
        pending = self._flags
        self._flags = {}
        keys = list(pending)
        values = torch.stack([pending[key][0].reshape(()) for key in keys]).cpu()
        for key, failed in zip(keys, values.tolist(), strict=True):
            if failed:
                _, message, error = pending[key]
                raise error(
                    message() + " (found at a deferred check: on an accelerator the flag "
                    "is read at the log period, so it may have happened a few steps ago)"
                )

    def __len__(self) -> int:
        return len(self._flags)
