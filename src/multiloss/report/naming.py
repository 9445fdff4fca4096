"""Group loss names by their last part so that forty MoE layers make one line, not forty.

Losses emitted by a module are named ``<module path>/<term>`` (``blocks.3.moe/balance``). When a
run has more losses than a plot can show legibly, the losses that share a term become one group,
``*/balance``, drawn as the mean over its members with a min-max band. Losses named at the root
(no ``/``) are never grouped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from multiloss._validation import check_choice, check_int

__all__ = ["GROUP_MODES", "LossGroup", "group_losses", "last_part", "split_pair"]

GROUP_MODES = ("auto", "always", "never")


def last_part(name: str) -> str:
    """The term of a loss name: ``"blocks.3.moe/balance"`` -> ``"balance"``.

    Example:
        >>> last_part("blocks.3.moe/balance"), last_part("task")
        ('balance', 'task')
    """
    return name.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class LossGroup:
    """A plotted series: one loss, or several sharing a term.

    Example:
        >>> LossGroup("*/balance", ("a/balance", "b/balance")).is_group
        True
    """

    label: str
    members: tuple[str, ...]

    @property
    def is_group(self) -> bool:
        """Whether this stands for more than one loss."""
        return len(self.members) > 1


def group_losses(
    names: Sequence[str], mode: str = "auto", *, max_series: int = 12, min_group: int = 3
) -> list[LossGroup]:
    """Partition ``names`` into plotted series, keeping first-appearance order.

    Args:
        names: Loss names.
        mode: ``"never"`` keeps every loss; ``"always"`` groups every term shared by at least
            ``min_group`` module losses; ``"auto"`` does so only when there are more than
            ``max_series`` names.
        max_series: Most series ``"auto"`` shows ungrouped.
        min_group: Fewest losses sharing a term that form a group.

    Example:
        >>> names = ["task"] + [f"blocks.{i}.moe/balance" for i in range(40)]
        >>> [(g.label, len(g.members)) for g in group_losses(names)]
        [('task', 1), ('*/balance', 40)]
    """
    check_choice(mode, "`group`", GROUP_MODES)
    check_int(max_series, "`max_series`", min_value=1)
    check_int(min_group, "`min_group`", min_value=2)
    grouping = mode == "always" or (mode == "auto" and len(names) > max_series)
    by_term: dict[str, list[str]] = {}
    for name in names:
        if "/" in name:
            by_term.setdefault(last_part(name), []).append(name)
    groups: list[LossGroup] = []
    emitted: set[str] = set()
    for name in names:
        term = last_part(name)
        members = by_term.get(term, []) if "/" in name else []
        if grouping and len(members) >= min_group:
            if term not in emitted:
                emitted.add(term)
                groups.append(LossGroup(f"*/{term}", tuple(members)))
            continue
        groups.append(LossGroup(name, (name,)))
    return groups


def split_pair(pair: str, names: Iterable[str]) -> tuple[str, str]:
    """Split ``"a|b"`` into the two loss names, preferring a split where both are known.

    Example:
        >>> split_pair("x|y", ["x", "y"])
        ('x', 'y')
    """
    known = set(names)
    for index, char in enumerate(pair):
        if char == "|" and pair[:index] in known and pair[index + 1 :] in known:
            return pair[:index], pair[index + 1 :]
    left, _, right = pair.partition("|")
    return left, right
