"""Arrays of either kind: tensors (on any device) or float64 NumPy arrays on the host.

The gradient-level solvers are written once, with the operations torch and NumPy share
(``where``, ``amin``, ``argmin``, ``clip``, ``concatenate``, ``linalg.solve``,
``linalg.diagonal``..., looked up in :func:`namespace`), and run on tensors on accelerators and
on NumPy arrays on the CPU (see ``_linalg.py`` for why). These helpers cover what the two spell
differently.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from types import ModuleType
from typing import Any, ClassVar, Literal, TypeAlias

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Array",
    "HostWriter",
    "add_to_grad",
    "arange",
    "copy",
    "eye",
    "float32_list",
    "float32_tensor",
    "floats_on_host",
    "from_host",
    "namespace",
    "solve",
    "to_host",
]

#: A tensor, or a float64 NumPy array on the host.
Array: TypeAlias = Any


def namespace(x: Array) -> ModuleType:
    """``numpy`` for a NumPy array, ``torch`` for a tensor: the module whose functions apply."""
    return np if isinstance(x, np.ndarray) else torch


def to_host(tensor: Tensor) -> np.ndarray:
    """A CPU tensor as a new float64 NumPy array (never a view: solvers may write into it)."""
    return np.array(tensor.detach().to(torch.float64).numpy(), dtype=np.float64, copy=True)


def from_host(value: Array, like: Tensor) -> Tensor:
    """A host result back as a tensor of ``like``'s dtype and device (tensors pass through)."""
    if isinstance(value, Tensor):
        return value.to(dtype=like.dtype, device=like.device)
    return torch.from_numpy(np.ascontiguousarray(value)).to(dtype=like.dtype, device=like.device)


def eye(t: int, *, like: Array) -> Array:
    """The ``t x t`` identity in ``like``'s kind, dtype and device."""
    if isinstance(like, np.ndarray):
        return np.eye(t, dtype=like.dtype)
    return torch.eye(t, dtype=like.dtype, device=like.device)


def arange(t: int, *, like: Array) -> Array:
    """``0 .. t-1`` (integers) on ``like``'s device."""
    if isinstance(like, np.ndarray):
        return np.arange(t)
    return torch.arange(t, device=like.device)


def copy(x: Array) -> Array:
    """A copy that owns its memory."""
    return x.copy() if isinstance(x, np.ndarray) else x.clone()


def solve(matrix: Array, rhs: Array) -> Array:
    """Batched ``matrix^-1 rhs``; on tensors without the singularity check (``solve_ex``), so
    it never synchronizes an accelerator."""
    if isinstance(matrix, np.ndarray):
        try:
            return np.linalg.solve(matrix, rhs)
        except np.linalg.LinAlgError:  # exactly singular (the solvers' ridge makes it rare)
            return np.linalg.pinv(matrix) @ rhs
    solution, _ = torch.linalg.solve_ex(matrix, rhs)
    return solution


def floats_on_host(state: Tensor) -> bool:
    """Whether a method's small per-loss state can be worked on as Python floats and written
    back through memoryviews (:class:`HostWriter`): on the CPU, in float32.

    Example:
        >>> floats_on_host(torch.zeros(3)), floats_on_host(torch.zeros(3, dtype=torch.float64))
        (True, False)
    """
    return state.device.type == "cpu" and state.dtype == torch.float32


def float32_list(values: list[float]) -> list[float]:
    """``values`` rounded to float32, each once, as a float32 tensor operation rounds its result.

    Example:
        >>> float32_list([0.1])[0] == float(torch.tensor(0.1))
        True
    """
    return array("f", values).tolist()


