"""The plan: a spec's terms resolved against one model's ports, and its evaluation.

Resolving happens once, on the first batch: explicit ports are checked to exist, Automatic
terms get their losses, names are fixed and checked to be unique. Each later batch only
evaluates the plan: a dictionary look-up per port, one call per loss, no device sync.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from multiloss._validation import check_loss_name, check_loss_tensor, describe
from multiloss.losses import TargetMismatchError
from multiloss.losses.base import describe_tensor
from multiloss.spec.errors import MissingKeyError
from multiloss.spec.producers import ProducerTrace
from multiloss.spec.rules import choose
from multiloss.spec.term import Term, target_mode

__all__ = ["Resolved", "evaluate", "resolve"]


@dataclass(frozen=True)
class Resolved:
    """One loss of a resolved plan.

    Attributes:
        name: The reported name (sub-losses of a dict-valued loss are ``<name>/<key>``).
        port: The output port it reads.
        loss: The loss applied to the port; None when the port already is the loss.
        target: The batch key passed as the target; None for a target-free loss.
        term: The spec term it comes from (its scale).
        rule: ``"port"``, ``"attach"``, or the Automatic rule that chose it.
        reason: Why, in words.
    """

    name: str
    port: str
    loss: Callable[..., Any] | None
    target: str | None
    term: Term
    rule: str
    reason: str

    def weight(self, step: int) -> float:
        """The term's scale at ``step``."""
        return self.term.weight(step)


def _unknown_port(term: Term, ports: Mapping[str, Any]) -> MissingKeyError:
    return MissingKeyError(
        f"{term.describe()} names the output port {term.port!r}, which the model does not "
        f"produce; its ports are {sorted(ports)}"
    )


def _missing_target(resolved: Resolved | Term, key: str, data: Mapping[str, Any]) -> Exception:
    what = resolved.describe() if isinstance(resolved, Term) else f"loss {resolved.name!r}"
    return MissingKeyError(
        f"{what} needs the target batch[{key!r}], which the batch does not have; its keys are "
        f"{sorted(data)}"
    )


def resolve(
    terms: Sequence[Term],
    ports: Mapping[str, Any],
    data: Mapping[str, Any],
    trace: ProducerTrace | None,
) -> list[Resolved]:
    """Resolve ``terms`` against a model's ``ports`` and a first batch ``data``."""
    named = {term.port for term in terms if term.port is not None}
    for term in terms:
        if term.port is not None and term.port not in ports:
            raise _unknown_port(term, ports)
    plan: list[Resolved] = []
    for term in terms:
        if term.kind == "automatic":
            covered = [term.port] if term.port is not None else [p for p in ports if p not in named]
            plan.extend(_automatic(term, port, ports, data, trace) for port in covered)
        elif term.port is not None:
            plan.append(_explicit(term, term.port, data))
    _check_names(plan)
    return plan


def _automatic(
    term: Term,
    port: str,
    ports: Mapping[str, Any],
    data: Mapping[str, Any],
    trace: ProducerTrace | None,
) -> Resolved:
    producer = trace.producer_of(ports[port]) if trace is not None else None
    choice = choose(port, ports[port], data, producer)
    target = None
    if choice.loss is not None:
        mode = target_mode(choice.loss, f"the loss Automatic chose for port {port!r}")
        if mode == "required" or (mode == "optional" and port in data):
            target = port
    name = term.name or port
    return Resolved(name, port, choice.loss, target, term, choice.rule, choice.reason)


def _explicit(term: Term, port: str, data: Mapping[str, Any]) -> Resolved:
    name = term.name or port
    if term.kind == "port":
        reason = "the spec names this output as a loss (Port)"
        return Resolved(name, port, None, None, term, "port", reason)
    key = term.target_key or port
    if term.mode == "required" and key not in data:
        raise _missing_target(term, key, data)
    target = key if term.mode == "required" or (term.mode == "optional" and key in data) else None
    return Resolved(name, port, term.loss, target, term, "attach", "the spec attaches this loss")


def _check_names(plan: Sequence[Resolved]) -> None:
    seen: dict[str, Resolved] = {}
    for item in plan:
        first = seen.setdefault(item.name, item)
        if first is not item:
            raise ValueError(
                f"two losses of the spec are both named {item.name!r}: {first.term.describe()} "
                f"and {item.term.describe()}; give one a name of its own, e.g. "
                f"Attach({item.port!r}, loss, name='{item.port}/other')"
            )


def evaluate(
    plan: Sequence[Resolved], ports: Mapping[str, Any], data: Mapping[str, Any], step: int
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Raw losses and weights of ``plan`` on one forward's ``ports`` and batch ``data``."""
    losses: dict[str, Tensor] = {}
    weights: dict[str, float] = {}
    for item in plan:
        if item.port not in ports:
            raise MissingKeyError(
                f"loss {item.name!r} reads the output port {item.port!r}, which the model "
                f"produced on the first batch but not on this one; its ports now are "
                f"{sorted(ports)}"
            )
        value = ports[item.port]
        output = value if item.loss is None else _apply(item, item.loss, value, data)
        weight = item.weight(step)
        if isinstance(output, Mapping):
            if not output:
                raise ValueError(
                    f"loss {item.name!r} ({item.term.describe()}) returned an empty mapping; "
                    "a loss returning a mapping must hold at least one named sub-loss"
                )
            for key, sub in output.items():
                if not isinstance(key, str) or not key or key != key.strip():
                    # The message is built only on failure: describe() is not free per step.
                    check_loss_name(
                        key,
                        f"each key of the mapping that loss {item.name!r} "
                        f"({item.term.describe()}) returned",
                    )
                name = f"{item.name}/{key}"
                losses[name] = _as_scalar(sub, name, item)
                weights[name] = weight
        else:
            losses[item.name] = _as_scalar(output, item.name, item)
            weights[item.name] = weight
    return losses, weights


def _apply(item: Resolved, loss: Callable[..., Any], value: Any, data: Mapping[str, Any]) -> Any:
    if item.target is None:
        return loss(value)
    if item.target not in data:
        raise _missing_target(item, item.target, data)
    target = data[item.target]
    try:
        return loss(value, target)
    except TargetMismatchError as error:
        raise TargetMismatchError(
            f"loss {item.name!r} on port {item.port!r} with target batch[{item.target!r}]: {error}"
        ) from None
    except (RuntimeError, ValueError, IndexError, TypeError) as error:
        # Foreign losses (torch.nn) raise these with no word of the spec: add one.
        if hasattr(error, "add_note"):  # Python >= 3.11
            error.add_note(
                f"multiloss: while computing loss {item.name!r} = {item.term.describe()} on "
                f"port {item.port!r}, the output {describe_tensor(value)}, with target "
                f"batch[{item.target!r}] "
                f"{describe_tensor(target)}"
            )
        raise


def _as_scalar(value: Any, name: str, item: Resolved) -> Tensor:
    if isinstance(value, Tensor) and value.dim() == 0 and value.is_floating_point():
        return value  # the common case, checked without building any message
    where = f"port {item.port!r}" if item.loss is None else item.term.describe()
    if not isinstance(value, Tensor):
        raise TypeError(f"loss {name!r} (from {where}) must be a tensor; got {describe(value)}")
    if item.loss is None and value.dim() > 0 and value.numel() != 1:
        value = value.sum()  # an array-valued port is summed (docs/specs.md)
    # An attached loss that returns a non-scalar (reduction="none") is an error naming the spec
    # (from check_loss_tensor), not a silent sum: the sum of a per-example loss is rarely meant.
    return check_loss_tensor(value, name, where=where)
