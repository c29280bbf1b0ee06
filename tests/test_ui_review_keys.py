"""The Review step: its handlers called by name in process, and in a real browser shift-click range selection and
the keyboard shortcuts of the review gallery.

Debian's chromium driven by Playwright against ``python app.py`` (free 127.0.0.1 port, own data dir and gradio
cache). The project — 40 generated images in 10 classes, tiny-random CLIP features, a zero-shot run — is made with
the library before the server starts. The test presses ``n``/``p`` (pages), shift-clicks ranges (forwards and
backwards), presses ``a`` (accept), a digit (relabel to that class) and ``u`` (unsure), and after each checks
through the library that exactly the expected images changed. Screenshot: ``tests/artifacts/ui-5-review-keys.png``.
Skips without /usr/bin/chromium; never runs ``playwright install``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .browser import chromium, needs_chromium, new_page, open_project, shot
from .conftest import CIFAR_CLASSES, class_folders, wait_until
from .test_ui_api import AppServer


def _queue(proj: Path) -> list[int]:
    """The "needs review" queue's image ids in gallery order (threshold 0.5), read through the library."""
    from labeler.project import Project
    from labeler.review import VIEW_REVIEW, review_queue

    p = Project(proj)
    try:
        q = review_queue(p, by="confidence", view=VIEW_REVIEW, threshold=0.5, limit=1000, include_labeled=True)
        return [it["image_id"] for it in q.items]
    finally:
        p.close()


def _labels(proj: Path) -> dict[int, tuple[str, str | None]]:
    """image id → (source, label) of every image with a human or accepted label."""
    from labeler.labels import final_labels
    from labeler.project import Project

    p = Project(proj)
    try:
        return {it.image_id: (it.source, it.label) for it in final_labels(p) if it.source in ("human", "accepted")}
    finally:
        p.close()


def _unsure(proj: Path) -> set[int]:
    from labeler.project import Project
    from labeler.review import unsure_ids

    p = Project(proj)
    try:
        return unsure_ids(p)
    finally:
        p.close()


@pytest.fixture
def made(tmp_path):
    """The project of 40 images in 10 classes with tiny-random features and a zero-shot run (no server)."""
    from labeler.cli import main

    src = class_folders(tmp_path / "imgs", per_class=4)
    proj = tmp_path / "data" / "cifar"
    assert main(["init", str(proj), "--classes", ",".join(CIFAR_CLASSES)]) == 0
    assert main(["import", str(proj), str(src), "--quiet"]) == 0
    assert main(["features", str(proj), "--clip", "tiny-random", "--quiet"]) == 0
    assert main(["label", str(proj), "--quiet"]) == 0
    return proj


def _ctx(data_dir: Path):
    import gradio as gr

    from labeler.ui.common import Ctx

    return Ctx(data_dir=data_dir, local_mode=True, project=gr.State(""), finished=gr.State(""))


def test_handlers_by_name(made):
    """Open the step, page, select, accept, relabel by key, mark unsure and undo, each through its handler."""
    import gradio as gr

    from labeler.review import VIEW_ALL, VIEW_REVIEW
    from labeler.ui.steps import pseudolabels as pl

    ctx, key = _ctx(made.parent), str(made)
    queue = _queue(made)
    out = pl.refresh(ctx, key)
    assert isinstance(out, pl.RefreshOut) and out.clip == "tiny-random" and out.page == 0
    assert out.page_info == "40 images · page 1/2" and out.page_ids == queue[:36]
    assert out.view.value == VIEW_REVIEW and (f"{VIEW_REVIEW} (40)", VIEW_REVIEW) in out.view.choices
    assert sum(r[1] for r in out.counts) == 40 and out.setup.open is False
    nxt = pl.next_page(ctx, key, VIEW_REVIEW, 0.5, 0, [])
    assert nxt.page == 1 and nxt.page_ids == queue[36:] and "page 2/2" in nxt.page_info
    assert pl.next_page(ctx, key, VIEW_REVIEW, 0.5, 1, []).page == 1  # past the end: stays on the last page
    sel = pl.select_ids(ctx, key, VIEW_REVIEW, 0.5, 0, ",".join(map(str, queue[:3])))
    assert sel.selection == queue[:3] and "3 selected" in sel.selection_text
    with pytest.raises(gr.Error, match="Select images first"):
        pl.accept(ctx, key, VIEW_REVIEW, 0.5, 0, [])
    acc = pl.accept(ctx, key, VIEW_REVIEW, 0.5, 0, queue[:3])
    assert isinstance(acc, pl.ReviewOut) and acc.selection == [] and acc.page_info.startswith("37 images")
    assert set(_labels(made)) == set(queue[:3]) and sum(r[2] for r in acc.counts) == 3  # reviewed column
    lab = pl.relabel_digit(ctx, 2, key, VIEW_ALL, 0.5, 0, [queue[5]])
    assert _labels(made)[queue[5]] == ("human", CIFAR_CLASSES[1]) and lab.page_info.startswith("40 images")
    pl.unsure(ctx, key, VIEW_REVIEW, 0.5, 0, [queue[3]])
    assert _unsure(made) == {queue[3]}
    pl.undo(ctx, key, VIEW_REVIEW, 0.5, 0)
    assert queue[5] not in _labels(made)
    blank = pl.refresh(ctx, "")
    assert "No project open" in blank.features and blank.page_ids == []


