"""Properties of spec composition (hypothesis): scales multiply, Maximize cancels, order of a list
does not change the total."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multiloss.spec import Attach, Maximize, Port, Scaled, attach, flatten

from .toys import WithLosses

finite = st.floats(min_value=-100, max_value=100, allow_nan=False, allow_infinity=False)
ports = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def specs(draw: st.DrawFn, depth: int = 3) -> object:
    """A random spec tree over the ports a..d."""
    if depth == 0 or draw(st.booleans()):
        return draw(st.one_of(ports, ports.map(Port)))
    kind = draw(st.sampled_from(["scaled", "maximize", "list"]))
    if kind == "scaled":
        return Scaled(draw(specs(depth - 1)), draw(finite))
    if kind == "maximize":
        return Maximize(draw(specs(depth - 1)))
    return draw(st.lists(specs(depth - 1), min_size=1, max_size=3))


@given(specs(), finite, finite)
def test_nested_scaled_multiplies(spec: object, a: float, b: float) -> None:
    nested = flatten(Scaled(Scaled(spec, a), b))
    inner = flatten(spec)
    assert [t.port for t in nested] == [t.port for t in inner]
    for outer, base in zip(nested, inner, strict=True):
        assert math.isclose(outer.weight(0), base.weight(0) * a * b, rel_tol=1e-9, abs_tol=1e-9)


@given(specs())
def test_double_maximize_is_the_spec(spec: object) -> None:
    assert Maximize(Maximize(spec)) == spec  # type: ignore[arg-type]


@given(specs())
def test_maximize_flips_every_sign(spec: object) -> None:
    for flipped, base in zip(flatten(Maximize(spec)), flatten(spec), strict=True):  # type: ignore[arg-type]
        assert flipped.weight(0) == -base.weight(0)


@given(specs(), finite)
def test_scaled_by_one_is_the_spec_and_scaled_distributes_over_lists(
    spec: object, r: float
) -> None:
    assert Scaled(spec, 1.0) == spec  # type: ignore[arg-type]
    assert Scaled([spec, spec], r) == [Scaled(spec, r), Scaled(spec, r)]  # type: ignore[list-item]


def _values(permutation: list[int]) -> float:
    """Total of a 3-term spec over WithLosses' ports, terms listed in the given order."""
    terms = [
        Attach("pred", lambda y: y.pow(2).mean(), name="energy"),
        Scaled(Port("criterion"), 0.5),
        Maximize(Scaled(Port("scalar"), 0.1)),
    ]
    torch.manual_seed(0)
    model = WithLosses()
    out = attach(model, [terms[i] for i in permutation])({"input": torch.ones(3, 4)})
    return float(out.total().detach())


@settings(max_examples=12, deadline=None)
@given(st.permutations([0, 1, 2]))
def test_list_order_does_not_change_the_total(permutation: list[int]) -> None:
    assert math.isclose(_values(permutation), _values([0, 1, 2]), rel_tol=1e-6)
