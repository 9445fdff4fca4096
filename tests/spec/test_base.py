"""flatten() and the spec shorthands; an unknown spec type is a named error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from multiloss.losses import MeanAbsolute, MeanSquared
from multiloss.spec import Attach, Automatic, Maximize, Port, Scaled, flatten


def test_port_name_shorthand() -> None:
    assert flatten("kl") == flatten(Port("kl"))
    assert Port("kl") == "kl"


def test_dict_shorthand_is_one_attach_per_entry() -> None:
    mse, mae = MeanSquared(), MeanAbsolute()
    assert flatten({"a": mse, "b": mae}) == flatten([Attach("a", mse), Attach("b", mae)])


def test_nested_lists_flatten_in_order() -> None:
    terms = flatten(["a", ["b", ("c",)], Automatic])
    assert [term.port for term in terms] == ["a", "b", "c", None]


def test_empty_list_is_no_terms() -> None:
    assert flatten([]) == ()


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        (42, "got 42 \\(int\\)"),
        (None, "got None"),
        (nn.MSELoss(), r"write Attach\('output', MSELoss\(...\)\)"),
        (torch.zeros(2), "got Tensor"),
        ({1: MeanSquared()}, r"keys of a \{port: loss\} spec must be port names"),
    ],
)
def test_unknown_spec_type_lists_the_forms(spec: object, hint: str) -> None:
    with pytest.raises(TypeError, match=hint):
        flatten(spec)


def test_unknown_spec_message_names_every_form() -> None:
    with pytest.raises(TypeError) as info:
        flatten(3.5)
    for form in ("Automatic", "Port(...)", "Attach(...)", "Scaled(...)", "Maximize(...)"):
        assert form in str(info.value)


def test_unknown_type_inside_a_list_or_scaled() -> None:
    with pytest.raises(TypeError, match="a loss spec must be"):
        flatten(["a", object()])
    with pytest.raises(TypeError, match="a loss spec must be"):
        Scaled(object(), 2.0)  # type: ignore[arg-type]


def test_dict_value_must_be_a_loss() -> None:
    with pytest.raises(TypeError, match=r"`loss` of the \{port: loss\} entry 'y' must be"):
        flatten({"y": Maximize("y")})


def test_empty_port_name() -> None:
    with pytest.raises(ValueError, match="a port name given as a spec must be a non-empty"):
        flatten("")


def test_spec_equality_against_lists_and_shorthands() -> None:
    mse = MeanSquared()
    assert Scaled(["a", {"b": mse}], 1.0) == ["a", Attach("b", mse)]
    assert ["a", Attach("b", mse)] == Scaled(["a", {"b": mse}], 1.0)
    assert Port("a") != Port("b")
    assert Port("a") != 42
    assert Port("a") != [object()]
