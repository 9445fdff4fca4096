"""Gradient diagnostics checked against gradients computed one by one."""

from __future__ import annotations

import pytest
import torch

from multiloss.balancing import gradient_diagnostics
from tests.balancing.properties import Toy


def _flat_grads(model: Toy) -> dict[str, torch.Tensor]:
    losses = model.losses()
    trunk = list(model.trunk.parameters())
    return {
        name: torch.cat(
            [g.reshape(-1) for g in torch.autograd.grad(loss, trunk, retain_graph=True)]
        )
        for name, loss in losses.items()
    }


def test_norms_cosines_and_shares_match_the_definitions() -> None:
    model = Toy()
    g = _flat_grads(model)
    weights = {"task0": 1.0, "task1": -0.5, "task2": 2.0}
    out = gradient_diagnostics(model.losses(), weights)
    update = sum(weights[n] * g[n] for n in g)
    for name in g:
        assert float(out[f"grad/norm/{name}"]) == pytest.approx(float(g[name].norm()), rel=1e-4)
        share = float(weights[name] * g[name] @ update / (update @ update))
        assert float(out[f"grad/share/{name}"]) == pytest.approx(share, rel=1e-4, abs=1e-6)
    cos = torch.nn.functional.cosine_similarity(g["task0"], g["task2"], dim=0)
    assert float(out["grad/cos/task0|task2"]) == pytest.approx(float(cos), abs=1e-5)
    assert sum(float(v) for k, v in out.items() if "share" in k) == pytest.approx(1.0, abs=1e-5)


def test_the_graph_is_kept_for_the_caller() -> None:
    model = Toy()
    losses = model.losses()
    gradient_diagnostics(losses)
    sum(losses.values()).backward()  # still possible


def test_explicit_shared_and_a_single_loss() -> None:
    model = Toy()
    out = gradient_diagnostics({"only": model.losses()["task0"]})
    assert set(out) == {"grad/norm/only", "grad/share/only"}
    assert float(out["grad/share/only"]) == pytest.approx(1.0)
    out = gradient_diagnostics(model.losses(), shared=[model.trunk[0].weight])
    assert float(out["grad/norm/task0"]) > 0


@pytest.mark.parametrize("method", ["Sum", "UPGrad"])
def test_one_balanced_loss_is_measured_on_the_parameters_all_losses_share(method: str) -> None:
    # With one balanced loss no parameter is shared by two balanced ones; the diagnostics fell
    # back to every parameter reached (the heads too), and the same losses read differently
    # depending on `balance=`. They are now measured on the trunk every loss reaches.
    import multiloss.balancing as mb

    model = Toy()
    g = _flat_grads(model)
    balancer = getattr(mb, method)(balance=["task0"])
    balancer.apply(model.losses(), {"task2": 2.0}, diagnostics=True)
    shown = balancer.diagnostics()
    for name in g:
        assert float(shown[f"grad/norm/{name}"]) == pytest.approx(float(g[name].norm()), rel=1e-4)


def test_bad_input() -> None:
    model = Toy()
    with pytest.raises(ValueError, match="needs at least one loss"):
        gradient_diagnostics({})
    with pytest.raises(ValueError, match="`weights` of gradient_diagnostics names losses"):
        gradient_diagnostics(model.losses(), {"x": 1.0})


def test_wrong_argument_types_are_named() -> None:
    model = Toy()
    with pytest.raises(
        TypeError, match=r"`losses` of gradient_diagnostics must be a mapping .* got 'x' \(str\)"
    ):
        gradient_diagnostics("x", {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`weights` of gradient_diagnostics must be a mapping"):
        gradient_diagnostics(model.losses(), "x")  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"`shared` of gradient_diagnostics must be a sequence of tensors"
    ):
        gradient_diagnostics(model.losses(), shared="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"loss 'task0' must be a scalar torch\.Tensor; got 1\.0"):
        gradient_diagnostics({"task0": 1.0})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"each loss name of gradient_diagnostics must be a"):
        gradient_diagnostics({1: model.losses()["task0"]})  # type: ignore[dict-item]
