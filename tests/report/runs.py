"""Fabricated runs for the report tests: a healthy one and one per pathology.

Each function writes a run directory with ``multiloss.report.synthetic.fabricate_run`` and
returns its path. The pathologies are built the way they happen in real training (a loss that
is detached, a weight off by a factor of 1000, a loss whose gradient exactly opposes another's)
so the tests check that the advisor sees the cause, not a hand-made symptom.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from multiloss.report.synthetic import SyntheticLoss, fabricate_run

STEPS = 200


def healthy(path: Path, **kwargs: Any) -> Path:
    """Two related losses that both fall and share the update about evenly."""
    losses = [
        SyntheticLoss("task", start=2.0, end=0.1),
        SyntheticLoss("aux", start=1.0, end=0.05, weight=0.5, grad_scale=1.5),
    ]
    return fabricate_run(path, losses, **{"steps": STEPS, **kwargs})


def healthy_moe(path: Path, **kwargs: Any) -> Path:
    """A task loss and four MoE layers whose balance losses settle at their floor."""
    losses = [SyntheticLoss("task", start=2.0, end=0.1)]
    return fabricate_run(path, losses, **{"steps": STEPS, "moe_layers": 4, **kwargs})


def tiny_weight(path: Path, weight: float = 1e-3, **kwargs: Any) -> Path:
    """``aux`` would be fine at weight 1 but was given ``weight`` (1000 times too small)."""
    losses = [
        SyntheticLoss("task", start=2.0, end=0.1),
        SyntheticLoss("aux", start=1.0, end=0.05, weight=weight),
    ]
    return fabricate_run(path, losses, **{"steps": STEPS, **kwargs})


def disconnected(path: Path, **kwargs: Any) -> Path:
    """``encoder/sparsity`` is computed on a detached tensor: constant, zero gradient."""
    losses = [
        SyntheticLoss("task", start=2.0, end=0.1),
        SyntheticLoss("encoder/sparsity", start=0.0, connected=False),
    ]
    return fabricate_run(path, losses, **{"steps": STEPS, **kwargs})


def opposed(path: Path, **kwargs: Any) -> Path:
    """``adversary`` has exactly the negated gradient of ``task`` (a sign error)."""
    losses = [
        SyntheticLoss("task", start=2.0, end=0.1),
        SyntheticLoss("adversary", start=1.0, end=1.6, opposed_to="task", grad_scale=0.8),
    ]
    return fabricate_run(path, losses, **{"steps": STEPS, **kwargs})


def dominant(path: Path, **kwargs: Any) -> Path:
    """``task`` has weight 100 next to two losses at weight 1."""
    losses = [
        SyntheticLoss("task", start=2.0, end=0.1, weight=100.0),
        SyntheticLoss("depth", start=1.0, end=0.05, grad_scale=2.0),
        SyntheticLoss("normals", start=1.0, end=0.05, grad_scale=2.0),
    ]
    return fabricate_run(path, losses, **{"steps": STEPS, **kwargs})


def rising(path: Path, **kwargs: Any) -> Path:
    """``depth`` keeps climbing (0.3 towards 2.0) while ``task`` falls."""
    losses = [
        SyntheticLoss("task", start=2.0, end=0.1),
        SyntheticLoss("depth", start=0.3, end=2.0, weight=0.5, grad_scale=1.5, rate=1.0),
    ]
    return fabricate_run(path, losses, **{"steps": STEPS, **kwargs})


def saturated(path: Path, **kwargs: Any) -> Path:
    """``contrast`` gets gradient but stays at its starting level (e.g. log N at chance)."""
    losses = [
        SyntheticLoss("task", start=2.0, end=0.1),
        SyntheticLoss("head/contrast", start=2.3, end=2.3, grad_scale=0.5),
    ]
    return fabricate_run(path, losses, **{"steps": STEPS, **kwargs})


def collapsing_weight(path: Path, factor: float = 0.95, **kwargs: Any) -> Path:
    """A learned balancer multiplies ``aux``'s weight by ``factor`` every step."""
    losses = [
        SyntheticLoss("task", start=2.0, end=0.1),
        SyntheticLoss("aux", start=1.0, end=0.05, weight=lambda step: factor**step),
    ]
    return fabricate_run(path, losses, **{"steps": STEPS, **kwargs})


def dead_experts(path: Path, **kwargs: Any) -> Path:
    """Experts 2 and 5 of layer ``blocks.1.moe`` never get a token."""
    losses = [SyntheticLoss("task", start=2.0, end=0.1)]
    return fabricate_run(
        path,
        losses,
        **{"steps": STEPS, "moe_layers": 3, "dead_experts": {1: [2, 5]}, **kwargs},
    )


def many_layers(path: Path, layers: int = 16, **kwargs: Any) -> Path:
    """A task loss and ``layers`` MoE balance losses (the grouping case)."""
    losses = [SyntheticLoss("task", start=2.0, end=0.1)]
    return fabricate_run(path, losses, **{"steps": 60, "moe_layers": layers, **kwargs})
