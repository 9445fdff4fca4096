"""``BalanceContext``: what a balancing method sees in one call.

The trainer (or ``Balancer.backward``) hands a balancer the named losses of a step; the base
class selects the balanced ones, orders them by name, and builds a context. The context gives a
method the loss values and weights as ``(T,)`` tensors and, on demand, the per-loss gradients
(computed once per call however many wrappers ask for them; the per-loss gradients are always
taken of the *raw* losses and rescaled lazily for each wrapper's view).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from multiloss.balancing._arrays import float32_tensor
from multiloss.balancing._capture import NormCapture, find_capture
from multiloss.balancing._distributed import mean_over_ranks, world_size
from multiloss.balancing._factored import (
    Factored,
    assemble,
    factored_targets,
    find_factored,
    find_factored_input,
    has_grad_hooks,
)
from multiloss.balancing._heads import heads_above
from multiloss.balancing._jacobian import (
    Collected,
    Engine,
    Jacobian,
    Target,
    _stack,
    gradients_at,
    is_unit_scale,
)
from multiloss.balancing._plan import Level, Plan
from multiloss.balancing.shared import GraphInfo, discover

__all__ = ["BalanceContext", "vector_on"]

#: The most rows the loop keeps as separate gradients (see ``_Session._keep_rows``).
_KEEP_ROWS_UP_TO = 4


def vector_on(values: Sequence[float], device: torch.device) -> Tensor:
    """A small float32 vector on ``device`` without a blocking host-to-device copy.

    Method authors use it for per-loss constants computed on the host (schedules, static
    weights): a plain ``torch.tensor(values, device="cuda")`` waits for the device.
    """
    cpu = float32_tensor(values)
    if device.type == "cpu":
        return cpu
    if device.type == "cuda":
        cpu = cpu.pin_memory()  # pinned memory makes the copy asynchronous
    return cpu.to(device, non_blocking=True)


@contextmanager
def _hooks_suspended(z: Tensor | None) -> Iterator[None]:
    """Run without the gradient hooks of ``z`` (``z.register_hook``), restored afterwards.

    The representation level balances the losses' own gradients at ``z`` and then sends the
    update into the trunk through ``z``, where the hooks act on it once, as they act on Sum's
    gradient. Left in place during the per-loss pass, they would act on the rows and then
    again on the correction the update adds (``autograd.grad`` captures ``z``'s gradient after
    its hooks). The hooks live in a dict the graph node reads at run time, so emptying it for
    the pass is enough.
    """
    hooks = None if z is None else getattr(z, "_backward_hooks", None)
    if not hooks:
        yield
        return
    saved = dict(hooks)
    hooks.clear()
    try:
        yield
    finally:
        hooks.update(saved)


def _watched(tensors: Sequence[Tensor]) -> bool:
    """Whether something watches how the ``.grad`` of one of ``tensors`` is written (or one is
    not a leaf): gradient hooks, post-accumulate hooks."""
    return any(
        not tensor.is_leaf
        or has_grad_hooks(tensor)
        or getattr(tensor, "_post_accumulate_grad_hooks", None)
        for tensor in tensors
    )


class _Session:
    """The state of one ``apply`` call, shared by the contexts of every wrapper level."""

    def __init__(
        self,
        *,
        owner: str,
        names: tuple[str, ...],
        losses: tuple[Tensor, ...],
        fixed_names: tuple[str, ...],
        fixed_losses: tuple[Tensor, ...],
        fixed_weights: tuple[float, ...],
        scale: float | Tensor,
        shared: Sequence[Tensor] | None,
        representation: Tensor | None,
        diagnostics: bool,
        engine: Engine,
        graph_done_after_jacobian: bool = False,
        heads_at_representation: bool = False,
    ) -> None:
        self.owner = owner
        self.names = names
        self.losses = losses
        self.fixed_names = fixed_names
        self.fixed_losses = fixed_losses
        self.fixed_weights = fixed_weights
        self.scale = scale
        self.given_shared = None if shared is None else tuple(shared)
        self.representation = representation
        self.diagnostics = diagnostics
        self.engine = engine  # the balancer's, kept across calls
        # Nothing but execute() follows the parameter-level Jacobian (see take_others).
        self.graph_done_after_jacobian = graph_done_after_jacobian
        # A representation-level gradient method follows its Jacobian (see take_heads).
        self.heads_at_representation = heads_at_representation
        self._took_buffers = False
        self._graph: GraphInfo | None = None
        self._others: tuple[Tensor, ...] | None = None
        self._values: Tensor | None = None
        self._local: Tensor | None = None
        self._stacked: Tensor | None = None
        #: The balanced losses' values as floats, where they were read (on the CPU).
        self.host_values: list[float] | None = None
        self._jacobians: dict[str, tuple[Jacobian, list[float]]] = {}
        self.parameter_tensors: tuple[Tensor, ...] = ()  # columns of the parameter Jacobian
        self.fixed_row_names: list[str] = []  # fixed losses with their own Jacobian row
        self.fixed_in_rows: list[int] = []  # the fixed losses in the parameter Jacobian's rows
        # The other parameters' gradients, taken by the per-loss passes at the parameter level
        # (see take_others): the tensors, and per tensor its (row, gradient) pairs.
        self.collected: tuple[tuple[Tensor, ...], Collected] | None = None
        # The per-loss gradient norms at the representation, to be read during the ordinary
        # backward pass (see norm_capture); armed by execute().
        self.capture: NormCapture | None = None
        self._capture_sought = False

    def values(self) -> Tensor:
        """``(T,)`` float32 detached raw values of the balanced losses (stacked once).

        Under ``torch.distributed`` they are the mean over ranks, so every rank weighs (and
        updates running statistics) by the values of the global batch.
        """
        if self._values is None:
            self._values = mean_over_ranks([self.local_values()])[0]
        return self._values

    def value_floats(self) -> list[float] | None:
        """The balanced losses' values as Python floats where reading them was free (the
        CPU, one process, not compiling: the finiteness check read them); else ``None``."""
        if self.host_values is None or world_size() > 1:
            return None
        return self.host_values

    def stacked(self) -> Tensor:
        """``(T,)`` the balanced losses stacked, with their graph (built once per call: the
        finiteness check reads it, the weighted backward pass starts from it)."""
        if self._stacked is None:
            self._stacked = _stack(self.losses)
        return self._stacked

    def local_values(self) -> Tensor:
        """``(T,)`` float32 detached raw values of the balanced losses of this process."""
        if self._local is None:
            if self.host_values is not None:  # read already (the finiteness check, CPU)
                self._local = float32_tensor(self.host_values)
            else:
                self._local = self.stacked().detach().to(torch.float32)
        return self._local

    # -- graph ------------------------------------------------------------------------------------
    def graph(self) -> GraphInfo:
        if self._graph is None:
            self._graph = discover(self.losses + self.fixed_losses, len(self.losses))
        return self._graph

    def shared(self) -> tuple[Tensor, ...]:
        """The shared parameters: given, or reached by at least two balanced losses."""
        graph = self.graph()
        shared = graph.shared if self.given_shared is None else self.given_shared
        if len(self.losses) < 2:
            return shared
        if not shared:
            raise ValueError(
                f"{self.owner} found no shared parameter: no parameter is reached by more than "
                f"one of the balanced losses {list(self.names)}. Balance only losses computed "
                "from a common trunk, or pass `shared=` explicitly"
            )
        for index, name in enumerate(self.names):
            if not graph.root_reaches(index, shared):
                raise ValueError(
                    f"balanced loss {name!r} does not reach any shared parameter of {self.owner} "
                    f"({len(shared)} shared tensors); its gradient cannot be balanced against "
                    "the others. Leave it out of `balance=` (it is then added with its fixed "
                    "weight), or check that it is computed from the shared trunk"
                )
        return shared

    def diagnostic_tensors(self) -> tuple[Tensor, ...]:
        """Shared parameters for diagnostics (never raises): given, or reached by two or more
        balanced losses; with fewer than two balanced losses, by two or more of all the losses
        (fixed ones too: the trunk, not the heads); with a single loss, all it reaches."""
        if self.given_shared is not None:
            return self.given_shared
        graph = self.graph()
        if graph.shared:
            return graph.shared
        reached = graph.reached_by()
        common = tuple(leaf for leaf in reached if graph.masks.get(id(leaf), 0).bit_count() > 1)
        return common or reached

    def others(self) -> tuple[Tensor, ...]:
        """Every leaf reached by a loss that is not a shared parameter (computed once: the
        per-loss passes and the final update both ask)."""
        if self._others is None:
            shared = {id(tensor) for tensor in self.shared()}
            self._others = tuple(t for t in self.graph().reached_by() if id(t) not in shared)
        return self._others

    def take_others(self) -> tuple[Tensor, ...]:
        """The other parameters, if the per-loss passes may take their gradients too.

        The loop of per-loss backward passes reaches the task-specific parameters (the heads)
        anyway; asking it for their gradients as well saves the backward pass that would
        otherwise give them theirs (0.3-0.5 ms of a 13-22 ms step, 2-4 losses on the 3x512
        benchmark trunk). That pass is also what frees the graph, so the per-loss passes must
        free it instead (the last one does not retain it): only when nothing else will use
        the graph (the balancer says so, and every fixed loss has a row of the Jacobian, so
        no backward pass is left to run). Not either when something watches how ``.grad`` is
        written: gradient hooks, post-accumulate hooks, or DDP (whose reducer runs from those
        of the parameters it owns); those keep the ordinary backward pass.
        """
        if (
            not self.graph_done_after_jacobian
            or len(self.losses) < 2
            or len(self.fixed_in_rows) != len(self.fixed_losses)
            or world_size() > 1
        ):
            return ()
        others = self.others()
        return () if _watched(others) else others

    def take_heads(self, z: Tensor) -> tuple[tuple[Tensor, ...], bool]:
        """The parameters above the representation, if the per-loss passes at ``z`` may take
        their gradients too (``_heads``): the balanced losses reach the trunk only through
        ``z``, the plan will be a gradient-level one at the representation (whose final pass
        then only sends the update into the trunk from ``z``), a single process, and no hook
        watching how their ``.grad`` is written (as :meth:`take_others`). Also whether each
        per-loss pass may free what it ran (no operation above ``z`` shared by two losses, and
        no diagnostics, whose per-loss passes come later in the call)."""
        if not self.heads_at_representation or len(self.losses) < 2 or world_size() > 1:
            return (), False
        found = heads_above(self.losses, self.fixed_losses, z)
        if found is None or _watched(found.leaves):
            return (), False
        return found.leaves, found.private and not self.diagnostics

    def norm_capture(self) -> NormCapture | None:
        """The hooks that will read each balanced loss's gradient norm at the representation
        from the ordinary backward pass, or ``None`` where that pass cannot tell the losses
        apart (an operation reading ``z`` shared by two losses) or the representation's
        Jacobian was computed anyway (its norms are then free)."""
        if not self._capture_sought:
            self._capture_sought = True
            z = self.require_representation()
            if "representation" not in self._jacobians:
                self.capture = find_capture(self.losses, self.fixed_losses, z, self.names)
        return self.capture

    # -- gradients --------------------------------------------------------------------------------
    def _gradients(
        self,
        outputs: Sequence[Tensor],
        inputs: Sequence[Tensor],
        *,
        batched: bool = True,
        factor: bool = True,
        others: tuple[Tensor, ...] = (),
        update: bool = True,
        take_heads: bool = False,
    ) -> Jacobian:
        """Per-output gradients; ``batched=False`` when each output has its own small graph
        to the inputs (a head on the representation): batching would run every head for
        every row and add up T^2 zero-padded gradients, a loop runs each head once.
        ``factor``: keep the gradients of linear layers' weights (or of a representation read
        only by linear heads) factored where it pays. ``others``: tensors whose gradients
        the per-loss passes also take, into :attr:`collected` (if the loop runs; the loop
        then frees the graph as it ends, except at the representation, whose final pass still
        runs through the trunk). ``update``: whether the update will be built from these rows
        (it decides where factoring pays). ``take_heads``: at the representation, take the
        heads' gradients too where the loop runs and :meth:`take_heads` allows it."""
        # On a CPU the loop of backward passes is faster than the batched one (vmap's batched
        # matmuls run below the BLAS rate of T plain ones: 40.6 vs 47.7 ms for 8 losses on the
        # 3x512 benchmark trunk, parity at 2), so the batched pass is the default elsewhere only.
        attempt = batched and self.engine.use_batched(outputs[0].device)
        # Factored blocks with the loop only: under vmap the gradient at a layer's output can
        # only be captured before that output's own hooks (see _jacobian._edge_catchers).
        factored = self._factored(outputs, inputs, update) if factor and not attempt else {}
        targets, spans = factored_targets(inputs, factored)
        representation = any(t is self.representation for t in inputs)
        free_each = False
        if take_heads and representation and not factored and not attempt:
            # Single linear heads (factored) cost little to run again; deeper ones do.
            others, free_each = self.take_heads(inputs[0])
        collected: Collected = []
        # At the representation: the rows whose loss does not reach z (caught in the passes).
        unused: list[int] | None = [] if representation and not attempt else None
        keep = self._keep_rows(len(outputs), targets, attempt or bool(factored) or representation)
        with _hooks_suspended(self.representation if representation else None):
            blocks, batch_ok = gradients_at(
                outputs,
                targets,
                retain_graph=representation or not others,
                grad_scale=self.scale,
                batched=attempt,
                out=None if attempt or keep else self._buffers(len(outputs), targets),
                extra=others,
                collected=collected if others else None,
                free_each=free_each and bool(others),
                unused=unused,
                keep_rows=keep,
            )
        if unused:
            self._not_computed_from(inputs[0], unused)
        if others and len(collected) == len(others):
            self.collected = (others, collected)
        if attempt and not batch_ok:
            self.engine.batched = False
        if not factored and not representation:
            # Parameter-level gradients are averaged over ranks before any method aggregates
            # them: the per-loss gradients of the global batch. (Representation-level ones are
            # per example of the local batch and stay local; factoring is off under DDP.)
            blocks = mean_over_ranks(blocks)
        jacobian = Jacobian(assemble(inputs, factored, blocks, spans))
        if is_unit_scale(self.scale):
            return jacobian
        ones = torch.ones(jacobian.rows, dtype=torch.float32, device=jacobian.factors.device)
        return jacobian.scaled(ones / self.scale)

    @staticmethod
    def _keep_rows(rows: int, targets: Sequence[Target], other_route: bool) -> bool:
        """Whether the loop keeps each gradient as its row instead of copying it into the
        engine's buffers (``_blocks.RowsBlock``): a few dense rows over the parameters, on the
        CPU, in one process (the blocks of several ranks are averaged as tensors). Beyond four
        rows the per-block products of separate rows (``R (R + 1) / 2`` each) cost more than
        the copy saves; and the linear layers' weights are factored from about four rows on
        the 3 x 512 benchmark trunk anyway."""
        return (
            not other_route
            and 1 < rows <= _KEEP_ROWS_UP_TO
            and world_size() == 1
            and all(target.device.type == "cpu" for target in targets)
        )

    def _not_computed_from(self, z: Tensor, rows: Sequence[int]) -> None:
        """Raise for the balanced losses (by row) whose graph does not pass through ``z``."""
        names = [self.names[row] for row in rows]
        raise ValueError(
            f"the representation given to {self.owner} (shape {tuple(z.shape)}) is not what "
            f"the balanced losses {names} are computed from: their gradient at it is absent "
            f"(the balanced losses are {list(self.names)}). Mark the shared features every "
            "balanced loss is computed from (multiloss.mark_representation(z) in the forward, "
            "or `representation=`), or leave those losses out of `balance=`"
        )

    def _factored(
        self, outputs: Sequence[Tensor], inputs: Sequence[Tensor], update: bool = True
    ) -> dict[int, Factored]:
        """The tensors of ``inputs`` whose per-loss gradients stay factored: the representation
        if linear heads alone read it, or linear layers' weights (none under DDP: the blocks of
        every rank are averaged, and a factored block's Gramian is not linear in its factors)."""
        rows = len(outputs)
        if not self.engine.factor_linear or rows < 2:
            return {}
        if len(inputs) == 1 and inputs[0] is self.representation:
            found = find_factored_input(outputs, inputs[0])
            return {} if found is None else {id(inputs[0]): found}
        if world_size() > 1:
            return {}
        return dict(find_factored(self.graph(), inputs, rows, update=update))

    def _buffers(self, rows: int, inputs: Sequence[Target]) -> list[Tensor] | None:
        # The kept buffers serve one Jacobian per call: a second one with the same shapes in
        # the same call (GradNorm's layer, then the diagnostics) must not overwrite the first.
        if self._took_buffers:
            return None
        self._took_buffers = True
        return self.engine.buffers(rows, inputs)

    def fixed_rows(
        self, tensors: Sequence[Tensor], individual: bool
    ) -> tuple[list[Tensor], list[float]]:
        """The fixed losses that reach ``tensors``: one row each, or one summed row."""
        graph = self.graph()
        offset = len(self.losses)
        reaching = [
            k for k in range(len(self.fixed_losses)) if graph.root_reaches(offset + k, tensors)
        ]
        self.fixed_in_rows = reaching
        self.fixed_row_names = [self.fixed_names[k] for k in reaching] if individual else []
        if not reaching:
            return [], []
        if individual:
            return [self.fixed_losses[k] for k in reaching], [
                self.fixed_weights[k] for k in reaching
            ]
        total = self.fixed_losses[reaching[0]] * self.fixed_weights[reaching[0]]
        for k in reaching[1:]:
            total = total + self.fixed_losses[k] * self.fixed_weights[k]
        return [total], [1.0]

    def jacobian(self, level: Level) -> tuple[Jacobian, list[float]]:
        """Raw per-loss gradients at ``level``: the balanced rows first, then fixed rows.

        At the parameter level, the fixed losses that reach the shared parameters add rows
        after the balanced ones (one per loss when diagnostics are on, else one summed row);
        the second value holds their coefficients. The representation level has no fixed rows:
        the fixed losses reach the trunk through the ordinary backward pass.
        """
        cached = self._jacobians.get(level)
        if cached is not None:
            return cached
        result: tuple[Jacobian, list[float]]
        if level == "representation":
            z = self.require_representation()
            result = (self._gradients(self.losses, [z], batched=False, take_heads=True), [])
        else:
            tensors = self.shared() if len(self.losses) > 1 else self.diagnostic_tensors()
            fixed, coefficients = self.fixed_rows(tensors, individual=self.diagnostics)
            others = self.take_others()
            jacobian = self._gradients(list(self.losses) + fixed, tensors, others=others)
            result = (jacobian, coefficients)
            self.parameter_tensors = tuple(tensors)
        self._jacobians[level] = result
        return result

    def jacobian_of(self, tensors: Sequence[Tensor]) -> Jacobian:
        """Raw per-loss gradients (balanced rows only) over specific tensors, for their norms
        or Gramian: the update is built from the parameter-level Jacobian or the ordinary
        backward pass, not from these rows (which decides where factoring pays)."""
        cached = self._jacobians.get("parameters")
        if cached is not None:
            positions = {id(t): k for k, t in enumerate(self.parameter_tensors)}
            if all(id(t) in positions for t in tensors):
                chosen = cached[0].select([positions[id(t)] for t in tensors])
                return chosen.take(slice(0, len(self.losses)))
        return self._gradients(self.losses, tensors, update=False)

    def require_representation(self) -> Tensor:
        z = self.representation
        if z is None:
            raise ValueError(
                f"{self.owner} balances at the representation level but no representation was "
                "given: mark the shared features with multiloss.mark_representation(z) in the "
                "model's forward, or pass representation= to apply()/backward()"
            )
        if not z.requires_grad:
            raise ValueError(
                f"the representation given to {self.owner} does not require grad "
                f"(shape {tuple(z.shape)}); mark the output of the shared trunk, not a "
                "detached copy"
            )
        return z


