"""The HTML report in a real headless Chromium: no console errors, every plot shown.

Chromium comes from the distribution (Debian's ``chromium`` package, installed by
``scripts/ensure-chromium.sh``). This test is never skipped: without Chromium it fails and says
how to install it.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from multiloss.report import write_report
from tests.report import runs
from tests.report.chromium import INSTALL_HINT, Browser, find_chromium

_IMAGES = """
Promise.all(Array.from(document.images).map(i => i.decode().then(() => true, () => false)))
  .then(decoded => Array.from(document.images).map((i, n) => {
    const box = i.getBoundingClientRect();
    return {alt: i.alt, decoded: decoded[n], complete: i.complete, width: i.naturalWidth,
            height: i.naturalHeight, x: box.left + window.scrollX, y: box.top + window.scrollY,
            shownWidth: box.width, shownHeight: box.height};
  }))
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = find_chromium()
    if executable is None:
        pytest.fail(f"headless Chromium is required for the report's browser test: {INSTALL_HINT}")
    with Browser(executable, width=1200, height=900) as opened:
        yield opened


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    a = runs.dead_experts(root / "baseline", val_every=20)
    b = runs.tiny_weight(root / "tiny-aux", val_every=20, seed=1)
    return write_report([a, b], root / "report")


def _shot_dir(tmp_path: Path) -> Path:
    # Set MULTILOSS_SCREENSHOTS to keep the screenshot somewhere to look at.
    keep = os.environ.get("MULTILOSS_SCREENSHOTS")
    return Path(keep) if keep else tmp_path


def test_report_in_chromium(browser: Browser, report: Path, tmp_path: Path) -> None:
    browser.open(report.resolve().as_uri())
    images: list[dict[str, Any]] = browser.evaluate(_IMAGES)
    pngs = sorted((report.parent / "plots").glob("*.png"))
    assert len(images) == len(pngs) >= 8
    for image in images:
        assert image["decoded"], image
        assert image["complete"], image
        assert min(image["width"], image["shownWidth"]) > 300, image
        assert min(image["height"], image["shownHeight"]) > 100, image
    title = browser.evaluate("document.title")
    assert title == "multiloss report: baseline, tiny-aux"
    assert browser.evaluate("document.querySelectorAll('.finding').length") >= 2
    assert browser.console_errors == []

    folder = _shot_dir(tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = browser.screenshot(folder / "report.png")
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"), dtype=np.float64)
    height, width = pixels.shape
    assert width == 1200
    assert height >= max(image["y"] + image["shownHeight"] for image in images) - 1
    assert pixels.std() > 20  # not a blank page
    assert (pixels < 200).mean() > 0.03  # text and plot ink cover a few percent of the page
    for image in images:
        # Every plot's place on the screenshot holds a drawing: ink and contrast.
        top, left = int(image["y"]), int(image["x"])
        region = pixels[
            top : top + int(image["shownHeight"]), left : left + int(image["shownWidth"])
        ]
        assert region.size > 0, image["alt"]
        assert region.std() > 15, image["alt"]
        assert (region < 160).mean() > 0.005, image["alt"]


def test_the_harness_catches_errors(browser: Browser, tmp_path: Path) -> None:
    # A negative control: a page with a script error and a broken image must be caught.
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><link rel='icon' href='data:,'></head><body>"
        "<img src='data:image/png;base64,AAAA' alt='broken'>"
        "<script>console.error('planted'); undefinedFunction();</script></body></html>"
    )
    before = len(browser.console_errors)
    browser.open(page.as_uri())
    images = browser.evaluate(_IMAGES)
    assert images[0]["decoded"] is False
    assert images[0]["width"] == 0
    planted = browser.console_errors[before:]
    assert any("planted" in error for error in planted)
    assert any("undefinedFunction" in error for error in planted)


def test_ensure_script_is_there() -> None:
    script = Path(__file__).parents[2] / "scripts" / "ensure-chromium.sh"
    assert script.is_file()
    assert os.access(script, os.X_OK)
    assert shutil.which("chromium") or find_chromium(), INSTALL_HINT
