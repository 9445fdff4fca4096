"""Helpers of the Gram-matrix solvers."""

from __future__ import annotations

import pytest
import torch

from multiloss.balancing._linalg import (
    can_read,
    check_gram,
    normalize_gram,
    single_thread,
    solver_dtype,
)


def test_normalize_gram_has_unit_trace_and_keeps_zero() -> None:
    gram = torch.tensor([[4.0, 1.0], [1.0, 2.0]])
    work, trace = normalize_gram(gram)
    assert work.dtype == torch.float64
    assert float(trace) == 6.0
    torch.testing.assert_close(work, gram.double() / 6)  # positive definite: not shifted


def test_normalize_gram_repairs_rounding_indefiniteness() -> None:
    # Two opposite float32 gradients: their Gram matrix can come out with a negative
    # eigenvalue from rounding alone (this one did, at a step of the toy example).
    g = torch.tensor([[-0.25441, -0.000612], [0.25447, 0.000688]])
    gram = g @ g.T
    assert float(torch.linalg.eigvalsh(gram.double()).min()) < 0
    work, _ = normalize_gram(gram)
    assert float(torch.linalg.eigvalsh(work).min()) > 0
    shift = 2 * torch.finfo(torch.float32).eps
    torch.testing.assert_close(work, gram.double() / gram.trace() + shift * torch.eye(2).double())
    zero, _ = normalize_gram(torch.zeros(2, 2))
    assert zero.abs().sum() == 0


def test_check_gram_names_the_method() -> None:
    with pytest.raises(
        ValueError, match=r"`gram` of X must be a square \(T, T\) matrix; got \(2, 3\)"
    ):
        check_gram(torch.zeros(2, 3), "X")


def test_single_thread_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    with single_thread(torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"), single_thread(torch.device("cpu")):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_device_rules() -> None:
    assert can_read(torch.zeros(1))
    assert solver_dtype(torch.device("cpu")) == torch.float64
    assert solver_dtype(torch.device("mps")) == torch.float32


@pytest.mark.parametrize("rows", [2, 3, 6])
def test_fixed_iteration_budgets_give_the_same_weights(
    rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On accelerators the solvers never read a value back and run their whole budget; a
    solved problem must then stay put. Simulated here by making the CPU 'unreadable'."""
    from multiloss.balancing import _minnorm, _qp, nashmtl
    from multiloss.balancing.cagrad import cagrad_weights
    from multiloss.balancing.mgda import mgda_weights
    from multiloss.balancing.nashmtl import nash_weights
    from multiloss.balancing.upgrad import upgrad_weights
    from tests.balancing.gradients import random_jacobian

    g = random_jacobian(rows, 5, seed=rows, shared=0.2)
    gram = g @ g.T
    solvers = {
        "upgrad": lambda: upgrad_weights(gram),
        "cagrad": lambda: cagrad_weights(gram),
        "mgda": lambda: mgda_weights(gram)[0],
        "mgda-exact": lambda: mgda_weights(gram, solver="exact")[0],
        "nash": lambda: nash_weights(gram)[0],
    }
    early = {name: solve() for name, solve in solvers.items()}
    for module in (_minnorm, _qp, nashmtl):
        monkeypatch.setattr(module, "can_read", lambda tensor: False)
    for name, solve in solvers.items():
        torch.testing.assert_close(solve(), early[name], msg=name)
