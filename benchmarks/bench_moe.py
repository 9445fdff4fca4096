"""MixtureOfExperts against the per-expert mask loop of popular model code, on this machine.

One process, interleaved repeats, medians and ratios (the machine is shared: absolute times
drift, ratios of interleaved runs much less). Three implementations of the same layer (same
weights, same top-2 routing, SwiGLU experts) are timed:

* ``ours``: ``multiloss.layers.MixtureOfExperts`` (sort by expert, grouped products), inside
  ``multiloss.collect`` with its switch loss added to the objective;
* ``loop``: the Mixtral-style block (``for expert: idx, top_x = where(mask[expert]); ...;
  index_add_``), with the same switch loss computed from its router probabilities;
* ``dense``: the same products with no routing at all, one dense product per weight over all
  T*K rows. On a GPU it bounds what any dispatch can reach. On a CPU it is no bound: its
  (T*K, 2*hidden) intermediates do not fit in cache, while the loop's per-expert slices do, so
  the loop can beat it; any dispatch that runs whole products (grouped or batched, as
  accelerators need) pays the same memory traffic.

Run ``PYTHONPATH=src python benchmarks/bench_moe.py`` (add ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import multiloss as ml
from multiloss.layers import MixtureOfExperts

try:
    from benchmarks._timing import interleave
except ImportError:  # run as a script from the benchmarks folder
    from _timing import interleave  # type: ignore[no-redef]

__all__ = ["LoopMoE", "run"]


class _Expert(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class LoopMoE(nn.Module):
    """The per-expert mask loop found in popular model code (Mixtral's sparse MoE block)."""

    def __init__(self, ours: MixtureOfExperts) -> None:
        super().__init__()
        self.num_experts, self.top_k = ours.num_experts, ours.top_k
        self.gate = nn.Linear(ours.dim, ours.num_experts, bias=False)
        self.experts = nn.ModuleList(
            _Expert(ours.dim, ours.hidden) for _ in range(self.num_experts)
        )
        with torch.no_grad():  # the same weights, so both compute the same function
            self.gate.weight.copy_(ours.router.weight)
            for e, expert in enumerate(self.experts):
                w_in = ours.experts.w_in[e]
                expert.w1.weight.copy_(w_in[:, : ours.hidden].t())
                expert.w3.weight.copy_(w_in[:, ours.hidden :].t())
                expert.w2.weight.copy_(ours.experts.w_out[e].t())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.gate(x)
        probs = F.softmax(logits, dim=1, dtype=torch.float)
        weights, selected = torch.topk(probs, self.top_k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(x)
        mask = F.one_hot(selected, num_classes=self.num_experts).permute(2, 1, 0)
        for e in range(self.num_experts):
            idx, top_x = torch.where(mask[e])
            current = x[None, top_x].reshape(-1, x.shape[-1])
            y = self.experts[e](current) * weights[top_x, idx, None]
            out.index_add_(0, top_x, y.to(x.dtype))
        fraction = mask.sum(dim=(1, 2)).float() / (x.shape[0] * self.top_k)
        aux = self.num_experts * (fraction * probs.mean(0)).sum()
        return out, aux


def _dense(ours: MixtureOfExperts, tokens: int) -> Callable[[Tensor, bool], None]:
    """Dense products of the same size as the experts' work, with no routing at all."""
    rows = tokens * ours.top_k
    w_in = ours.experts.w_in[0].detach().clone().requires_grad_()
    w_out = ours.experts.w_out[0].detach().clone().requires_grad_()
    source = torch.randn(rows, ours.dim)

    def step(_: Tensor, train: bool) -> None:
        with torch.set_grad_enabled(train):
            x = source.requires_grad_(train)
            a, b = (x @ w_in).chunk(2, dim=-1)
            y = (F.silu(a) * b) @ w_out
            if train:
                y.square().mean().backward()

    return step


def _ours(layer: MixtureOfExperts) -> Callable[[Tensor, bool], None]:
    def step(x: Tensor, train: bool) -> None:
        if not train:
            with torch.no_grad():
                layer(x)
            return
        with ml.collect(layer) as book:
            out = layer(x)
        (out.square().mean() + book.total()).backward()

    return step


def _loop(block: LoopMoE) -> Callable[[Tensor, bool], None]:
    def step(x: Tensor, train: bool) -> None:
        if not train:
            with torch.no_grad():
                block(x)
            return
        out, aux = block(x)
        (out.square().mean() + 0.01 * aux).backward()

    return step


def _timed(step: Callable[[Tensor, bool], None], x: Tensor, train: bool, *modules: nn.Module):
    def measure() -> float:
        for module in modules:
            module.zero_grad(set_to_none=True)
        start = time.perf_counter()
        step(x, train)
        return time.perf_counter() - start

    return measure


def run(quick: bool = False) -> list[dict[str, float | int | str]]:
    """Time the three implementations; one row per (experts, mode).

    Rows: ``case``, ``baseline ms`` (the loop), ``ours ms``, ``dense ms``, ``speedup``
    (baseline / ours), ``loop / dense`` and ``target`` (speedup >= 2 at E=32, > 1 elsewhere).

    Args:
        quick: A smoke run (small sizes, few rounds) that only checks the benchmark works.
    """
    tokens, dim, hidden = (256, 64, 128) if quick else (4096, 512, 1024)
    rounds = 2 if quick else 7
    rows: list[dict[str, float | int | str]] = []
    for experts in (8, 32, 64):
        torch.manual_seed(0)
        layer = MixtureOfExperts(dim, hidden, experts, top_k=2, balance={"switch": 0.01})
        loop = LoopMoE(layer)
        x = torch.randn(tokens, dim)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), loop(x)[0], rtol=1e-4, atol=1e-5)
        steps = {"ours": _ours(layer), "loop": _loop(loop), "dense": _dense(layer, tokens)}
        for mode, train in (("train step", True), ("forward", False)):
            variants = {name: _timed(step, x, train, layer, loop) for name, step in steps.items()}
            median = {k: v * 1e3 for k, v in interleave(variants, rounds=rounds).items()}
            rows.append(
                {
                    "case": f"{mode}, E={experts}, T={tokens}, dim={dim}, hidden={hidden}, top-2",
                    "baseline ms": round(median["loop"], 1),
                    "ours ms": round(median["ours"], 1),
                    "dense ms": round(median["dense"], 1),
                    "speedup": round(median["loop"] / median["ours"], 2),
                    "loop / dense": round(median["loop"] / median["dense"], 2),
                    "target": ">= 2" if experts == 32 and train else "> 1",
                }
            )
    return rows


def _table(rows: list[dict[str, float | int | str]]) -> str:
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = [" | ".join(k.rjust(widths[k]) for k in keys)]
    lines.append("-|-".join("-" * widths[k] for k in keys))
    lines += [" | ".join(str(r[k]).rjust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(_table(run(quick=args.quick)))
