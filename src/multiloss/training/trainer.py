"""``Trainer``: a training loop that combines named losses and reports every one of them.

The loop knows nothing about the model's internals: a batch goes in, named scalar losses come
out (returned by the model, emitted from inside it with ``add_loss``, contributed by
``AuxiliaryLossModule`` layers, or attached by a loss spec), a balancer (or a weighted sum)
turns them into gradients, and the optimizer steps. Everything periodic or optional (logging
sinks, validation, checkpoints, user hooks) hangs off that loop.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from multiloss._modules import unwrap
from multiloss._validation import (
    check_bool,
    check_choice,
    check_finite_float,
    check_int,
    check_path,
    describe,
    run_deferred_value_checks,
)
from multiloss.aux import AuxiliaryLossModule
from multiloss.balancing._checks import check_shared
from multiloss.collect import LossBook
from multiloss.schedules import Schedule, as_schedule
from multiloss.sinks import RunInfo, Sink
from multiloss.training.amp import resolve_amp
from multiloss.training.data import DataStream, check_batches
from multiloss.training.groups import OptimizerGroup
from multiloss.training.history import History
from multiloss.training.hooks import CheckpointHook, EvalHook, Hook
from multiloss.training.metrics import PeriodMetrics
from multiloss.training.model_io import ForwardFn, batch_size, to_device
from multiloss.training.reporting import ReportingMixin
from multiloss.training.resume import CheckpointMixin
from multiloss.training.rng import get_rng_state, set_rng_state
from multiloss.training.sharding import init_distributed, shard
from multiloss.training.step import StepMixin

__all__ = ["Trainer"]

_NONFINITE = ("raise", "skip")


class Trainer(StepMixin, CheckpointMixin, ReportingMixin):
    """Train a model whose forward pass yields named losses.

    Args:
        model: The model. In training it returns a scalar loss, a dict of named scalar losses
            (or ``multiloss.NamedLosses``), or nothing when it emits its losses with
            ``multiloss.add_loss``; every ``AuxiliaryLossModule`` inside contributes its terms.
            With ``losses=`` it returns predictions instead.
        optimizer: A ``torch.optim.Optimizer``, or a list of ``OptimizerGroup`` stepped in turn
            (alternating min-max training).
        losses: A loss spec (``multiloss.Attach``, ``Automatic``, a list, ...) to attach to the
            model's outputs; the trainer then trains ``multiloss.attach(model, losses)``.
        balancer: A ``multiloss.balancing.Balancer`` that turns the losses into gradients;
            default: the weighted sum.
        run_dir: Directory for ``metrics.jsonl``, TensorBoard events, ``run.json`` and
            checkpoints. None writes nothing to disk.
        weights: Static per-loss weights, keys are loss names or glob patterns
            (``"*/balance"``), values floats or schedules of the step; they multiply the
            weight each loss already carries. A key that matches no loss is an error.
        log_every: Log period in optimizer steps; logged values are means over the period.
        checkpoint_every: Checkpoint period in steps (a checkpoint is also written at the end
            when ``run_dir`` is set).
        keep_checkpoints: How many recent checkpoints to keep.
        nonfinite: ``"raise"`` a ``FloatingPointError`` naming each non-finite loss, or
            ``"skip"`` the step (counted and logged). Either way the optimizer does not step.
        grad_clip: Max global gradient norm (``clip_grad_norm_``), or None.
        accumulate: Forward/backward passes (micro-batches) per optimizer step.
        scheduler: An LR scheduler stepped after every optimizer step.
        amp: Mixed precision: None, True (bfloat16), ``"bf16"`` or ``"fp16"`` (with a
            gradient scaler).
        hooks: Extra ``Hook`` objects, called in order after the built-in ones.
        sinks: Where logged rows go. Default: a progress bar, plus ``metrics.jsonl`` and
            TensorBoard when ``run_dir`` is set.
        device: Where batches go; default: the device of the model's first parameter.
        forward: ``forward(model, batch)`` to call the model yourself; default: a dict batch
            is spread as keyword arguments, a tuple/list as positional arguments.
        val_every: Validation period in steps when ``fit`` gets ``val_data`` (default: after
            every epoch and at the end).
        grad_diagnostics: Log per-loss gradient norms, cosines and shares of the update at the
            log period (one batched Jacobian per log step). Default: on with a balancer, off
            without; ``False`` turns them off with a balancer too (its weights and state are
            still logged).
        shared: The shared parameters for the balancer and diagnostics (default: found
            automatically).

    Example:
        >>> import torch, multiloss as ml
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body = torch.nn.Linear(4, 2)
        ...     def forward(self, x, y):
        ...         out = self.body(x)
        ...         ml.add_loss("l2", out.pow(2).mean(), weight=0.01)
        ...         return {"mse": torch.nn.functional.mse_loss(out, y)}
        >>> net = Net()
        >>> data = [(torch.randn(8, 4), torch.randn(8, 2)) for _ in range(5)]
        >>> trainer = ml.Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), sinks=[],
        ...                      log_every=5)
        >>> history = trainer.fit(data, epochs=2)
        >>> sorted(history.losses())
        ['l2', 'mse']
        >>> trainer.step
        10
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | Sequence[OptimizerGroup],
        *,
        losses: Any = None,
        balancer: Any = None,
        run_dir: str | Path | None = None,
        weights: Mapping[str, float | Schedule] | None = None,
        log_every: int = 10,
        checkpoint_every: int | None = None,
        keep_checkpoints: int = 3,
        nonfinite: str = "raise",
        grad_clip: float | None = None,
        accumulate: int = 1,
        scheduler: Any = None,
        amp: Any = None,
        hooks: Sequence[Hook] = (),
        sinks: Sequence[Sink] | None = None,
        device: torch.device | str | None = None,
        forward: ForwardFn | None = None,
        val_every: int | None = None,
        grad_diagnostics: bool | None = None,
        shared: Sequence[nn.Parameter] | None = None,
        ddp: bool | Mapping[str, Any] = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module; got {describe(model)}")
        _check_arguments(balancer, weights, scheduler, hooks, sinks, forward, ddp)
        if device is not None:
            device = _check_device(device)
        self.dist = init_distributed(torch.device(device) if device is not None else None)
        self.model = unwrap(model)
        self.net: nn.Module = model
        self._whole_batch = losses is not None
        if losses is not None:
            from multiloss.spec import attach

            self.net = attach(model, losses)
        self.groups = _make_groups(optimizer, scheduler)
        if balancer is not None and len(self.groups) > 1:
            raise ValueError(
                "`balancer` cannot be combined with several optimizer groups: each group "
                "backpropagates its own losses; give the balancer a single optimizer"
            )
        if balancer is not None and not callable(getattr(balancer, "apply", None)):
            raise TypeError(
                "`balancer` must be a multiloss.balancing.Balancer (e.g. "
                f"multiloss.balancing.Uncertainty()); got {describe(balancer)}"
            )
        self.balancer = balancer
        self.run_dir = _check_run_dir(run_dir) if run_dir is not None else None
        self.weights = {
            check_pattern(key): as_schedule(value, f"`weights[{key!r}]`")
            for key, value in (weights or {}).items()
        }
        self.log_every = check_int(log_every, "`log_every`", min_value=1)
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = check_int(keep_checkpoints, "`keep_checkpoints`", min_value=1)
        self.nonfinite = check_choice(nonfinite, "`nonfinite`", _NONFINITE)
        self.grad_clip = (
            None
            if grad_clip is None
            else check_finite_float(grad_clip, "`grad_clip`", min_value=0.0, strict_min=True)
        )
        self.accumulate = check_int(accumulate, "`accumulate`", min_value=1)
        self.device = torch.device(device) if device is not None else _device_of(self.net)
        self.net = self._wrap_ddp(self.net, ddp)
        self._ddp = isinstance(self.net, DistributedDataParallel)
        self.amp = resolve_amp(amp, self.device)
        self.forward = forward
        self.val_every = (
            None if val_every is None else check_int(val_every, "`val_every`", min_value=1)
        )
        if grad_diagnostics is not None and not isinstance(grad_diagnostics, bool):
            raise TypeError(
                "`grad_diagnostics` must be a bool, or None (on with a balancer, off without); "
                f"got {describe(grad_diagnostics)}"
            )
        self.grad_diagnostics = (
            balancer is not None if grad_diagnostics is None else grad_diagnostics
        )
        # The balancer's own check (``apply`` and gradient_diagnostics run it too), read once:
        # a generator such as ``model.trunk.parameters()`` is kept, not used up by the check.
        checked = check_shared(shared, "Trainer")
        self.shared = list(checked) if checked is not None else None
        self.user_hooks = list(hooks)
        for hook in self.user_hooks:
            if not isinstance(hook, Hook):
                raise TypeError(f"each of `hooks` must be a multiloss Hook; got {describe(hook)}")
        self.sinks = list(sinks) if sinks is not None else self._default_sinks()
        self.hooks: list[Hook] = []
        self.step = 0
        self.skipped = 0
        self.epoch_ended = False
        self.completed = False
        self.last_book: LossBook | None = None
        self._step_values: list[
            tuple[tuple[str, ...], Tensor, frozenset[str], Mapping[str, str]]
        ] = []
        self._balancer_parameters = -1
        self.history = History()
        self._stream: DataStream | None = None
        self._metrics = PeriodMetrics()
        self._aux_layers: list[AuxiliaryLossModule] = []
        self._checked_weight_keys = False
        self._masks: dict[tuple[tuple[str, ...], frozenset[str]], Tensor] = {}
        self._active: dict[tuple[int, tuple[str, ...]], tuple[int, ...]] = {}
        self._period_start = time.perf_counter()
        self._period_steps = 0

    # ------------------------------------------------------------------------------------
    def _wrap_ddp(self, net: nn.Module, ddp: bool | Mapping[str, Any]) -> nn.Module:
        if isinstance(net, DistributedDataParallel) or not self.dist.active or ddp is False:
            return net
        # `ddp` was checked in __init__ (_check_arguments): True or a dict of options.
        options: dict[str, Any] = {} if ddp is True else dict(ddp)
        if len(self.groups) > 1:
            # Each group backpropagates only its own losses: the others' parameters get no
            # gradient in that step, which DDP must be told to expect.
            options.setdefault("find_unused_parameters", True)
        if self.device.type == "cuda":
            options.setdefault("device_ids", [self.device.index])
        return DistributedDataParallel(net, **options)

    @property
    def _eval_net(self) -> nn.Module:
        # Evaluation runs without DDP's wrapper: no buffer broadcast, no collective per batch.
        return self.net.module if isinstance(self.net, DistributedDataParallel) else self.net

    def __repr__(self) -> str:
        return (
            f"Trainer(model={type(self.model).__name__}, groups={self.groups}, "
            f"balancer={self.balancer!r}, run_dir={str(self.run_dir) if self.run_dir else None!r}"
            f", log_every={self.log_every}, accumulate={self.accumulate}, "
            f"nonfinite={self.nonfinite!r}, grad_clip={self.grad_clip}, amp={self.amp.dtype}, "
            f"device={self.device})"
        )

    # -- public loop ------------------------------------------------------------------------
    def fit(
        self,
        data: Iterable[Any],
        *,
        epochs: int | None = None,
        steps: int | None = None,
        val_data: Iterable[Any] | None = None,
        resume: bool = False,
    ) -> History:
        """Train until ``steps`` optimizer steps or ``epochs`` passes over ``data``.

        Args:
            data: Training batches (a ``DataLoader`` or any re-iterable).
            epochs: Passes over the data (counted from the start of training, also on resume).
            steps: Total optimizer steps to reach (also counted from the start).
            val_data: Batches to evaluate on (see ``val_every``).
            resume: Continue from the latest good checkpoint in ``run_dir``.

        Returns:
            The ``History`` of logged rows.
        """
        if epochs is None and steps is None:
            raise ValueError("fit() needs `epochs` or `steps`; got neither")
        check_bool(resume, "`resume` of fit()")
        check_batches(data, "`data` of fit()")
        if val_data is not None:
            check_batches(val_data, "`val_data` of fit()")
        if epochs is not None:
            check_int(epochs, "`epochs`", min_value=1)
        if steps is not None:
            check_int(steps, "`steps`", min_value=1)
        self._stream = DataStream(shard(data, self.dist), max_epochs=epochs)
        self.completed = False
        self.hooks = self._build_hooks(val_data)
        for group in self.groups:  # gradients are zeroed after each step; start clean too
            group.optimizer.zero_grad(set_to_none=True)
        self._aux_layers = [m for m in self.net.modules() if isinstance(m, AuxiliaryLossModule)]
        self._warn_unoptimized()
        resumed_from = self._resume() if resume else None
        if not resume and self.step == 0:
            self._refuse_foreign_checkpoints()
        target = self._target_steps(epochs, steps)
        run = RunInfo(self.run_dir, start_step=self.step, total_steps=target, resumed=resume)
        self._open(run)
        if resumed_from is not None:
            self.event("resume", f"resumed from {resumed_from.name} at step {self.step}")
        try:
            for hook in self.hooks:
                hook.before_train()
            self.net.train()
            # time/step is measured over the steps this fit takes (a period may have begun
            # in an earlier fit, or before a resume)
            self._period_start = time.perf_counter()
            self._period_steps = 0
            while target is None or self.step < target:
                for hook in self.hooks:
                    hook.before_step()
                if not self._train_step():
                    break
                for hook in self.hooks:
                    hook.after_step()
            run_deferred_value_checks()  # before the end: after_train and the sinks still run
            self.completed = True
        finally:
            if self.completed and self._metrics:
                self._log(final=self.step % self.log_every != 0)
            for hook in self.hooks:
                hook.after_train()
            self._close()
        return self.history

    def evaluate(self, data: Iterable[Any], *, max_batches: int | None = None) -> dict[str, float]:
        """Every sub-loss on ``data``, in eval mode under ``no_grad``, averaged per example.

        Returns:
            ``{"total": ..., "loss/<name>": ..., "weighted/<name>": ...,
            "weight/<name>": ..., "metric/<name>": ...}``.
        """
        check_batches(data, "`data` of evaluate()")
        if max_batches is not None:
            check_int(max_batches, "`max_batches` of evaluate()", min_value=1)
        net = self._eval_net
        was_training = net.training
        net.eval()
        metrics = PeriodMetrics()
        try:
            with torch.no_grad():
                for index, batch in enumerate(data):
                    if max_batches is not None and index >= max_batches:
                        break
                    book = self._forward(to_device(batch, self.device), net)
                    names, raw, weights = self._weigh(book, check=False)
                    # Weight each batch by its size, so the mean is per example.
                    metrics.add(names, raw, weights, count=batch_size(batch))
                    metrics.add_metrics(book.metrics)
        finally:
            net.train(was_training)
        if not metrics:
            raise ValueError("evaluate() got no batch: `data` is empty")
        values = metrics.read(self._reducer)
        run_deferred_value_checks()  # see ReportingMixin._log
        return values

    def validate(self, data: Iterable[Any]) -> dict[str, Any]:
        """Evaluate, log a ``val`` row, and return it. The RNG state is left untouched."""
        state = get_rng_state()  # validation must not change the training trajectory
        try:
            values = self.evaluate(data)
        finally:
            set_rng_state(state)
        record = {"kind": "val", "step": self.step, "epoch": self.epoch, **values}
        self._emit(record)
        return record

    # -- set-up -----------------------------------------------------------------------------
    def _build_hooks(self, val_data: Iterable[Any] | None) -> list[Hook]:
        hooks: list[Hook] = []
        if val_data is not None:
            hooks.append(
                EvalHook(shard(val_data, self.dist, shuffle_default=False), every=self.val_every)
            )
        hooks += self.user_hooks
        if self.run_dir is not None:
            hooks.append(CheckpointHook(self.checkpoint_every))
        elif self.checkpoint_every is not None:
            raise ValueError("`checkpoint_every` needs a `run_dir` to write checkpoints to")
        for hook in hooks:
            hook.trainer = self
        return hooks

    def _warn_unoptimized(self) -> None:
        """Trainable parameters no optimizer steps are almost always a set-up mistake."""
        stepped = {
            id(p) for g in self.groups for pg in g.optimizer.param_groups for p in pg["params"]
        }
        owners: list[tuple[str, nn.Module]] = [("", unwrap(self.net))]
        if isinstance(self.balancer, nn.Module):
            owners.append(("balancer.", self.balancer))
        missing = [
            prefix + name
            for prefix, owner in owners
            for name, parameter in owner.named_parameters()
            if parameter.requires_grad and id(parameter) not in stepped
        ]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            warnings.warn(
                f"{len(missing)} trainable parameter(s) are in no optimizer and will not be "
                f"trained: {missing[:5]}{more}. Add them to the optimizer (a loss module's: "
                "trainer.net.parameters(); a balancer's: balancer.parameters()), or set "
                "requires_grad=False.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _target_steps(self, epochs: int | None, steps: int | None) -> int | None:
        if steps is not None:
            return steps
        length = self._data.length
        if length is None or epochs is None:
            return None
        return epochs * -(-length // self.accumulate)


def _check_arguments(
    balancer: Any,
    weights: Any,
    scheduler: Any,
    hooks: Any,
    sinks: Any,
    forward: Any,
    ddp: Any,
) -> None:
    """Type checks of the trainer's arguments, so a wrong one fails here, named."""
    if isinstance(balancer, type):
        raise TypeError(
            f"`balancer` must be a balancer instance; got the class {balancer.__name__}: "
            f"pass {balancer.__name__}()"
        )
    if weights is not None and not isinstance(weights, Mapping):
        raise TypeError(
            "`weights` must be a dict of loss name (or glob) -> weight or schedule; got "
            f"{describe(weights)}"
        )
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise TypeError(
            "`scheduler` must be an LR scheduler (an object with .step(), e.g. "
            f"torch.optim.lr_scheduler.CosineAnnealingLR); got {describe(scheduler)}"
        )
    if isinstance(hooks, Hook) or not isinstance(hooks, Sequence):
        raise TypeError(f"`hooks` must be a list of multiloss Hook; got {describe(hooks)}")
    if sinks is not None:
        if isinstance(sinks, Sink) or not isinstance(sinks, Sequence):
            raise TypeError(f"`sinks` must be a list of multiloss sinks; got {describe(sinks)}")
        for sink in sinks:
            if not isinstance(sink, Sink):
                raise TypeError(
                    "each of `sinks` must be a multiloss sink (ProgressBar, JSONLSink, CSVSink, "
                    f"TensorBoardSink or a Sink subclass); got {describe(sink)}"
                )
    if forward is not None and not callable(forward):
        raise TypeError(
            f"`forward` must be a function forward(model, batch); got {describe(forward)}"
        )
    if not isinstance(ddp, bool | Mapping):
        raise TypeError(f"`ddp` must be a bool or a dict of DDP options; got {describe(ddp)}")


def _check_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device``; for backends torch can ask (cuda, mps, xpu...), one
    that exists on this machine. Others ('meta', out-of-tree backends) pass as given."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"`device` must be a torch.device or a device string such as 'cpu' or 'cuda:0'; "
            f"got {device!r} ({error})"
        ) from None
    if resolved.type == "cpu":
        return resolved
    module = getattr(torch, resolved.type, None)
    if module is None or not callable(getattr(module, "is_available", None)):
        return resolved
    available = module.is_available()
    count = getattr(module, "device_count", lambda: 0)() if available else 0
    if not available or (resolved.index is not None and resolved.index >= count):
        raise ValueError(
            f"`device` {device!r} is not available on this machine ({resolved.type}: "
            f"{count} device(s))"
        )
    return resolved


def _check_run_dir(run_dir: Any) -> Path:
    path = check_path(run_dir, "`run_dir`")
    if str(run_dir) == "":
        raise ValueError(
            "`run_dir` must name a directory; got '' (pass None to write nothing to disk, or "
            "'.' for the current directory)"
        )
    if path.exists() and not path.is_dir():
        raise ValueError(f"`run_dir` must be a directory; {str(path)!r} is a file")
    return path


def check_pattern(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise TypeError(f"each key of `weights` must be a non-empty loss name; got {describe(key)}")
    return key


def _device_of(module: nn.Module) -> torch.device:
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


def _make_groups(
    optimizer: torch.optim.Optimizer | Sequence[OptimizerGroup], scheduler: Any
) -> list[OptimizerGroup]:
    if isinstance(optimizer, torch.optim.Optimizer):
        return [OptimizerGroup(optimizer, "*", scheduler=scheduler, name="main")]
    groups = list(optimizer) if isinstance(optimizer, Sequence) else []
    if not groups or not all(isinstance(g, OptimizerGroup) for g in groups):
        raise TypeError(
            "`optimizer` must be a torch.optim.Optimizer or a non-empty list of "
            f"multiloss OptimizerGroup; got {describe(optimizer)}"
        )
    if scheduler is not None:
        raise ValueError("with optimizer groups, give each OptimizerGroup its own `scheduler`")
    for index, group in enumerate(groups):
        group.name = group.name or f"group{index}"
    return groups
