"""attach(): Port, Attach, lists, Scaled, Maximize, multi-output losses, the untouched .net."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import multiloss as ml
from multiloss.losses import CrossEntropy, MeanAbsolute, MeanSquared, TargetMismatchError
from multiloss.schedules import LinearWarmup
from multiloss.spec import (
    Attach,
    Automatic,
    Maximize,
    MissingKeyError,
    Port,
    Scaled,
    TrainingNet,
    attach,
)

from .toys import MultiHead, WithLosses, multi_head_batch


def _batch() -> dict[str, Tensor]:
    return {"input": torch.randn(3, 4), "pred": torch.randn(3, 2)}


def test_port_returns_the_output_as_the_loss() -> None:
    model = WithLosses()
    out = attach(model, Port("criterion"))(_batch())
    assert isinstance(out, ml.NamedLosses)
    assert list(out) == ["criterion"]
    assert out.weights == {"criterion": 1.0}
    assert out["criterion"].requires_grad


def test_array_valued_port_is_summed() -> None:
    model, batch = WithLosses(), _batch()
    out = attach(model, "per_example")(batch)
    with torch.no_grad():
        expected = model.fc(batch["input"]).pow(2).sum()
    torch.testing.assert_close(out["per_example"].detach(), expected)


def test_attach_with_target_and_names() -> None:
    model, batch = WithLosses(), _batch()
    batch["goal"] = torch.zeros(3, 2)
    out = attach(model, Attach("pred", MeanAbsolute(), target="goal", name="l1"))(batch)
    with torch.no_grad():
        expected = model.fc(batch["input"]).abs().mean()
    torch.testing.assert_close(out["l1"].detach(), expected)


def test_attach_target_free_and_optional_losses() -> None:
    batch = _batch()

    def optional(y, target=None):
        return y.sum() if target is None else (y - target).sum()

    spec = [
        Attach("pred", lambda y: y.pow(2).mean(), name="energy"),
        Attach("pred", optional, name="with_target"),
        Attach("pred", optional, target="absent", name="without_target"),
    ]
    out = attach(WithLosses(), spec)(batch)
    y = out["without_target"]
    torch.testing.assert_close(out["with_target"], y - batch["pred"].sum())


def test_dict_shorthand_and_torch_losses() -> None:
    out = attach(WithLosses(), {"pred": nn.SmoothL1Loss()})(_batch())
    assert list(out) == ["pred"]


def test_list_trains_only_the_named_ports() -> None:
    model, batch = MultiHead(), multi_head_batch()
    net = attach(model, [Attach("logits", CrossEntropy()), "distance"])
    out = net(batch)
    assert list(out) == ["logits", "distance"]
    out.total().backward()
    assert model.softmax_head[0].weight.grad is None  # an ignored port gets no gradient
    assert model.logits_head.weight.grad is not None


def test_automatic_in_a_list_covers_the_other_ports() -> None:
    net = attach(MultiHead(), [Automatic, Attach("value", MeanAbsolute())])
    net(multi_head_batch())
    plan = {item.port: item for item in net.plan or ()}
    assert len(plan) == 7
    assert plan["value"].rule == "attach"
    assert isinstance(plan["value"].loss, MeanAbsolute)


def test_scaled_and_maximize_weights_and_raw_values() -> None:
    spec = [Scaled("criterion", 0.5), Maximize(Scaled(Port("scalar"), 0.1))]
    out = attach(WithLosses(), spec)(_batch())
    assert out.weights == {"criterion": 0.5, "scalar": pytest.approx(-0.1)}
    assert float(out["scalar"].detach()) > 0  # reported as itself, positive
    expected = 0.5 * out["criterion"] - 0.1 * out["scalar"]
    torch.testing.assert_close(out.total(), expected)


def test_schedule_reads_the_collectors_step_then_the_nets_step() -> None:
    net = attach(WithLosses(), Scaled("criterion", LinearWarmup(100)))
    with ml.collect(net, step=25):
        out = net(_batch())
    assert out.weights["criterion"] == pytest.approx(0.25)
    net.step = 50
    assert net(_batch()).weights["criterion"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="`step` of TrainingNet must be >= 0; got -1"):
        net.step = -1


def test_multi_output_loss_module_reports_each_part() -> None:
    class ReconAndKL(nn.Module):
        def forward(self, input: Tensor, target: Tensor) -> dict[str, Tensor]:
            return {"recon": (input - target).pow(2).mean(), "kl": input.pow(2).sum(1).mean()}

    batch = _batch()
    out = attach(WithLosses(), Scaled(Attach("pred", ReconAndKL(), name="vae"), 2.0))(batch)
    assert list(out) == ["vae/recon", "vae/kl"]
    assert out.weights == {"vae/recon": 2.0, "vae/kl": 2.0}
    torch.testing.assert_close(out.total(), 2.0 * (out["vae/recon"] + out["vae/kl"]))


def test_net_is_the_untouched_model() -> None:
    model = MultiHead()
    keys = set(model.state_dict())
    net = attach(model, [Automatic, Attach("value", MeanAbsolute())])
    net(multi_head_batch())
    assert net.net is model
    assert set(model.state_dict()) == keys
    assert not any(isinstance(m, (MeanAbsolute, CrossEntropy)) for m in model.modules())
    assert all(key.startswith(("net.", "losses.")) for key in net.state_dict())


def test_loss_buffers_live_in_the_training_net() -> None:
    weight = torch.tensor([1.0, 2.0, 3.0])
    net = attach(MultiHead(), Attach("logits", CrossEntropy(class_weight=weight)))
    assert "losses.0.class_weight" in net.state_dict()
    net.to(torch.float64)
    assert net.losses[0].class_weight.dtype == torch.float64


def test_model_losses_reach_the_collector_under_the_models_names() -> None:
    net = attach(WithLosses(), Port("criterion"))
    with ml.collect(net) as book:
        out = net(_batch())
    assert list(book) == ["l2"]  # not 'net/l2': the collector sees through the training net
    assert list(out) == ["criterion"]


def test_name_collision_with_an_emitted_loss_is_an_error() -> None:
    net = attach(WithLosses(), Port("criterion", name="l2"))
    with ml.collect(net), pytest.raises(ValueError, match=r"spec's losses \['l2'\].*the model"):
        net(_batch())


def test_inputs_by_name() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 1)

        def forward(self, a, b):
            return self.fc(a + b)

    batch = {"a": torch.ones(2, 2), "b": torch.ones(2, 2), "output": torch.zeros(2, 1)}
    assert list(attach(TwoInputs())(batch)) == ["output"]
    batch = {"x1": torch.ones(2, 2), "x2": torch.ones(2, 2), "output": torch.zeros(2, 1)}
    assert list(attach(TwoInputs(), inputs=["x1", "x2"])(batch)) == ["output"]


def test_tuple_output_ports() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 3), nn.Linear(2, 1)

        def forward(self, x):
            return self.a(x), self.b(x)

    targets = (torch.randint(0, 3, (4,)), torch.randn(4, 1))
    out = attach(Two())((torch.randn(4, 2), targets))
    assert list(out) == ["output0", "output1"]


# -- bad input ---------------------------------------------------------------------------------


def test_unknown_port_lists_the_ports_produced() -> None:
    with pytest.raises(MissingKeyError) as info:
        attach(WithLosses(), Port("kl"))(_batch())
    assert str(info.value) == (
        "Port('kl') names the output port 'kl', which the model does not produce; its ports "
        "are ['criterion', 'per_example', 'pred', 'scalar']"
    )


def test_attach_target_missing_lists_the_batch_keys() -> None:
    with pytest.raises(MissingKeyError, match=r"needs the target batch\['goal'\].*\['input', "):
        attach(WithLosses(), Attach("pred", MeanSquared(), target="goal"))(_batch())


def test_attach_target_that_does_not_fit() -> None:
    batch = _batch()
    batch["pred"] = torch.randn(3, 5)
    with pytest.raises(TargetMismatchError) as info:
        attach(WithLosses(), Attach("pred", MeanSquared()))(batch)
    assert "loss 'pred' on port 'pred' with target batch['pred']" in str(info.value)
    assert "input shape (3, 2) float32, target shape (3, 5) float32" in str(info.value)


@pytest.mark.filterwarnings("ignore:Using a target size")
def test_foreign_loss_errors_get_a_note() -> None:
    batch = _batch()
    batch["pred"] = torch.randn(3, 5)
    with pytest.raises(RuntimeError) as info:
        attach(WithLosses(), {"pred": nn.MSELoss()})(batch)
    notes = "".join(getattr(info.value, "__notes__", []))
    assert "loss 'pred' = Attach('pred', MSELoss())" in notes
    assert "shape (3, 5) float32" in notes


def test_ports_that_vanish_after_the_first_batch() -> None:
    class Moody(nn.Module):
        def forward(self, x):
            return {"a": x.sum()} if self.training else {"b": x.sum()}

    net = attach(Moody(), "a")
    net({"input": torch.ones(2)})
    net.eval()
    with pytest.raises(MissingKeyError, match=r"produced on the first batch .* now are \['b'\]"):
        net({"input": torch.ones(2)})


def test_duplicate_names_are_an_error() -> None:
    spec = [Attach("pred", MeanSquared()), Attach("pred", MeanAbsolute())]
    with pytest.raises(ValueError, match="two losses of the spec are both named 'pred'"):
        attach(WithLosses(), spec)(_batch())


def test_two_open_automatics() -> None:
    with pytest.raises(ValueError, match=r"holds Automatic .* 2 times"):
        attach(WithLosses(), [Automatic, Scaled(Automatic, 2.0)])


def test_empty_spec() -> None:
    with pytest.raises(ValueError, match="the spec of attach\\(\\) is empty"):
        attach(WithLosses(), [])


def test_unknown_spec_type() -> None:
    with pytest.raises(TypeError, match="a loss spec must be Automatic, Port"):
        attach(WithLosses(), 3)  # type: ignore[arg-type]


def test_not_a_model_and_attached_twice() -> None:
    with pytest.raises(TypeError, match=r"`model` of attach\(\) must be an nn\.Module"):
        attach(lambda x: x, "loss")  # type: ignore[arg-type]
    net = attach(WithLosses(), "criterion")
    with pytest.raises(TypeError, match="already a training net"):
        attach(net, "criterion")
    with pytest.raises(TypeError, match="already a training net"):
        attach(nn.DataParallel(net), "criterion")


def test_non_tensor_loss_value() -> None:
    with pytest.raises(TypeError, match=r"loss 'pred' .* must be a tensor; got 'oops'"):
        attach(WithLosses(), Attach("pred", lambda y: "oops"))(_batch())


def test_reset_plan_resolves_again() -> None:
    net = attach(MultiHead(), Automatic("value"))
    net(multi_head_batch())
    first = net.plan
    net.reset_plan()
    assert net.plan is None
    net(multi_head_batch())
    assert first is not None
    assert net.plan is not None
    assert first[0].loss is not net.plan[0].loss
    assert len(net.losses) == 1


def test_repr_shows_the_spec() -> None:
    net = attach(WithLosses(), [Automatic, Maximize("scalar")])
    assert isinstance(net, TrainingNet)
    assert "spec=[Automatic, Maximize('scalar')]" in repr(net)


def test_extract_returns_the_plain_model_of_a_training_net() -> None:
    import torch

    import multiloss as ml
    from multiloss.layers import extract

    model = torch.nn.Linear(3, 2)
    training_net = ml.attach(model, ml.Automatic)
    assert extract(training_net, inplace=True) is model


def test_class_index_out_of_range_names_the_spec_port_and_target() -> None:
    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(2, 3)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"cls": self.linear(x)}

    batch = {"x": torch.randn(4, 2), "cls": torch.tensor([0, 1, 7, 0])}
    # A foreign loss: torch's IndexError, with a note naming the spec, the port and the target.
    with pytest.raises(IndexError) as info:
        attach(Classifier(), Attach("cls", nn.CrossEntropyLoss()), inputs="x")(batch)
    notes = "".join(getattr(info.value, "__notes__", []))
    assert "loss 'cls' = Attach('cls', CrossEntropyLoss()) on port 'cls'" in notes
    assert "target batch['cls'] shape (4,) int64" in notes
    # Ours: a ValueError naming `target`, the classes and the value, with the same note.
    with pytest.raises(ValueError, match=r"`target` of CrossEntropy.*3 classes.*got 7") as found:
        attach(Classifier(), Attach("cls", CrossEntropy()), inputs="x")(batch)
    assert "on port 'cls'" in "".join(getattr(found.value, "__notes__", []))


@pytest.mark.parametrize(
    ("returned", "error", "match"),
    [
        (
            lambda out: {1: out.mean()},
            TypeError,
            r"each key of the mapping that loss 'pred' \(Attach\('pred', .*\)\) returned must be a "
            r"non-empty string; got 1 \(int\)",
        ),
        (lambda out: {}, ValueError, r"loss 'pred' \(Attach\('pred', .*\)\) returned an empty"),
        (
            lambda out: out.pow(2).mean(1),
            ValueError,
            r"loss 'pred' \(from Attach\('pred', .*\)\) must be a scalar .*; got shape \(3,\)",
        ),
    ],
    ids=["int-key", "empty", "non-scalar"],
)
def test_what_an_attached_loss_returns_is_checked(returned, error, match) -> None:  # type: ignore[no-untyped-def]
    def reg(output: Tensor) -> object:
        return returned(output)

    with pytest.raises(error, match=match):
        attach(WithLosses(), Attach("pred", reg))(_batch())
