from __future__ import annotations

import pytest
from torch import nn

from multiloss.spec import OUTPUT_KINDS, mark_output
from multiloss.spec.markers import output_kind_of


def test_mark_output_sets_plain_attributes() -> None:
    layer = mark_output(nn.Linear(2, 3), "logits", class_dim=-1)
    assert output_kind_of(layer) == "logits"
    assert layer.class_dim == -1
    assert set(layer.state_dict()) == {"weight", "bias"}


def test_unmarked_module() -> None:
    assert output_kind_of(nn.Linear(2, 3)) is None


def test_bad_kind_lists_the_kinds() -> None:
    with pytest.raises(ValueError, match=r"`kind` of mark_output must be one of \{'loss'"):
        mark_output(nn.Linear(2, 3), "softmax")
    assert "pair_distance" in OUTPUT_KINDS


def test_bad_class_attribute_is_named() -> None:
    class Bad(nn.Module):
        output_kind = "distance"

    with pytest.raises(ValueError, match="`output_kind` of Bad must be one of"):
        output_kind_of(Bad())


def test_not_a_module() -> None:
    with pytest.raises(TypeError, match=r"`module` of mark_output must be an nn\.Module"):
        mark_output("layer", "logits")  # type: ignore[type-var]
