"""The advisor's thresholds and windows, with their defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from multiloss._validation import check_finite_float, check_int, check_probability, describe

__all__ = ["AdvisorConfig"]


@dataclass(frozen=True)
class AdvisorConfig:
    """Thresholds of the loss-health advisor. Windows count logged training rows.

    Args:
        window: Rows at the end of the run that the "stays ..." rules look at.
        min_rows: Fewest rows (in the window, or in the run for whole-run rules) before any
            rule speaks; less is not evidence.
        persist: Fraction of the window a condition must hold in (ignored, dominant, dead).
        min_share: A loss whose share of the update stays below this is ignored.
        max_share: A loss whose share stays above this dominates.
        target_share: The share the weight suggested for an ignored loss aims at.
        dominant_target: The share the weight suggested for a dominant loss aims at.
        conflict_cos: Gradient cosine below which two losses conflict.
        conflict_persist: Fraction of the window the cosine must stay below ``conflict_cos``.
        trend_tol: Relative change over the window that counts as improving (for the other
            losses) or getting worse (for the loss in question).
        flat_tol: Relative change under which a loss counts as flat.
        saturate_tol: A loss whose level (medians of fifths of the run) never leaves this
            relative band around its starting level never moved from its maximum.
        const_tol: Relative spread under which a loss's values count as constant.
        zero_grad: Gradient norm, relative to the largest other loss's, that counts as zero.
        collapse: A learned weight that falls below this fraction of its first value collapsed.
        explode: A learned weight that grows beyond this multiple of its first value exploded.
        dead_load: An expert whose load stays below this fraction of the mean load is dead.

    Example:
        >>> AdvisorConfig(min_share=0.02).min_share
        0.02
        >>> AdvisorConfig.from_options(windw=10)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: unknown advisor option 'windw'; the options are: window, min_rows, ...
    """

    window: int = 50
    min_rows: int = 10
    persist: float = 0.8
    min_share: float = 0.01
    max_share: float = 0.9
    target_share: float = 0.1
    dominant_target: float = 0.5
    conflict_cos: float = -0.2
    conflict_persist: float = 0.6
    trend_tol: float = 0.05
    flat_tol: float = 0.02
    saturate_tol: float = 0.05
    const_tol: float = 1e-6
    zero_grad: float = 1e-8
    collapse: float = 1e-3
    explode: float = 1e3
    dead_load: float = 0.01

    def __post_init__(self) -> None:
        check_int(self.window, "`window` of AdvisorConfig", min_value=2)
        check_int(self.min_rows, "`min_rows` of AdvisorConfig", min_value=2)
        for name in ("persist", "min_share", "max_share", "target_share", "dominant_target"):
            check_probability(getattr(self, name), f"`{name}` of AdvisorConfig")
        check_probability(self.conflict_persist, "`conflict_persist` of AdvisorConfig")
        check_finite_float(
            self.conflict_cos, "`conflict_cos` of AdvisorConfig", min_value=-1.0, max_value=1.0
        )
        for name in (
            "trend_tol",
            "flat_tol",
            "saturate_tol",
            "const_tol",
            "zero_grad",
            "dead_load",
        ):
            check_finite_float(
                getattr(self, name), f"`{name}` of AdvisorConfig", min_value=0.0, strict_min=True
            )
        check_probability(self.collapse, "`collapse` of AdvisorConfig")
        check_finite_float(
            self.explode, "`explode` of AdvisorConfig", min_value=1.0, strict_min=True
        )
        if self.min_share >= self.max_share:
            raise ValueError(
                "`min_share` of AdvisorConfig must be below `max_share`; got "
                f"min_share={self.min_share}, max_share={self.max_share}"
            )

    @classmethod
    def from_options(cls, config: AdvisorConfig | None = None, **options: Any) -> AdvisorConfig:
        """``config`` (or the defaults) with ``options`` replaced; unknown names are an error."""
        names = [item.name for item in fields(cls)]
        for name in options:
            if name not in names:
                listed = ", ".join(names)
                raise TypeError(f"unknown advisor option {name!r}; the options are: {listed}")
        check_config(config, "`config` of AdvisorConfig.from_options")
        base = asdict(config) if config is not None else {}
        return cls(**{**base, **options})


def check_config(config: Any, what: str) -> None:
    """``config`` must be an ``AdvisorConfig`` or None; the error names ``what``."""
    if config is not None and not isinstance(config, AdvisorConfig):
        raise TypeError(
            f"{what} must be an AdvisorConfig or None; got {describe(config)} (single thresholds "
            "go in as keyword arguments, e.g. window=100)"
        )
