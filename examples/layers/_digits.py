"""The split every layer example uses: scikit-learn's bundled 8x8 digits, 75/25, stratified."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

__all__ = ["digits"]


def digits(seed: int) -> tuple[torch.Tensor, ...]:
    """``(x_train, x_test, y_train, y_test)``: pixels scaled to [0, 1], labels as int64."""
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data / 16.0, data.target, test_size=0.25, random_state=seed, stratify=data.target
    )
    return (
        torch.tensor(x_train, dtype=torch.float32),
        torch.tensor(x_test, dtype=torch.float32),
        torch.tensor(y_train),
        torch.tensor(y_test),
    )
