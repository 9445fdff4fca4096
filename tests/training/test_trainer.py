"""Trainer: what it trains on, how it weighs, guards, accumulates, logs and evaluates."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import multiloss as ml
from tests.aux_cases.toy import ToyPenalty
from tests.training.models import TwoLoss, make_trainer, regression_batches


def test_total_combines_returned_emitted_and_auxiliary_losses() -> None:
    class WithAux(TwoLoss):
        def __init__(self) -> None:
            super().__init__()
            self.reg = ToyPenalty(dim=1, aux_loss_weight=0.5)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
            out = super().forward(x, y)
            self.reg(x[:, :1])
            return out

    trainer = make_trainer(WithAux(), log_every=1)
    history = trainer.fit(regression_batches(1), steps=1)
    row = history.last()
    assert sorted(history.losses()) == ["l2", "mse", "reg/l1", "reg/l2"]
    assert row["weight/l2"] == pytest.approx(0.1)
    assert row["weight/reg/l1"] == pytest.approx(0.5)
    assert row["weight/reg/l2"] == pytest.approx(0.25)  # aux weight x term coefficient
    weighted = [row[f"weighted/{name}"] for name in history.losses()]
    assert row["total"] == pytest.approx(sum(weighted), rel=1e-6)
    for name in history.losses():
        assert row[f"weighted/{name}"] == pytest.approx(
            row[f"weight/{name}"] * row[f"loss/{name}"], rel=1e-6
        )


def test_update_equals_hand_written_weighted_sum() -> None:
    torch.manual_seed(1)
    model = TwoLoss()
    reference = copy.deepcopy(model)
    batches = regression_batches(3)
    make_trainer(model, weights={"mse": 2.0}).fit(batches, epochs=1)

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)
    for x, y in batches:
        hidden = torch.relu(reference.body(x))
        loss = 2.0 * F.mse_loss(reference.head(hidden).squeeze(-1), y) + 0.1 * hidden.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs)


def test_scalar_output_is_named_loss_and_named_losses_keep_their_weights() -> None:
    class Scalar(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (self.w * x).pow(2).mean()

    history = make_trainer(Scalar(), log_every=1).fit([torch.ones(3)], steps=1)
    assert history.losses() == ["loss"]

    class Weighted(Scalar):
        def forward(self, x: torch.Tensor) -> ml.NamedLosses:  # type: ignore[override]
            value = (self.w * x).mean()
            return ml.NamedLosses(
                {"fit": value.pow(2), "spread": value.abs()}, weights={"spread": -0.5}
            )

    history = make_trainer(Weighted(), log_every=1).fit([torch.ones(3)], steps=1)
    assert history.last()["weight/spread"] == -0.5
    assert history.last()["loss/spread"] > 0  # a maximized loss is shown as itself


def test_static_weights_accept_globs_and_schedules() -> None:
    trainer = make_trainer(weights={"m*": 3.0, "l2": ml.schedules.LinearWarmup(4)}, log_every=1)
    history = trainer.fit(regression_batches(3), steps=3)
    assert [row["weight/mse"] for row in history] == [3.0, 3.0, 3.0]
    assert [row["weight/l2"] for row in history] == pytest.approx([0.0, 0.025, 0.05])


def test_weight_for_a_loss_that_never_appears_is_an_error() -> None:
    trainer = make_trainer(weights={"recon": 1.0})
    with pytest.raises(ValueError, match=r"`weights` names losses .*\['recon'\].*\['l2', 'mse'\]"):
        trainer.fit(regression_batches(1), steps=1)


class Emits(nn.Module):
    """Returns whatever the test puts in ``output``."""

    def __init__(self, output: object) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.output = output

    def forward(self, x: torch.Tensor) -> object:
        value = self.output
        return value(self.w) if callable(value) else value


@pytest.mark.parametrize(
    ("output", "error", "match"),
    [
        (
            lambda w: w * torch.ones(3),
            ValueError,
            r"returned a tensor of shape \(3,\), not a scalar",
        ),
        (lambda w: {"a": w * torch.ones(2)}, ValueError, r"value 'a' is Tensor\(shape=\(2,\)"),
        (lambda w: {"a": 1.0}, ValueError, r"value 'a' is 1.0 \(float\)"),
        (
            lambda w: {"loss": w, "logits": torch.ones(2, 3)},
            ValueError,
            "Hugging Face style output",
        ),
        ({}, ValueError, "returned an empty dict"),
        (None, ValueError, "returned None and emitted no loss"),
        ("loss", TypeError, r"the model returned 'loss' \(str\)"),
        (lambda w: {"a": torch.tensor(1)}, TypeError, "loss 'a'.*floating-point.*int64"),
        (lambda w: {"": w}, ValueError, r"dict with the key '' \(str\); loss names must be"),
        (lambda w: {3: w}, TypeError, r"dict with the key 3 \(int\); loss names must be non"),
        (lambda w: w.to("meta"), ValueError, "must be on device cpu; got a tensor on meta"),
    ],
)
def test_bad_model_outputs_are_named(output: object, error: type, match: str) -> None:
    trainer = make_trainer(Emits(output))
    with pytest.raises(error, match=match):
        trainer.fit([torch.ones(1)], steps=1)


def test_model_may_return_nothing_and_emit_everything() -> None:
    class Silent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> None:
            ml.add_loss("only", (self.w * x).pow(2).mean())

    history = make_trainer(Silent(), log_every=1).fit([torch.ones(2)], steps=2)
    assert history.losses() == ["only"]


class NaNAt(nn.Module):
    """Finite losses except at the listed steps, where 'bad' is NaN."""

    def __init__(self, bad_steps: set[int]) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.calls = 0
        self.bad_steps = bad_steps

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.lin(x).mean()
        bad = out * (float("nan") if self.calls in self.bad_steps else 1.0)
        self.calls += 1
        return {"good": out.pow(2), "bad": bad.abs()}


def test_nonfinite_raise_names_loss_and_step_and_leaves_state_untouched() -> None:
    model = NaNAt({2})
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    trainer = ml.Trainer(model, optimizer, sinks=[])
    batches = [torch.ones(1, 2)] * 4
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 2: 'bad' = nan"):
        trainer.fit(batches, steps=4)
    # Steps 0 and 1 happened; step 2 did not touch parameters or optimizer state.
    assert trainer.step == 2
    assert optimizer.state_dict()["state"][0]["step"] == 2
    for parameter in model.parameters():
        assert parameter.grad is None
        assert torch.isfinite(parameter).all()


def test_nonfinite_skip_counts_logs_and_continues() -> None:
    model = NaNAt({1, 3})
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    trainer = ml.Trainer(model, optimizer, sinks=[], nonfinite="skip", log_every=5)
    history = trainer.fit([torch.ones(1, 2)] * 5, steps=5)
    assert trainer.skipped == 2
    assert optimizer.state_dict()["state"][0]["step"] == 3  # 5 steps, 2 skipped
    events = [e for e in history.events if e["event"] == "nonfinite"]
    # The message names the step by its index (as add_loss sees it); the row is the one of
    # the step it skipped, counted like the train rows (steps taken after it).
    assert [e["step"] for e in events] == [2, 4]
    assert "at step 1" in events[0]["message"]
    assert "'bad' = nan" in events[0]["message"]
    assert history.last()["skipped"] == 2
    assert not torch.equal(model.lin.weight, before["lin.weight"])


def test_negative_auxiliary_loss_is_an_error_naming_the_layer() -> None:
    class Liar(ml.AuxiliaryLossModule):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.save_for_aux_loss(x)
            return x

        def aux_loss_terms(self, cache: torch.Tensor) -> torch.Tensor:
            return -1.0 - cache.abs().mean()  # always negative

    model = nn.Sequential(nn.Linear(2, 2), Liar())
    trainer = ml.Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sinks=[],
        forward=lambda m, b: m(b).pow(2).mean(),
    )
    with pytest.raises(ValueError, match=r"negative at step 0: '1/aux' = .* \(from 1\)"):
        trainer.fit([torch.ones(1, 2) * 5], steps=1)


def test_accumulation_matches_one_big_batch() -> None:
    torch.manual_seed(3)
    big, small = TwoLoss(), None
    small = copy.deepcopy(big)
    batches = regression_batches(4, size=8)
    halves = [(x[i : i + 4], y[i : i + 4]) for x, y in batches for i in (0, 4)]
    make_trainer(big).fit(batches, epochs=1)
    make_trainer(small, accumulate=2).fit(halves, epochs=1)
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_partial_last_accumulation_is_rescaled() -> None:
    torch.manual_seed(3)
    model = TwoLoss()
    reference = copy.deepcopy(model)
    batches = regression_batches(3, size=4)  # accumulate=2: the last step has one pass
    trainer = make_trainer(model, accumulate=2)
    trainer.fit(batches, epochs=1)
    assert trainer.step == 2

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(reference.body(x))
        return F.mse_loss(reference.head(hidden).squeeze(-1), y) + 0.1 * hidden.pow(2).mean()

    for group in ([batches[0], batches[1]], [batches[2]]):  # each step averages its passes
        optimizer.zero_grad()
        (sum(loss_of(x, y) for x, y in group) / len(group)).backward()
        optimizer.step()
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs)


def test_grad_clip_bounds_the_update() -> None:
    model = TwoLoss()
    before = copy.deepcopy(model)
    batch = [(torch.randn(8, 4) * 100, torch.randn(8) * 100)]
    make_trainer(model, grad_clip=0.01).fit(batch, steps=1)
    with torch.no_grad():
        squared = sum(
            ((p - q) / 0.05).pow(2).sum()
            for p, q in zip(model.parameters(), before.parameters(), strict=True)
        )
    assert float(squared.sqrt()) == pytest.approx(0.01, rel=1e-4)


def test_scheduler_steps_and_lr_is_logged() -> None:
    model = TwoLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    trainer = ml.Trainer(model, optimizer, scheduler=scheduler, sinks=[], log_every=1)
    history = trainer.fit(regression_batches(3), steps=3)
    assert history["lr"] == [0.5, 0.25, 0.125]


def test_bf16_autocast_trains_on_cpu() -> None:
    trainer = make_trainer(amp="bf16", log_every=2)
    history = trainer.fit(regression_batches(4), steps=4)
    assert all(torch.isfinite(torch.tensor(history["total"])))


def test_evaluate_is_eval_mode_no_grad_and_per_example_mean() -> None:
    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))
            self.seen: list[tuple[bool, bool]] = []

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            self.seen.append((self.training, torch.is_grad_enabled()))
            if not self.training:
                ml.add_loss("val_only", x.mean())
            return {"value": x.mean() + self.w}

    model = Probe()
    trainer = make_trainer(model, log_every=1)
    # Two batches of different sizes: the mean is over examples, not batches.
    result = trainer.evaluate([torch.full((1,), 1.0), torch.full((3,), 5.0)])
    assert result["loss/value"] == pytest.approx((1 * 1.0 + 3 * 5.0) / 4)
    assert model.seen == [(False, False), (False, False)]
    assert model.training
    history = trainer.fit([torch.ones(2)], steps=1)
    assert "loss/val_only" not in history.last()  # eval losses never leak into training


def test_validation_rows_and_rng_untouched() -> None:
    batches = regression_batches(4)
    torch.manual_seed(5)
    with_val = make_trainer(log_every=2, val_every=2)
    with_val.fit(batches, steps=4, val_data=regression_batches(2, seed=9))
    torch.manual_seed(5)
    without = make_trainer(log_every=2)
    without.fit(batches, steps=4)
    assert [row["step"] for row in with_val.history.val] == [2, 4]
    for a, b in zip(with_val.model.parameters(), without.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_logged_values_are_period_means() -> None:
    class Counter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.w * 0 + float(self.calls)

    history = make_trainer(Counter(), log_every=4).fit([torch.ones(1)] * 8, steps=8)
    assert history["loss/loss"] == [2.5, 6.5]
    assert history.steps("loss/loss") == [4, 8]


def test_logging_reads_the_device_only_at_the_log_period(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    for name in ("item", "tolist", "__bool__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counting(
            self: torch.Tensor, *args: object, _name: str = name, _original: object = original
        ) -> object:
            reads.append(_name)
            return _original(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(torch.Tensor, name, counting)
    trainer = make_trainer(log_every=5)
    trainer.fit(regression_batches(10), steps=4)  # no log step inside these 4 steps
    # One guard read per step, plus one batched read of the period's metrics at the end.
    assert reads == ["tolist"] * 5


def test_hooks_are_called_in_order_with_the_trainer() -> None:
    calls: list[tuple[str, int]] = []

    class Recorder(ml.Hook):
        def before_train(self) -> None:
            calls.append(("before_train", self.trainer.step))

        def before_step(self) -> None:
            calls.append(("before_step", self.trainer.step))

        def after_step(self) -> None:
            calls.append(("after_step", self.trainer.step))

        def on_log(self, record: dict) -> None:
            calls.append(("on_log", record["step"]))

        def after_train(self) -> None:
            calls.append(("after_train", self.trainer.step))

    make_trainer(hooks=[Recorder()], log_every=2).fit(regression_batches(2), steps=2)
    assert calls == [
        ("before_train", 0),
        ("before_step", 0),
        ("after_step", 1),
        ("before_step", 1),
        ("on_log", 2),
        ("after_step", 2),
        ("after_train", 2),
    ]


def test_epochs_over_data_without_length() -> None:
    batches = regression_batches(3)

    class NoLen:
        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(batches)

    trainer = make_trainer()
    trainer.fit(NoLen(), epochs=2)  # type: ignore[arg-type]
    assert trainer.step == 6
    assert trainer.epoch == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"nonfinite": "ignore"}, ValueError, r"`nonfinite` must be one of \{'raise', 'skip'\}"),
        ({"log_every": 0}, ValueError, "`log_every` must be >= 1; got 0"),
        ({"accumulate": 1.5}, TypeError, "`accumulate` must be an int; got 1.5"),
        ({"grad_clip": -1.0}, ValueError, "`grad_clip` must be > 0.0; got -1.0"),
        ({"amp": "fp8"}, ValueError, r"`amp` must be one of .*got 'fp8'"),
        (
            {"weights": {"a": float("nan")}},
            ValueError,
            r"`weights\['a'\]` must be a finite float; got nan",
        ),
        ({"weights": {"a": "x"}}, TypeError, r"`weights\['a'\]` must be a float"),
        ({"hooks": [object()]}, TypeError, "each of `hooks` must be a multiloss Hook"),
        ({"checkpoint_every": 5}, ValueError, "`checkpoint_every` needs a `run_dir`"),
        ({"balancer": "Uncertainty"}, TypeError, "`balancer` must be a multiloss.balancing"),
        ({"balancer": ml.balancing.MGDA}, TypeError, r"got the class MGDA: pass MGDA\(\)"),
        ({"weights": "x"}, TypeError, "`weights` must be a dict of loss name"),
        ({"scheduler": "x"}, TypeError, r"`scheduler` must be an LR scheduler .*got 'x'"),
        ({"hooks": ml.Hook()}, TypeError, "`hooks` must be a list of multiloss Hook"),
        ({"sinks": ["x"]}, TypeError, "each of `sinks` must be a multiloss sink"),
        ({"forward": "x"}, TypeError, r"`forward` must be a function forward\(model, batch\)"),
        ({"ddp": "x"}, TypeError, "`ddp` must be a bool or a dict of DDP options"),
        (
            {"shared": [1]},
            TypeError,
            r"`shared` of Trainer must be a sequence of tensors that require grad; got \[1\] "
            r"\(list\), whose item 0 is 1 \(int\)",
        ),
        (
            {"grad_diagnostics": "no"},
            TypeError,
            r"`grad_diagnostics` must be a bool, or None \(on with a balancer, off without\); "
            "got 'no'",
        ),
        ({"val_every": 0}, ValueError, "`val_every` must be >= 1; got 0"),
        ({"run_dir": ""}, ValueError, "`run_dir` must name a directory; got ''"),
        ({"run_dir": 123}, TypeError, "`run_dir` must be a path"),
        ({"device": "gpu9"}, ValueError, "`device` must be a torch.device or a device string"),
        ({"device": "cuda:7"}, ValueError, "`device` 'cuda:7' is not available on this machine"),
    ],
)
def test_bad_trainer_arguments_are_named(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make_trainer(**kwargs).fit(regression_batches(1), steps=1)


def test_shared_given_as_a_generator_is_kept() -> None:
    # The check reads ``shared`` once: ``model.parameters()`` is not used up before it is kept.
    model = TwoLoss()
    trainer = make_trainer(model=model, shared=model.body.parameters())
    assert trainer.shared is not None
    assert [id(p) for p in trainer.shared] == [id(p) for p in model.body.parameters()]


def test_bad_model_optimizer_and_fit_arguments() -> None:
    model = TwoLoss()
    with pytest.raises(TypeError, match=r"`model` must be an nn\.Module"):
        ml.Trainer("model", torch.optim.SGD(model.parameters(), lr=0.1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`optimizer` must be a torch\.optim\.Optimizer"):
        ml.Trainer(model, "adam")  # type: ignore[arg-type]
    trainer = make_trainer(model)
    with pytest.raises(ValueError, match="fit\\(\\) needs `epochs` or `steps`"):
        trainer.fit(regression_batches(1))
    with pytest.raises(ValueError, match="`data` is empty"):
        trainer.fit([], steps=1)
    with pytest.raises(TypeError, match=r"`data` of fit\(\) must be an iterable of batches"):
        trainer.fit(3, steps=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`val_data` of fit\(\) must be an iterable"):
        trainer.fit(regression_batches(1), steps=1, val_data=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`resume` of fit\(\) must be a bool; got 'yes'"):
        trainer.fit(regression_batches(1), steps=1, resume="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`data` of evaluate\(\) must be an iterable"):
        trainer.evaluate(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`max_batches` of evaluate\(\) must be >= 1; got -1"):
        trainer.evaluate(regression_batches(1), max_batches=-1)


def test_a_file_as_run_dir_is_named(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("")
    with pytest.raises(ValueError, match=r"`run_dir` must be a directory; .* is a file"):
        make_trainer(run_dir=path)


class _MultiHead(torch.nn.Module):
    """A trunk, a marked representation, two-layer heads and an emitted regularizer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh())
        self.heads = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
            for _ in range(3)
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        z = ml.mark_representation(self.trunk(x))
        ml.add_loss("reg", z.pow(2).mean(), weight=0.01)
        return {
            f"task{k}": (head(z).squeeze(-1) - (k + 1) * y).pow(2).mean()
            for k, head in enumerate(self.heads)
        }


