"""Grouped and batched expert products against per-group loops."""

from __future__ import annotations

import pytest
import torch

from multiloss.layers.moe.grouped import batched_mm, grouped_mm, grouped_mm_supported


@pytest.mark.parametrize(
    ("device", "dtype", "widths", "compiling", "expected"),
    [
        ("cpu", torch.float32, (8, 16), False, True),
        ("cpu", torch.bfloat16, (8, 16), False, True),
        ("cpu", torch.float16, (8, 16), False, True),
        ("cpu", torch.float64, (8, 16), False, False),  # no double kernel
        ("cpu", torch.float32, (6, 16), False, False),  # 24-byte rows are not 16-byte aligned
        ("cpu", torch.bfloat16, (4, 16), False, False),  # 8-byte rows
        ("cpu", torch.float32, (8, 16), True, False),  # compile's shape function: bf16 only
        ("cpu", torch.bfloat16, (8, 16), True, True),
        ("meta", torch.bfloat16, (8, 16), False, False),
    ],
)
def test_support_table(
    device: str, dtype: torch.dtype, widths: tuple[int, ...], compiling: bool, expected: bool
) -> None:
    assert grouped_mm_supported(device, -1, dtype, widths, compiling) is expected


def test_grouped_mm_equals_a_loop_over_groups() -> None:
    rows = torch.randn(10, 8)
    weight = torch.randn(3, 8, 4)
    offsets = torch.tensor([2, 2, 7], dtype=torch.int32)  # an empty group; rows 7+ unused
    out = grouped_mm(rows, weight, offsets)
    torch.testing.assert_close(out[:2], rows[:2] @ weight[0])
    torch.testing.assert_close(out[2:7], rows[2:7] @ weight[2])


def test_batched_mm_with_and_without_block_experts() -> None:
    blocks = torch.randn(4, 3, 8)
    weight = torch.randn(2, 8, 5)
    block_expert = torch.tensor([1, 1, 0, 1])
    out = batched_mm(blocks, weight, block_expert)
    for b in range(4):
        torch.testing.assert_close(out[b], blocks[b] @ weight[int(block_expert[b])])
    direct = batched_mm(blocks[:2], weight, None)
    torch.testing.assert_close(direct[1], blocks[1] @ weight[1])
