"""One optimizer step: forward passes, weights, the guard, backward, and the update."""

from __future__ import annotations

import contextlib
import fnmatch
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from multiloss.collect import LossBook, collect
from multiloss.training._base import TrainerState
from multiloss.training.groups import OptimizerGroup, select_group
from multiloss.training.model_io import call_model, merge_output, to_device

__all__ = ["StepMixin"]


class StepMixin(TrainerState):
    """The per-step mechanics of ``Trainer``."""

    def _train_step(self) -> bool:
        group = self.groups[0] if len(self.groups) == 1 else select_group(self.groups, self.step)
        epoch_before = self._data.epoch
        log_step = (self.step + 1) % self.log_every == 0
        ok: Tensor | None = None
        passes = 0
        # Every micro-batch's detached loss values, so the guard can name a non-finite or
        # negative loss from any of them (not only the last).
        self._step_values = []
        held_back = False  # a balancer was not handed a micro-batch's non-finite losses
        # DDP reduces gradients in the last pass only; with a balancer, which computes its own
        # per-loss gradients, not at all: the gradients are averaged after the step's passes.
        manual_sync = self._ddp and self.balancer is not None
        for micro in range(self.accumulate):
            try:
                batch = self._data.next()
            except StopIteration:
                break
            passes += 1
            last = micro == self.accumulate - 1
            quiet = self._ddp and (manual_sync or not last)
            if held_back:  # the step is lost already: keep the data in step, skip the work
                continue
            with self.net.no_sync() if quiet else contextlib.nullcontext():  # type: ignore[operator]
                book = self._forward(to_device(batch, self.device))
                names, raw, weights = self._weigh(book, check=not self._checked_weight_keys)
                self._checked_weight_keys = True
                self._step_values.append((names, raw, book.nonnegative, book.origins))
                # Every loss of the step, the ones another optimizer group trains included:
                # a non-finite value anywhere stops the step.
                finite = torch.isfinite(raw).all()
                nonnegative = self._nonnegative(names, raw, book)
                flag = finite if nonnegative is None else torch.stack([finite, nonnegative])
                ok = flag if ok is None else ok & flag
                used: Sequence[float | Tensor] = weights
                if self.balancer is not None and not self._finite_on_host(finite):
                    # A balancer updates its statistics (running means, FAMO's logits, DWA's
                    # history) from the values it is given: a NaN must never reach it.
                    held_back = True
                else:
                    used = self._backward(book, names, weights, raw, group, log_step and last)
            self._metrics.add(names, raw, used)
            self._metrics.add_metrics(book.metrics)
            self.last_book = book
        if passes == 0:
            return False
        if manual_sync or (self._ddp and passes < self.accumulate):
            parameters = list(self.net.parameters())
            if self.balancer is not None:
                parameters += list(self.balancer.parameters())
            self.dist.average_gradients(parameters)
        if passes < self.accumulate:
            # The data ran out mid-step: rescale so the step averages the passes it has.
            for parameter in group_parameters(group):
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

    def _forward(self, batch: Any, net: nn.Module | None = None) -> LossBook:
        net = self.net if net is None else net
        with (
            self.amp.autocast(),
            collect(net, step=self.step, device=self.device, batch=batch) as book,
        ):
            merge_output(book, call_model(net, batch, self.forward, self._whole_batch))
        return book

    def _weigh(self, book: LossBook, *, check: bool) -> tuple[tuple[str, ...], Tensor, list[float]]:
        names, values, weights = book.snapshot()
        if not names:
            raise ValueError("no loss was returned, emitted or contributed in this step")
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
        with torch.no_grad():  # a copy for the logs and the guard: no autograd node
            raw = torch.stack(values)
        return names, raw, weights

    def _finite_on_host(self, finite: Tensor) -> bool:
        """``finite`` read on the host: free on the CPU; on an accelerator the one extra
        device->host read a step with a balancer takes (the balancer must not see a NaN)."""
        return bool(self.dist.all(finite).item())

    def _nonnegative(self, names: tuple[str, ...], raw: Tensor, book: LossBook) -> Tensor | None:
        """True when no auxiliary loss is negative (None when no auxiliary layer contributed).
        A NaN is not negative: it is the finiteness check's to report."""
        nonnegative = book.nonnegative
        if not nonnegative:
            return None
        key = (names, nonnegative)
        mask = self._masks.get(key)
        if mask is None:  # built once per set of names: no host->device copy per step
            mask = torch.tensor([name in nonnegative for name in names], device=raw.device)
            self._masks[key] = mask
        return torch.where(mask, raw, 0.0).lt(0).logical_not().all()

    def _backward(
        self,
        book: LossBook,
        names: tuple[str, ...],
        weights: list[float],
        raw: Tensor,
        group: OptimizerGroup,
        diagnostics: bool,
    ) -> Sequence[float | Tensor]:
        """Backpropagate the step's losses; return the weights used."""
        scale = 1.0 / self.accumulate
        key = (id(group), names)
        active = self._active.get(key)
        if active is None:  # which losses a group trains depends only on the names: cache it
            active = tuple(i for i, name in enumerate(names) if group.selects(name))
            if not active:
                raise ValueError(
                    f"optimizer group {group.name!r} selects none of the losses {list(names)} "
                    f"with its patterns {list(group.patterns)}"
                )
            self._active[key] = active
        if self.balancer is not None:
            scaler = self.amp.scaler
            used = self.balancer.apply(
                {name: book[name] for name in names},
                dict(zip(names, weights, strict=True)),
                step=self.step,
                scale=(
                    scale
                    if scaler is None
                    # torch.full fills on the device: no blocking host-to-device copy
                    else scaler.scale(torch.full((), scale, device=self.device))
                ),
                shared=self.shared,
                representation=book.representation,
                diagnostics=diagnostics and self.grad_diagnostics,
            )
            count = sum(1 for _ in self.balancer.parameters())
            if count != self._balancer_parameters:
                # Learned weights (Uncertainty, GradNorm) exist from the first call that
                # reaches them, which inside a wrapper (Scheduled's warm-up) may be a later
                # step: train them with the group's optimizer as soon as they appear.
                self.balancer.add_parameters_to(group.optimizer)
                self._balancer_parameters = count
            if diagnostics:
                self._metrics.set_extra(self.balancer.diagnostics())
            return [used[name] for name in names]
        if diagnostics and self.grad_diagnostics:
            from multiloss.balancing import gradient_diagnostics

            self._metrics.set_extra(  # of the losses this group trains, and their weights
                gradient_diagnostics(
                    {names[i]: book[names[i]] for i in active},
                    {names[i]: weights[i] for i in active},
                    self.shared,
                )
            )
        total: Tensor | None = None
        for i in active:  # the weighted sum, without multiplying by weights of exactly 1
            term = book[names[i]] if weights[i] == 1.0 else book[names[i]] * weights[i]
            total = term if total is None else total + term
        assert total is not None  # `active` is never empty
        if not total.requires_grad:
            raise ValueError(
                f"none of the losses of optimizer group {group.name!r} has a graph "
                f"({[names[i] for i in active]} do not require grad): was the model run under "
                "torch.no_grad(), or were its losses detached?"
            )
        if scale != 1.0:
            total = total * scale
        if self.amp.scaler is not None:
            total = self.amp.scaler.scale(total)
        total.backward()
        if len(active) == len(names):
            return weights
        return [weight if i in active else 0.0 for i, weight in enumerate(weights)]

    def _finish_step(self, group: OptimizerGroup, ok: Tensor | None) -> None:
        scaler = self.amp.scaler
        if scaler is not None:
            scaler.unscale_(group.optimizer)
        if ok is None:
            raise RuntimeError("internal error: a step finished without any forward pass")
        # Finite losses can still give a non-finite gradient (sqrt or a norm at 0, a custom
        # backward): it is read with the losses' verdict. With a scaler, its own check skips.
        grads_ok: Tensor | None = None
        if self.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(list(group_parameters(group)), self.grad_clip)
            if scaler is None:
                grads_ok = torch.isfinite(norm)
        elif scaler is None:
            grads = [p.grad for p in group_parameters(group) if p.grad is not None]
            grads_ok = _all_finite(grads) if grads else None
        if grads_ok is not None:
            ok = ok & grads_ok if ok.dim() == 0 else torch.stack([ok[0] & grads_ok, ok[1]])
        # The one device->host read of the step; every rank reaches the same verdict.
        verdict = self.dist.all(ok).tolist()
        finite, nonnegative = (verdict, True) if isinstance(verdict, bool) else verdict
        if not (finite and nonnegative):
            self._nonfinite(negative_somewhere=not nonnegative)
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

    def _nonfinite(self, *, negative_somewhere: bool) -> None:
        passes = self._step_values
        if not passes:
            raise RuntimeError("internal error: no loss values for the step being checked")
        several = len(passes) > 1
        broken: dict[str, str] = {}  # name -> its value, and the micro-batch where first seen
        negative: dict[str, tuple[float, str]] = {}
        for index, (names, raw, nonnegative, origins) in enumerate(passes):
            where = f" (micro-batch {index + 1} of {self.accumulate})" if several else ""
            for name, value in zip(names, raw.tolist(), strict=True):
                if not math.isfinite(value):
                    broken.setdefault(name, f"{value}{where}")
                elif name in nonnegative and value < 0:
                    origin = origins.get(name) or "the root"
                    negative.setdefault(name, (value, f"from {origin}{where}"))
        for g in self.groups:
            g.optimizer.zero_grad(set_to_none=True)
        for layer in self._aux_layers:
            layer.reset_accumulation()
        if negative_somewhere:
            details = ", ".join(
                f"{name!r} = {value:.6g} ({origin})" for name, (value, origin) in negative.items()
            ) or ("on another rank" if self.dist.active else "in a value no longer readable")
            raise ValueError(
                f"auxiliary loss went negative at step {self.step}: {details}; auxiliary-loss "
                "layers must return losses >= 0. The optimizer step was not taken."
            )
        if broken:
            message = f"non-finite loss at step {self.step}: " + ", ".join(
                f"{name!r} = {value}" for name, value in broken.items()
            )
        elif self.dist.active:
            message = (
                f"non-finite loss or gradient at step {self.step} on another rank (this "
                "rank's losses are finite)"
            )
        else:
            message = (
                f"non-finite gradient at step {self.step}: every loss is finite "
                f"({', '.join(sorted(passes[-1][0]))}) but the gradient norm is not (an "
                "operation whose derivative is infinite where it was evaluated, such as sqrt "
                "or a norm at 0)"
            )
        if self.nonfinite == "raise":
            raise FloatingPointError(
                f"{message}. The optimizer step was not taken: parameters and optimizer state "
                "are unchanged. Pass nonfinite='skip' to skip such steps instead."
            )
        self.skipped += 1
        self.event(  # on the row of the step it skipped (as the train rows count steps)
            "nonfinite",
            f"{message}; step skipped ({self.skipped} so far)",
            step=self.step + 1,
            losses=sorted(broken),
        )


def _all_finite(grads: list[Tensor]) -> Tensor:
    """0-dim: every gradient is finite. One fused norm per tensor (``_foreach_norm``, what
    ``clip_grad_norm_`` runs; 21 against 38 us for ``get_total_norm`` on six small tensors),
    without the total's square root. Half-precision gradients take the largest magnitude
    instead: their 2-norm overflows at 65504 when every element is finite. (A float32
    gradient whose 2-norm overflows, elements near 1e19, stops the step too.)"""
    first = grads[0]
    if all(
        g.device == first.device and g.dtype == first.dtype and g.layout == torch.strided
        for g in grads
    ):
        order = math.inf if first.element_size() < 4 else 2.0
        return torch.stack(torch._foreach_norm(grads, order)).isfinite().all()
    return torch.nn.utils.get_total_norm(grads, math.inf).isfinite()


def group_parameters(group: OptimizerGroup) -> Iterable[Tensor]:
    """Every parameter the group's optimizer steps."""
    for param_group in group.optimizer.param_groups:
        yield from param_group["params"]
