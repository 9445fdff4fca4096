"""Train a tiny model with the real Trainer, advise live, then report on its run directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import multiloss as ml
from multiloss.report import AdvisorHook, advise, read_run, write_report
from multiloss.sinks import JSONLSink
from multiloss.training import Trainer


class Head(nn.Module):
    """Emits a useful-looking penalty at a weight a million times too small, and a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(16, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.out(hidden)
        ml.add_loss("tiny", out.pow(2).mean(), weight=1e-6)
        # A loss that does not depend on any parameter: the classic disconnected auxiliary.
        ml.add_loss("stuck", torch.full((), 0.25, device=hidden.device))
        return out


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
        self.head = Head()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        prediction = self.head(self.body(x)).squeeze(-1)
        return {"mse": F.mse_loss(prediction, y)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, AdvisorHook]]:
    # A model this small runs fastest on one thread (more only contend on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _train(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _train(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AdvisorHook]:
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8)
    data = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    net = Net()
    hook = AdvisorHook(every=5, window=20)
    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    trainer = Trainer(
        net,
        torch.optim.SGD(net.parameters(), lr=0.05),
        run_dir=run_dir,
        log_every=1,
        val_every=8,
        hooks=[hook],
        sinks=[JSONLSink()],
    )
    trainer.fit(data, epochs=4, val_data=data[:2])
    return run_dir, hook


def test_live_advice_is_logged_as_events(trained: tuple[Path, AdvisorHook]) -> None:
    run_dir, hook = trained
    events = [e for e in read_run(run_dir).events if e["event"] == "advice"]
    found = {(e["finding"], e["loss"]) for e in events}
    assert ("ignored", "head/tiny") in found
    assert ("disconnected", "head/stuck") in found
    assert all(e["suggestion"] and e["message"] for e in events)
    assert len(events) == len(found)  # each reported once
    assert {f.key for f in hook.findings} >= {("ignored", "head/tiny")}


def test_report_on_a_real_run(trained: tuple[Path, AdvisorHook], tmp_path: Path) -> None:
    run_dir, _ = trained
    findings = advise(run_dir)
    assert {f.key for f in findings} >= {("ignored", "head/tiny"), ("disconnected", "head/stuck")}
    assert all(f.loss != "mse" for f in findings)
    page = write_report(run_dir, tmp_path / "report")
    html = page.read_text()
    assert "head/tiny" in html
    assert "Problems" not in html
    plots = sorted(p.name for p in (tmp_path / "report" / "plots").iterdir())
    assert {"losses-1.png", "weights.png", "shares.png", "validation-1.png"} <= set(plots)
    saved = json.loads((tmp_path / "report" / "findings.json").read_text())
    assert {row["finding"] for row in saved["run"]} >= {"ignored", "disconnected"}


def test_report_while_the_log_is_half_written(
    trained: tuple[Path, AdvisorHook], tmp_path: Path
) -> None:
    run_dir, _ = trained
    live = tmp_path / "live"
    live.mkdir()
    data = (run_dir / "metrics.jsonl").read_bytes()
    (live / "metrics.jsonl").write_bytes(data[: len(data) // 2 + 7])  # cut inside a line
    run = read_run(live)
    assert run.partial
    assert write_report(live, tmp_path / "out").is_file()