class BalanceContext:
    """The balanced losses of one call, as a method sees them.

    Attributes:
        names: Balanced loss names, sorted (so the order of the loss dict never matters).
        step: Optimizer steps taken so far.
        weights: ``(T,)`` float32 fixed weights of the balanced losses (negative: maximized).
        loss_scales: ``(T,)`` detached factors: ``losses[i] == loss_scales[i] * raw_i``; ones
            unless a wrapper (``Normalize``) rescaled the losses.
        values: ``(T,)`` float32 detached values of ``losses`` (computed on first use).
        device: Where the losses live.

    Example:
        >>> import torch
        >>> from multiloss.balancing import LossWeighting
        >>> class Show(LossWeighting):
        ...     def factors(self, ctx):
        ...         print(ctx.names, ctx.values.tolist(), ctx.weights.tolist())
        ...         return torch.ones_like(ctx.weights)
        >>> w = torch.nn.Parameter(torch.tensor(1.0))
        >>> _ = Show().backward({"b": 2 * w, "a": 5 * w}, weights={"b": -1.0})
        ('a', 'b') [5.0, 2.0] [1.0, -1.0]
    """

    def __init__(
        self,
        session: _Session,
        *,
        step: int,
        weights: Tensor,
        loss_scales: Tensor | None = None,
    ) -> None:
        self._session = session
        self.names = session.names
        self.step = step
        self.weights = weights
        self.device = weights.device
        self._loss_scales = loss_scales  # None: all ones (the root view), built on demand
        self._values: Tensor | None = None
        self._value_floats: list[float] | None = None

    @property
    def loss_scales(self) -> Tensor:
        if self._loss_scales is None:
            self._loss_scales = torch.ones_like(self.weights)
        return self._loss_scales

    @property
    def values(self) -> Tensor:
        if self._values is None:
            raw = self._session.values()
            self._values = raw if self._loss_scales is None else raw * self._loss_scales
        return self._values

    def value_floats(self) -> list[float] | None:
        """:attr:`values` as Python floats where reading them is free (the CPU, one process,
        not compiling), else ``None``: methods that work on floats there skip the tensor."""
        if self._value_floats is None:
            raw = self._session.value_floats()
            if raw is None or self._loss_scales is None:
                return raw
            scales = self._loss_scales.tolist()
            self._value_floats = [v * s for v, s in zip(raw, scales, strict=True)]
        return self._value_floats

    @property
    def num_losses(self) -> int:
        """``T``, the number of balanced losses."""
        return len(self.names)

    @property
    def losses(self) -> tuple[Tensor, ...]:
        """The balanced losses with their graph, as this level sees them (``scale * raw``)."""
        raw = self._session.losses
        return tuple(loss * self.loss_scales[i] for i, loss in enumerate(raw))

    @property
    def objective_scales(self) -> Tensor:
        """``weights * loss_scales``: the factor from a raw loss to its objective."""
        return self.weights * self.loss_scales

    # -- gradients --------------------------------------------------------------------------------
    def jacobian(self, level: Level = "parameters") -> Jacobian:
        """Per-loss gradients of the *objectives* ``weights[i] * losses[i]``.

        Rows follow ``names``; columns are the shared parameters (``level="parameters"``, in
        ``shared_parameters()`` order) or the representation. Computed once per call (one
        batched backward pass that keeps the graph) and shared by every wrapper level.
        """
        full, _ = self._session.jacobian(level)
        rows = full.take(slice(0, self.num_losses))
        return rows.scaled(self.objective_scales)

    def norms_after_backward(self) -> Callable[[], Tensor] | None:
        """The norms of the objectives' gradients at the representation, read from the
        ordinary backward pass instead of a per-loss pass of their own.

        For loss-weighting methods: returns a function to call after that pass (from a
        ``Plan.extra`` given as a function), which gives what ``jacobian("representation")
        .norms()`` gives now. ``None`` where the pass cannot tell the losses' gradients apart
        at ``z`` (an operation reading ``z`` is shared by two losses), or the Jacobian was
        computed this call anyway: use the Jacobian then. A loss whose weight in the backward
        pass is 0 reads 0.
        """
        capture = self._session.norm_capture()
        if capture is None:
            return None
        scales = self.objective_scales.abs()
        return lambda: capture.norms() * scales

    def norm_floats_after_backward(self) -> Callable[[], list[float]] | None:
        """:meth:`norms_after_backward` as Python floats, for a method whose state lives on
        the host: on the CPU the norms are finished as floats and read for free (elsewhere
        the function reads them back from the device)."""
        capture = self._session.norm_capture()
        if capture is None:
            return None
        scales = [abs(scale) for scale in self._objective_scale_floats()]
        return lambda: [n * s for n, s in zip(capture.norm_floats(), scales, strict=True)]

    def _objective_scale_floats(self) -> list[float]:
        """:attr:`objective_scales` as floats, without the tensor products."""
        weights = self.weights.tolist()
        if self._loss_scales is None:
            return weights
        scales = self._loss_scales.tolist()
        return [w * s for w, s in zip(weights, scales, strict=True)]

    @property
    def gradient_scale(self) -> float | Tensor:
        """What every gradient this call writes is multiplied by: ``scale`` of
        :meth:`Balancer.apply` (1 / accumulation times the AMP loss scale). A method that writes
        its own parameters' gradients itself (a ``Plan.extra`` function that returns ``None``)
        multiplies them by it."""
        return self._session.scale

    def jacobian_of(self, tensors: Sequence[Tensor]) -> Jacobian:
        """Per-loss gradients of the objectives over specific tensors (e.g. the last shared
        layer), reusing the full Jacobian when it was already computed this call."""
        return self._session.jacobian_of(tensors).scaled(self.objective_scales)

    def shared_parameters(self) -> tuple[Tensor, ...]:
        """The shared parameters (given, or reached by at least two balanced losses).

        Raises:
            ValueError: With two or more losses, a balanced loss reaches none of them.
        """
        return self._session.shared()

    def names_not_reaching(self, tensors: Sequence[Tensor]) -> list[str]:
        """The balanced losses whose graph reaches none of ``tensors`` (walks the graph, once
        per call: for checks at the first call, not every step)."""
        graph = self._session.graph()
        return [
            name for index, name in enumerate(self.names) if not graph.root_reaches(index, tensors)
        ]

    def last_shared_parameters(self) -> tuple[Tensor, ...]:
        """The shared parameters closest to the losses (the last shared layer's weight)."""
        graph = self._session.graph()
        shared = self.shared_parameters()
        ids = {id(t) for t in shared}
        last = tuple(t for t in graph.last_shared if id(t) in ids)
        return last or shared[-1:]

    @property
    def representation(self) -> Tensor | None:
        """The shared representation of this call, if one was marked or given."""
        return self._session.representation

    # -- building blocks for methods and wrappers -------------------------------------------------
    def sum_plan(self) -> Plan:
        """The plan of plain summation: every loss at its fixed weight."""
        return Plan(loss_weights=self.weights)

    def derive(
        self, *, loss_scales: Tensor | None = None, weights: Tensor | None = None
    ) -> BalanceContext:
        """A view for an inner balancer: losses multiplied by ``loss_scales`` (relative to
        this view's losses) and/or fixed weights replaced by ``weights``."""
        scales = self._loss_scales
        if loss_scales is not None:
            scales = loss_scales if scales is None else scales * loss_scales
        return BalanceContext(
            self._session,
            step=self.step,
            weights=self.weights if weights is None else weights,
            loss_scales=scales,
        )

    def __repr__(self) -> str:
        return f"BalanceContext(step={self.step}, names={list(self.names)})"