@pytest.mark.parametrize(
    ("make", "route"),
    [
        (lambda: ml.balancing.GradNorm(layer="representation", balance="task*"), "find_capture"),
        (lambda: ml.balancing.UPGrad(level="representation", balance="task*"), "heads_above"),
    ],
    ids=["gradnorm-norms-from-the-backward-pass", "upgrad-heads-run-once"],
)
def test_representation_routes_train_like_the_older_ones(
    make: Callable[[], ml.balancing.Balancer], route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer with gradient accumulation: each faster route of the representation level
    ends where the older route ends (parameters, balancer state, logged losses)."""
    from multiloss.balancing import context as context_module

    real = getattr(context_module, route)
    found: list[object] = []
    ends = []
    for faster in (True, False):
        with monkeypatch.context() as patch:
            if faster:  # and record that the route was found, not silently skipped
                patch.setattr(context_module, route, lambda *a: found.append(real(*a)) or found[-1])
            else:
                patch.setattr(context_module, route, lambda *a: None)
            model, balancer = _MultiHead(), make()
            trainer = make_trainer(model, balancer=balancer, accumulate=2, log_every=2)
            trainer.fit(regression_batches(count=8), steps=4)
            state = {**model.state_dict(), **balancer.state_dict()}
            ends.append(({k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, trainer))
    assert found  # one per micro-batch
    assert all(result is not None for result in found)
    (state_a, trainer_a), (state_b, trainer_b) = ends
    torch.testing.assert_close(state_a, state_b, rtol=1e-5, atol=1e-6)
    rows_a, rows_b = trainer_a.history.train, trainer_b.history.train
    assert len(rows_a) == len(rows_b) == 2
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        assert row_a["loss/task0"] == pytest.approx(row_b["loss/task0"], rel=1e-5)


class _BadTargets(nn.Module):
    """Binary cross-entropy whose labels go out of [0, 1] from the third call on."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.calls = 0
        self.loss = ml.losses.BinaryCrossEntropy(input="logits")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        labels = torch.full((x.shape[0],), 2.0 if self.calls >= 3 else 1.0)
        return self.loss(self.lin(x).squeeze(1), labels)


@pytest.mark.parametrize(("log_every", "stops_at"), [(4, 4), (10, 5)])
def test_value_checks_deferred_on_an_accelerator_are_read_by_the_trainer(
    monkeypatch: pytest.MonkeyPatch, log_every: int, stops_at: int
) -> None:
    # As on an accelerator: the range check keeps its min and max on the device; the trainer
    # reads them at the log period (step 4) or, when fit ends first, before its end, and the
    # hooks' after_train still runs.
    import multiloss._validation as validation

    monkeypatch.setattr(validation, "_read_at_once", lambda value: False)
    ended: list[bool] = []

    class Ends(ml.Hook):
        def after_train(self) -> None:
            ended.append(self.trainer.completed)

    model = _BadTargets()
    trainer = make_trainer(model, log_every=log_every, hooks=[Ends()])
    with pytest.raises(ValueError, match=r"`target` of BinaryCrossEntropy.* from 1 to 2"):
        trainer.fit([torch.ones(3, 2)] * 8, steps=5)
    assert trainer.step == stops_at  # at the first log step after the bad labels, or the end
    assert validation.pending_value_checks() == 0
    assert ended == [False]


@pytest.mark.parametrize("grad_diagnostics", [None, True, False])
def test_gradient_diagnostics_with_a_balancer_can_be_turned_off(
    grad_diagnostics: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a balancer the ``grad/...`` rows are on by default; ``grad_diagnostics=False``
    turns them off (no Jacobian asked of the balancer) and keeps its ``balance/...`` rows."""
    asked: list[bool] = []
    real = ml.balancing.Balancer.apply

    def spy(self: ml.balancing.Balancer, *args: object, **kwargs: object) -> object:
        asked.append(bool(kwargs.get("diagnostics")))
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ml.balancing.Balancer, "apply", spy)
    model = _MultiHead()
    trainer = make_trainer(
        model,
        balancer=ml.balancing.Uncertainty(balance="task*"),
        log_every=2,
        grad_diagnostics=grad_diagnostics,
    )
    trainer.fit(regression_batches(count=4), steps=4)
    rows = trainer.history.train
    assert [row["step"] for row in rows] == [2, 4]
    on = grad_diagnostics is not False
    assert asked == [False, on, False, on]  # at the log period only
    for row in rows:
        assert "balance/uncertainty/log_var/task0" in row
        assert ("grad/norm/task0" in row) == on
        assert any(key.startswith("grad/") for key in row) == on
