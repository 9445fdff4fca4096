"""Expert matrix products: grouped (jagged) where torch has a fast kernel, batched otherwise.

``torch._grouped_mm`` multiplies each contiguous group of rows by its own matrix. It is only
used where it runs without a device-to-host sync:

* on CPU for float32, bfloat16 and float16 (there the offsets already live on the host),
  except under ``torch.compile``, whose shape function for the op accepts only bfloat16;
* on CUDA for bfloat16 on compute capability 9.x / 10.x (the CUTLASS kernels). Elsewhere on
  CUDA torch falls back to a loop that copies the offsets to the host (a sync every call), so
  we use the blocked batched product instead.

Every operand's row stride must also be a multiple of 16 bytes. Rows past the last group are
left uninitialized by the kernel (garbage, possibly NaN) in both the output and the input
gradient; callers mask them with ``torch.where``, never with a multiplication.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["BACKENDS", "batched_mm", "grouped_mm", "grouped_mm_supported"]

#: Expert-product backends: pick automatically, force the grouped kernel, or force blocks.
BACKENDS = ("auto", "grouped_mm", "blocked")

_CPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_ALIGNMENT_BYTES = 16


@torch.compiler.assume_constant_result  # type: ignore[untyped-decorator]
def grouped_mm_supported(
    device_type: str,
    device_index: int,
    dtype: torch.dtype,
    widths: tuple[int, ...],
    compiling: bool = False,
) -> bool:
    """Whether ``torch._grouped_mm`` runs sync-free here for rows of these widths.

    Evaluated once per trace under ``torch.compile`` (its result is a constant of the graph).

    Example:
        >>> grouped_mm_supported("cpu", -1, torch.float32, (64, 128))
        True
        >>> grouped_mm_supported("cpu", -1, torch.float32, (64, 128), compiling=True)
        False
        >>> grouped_mm_supported("cpu", -1, torch.float64, (64, 128))
        False
    """
    if not hasattr(torch, "_grouped_mm"):
        return False
    itemsize = torch.empty((), dtype=dtype).element_size()
    if any(width * itemsize % _ALIGNMENT_BYTES for width in widths):
        return False
    if compiling and dtype != torch.bfloat16:
        return False
    if device_type == "cpu":
        return dtype in _CPU_DTYPES
    if device_type == "cuda" and dtype == torch.bfloat16 and torch.version.hip is None:
        index = device_index if device_index >= 0 else torch.cuda.current_device()
        major, _ = torch.cuda.get_device_capability(index)
        return major in (9, 10)
    return False


def grouped_mm(rows: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    """``rows[g] @ weight[e]`` for each group; ``offsets`` are int32 group ends.

    Args:
        rows: (A, n_in), groups of rows contiguous in expert order.
        weight: (E, n_in, n_out).
        offsets: (E,) int32 cumulative group sizes.
    """
    return torch._grouped_mm(rows.contiguous(), weight, offs=offsets)


def batched_mm(blocks: Tensor, weight: Tensor, block_expert: Tensor | None) -> Tensor:
    """``blocks[b] @ weight[block_expert[b]]`` for every block, in one batched product.

    Args:
        blocks: (B, rows, n_in).
        weight: (E, n_in, n_out).
        block_expert: (B,) expert of each block, or None when block ``b`` is expert ``b``.
    """
    chosen = weight if block_expert is None else weight.index_select(0, block_expert)
    return torch.bmm(blocks, chosen)
