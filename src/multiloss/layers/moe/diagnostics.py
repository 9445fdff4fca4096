"""What the logs show about routing, computed from the cache only when asked (log time)."""

from __future__ import annotations

import torch
from torch import Tensor

from multiloss.layers.moe.cache import RoutingCache

__all__ = ["routing_diagnostics"]


def routing_diagnostics(cache: RoutingCache, bias: Tensor | None) -> dict[str, Tensor]:
    """``load/<i>``, ``cv``, ``max_vio``, ``dropped_fraction``, ``router_entropy``,
    ``dead_fraction`` and, with aux-loss-free balancing, ``bias/<i>``.

    Loads are fractions of the real assignments routed to each expert (before dropping).
    ``cv`` is their population standard deviation over their mean; ``max_vio`` is
    ``(max - mean) / mean``; both are 0 at perfect balance.
    """
    routed = cache.routed.to(torch.float32)
    total = routed.sum()
    load = routed / total.clamp_min(1.0)
    mean = load.mean()
    tiny = torch.finfo(torch.float32).tiny
    result = {f"load/{i}": value for i, value in enumerate(load.unbind())}
    result["cv"] = load.std(correction=0) / mean.clamp_min(tiny)
    result["max_vio"] = (load.max() - mean) / mean.clamp_min(tiny)
    result["dropped_fraction"] = 1.0 - cache.kept.sum().to(torch.float32) / total.clamp_min(1.0)
    probs = cache.probs.detach()
    entropy = -(probs * probs.clamp_min(tiny).log()).sum(dim=-1)
    if cache.valid is None:
        result["router_entropy"] = entropy.mean()
    else:
        weights = cache.valid.to(torch.float32)
        result["router_entropy"] = (entropy * weights).sum() / weights.sum().clamp_min(1.0)
    result["dead_fraction"] = (cache.routed == 0).to(torch.float32).mean()
    if bias is not None:
        result.update({f"bias/{i}": value for i, value in enumerate(bias.detach().unbind())})
    return result
