from __future__ import annotations

import functools

import pytest
import torch.nn.functional as F
from torch import nn

from multiloss.losses import MeanSquared
from multiloss.schedules import Cosine, LinearWarmup
from multiloss.spec.term import Term, target_mode


def _regularizer(x):
    return x.abs().mean()


def _optional(x, target=None):
    return x.sum()


class _TargetFree(nn.Module):
    def forward(self, x):
        return x.sum()


@pytest.mark.parametrize(
    ("loss", "mode"),
    [
        (MeanSquared(), "required"),
        (nn.CrossEntropyLoss(), "required"),
        (F.mse_loss, "required"),
        (functools.partial(F.cross_entropy, label_smoothing=0.1), "required"),
        (_regularizer, "none"),
        (_TargetFree(), "none"),
        (_optional, "optional"),
        (lambda *args: args[0].sum(), "optional"),
    ],
)
def test_target_mode_reads_the_signature(loss, mode: str) -> None:
    assert target_mode(loss, "`loss`") == mode


def test_target_mode_rejects_three_required_arguments() -> None:
    with pytest.raises(TypeError, match=r"`loss` of Attach must take \(input, target\)"):
        target_mode(lambda a, b, c: a, "`loss` of Attach")


def test_target_mode_rejects_no_argument() -> None:
    with pytest.raises(TypeError, match="must take"):
        target_mode(lambda: 0, "`loss`")


def test_weight_is_factor_times_schedules() -> None:
    term = Term("port", "kl").scaled(0.5).scaled(LinearWarmup(10)).scaled(-2.0)
    assert term.weight(5) == pytest.approx(0.5 * 0.5 * -2.0)
    assert term.weight(100) == pytest.approx(-1.0)


def test_terms_compare_losses_by_identity() -> None:
    loss = MeanSquared()
    assert Term("attach", "y", loss) == Term("attach", "y", loss)
    assert Term("attach", "y", loss) != Term("attach", "y", MeanSquared())
    assert len({Term("attach", "y", loss), Term("attach", "y", loss)}) == 1


@pytest.mark.parametrize(
    ("term", "text"),
    [
        (Term("port", "x"), "Port('x')"),
        (Term("port", "x").scaled(-1.0), "Maximize(Port('x'))"),
        (Term("automatic", None).scaled(0.5), "Scaled(Automatic, 0.5)"),
        (Term("automatic", "a"), "Automatic('a')"),
        (
            Term("port", "x").scaled(Cosine(10)),
            "Scaled(Port('x'), Cosine(steps=10, start=1.0, end=0.0, warmup=0))",
        ),
    ],
)
def test_describe(term: Term, text: str) -> None:
    assert term.describe() == text
