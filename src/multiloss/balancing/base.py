"""The ``Balancer`` contract: named losses in, gradients out.

A balancer is an ``nn.Module`` (learned weights and running statistics are parameters and
buffers, so they round-trip through ``state_dict`` and the trainer's checkpoints). The trainer
calls :meth:`Balancer.apply` once per micro-batch and :meth:`Balancer.after_optimizer_step` after
each optimizer step (``docs/contracts.md`` section 3); outside the trainer one call does it all::

    weights = balancer.backward(losses, shared=params)   # fills .grad, returns the weights

**Writing a method.** Subclass one of the three families and implement one method:

* :class:`~multiloss.balancing.LossWeighting` (``weighting.py``): ``factors(ctx) -> (T,)``
  multipliers of the fixed weights; one ordinary backward pass, no per-loss gradients.
* :class:`~multiloss.balancing.GradientBalancer` (``gradient.py``): ``weigh(gramian, ctx) ->
  (T,)`` coefficients of the per-loss gradients, or ``combine(jacobian, ctx)`` for the general
  case. The base computes the per-loss gradients (one batched backward pass; a loop on the
  CPU), writes the shared update, and gives task-specific parameters their ordinary gradient.
* :class:`~multiloss.balancing.Wrapper` (``wrapper.py``): transform the context (rescale losses,
  reweigh them) and delegate to an inner balancer, like an optax combinator.

Every family ends in :meth:`Balancer.plan`, which returns a :class:`Plan` and writes nothing:
the base class executes plans (``_execute.py``), so wrappers compose with any method, and a
method never touches ``.grad``, ``scale`` or the fixed losses itself.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, NoReturn

import torch
from torch import Tensor, nn

from multiloss._validation import (
    check_bool,
    check_finite_float,
    check_int,
    check_loss_tensor,
    describe,
)
from multiloss.balancing._arrays import HostWriter
from multiloss.balancing._checks import (
    DeferredChecks,
    check_representation,
    check_scale,
    check_shared,
)
from multiloss.balancing._execute import execute
from multiloss.balancing._jacobian import Engine, _stack
from multiloss.balancing._plan import Level, Plan
from multiloss.balancing.context import BalanceContext, _Session, vector_on

__all__ = ["BalanceContext", "Balancer", "Level", "Plan"]

_GLOB = frozenset("*?[")


def _parse_balance(balance: str | Iterable[str] | None, owner: str) -> tuple[str, ...] | None:
    if balance is None:
        return None
    if isinstance(balance, str):
        items: list[Any] = [balance]
    elif isinstance(balance, Iterable) and not isinstance(balance, Mapping | Tensor):
        items = list(balance)
    else:
        raise TypeError(
            f"`balance` of {owner} must be a loss name, a glob pattern such as 'task/*', a list "
            f"of them, or None; got {describe(balance)}"
        )
    if not items:
        raise ValueError(
            f"`balance` of {owner} is empty; list the loss names (or glob patterns such as "
            "'task/*') to balance, or pass None to balance every loss"
        )
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise TypeError(
                f"each entry of `balance` of {owner} must be a non-empty loss name or pattern; "
                f"got {describe(item)}"
            )
    return tuple(dict.fromkeys(items))


_to_device = vector_on  # the old private name
_PLAIN = (bool, int, float, str, tuple, dict, list, type(None))


def _no_graph(owner: str, names: list[str]) -> NoReturn:
    """Raise for balanced losses that do not require grad (nothing to balance)."""
    listed = ", ".join(repr(name) for name in names)
    if len(names) == 1:
        subject, verb, they, them = f"balanced loss {listed}", "has", "it", "it"
    else:
        subject, verb, they, them = f"balanced losses {listed}", "have", "they", "them"
    raise ValueError(
        f"{subject} of {owner} {verb} no graph (requires_grad is False): {they} cannot be "
        f"balanced; compute {them} without .detach()/no_grad, or leave {them} out of "
        "`balance=` (a fixed loss may have no graph)"
    )


def _loss(value: Any, name: str) -> Tensor:
    """The common case (a 0-dim float tensor) without the full check's cost."""
    if isinstance(value, Tensor) and value.dim() == 0 and value.dtype.is_floating_point:
        return value
    return check_loss_tensor(value, name)


