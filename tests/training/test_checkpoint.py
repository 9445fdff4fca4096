"""Checkpoints: atomic writes, verified loads, fallback, and resume errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import multiloss as ml
from multiloss.training import checkpoint
from multiloss.training.checkpoint import (
    CheckpointError,
    find_checkpoints,
    load_latest,
    save_checkpoint,
)
from tests.training.models import TwoLoss, make_trainer, regression_batches


def test_save_keeps_newest_and_load_returns_latest(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20):
        save_checkpoint(tmp_path, step, {"step": step}, keep=2)
    assert [p.name for p in find_checkpoints(tmp_path)] == [
        "step-00000020.json",
        "step-00000015.json",
    ]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["step-00000015.pt", "step-00000020.pt"]
    state, path = load_latest(tmp_path)
    assert state == {"step": 20}
    assert path.name == "step-00000020.pt"


def test_interrupted_save_leaves_no_file_and_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, 1, {"w": torch.ones(3)})

    def dies_midway(obj: object, handle: object) -> None:
        handle.write(b"PK\x03\x04 half a zip")  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # the process is interrupted mid-write

    monkeypatch.setattr(checkpoint.torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, {"w": torch.zeros(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000001.json", "step-00000001.pt"]
    state, _ = load_latest(tmp_path)
    assert torch.equal(state["w"], torch.ones(3))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_corrupt_latest_falls_back_with_a_warning(tmp_path: Path, damage: str) -> None:
    save_checkpoint(tmp_path, 1, {"w": torch.ones(100)})
    save_checkpoint(tmp_path, 2, {"w": torch.zeros(100)})
    latest = tmp_path / "step-00000002.pt"
    data = latest.read_bytes()
    if damage == "truncate":
        latest.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        latest.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "delete":
        latest.unlink()
    else:
        (tmp_path / "step-00000002.json").write_text("{not json")
    with pytest.warns(RuntimeWarning, match="checkpoint step-00000002 .* is corrupt"):
        state, path = load_latest(tmp_path)
    assert path.name == "step-00000001.pt"
    assert torch.equal(state["w"], torch.ones(100))


def test_all_corrupt_is_an_error_listing_each(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"w": 1})
    (tmp_path / "step-00000001.pt").write_bytes(b"x")
    with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError, match="step-00000001"):
        load_latest(tmp_path)


def test_state_file_without_manifest_is_ignored(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"w": 1})
    (tmp_path / "step-00000009.pt").write_bytes(b"crashed before its manifest")
    state, _ = load_latest(tmp_path)
    assert state == {"w": 1}


def test_manifest_records_size_and_digest(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 3, {"w": torch.ones(2)})
    manifest = json.loads((tmp_path / "step-00000003.json").read_text())
    assert manifest["size"] == path.stat().st_size
    assert len(manifest["sha256"]) == 64


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    trainer = make_trainer(run_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="resume=True but there is no checkpoint in"):
        trainer.fit(regression_batches(2), steps=2, resume=True)
    with pytest.raises(ValueError, match="resume=True needs a `run_dir`"):
        make_trainer().fit(regression_batches(2), steps=2, resume=True)


def test_resume_into_a_model_of_another_shape_names_the_parameters(tmp_path: Path) -> None:
    make_trainer(run_dir=tmp_path).fit(regression_batches(2), steps=2)

    class Wider(TwoLoss):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Linear(4, 16)
            self.head = torch.nn.Linear(16, 1)

    trainer = make_trainer(Wider(), run_dir=tmp_path)
    with pytest.raises(
        ValueError,
        match=r"another shape.*'body.weight': checkpoint has shape "
        r"\(8, 4\), model has \(16, 4\)",
    ):
        trainer.fit(regression_batches(2), steps=4, resume=True)


def test_a_fresh_run_refuses_a_directory_with_another_runs_checkpoints(tmp_path: Path) -> None:
    make_trainer(run_dir=tmp_path).fit(regression_batches(2), steps=2)
    with pytest.raises(ValueError, match="already holds checkpoints of another run"):
        make_trainer(run_dir=tmp_path).fit(regression_batches(2), steps=2)


def test_resume_restores_hook_state_and_continues(tmp_path: Path) -> None:
    class Counting(ml.Hook):
        def __init__(self) -> None:
            self.count = 0

        def after_step(self) -> None:
            self.count += 1

        def state_dict(self) -> dict:
            return {"count": self.count}

        def load_state_dict(self, state: dict) -> None:
            self.count = state["count"]

    first = Counting()
    make_trainer(run_dir=tmp_path, hooks=[first], checkpoint_every=2).fit(
        regression_batches(6), steps=4
    )
    second = Counting()
    trainer = make_trainer(run_dir=tmp_path, hooks=[second])
    trainer.fit(regression_batches(6), steps=6, resume=True)
    assert second.count == 6
    assert [e["event"] for e in trainer.history.events] == ["resume"]


def test_resume_with_another_optimizer_class_is_named(tmp_path: Path) -> None:
    model = TwoLoss()
    first = ml.Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), run_dir=tmp_path, sinks=[]
    )
    first.fit(regression_batches(2), steps=2)
    again = ml.Trainer(model, torch.optim.Adam(model.parameters()), run_dir=tmp_path, sinks=[])
    with pytest.raises(ValueError, match=r"with a SGD optimizer .* has a Adam"):
        again.fit(regression_batches(2), steps=4, resume=True)


def test_a_manifest_that_is_not_json_is_named_and_skipped(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"x": 1})
    save_checkpoint(tmp_path, 2, {"x": 2})
    (tmp_path / "step-00000002.json").write_text("{not json")
    with pytest.warns(RuntimeWarning, match=r"step-00000002\.json is not a valid manifest"):
        state, path = load_latest(tmp_path)
    assert state["x"] == 1
    assert path.name.startswith("step-00000001")
