"""Mixed precision: resolve the ``amp`` option into an autocast dtype and a gradient scaler."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from multiloss._validation import describe

__all__ = ["AmpSettings", "resolve_amp"]

_ALIASES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


class AmpSettings:
    """Autocast dtype (or None) and, for float16, a ``GradScaler``."""

    def __init__(self, dtype: torch.dtype | None, device: torch.device) -> None:
        self.dtype = dtype
        self.device_type = device.type
        self.scaler: torch.amp.GradScaler | None = None
        if dtype == torch.float16:
            # float16 gradients underflow without loss scaling; bfloat16 has float32's range.
            self.scaler = torch.amp.GradScaler(device.type)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def __repr__(self) -> str:
        return f"AmpSettings(dtype={self.dtype}, scaler={self.scaler is not None})"


def resolve_amp(amp: Any, device: torch.device) -> AmpSettings:
    """``None``/``False``: off; ``True``: bfloat16; ``"bf16"``, ``"fp16"`` or a dtype."""
    if amp is None or amp is False:
        return AmpSettings(None, device)
    if amp is True:
        return AmpSettings(torch.bfloat16, device)
    if isinstance(amp, str) and amp.lower() in _ALIASES:
        return AmpSettings(_ALIASES[amp.lower()], device)
    if amp in (torch.bfloat16, torch.float16):
        return AmpSettings(amp, device)
    raise ValueError(
        "`amp` must be one of {None, False, True, 'bf16', 'fp16', torch.bfloat16, "
        f"torch.float16}}; got {describe(amp)}"
    )
