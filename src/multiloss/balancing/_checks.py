"""Checks on device values that never stall the device.

A balancer must not synchronize the device with the host on the hot path, yet a negative loss
fed to a method that needs positive losses, or a method producing non-finite weights, must stop
training with a clear error. ``DeferredChecks`` resolves that: a failing condition is a boolean
tensor; on the CPU it is read at once (reading a CPU tensor costs nothing), on an accelerator it
is OR-ed into a flag that stays on the device and is read at the next natural sync point (the log
period, ``Balancer.backward``, or an explicit ``Balancer.check()``).

The checks of the arguments of ``apply``/``backward`` live here too (``check_scale``,
``check_shared``, ``check_representation``): cheap on the common case, and a tensor ``scale``
is only read where reading it is free.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from multiloss._validation import describe

__all__ = ["DeferredChecks", "check_representation", "check_scale", "check_shared"]


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


def check_scale(scale: Any, where: str) -> float | Tensor:
    """``scale`` of ``apply``/``backward``: a finite number > 0, or a 0-dim floating-point
    tensor (the AMP loss scale, on the device). A tensor's value is checked on the CPU only,
    where reading it is free; on an accelerator it would wait for the device.

    Example:
        >>> check_scale(0.5, "Sum.apply")
        0.5
        >>> check_scale(float("nan"), "Sum.apply")
        Traceback (most recent call last):
        ...
        ValueError: `scale` of Sum.apply must be a finite float > 0; got nan
    """
    if type(scale) is float and 0.0 < scale < math.inf:  # the common case, checked cheaply
        return scale
    what = f"`scale` of {where}"
    if isinstance(scale, Tensor):
        if not scale.dtype.is_floating_point:
            raise TypeError(
                f"{what} must be a finite float > 0 or a 0-dim floating-point tensor; got a "
                f"tensor of dtype {scale.dtype}"
            )
        if scale.dim() != 0:
            raise ValueError(
                f"{what} must be a finite float > 0 or a 0-dim floating-point tensor; got "
                f"{describe(scale)}"
            )
        if scale.device.type == "cpu" and not torch.compiler.is_compiling():
            value = float(scale)
            if not 0.0 < value < math.inf:
                raise ValueError(f"{what} must be finite and > 0; got tensor({value})")
        return scale
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(
            f"{what} must be a finite float > 0 or a 0-dim floating-point tensor; got "
            f"{describe(scale)}"
        )
    value = float(scale)
    if not 0.0 < value < math.inf:
        raise ValueError(f"{what} must be a finite float > 0; got {value}")
    return value


def check_shared(shared: Any, where: str) -> tuple[Tensor, ...] | None:
    """``shared`` of ``apply``/``backward``: None, or a sequence of tensors that require grad."""
    if shared is None:
        return None
    what = f"`shared` of {where} must be a sequence of tensors that require grad"
    if isinstance(shared, str | bytes | Tensor | Mapping) or not isinstance(shared, Iterable):
        hint = " (put a single tensor in a list)" if isinstance(shared, Tensor) else ""
        raise TypeError(f"{what}{hint}; got {describe(shared)}")
    items = tuple(shared)
    for position, item in enumerate(items):
        if not isinstance(item, Tensor):
            raise TypeError(
                f"{what}; got {describe(shared)}, whose item {position} is {describe(item)}"
            )
        if not item.requires_grad:
            raise ValueError(
                f"{what}; item {position} of it does not require grad: {describe(item)}"
            )
    return items


def check_representation(representation: Any, where: str) -> Tensor | None:
    """``representation`` of ``apply``/``backward``: None or a tensor."""
    if representation is None or isinstance(representation, Tensor):
        return representation
    raise TypeError(
        f"`representation` of {where} must be a tensor (the shared features the losses are "
        f"computed from, with their graph) or None; got {describe(representation)}"
    )


def bounds_per_loss(
    lower_bound: float | Mapping[str, float], names: Sequence[str], owner: str
) -> list[float]:
    """A method's ``lower_bound`` (a float, or loss name -> float, others 0) as one bound per
    balanced loss; a name that is not a balanced loss is an error (a typo would otherwise be
    ignored and the bound silently 0).

    Example:
        >>> bounds_per_loss({"b": -1.0}, ["a", "b"], "FAMO")
        [0.0, -1.0]
    """
    if not isinstance(lower_bound, Mapping):
        return [float(lower_bound)] * len(names)
    unknown = sorted(set(lower_bound) - set(names))
    if unknown:
        raise ValueError(
            f"`lower_bound` of {owner} names {unknown} but the balanced losses are {list(names)}"
        )
    return [float(lower_bound.get(name, 0.0)) for name in names]
