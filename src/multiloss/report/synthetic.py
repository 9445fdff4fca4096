"""Fabricate run directories in the metrics schema, for tests, demos and benchmarks.

Each loss gets a value curve and a gradient vector in a small shared parameter space, so the
logged diagnostics are consistent with each other the way a real run's are: shares are the
projections of each weighted gradient on the update (they sum to 1), cosines come from the same
vectors, and a loss with ``connected=False`` has a constant value and a zero gradient. The
pathologies the advisor looks for are easy to write down (a tiny weight, a gradient opposed to
another loss's, a weight that decays to zero, dead experts) and come out of the same arithmetic.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from multiloss._validation import check_finite_float, check_int, check_loss_name
from multiloss.report.reader import METRICS_FILE, RUN_FILE
from multiloss.schedules import Schedule, as_schedule

__all__ = ["SyntheticLoss", "fabricate_run"]

_DIM = 16  # size of the fake shared parameter space the gradients live in


@dataclass(frozen=True)
class SyntheticLoss:
    """How one fabricated loss behaves.

    Args:
        name: Loss name (``"task"``, ``"blocks.0.moe/balance"``).
        start: Raw value at step 0.
        end: Value it approaches by the last step (``end > start`` makes it rise).
        weight: Fixed weight, or a schedule ``step -> weight`` (a learned balancer's output).
        grad_scale: Norm of its raw gradient at the start; it shrinks with the loss.
        opposed_to: Name of another loss whose gradient this one exactly opposes.
        noise: Relative noise on the value (and on the gradient direction).
        rate: How fast the value approaches ``end``: ``exp(-rate * progress)`` (5 gets there
            by the end of the run, 1 is still moving).
        connected: ``False`` makes the loss constant with a zero gradient (a detached loss).

    Example:
        >>> SyntheticLoss("aux", weight=0.001)
        SyntheticLoss(name='aux', start=2.0, end=0.2, weight=0.001, grad_scale=1.0, \
opposed_to=None, noise=0.05, rate=5.0, connected=True)
    """

    name: str
    start: float = 2.0
    end: float = 0.2
    weight: float | Schedule | Callable[[int], float] = 1.0
    grad_scale: float = 1.0
    opposed_to: str | None = None
    noise: float = 0.05
    rate: float = 5.0
    connected: bool = True

    def __post_init__(self) -> None:
        check_loss_name(self.name, "`name` of SyntheticLoss")
        what = f"of SyntheticLoss {self.name!r}"
        check_finite_float(self.start, f"`start` {what}")
        check_finite_float(self.end, f"`end` {what}")
        check_finite_float(self.grad_scale, f"`grad_scale` {what}", min_value=0.0)
        check_finite_float(self.noise, f"`noise` {what}", min_value=0.0)
        check_finite_float(self.rate, f"`rate` {what}", min_value=0.0)
        as_schedule(self.weight, f"`weight` {what}")


def _moe_losses(layers: int) -> list[SyntheticLoss]:
    # A Switch-style balance loss sits a little above its optimum of 1 and creeps down to it.
    return [
        SyntheticLoss(f"blocks.{layer}.moe/balance", 1.4, 1.02, 0.01, grad_scale=40.0)
        for layer in range(layers)
    ]


def _directions(losses: Sequence[SyntheticLoss], rng: np.random.Generator) -> np.ndarray:
    """Unit gradient directions: mildly aligned (a shared component) unless opposed."""
    common = rng.standard_normal(_DIM)
    common /= np.linalg.norm(common)
    # Cosines between losses come out around +0.5: related tasks that mostly agree.
    base = np.stack([common + 0.25 * rng.standard_normal(_DIM) for _ in losses])
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    index = {loss.name: i for i, loss in enumerate(losses)}
    for i, loss in enumerate(losses):
        if loss.opposed_to is not None:
            if loss.opposed_to not in index:
                raise ValueError(
                    f"`opposed_to` of SyntheticLoss {loss.name!r} must name another loss, one "
                    f"of {sorted(index)}; got {loss.opposed_to!r}"
                )
            base[i] = -base[index[loss.opposed_to]]
    return np.asarray(base, dtype=np.float64)


def _moe_load(
    rng: np.random.Generator, experts: int, progress: float, dead: Sequence[int]
) -> np.ndarray:
    """Per-expert token fractions: skewed early, near uniform late, zero for dead experts."""
    logits = rng.standard_normal(experts) * (1.2 * (1.0 - progress) + 0.1)
    load = np.exp(logits)
    load[list(dead)] = 0.0
    return np.asarray(load / load.sum(), dtype=np.float64)


def fabricate_run(
    path: str | Path,
    losses: Sequence[SyntheticLoss],
    *,
    steps: int = 200,
    log_every: int = 1,
    val_every: int | None = None,
    grad_diagnostics: bool = True,
    moe_layers: int = 0,
    experts: int = 8,
    dead_experts: Mapping[int, Sequence[int]] | None = None,
    partial_tail: bool = False,
    seed: int = 0,
) -> Path:
    """Write ``metrics.jsonl`` and ``run.json`` for a fabricated run into ``path``.

    Args:
        path: Run directory (created if needed; an existing log is replaced).
        losses: The losses; MoE balance losses are added for ``moe_layers``.
        steps: Optimizer steps in the run.
        log_every: Steps between training rows.
        val_every: Steps between validation rows (none when ``None``).
        grad_diagnostics: Whether to log ``grad/norm``, ``grad/share`` and ``grad/cos``.
        moe_layers: Number of MoE layers ``blocks.<i>.moe`` with per-expert load metrics.
        experts: Experts per MoE layer.
        dead_experts: Layer index -> experts that never receive a token.
        partial_tail: End the log with half a line, like a run still being written.
        seed: Seed of the noise.

    Returns:
        The run directory.

    Example:
        >>> import tempfile
        >>> folder = fabricate_run(tempfile.mkdtemp(), [SyntheticLoss("task")], steps=10)
        >>> sorted(p.name for p in folder.iterdir())
        ['metrics.jsonl', 'run.json']
    """
    check_int(steps, "`steps` of fabricate_run", min_value=1)
    check_int(log_every, "`log_every` of fabricate_run", min_value=1)
    check_int(moe_layers, "`moe_layers` of fabricate_run", min_value=0)
    check_int(experts, "`experts` of fabricate_run", min_value=2)
    if val_every is not None:
        check_int(val_every, "`val_every` of fabricate_run", min_value=1)
    every = list(losses) + _moe_losses(moe_layers)
    if not every:
        raise ValueError("`losses` of fabricate_run must hold at least one SyntheticLoss; got 0")
    names = [loss.name for loss in every]
    if len(set(names)) != len(names):
        raise ValueError(f"`losses` of fabricate_run must have distinct names; got {names}")
    dead = dict(dead_experts or {})
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    directions = _directions(every, rng)
    weights = [as_schedule(loss.weight) for loss in every]
    start = time.time()
    lines = []
    for step in range(log_every, steps + 1, log_every):
        row = _train_row(every, weights, directions, rng, step, steps, grad_diagnostics)
        row["time"] = start + 0.05 * step
        for layer in range(moe_layers):
            row.update(_moe_row(rng, layer, experts, step / steps, dead.get(layer, ())))
        lines.append(json.dumps(row))
        if val_every is not None and step % val_every == 0:
            lines.append(json.dumps(_val_row(row, every)))
    text = "\n".join(lines) + "\n"
    if partial_tail:
        text += json.dumps({"kind": "train", "step": steps + log_every, "loss/x": 1.0})[:20]
    (folder / METRICS_FILE).write_text(text, encoding="utf-8")
    # The keys the Trainer writes (its _describe), with made-up values.
    info = {
        "multiloss": "synthetic",
        "torch": None,
        "model": "SyntheticModel",
        "parameters": 0,
        "world_size": 1,
        "start_step": 0,
        "total_steps": steps,
        "resumed": False,
        "started": start,
        "trainer": f"fabricate_run(steps={steps}, log_every={log_every})",
    }
    (folder / RUN_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return folder


def _train_row(
    losses: Sequence[SyntheticLoss],
    weights: Sequence[Schedule],
    directions: np.ndarray,
    rng: np.random.Generator,
    step: int,
    steps: int,
    grad_diagnostics: bool,
) -> dict[str, Any]:
    progress = step / steps
    row: dict[str, Any] = {"kind": "train", "step": step, "epoch": step // 100}
    row.update({"lr": 1e-3, "time/step": 0.05, "skipped": 0})
    grads = np.zeros((len(losses), _DIM))
    total = 0.0
    for i, (loss, weight) in enumerate(zip(losses, weights, strict=True)):
        w = weight(step)
        if loss.connected:
            clean = loss.end + (loss.start - loss.end) * math.exp(-loss.rate * progress)
            value = clean * (1.0 + loss.noise * rng.standard_normal())
            scale = loss.grad_scale * math.sqrt(max(clean, 1e-12) / max(abs(loss.start), 1e-12))
            jitter = directions[i] + loss.noise * rng.standard_normal(_DIM)
            grads[i] = scale * jitter / np.linalg.norm(jitter)
        else:
            value = loss.start
        row[f"loss/{loss.name}"] = value
        row[f"weight/{loss.name}"] = w
        row[f"weighted/{loss.name}"] = w * value
        total += w * value
    row["total"] = total
    if grad_diagnostics:
        _add_gradient_diagnostics(row, losses, weights, grads, step)
    return row


def _add_gradient_diagnostics(
    row: dict[str, Any],
    losses: Sequence[SyntheticLoss],
    weights: Sequence[Schedule],
    grads: np.ndarray,
    step: int,
) -> None:
    weighted = grads * np.array([weight(step) for weight in weights])[:, None]
    update = weighted.sum(axis=0)
    energy = float(update @ update)
    norms = np.linalg.norm(grads, axis=1)
    for i, loss in enumerate(losses):
        row[f"grad/norm/{loss.name}"] = float(norms[i])
        if energy > 0:
            row[f"grad/share/{loss.name}"] = float(weighted[i] @ update) / energy
    order = sorted(range(len(losses)), key=lambda i: losses[i].name)
    for a_pos, a in enumerate(order):
        for b in order[a_pos + 1 :]:
            if norms[a] > 0 and norms[b] > 0:
                cos = float(grads[a] @ grads[b] / (norms[a] * norms[b]))
                row[f"grad/cos/{losses[a].name}|{losses[b].name}"] = cos


def _moe_row(
    rng: np.random.Generator, layer: int, experts: int, progress: float, dead: Sequence[int]
) -> dict[str, float]:
    load = _moe_load(rng, experts, progress, dead)
    prefix = f"metric/blocks.{layer}.moe"
    row = {f"{prefix}/load/{e}": float(load[e]) for e in range(experts)}
    uniform = 1.0 / experts
    row[f"{prefix}/cv"] = float(load.std() / load.mean())
    row[f"{prefix}/max_vio"] = float(load.max() / uniform - 1.0)
    row[f"{prefix}/dead_fraction"] = float(np.mean(load < 1e-6))
    live = load[load > 0]
    row[f"{prefix}/router_entropy"] = float(-(live * np.log(live)).sum())
    return row


def _val_row(train_row: Mapping[str, Any], losses: Sequence[SyntheticLoss]) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": "val", "step": train_row["step"], "epoch": train_row["epoch"]}
    total = 0.0
    for loss in losses:
        # Validation sits a little above training and is smoother (a mean over a whole set).
        value = float(train_row[f"loss/{loss.name}"]) * 1.1
        row[f"loss/{loss.name}"] = value
        row[f"weighted/{loss.name}"] = value * float(train_row[f"weight/{loss.name}"])
        total += row[f"weighted/{loss.name}"]
    row["total"] = total
    return row
