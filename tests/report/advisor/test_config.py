from __future__ import annotations

import pytest

from multiloss.report.advisor import AdvisorConfig


def test_defaults_are_the_documented_ones() -> None:
    config = AdvisorConfig()
    assert (config.min_share, config.max_share, config.conflict_cos) == (0.01, 0.9, -0.2)
    assert (config.window, config.persist, config.target_share) == (50, 0.8, 0.1)


def test_from_options_overrides_a_base() -> None:
    base = AdvisorConfig(window=20)
    assert AdvisorConfig.from_options(base, min_share=0.05) == AdvisorConfig(
        window=20, min_share=0.05
    )
    assert AdvisorConfig.from_options() == AdvisorConfig()


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"window": 1}, ValueError, "`window` of AdvisorConfig must be >= 2; got 1"),
        ({"window": 2.5}, TypeError, "`window` of AdvisorConfig must be an int; got 2.5"),
        ({"min_rows": 0}, ValueError, "`min_rows` of AdvisorConfig must be >= 2; got 0"),
        ({"persist": 1.5}, ValueError, r"`persist` of AdvisorConfig must be in \(0, 1\); got 1.5"),
        ({"min_share": 0.0}, ValueError, r"`min_share` of AdvisorConfig must be in \(0, 1\)"),
        ({"target_share": 1.0}, ValueError, r"`target_share` of AdvisorConfig must be in"),
        ({"conflict_cos": -2.0}, ValueError, "`conflict_cos` of AdvisorConfig must be >= -1.0"),
        ({"trend_tol": 0.0}, ValueError, "`trend_tol` of AdvisorConfig must be > 0.0; got 0.0"),
        ({"explode": 1.0}, ValueError, "`explode` of AdvisorConfig must be > 1.0; got 1.0"),
        ({"collapse": float("nan")}, ValueError, "`collapse` of AdvisorConfig must be a finite"),
        (
            {"min_share": 0.5, "max_share": 0.4},
            ValueError,
            "`min_share` of AdvisorConfig must be below `max_share`",
        ),
        ({"windows": 3}, TypeError, "unknown advisor option 'windows'; the options are: window"),
    ],
)
def test_bad_options(options: dict[str, float], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        AdvisorConfig.from_options(**options)
