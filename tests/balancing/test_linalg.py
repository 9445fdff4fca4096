"""Helpers of the Gram-matrix solvers."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from multiloss.balancing import _linalg
from multiloss.balancing._linalg import (
    can_read,
    check_gram,
    normalize_gram,
    on_host,
    pair_on_host,
    single_thread,
    solver_dtype,
)
from multiloss.balancing._minnorm import min_norm_exact, min_norm_weights
from multiloss.balancing.aligned_mtl import aligned_mtl_weights
from multiloss.balancing.cagrad import cagrad_solve
from multiloss.balancing.imtl import imtl_weights
from multiloss.balancing.nashmtl import nash_weights
from multiloss.balancing.pcgrad import pcgrad_weights
from multiloss.balancing.upgrad import upgrad_solve
from tests.balancing.gradients import random_jacobian


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
    from multiloss.balancing import _linalg, _qp, nashmtl
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
    early = {name: run() for name, run in solvers.items()}
    monkeypatch.setattr(_linalg, "HOST_SOLVES", False)  # the tensor code, as on accelerators
    for module in (_qp, nashmtl):
        monkeypatch.setattr(module, "can_read", lambda tensor: False)
    for name, run in solvers.items():
        torch.testing.assert_close(run(), early[name], msg=name)


# -- the host (NumPy) path of the CPU solvers against the tensor path of accelerators -------------
def test_normalize_gram_on_the_host_matches_the_tensor_path() -> None:
    g = torch.tensor([[-0.25441, -0.000612], [0.25447, 0.000688]])  # repaired (see above)
    for gram in (torch.tensor([[4.0, 1.0], [1.0, 2.0]]), g @ g.T, torch.zeros(2, 2)):
        work, trace = normalize_gram(gram)
        host, host_trace = normalize_gram(gram, host=True)
        assert isinstance(host, np.ndarray)
        assert host.dtype == np.float64
        np.testing.assert_allclose(host, work.numpy(), rtol=1e-12, atol=1e-15)
        assert float(host_trace) == pytest.approx(float(trace))


def test_on_host_only_for_cpu_tensors() -> None:
    assert on_host(torch.zeros(2, 2))
    assert not on_host(torch.zeros(2, 2, device="meta"))


SOLVERS: dict[str, Callable[[Tensor], Tensor]] = {
    "upgrad": lambda gram: upgrad_solve(gram)[0],
    "upgrad-preference": lambda gram: upgrad_solve(
        gram, torch.linspace(0.2, 1.0, gram.shape[0]).to(gram)
    )[0],
    "cagrad": lambda gram: cagrad_solve(gram)[0],
    "mgda": lambda gram: min_norm_weights(gram)[0],
    "mgda-exact": lambda gram: min_norm_exact(gram)[0],
    "nash": lambda gram: nash_weights(gram)[0],
    "pcgrad": lambda gram: pcgrad_weights(gram, _reversed_orders(gram.shape[0])),
    "imtl": imtl_weights,
    "aligned-mtl-min": lambda gram: aligned_mtl_weights(gram, "min"),
    "aligned-mtl-median": lambda gram: aligned_mtl_weights(gram, "median"),
    "aligned-mtl-rmse": lambda gram: aligned_mtl_weights(gram, "rmse"),
}


def _on_tensors(solver: Callable[[Tensor], Tensor], gram: Tensor) -> Tensor:
    """``solver(gram)`` through the tensor code that accelerators run, here on the CPU.

    (A plain try/finally rather than the monkeypatch fixture: hypothesis tests call this.)
    """
    previous = _linalg.HOST_SOLVES
    _linalg.HOST_SOLVES = False
    try:
        return solver(gram)
    finally:
        _linalg.HOST_SOLVES = previous


def _reversed_orders(t: int) -> Tensor:
    """A fixed projection order for PCGrad (loss i against t-1, t-2, ...; itself skipped)."""
    return torch.tensor([[j for j in reversed(range(t)) if j != i] for i in range(t)]).reshape(
        t, max(t - 1, 0)
    )


@pytest.mark.parametrize("name", sorted(SOLVERS))
@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 7),
    seed=st.integers(0, 10_000),
    shared=st.sampled_from([-0.5, 0.0, 0.3, 2.0]),
    degenerate=st.sampled_from(["none", "duplicate", "opposite", "zero"]),
)
def test_host_and_tensor_solvers_agree(
    name: str, rows: int, seed: int, shared: float, degenerate: str
) -> None:
    # The same algorithm on NumPy arrays (CPU) and on tensors (accelerators): same answer.
    g = random_jacobian(rows, 6, seed, shared=shared).float()
    if rows > 1 and degenerate == "duplicate":
        g[1] = g[0]
    elif rows > 1 and degenerate == "opposite":
        g[1] = -g[0]
    elif degenerate == "zero":
        g[0] = 0.0
    gram = g @ g.T
    host = SOLVERS[name](gram)
    tensor = _on_tensors(SOLVERS[name], gram)
    assert isinstance(host, Tensor)
    assert host.dtype == gram.dtype
    # Compared as updates J^T w: with duplicate gradients the weights themselves are not
    # unique (any split between the copies is optimal), the update is.
    scale = float(g.norm(dim=1).max()) + 1e-12
    # Frank-Wolfe stops where the weights move by less than 1e-5 (L1): the two loops may stop
    # an iteration apart. CAGrad's line search (Armijo on the objective's value) stops about
    # sqrt(eps) from the minimizer near a Pareto-stationary point (see test_qp). The others
    # converge to rounding.
    tolerance = {"mgda": 1e-4, "cagrad": 1e-5}.get(name, 1e-6)
    torch.testing.assert_close(host @ g, tensor @ g, rtol=0, atol=tolerance * scale)


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("rows", [2, 3])
def test_a_non_finite_gram_gives_the_same_kind_of_answer_on_both_paths(
    name: str, bad: float, rows: int
) -> None:
    # An infinite gradient makes the Gram matrix non-finite. Neither path may raise or warn
    # (the balancer reports non-finite weights itself, naming the method); they agree on
    # which weights come out non-finite. Two rows: the closed forms on the host.
    gram = torch.tensor([[1.0, 0.5, 0.0], [0.5, bad, 0.2], [0.0, 0.2, 2.0]])[:rows, :rows]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        host = SOLVERS[name](gram)
        tensor = _on_tensors(SOLVERS[name], gram)
    assert host.shape == tensor.shape == (rows,)
    assert torch.isfinite(host).tolist() == torch.isfinite(tensor).tolist()


# -- two losses: closed forms on Python floats ----------------------------------------------------
def test_pair_on_host_is_normalize_gram_as_floats() -> None:
    g = torch.tensor([[-0.25441, -0.000612], [0.25447, 0.000688]])  # repaired (see above)
    for gram in (torch.tensor([[4.0, 1.0], [1.0, 2.0]]), g @ g.T, torch.zeros(2, 2)):
        pair = pair_on_host(gram)
        work, _ = normalize_gram(gram)
        assert pair is not None
        a, b, d = pair
        np.testing.assert_allclose([[a, b], [b, d]], work.numpy(), rtol=1e-12, atol=1e-15)
    assert pair_on_host(torch.eye(3)) is None  # more losses: the general solvers
    assert pair_on_host(torch.zeros(2, 2, device="meta")) is None  # not on the host
    assert pair_on_host(torch.tensor([[1.0, float("nan")], [0.0, 1.0]])) is None


@pytest.mark.parametrize("name", sorted(SOLVERS))
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shared=st.sampled_from([-2.0, -0.5, 0.0, 0.3, 2.0]),
    scales=st.sampled_from([(1.0, 1.0), (1.0, 1e-3), (1e4, 1.0), (1e-6, 1e-6)]),
    degenerate=st.sampled_from(["none", "duplicate", "opposite", "zero", "both zero"]),
)
def test_two_losses_closed_forms_match_the_general_solvers(
    name: str, seed: int, shared: float, scales: tuple[float, float], degenerate: str
) -> None:
    # On the host, two losses take each method's closed form (pair_on_host); the general
    # algorithm (the tensor code accelerators run) must give the same update.
    g = random_jacobian(2, 6, seed, shared=shared).float() * torch.tensor(scales)[:, None]
    if degenerate == "duplicate":
        g[1] = g[0]
    elif degenerate == "opposite":
        g[1] = -g[0]
    elif degenerate == "zero":
        g[0] = 0.0
    elif degenerate == "both zero":
        g.zero_()
    gram = g @ g.T
    closed = SOLVERS[name](gram)
    general = _on_tensors(SOLVERS[name], gram)
    assert closed.dtype == gram.dtype
    assert bool(torch.isfinite(closed).all())
    scale = float(g.norm(dim=1).max()) + 1e-30
    tolerance = {"mgda": 1e-4, "cagrad": 1e-5}.get(name, 1e-6)
    torch.testing.assert_close(closed @ g, general @ g, rtol=0, atol=tolerance * scale)
