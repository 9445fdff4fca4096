"""Random loss weighting: on the simplex, fresh each optimizer step, reproducible under a seed."""

from __future__ import annotations

import pytest
import torch

from multiloss.balancing import RLW


@pytest.mark.parametrize("distribution", ["normal", "uniform", "dirichlet"])
def test_weights_are_random_points_of_the_simplex(distribution: str) -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    balancer = RLW(distribution=distribution)
    draws = [balancer.backward({"a": w, "b": w, "c": w}) for _ in range(200)]
    values = torch.tensor([[d[k] for k in "abc"] for d in draws])
    assert (values > 0).all()
    torch.testing.assert_close(values.sum(1), torch.ones(200))
    assert values.std(0).min() > 0.01
    assert values.mean(0).tolist() == pytest.approx([1 / 3] * 3, abs=0.05)


def test_softmax_of_a_standard_normal_draw() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    torch.manual_seed(3)
    used = RLW().backward({"a": w, "b": w})
    torch.manual_seed(3)
    expected = torch.softmax(torch.randn(2), dim=0)
    assert [used["a"], used["b"]] == pytest.approx(expected.tolist())


def test_the_micro_batches_of_a_step_share_one_draw() -> None:
    # Drawn per micro-batch, an accumulated step's effective weights averaged k draws: their
    # spread shrank by about sqrt(k) and the method drifted towards Sum / T.
    w = torch.nn.Parameter(torch.tensor(1.0))
    balancer = RLW()
    steps = []
    for _ in range(3):
        micro = [balancer.apply({"a": 2 * w, "b": w}) for _ in range(4)]
        assert all(float(m["a"]) == float(micro[0]["a"]) for m in micro)
        steps.append(float(micro[0]["a"]))
        balancer.after_optimizer_step()
    assert len(set(steps)) == 3  # a new draw after each optimizer step


def test_bad_distribution() -> None:
    with pytest.raises(ValueError, match=r"`distribution` of RLW must be one of \{'normal'"):
        RLW(distribution="beta")
