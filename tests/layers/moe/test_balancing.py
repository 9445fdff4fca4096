"""Balancing state: the bias rule, step accumulation, global counts, distributed reduction."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import multiloss as ml
from multiloss.layers import MixtureOfExperts
from multiloss.layers.moe.balancing import all_reduce_counts, check_balance, update_expert_bias
from multiloss.layers.moe.losses import balance_loss, mean_probs


def test_bias_update_rule_by_hand() -> None:
    bias = torch.tensor([0.5, 0.0, 0.0, -0.5])
    update_expert_bias(bias, torch.tensor([10, 2, 5, 3]), 0.01)  # mean load 5
    torch.testing.assert_close(bias, torch.tensor([0.49, 0.01, 0.0, -0.49]))


def test_layer_updates_bias_from_the_counts_of_every_micro_batch_of_the_step() -> None:
    layer = MixtureOfExperts(8, 16, 4, balance={"bias": 0.1})
    micro_batches = [torch.randn(6, 8), torch.randn(5, 8)]
    total = torch.zeros(4, dtype=torch.long)
    for x in micro_batches:
        layer(x)
        total += layer._aux_cache.routed
    assert layer.step_counts.tolist() == total.tolist()
    layer.after_optimizer_step()
    load = total.float()
    torch.testing.assert_close(layer.expert_bias, 0.1 * torch.sign(load.mean() - load))
    assert layer.step_counts.tolist() == [0, 0, 0, 0]


def test_bias_is_state_without_gradient_and_eval_does_not_count() -> None:
    layer = MixtureOfExperts(8, 16, 4, balance={"bias": 0.1, "switch": 0.01})
    assert "expert_bias" in layer.state_dict()
    assert "step_counts" not in layer.state_dict()
    assert not layer.expert_bias.requires_grad
    layer.eval()
    layer(torch.randn(6, 8))
    assert layer.step_counts.sum() == 0


def test_skipped_step_drops_the_counts() -> None:
    layer = MixtureOfExperts(8, 16, 4, balance={"bias": 0.1})
    layer(torch.randn(6, 8))
    layer.reset_accumulation()
    layer.after_optimizer_step()
    assert layer.expert_bias.abs().sum() == 0


def test_global_loss_counts_every_micro_batch_so_far() -> None:
    layer = MixtureOfExperts(8, 16, 4, balance={"global": 1.0, "switch": 1.0})
    first, second = torch.randn(6, 8), torch.randn(5, 8)
    with ml.collect(layer):
        layer(first)
    counts_first = layer._aux_cache.routed
    with ml.collect(layer) as book:
        layer(second)
    cache = layer._aux_cache
    expected = balance_loss(counts_first + cache.routed, mean_probs(cache.probs, None))
    torch.testing.assert_close(book["global"], expected)
    # The switch loss of the same call uses its own counts only.
    torch.testing.assert_close(
        book["switch"], balance_loss(cache.routed, mean_probs(cache.probs, None))
    )
    layer.after_optimizer_step()
    with ml.collect(layer) as book:
        layer(first)
    torch.testing.assert_close(book["global"], book["switch"])  # a fresh step


def test_check_balance_returns_floats_in_order() -> None:
    assert check_balance({"z": 1, "switch": 0.5}, "X") == {"z": 1.0, "switch": 0.5}
    with pytest.raises(TypeError, match="`balance` of X must be a mapping"):
        check_balance(["switch"], "X")


@pytest.fixture
def single_process_group(tmp_path: pytest.TempPathFactory) -> object:
    store = dist.FileStore(str(tmp_path / "store"), 1)  # type: ignore[operator]
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield dist.group.WORLD
    dist.destroy_process_group()


def test_counts_are_all_reduced_when_distributed_is_initialized(
    single_process_group: object,
) -> None:
    calls = []
    original = dist.all_reduce

    def spy(tensor: torch.Tensor, *args: object, **kwargs: object) -> object:
        calls.append(tensor.clone())
        return original(tensor, *args, **kwargs)

    dist.all_reduce = spy  # type: ignore[assignment]
    try:
        counts = torch.tensor([3, 1])
        assert all_reduce_counts(counts).tolist() == [3, 1]
        layer = MixtureOfExperts(8, 16, 4, balance={"global": 1.0, "bias": 0.1})
        with ml.collect(layer):
            layer(torch.randn(6, 8))
        layer.after_optimizer_step()
    finally:
        dist.all_reduce = original  # type: ignore[assignment]
    # one call above, one for the global loss in forward, one for the bias update
    assert len(calls) == 3
    assert calls[1].sum() == 12  # 6 tokens * top-2
