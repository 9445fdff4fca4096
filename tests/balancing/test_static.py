"""Static weights: exact names, patterns, default, typos."""

from __future__ import annotations

import pytest
import torch

from multiloss.balancing import Static


def test_exact_name_wins_then_first_pattern_then_default() -> None:
    static = Static({"moe/*": 0.1, "*": 3.0, "moe/balance": 0.5}, default=2.0)
    assert static.resolve(["moe/balance", "moe/z", "task"]) == {
        "moe/balance": 0.5,
        "moe/z": 0.1,
        "task": 3.0,
    }
    assert Static({"a": 2.0}, default=0.0).resolve(["a", "b"]) == {"a": 2.0, "b": 0.0}


def test_gradient_is_the_weighted_sum() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    Static({"a": -1.0}).backward({"a": 3 * w, "b": w**2}, weights={"b": 2.0})
    assert float(w.grad) == pytest.approx(-3.0 + 2.0 * 2.0)


def test_typos_are_errors() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"`weights` of Static names \['tsk'\] but no balanced"):
        Static({"tsk": 1.0}).backward({"task": w})
    with pytest.raises(ValueError, match=r"`weights\['a'\]` of Static must be a finite float"):
        Static({"a": float("nan")})
    with pytest.raises(TypeError, match="`weights` of Static must be a mapping"):
        Static([1.0])  # type: ignore[arg-type]


def test_repr() -> None:
    assert repr(Static({"a": 0.5})) == "Static(weights={'a': 0.5})"
