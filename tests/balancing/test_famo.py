"""FAMO against the paper's Algorithm 1, with torch.optim.Adam as the reference optimizer."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from multiloss.balancing import FAMO


def test_weights_are_z_over_c_times_d() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    famo = FAMO(lower_bound={"b": 1.0})
    used = famo.backward({"a": 3.0 * w, "b": 3.0 * w, "c": 0.5 * w})
    d = torch.tensor([3.0, 2.0, 0.5])
    expected = (1 / d) / (1 / d).sum()
    assert [used[k] for k in "abc"] == pytest.approx(expected.tolist(), rel=1e-5)
    assert float(w.grad) == pytest.approx(float((expected * torch.tensor([3.0, 3.0, 0.5])).sum()))


def test_logits_follow_algorithm_1() -> None:
    # Losses of successive steps (each step's "after" is the next step's value).
    series = torch.tensor([[4.0, 1.0], [3.0, 0.9], [2.5, 0.5], [2.4, 0.3], [2.0, 0.29]])
    famo = FAMO(gamma=0.01, lr=0.025, balance=["a", "b"])
    w = torch.nn.Parameter(torch.tensor(1.0))
    xi = torch.zeros(2, requires_grad=True)
    reference = torch.optim.Adam([xi], lr=0.025, weight_decay=0.01)
    for t in range(len(series)):
        famo.backward({"a": series[t, 0] * w, "b": series[t, 1] * w})
        if t > 0:  # the update from step t-1 to t happens at step t's call
            delta = torch.log(series[t - 1] + 1e-8) - torch.log(series[t] + 1e-8)
            (grad,) = torch.autograd.grad(torch.softmax(xi, 0), xi, grad_outputs=delta)
            reference.zero_grad()
            xi.grad = grad
            reference.step()
        torch.testing.assert_close(famo.logits, xi.detach())


def test_update_is_the_same_batch_variant() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    famo = FAMO(balance=["a", "b"])
    famo.backward({"a": 4.0 * w, "b": 1.0 * w})
    famo.update({"a": torch.tensor(2.0), "b": torch.tensor(0.9)})
    after_update = famo.logits.clone()
    assert not torch.equal(after_update, torch.zeros(2))
    famo.backward({"a": 1.0 * w, "b": 1.0 * w})  # no second update of the same step
    torch.testing.assert_close(famo.logits, after_update)
    with pytest.raises(ValueError, match=r"FAMO.update\(\) is missing the losses \['b'\]"):
        famo.update({"a": torch.tensor(1.0)})


def test_update_before_any_step_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="needs a finished step first"):
        FAMO().update({"a": torch.tensor(1.0)})


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="`lr` of FAMO must be > 0"):
        FAMO(lr=0.0)
    with pytest.raises(ValueError, match="`gamma` of FAMO must be >= 0"):
        FAMO(gamma=-1.0)
    with pytest.raises(ValueError, match=r"`lower_bound` of FAMO names \['z'\]"):
        FAMO(lower_bound={"z": 0.0}, balance=["a", "b"])


def test_repr() -> None:
    assert repr(FAMO()) == "FAMO(gamma=0.01, lr=0.025)"


def test_the_host_arithmetic_matches_the_tensor_code(monkeypatch: pytest.MonkeyPatch) -> None:
    # On the CPU the per-step arithmetic runs on Python floats; accelerators run the tensor
    # code. Same weights and the same state, step after step, accumulation and update() too.
    generator = torch.Generator().manual_seed(0)
    series = 1.0 + 3.0 * torch.rand(12, 3, generator=generator)

    def run(host: bool) -> tuple[list[Tensor], dict[str, Tensor]]:
        with monkeypatch.context() as patch:
            if not host:
                patch.setattr(FAMO, "_on_host", lambda self: False)
            famo = FAMO(lower_bound={"c": 0.5})
            w = torch.nn.Parameter(torch.tensor(1.0))
            weights = []
            for t in range(len(series)):
                for _ in range(2 if t % 3 == 0 else 1):  # some steps accumulate two calls
                    used = famo.backward({k: series[t, i] * w for i, k in enumerate("abc")})
                    weights.append(torch.stack([torch.as_tensor(used[k]) for k in "abc"]))
                famo.after_optimizer_step()
                if t == 6:
                    famo.update({k: series[t, i] * 0.9 for i, k in enumerate("abc")})
            state = famo.state_dict()
            return weights, {k: v.clone() for k, v in state.items() if isinstance(v, Tensor)}

    host_weights, host_state = run(host=True)
    tensor_weights, tensor_state = run(host=False)
    torch.testing.assert_close(host_weights, tensor_weights, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(host_state, tensor_state, rtol=1e-6, atol=1e-7)


def test_a_loss_below_its_bound_is_named_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    for host in (True, False):
        famo = FAMO(lower_bound={"b": 1.0})
        if not host:
            monkeypatch.setattr(FAMO, "_on_host", lambda self: False)
        with pytest.raises(ValueError, match=r"'b' = 0\.5 \(bound 1\)"):
            famo.backward({"a": 3.0 * w, "b": 0.5 * w})


def test_unchanged_losses_leave_the_logits_alone() -> None:
    # No decrease, no step: computed in float64 without rounding to float32 first, the
    # distances differed by 1e-8 from the stored ones and Adam turned that into a full step.
    famo = FAMO(lower_bound={"c": 0.5})
    w = torch.nn.Parameter(torch.tensor(1.0))
    for _ in range(4):
        famo.backward({"a": 2.0 * w, "b": 3.0 * w, "c": 1.5 * w})
    assert famo.logits.tolist() == [0.0, 0.0, 0.0]
