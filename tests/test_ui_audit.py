"""The Audit panel (step 7 · Train → Audit) in a real browser: draw a sample, confirm with `y`, correct with a digit
and with the class list, skip with `s`, and see the estimate and the per-run table update.

Debian's chromium driven by Playwright against ``python app.py`` (free 127.0.0.1 port, own data dir and gradio
cache); the project — 16 generated images in 4 classes, tiny-random CLIP features, a zero-shot run — is made with
the library first. After each action the test waits (on conditions, never sleeps) until the library shows exactly
that verdict. Screenshot: ``tests/artifacts/ui-6-audit.png``. Skips without /usr/bin/chromium.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .browser import chromium, needs_chromium, new_page, open_project, shot
from .conftest import class_folders
from .test_ui_api import AppServer

pytestmark = needs_chromium
CLASSES = ["cat", "dog", "ship", "truck"]


def _verdicts(proj: Path) -> dict[int, tuple[str, list[str] | None]]:
    """image id → (verdict, truth) of every checked audit image, read through the library."""
    from labeler.audit import audit_items
    from labeler.project import Project

    p = Project(proj)
    try:
        return {it["image_id"]: (it["verdict"], it["truth"]) for it in audit_items(p) if it["verdict"]}
    finally:
        p.close()


def _next(proj: Path) -> dict:
    from labeler.audit import audit_items
    from labeler.project import Project

    p = Project(proj)
    try:
        return audit_items(p, unchecked=True, limit=1)[0]
    finally:
        p.close()


@pytest.fixture
def setup(tmp_path):
    from labeler.cli import main

    src = class_folders(tmp_path / "imgs", per_class=4, classes=CLASSES)
    proj = tmp_path / "data" / "pets"
    assert main(["init", str(proj), "--classes", ",".join(CLASSES)]) == 0
    assert main(["import", str(proj), str(src), "--quiet"]) == 0
    assert main(["features", str(proj), "--clip", "tiny-random", "--quiet"]) == 0
    assert main(["label", str(proj), "--quiet"]) == 0
    server = AppServer(tmp_path / "data", tmp_path)
    yield server, proj
    server.stop()


def test_audit_panel_checks_images_and_shows_the_estimate(setup):
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    server, proj = setup
    with chromium() as browser:
        page, errors = new_page(browser)
        open_project(page, "pets", server.url)
        page.click("#step-6-button")
        page.click("#panel-audit-button")
        progress = page.locator("#audit-progress")
        expect(progress).to_contain_text("No audit sample yet", timeout=30_000)

        page.locator("#audit-size input").fill("6")
        page.click("#audit-draw")
        expect(progress).to_contain_text("0 of 6 checked", timeout=30_000)
        expect(page.locator("#audit-image img")).to_be_visible()
        expect(page.locator("#audit-estimate")).to_contain_text("nothing checked yet")

        # `y`: the label shown is right
        first = _next(proj)
        expect(page.locator("#audit-label")).to_contain_text(f"image {first['image_id']}")
        page.locator("#audit-progress").click()  # keys go to the page, not to a field
        page.keyboard.press("y")
        expect(progress).to_contain_text("1 of 6 checked")
        assert _verdicts(proj) == {first["image_id"]: ("confirm", first["classes"])}
        expect(page.locator("#audit-estimate")).to_contain_text("Estimated accuracy of the final labels: 100.0%")

        # `2`: the true class is the second one
        second = _next(proj)
        expect(page.locator("#audit-label")).to_contain_text(f"image {second['image_id']}")
        page.keyboard.press("2")
        expect(progress).to_contain_text("2 of 6 checked")
        assert _verdicts(proj)[second["image_id"]] == ("correct", [CLASSES[1]])

        # the class list and "Set true class"
        third = _next(proj)
        expect(page.locator("#audit-label")).to_contain_text(f"image {third['image_id']}")
        page.locator("#audit-truth label", has_text="4 · truck").click()
        page.click("#audit-correct")
        expect(progress).to_contain_text("3 of 6 checked")
        assert _verdicts(proj)[third["image_id"]] == ("correct", ["truck"])

        # `s`: skip (counted, left out of the estimate)
        fourth = _next(proj)
        expect(page.locator("#audit-label")).to_contain_text(f"image {fourth['image_id']}")
        page.locator("#audit-progress").click()
        page.keyboard.press("s")
        expect(progress).to_contain_text("4 of 6 checked (1 skipped)")
        assert _verdicts(proj)[fourth["image_id"]] == ("skip", None)
        expect(page.locator("#audit-estimate")).to_contain_text("3 checked")
        expect(page.locator("#audit-estimate .lb-ci").first).to_be_visible()
        expect(page.locator("#audit-runs")).to_contain_text("final labels")
        expect(page.locator("#audit-runs")).to_contain_text("zeroshot")
        shot(page, "ui-6-audit")
        assert len(_verdicts(proj)) == 4
        assert not errors, errors
