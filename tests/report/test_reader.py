from __future__ import annotations

import json
from pathlib import Path

import pytest

from multiloss.report.reader import read_run, read_runs
from tests.report import runs


def _write(folder: Path, rows: list[dict[str, object]], tail: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in rows) + tail
    (folder / "metrics.jsonl").write_text(text)
    return folder


def test_reads_kinds_and_info(healthy_run: Path) -> None:
    run = read_run(healthy_run)
    assert run.losses == ["task", "aux"]
    assert len(run.train) == runs.STEPS
    assert len(run.val) == runs.STEPS // 20
    assert run.info["model"] == "SyntheticModel"
    assert not run.partial
    assert run.last_step == runs.STEPS
    assert "losses=2" in repr(run)


def test_partial_last_line_is_ignored_and_flagged(tmp_path: Path) -> None:
    rows = [{"kind": "train", "step": s, "loss/a": 1.0} for s in (1, 2)]
    run = read_run(_write(tmp_path / "r", rows, tail='{"kind": "train", "step": 3, "lo'))
    assert run.partial
    assert len(run.train) == 2
    assert run.skipped_lines == 0


def test_complete_last_object_without_newline_is_kept(tmp_path: Path) -> None:
    rows = [{"kind": "train", "step": 1, "loss/a": 1.0}]
    run = read_run(_write(tmp_path / "r", rows, tail='{"kind": "train", "step": 2}'))
    assert run.partial
    assert run.train.steps.tolist() == [1, 2]


def test_fabricated_partial_tail(tmp_path: Path) -> None:
    run = read_run(runs.healthy(tmp_path / "live", partial_tail=True))
    assert run.partial
    assert len(run.train) == runs.STEPS


def test_resumed_run_keeps_the_later_rows(tmp_path: Path) -> None:
    first = [{"kind": "train", "step": s, "loss/a": 1.0} for s in (10, 20, 30)]
    event = [{"kind": "event", "step": 20, "event": "resume", "message": "from step 20"}]
    again = [{"kind": "train", "step": s, "loss/a": 2.0} for s in (20, 30, 40)]
    run = read_run(_write(tmp_path / "r", first + event + again))
    assert run.train.steps.tolist() == [10, 20, 30, 40]
    assert run.train.column("loss/a").tolist() == [1.0, 2.0, 2.0, 2.0]
    assert [e["event"] for e in run.events] == ["resume"]


def test_bad_lines_are_skipped_with_a_warning(tmp_path: Path) -> None:
    folder = _write(tmp_path / "r", [{"kind": "train", "step": 1}])
    with (folder / "metrics.jsonl").open("a") as handle:
        handle.write('not json\n[1, 2]\n{"step": "x"}\n')
        handle.write(json.dumps({"kind": "train", "step": 2}) + "\n")
    with pytest.warns(RuntimeWarning, match="skipped 3 line"):
        run = read_run(folder)
    assert run.skipped_lines == 3
    assert len(run.train) == 2


def test_missing_directory_and_missing_log(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="`path` of read_run must be an existing run dir"):
        read_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"must contain metrics.jsonl"):
        read_run(tmp_path / "empty")


def test_unreadable_run_json_gives_empty_info(tmp_path: Path) -> None:
    folder = _write(tmp_path / "r", [{"kind": "train", "step": 1}])
    (folder / "run.json").write_text("{broken")
    assert read_run(folder).info == {}


def test_read_runs_gives_distinct_names(tmp_path: Path) -> None:
    a = runs.healthy(tmp_path / "a" / "seed0")
    b = runs.healthy(tmp_path / "b" / "seed0")
    c = runs.healthy(tmp_path / "c")
    names = [run.name for run in read_runs([a, b, c, c])]
    assert names == ["a/seed0", "b/seed0", "c", "c (2)"]
    with pytest.raises(ValueError, match="`run_dirs` must name at least one"):
        read_runs([])
