"""``multiloss demo``: train the digits model with three named losses and report each one."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import multiloss as ml
from multiloss.demo.data import load_digits_data
from multiloss.demo.model import DigitsNet
from multiloss.report import AdvisorConfig, AdvisorHook, advise, format_findings, write_report
from multiloss.training.sharding import init_distributed, shutdown_distributed

# The demo logs steps / log_every rows (40 by default): a short window lets the advisor speak
# within it, live and in the summary at the end.
ADVICE = AdvisorConfig(window=20)

__all__ = ["DemoResult", "format_loss_table", "run_demo"]


@dataclass
class DemoResult:
    """What the demo measured."""

    run_dir: Path
    test_accuracy: float
    test_losses: dict[str, float]
    history: ml.History
    seconds: float


def format_loss_table(values: dict[str, float], update: dict[str, float] | None = None) -> str:
    """A per-loss table from ``loss/``-style keys: raw, weight, weighted, share of the total,
    and (when ``update`` has ``grad/share/<name>`` keys) share of the last logged update."""
    names = sorted(key[5:] for key in values if key.startswith("loss/"))
    total = sum(abs(values[f"weighted/{name}"]) for name in names) or 1.0
    width = max([len("loss"), *map(len, names)])
    shares = {name: (update or {}).get(f"grad/share/{name}") for name in names}
    extra = any(share is not None for share in shares.values())
    header = f"{'loss':<{width}}  {'raw':>10}  {'weight':>8}  {'weighted':>10}  {'total':>6}"
    lines = [header + (f"  {'update':>6}" if extra else "")]
    for name in names:
        weighted = values[f"weighted/{name}"]
        line = (
            f"{name:<{width}}  {values[f'loss/{name}']:>10.4f}  {values[f'weight/{name}']:>8.3g}"
            f"  {weighted:>10.4f}  {abs(weighted) / total:>6.1%}"
        )
        share = shares[name]
        if extra:
            line += f"  {share:>6.1%}" if share is not None else f"  {'':>6}"
        lines.append(line)
    lines.append(f"{'total':<{width}}  {'':>10}  {'':>8}  {values['total']:>10.4f}")
    return "\n".join(lines)


def _silent(*args: Any) -> None:
    """Ranks other than 0 print nothing."""


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(x)
    model.train()
    return float((logits.argmax(dim=1) == y).float().mean())


def run_demo(
    *,
    steps: int = 800,
    out: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 64,
    log_every: int = 20,
    progress: bool = True,
    echo: Any = print,
) -> DemoResult:
    """Train :class:`~multiloss.demo.model.DigitsNet` and print what every loss did.

    Args:
        steps: Optimizer steps.
        out: Run directory (default ``runs/demo-<time>``).
        seed: Seeds the model, the split and the shuffling.
        batch_size: Training batch size.
        log_every: Log period in steps.
        progress: Show the live progress bar.
        echo: Where lines are printed.
    """
    # The demo model is tiny: a second intra-op thread only adds synchronization (and, on a
    # busy machine, spinning), so the demo runs on one; the caller's setting is restored.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(steps, out, seed, batch_size, log_every, progress, echo)
    finally:
        torch.set_num_threads(threads)
        shutdown_distributed()  # under --nproc: every rank leaves together


def _run(
    steps: int,
    out: str | Path | None,
    seed: int,
    batch_size: int,
    log_every: int,
    progress: bool,
    echo: Any,
) -> DemoResult:
    context = init_distributed()  # under torchrun (multiloss demo --nproc N): join the group
    if not context.is_main:
        echo = _silent
        progress = False
    torch.manual_seed(seed)
    run_dir = Path(out) if out is not None else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    run_dir = Path(context.broadcast(str(run_dir)))  # one directory, rank 0's
    data = load_digits_data(seed=seed, batch_size=batch_size)
    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    sinks: list[ml.sinks.Sink] = [ml.sinks.JSONLSink(), ml.sinks.TensorBoardSink()]
    if progress:
        sinks.insert(0, ml.sinks.ProgressBar(disable=False))
    trainer = ml.Trainer(
        model,
        optimizer,
        scheduler=scheduler,
        run_dir=run_dir,
        log_every=log_every,
        checkpoint_every=max(steps // 4, 1),
        val_every=max(steps // 4, 1),
        sinks=sinks,
        grad_diagnostics=True,  # each loss's gradient norm, cosines, share of the update
        hooks=[AdvisorHook(every=5, config=ADVICE)],
    )
    processes = f", {context.world_size} processes" if context.active else ""
    echo(
        f"multiloss demo: digits ({len(data.train.dataset)} train / {len(data.test_x)} test "  # type: ignore[arg-type]
        f"images), {steps} steps{processes}, run directory {run_dir}"
    )
    started = time.perf_counter()
    history = trainer.fit(data.train, steps=steps, val_data=data.test)
    seconds = time.perf_counter() - started
    test = trainer.evaluate(data.test)
    accuracy = _accuracy(model, data.test_x, data.test_y)
    echo("")
    echo("Losses on the test set: raw value, weight, weighted value, share of the weighted total,")
    echo("and share of the last logged update on the shared encoder:")
    echo(format_loss_table(test, history.last() if history.train else None))
    echo("")
    echo(f"test accuracy {accuracy:.1%} after {trainer.step} steps in {seconds:.1f} s")
    report = None
    if context.is_main:
        echo("")
        # The same thresholds as the live hook: the summary agrees with what it printed.
        echo(format_findings(advise(run_dir, ADVICE)))
        report = write_report(run_dir, advisor=ADVICE)
    echo(
        f"logs: {run_dir / 'metrics.jsonl'}   TensorBoard: {run_dir / 'tensorboard'}   "
        f"checkpoints: {run_dir / 'checkpoints'}"
    )
    if report is not None:
        echo(f"report: {report}  (open it in a browser; `multiloss report {run_dir}` redoes it)")
    return DemoResult(run_dir, accuracy, test, history, seconds)
