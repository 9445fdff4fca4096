"""No device-to-host synchronization in forward or backward (checked structurally on CPU).

On an accelerator a sync is any op whose result size or Python value depends on device data:
reading a scalar (``.item()``, ``bool(t)``, ``.tolist()``), ``nonzero``, boolean-mask
indexing, ``bincount``, ``unique``, ``repeat_interleave`` with tensor repeats, ... On CPU these
run without a sync, so the test records every aten op of a forward and backward pass and fails
on any from that family, and turns the Python-level readers into errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import multiloss as ml
from multiloss.layers import MixtureOfExperts

# aten ops that read device data on the host or size their output from it.
SYNCING = {
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "bincount",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "repeat_interleave.Tensor",
    "index.Tensor_bool",
}


class RecordOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func._schema.name.split("::")[-1]
        overload = func._overloadname
        self.ops.append(name if overload == "default" else f"{name}.{overload}")
        if name == "index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None
        ):
            self.ops.append("index.Tensor_bool")
        return func(*args, **(kwargs or {}))


@contextmanager
def host_reads_forbidden() -> Iterator[None]:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("host read of a tensor value during forward/backward")

    saved = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__bool__")}
    for name in saved:
        setattr(torch.Tensor, name, forbidden)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


CONFIGS = [
    {"balance": {"switch": 0.01, "z": 0.001, "sequence": 0.01, "global": 0.01, "bias": 1e-3}},
    {"backend": "blocked", "score": "sigmoid"},
    {"capacity_factor": 1.0},
    {"capacity_factor": 0.5, "drop_policy": "position"},
    {"gradient_carrier": True, "balance": {"switch": 0.01, "z": 0.001}},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(c))
def test_forward_and_backward_never_read_device_values(config: dict[str, Any]) -> None:
    layer = MixtureOfExperts(8, 16, 4, **config)
    x = torch.randn(2, 5, 8, requires_grad=True)
    mask = torch.rand(2, 5) > 0.3
    layer(x, mask)  # warm up lazily initialized torch internals outside the check
    with RecordOps() as recorder, host_reads_forbidden(), ml.collect(layer) as book:
        out = layer(x, mask)
        loss = out.square().mean() + (book.total() if len(book) else 0.0)
        loss.backward()
        layer.after_optimizer_step()  # the bias update and count reduction too
    assert any("backward" in op for op in recorder.ops), "backward ops were not recorded"
    found = sorted(set(recorder.ops) & SYNCING)
    assert not found, f"ops that sync with the host on accelerators: {found}"


def test_the_checker_catches_a_sync() -> None:
    x = torch.randn(6)
    with RecordOps() as recorder:
        x[x > 0].sum()
        torch.bincount(torch.tensor([1, 2]))
    assert {"index.Tensor_bool", "bincount"} <= set(recorder.ops)
    with pytest.raises(AssertionError, match="host read"), host_reads_forbidden():
        x.sum().item()