@pytest.fixture
def setup(made, tmp_path):
    server = AppServer(tmp_path / "data", tmp_path)
    yield server, made
    server.stop()


@needs_chromium
def test_shift_click_ranges_and_keyboard_shortcuts(setup):
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    server, proj = setup
    queue = _queue(proj)
    assert len(queue) == 40  # tiny-random: every pseudo-label is below 0.5
    with chromium() as browser:
        page, errors = new_page(browser)
        open_project(page, "cifar", server.url)
        page.click("#step-4-button")
        thumbs = page.locator("#review-gallery button.thumbnail-item")
        info = page.locator("#review-page")
        selection = page.locator("#review-selection")
        expect(info).to_contain_text("40 images · page 1/2", timeout=30_000)

        # n / p turn pages (keys go to the page, not to a field)
        page.locator("#review-page").click()
        page.keyboard.press("n")
        expect(info).to_contain_text("page 2/2")
        expect(thumbs).to_have_count(4)
        page.keyboard.press("p")
        expect(info).to_contain_text("page 1/2")
        expect(thumbs).to_have_count(36)

        # click the first thumbnail, shift-click the fifth: five selected; `a` accepts exactly those
        thumbs.nth(0).click()
        expect(selection).to_contain_text("1 selected")
        thumbs.nth(4).click(modifiers=["Shift"])
        expect(selection).to_contain_text("5 selected")
        assert page.locator("#review-gallery .caption-label", has_text=re.compile("^✓")).count() == 5
        page.keyboard.press("a")
        labels = wait_until(lambda: _labels(proj) or None, "accepted labels")
        assert set(labels) == set(queue[:5]) and {s for s, _ in labels.values()} == {"accepted"}
        expect(info).to_contain_text("35 images")
        expect(selection).not_to_contain_text("selected")

        # a backwards range (click the fourth, shift-click the second), then `3`: relabel to the third class
        queue = _queue(proj)
        thumbs.nth(3).click()
        expect(selection).to_contain_text("1 selected")
        thumbs.nth(1).click(modifiers=["Shift"])
        expect(selection).to_contain_text("3 selected")
        shot(page, "ui-5-review-keys")
        page.keyboard.press("3")
        human = wait_until(
            lambda: {i: lab for i, (s, lab) in _labels(proj).items() if s == "human"} or None, "human labels"
        )
        assert human == {i: CIFAR_CLASSES[2] for i in queue[1:4]}
        expect(info).to_contain_text("32 images")

        # a plain click toggles one image; `u` marks it unsure (it stays in the queue, flagged "?")
        queue = _queue(proj)
        thumbs.nth(2).click()
        thumbs.nth(5).click()
        thumbs.nth(5).click()  # unselected again
        expect(selection).to_contain_text("1 selected")
        page.keyboard.press("u")
        assert wait_until(lambda: _unsure(proj), "the unsure mark") == {queue[2]}
        expect(page.locator("#review-gallery .caption-label", has_text=re.compile(r"\?$"))).to_have_count(1)
        assert len(_labels(proj)) == 8  # nothing else changed

        # `z` undoes the newest label change (the `3` relabel; an unsure mark is not a label): those three
        # images lose their human label, the accepted five stay
        page.keyboard.press("z")
        assert wait_until(lambda: len(_labels(proj)) == 5 or None, "the undo") is True
        assert {s for s, _ in _labels(proj).values()} == {"accepted"}
        expect(info).to_contain_text("35 images")

        # keys typed into a field do nothing
        page.locator("#review-threshold input[type=number]").first.focus()
        page.keyboard.press("a")
        page.wait_for_timeout(500)
        assert len(_labels(proj)) == 5
        assert not errors, errors
