"""Each rule of Automatic, on real module types, and its errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multiloss.losses import (
    NLL,
    BinaryCrossEntropy,
    Contrastive,
    CrossEntropy,
    MeanSquared,
    TargetMismatchError,
)
from multiloss.spec import (
    Automatic,
    AutomaticError,
    MissingKeyError,
    attach,
    explain,
    mark_output,
)

from .toys import Functional, MultiHead, WithLosses, multi_head_batch


def _rules(model: nn.Module, batch: object, spec: object = Automatic) -> dict[str, tuple]:
    rows = explain(model, spec, batch, quiet=True)  # type: ignore[arg-type]
    net_losses = {row.port: (row.rule, row.loss) for row in rows}
    return net_losses


def _chosen(model: nn.Module, batch: object) -> dict[str, object]:
    net = attach(model)
    net(batch)
    return {item.port: item.loss for item in net.plan or ()}


def test_module_rules_on_a_multi_head_model() -> None:
    rules = _rules(MultiHead(), multi_head_batch())
    assert {port: rule for port, (rule, _) in rules.items()} == {
        "probs": "probabilities/index",
        "log_probs": "log_probabilities/index",
        "yes_no": "binary_probabilities",
        "logits": "logits/index",
        "binary": "logits/binary",
        "value": "same_shape",
        "distance": "pair_distance",
    }
    losses = _chosen(MultiHead(), multi_head_batch())
    assert isinstance(losses["probs"], CrossEntropy)
    assert losses["probs"].input == "probabilities"
    assert isinstance(losses["log_probs"], NLL)
    assert isinstance(losses["yes_no"], BinaryCrossEntropy)
    assert isinstance(losses["logits"], CrossEntropy)
    assert losses["logits"].input == "logits"
    assert isinstance(losses["binary"], BinaryCrossEntropy)
    assert losses["binary"].input == "logits"
    assert isinstance(losses["value"], MeanSquared)
    assert isinstance(losses["distance"], Contrastive)


def test_values_match_hand_computed_losses() -> None:
    model, batch = MultiHead(), multi_head_batch()
    out = attach(model)(batch)
    with torch.no_grad():
        ports = model(batch["input"])
    probs, y = ports["probs"], batch["probs"]
    expected = -sum(math.log(float(probs[i, int(y[i])])) for i in range(len(y))) / len(y)
    assert float(out["probs"].detach()) == pytest.approx(expected, rel=1e-5)
    p, t = ports["yes_no"], batch["yes_no"]
    expected_bce = float(-(t * p.log() + (1 - t) * (1 - p).log()).mean())
    assert float(out["yes_no"].detach()) == pytest.approx(expected_bce, rel=1e-5)
    d, s = ports["distance"], batch["distance"].float()
    expected_c = float((s * d**2 + (1 - s) * torch.relu(1 - d) ** 2).mean())
    assert float(out["distance"].detach()) == pytest.approx(expected_c, rel=1e-5)


def test_soft_targets_for_softmax_and_log_softmax() -> None:
    batch = multi_head_batch()
    batch["probs"] = torch.rand(6, 3).softmax(1)
    batch["log_probs"] = torch.rand(6, 3).softmax(1)
    rules = _rules(MultiHead(), batch, Automatic("probs", "log_probs"))
    assert rules["probs"][0] == "probabilities/distribution"
    assert rules["log_probs"][0] == "log_probabilities/distribution"


def test_op_rules_read_the_autograd_graph() -> None:
    batch = {
        "input": torch.randn(5, 4),
        "probs": torch.randint(0, 3, (5,)),
        "log_probs": torch.randint(0, 3, (5,)),
        "sig": torch.rand(5, 3),
        "scaled": torch.randint(0, 3, (5,)),
    }
    rules = _rules(Functional(), batch)
    assert rules["probs"][0] == "probabilities/index"
    assert rules["log_probs"] == ("log_probabilities/index", "NLL(class_dim=-1)")
    assert rules["sig"][0] == "binary_probabilities"
    assert rules["scaled"][0] == "index_target"  # unknown op, integer class indices
    assert rules["mse"][0] == "loss"  # F.mse_loss's autograd node


def test_op_rules_work_when_first_called_without_grad() -> None:
    batch = {"input": torch.randn(5, 4), "probs": torch.randint(0, 3, (5,))}
    net = attach(Functional(), Automatic("probs"))
    with torch.no_grad():
        net(batch)
    assert net.plan is not None
    assert net.plan[0].rule == "probabilities/index"


def test_loss_outputs_are_used_unchanged() -> None:
    rules = _rules(WithLosses(), {"input": torch.randn(3, 4)}, Automatic("criterion", "scalar"))
    assert rules["criterion"][0] == "loss"  # nn.MSELoss inside the model
    assert rules["scalar"][0] == "scalar_output"  # 0-dim, no target


def test_array_valued_loss_output_is_summed() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.criterion = mark_output(nn.Identity(), "loss")

        def forward(self, x):
            return self.criterion(F.mse_loss(self.fc(x), x, reduction="none"))

    model = Model()
    x = torch.randn(3, 2)
    out = attach(model)({"input": x})
    with torch.no_grad():
        expected = float(((model.fc(x) - x) ** 2).sum())
    assert float(out["output"].detach()) == pytest.approx(expected, rel=1e-6)


def test_softmax2d_and_conv_segmentation() -> None:
    conv = nn.Conv2d(2, 4, 1)
    target = torch.randint(0, 4, (2, 5, 5))
    rules = _rules(conv, {"input": torch.randn(2, 2, 5, 5), "output": target})
    assert rules["output"][0] == "logits/index"
    model = nn.Sequential(conv, nn.Softmax2d())
    rules = _rules(model, {"input": torch.randn(2, 2, 5, 5), "output": target})
    assert rules["output"] == (
        "probabilities/index",
        "CrossEntropy(input='probabilities', target='index', class_dim=-3)",
    )


def test_linear_over_a_sequence_uses_the_last_dim() -> None:
    model = nn.Linear(4, 5)
    batch = (torch.randn(2, 7, 4), torch.randint(0, 5, (2, 7)))
    rules = _rules(model, batch)
    assert rules["output"] == ("logits/index", "CrossEntropy(input='logits', class_dim=-1)")
    out = attach(model)(batch)
    with torch.no_grad():
        expected = F.cross_entropy(model(batch[0]).reshape(-1, 5), batch[1].reshape(-1))
    assert float(out["output"].detach()) == pytest.approx(float(expected), rel=1e-6)


def test_linear_with_bool_targets_is_multilabel() -> None:
    batch = (torch.randn(4, 3), torch.rand(4, 2) > 0.5)
    assert _rules(nn.Linear(3, 2), batch)["output"][0] == "logits/multilabel"


def test_linear_with_float_target_is_regression() -> None:
    assert _rules(nn.Linear(3, 2), (torch.randn(4, 3), torch.randn(4, 2)))["output"] == (
        "same_shape",
        "MeanSquared()",
    )


class PairEncoder(nn.Module):
    output_kind = "pair_embeddings"

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        return self.fc(a), self.fc(b)


def test_pair_embeddings_marker_on_a_tuple_output() -> None:
    class Siamese(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = PairEncoder()

        def forward(self, a, b):
            return {"pair": self.pair(a, b)}

    batch = {"a": torch.randn(4, 3), "b": torch.randn(4, 3), "pair": torch.tensor([1, 0, 1, 0])}
    rules = _rules(Siamese(), batch)
    assert rules["pair"] == ("pair_embeddings", "Contrastive(margin=1.0, input='embeddings')")


@pytest.mark.parametrize(
    ("kind", "target", "rule", "loss_type"),
    [
        ("regression", torch.randn(4, 2), "regression", MeanSquared),
        ("binary_logits", torch.rand(4, 2), "binary_logits", BinaryCrossEntropy),
        ("logits", torch.randint(0, 2, (4,)), "logits/index", CrossEntropy),
        ("probabilities", torch.randint(0, 2, (4,)), "probabilities/index", CrossEntropy),
        ("pair_distance", torch.randint(0, 2, (4, 2)), "pair_distance", Contrastive),
    ],
)
def test_markers(kind: str, target: Tensor, rule: str, loss_type: type) -> None:
    # Probabilities are checked to lie in [0, 1]: the marked output must really be some.
    base = nn.Sequential(nn.Linear(3, 2), nn.Softmax(-1)) if kind == "probabilities" else None
    model = mark_output(base if base is not None else nn.Linear(3, 2), kind)
    net = attach(model)
    net((torch.rand(4, 3), target))
    assert net.plan is not None
    assert net.plan[0].rule == rule
    assert isinstance(net.plan[0].loss, loss_type)


def test_module_that_names_its_own_loss() -> None:
    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return F.pairwise_distance(*self.fc(x).chunk(2, dim=0))

        def automatic_loss(self) -> nn.Module:
            return Contrastive(margin=2.5)

    rules = _rules(Embed(), (torch.randn(4, 3), torch.tensor([1, 0])))
    assert rules["output"] == ("automatic_loss", "Contrastive(margin=2.5)")


def test_automatic_loss_that_is_not_callable() -> None:
    class Bad(nn.Linear):
        def automatic_loss(self):
            return "mse"

    with pytest.raises(TypeError, match="automatic_loss\\(\\) of Bad must return a loss"):
        attach(Bad(2, 2))((torch.randn(3, 2), torch.randn(3, 2)))


# -- errors ------------------------------------------------------------------------------------


def test_missing_target_lists_the_batch_keys() -> None:
    with pytest.raises(MissingKeyError) as info:
        attach(MultiHead(), Automatic("logits"))({"input": torch.randn(3, 4), "label": 1})
    message = str(info.value)
    assert "Automatic needs a target for port 'logits'" in message
    assert "its keys are ['input', 'label']" in message


def test_unreadable_target() -> None:
    batch = {"input": torch.randn(3, 4), "value": [[0.0, 1.0]] * 3}
    with pytest.raises(AutomaticError, match=r"cannot read the target of port 'value'.*list"):
        attach(MultiHead(), Automatic("value"))(batch)


def test_unclassifiable_output_with_unreadable_target() -> None:
    class Model(nn.Module):
        def forward(self, x):
            return torch.relu(x)

    with pytest.raises(AutomaticError) as info:
        attach(Model())((torch.randn(3, 4), torch.randn(3, 5)))
    message = str(info.value)
    assert "cannot choose a loss for port 'output'" in message
    assert "shape (3, 4) float32" in message
    assert "shape (3, 5) float32" in message
    assert "mark_output" in message


def test_non_tensor_output_without_a_rule() -> None:
    class Model(nn.Module):
        def forward(self, x):
            return {"pair": (x, x)}

    with pytest.raises(AutomaticError, match="cannot choose a loss for port 'pair'"):
        attach(Model())({"input": torch.randn(2, 2), "pair": torch.ones(2)})


def test_target_that_does_not_fit_the_chosen_loss() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=-1))
    with pytest.raises(TargetMismatchError) as info:
        attach(model)((torch.randn(5, 4), torch.zeros(5, 2, dtype=torch.long)))
    message = str(info.value)
    assert "port 'output'" in message
    assert "CrossEntropy(input='probabilities'" in message
    assert "input shape (5, 3) float32, target shape (5, 2) int64" in message


def test_ops_are_read_through_reshapes_and_casts() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.gate = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())

        def forward(self, x):
            z = self.fc(x)
            return {
                "gate": self.gate(x).squeeze(1),
                "tokens": z.softmax(-1).view(2, 2, 3),
                "cast": z.log_softmax(1).double(),
            }

    batch = {
        "input": torch.randn(4, 4),
        "gate": torch.rand(4),
        "tokens": torch.randint(0, 3, (2, 2)),
        "cast": torch.randint(0, 3, (4,)),
    }
    rows = {row.port: row for row in explain(Model(), Automatic, batch, quiet=True)}
    assert rows["gate"].rule == "binary_probabilities"
    assert "then squeeze" in rows["gate"].reason
    # A view moves dims: the class dim comes from the target's shape, not from the op.
    assert rows["tokens"].loss == "CrossEntropy(input='probabilities', target='index', class_dim=2)"
    assert rows["cast"].loss == "NLL()"  # a cast keeps the op's dim (1)
