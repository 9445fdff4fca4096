from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiloss.report.naming import group_losses, last_part, split_pair

_name = st.from_regex(r"[a-z]{1,3}(\.[0-9])?(/[a-z]{1,3})?", fullmatch=True)


@given(st.lists(_name, unique=True, max_size=30), st.sampled_from(["auto", "always", "never"]))
def test_groups_partition_the_names_in_order(names: list[str], mode: str) -> None:
    groups = group_losses(names, mode, max_series=5)
    members = [m for g in groups for m in g.members]
    assert sorted(members) == sorted(names)
    firsts = [g.members[0] for g in groups]
    assert firsts == [n for n in names if n in firsts]  # first-appearance order
    for group in groups:
        if group.is_group:
            assert group.label == "*/" + last_part(group.members[0])
            assert all(
                "/" in m and last_part(m) == last_part(group.members[0]) for m in group.members
            )


def test_auto_groups_only_past_max_series() -> None:
    names = ["task", *[f"b.{i}/balance" for i in range(4)]]
    assert len(group_losses(names, "auto", max_series=12)) == 5
    assert [g.label for g in group_losses(names, "auto", max_series=4)] == ["task", "*/balance"]
    assert len(group_losses(names, "never", max_series=1)) == 5
    # Root losses never group, even when "always" is asked for.
    assert len(group_losses(["a", "b", "c"], "always")) == 3


def test_split_pair_prefers_known_names() -> None:
    assert split_pair("x|y|z", ["x|y", "z"]) == ("x|y", "z")
    assert split_pair("x|y|z", ["x", "y|z"]) == ("x", "y|z")
    assert split_pair("p|q", []) == ("p", "q")


def test_bad_mode() -> None:
    with pytest.raises(ValueError, match=r"`group` must be one of \{'auto', 'always', 'never'\}"):
        group_losses(["a"], "sometimes")