def float32_tensor(values: Sequence[float]) -> Tensor:
    """A new float32 CPU tensor of ``values``, as ``torch.tensor(values, dtype=torch.float32)``
    builds it, at a third of the cost.

    The buffer of an ``array`` becomes the tensor's memory as it is, with no per-element type
    inference. Measured on 2 cores: 1.1 us against 3.5 us in a loop, and 24 us against 43 us
    as the first small operation after a backward pass, when the caches are cold (a training
    step builds a few of these: weights, a closed-form gradient).

    Example:
        >>> float32_tensor([0.5, 2.0])
        tensor([0.5000, 2.0000])
        >>> torch.equal(float32_tensor([0.1]), torch.tensor([0.1], dtype=torch.float32))
        True
    """
    if not values:
        return torch.empty(0, dtype=torch.float32)  # frombuffer refuses an empty buffer
    return torch.frombuffer(array("f", values), dtype=torch.float32)


class HostWriter:
    """Writes Python floats into small CPU tensors in place (a method's per-loss state),
    through memoryviews of their memory kept from one call to the next.

    A training step that updates its state on floats writes a handful of numbers into a few
    buffers. ``tensor.numpy()`` and NumPy's item assignment cost about 25 us there, as the
    first operations after a backward pass (cold caches); the item assignment of a kept
    memoryview costs about 9 us, its check included (2 cores). A view is kept per name and used
    only while it is the same tensor with the same memory: a buffer replaced (``module.to``,
    ``load_state_dict(assign=True)``) or swapped gets a new view. Copies and pickles of the
    owner carry no views (a memoryview cannot be pickled); they make their own.

    Example:
        >>> state = torch.zeros(2)
        >>> writer = HostWriter()
        >>> writer.write("state", state, [0.5, 2.0])
        >>> state
        tensor([0.5000, 2.0000])
        >>> writer.write("state", state, [1.0, 1.0])  # the kept view
        >>> state.tolist()
        [1.0, 1.0]
    """

    _FORMATS: ClassVar[dict[torch.dtype, Literal["f", "d"]]] = {
        torch.float32: "f",
        torch.float64: "d",
    }

    def __init__(self) -> None:
        self._views: dict[str, tuple[Tensor, int, memoryview[float]]] = {}

    def write(self, name: str, tensor: Tensor, values: Sequence[float]) -> None:
        """``tensor.view(-1)[:] = values``, for a contiguous float32 or float64 CPU tensor."""
        kept = self._views.get(name)
        pointer = tensor.data_ptr()
        if kept is None or kept[0] is not tensor or kept[1] != pointer:
            view = self._view(name, tensor)
            self._views[name] = (tensor, pointer, view)
        else:
            view = kept[2]
        for index, value in enumerate(values):
            view[index] = value

    def _view(self, name: str, tensor: Tensor) -> memoryview[float]:
        form = self._FORMATS.get(tensor.dtype)
        if tensor.device.type != "cpu" or form is None or not tensor.is_contiguous():
            raise ValueError(
                f"HostWriter writes contiguous float32 or float64 CPU tensors; {name!r} is "
                f"{tensor.dtype} on {tensor.device}"
                + ("" if tensor.is_contiguous() else ", not contiguous")
            )
        memory: Any = tensor.detach().numpy()  # NumPy arrays are buffers (not typed so)
        return memoryview(memory).cast("B").cast(form)

    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self._views = {}


def add_to_grad(parameter: Tensor, values: list[float]) -> None:
    """``parameter.grad += values`` for a small CPU parameter (a new ``.grad`` if it has none),
    as autograd's accumulation would leave it: for a gradient computed in closed form.

    Example:
        >>> weights = torch.nn.Parameter(torch.ones(2))
        >>> add_to_grad(weights, [0.5, -1.0])
        >>> add_to_grad(weights, [0.5, 0.0])
        >>> weights.grad
        tensor([ 1., -1.])
    """
    grad = parameter.grad
    if parameter.dtype == torch.float32:
        new = float32_tensor(values).view(parameter.shape)
    else:
        new = torch.tensor(values, dtype=parameter.dtype).view(parameter.shape)
    if grad is None:
        parameter.grad = new
    else:
        grad.add_(new)
