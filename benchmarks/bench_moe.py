"""MixtureOfExperts against the per-expert mask loop of popular model code, on this machine.

One process, interleaved repeats, medians and ratios (the machine is shared: absolute times
drift, ratios of interleaved runs much less). Three implementations of the same layer (same
weights, same top-2 routing, SwiGLU experts) are timed:

* ``ours``: ``multiloss.layers.MixtureOfExperts`` (sort by expert, grouped products), inside
  ``multiloss.collect`` with its switch loss added to the objective;
* ``loop``: the Mixtral-style block (``for expert: idx, top_x = where(mask[expert]); ...;
  index_add_``), with the same switch loss computed from its router probabilities;
* ``floor``: the same matrix products on pre-sorted rows with no routing at all (one dense
  product per weight, T*K rows): a lower bound that no dispatch can beat.

Run ``PYTHONPATH=src python benchmarks/bench_moe.py`` (add ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import multiloss as ml
from multiloss.layers import MixtureOfExperts

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
        self.experts = nn.ModuleList(_Expert(ours.dim, ours.hidden) for _ in range(self.num_experts))
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


def _floor(ours: MixtureOfExperts, tokens: int) -> Callable[[Tensor, bool], None]:
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


def run(quick: bool = False) -> list[dict[str, float | int | str]]:
    """Time the three implementations; one row per (experts, mode).

    Args:
        quick: A smoke run (small T, few repeats) that only checks the benchmark works.
    """
    tokens, dim, hidden = (256, 64, 128) if quick else (4096, 512, 1024)
    repeats = 2 if quick else 7
    rows: list[dict[str, float | int | str]] = []
    for experts in (8, 32, 64):
        torch.manual_seed(0)
        layer = MixtureOfExperts(dim, hidden, experts, top_k=2, balance={"switch": 0.01})
        loop = LoopMoE(layer)
        x = torch.randn(tokens, dim)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), loop(x)[0], rtol=1e-4, atol=1e-5)
        contenders = {"ours": _ours(layer), "loop": _loop(loop), "floor": _floor(layer, tokens)}
        for mode, train in (("train", True), ("forward", False)):
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for name, step in contenders.items():  # warm-up
                step(x, train)
            for _ in range(repeats):
                for name, step in contenders.items():
                    layer.zero_grad(set_to_none=True)
                    loop.zero_grad(set_to_none=True)
                    start = time.perf_counter()
                    step(x, train)
                    times[name].append(time.perf_counter() - start)
            median = {name: statistics.median(values) * 1e3 for name, values in times.items()}
            rows.append(
                {
                    "experts": experts,
                    "mode": mode,
                    "tokens": tokens,
                    "ours_ms": round(median["ours"], 1),
                    "loop_ms": round(median["loop"], 1),
                    "floor_ms": round(median["floor"], 1),
                    "speedup_vs_loop": round(median["loop"] / median["ours"], 2),
                    "loop_over_floor": round(median["loop"] / median["floor"], 2),
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
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(_table(run(quick=args.quick)))
