"""extract(): the inference model keeps no head parameters and computes what training did."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import multiloss as ml
from multiloss.layers import (
    ActivationRegularizer,
    AuxiliaryHead,
    ContrastiveHead,
    DroppedHead,
    EntropyRegularizer,
    GaussianKL,
    OrthogonalityRegularizer,
    Tapped,
    extract,
)


class _Net(nn.Module):
    """A model written with its heads and penalties inside (GoogLeNet style)."""

    def __init__(self, *, plain: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8) if plain else OrthogonalityRegularizer(nn.Linear(4, 8))
        self.act = nn.ReLU() if plain else ActivationRegularizer(nn.ReLU())
        self.aux = nn.Identity() if plain else AuxiliaryHead(nn.Linear(8, 3), target="y")
        self.contrast = nn.Identity() if plain else ContrastiveHead(8, 4, hidden_features=6)
        self.fc2 = nn.Linear(8, 3)
        self.entropy = nn.Identity() if plain else EntropyRegularizer(mode="maximize")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.aux(self.act(self.fc1(x)))
        h, _ = self.contrast(h, h + 0.1) if isinstance(self.contrast, ContrastiveHead) else (h, h)
        return self.entropy(self.fc2(h))


def _train_once(model: nn.Module) -> None:
    x = torch.randn(6, 4)
    with ml.collect(model, batch={"x": x, "y": torch.randint(0, 3, (6,))}) as book:
        model(x)
    book.total().backward()


def test_extracted_state_dict_is_that_of_the_plain_model() -> None:
    model = _Net()
    _train_once(model)  # leaves caches that hold autograd graphs
    inference = extract(model)
    assert sorted(inference.state_dict()) == sorted(_Net(plain=True).state_dict())
    assert isinstance(inference.aux, DroppedHead)
    assert isinstance(inference.fc1, nn.Linear)
    assert isinstance(inference.entropy, nn.Identity)
    # The copy computes what the training model computes, and the training model is intact.
    x = torch.randn(3, 4)
    torch.testing.assert_close(inference(x), model(x))
    assert isinstance(model.aux, AuxiliaryHead)
    assert inference.fc1.weight is not model.fc1.module.weight


def test_extracted_state_loads_into_the_plain_model() -> None:
    inference = extract(_Net())
    plain = _Net(plain=True)
    plain.load_state_dict(inference.state_dict())
    x = torch.randn(2, 4)
    torch.testing.assert_close(plain(x), inference(x))


def test_inplace_modifies_and_returns_the_model() -> None:
    model = _Net()
    assert extract(model, inplace=True) is model
    assert isinstance(model.aux, DroppedHead)
    assert not any(isinstance(m, ml.AuxiliaryLossModule) for m in model.modules())


def test_a_tapped_model_gives_back_its_net() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    tapped = Tapped(net, {"1": AuxiliaryHead(nn.Linear(8, 3), target=1)})
    assert extract(tapped, inplace=True) is net
    copy = extract(tapped)
    assert copy is not net
    assert sorted(copy.state_dict()) == sorted(net.state_dict())


def test_remaining_aux_layers_are_switched_off_unless_asked() -> None:
    model = nn.Sequential(nn.Linear(4, 4), GaussianKL())
    kept = extract(model)
    assert isinstance(kept[1], GaussianKL)
    assert kept[1].use_aux_loss is False
    with ml.collect(kept) as book:
        kept[1](torch.randn(2, 4), torch.zeros(2, 4))
    assert len(book) == 0
    assert extract(model, disable_aux_losses=False)[1].use_aux_loss is True


def test_nested_wrappers_unwrap_fully() -> None:
    linear = nn.Linear(3, 3)
    model = nn.Sequential(ActivationRegularizer(OrthogonalityRegularizer(linear)))
    assert extract(model, inplace=True)[0] is linear


def test_a_bad_inference_module_is_named() -> None:
    class Broken(nn.Module):
        def inference_module(self) -> str:
            return "nothing"

    with pytest.raises(TypeError, match=r"Broken.inference_module\(\) must return an nn.Module"):
        extract(nn.Sequential(Broken()))
    with pytest.raises(TypeError, match="`model` of extract"):
        extract("model")  # type: ignore[arg-type]


def test_inplace_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match=r"`inplace` of extract\(\) must be a bool; got 'yes'"):
        extract(nn.Linear(2, 2), inplace="yes")  # type: ignore[arg-type]
