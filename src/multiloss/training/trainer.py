"""``Trainer``: a training loop that combines named losses and reports every one of them.

The loop knows nothing about the model's internals: a batch goes in, named scalar losses come
out (returned by the model, emitted from inside it with ``add_loss``, contributed by
``AuxiliaryLossModule`` layers, or attached by a loss spec), a balancer (or a weighted sum)
turns them into gradients, and the optimizer steps. Everything periodic or optional (logging
sinks, validation, checkpoints, user hooks) hangs off that loop.
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import multiloss
from multiloss._modules import unwrap
from multiloss._validation import check_choice, check_finite_float, check_int, describe
from multiloss.aux import AuxiliaryLossModule
from multiloss.collect import LossBook, collect
from multiloss.schedules import Schedule, as_schedule
from multiloss.sinks import JSONLSink, ProgressBar, RunInfo, Sink, TensorBoardSink
from multiloss.training.amp import resolve_amp
from multiloss.training.checkpoint import find_checkpoints, load_latest, save_checkpoint
from multiloss.training.data import DataStream
from multiloss.training.distributed import DistContext
from multiloss.training.groups import OptimizerGroup, select_group
from multiloss.training.history import History
from multiloss.training.hooks import CheckpointHook, EvalHook, Hook
from multiloss.training.metrics import PeriodMetrics
from multiloss.training.model_io import ForwardFn, batch_size, call_model, merge_output, to_device
from multiloss.training.rng import get_rng_state, set_rng_state
from multiloss.training.state import check_compatible

__all__ = ["Trainer"]

_NONFINITE = ("raise", "skip")


class Trainer:
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
            log period (one batched Jacobian per log step). Always on with a balancer.
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
        grad_diagnostics: bool = False,
        shared: Sequence[nn.Parameter] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module; got {describe(model)}")
        self.dist = DistContext.detect()
        self.model = unwrap(model)
        self.net: nn.Module = model
        self._whole_batch = losses is not None
        if losses is not None:
            from multiloss.spec import attach  # type: ignore[attr-defined]  # lands with specs

            self.net = attach(model, losses)
        self.groups = _make_groups(optimizer, scheduler)
        self.optimizer = self.groups[0].optimizer
        if balancer is not None and len(self.groups) > 1:
            raise ValueError(
                "`balancer` cannot be combined with several optimizer groups: each group "
                "backpropagates its own losses; give the balancer a single optimizer"
            )
        self.balancer = balancer
        self.run_dir = Path(run_dir) if run_dir is not None else None
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
        self.amp = resolve_amp(amp, self.device)
        self.forward = forward
        self.val_every = val_every
        self.grad_diagnostics = bool(grad_diagnostics) or balancer is not None
        self.shared = list(shared) if shared is not None else None
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
        self.history = History()
        self._stream: DataStream | None = None
        self._metrics = PeriodMetrics()
        self._aux_layers: list[AuxiliaryLossModule] = []
        self._checked_weight_keys = False
        self._masks: dict[tuple[tuple[str, ...], frozenset[str]], Tensor] = {}
        self._period_start = time.perf_counter()
        self._period_steps = 0

    # ------------------------------------------------------------------------------------
    def _default_sinks(self) -> list[Sink]:
        sinks: list[Sink] = [ProgressBar()]
        if self.run_dir is not None:
            sinks += [JSONLSink(), TensorBoardSink()]
        return sinks

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return self._stream.epoch if self._stream is not None else 0

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
        if epochs is not None:
            check_int(epochs, "`epochs`", min_value=1)
        if steps is not None:
            check_int(steps, "`steps`", min_value=1)
        self._stream = DataStream(data, max_epochs=epochs)
        self.completed = False
        self.hooks = self._build_hooks(val_data)
        for group in self.groups:  # gradients are zeroed after each step; start clean too
            group.optimizer.zero_grad(set_to_none=True)
        self._aux_layers = [m for m in self.net.modules() if isinstance(m, AuxiliaryLossModule)]
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
            self._period_start = time.perf_counter()
            while target is None or self.step < target:
                for hook in self.hooks:
                    hook.before_step()
                if not self._train_step():
                    break
                for hook in self.hooks:
                    hook.after_step()
            self.completed = True
        finally:
            if self.completed and self._metrics:
                self._log()
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
        was_training = self.net.training
        self.net.eval()
        metrics = PeriodMetrics()
        try:
            with torch.no_grad():
                for index, batch in enumerate(data):
                    if max_batches is not None and index >= max_batches:
                        break
                    book = self._forward(to_device(batch, self.device))
                    names, raw, weights = self._weigh(book, check=False)
                    # Weight each batch by its size, so the mean is per example.
                    metrics.add(names, raw, weights, count=batch_size(batch))
                    metrics.add_metrics(book.metrics)
        finally:
            self.net.train(was_training)
        if not metrics:
            raise ValueError("evaluate() got no batch: `data` is empty")
        return metrics.read()

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

    def event(self, event: str, message: str, **fields: Any) -> None:
        """Log an event row (and print ``message`` under the progress bar)."""
        self._write(
            {"kind": "event", "step": self.step, "event": event, "message": message, **fields}
        )

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of everything needed to continue exactly (rank 0 only)."""
        if self.run_dir is None:
            raise ValueError("save_checkpoint() needs a `run_dir`; the trainer has none")
        if not self.dist.is_main:
            return None
        return save_checkpoint(
            self.run_dir / "checkpoints", self.step, self._state(), keep=self.keep_checkpoints
        )

    # -- one optimizer step ---------------------------------------------------------------
    @property
    def _data(self) -> DataStream:
        if self._stream is None:
            raise RuntimeError("the trainer has no data stream: call fit() first")
        return self._stream

    def _train_step(self) -> bool:
        group = select_group(self.groups, self.step)
        epoch_before = self._data.epoch
        log_step = (self.step + 1) % self.log_every == 0
        ok: Tensor | None = None
        passes = 0
        for micro in range(self.accumulate):
            try:
                batch = self._data.next()
            except StopIteration:
                break
            passes += 1
            book = self._forward(to_device(batch, self.device))
            names, raw, weights = self._weigh(book, check=not self._checked_weight_keys)
            self._checked_weight_keys = True
            flag = self._flags(names, raw, book)
            ok = flag if ok is None else ok & flag
            diagnostics = log_step and micro == self.accumulate - 1
            used = self._backward(book, names, weights, group, diagnostics)
            self._metrics.add(names, raw, used)
            self._metrics.add_metrics(book.metrics)
            self.last_book = book
        if passes == 0:
            return False
        if passes < self.accumulate:
            # The data ran out mid-step: rescale so the step averages the passes it has.
            for parameter in _group_parameters(group):
                if parameter.grad is not None:
                    parameter.grad.mul_(self.accumulate / passes)
        self._finish_step(group, ok)
        self.step += 1
        self.epoch_ended = self._data.epoch != epoch_before
        self._period_steps += 1
        for sink in self._sinks():
            sink.advance(1)
        if log_step:
            self._log()
        return True

    def _forward(self, batch: Any) -> LossBook:
        with (
            self.amp.autocast(),
            collect(self.net, step=self.step, device=self.device, batch=batch) as book,
        ):
            merge_output(book, call_model(self.net, batch, self.forward, self._whole_batch))
        return book

    def _weigh(self, book: LossBook, *, check: bool) -> tuple[tuple[str, ...], Tensor, list[float]]:
        names = tuple(sorted(book))
        if not names:
            raise ValueError("no loss was returned, emitted or contributed in this step")
        book_weights = book.weights
        weights = [book_weights[name] for name in names]
        if self.weights:
            for index, name in enumerate(names):
                for pattern, schedule in self.weights.items():
                    if fnmatch.fnmatchcase(name, pattern):
                        weights[index] *= schedule(self.step)
        if check:
            unknown = [p for p in self.weights if not any(fnmatch.fnmatchcase(n, p) for n in names)]
            if unknown:
                raise ValueError(
                    f"`weights` names losses that the first step did not produce: {unknown}; "
                    f"the losses are {list(names)}"
                )
        raw = torch.stack([book[name] for name in names]).detach()
        return names, raw, weights

    def _flags(self, names: tuple[str, ...], raw: Tensor, book: LossBook) -> Tensor:
        """One boolean tensor, true when all is well: every loss finite, no auxiliary loss < 0.

        The sum of the losses is finite exactly when each one is (an overflow to inf counts
        as non-finite too: the total would be inf), and costs two small ops instead of three.
        """
        ok = torch.isfinite(raw.sum())
        nonnegative = book.nonnegative
        if nonnegative:
            key = (names, nonnegative)
            mask = self._masks.get(key)
            if mask is None:  # built once per set of names: no host->device copy per step
                mask = torch.tensor([name in nonnegative for name in names], device=raw.device)
                self._masks[key] = mask
            ok = ok & torch.where(mask, raw, 0.0).ge(0).all()
        return ok

    def _backward(
        self,
        book: LossBook,
        names: tuple[str, ...],
        weights: list[float],
        group: OptimizerGroup,
        diagnostics: bool,
    ) -> Sequence[float | Tensor]:
        scale = 1.0 / self.accumulate
        active = [name for name in names if group.selects(name)]
        if not active:
            raise ValueError(
                f"optimizer group {group.name!r} selects none of the losses {list(names)} "
                f"with its patterns {list(group.patterns)}"
            )
        weight_of = dict(zip(names, weights, strict=True))
        if self.balancer is not None:
            scaler = self.amp.scaler
            used = self.balancer.apply(
                {name: book[name] for name in names},
                weight_of,
                step=self.step,
                scale=(
                    scale
                    if scaler is None
                    else scaler.scale(torch.tensor(scale, device=self.device))
                ),
                shared=self.shared,
                representation=book.representation,
                diagnostics=diagnostics,
            )
            if diagnostics:
                self._metrics.set_extra(self.balancer.diagnostics())
            return [used[name] for name in names]
        if diagnostics and self.grad_diagnostics:
            from multiloss.balancing import (  # type: ignore[attr-defined]  # lands with balancing
                gradient_diagnostics,
            )

            self._metrics.set_extra(
                gradient_diagnostics({n: book[n] for n in active}, weight_of, self.shared)
            )
        total = sum(
            (book[name] * weight_of[name] for name in active[1:]),
            book[active[0]] * weight_of[active[0]],
        )
        total = total * scale
        if self.amp.scaler is not None:
            total = self.amp.scaler.scale(total)
        total.backward()
        return [
            weight if group.selects(name) else 0.0
            for name, weight in zip(names, weights, strict=True)
        ]

    def _finish_step(self, group: OptimizerGroup, ok: Tensor | None) -> None:
        scaler = self.amp.scaler
        if scaler is not None:
            scaler.unscale_(group.optimizer)
        if self.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(list(_group_parameters(group)), self.grad_clip)
            if scaler is None and ok is not None:
                ok = ok & torch.isfinite(norm)
        if ok is None:
            raise RuntimeError("internal error: a step finished without any forward pass")
        if not bool(self.dist.all(ok)):  # the one device->host read of the step
            self._nonfinite()
            if scaler is not None:
                scaler.update()
        else:
            if scaler is not None:
                scaler.step(group.optimizer)
                scaler.update()
            else:
                group.optimizer.step()
            for layer in self._aux_layers:
                layer.after_optimizer_step()
            if self.balancer is not None:
                self.balancer.after_optimizer_step()
        if group.scheduler is not None:
            group.scheduler.step()
        for g in self.groups:
            g.optimizer.zero_grad(set_to_none=True)

    def _nonfinite(self) -> None:
        book = self.last_book
        assert book is not None
        values = {name: float(book[name].detach()) for name in sorted(book)}
        broken = {name: value for name, value in values.items() if not _finite(value)}
        negative = {
            name: value for name, value in values.items() if name in book.nonnegative and value < 0
        }
        for g in self.groups:
            g.optimizer.zero_grad(set_to_none=True)
        for layer in self._aux_layers:
            layer.reset_accumulation()
        if negative:
            details = ", ".join(
                f"{name!r} = {value:.6g} (from {book.origins[name] or 'the root'})"
                for name, value in negative.items()
            )
            raise ValueError(
                f"auxiliary loss went negative at step {self.step}: {details}; auxiliary-loss "
                "layers must return losses >= 0. The optimizer step was not taken."
            )
        details = ", ".join(f"{name!r} = {value}" for name, value in broken.items()) or (
            "the losses are finite but the gradient norm is not"
        )
        message = f"non-finite loss at step {self.step}: {details}"
        if self.nonfinite == "raise":
            raise FloatingPointError(
                f"{message}. The optimizer step was not taken: parameters and optimizer state "
                "are unchanged. Pass nonfinite='skip' to skip such steps instead."
            )
        self.skipped += 1
        self.event(
            "nonfinite", f"{message}; step skipped ({self.skipped} so far)", losses=sorted(broken)
        )

    # -- logging ------------------------------------------------------------------------------
    def _log(self) -> None:
        book = self.last_book
        if book is not None:
            for path, layer in book.aux_modules.items():
                diagnostics = layer.aux_loss_diagnostics()
                prefix = f"metric/{path}/" if path else "metric/"
                self._metrics.set_extra({prefix + k: v for k, v in diagnostics.items()})
        values = self._metrics.read()
        elapsed = time.perf_counter() - self._period_start
        record: dict[str, Any] = {
            "kind": "train",
            "step": self.step,
            "epoch": self.epoch,
            "time": time.time(),
            "total": values.pop("total", float("nan")),
        }
        for index, param_group in enumerate(self.optimizer.param_groups):
            key = "lr" if index == 0 else f"lr/{index}"
            record[key] = float(param_group["lr"])
        record["time/step"] = elapsed / max(self._period_steps, 1)
        record["skipped"] = self.skipped
        record.update(values)
        self._period_start = time.perf_counter()
        self._period_steps = 0
        self._emit(record)

    def _emit(self, record: dict[str, Any]) -> None:
        self._write(record)
        for hook in self.hooks:
            hook.on_log(record)

    def _write(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        for sink in self._sinks():
            sink.write(record)

    def _sinks(self) -> list[Sink]:
        return self.sinks if self.dist.is_main else []

    def _open(self, run: RunInfo) -> None:
        if self.run_dir is not None and self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "run.json").write_text(json.dumps(self._describe(run), indent=1))
        for sink in self._sinks():
            sink.open(run)

    def _close(self) -> None:
        for sink in self._sinks():
            sink.close()

    def _describe(self, run: RunInfo) -> dict[str, Any]:
        return {
            "multiloss": multiloss.__version__,
            "torch": torch.__version__,
            "model": type(self.model).__name__,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "world_size": self.dist.world_size,
            "start_step": run.start_step,
            "total_steps": run.total_steps,
            "resumed": run.resumed,
            "started": time.time(),
            "trainer": repr(self),
        }

    # -- set-up, checkpoints --------------------------------------------------------------
    def _build_hooks(self, val_data: Iterable[Any] | None) -> list[Hook]:
        hooks: list[Hook] = []
        if val_data is not None:
            hooks.append(EvalHook(val_data, every=self.val_every))
        hooks += self.user_hooks
        if self.run_dir is not None:
            hooks.append(CheckpointHook(self.checkpoint_every))
        elif self.checkpoint_every is not None:
            raise ValueError("`checkpoint_every` needs a `run_dir` to write checkpoints to")
        for hook in hooks:
            hook.trainer = self
        return hooks

    def _refuse_foreign_checkpoints(self) -> None:
        if self.run_dir is None:
            return
        found = find_checkpoints(self.run_dir / "checkpoints")
        if found:
            raise ValueError(
                f"`run_dir` {self.run_dir} already holds checkpoints of another run (latest "
                f"{found[0].stem}); pass resume=True to continue that run, or use a new run_dir"
            )

    def _target_steps(self, epochs: int | None, steps: int | None) -> int | None:
        if steps is not None:
            return steps
        length = self._data.length
        if length is None or epochs is None:
            return None
        return epochs * -(-length // self.accumulate)

    def _state(self) -> dict[str, Any]:
        return {
            "format": 1,
            "multiloss": multiloss.__version__,
            "step": self.step,
            "skipped": self.skipped,
            "model": unwrap(self.net).state_dict(),
            "optimizers": [g.optimizer.state_dict() for g in self.groups],
            "schedulers": [
                g.scheduler.state_dict() if g.scheduler is not None else None for g in self.groups
            ],
            "scaler": self.amp.scaler.state_dict() if self.amp.scaler is not None else None,
            "balancer": self.balancer.state_dict() if self.balancer is not None else None,
            "hooks": [hook.state_dict() for hook in self.hooks],
            "data": self._data.state_dict(),
            "rng": get_rng_state(),
        }

    def _resume(self) -> Path:
        if self.run_dir is None:
            raise ValueError("resume=True needs a `run_dir` to find checkpoints in")
        state, path = load_latest(self.run_dir / "checkpoints", map_location=self.device)
        target = unwrap(self.net)
        check_compatible(state["model"], target.state_dict(), source=str(path))
        target.load_state_dict(state["model"])
        if len(state["optimizers"]) != len(self.groups):
            raise ValueError(
                f"checkpoint {path} has {len(state['optimizers'])} optimizers; this trainer "
                f"has {len(self.groups)}"
            )
        for group, opt_state, sched_state in zip(
            self.groups, state["optimizers"], state["schedulers"], strict=True
        ):
            group.optimizer.load_state_dict(opt_state)
            if group.scheduler is not None and sched_state is not None:
                group.scheduler.load_state_dict(sched_state)
        if self.amp.scaler is not None and state["scaler"] is not None:
            self.amp.scaler.load_state_dict(state["scaler"])
        if self.balancer is not None and state["balancer"] is not None:
            self.balancer.load_state_dict(state["balancer"])
        for hook, hook_state in zip(self.hooks, state["hooks"], strict=False):
            hook.load_state_dict(hook_state)
        self.step = int(state["step"])
        self.skipped = int(state["skipped"])
        self._data.load_state_dict(state["data"])
        set_rng_state(state["rng"])  # last: skipping batches above may have drawn numbers
        self._checked_weight_keys = True
        return path


def check_pattern(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise TypeError(f"each key of `weights` must be a non-empty loss name; got {describe(key)}")
    return key


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


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


def _group_parameters(group: OptimizerGroup) -> Iterable[Tensor]:
    for param_group in group.optimizer.param_groups:
        yield from param_group["params"]
