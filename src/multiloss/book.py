"""``LossBook``: the named losses, weights and metrics gathered during one forward pass.

Books are opened by ``multiloss.collect`` (``collect.py``), which routes emissions here. This
module also names emitters: by walking the Python frames up to the first ``self`` that is an
``nn.Module`` and looking up its path in the root model; and it holds the queue that code
compiled by ``torch.compile`` appends to (compiled code cannot see frames or context
variables), drained the next time a book is read.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from multiloss._modules import join_name, module_path, unwrap
from multiloss._validation import check_finite_float, check_int, check_loss_name, check_loss_tensor

if TYPE_CHECKING:
    from multiloss.aux import AuxiliaryLossModule

__all__ = ["LossBook"]

# How many collectors are open. Compiled code reads this plain global (Dynamo guards on its
# value) to decide whether an emission is wanted, since it cannot read the ContextVar.
_OPEN = [0]
# Emissions made inside compiled regions, drained by the innermost open book when it is read.
_PENDING: list[tuple[Any, ...]] = []

# How far up the stack to look for the emitting module before giving up.
_MAX_FRAMES = 64
# nn.Module's call machinery: its frames repeat the `self` of the forward they call, so once the
# innermost module is found, the search for the outermost one can skip them without reading
# their locals. (The innermost search must not: a forward hook is only seen through them.)
_CALL_FRAMES = frozenset(
    getattr(nn.Module, name).__code__
    for name in ("_call_impl", "_wrapped_call_impl")
    if hasattr(getattr(nn.Module, name, None), "__code__")
)


@dataclass
class _Entry:
    value: Tensor
    weight: float
    origin: str | None  # module path of the emitter; "" for the root, None if unknown
    accumulate: bool
    nonnegative: bool  # auxiliary-layer losses promise value >= 0; the trainer checks it


def _describe_origin(origin: str | None) -> str:
    if origin is None:
        return "code outside any module"
    return f"module {origin!r}" if origin else "the root model"


def _scan_frames(
    frame: types.FrameType | None, stop: types.FrameType | None, want_outer: bool
) -> tuple[nn.Module | None, nn.Module | None]:
    """The innermost and (if wanted) outermost ``nn.Module`` found as ``self`` up the stack."""
    inner: nn.Module | None = None
    outer: nn.Module | None = None
    depth = 0
    while frame is not None and frame is not stop and depth < _MAX_FRAMES:
        code = frame.f_code
        # Cheap tests first: only frames whose first argument is called `self` are methods.
        if inner is not None and code in _CALL_FRAMES:
            pass
        elif code.co_argcount and code.co_varnames[0] == "self":
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, nn.Module):
                if inner is None:
                    inner = candidate
                    if not want_outer:
                        break
                outer = candidate
        frame = frame.f_back
        depth += 1
    return inner, outer


class LossBook(Mapping[str, Tensor]):
    """The named losses, weights and metrics gathered during one forward pass.

    A read-only mapping of loss name -> raw (unweighted) scalar tensor, plus:

    * ``weights``: name -> weight (negative for a maximized loss);
    * ``metrics``: name -> scalar diagnostics from ``record`` (detached);
    * ``origins``: name -> path of the module that emitted it ("" for the root);
    * ``aux_modules``: path ("" for the root) -> each ``AuxiliaryLossModule`` that contributed;
    * ``total()``: the sum of weight * value.

    Books are created by :class:`collect`; the trainer opens a fresh one for every step, so
    losses never leak from one step into the next, nor from evaluation into training.

    Example:
        >>> import torch, multiloss as ml
        >>> with ml.collect() as book:
        ...     _ = ml.add_loss("l2", torch.tensor(4.0), weight=0.5)
        >>> float(book.total())
        2.0
    """

    def __init__(
        self,
        root: nn.Module | None = None,
        *,
        step: int = 0,
        device: torch.device | None = None,
        batch: Any = None,
    ) -> None:
        self.root = unwrap(root) if root is not None else None
        self.step = check_int(step, "`step` of collect()", min_value=0)
        self.device = device
        #: The batch being processed, when the caller provides it (the trainer does), so a
        #: layer deep inside the model can read its own target (an auxiliary head, say).
        self.batch = batch
        self._entries: dict[str, _Entry] = {}
        self._metrics: dict[str, tuple[Tensor | float, int]] = {}
        self._aux_modules: dict[str, AuxiliaryLossModule] = {}
        self._entry_frame: types.FrameType | None = None
        self._rebuilt = False
        self._pending_from = 0
        #: The shared representation marked with ``mark_representation`` (or None): the tensor
        #: representation-level balancers differentiate the losses with respect to.
        self.representation: Tensor | None = None

    # -- naming -------------------------------------------------------------------------------
    def _path_of(self, module: nn.Module | None, frame: types.FrameType | None) -> str | None:
        """Path of the emitting module in the root ("" = root), or None if outside the root."""
        root = self.root
        if module is None or root is None:
            inner, outer = _scan_frames(frame, self._entry_frame, want_outer=root is None)
            module = module if module is not None else inner
            if root is None:
                # No root given: the outermost module on the stack is the model being run.
                root = outer if outer is not None else module
        if module is None or root is None:
            return None
        path = module_path(root, module, rebuild=not self._rebuilt)
        if path is None and not self._rebuilt:
            self._rebuilt = True
        return path

    # -- emission -----------------------------------------------------------------------------
    def _add_entry(
        self,
        name: str,
        value: Tensor,
        weight: float,
        origin: str | None,
        *,
        accumulate: bool,
        nonnegative: bool = False,
        compiled: bool = False,
    ) -> None:
        value = check_loss_tensor(value, name, device=self.device, where=_describe_origin(origin))
        previous = self._entries.get(name)
        if previous is None:
            self._entries[name] = _Entry(value, weight, origin, accumulate, nonnegative)
            return
        if not (accumulate and previous.accumulate):
            hint = (
                " Inside torch.compile'd code multiloss cannot see which module called "
                "add_loss: pass module=self so each layer's loss is named by its path."
                if compiled
                else ""
            )
            raise ValueError(
                f"loss {name!r} was emitted twice in one forward pass: first by "
                f"{_describe_origin(previous.origin)}, then by {_describe_origin(origin)}. "
                "Give the emissions distinct names, or pass accumulate=True to every emission "
                f"(accumulate_aux_loss=True for an auxiliary-loss layer) to sum them.{hint}"
            )
        if previous.weight != weight:
            raise ValueError(
                f"loss {name!r} was emitted with accumulate=True but different weights: "
                f"{previous.weight} and {weight}; accumulated emissions must share one weight"
            )
        previous.value = previous.value + value

    def add(
        self,
        name: str,
        value: Tensor,
        *,
        weight: float = 1.0,
        accumulate: bool = False,
        origin: str = "",
    ) -> None:
        """Add a loss directly (the trainer uses this for the losses a model returns)."""
        check_loss_name(name)
        weight = check_finite_float(weight, f"`weight` for loss {name!r}")
        self._flush()
        self._add_entry(name, value, weight, origin, accumulate=accumulate)

    def _emit_loss(
        self,
        name: str,
        value: Tensor,
        weight: float,
        accumulate: bool,
        module: nn.Module | None,
        frame: types.FrameType | None,
    ) -> None:
        path = self._path_of(module, frame)
        self._add_entry(join_name(path or "", name), value, weight, path, accumulate=accumulate)

    def _emit_metric(
        self,
        name: str,
        value: Tensor | float,
        module: nn.Module | None,
        frame: types.FrameType | None,
    ) -> None:
        self._emit_metric_at(self._path_of(module, frame), name, value)

    def _emit_aux(
        self,
        module: AuxiliaryLossModule,
        terms: Mapping[str, Tensor],
        frame: types.FrameType | None,
    ) -> None:
        path = self._path_of(module, frame)
        if path is None and self.root is not None:
            # A layer outside the root (a loss module attached by a spec, say) keeps its class name.
            path = type(module).__name__
        path = path or ""
        self._aux_modules[path] = module
        weight = module.effective_aux_loss_weight(self.step)
        coefficients = module.aux_loss_coefficients()
        for term, value in terms.items():
            coefficient = coefficients.get(term, 1.0)
            self._add_entry(
                join_name(path, term),
                value,
                weight * coefficient,
                path,
                accumulate=module.accumulate_aux_loss,
                nonnegative=True,
            )

    def _flush(self) -> None:
        """Drain what compiled regions emitted since the last read."""
        if len(_PENDING) <= self._pending_from:
            return
        items = _PENDING[self._pending_from :]
        del _PENDING[self._pending_from :]
        for kind, *payload in items:
            if kind == "loss":
                name, value, weight, accumulate, module = payload
                path = self._compiled_path(module)
                self._add_entry(
                    join_name(path or "", name),
                    value,
                    weight,
                    path,
                    accumulate=accumulate,
                    compiled=module is None,
                )
            elif kind == "metric":
                name, value, module = payload
                self._emit_metric_at(self._compiled_path(module), name, value)
            elif kind == "representation":
                self._set_representation(payload[0])
            else:
                module, terms = payload
                if self.root is None:
                    raise RuntimeError(
                        f"{type(module).__name__} emitted its auxiliary loss from a "
                        "torch.compile'd region, where multiloss cannot see the call stack to "
                        "name it; pass the model to the collector: multiloss.collect(model)"
                    )
                self._emit_aux(module, terms, None)

    def _set_representation(self, value: Tensor) -> None:
        if self.representation is not None and self.representation is not value:
            raise ValueError(
                "mark_representation() was called twice in one forward pass; mark the one "
                "tensor that every balanced loss is computed from"
            )
        self.representation = value

    def _compiled_path(self, module: nn.Module | None) -> str | None:
        if module is None or self.root is None:
            return None
        return module_path(self.root, module)

    def _emit_metric_at(self, path: str | None, name: str, value: Tensor | float) -> None:
        key = join_name(path or "", name)
        if isinstance(value, Tensor):
            value = value.detach()
        # A metric recorded several times in one pass (a module called twice) is averaged.
        total, count = self._metrics.get(key, (0.0, 0))
        self._metrics[key] = (total + value, count + 1)

    # -- reading ------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Tensor:
        self._flush()
        return self._entries[name].value

    def __iter__(self) -> Iterator[str]:
        self._flush()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._flush()
        return len(self._entries)

    @property
    def weights(self) -> dict[str, float]:
        """Loss name -> weight; negative for maximized losses."""
        self._flush()
        return {name: entry.weight for name, entry in self._entries.items()}

    @property
    def origins(self) -> dict[str, str]:
        """Loss name -> dotted path of the module that emitted it ("" for the root model)."""
        self._flush()
        return {name: entry.origin or "" for name, entry in self._entries.items()}

    @property
    def nonnegative(self) -> frozenset[str]:
        """Names of the losses that promise to be >= 0 (those of auxiliary-loss layers)."""
        self._flush()
        return frozenset(name for name, entry in self._entries.items() if entry.nonnegative)

    @property
    def metrics(self) -> dict[str, Tensor | float]:
        """Recorded diagnostics, averaged when one name was recorded several times."""
        self._flush()
        return {
            key: total if count == 1 else total / count
            for key, (total, count) in self._metrics.items()
        }

    @property
    def aux_modules(self) -> dict[str, AuxiliaryLossModule]:
        """Path -> auxiliary-loss layer, for each layer that contributed a loss."""
        self._flush()
        return dict(self._aux_modules)

    def snapshot(self) -> tuple[tuple[str, ...], list[Tensor], list[float]]:
        """Names (sorted), raw values and weights in one pass: what a trainer reads per step."""
        self._flush()
        names = tuple(sorted(self._entries))
        entries = [self._entries[name] for name in names]
        return names, [entry.value for entry in entries], [entry.weight for entry in entries]

    def set_weight(self, name: str, weight: float) -> None:
        """Replace the weight of loss ``name`` (a trainer's static weights use this)."""
        self._flush()
        if name not in self._entries:
            raise KeyError(f"no loss named {name!r}; the book has {sorted(self._entries)}")
        self._entries[name].weight = check_finite_float(weight, f"`weight` for loss {name!r}")

    def weighted(self) -> dict[str, Tensor]:
        """Loss name -> weight * raw value."""
        self._flush()
        return {name: entry.value * entry.weight for name, entry in self._entries.items()}

    def total(self) -> Tensor:
        """The sum of weight * value over every loss.

        Raises:
            ValueError: No loss was collected (a zero would silently train nothing).
        """
        weighted = list(self.weighted().values())
        if not weighted:
            raise ValueError(
                "the LossBook is empty: no loss was returned, emitted with add_loss, or "
                "contributed by an AuxiliaryLossModule during this forward pass"
            )
        total = weighted[0]
        for value in weighted[1:]:
            total = total + value
        return total

    def __repr__(self) -> str:
        self._flush()
        parts = [
            f"{name}={entry.weight:g}*{_describe_value(entry.value)}"
            for name, entry in self._entries.items()
        ]
        return f"LossBook(step={self.step}, losses={{{', '.join(parts)}}})"


def _describe_value(value: Tensor) -> str:
    """``value`` as a short number without forcing a device sync for tensors on accelerators."""
    if value.device.type == "cpu" and not torch.compiler.is_compiling():
        return f"{float(value.detach()):.4g}"
    return f"<{value.device.type} tensor>"
