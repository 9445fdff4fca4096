"""``attach(model, spec)``: the training net that turns a model's predictions into named losses.

The model is registered as ``training_net.net`` and never modified: no loss module is added
to it, so its ``state_dict`` and its behaviour at inference are exactly what they were, and the
same object is there after training, ready for export.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from multiloss._modules import unwrap
from multiloss._validation import check_int, describe
from multiloss.collect import current_book
from multiloss.outputs import NamedLosses
from multiloss.spec.base import SpecLike, flatten
from multiloss.spec.batch import call_model, read_batch
from multiloss.spec.forms import Automatic
from multiloss.spec.plan import Resolved, evaluate, resolve
from multiloss.spec.ports import output_ports
from multiloss.spec.producers import ProducerTrace
from multiloss.spec.term import Term

__all__ = ["TrainingNet", "attach", "find_training_net"]

# Losses emitted inside the model are named by their path in the collector's root. The trainer
# opens collect(training_net): hop over `.net` the way DDP's `.module` is skipped, so the names
# stay those of the model (`enc/sparsity`, not `net.enc/sparsity`).


class TrainingNet(nn.Module):
    """A model plus a loss spec: ``forward(batch)`` returns the spec's named losses.

    Build it with :func:`attach`. The batch is a dict, or a pair ``(inputs, targets)`` read
    as ``{"input": inputs, "output": targets}``; the target of a port is the batch entry of
    the port's name. The first call resolves the spec against the model's output ports (and
    runs Automatic's rules); later calls only evaluate that plan.

    Attributes:
        net: The original model, untouched.
        spec: The spec as given.
        losses: The loss modules of the spec (and those Automatic chose), so ``.to()`` moves
            their buffers; the model holds none of them.
        step: The step that schedules in ``Scaled`` read when no collector is open (inside
            ``multiloss.collect`` the book's step is used). Set it in a hand-written loop.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: SpecLike = Automatic,
        *,
        inputs: str | Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` of attach() must be an nn.Module; got {describe(model)}")
        if find_training_net(model) is not None:
            raise TypeError(
                "`model` of attach() is already a training net (attach(...) was applied "
                "twice); attach to its .net, or combine the specs in one list"
            )
        terms = flatten(spec)
        if not terms:
            raise ValueError("the spec of attach() is empty: give at least one loss")
        open_automatic = [term for term in terms if term.kind == "automatic" and term.port is None]
        if len(open_automatic) > 1:
            raise ValueError(
                "the spec holds Automatic (for every port not named elsewhere) "
                f"{len(open_automatic)} times; keep one, or name ports: Automatic('a', 'b')"
            )
        if inputs is not None and not isinstance(inputs, str):
            inputs = list(inputs)
        self.net = model
        self.spec = spec
        self.inputs = inputs
        self.terms: tuple[Term, ...] = terms
        self.losses = nn.ModuleList(_unique_modules(term.loss for term in terms))
        self._step = 0
        self._plan: list[Resolved] | None = None

    # -- step ---------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        """The step schedules read when no collector is open."""
        return self._step

    @step.setter
    def step(self, value: int) -> None:
        self._step = check_int(value, "`step` of TrainingNet", min_value=0)

    def current_step(self) -> int:
        """The open collector's step, else :attr:`step`."""
        if not torch.compiler.is_compiling():
            book = current_book()
            if book is not None:
                return book.step
        return self._step

    # -- plan ---------------------------------------------------------------------------------
    @property
    def plan(self) -> tuple[Resolved, ...] | None:
        """The resolved losses (None before the first batch)."""
        return None if self._plan is None else tuple(self._plan)

    def reset_plan(self) -> None:
        """Forget the plan; the next batch resolves the spec again (after changing the model)."""
        self._plan = None
        self.losses = nn.ModuleList(_unique_modules(term.loss for term in self.terms))

    def _first_forward(self, data: dict[str, Any]) -> Any:
        if not any(term.kind == "automatic" for term in self.terms):
            output = call_model(self.net, data, self.inputs)
            self._plan = resolve(self.terms, output_ports(output), data, None)
            return output
        model = unwrap(self.net)  # eager for this one pass, so the hooks see every module
        trace = ProducerTrace(model)
        # Op evidence (F.softmax in a forward) needs an autograd graph, even in evaluation.
        grad: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if torch.is_inference_mode_enabled() else torch.enable_grad()
        )
        with trace, grad:
            output = call_model(model, data, self.inputs)
        try:
            plan = resolve(self.terms, output_ports(output), data, trace)
        finally:
            trace.clear()
        known = {id(module) for module in self.losses}
        for module in _unique_modules(item.loss for item in plan):
            if id(module) not in known:
                self.losses.append(module.to(_device_of(output)))
        self._plan = plan
        return output

    # -- forward ------------------------------------------------------------------------------
    def forward(self, batch: Any) -> NamedLosses:
        """The spec's raw losses on ``batch``, with their weights (negative: maximized)."""
        data = read_batch(batch)
        if self._plan is None:
            output = self._first_forward(data)
        else:
            output = call_model(self.net, data, self.inputs)
        losses, weights = evaluate(
            self._plan or [], output_ports(output), data, self.current_step()
        )
        self._check_collisions(losses)
        return NamedLosses(losses, weights=weights)

    def _check_collisions(self, losses: dict[str, Any]) -> None:
        if torch.compiler.is_compiling():
            return
        book = current_book()
        if book is None:
            return
        clashes = sorted(name for name in losses if name in book)
        if clashes:
            origins = book.origins
            found = ", ".join(
                f"{name!r} (emitted by {_describe_origin(origins.get(name, ''))})"
                for name in clashes
            )
            raise ValueError(
                f"the spec's losses {clashes} have the same names as losses the model emitted "
                f"in this forward pass: {found}. Rename the spec's terms, e.g. "
                "Attach(port, loss, name='task') or Port(port, name='task')"
            )

    def inference_module(self) -> nn.Module:
        """The model without its losses (what ``multiloss.layers.extract`` returns for it)."""
        return self.net

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}"


def find_training_net(model: nn.Module) -> TrainingNet | None:
    """``model`` if it is a training net, also inside DDP or ``torch.compile``; else None."""
    # unwrap() would see through the training net itself, so walk the wrappers by hand.
    seen = 0
    while not isinstance(model, TrainingNet) and seen < 8:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return None
        model, seen = inner, seen + 1
    return model if isinstance(model, TrainingNet) else None


def _describe_origin(origin: str) -> str:
    return f"module {origin!r}" if origin else "the model itself"


def _unique_modules(candidates: Any) -> list[nn.Module]:
    found: list[nn.Module] = []
    for candidate in candidates:
        if isinstance(candidate, nn.Module) and all(candidate is not m for m in found):
            found.append(candidate)
    return found


def _device_of(output: Any) -> torch.device:
    for value in output_ports(output).values():
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")


def attach(
    model: nn.Module, spec: SpecLike = Automatic, *, inputs: str | Sequence[str] | None = None
) -> TrainingNet:
    """Attach the losses of ``spec`` to ``model``: a training net whose forward returns them.

    Args:
        model: The model; it returns predictions (a tensor, a dict, or a tuple of outputs).
        spec: What to minimize (see ``docs/specs.md``): ``Automatic`` (the default), ``Port``,
            ``Attach``, ``Scaled``, ``Maximize``, a port name, a ``{port: loss}`` dict, or a
            list of these.
        inputs: Which batch entries the model takes: a key, a list of keys, or None for the
            ``"input"`` entry (or the entries named like ``model.forward``'s parameters).

    Returns:
        A :class:`TrainingNet`; its ``.net`` is ``model`` itself.

    Example:
        >>> import torch, multiloss as ml
        >>> from multiloss.spec import Attach, Maximize, Scaled, attach
        >>> from multiloss.losses import CrossEntropy
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = torch.nn.Linear(4, 3)
        ...     def forward(self, x):
        ...         logits = self.fc(x)
        ...         entropy = torch.distributions.Categorical(logits=logits).entropy().mean()
        ...         return {"logits": logits, "entropy": entropy}
        >>> model = Net()
        >>> spec = [Attach("logits", CrossEntropy()), Scaled(Maximize("entropy"), 0.1)]
        >>> net = attach(model, spec)
        >>> out = net({"input": torch.randn(8, 4), "logits": torch.randint(0, 3, (8,))})
        >>> out.weights
        {'logits': 1.0, 'entropy': -0.1}
        >>> net.net is model and "losses.0" not in str(list(model.state_dict()))
        True
    """
    return TrainingNet(model, spec, inputs=inputs)
