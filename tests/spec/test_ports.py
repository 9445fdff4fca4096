from __future__ import annotations

from collections import OrderedDict, namedtuple

import pytest
import torch

from multiloss.spec.ports import output_ports


def test_tensor_is_output() -> None:
    t = torch.zeros(1)
    assert output_ports(t) == {"output": t}


def test_dict_keys_and_mappings() -> None:
    a, b = torch.zeros(1), torch.ones(1)
    assert output_ports({"a": a, "b": b}) == {"a": a, "b": b}
    assert list(output_ports(OrderedDict(b=b, a=a))) == ["b", "a"]


def test_tuple_is_numbered_and_namedtuple_uses_fields() -> None:
    a, b = torch.zeros(1), torch.ones(1)
    assert list(output_ports((a, b))) == ["output0", "output1"]
    Out = namedtuple("Out", ["logits", "aux"])
    assert list(output_ports(Out(a, b))) == ["logits", "aux"]


def test_other_outputs_are_errors() -> None:
    with pytest.raises(TypeError, match=r"must return a tensor, a dict .*; got 3.0 \(float\)"):
        output_ports(3.0)
    with pytest.raises(TypeError, match="keys are not all port names"):
        output_ports({0: torch.zeros(1)})
