"""Arrays of either kind: the helpers for what torch and NumPy spell differently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from multiloss.balancing._arrays import (
    HostWriter,
    arange,
    copy,
    eye,
    float32_tensor,
    from_host,
    namespace,
    solve,
    to_host,
)


def test_namespace_is_the_module_of_the_array() -> None:
    assert namespace(np.zeros(2)) is np
    assert namespace(torch.zeros(2)) is torch


def test_array_helpers_keep_the_kind_dtype_and_device() -> None:
    array, tensor = np.zeros(3), torch.zeros(3, dtype=torch.float64)
    assert isinstance(eye(2, like=array), np.ndarray)
    assert eye(2, like=tensor).dtype == torch.float64
    assert arange(3, like=tensor).tolist() == arange(3, like=array).tolist() == [0, 1, 2]
    copied = copy(array)
    copied[0] = 1.0
    assert array[0] == 0.0  # a copy, not a view
    source = torch.ones(2, dtype=torch.float64)
    host = to_host(source)
    host[0] = 5.0
    assert float(source[0]) == 1.0  # to_host never shares memory with the tensor
    assert from_host(host, torch.zeros(1)).dtype == torch.float32
    singular = np.zeros((1, 2, 2))
    np.testing.assert_allclose(solve(singular, np.ones((1, 2, 1))), np.zeros((1, 2, 1)))


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=9))
def test_float32_tensor_is_what_torch_tensor_builds(values: list[float]) -> None:
    built = float32_tensor(values)
    expected = torch.tensor(values, dtype=torch.float32)
    assert built.dtype == torch.float32
    assert built.shape == expected.shape
    torch.testing.assert_close(built, expected, rtol=0.0, atol=0.0, equal_nan=True)
    if values:
        built.add_(1.0)  # its own writable memory


def test_host_writer_follows_a_replaced_or_swapped_tensor() -> None:
    writer = HostWriter()
    first = torch.zeros(2)
    writer.write("state", first, [1.0, 2.0])
    second = torch.zeros(2)  # the buffer replaced by another tensor under the same name
    writer.write("state", second, [3.0, 4.0])
    assert first.tolist() == [1.0, 2.0]
    assert second.tolist() == [3.0, 4.0]
    other = torch.zeros(2)
    torch.utils.swap_tensors(second, other)  # same object, other memory
    writer.write("state", second, [5.0, 6.0])
    assert second.tolist() == [5.0, 6.0]
    assert other.tolist() == [3.0, 4.0]
    scalar = torch.zeros((), dtype=torch.float64)
    writer.write("count", scalar, [0.1])
    assert scalar.item() == 0.1  # float64 kept exactly


@pytest.mark.parametrize(
    ("tensor", "found"),
    [
        (torch.zeros(2, dtype=torch.int64), "torch.int64 on cpu"),
        (torch.zeros(2, 2).t(), "torch.float32 on cpu, not contiguous"),
    ],
)
def test_host_writer_names_a_tensor_it_cannot_write(tensor: torch.Tensor, found: str) -> None:
    with pytest.raises(ValueError, match=f"'state' is {found}$"):
        HostWriter().write("state", tensor, [1.0])
