from __future__ import annotations

import pytest
import torch
from torch import nn

from multiloss.spec.batch import call_model, read_batch
from multiloss.spec.errors import MissingKeyError


def test_dict_batch_is_read_as_is() -> None:
    batch = {"input": 1, "y": 2}
    assert read_batch(batch) == batch


def test_pair_is_input_and_output() -> None:
    assert read_batch((1, 2)) == {"input": 1, "output": 2}
    assert read_batch([1, 2]) == {"input": 1, "output": 2}  # what default_collate yields


def test_pair_with_dict_targets_merges_them() -> None:
    assert read_batch((1, {"a": 2, "b": 3})) == {"input": 1, "a": 2, "b": 3}


def test_pair_with_tuple_targets_numbers_them() -> None:
    assert read_batch((1, (2, 3))) == {"input": 1, "output": (2, 3), "output0": 2, "output1": 3}


@pytest.mark.parametrize(
    ("batch", "found"),
    [
        (torch.zeros(3), "Tensor"),
        ((1, 2, 3), "a tuple of 3 items"),
        ({1: 2}, "keys of a batch dict must be strings"),
    ],
)
def test_bad_batches(batch: object, found: str) -> None:
    with pytest.raises(TypeError, match=found):
        read_batch(batch)


class TwoInputs(nn.Module):
    def forward(self, image, text, scale=1.0):
        return image * scale + text


def test_inputs_by_parameter_name() -> None:
    out = call_model(TwoInputs(), {"image": torch.ones(1), "text": torch.ones(1), "y": 0})
    assert float(out) == 2.0
    out = call_model(TwoInputs(), {"image": torch.ones(1), "text": torch.ones(1), "scale": 3.0})
    assert float(out) == 4.0


def test_inputs_given_as_keys() -> None:
    data = {"a": torch.ones(1), "b": torch.ones(1) * 2}
    assert float(call_model(TwoInputs(), data, ["a", "b"])) == 3.0
    assert float(call_model(nn.Identity(), data, "b")) == 2.0


def test_missing_inputs_list_forward_parameters_and_batch_keys() -> None:
    with pytest.raises(MissingKeyError, match=r"lacks \['text'\]; the batch has keys \['image'"):
        call_model(TwoInputs(), {"image": torch.ones(1)})
    with pytest.raises(MissingKeyError, match=r"`inputs` names the batch entry 'x'; the batch"):
        call_model(TwoInputs(), {"image": torch.ones(1)}, "x")
