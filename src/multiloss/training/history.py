"""``History``: what ``Trainer.fit`` returns, the rows it logged, queryable by key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["History"]


class History:
    """The train and validation rows logged during ``fit`` (the same as ``metrics.jsonl``).

    Example:
        >>> history = History()
        >>> history.append({"kind": "train", "step": 10, "total": 2.0, "loss/a": 2.0})
        >>> history.append({"kind": "train", "step": 20, "total": 1.0, "loss/a": 1.0})
        >>> history["loss/a"]
        [2.0, 1.0]
        >>> history.steps("loss/a")
        [10, 20]
        >>> history.last()["total"]
        1.0
    """

    def __init__(self) -> None:
        self.train: list[dict[str, Any]] = []
        self.val: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def append(self, record: dict[str, Any]) -> None:
        """Add a logged row to the list of its kind."""
        kind = record.get("kind", "train")
        {"train": self.train, "val": self.val}.get(kind, self.events).append(record)

    def __getitem__(self, key: str) -> list[float]:
        """Values of ``key`` over the train rows that have it."""
        return [row[key] for row in self.train if key in row]

    def steps(self, key: str, *, kind: str = "train") -> list[int]:
        """The steps at which ``key`` was logged."""
        rows = self.train if kind == "train" else self.val
        return [row["step"] for row in rows if key in row]

    def val_values(self, key: str) -> list[float]:
        """Values of ``key`` over the validation rows that have it."""
        return [row[key] for row in self.val if key in row]

    def last(self, kind: str = "train") -> dict[str, Any]:
        """The last row of ``kind`` ("train" or "val")."""
        rows = self.train if kind == "train" else self.val
        if not rows:
            raise IndexError(f"no {kind} row was logged")
        return rows[-1]

    def losses(self) -> list[str]:
        """Names of every loss that appeared in the train rows."""
        names: dict[str, None] = {}
        for row in self.train:
            for key in row:
                if key.startswith("loss/"):
                    names[key[5:]] = None
        return list(names)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.train)

    def __len__(self) -> int:
        return len(self.train)

    def __repr__(self) -> str:
        return (
            f"History(train_rows={len(self.train)}, val_rows={len(self.val)}, "
            f"losses={self.losses()})"
        )
