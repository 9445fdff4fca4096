from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from multiloss.losses import MeanAbsolute
from multiloss.spec import Attach, Automatic, Explanation, Maximize, Scaled, attach, explain

from .toys import MultiHead, WithLosses, multi_head_batch


def test_prints_a_row_and_a_reason_per_loss() -> None:
    buffer = io.StringIO()
    rows = explain(MultiHead(), Automatic, multi_head_batch(), file=buffer)
    text = buffer.getvalue()
    assert isinstance(rows, Explanation)
    assert text.startswith("Losses of MultiHead at step 0:")
    assert text == str(rows) + "\n"
    for row in rows:
        assert f"[{row.rule}] {row.reason}" in text
    assert "module 'softmax_head.1' (Softmax(dim=-1))" in text


def test_rows_are_data() -> None:
    rows = explain(
        WithLosses(),
        [Scaled(Attach("pred", MeanAbsolute(), name="l1"), 0.5), Maximize("scalar")],
        {"input": torch.randn(3, 4), "pred": torch.zeros(3, 2)},
        quiet=True,
    )
    l1, scalar = rows
    assert (l1.name, l1.port, l1.loss, l1.target, l1.weight, l1.rule) == (
        "l1",
        "pred",
        "MeanAbsolute()",
        "pred",
        0.5,
        "attach",
    )
    assert l1.term == "Scaled(Attach('pred', MeanAbsolute()), 0.5)"
    assert (scalar.loss, scalar.target, scalar.weight) == ("the output itself", None, -1.0)
    assert scalar.values["scalar"] > 0
    assert rows.by_port() == {"pred": [l1], "scalar": [scalar]}


def test_multi_output_values_are_listed() -> None:
    def parts(y, target):
        return {"a": (y - target).abs().mean(), "b": y.pow(2).mean()}

    rows = explain(
        WithLosses(),
        Attach("pred", parts),
        {"input": torch.randn(3, 4), "pred": torch.zeros(3, 2)},
        quiet=True,
    )
    assert set(rows[0].values) == {"pred/a", "pred/b"}


def test_explain_a_training_net_uses_its_plan() -> None:
    net = attach(MultiHead(), Automatic("logits"))
    net.step = 7
    rows = explain(net, batch=multi_head_batch(), quiet=True)
    assert rows.step == 7
    assert [row.rule for row in rows] == ["logits/index"]
    with pytest.raises(ValueError, match="got a training net and a spec"):
        explain(net, Automatic, multi_head_batch(), quiet=True)


def test_batch_is_required() -> None:
    with pytest.raises(ValueError, match="`batch` of explain\\(\\) is required"):
        explain(nn.Linear(2, 2))


def test_explain_under_no_grad_still_reads_ops() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x).softmax(-1)

    with torch.no_grad():
        rows = explain(Model(), batch=(torch.randn(2, 4), torch.tensor([0, 2])), quiet=True)
    assert rows[0].rule == "probabilities/index"


def test_a_model_that_is_not_a_module_names_explains_parameter() -> None:
    with pytest.raises(TypeError, match=r"`model` of explain\(\) must be an nn.Module .*; got 'x'"):
        explain("x", Automatic, batch=(torch.randn(2, 3),), quiet=True)  # type: ignore[arg-type]
