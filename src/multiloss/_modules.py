"""Module bookkeeping: unwrapping wrappers and naming submodules by their path in a root model."""

from __future__ import annotations

import weakref
from collections import deque

from torch import nn

__all__ = ["join_name", "module_path", "unwrap"]

# Wrappers whose inner module lives in an attribute and must not show up in loss names:
# DistributedDataParallel / DataParallel (`.module`), torch.compile's OptimizedModule
# (`._orig_mod`), FSDP, and a loss spec's TrainingNet (`.net`: losses the model emits keep
# the model's own paths). Matched by class name so we import none of them eagerly.
_WRAPPERS = {
    "DistributedDataParallel": "module",
    "DataParallel": "module",
    "OptimizedModule": "_orig_mod",
    "FullyShardedDataParallel": "_fsdp_wrapped_module",
    "TrainingNet": "net",
}
_PATHS: weakref.WeakKeyDictionary[nn.Module, weakref.WeakKeyDictionary[nn.Module, str]] = (
    weakref.WeakKeyDictionary()
)


def unwrap(model: nn.Module) -> nn.Module:
    """Return the user's model inside DDP, DataParallel, FSDP or ``torch.compile`` wrappers."""
    while True:
        attr = _WRAPPERS.get(type(model).__name__)
        inner = getattr(model, attr, None) if attr else None
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _build(root: nn.Module) -> weakref.WeakKeyDictionary[nn.Module, str]:
    """Walk the tree breadth-first so a module reachable twice keeps its shortest path.

    The hop from a wrapper to its inner module adds nothing to the path, so a compiled block
    ``blocks.0`` is named ``blocks.0``, not ``blocks.0._orig_mod``. Only real wrappers are
    skipped: a user's own submodule called ``module`` keeps its name.
    """
    paths: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
    queue: deque[tuple[nn.Module, str]] = deque([(root, "")])
    while queue:
        module, prefix = queue.popleft()
        if module in paths:
            continue
        paths[module] = prefix
        skip = _WRAPPERS.get(type(module).__name__)
        for name, child in module._modules.items():
            if child is None:
                continue
            hop = prefix if name == skip else (f"{prefix}.{name}" if prefix else name)
            queue.append((child, hop))
    return paths


def module_path(root: nn.Module, module: nn.Module, *, rebuild: bool = True) -> str | None:
    """The dotted path of ``module`` inside ``root`` ("" for the root itself), or None.

    Paths are cached per root. On a miss the cache is rebuilt when ``rebuild`` is true, so a
    model whose structure changed since the last call is still named correctly; callers that
    look up many modules pass ``rebuild=False`` after their first rebuild.
    """
    root = unwrap(root)
    paths = _PATHS.get(root)
    if paths is not None:
        found = paths.get(module)
        if found is not None or not rebuild:
            return found
    paths = _build(root)
    _PATHS[root] = paths
    return paths.get(module)


def join_name(path: str, name: str) -> str:
    """``encoder.blocks.3.moe`` + ``switch`` -> ``encoder.blocks.3.moe/switch``."""
    return f"{path}/{name}" if path else name
