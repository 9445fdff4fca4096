"""Normalize: running and initial magnitudes, by hand."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from multiloss.balancing import Normalize, Static


def test_running_mean_is_a_bias_corrected_ema_of_the_magnitude() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    balancer = Normalize(momentum=0.9)
    series = [4.0, -2.0, 8.0]
    ema = 0.0
    for t, value in enumerate(series, start=1):
        w.grad = None
        used = balancer.backward({"x": value * w, "y": w})
        ema = 0.9 * ema + 0.1 * abs(value)
        scale = ema / (1 - 0.9**t)
        assert used["x"] == pytest.approx(1.0 / scale, rel=1e-5)
        assert used["y"] == pytest.approx(1.0, rel=1e-5)
        assert float(w.grad) == pytest.approx(value / scale + 1.0, rel=1e-5)


def test_initial_mode_divides_by_the_first_value() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    balancer = Normalize(Static({"x": 3.0}), mode="initial")
    balancer.backward({"x": 5.0 * w, "y": 0.5 * w})
    used = balancer.backward({"x": 1.0 * w, "y": 7.0 * w})
    assert used == pytest.approx({"x": 3.0 / 5.0, "y": 1.0 / 0.5})


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"`mode` of Normalize must be one of \{'running'"):
        Normalize(mode="max")
    with pytest.raises(ValueError, match=r"`momentum` of Normalize must be in \(0, 1\)"):
        Normalize(momentum=1.0)
    with pytest.raises(ValueError, match="`eps` of Normalize must be > 0"):
        Normalize(eps=0.0)


def test_repr_shows_the_inner_balancer() -> None:
    assert repr(Normalize(Static({"a": 2.0}), mode="initial")) == (
        "Normalize(\n  mode='initial'\n  (inner): Static(weights={'a': 2.0})\n)"
    )


@pytest.mark.parametrize("mode", ["running", "initial"])
def test_the_host_arithmetic_matches_the_tensor_code(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    # On the CPU the statistics are updated on Python floats; accelerators run the tensor
    # code. Same weights and the same buffers, call after call: negative losses, a loss of
    # exactly 0 (the eps floor), magnitudes from 1e-3 to 1e3.
    generator = torch.Generator().manual_seed(0)
    series = torch.randn(10, 3, generator=generator) * torch.tensor([1e-3, 1.0, 1e3])
    series[0, 1] = 0.0
    series[4, 1] = 0.0

    def run(host: bool) -> tuple[list[Tensor], dict[str, Tensor]]:
        with monkeypatch.context() as patch:
            if not host:
                patch.setattr(Normalize, "_on_host", lambda self, values: False)
            balancer = Normalize(mode=mode, momentum=0.9)
            w = torch.nn.Parameter(torch.tensor(1.0))
            weights = []
            for row in series:
                used = balancer.backward({k: row[i] * w for i, k in enumerate("abc")})
                weights.append(torch.stack([torch.as_tensor(used[k]) for k in "abc"]))
            state = balancer.state_dict()
            return weights, {k: v.clone() for k, v in state.items() if isinstance(v, Tensor)}

    host_weights, host_state = run(host=True)
    tensor_weights, tensor_state = run(host=False)
    torch.testing.assert_close(host_weights, tensor_weights, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(host_state, tensor_state, rtol=1e-6, atol=0.0)
    assert host_state["mean"].dtype == torch.float32
    assert host_state["decay"].dtype == torch.float64
    if mode == "initial":  # the first values, the zero floored at eps
        assert host_weights[-1].tolist() == pytest.approx(
            [1.0 / abs(float(series[0, 0])), 1e8, 1.0 / abs(float(series[0, 2]))], rel=1e-6
        )


def test_the_host_path_is_taken_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[float]] = []
    real = Normalize._factors_host

    def spy(self: Normalize, values: list[float]) -> Tensor:
        calls.append(values)
        return real(self, values)

    monkeypatch.setattr(Normalize, "_factors_host", spy)
    w = torch.nn.Parameter(torch.tensor(1.0))
    Normalize().backward({"a": 2.0 * w, "b": -3.0 * w})
    assert calls == [[2.0, -3.0]]
    calls.clear()
    balancer = Normalize(balance=["a", "b"]).to(torch.float64)  # state made at construction
    balancer.backward({"a": 2.0 * w, "b": -3.0 * w})
    assert calls == []  # float64 statistics: the tensor code keeps their precision