class Balancer(nn.Module):
    """Base class of every balancing method (see the module docstring for how to write one).

    Args:
        balance: The losses this balancer balances: names or glob patterns (``"task/*"``). The
            other losses are added to the update at their fixed weights, with their ordinary
            gradient (auxiliary regularizers, MoE balance terms). Default: every loss.

    Learnable parameters (Uncertainty's log-variances, GradNorm's weights) get their gradient in
    ``.grad`` like any parameter and must be stepped by an optimizer: pass
    ``balancer.parameter_group()`` to ``optimizer.add_param_group`` (the trainer does), or list
    ``balancer.parameters()`` in your optimizer. A warning says so when they are never stepped.

    Example:
        >>> import torch
        >>> from multiloss.balancing import Sum
        >>> w = torch.nn.Parameter(torch.tensor(2.0))
        >>> balancer = Sum(balance=["task"])   # "reg" is added at its fixed weight
        >>> used = balancer.apply({"task": w**2, "reg": w}, {"reg": 0.1}, step=0)
        >>> {name: float(value) for name, value in used.items()}
        {'task': 1.0, 'reg': 0.1}
        >>> w.grad
        tensor(4.1000)
    """

    #: The method needs every balanced loss to stay at or above a lower bound (logarithms,
    #: ratios); a loss below it stops training with a clear error.
    requires_positive_losses: ClassVar[bool] = False
    #: The method keeps state per balanced loss (buffers of length T): the balanced losses must
    #: then be the same at every call. The state is created at the first call, or at
    #: construction when ``balance=`` lists exact names (so an optimizer can be built first).
    per_loss_state: ClassVar[bool] = False

    def __init__(self, *, balance: str | Iterable[str] | None = None) -> None:
        super().__init__()
        self.balance = _parse_balance(balance, type(self).__name__)
        #: Learning rate of this balancer's own parameters in ``parameter_group()``
        #: (None: the optimizer's default).
        self.parameter_lr: float | None = None
        self._names: tuple[str, ...] | None = None
        self._engine = Engine()
        self._checks = DeferredChecks()
        self._last_diagnostics: dict[str, Tensor] = {}
        self._pending_step = False
        self._steps_taken = 0
        self._checked_once = False
        self._selection: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] | None = None
        self._weight_cache: tuple[tuple[float, ...], torch.device, Tensor] | None = None
        self._versions: dict[int, int] = {}
        self._stale_steps = 0
        self._warned_stale = False
        self._own: tuple[tuple[Tensor, ...], tuple[Tensor, ...]] | None = None
        self._device_ok: torch.device | None = None
        # Writes per-loss state computed on floats into the buffers (methods on the CPU).
        self._host = HostWriter()

    def __setattr__(self, name: str, value: Any) -> None:
        # Host bookkeeping updated at every step skips nn.Module's parameter, buffer and
        # submodule checks (they cost more than the rest of a Sum step's Python work).
        if name.startswith("_") and type(value) in _PLAIN and name in self.__dict__:
            self.__dict__[name] = value
            return
        super().__setattr__(name, value)

    def _own_parameters(self) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """(every trainable parameter, this module's own ones), cached until state changes."""
        if self._own is None:
            every = tuple(p for p in self.parameters() if p.requires_grad)
            mine = tuple(self.parameters(recurse=False))
            self._own = (every, mine)
        return self._own

    def _forget_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, Balancer):
                module._own = None

    # -- what a method implements ----------------------------------------------------------
    @abstractmethod
    def plan(self, ctx: BalanceContext) -> Plan:
        """Decide this call's update (see :class:`Plan`); must not write any gradient."""

    def setup_state(self, names: tuple[str, ...], device: torch.device) -> None:
        """Create the per-loss parameters and buffers (``per_loss_state`` methods)."""

    def on_optimizer_step(self) -> None:
        """Called after each optimizer step taken (commit per-step statistics here)."""

    def state_diagnostics(self) -> dict[str, Tensor | float]:
        """Method state for the logs, keys like ``"log_var/<loss>"`` (prefixed for you)."""
        return {}

    def hyperparameters(self) -> dict[str, Any]:
        """The settings shown by ``repr``."""
        return {}

    def _needs_graph_after_jacobian(self) -> bool:
        """Whether this call may use the graph after its parameter-level Jacobian (another
        Jacobian, a backward pass of its own). ``False`` lets the per-loss passes free the
        graph and give the task-specific parameters their gradients themselves."""
        return True

    def _every_loss_needs_a_graph(self) -> bool:
        """Whether each balanced loss must have a graph: methods that take per-loss
        gradients have nothing to weigh a constant's (missing) gradient against. Loss
        weighting only multiplies the losses, so a constant (a task without labels in this
        batch) contributes nothing, as in plain summation."""
        return True

    def _heads_at_representation(self) -> bool:
        """Whether this call's plan is surely a gradient-level one at the representation
        (its final pass then only sends the update into the trunk from ``z``), so the
        per-loss passes at ``z`` may give the heads their gradients themselves."""
        return False

    def setup_known_names(self) -> None:
        """Create the per-loss state now if ``balance=`` lists exact names; subclasses with
        ``per_loss_state`` call this at the end of ``__init__``."""
        if (
            self.per_loss_state
            and self.balance
            and not any(set(item) & _GLOB for item in self.balance)
        ):
            self._ensure_state(tuple(sorted(self.balance)), torch.device("cpu"))

    # -- the trainer's contract ------------------------------------------------------------
    def apply(  # type: ignore[override]  # nn.Module.apply(fn) is still served, see below
        self,
        losses: Mapping[str, Tensor],
        weights: Mapping[str, float] | None = None,
        *,
        step: int | None = None,
        scale: float | Tensor = 1.0,
        shared: Sequence[Tensor] | None = None,
        representation: Tensor | None = None,
        diagnostics: bool = False,
    ) -> dict[str, Tensor | float]:
        """Add this micro-batch's gradients to ``.grad`` and return the weights used.

        Args:
            losses: Raw (unweighted) scalar losses by name, with their graph.
            weights: Fixed weights by name (default 1.0; negative maximizes).
            step: Optimizer steps taken so far (default: the ``after_optimizer_step`` count).
            scale: Multiplies every gradient (``1/accumulation`` times the AMP loss scale).
            shared: The shared parameters (default: those reached by two or more balanced
                losses, found by walking the graph when the method needs them).
            representation: The shared feature tensor, for representation-level methods.
            diagnostics: Also compute the ``grad/...`` diagnostics (one batched Jacobian).

        Returns:
            Loss name -> effective weight (0-dim tensor for balanced losses, float for fixed).
            Nothing here waits for the device.

        Raises:
            TypeError, ValueError: An argument of the wrong type or value, named; a balanced
                loss without a graph (``requires_grad`` False; a fixed one may be a constant).
            FloatingPointError: A loss (balanced or fixed) is nan or inf. On the CPU before
                anything is written or updated; on an accelerator at the next :meth:`check`
                (a flag kept on the device, no sync).
        """
        if callable(losses) and not isinstance(losses, Mapping):
            return nn.Module.apply(self, losses)  # model.apply(init_fn) reaching a balancer
        return self._apply_losses(
            losses,
            weights,
            step=step,
            scale=scale,
            shared=shared,
            representation=representation,
            diagnostics=diagnostics,
            where="apply",
        )

    def _apply_losses(
        self,
        losses: Mapping[str, Tensor],
        weights: Mapping[str, float] | None,
        *,
        step: int | None,
        scale: float | Tensor,
        shared: Sequence[Tensor] | None,
        representation: Tensor | None,
        diagnostics: bool,
        where: str,
    ) -> dict[str, Tensor | float]:
        """:meth:`apply`; ``where`` names the public method in error messages."""
        owner = f"{type(self).__name__}.{where}"
        if step is None:
            step = self._steps_taken
        step = check_int(step, f"`step` of {owner}", min_value=0)
        scale = check_scale(scale, owner)
        if shared is not None:
            shared = check_shared(shared, owner)
        if representation is not None:
            representation = check_representation(representation, owner)
        check_bool(diagnostics, f"`diagnostics` of {owner}")
        if weights is not None and not isinstance(weights, Mapping):
            raise TypeError(
                f"`weights` of {owner} must be a mapping of loss name -> float (or None); got "
                f"{describe(weights)}"
            )
        balanced, fixed, all_names = self._select(losses, owner)
        given = dict(weights or {})
        if given and not set(given) <= set(all_names):
            unknown = sorted(set(given) - set(all_names), key=str)
            raise ValueError(
                f"`weights` of {owner} names losses that are not there: "
                f"{unknown}; the losses are {sorted(all_names)}"
            )
        tensors = {name: _loss(losses[name], name) for name in all_names}
        without = [name for name in balanced if not tensors[name].requires_grad]
        if without and self._every_loss_needs_a_graph():
            _no_graph(owner, without)
        device = tensors[balanced[0]].device
        fixed_weights = tuple(self._weight(given, name) for name in fixed)
        session = _Session(
            owner=type(self).__name__,
            names=balanced,
            losses=tuple(tensors[name] for name in balanced),
            fixed_names=fixed,
            fixed_losses=tuple(tensors[name] for name in fixed),
            fixed_weights=fixed_weights,
            scale=scale,
            shared=shared,
            representation=representation,
            diagnostics=diagnostics,
            engine=self._engine,
            graph_done_after_jacobian=not self._needs_graph_after_jacobian(),
            heads_at_representation=self._heads_at_representation(),
        )
        self._check_finite(session, step)  # before any state is updated or gradient written
        ctx = BalanceContext(
            session,
            step=step,
            weights=self._weights_vector(tuple(self._weight(given, n) for n in balanced), device),
        )
        plan = self.plan_for(ctx)
        found = execute(session, plan, self._own_parameters()[0], retain_graph=False)
        if diagnostics:
            self._last_diagnostics = found
        self._pending_step = True
        if not self._checked_once:
            self._checked_once = True
            self.check()  # one sync on the first call: bad input fails at step 0, not later
        used: dict[str, Tensor | float] = dict(
            zip(balanced, plan.weights_to_report().detach().unbind(), strict=True)
        )
        used.update(zip(fixed, fixed_weights, strict=True))
        return used

    def _check_finite(self, session: _Session, step: int) -> None:
        """Stop on a non-finite loss value: now on the CPU (each value read for free; the
        methods that weigh by them reuse the numbers), at the next check on an accelerator (a
        flag kept on the device: no sync)."""
        owner = type(self).__name__
        losses = session.losses + session.fixed_losses
        names = session.names + session.fixed_names
        if all(loss.is_cpu for loss in losses) and not torch.compiler.is_compiling():
            # Read from the stack the backward pass of loss weighting starts from (one read
            # for all T), and reused by the methods that weigh by the values.
            values = session.stacked().tolist()
            values.extend(loss.item() for loss in session.fixed_losses)
            if not math.isfinite(sum(values)):  # a nan or inf (or float64 values overflowing)
                bad = [(n, v) for n, v in zip(names, values, strict=True) if not math.isfinite(v)]
                if bad:
                    raise FloatingPointError(
                        ", ".join(f"loss {name!r} is {value}" for name, value in bad)
                        + f" at step {step}; {owner} wrote no gradient and kept its state"
                    )
            session.host_values = values[: len(session.losses)]
            return
        stacked = session.local_values()
        if session.fixed_losses:
            fixed = _stack(session.fixed_losses).detach().to(torch.float32)
            stacked = torch.cat([stacked, fixed.to(stacked.device)])
        failed = torch.isfinite(stacked).logical_not_().any()

        def message() -> str:  # read at the check, from the last call's values
            bad = [
                f"loss {name!r} is {value}"
                for name, value in zip(names, stacked.tolist(), strict=True)
                if not math.isfinite(value)
            ]
            found = ", ".join(bad) if bad else "a loss was not finite"
            return f"{found} at step {step} or before; {owner} already wrote that step's update"

        self._checks.add("nonfinite_loss", failed, message, FloatingPointError)

    def after_optimizer_step(self) -> None:
        """Tell the balancer an optimizer step was taken (not for skipped steps)."""
        self._pending_step = False
        self._steps_taken += 1
        self._watch_parameters()
        for module in self._modules.values():
            if isinstance(module, Balancer):
                module.after_optimizer_step()
        self.on_optimizer_step()
        mine = self._own_parameters()[1]
        if mine:
            self._versions = {id(p): p._version for p in mine}

    def release_memory(self) -> None:
        """Free the per-loss gradient buffers kept from one step to the next.

        Gradient-level methods on the CPU keep their ``T x P`` Jacobian buffer (``P``: the shared
        parameters' size) between steps, because allocating it afresh each step costs its page
        faults every time. Call this before a long pause of a large model (evaluation, another
        phase of training); the buffer comes back at the next call. Nothing is kept on
        accelerators, where the caching allocator recycles memory.
        """
        for module in self.modules():
            if isinstance(module, Balancer):
                module._engine.clear()

    def use_factored_gradients(self, enabled: bool = True) -> Balancer:
        """Keep the per-loss gradients of linear layers' weights factored (on by default).

        A gradient-level method needs the Gramian of the per-loss gradients over the shared
        parameters. For the weight of a linear layer (``nn.Linear``, or any ``x @ W``) found in
        the graph, the balancer keeps the layer's input ``X`` and each loss's output gradient
        ``dY_i`` instead of the ``T`` weight gradients ``dY_i^T X``: the backward passes skip the
        weight's gradient, and the Gramian is ``<(X X^T) dY_i, dY_j>``. Exact (to rounding); used
        per layer only where it costs fewer operations, i.e. when the batch (rows of ``X``) is
        smaller than about the layer's width, with the CPU's loop of backward passes (not the
        batched pass of accelerators), never under DDP nor for a weight with gradient hooks
        (hooks on a layer's output are honoured). ``False`` forms every row,
        e.g. to compare the two or to read ``jacobian.blocks`` without forming them on demand.

        Returns:
            The balancer, for chaining.

        Example:
            >>> from multiloss.balancing import UPGrad
            >>> UPGrad().use_factored_gradients(False)._engine.factor_linear
            False
        """
        check_bool(enabled, f"`enabled` of {type(self).__name__}.use_factored_gradients")
        for module in self.modules():
            if isinstance(module, Balancer):
                module._engine.factor_linear = enabled
        return self

    def diagnostics(self) -> dict[str, float | Tensor]:
        """``grad/...`` of the last call that computed them, and ``balance/...`` method state."""
        self.check()
        out: dict[str, float | Tensor] = dict(self._last_diagnostics)
        for module in self.modules():
            if isinstance(module, Balancer):
                prefix = f"balance/{type(module).__name__.lower()}/"
                for key, value in module.state_diagnostics().items():
                    out[prefix + key] = value.detach() if isinstance(value, Tensor) else value
        return out

    # -- one-call use ----------------------------------------------------------------------
    def backward(
        self,
        losses: Mapping[str, Tensor],
        *,
        weights: Mapping[str, float] | None = None,
        shared: Sequence[Tensor] | None = None,
        representation: Tensor | None = None,
        step: int | None = None,
        scale: float | Tensor = 1.0,
        diagnostics: bool = False,
    ) -> dict[str, float]:
        """Fill ``.grad`` of every parameter the losses reach; return the weights as floats.

        Each call counts as one optimizer step: if :meth:`after_optimizer_step` was not called
        since the previous call, it is called now. With gradient accumulation call
        :meth:`apply` and :meth:`after_optimizer_step` yourself. ``weights`` and
        ``representation`` default to those of a ``NamedLosses`` or ``LossBook``; ``step`` to
        the number of steps taken. This reads the weights back, so it waits for the device.

        Example:
            >>> import torch
            >>> from multiloss.balancing import Sum
            >>> w = torch.nn.Parameter(torch.tensor(1.0))
            >>> Sum().backward({"a": 2 * w, "b": 3 * w}, weights={"b": -1.0})
            {'a': 1.0, 'b': -1.0}
            >>> w.grad
            tensor(-1.)
        """
        if self._pending_step:
            self.after_optimizer_step()
        if weights is None:
            weights = getattr(losses, "weights", None)
        if representation is None:
            representation = getattr(losses, "representation", None)
        used = self._apply_losses(
            losses,
            weights,
            step=step,
            scale=scale,
            shared=shared,
            representation=representation,
            diagnostics=diagnostics,
            where="backward",
        )
        self.check()
        return {name: float(value) for name, value in used.items()}

    def parameter_group(self) -> dict[str, Any] | None:
        """An optimizer parameter group for this balancer's learnable parameters, or None.

        No weight decay (it would bias log-variances towards 1), and ``parameter_lr`` if set.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None
        group: dict[str, Any] = {"params": params, "weight_decay": 0.0}
        if self.parameter_lr is not None:
            group["lr"] = self.parameter_lr
        return group

    def add_parameters_to(self, optimizer: torch.optim.Optimizer) -> bool:
        """Add this balancer's parameters that ``optimizer`` does not have yet, as a new group.

        Per-loss parameters are created at the first call (unless ``balance=`` lists exact
        names), so call this after the first ``apply`` (the trainer does, and again after
        loading a checkpoint, before ``optimizer.load_state_dict``). Returns whether a group was
        added.
        """
        if not hasattr(optimizer, "param_groups") or not callable(
            getattr(optimizer, "add_param_group", None)
        ):
            raise TypeError(
                f"`optimizer` of {type(self).__name__}.add_parameters_to must be a "
                f"torch.optim.Optimizer (with param_groups and add_param_group); got "
                f"{describe(optimizer)}"
            )
        group = self.parameter_group()
        if group is None:
            return False
        known = {id(p) for g in optimizer.param_groups for p in g["params"]}
        group["params"] = [p for p in group["params"] if id(p) not in known]
        if not group["params"]:
            return False
        optimizer.add_param_group(group)
        return True

    def check(self) -> None:
        """Raise any failure found on the device since the last check (one device sync)."""
        for module in self.modules():
            if isinstance(module, Balancer):
                module._checks.run()

    # -- helpers for methods ---------------------------------------------------------------
    def plan_for(self, ctx: BalanceContext) -> Plan:
        """Set up per-loss state, call :meth:`plan`, check the result (wrappers call this on
        their inner balancer instead of ``plan``)."""
        self._ensure_state(ctx.names, ctx.device)
        plan = self.plan(ctx)
        vectors = [plan.loss_weights, plan.weights_to_report()]
        if isinstance(plan.shared_update, Tensor):
            vectors.append(plan.shared_update)
        if all(vector is ctx.weights for vector in vectors):
            return plan  # the fixed weights themselves (Sum): validated on the way in
        for vector in vectors:
            if vector.shape != (ctx.num_losses,):
                raise RuntimeError(
                    f"{type(self).__name__}.plan returned weights of shape {tuple(vector.shape)}; "
                    f"expected ({ctx.num_losses},), one per balanced loss"
                )
        distinct = [v for k, v in enumerate(vectors) if all(v is not u for u in vectors[:k])]

        def message() -> str:
            return (
                f"{type(self).__name__} produced non-finite weights at step {ctx.step} for "
                f"losses {list(ctx.names)}: {plan.weights_to_report().tolist()}; loss values "
                f"{ctx.values.tolist()}; its state: {self.describe_state()}"
            )

        if all(v.device.type == "cpu" for v in distinct) and not torch.compiler.is_compiling():
            # A handful of numbers read for free: cheaper than the tensor operations.
            if not all(math.isfinite(x) for v in distinct for x in v.detach().tolist()):
                raise RuntimeError(message())
            return plan
        both = distinct[0] if len(distinct) == 1 else torch.cat(distinct)
        bad = ~torch.isfinite(both.detach()).all()
        self._checks.add("nonfinite", bad, message, RuntimeError)
        return plan

    def require_at_least(
        self,
        ctx: BalanceContext,
        bounds: Tensor | float,
        why: str,
        advice: str | None = None,
        *,
        strict: bool = False,
    ) -> None:
        """Stop (now on CPU, at the next check elsewhere) if a balanced loss is below ``bounds``.

        ``advice``: what the user can do, ending the message. Default: pass ``lower_bound=``
        where this balancer takes one, else keep the loss non-negative or leave it out.
        ``strict``: the loss must stay above the bound (a method that divides by it).
        """

        def message(below: list[bool]) -> str:
            # Worked out only for the error: a Module's hasattr miss costs microseconds.
            if advice is not None:
                told = advice
            elif hasattr(self, "lower_bound"):
                told = (
                    "Pass `lower_bound=` with a value the loss can never go below, or leave the "
                    "loss out of `balance=`"
                )
            else:
                told = (
                    f"{type(self).__name__} takes no lower bound: shift the loss by a constant "
                    "so it never goes below 0, leave it out of `balance=` (it is then added at "
                    "its fixed weight), or use a method that takes `lower_bound=` (FAMO, "
                    "Uncertainty)"
                )
            limits = bounds.tolist() if isinstance(bounds, Tensor) else [bounds] * len(ctx.names)
            bad = [
                f"{name!r} = {value:.6g} (bound {limit:.6g})"
                for name, value, limit, low in zip(
                    ctx.names, ctx.values.tolist(), limits, below, strict=True
                )
                if low
            ]
            where = "above" if strict else "at or above"
            return (
                f"{type(self).__name__} needs every balanced loss to stay {where} its lower "
                f"bound ({why}); at step {ctx.step}: {', '.join(bad)}. {told}"
            )

        floats = ctx.value_floats()
        if floats is not None or (
            ctx.values.device.type == "cpu" and not torch.compiler.is_compiling()
        ):
            # A few float comparisons: as tensor operations they cost more than the numbers.
            if isinstance(bounds, Tensor):
                limits = bounds.tolist()
            else:
                limits = [float(bounds)] * len(ctx.names)
            if floats is None:
                floats = ctx.values.tolist()
            below = [
                value <= limit if strict else value < limit
                for value, limit in zip(floats, limits, strict=True)
            ]
            if any(below):
                raise ValueError(message(below))
            return
        flags = ctx.values <= bounds if strict else ctx.values < bounds
        self._checks.add("below_bound", flags.any(), lambda: message(flags.tolist()))

    def describe_state(self) -> str:
        """Parameters, buffers and names, as text for error messages (reads the device)."""
        parts = [f"losses={list(self._names) if self._names else None}"]
        for name, tensor in list(self.named_parameters()) + list(self.named_buffers()):
            parts.append(f"{name}={tensor.detach().cpu().tolist()}")
        return ", ".join(parts)

    # -- internals -------------------------------------------------------------------------
    def _weight(self, given: Mapping[str, float], name: str) -> float:
        value = given.get(name, 1.0)
        if type(value) is float and math.isfinite(value):  # the common case, checked cheaply
            return value
        return check_finite_float(value, f"`weight` for loss {name!r}")

    def _weights_vector(self, values: tuple[float, ...], device: torch.device) -> Tensor:
        cached = self._weight_cache
        if cached is not None and cached[0] == values and cached[1] == device:
            return cached[2]
        vector = _to_device(values, device)
        self._weight_cache = (values, device, vector)
        return vector

    def _select(
        self, losses: Mapping[str, Tensor], owner: str
    ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        if not isinstance(losses, Mapping):
            raise TypeError(
                f"`losses` of {owner} must be a mapping of name -> scalar tensor; got "
                f"{describe(losses)}"
            )
        key = tuple(losses)
        if self._selection is not None and self._selection[2] == key:
            return self._selection
        if not key:
            raise ValueError(f"{type(self).__name__} got no losses to balance (an empty mapping)")
        for name in key:
            if not isinstance(name, str):
                raise TypeError(
                    f"each loss name (key of `losses`) of {owner} must be a string; got "
                    f"{describe(name)} among {list(key)}"
                )
        names = sorted(key)
        if self.balance is None:
            balanced = names
        else:
            chosen: set[str] = set()
            for item in self.balance:
                matched = (
                    fnmatch.filter(names, item)
                    if set(item) & _GLOB
                    else [n for n in names if n == item]
                )
                if not matched:
                    raise ValueError(
                        f"`balance` of {type(self).__name__} names {item!r} but no loss matches "
                        f"it; the losses are {names}"
                    )
                chosen.update(matched)
            balanced = [n for n in names if n in chosen]
        fixed = [n for n in names if n not in set(balanced)]
        self._selection = (tuple(balanced), tuple(fixed), key)
        return self._selection

    def _ensure_state(self, names: tuple[str, ...], device: torch.device) -> None:
        if not self.per_loss_state:
            return
        if self._names is None:
            self._names = names
            self.setup_state(names, device)
            self._forget_parameters()
            self._device_ok = device
            return
        if self._names != names:
            raise ValueError(
                f"{type(self).__name__} keeps per-loss state for the losses {list(self._names)} "
                f"but this call balances {list(names)}; a stateful balancer needs the same "
                "balanced losses at every step: choose them with `balance=`"
            )
        if self._device_ok == device:
            return
        here = next(iter(self.buffers(recurse=False)), None)
        if here is None:
            here = next(iter(self.parameters(recurse=False)), None)
        if here is not None and here.device != device:
            self.to(device)  # state built on the CPU before the model moved (same Parameters)
        self._device_ok = device

    def _watch_parameters(self) -> None:
        """Warn when our parameters collect gradients but no optimizer ever steps them."""
        mine = self._own_parameters()[1]
        if not mine or self._warned_stale:
            return
        own = [p for p in mine if p.grad is not None]
        if not own:
            return
        if all(self._versions.get(id(p)) == p._version for p in own):
            self._stale_steps += 1
        else:
            self._stale_steps = 0
        if self._stale_steps >= 3:
            self._warned_stale = True
            warnings.warn(
                f"the parameters of {type(self).__name__} receive gradients but no optimizer "
                "updates them: add balancer.parameter_group() to your optimizer "
                "(optimizer.add_param_group(...)), or list balancer.parameters() in it",
                RuntimeWarning,
                stacklevel=3,
            )

    # -- state_dict ------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "names": None if self._names is None else list(self._names),
            "steps": self._steps_taken,
            # backward() commits an optimizer step at its next call: a checkpoint taken in
            # between carries it, or the resumed balancer would skip that step's update.
            "pending_step": self._pending_step,
        }

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise TypeError(
                f"extra state of {type(self).__name__} must be a dict; got {describe(state)}"
            )
        names = state.get("names")
        self._steps_taken = int(state.get("steps", 0))
        self._pending_step = bool(state.get("pending_step", False))
        if names is not None:
            self._ensure_state(tuple(names), self._state_device())

    def _state_device(self) -> torch.device:
        tensor = next(iter(self.buffers(recurse=False)), None)
        if tensor is None:
            tensor = next(iter(self.parameters(recurse=False)), None)
        return torch.device("cpu") if tensor is None else tensor.device

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Per-loss state is created lazily; create it before torch copies the saved values in.
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict) and extra.get("names") is not None and self._names is None:
            device = next(
                (
                    v.device
                    for k, v in state_dict.items()
                    if k.startswith(prefix) and isinstance(v, Tensor)
                ),
                torch.device("cpu"),
            )
            self._ensure_state(tuple(extra["names"]), device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        fields = dict(self.hyperparameters())
        if self.balance is not None:
            fields["balance"] = list(self.balance)
        return ", ".join(f"{key}={value!r}" for key, value in fields.items())
