"""A live progress bar (tqdm) that shows the total and the largest terms."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from tqdm.auto import tqdm

from multiloss._validation import check_bool, check_int
from multiloss.sinks.base import RunInfo, Sink

__all__ = ["ProgressBar"]


class ProgressBar(Sink):
    """A tqdm bar over optimizer steps; at each log row it shows the total and the ``top``
    weighted terms by magnitude; events (advice, skipped steps) print as lines under it.

    Args:
        top: How many of the largest weighted terms to show next to the total.
        disable: None hides the bar when stderr is not a terminal (CI logs stay clean).

    Example:
        >>> ProgressBar(top=2)
        ProgressBar(top=2)
    """

    def __init__(self, *, top: int = 3, disable: bool | None = None) -> None:
        self.top = check_int(top, "`top` of ProgressBar", min_value=0)
        if disable is not None:
            check_bool(disable, "`disable` of ProgressBar")
        self.disable = disable
        self._bar: Any = None

    def open(self, run: RunInfo) -> None:
        self._bar = tqdm(
            total=run.total_steps,
            initial=run.start_step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=self.disable,
            file=sys.stderr,
        )

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def write(self, record: Mapping[str, Any]) -> None:
        if self._bar is None:
            return
        kind = record.get("kind")
        if kind == "event":
            self._bar.write(f"[{record.get('event')}] {record.get('message')}", file=sys.stderr)
            if record.get("suggestion"):
                self._bar.write(f"    -> {record['suggestion']}", file=sys.stderr)
        elif kind == "val":
            self._bar.write(
                f"step {record['step']}: val total {_fmt(record.get('total'))}", file=sys.stderr
            )
        elif kind == "train":
            terms = sorted(
                (
                    (key[len("weighted/") :], value)
                    for key, value in record.items()
                    if key.startswith("weighted/") and isinstance(value, float)
                ),
                key=lambda item: -abs(item[1]),
            )[: self.top]
            postfix = {"total": _fmt(record.get("total"))}
            postfix.update(
                {
                    name.rsplit("/", 2)[-1] if len(name) > 24 else name: _fmt(value)
                    for name, value in terms
                }
            )
            self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __repr__(self) -> str:
        return f"ProgressBar(top={self.top})"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
