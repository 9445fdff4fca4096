"""The errors a spec raises, beyond ``TypeError`` for values of the wrong type."""

from __future__ import annotations

__all__ = ["AutomaticError", "MissingKeyError"]


class MissingKeyError(KeyError):
    """A port the model does not produce, or a batch entry that is not there.

    A ``KeyError`` (so ``except KeyError`` catches it) whose message prints as written: the
    plain ``KeyError`` quotes its message as if it were the missing key.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AutomaticError(ValueError):
    """``Automatic`` cannot choose a loss for an output (the message says what it saw)."""
