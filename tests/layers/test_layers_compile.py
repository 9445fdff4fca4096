"""Every layer of ``multiloss.layers`` contributes the same losses under torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import multiloss as ml
from multiloss.layers import (
    ActivationRegularizer,
    AuxiliaryHead,
    ContrastiveHead,
    EntropyRegularizer,
    GaussianKL,
    OrthogonalityRegularizer,
)


class _AllLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = OrthogonalityRegularizer(nn.Linear(4, 8))
        self.act = ActivationRegularizer(nn.ReLU(), penalty="kl", rho=0.1)
        self.head = AuxiliaryHead(nn.Linear(8, 3), target="y")
        self.contrast = ContrastiveHead(8, 4)
        self.latent = nn.Linear(8, 4)
        self.kl = GaussianKL(free_bits=0.1)
        self.out = nn.Linear(2, 3)
        self.entropy = EntropyRegularizer(mode="maximize")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.head(self.act(self.fc(x)), target=y)
        h, _ = self.contrast(h, h.flip(0))
        mean, logvar = self.latent(h).chunk(2, dim=-1)
        return self.entropy(self.out(self.kl(mean, logvar)))


@pytest.mark.slow
def test_compiled_fullgraph_model_emits_the_eager_losses() -> None:
    model = _AllLayers().eval()  # eval: GaussianKL returns the mean, both runs match exactly
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    with ml.collect(model) as eager:
        expected = model(x, y)
    compiled = torch.compile(model, fullgraph=True)
    with ml.collect(model) as book:
        out = compiled(x, y)
    torch.testing.assert_close(out, expected)
    assert sorted(book) == sorted(eager)
    assert len(book) == 6
    for name in eager:
        torch.testing.assert_close(book[name], eager[name], rtol=1e-4, atol=1e-5)
