"""The README's self-contained examples run and print what the README says they print."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _block_containing(text: str) -> str:
    matches = [block for block in _blocks() if text in block]
    assert len(matches) == 1, f"expected one README block with {text!r}"
    return matches[0]


def test_losses_from_anywhere_example() -> None:
    scope: dict[str, object] = {}
    exec(_block_containing("class Block(torch.nn.Module)"), scope)
    book = scope["book"]
    assert sorted(book) == ["0/sparsity", "1/sparsity"]  # type: ignore[call-overload]
    assert book.weights == {"0/sparsity": 0.001, "1/sparsity": 0.001}  # type: ignore[attr-defined]
    expected = sum(0.001 * book[name] for name in book)  # type: ignore[index, attr-defined]
    torch.testing.assert_close(book.total(), expected)  # type: ignore[attr-defined]


def test_auxiliary_layer_example() -> None:
    scope: dict[str, object] = {"torch": torch}
    exec("import multiloss as ml\n" + _block_containing("class L1Activity"), scope)
    layer = scope["layer"]
    assert set(layer.aux_loss_diagnostics()) == {"mean_abs"}  # type: ignore[attr-defined]
    assert float(layer.compute_aux_loss()) > 0  # type: ignore[attr-defined]


def test_quick_start_has_exactly_the_two_commands_and_ci_runs_the_test_one() -> None:
    quick = README.read_text().split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick, flags=re.S)[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in commands] == ["make demo", "make test"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_balancing_example_prints_the_weights_it_shows() -> None:
    block = _block_containing("MGDA().backward(losses)")
    scope: dict[str, object] = {}
    exec(block.replace("print(weights)", "printed = weights"), scope)
    shown = re.search(r"# (\{.*?\})", block)
    assert shown is not None
    expected = eval(shown.group(1))  # the dict the README says is printed
    weights = scope["printed"]
    assert weights.keys() == expected.keys()  # type: ignore[attr-defined]
    for name, value in expected.items():
        assert abs(weights[name] - value) < 5e-4  # type: ignore[index]
    trunk = scope["trunk"]
    assert all(p.grad is not None for p in trunk.parameters())  # type: ignore[attr-defined]


def test_balancing_page_opening_example_runs() -> None:
    # docs/balancing.md opens with the balancers in the trainer, on their own, and composed;
    # it names model, optimizer and losses the reader has: give it two heads on a trunk.
    page = README.parent / "docs" / "balancing.md"
    block = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)[0]
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {
            "trunk": torch.nn.Linear(3, 4),
            "depth": torch.nn.Linear(4, 1),
            "seg": torch.nn.Linear(4, 1),
        }
    )
    z = model["trunk"](torch.randn(5, 3))
    losses = {name: model[name](z).pow(2).mean() for name in ("depth", "seg")}
    scope: dict[str, object] = {
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "losses": losses,
    }
    exec(block, scope)
    assert set(scope["weights"]) == {"depth", "seg"}  # type: ignore[arg-type]
    assert all(p.grad is not None for p in model.parameters())
