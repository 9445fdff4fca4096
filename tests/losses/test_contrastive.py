from __future__ import annotations

import pytest
import torch

from multiloss.losses import Contrastive, TargetMismatchError


def _naive(distances: list[float], similar: list[int], margin: float) -> float:
    total = 0.0
    for d, y in zip(distances, similar, strict=True):
        total += d**2 if y else max(margin - d, 0.0) ** 2
    return total / len(distances)


def test_distance_matches_the_formula() -> None:
    d, y = [0.2, 1.5, 0.7, 3.0], [1, 0, 0, 1]
    value = Contrastive(margin=2.0)(torch.tensor(d), torch.tensor(y))
    assert float(value) == pytest.approx(_naive(d, y, 2.0), rel=1e-6)


def test_embeddings_as_a_tensor_and_as_a_pair_agree() -> None:
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    y = torch.tensor([True, False, True, False, False, True])
    stacked = Contrastive(input="embeddings")(torch.stack([a, b], dim=1), y)
    paired = Contrastive(input="embeddings")((a, b), y)
    torch.testing.assert_close(stacked, paired)
    d = [float(torch.linalg.vector_norm(a[i] - b[i])) for i in range(6)]
    assert float(paired) == pytest.approx(_naive(d, y.int().tolist(), 1.0), rel=1e-4)


def test_dissimilar_pairs_beyond_the_margin_cost_nothing() -> None:
    assert float(Contrastive(margin=1.0)(torch.tensor([1.5, 2.0]), torch.tensor([0, 0]))) == 0.0


def test_bad_margin() -> None:
    with pytest.raises(ValueError, match="`margin` of Contrastive must be > 0"):
        Contrastive(margin=0.0)


def test_bad_embeddings_shape() -> None:
    with pytest.raises(TargetMismatchError, match=r"\(N, 2, D\)"):
        Contrastive(input="embeddings")(torch.randn(4, 3, 2), torch.ones(4))


def test_mismatched_pair() -> None:
    with pytest.raises(TargetMismatchError, match="one shape"):
        Contrastive(input="embeddings")((torch.randn(4, 3), torch.randn(4, 2)), torch.ones(4))


def test_label_shape_mismatch() -> None:
    with pytest.raises(TargetMismatchError, match="Contrastive"):
        Contrastive()(torch.rand(4), torch.ones(5))


def test_labels_outside_zero_one_are_an_error_naming_target() -> None:
    with pytest.raises(
        ValueError,
        match=r"`target` of Contrastive\(margin=1.0\) must hold pair labels in \[0, 1\]"
        r" \(1 = similar, 0 = dissimilar\); got values from 3 to 3",
    ):
        Contrastive()(torch.rand(4), torch.full((4,), 3.0))
