"""The demo's data: scikit-learn's bundled handwritten digits (no download), split and batched."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["Digits", "load_digits_data"]


@dataclass
class Digits:
    """Train and test loaders over 8x8 digit images flattened to 64 features in [0, 1]."""

    train: DataLoader[tuple[torch.Tensor, ...]]
    test: DataLoader[tuple[torch.Tensor, ...]]
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_digits_data(*, seed: int = 0, batch_size: int = 64, test_fraction: float = 0.2) -> Digits:
    """1797 digits from ``sklearn.datasets.load_digits``, a stratified split, seeded shuffling."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16.0, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.long)
    index = np.arange(len(y))
    train_index, test_index = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=labels
    )
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(
        TensorDataset(x[train_index], y[train_index]),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=generator,
    )
    test = DataLoader(TensorDataset(x[test_index], y[test_index]), batch_size=256)
    return Digits(train, test, x[test_index], y[test_index])
