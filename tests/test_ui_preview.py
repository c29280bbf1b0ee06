"""The image preview (labeler.ui.preview) in Review and Explore: its handlers called by name in process, and in a
real browser the key ``v``, the arrow keys, a label key and Esc.

The project — 12 generated images in 3 classes imported as three roots, tiny-random CLIP features, a zero-shot
run — is made with the library. The browser test runs ``python app.py`` on a free 127.0.0.1 port (Debian's
chromium driven by Playwright, never ``playwright install``) and waits on conditions, never on time. Screenshots:
``tests/artifacts/ui-preview-review.png``, ``ui-preview-explore.png``.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from labeler.ui import preview as pv

from .browser import chromium, needs_chromium, new_page, open_project, shot
from .conftest import class_folders, make_ctx

CLASSES = ["cat", "dog", "car"]


@pytest.fixture
def made(tmp_path):
    """12 images (3 classes × 4) imported per class (three roots), tiny-random CLIP features, zero-shot."""
    from labeler.cli import main

    src = class_folders(tmp_path / "imgs", per_class=4, classes=CLASSES)
    proj = tmp_path / "data" / "pets"
    assert main(["init", str(proj), "--classes", ",".join(CLASSES)]) == 0
    for cls in CLASSES:
        assert main(["import", str(proj), str(src / cls), "--quiet"]) == 0
    assert main(["features", str(proj), "--clip", "tiny-random", "--quiet"]) == 0
    assert main(["label", str(proj), "--quiet"]) == 0
    return proj


def _export_paths(proj: Path) -> dict[int, str]:
    from labeler.export import export_paths
    from labeler.project import Project

    p = Project(proj)
    try:
        return export_paths(p).paths
    finally:
        p.close()


def _final(proj: Path, image_id: int) -> tuple[str | None, str | None]:
    from labeler.labels import final_labels
    from labeler.project import Project

    p = Project(proj)
    try:
        it = final_labels(p, [image_id])[0]
        return it.source, it.label
    finally:
        p.close()


def test_preview_handlers_by_name(made):
    from labeler.review import VIEW_ALL
    from labeler.ui.steps import pseudolabels as pl

    ctx, key = make_ctx(made.parent), str(made)
    paths = _export_paths(made)
    assert len(set(paths.values())) == 12  # three roots, each with 0000.jpg…0003.jpg: unique export paths
    page = pl.show(ctx, key, VIEW_ALL, 0.5, 0, []).page_ids
    assert len(page) == 12

    out = pv.open_preview(ctx, key, page, None, -1)  # no click yet: the page's first image
    assert isinstance(out, pv.PreviewOut) and out.current == page[0] and out.ids == page
    assert out.panel.visible is True and paths[page[0]] in out.title and "image 1 of 12" in out.title
    assert (
        f"<code>{paths[page[0]]}</code>" in out.details
        and "32 × 32 px" in out.details
        and "pseudo-label of run" in out.details
    )
    assert out.scores.count("lb-top-row") == 3 and out.image.size == (384, 384)  # 32 px, shown 12× as large
    assert 1 <= len(out.near_ids) <= pv.NEIGHBOURS and page[0] not in out.near_ids
    assert "Nearest neighbours" in out.near_note
    assert [c[1] for c in out.target.choices] == CLASSES

    assert pv.open_preview(ctx, key, page, page[3], -1).current == page[3]  # the image clicked last
    assert pv.open_preview(ctx, key, page, page[3], 5).current == page[5]  # a double-click's thumbnail wins
    assert pv.open_preview(ctx, key, page, 10**6, -1).current == page[0]  # a stale click: the first

    nxt = pv.next_image(ctx, key, page, page[0])
    assert nxt.current == page[1] and "image 2 of 12" in nxt.title and paths[page[1]] in nxt.title
    assert pv.prev_image(ctx, key, page, page[0]).current == page[0]  # the first stays
    assert pv.next_image(ctx, key, page, page[-1]).current == page[-1]  # the last stays

    lab = pv.label_digit(ctx, 2, key, page, page[1])  # key 2: dog
    assert _final(made, page[1]) == ("human", "dog") and lab.current == page[1]
    assert "<b>dog</b> · your label" in lab.details
    acc = pv.accept(ctx, key, page, page[2])
    assert _final(made, page[2])[0] == "accepted" and "accepted pseudo-label of run" in acc.details
    assert pv.label_as(ctx, key, page, page[2], "car").current == page[2] and _final(made, page[2]) == ("human", "car")

    class Evt:  # what gradio passes a neighbour click
        index = 0

    near = pv.show_neighbour(ctx, key, page, out.near_ids, Evt())
    assert near.current == out.near_ids[0] and near.ids == page
    Evt.index = 99
    assert pv.show_neighbour(ctx, key, page, out.near_ids, Evt()) == pv.PreviewOut(*(gr.skip(),) * 11)
    panel, current = pv.close()
    assert panel.visible is False and current is None


def test_preview_mistakes_are_toasts(made):
    ctx, key = make_ctx(made.parent), str(made)
    with pytest.raises(gr.Error, match="no image on this page"):
        pv.open_preview(ctx, key, [], None, -1)
    with pytest.raises(gr.Error, match="Open the preview first"):
        pv.next_image(ctx, key, [1, 2], None)
    with pytest.raises(gr.Error, match="Pick the class first"):
        pv.label_as(ctx, key, [1], 1, None)
    with pytest.raises(gr.Error, match="no class 7"):
        pv.label_digit(ctx, 7, key, [1], 1)
    with pytest.raises(gr.Error, match="no image with id 999"):  # a library error, with its message
        pv.open_preview(ctx, key, [999], None, -1)
    with pytest.raises(gr.Error, match="No project is open"):
        pv.open_preview(ctx, "", [1], None, -1)


def test_preview_without_features_says_so(tmp_path):
    from labeler.cli import main

    src = class_folders(tmp_path / "imgs", per_class=1, classes=CLASSES)
    proj = tmp_path / "data" / "bare"
    assert main(["init", str(proj), "--classes", ",".join(CLASSES)]) == 0
    assert main(["import", str(proj), str(src), "--quiet"]) == 0
    out = pv.open_preview(make_ctx(tmp_path / "data"), str(proj), [1, 2, 3], None, -1)
    assert out.near_ids == [] and out.neighbours.visible is False and "No nearest neighbours yet" in out.near_note
    assert "run zero-shot" in out.scores and "<b>unlabeled</b>" in out.details
    assert f"<code>{_export_paths(proj)[1]}</code>" in out.details and "Import root" in out.details


def test_explore_redraw_after_a_preview_label_keeps_the_selection(made):
    from labeler.ui.steps import explore as ex

    ctx, key = make_ctx(made.parent), str(made)
    shown = ex.search(ctx, key, "a cat")
    ids = shown.page_ids
    pv.label_digit(ctx, 3, key, ids, ids[0])
    out = ex.redrawn(ctx, key, shown.view, [ids[1]], 0, ids[1])
    assert isinstance(out, ex.Acted) and out.selection == [ids[1]] and out.page_ids == ids
    assert "car" in out.counts


def test_the_app_wires_the_preview_with_new_api_names():
    from labeler.ui import build_demo, launch_options

    demo = build_demo()
    names = {fn.api_name for fn in demo.fns.values() if getattr(fn, "api_name", None)}
    for step in ("review", "explore"):
        assert {f"{step}_preview", f"{step}_preview_next", f"{step}_preview_label"} <= names
    assert {"review_accept", "review_next_page", "explore_similar", "explore_label"} <= names  # unchanged
    opts = launch_options(demo)
    assert pv.PREVIEW_JS in opts["head"] and pv.PREVIEW_CSS in opts["css"]


# --- the browser ----------------------------------------------------------------------------------------------
@pytest.fixture
def server(made, tmp_path):
    from .test_ui_api import AppServer

    app = AppServer(tmp_path / "data", tmp_path)
    yield app, made
    app.stop()


@needs_chromium
def test_preview_keys_in_the_browser(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    app, proj = server
    paths = _export_paths(proj)
    with chromium() as browser:
        page, errors = new_page(browser)
        open_project(page, "pets", app.url)
        page.click("#step-4-button")
        thumbs = page.locator("#review-gallery button.thumbnail-item")
        expect(thumbs).to_have_count(12)
        panel = page.locator("#review-preview")
        title = page.locator("#review-preview-title")
        details = page.locator("#review-preview-details")

        # click the third thumbnail (selects it), then v: the preview of that image
        thumbs.nth(2).click()
        expect(page.locator("#review-selection")).to_contain_text("1 selected")
        page.locator("#review-page").click()  # the keys go to the page, not to a field
        page.keyboard.press("v")
        expect(panel).to_be_visible()
        expect(title).to_contain_text("image 3 of 12")
        first = title.inner_text().splitlines()[0].strip()
        assert first in paths.values()
        expect(details).to_contain_text("32 × 32 px")
        expect(details).to_contain_text("pseudo-label of run")
        expect(page.locator("#review-preview-scores .lb-top-row")).to_have_count(3)
        expect(page.locator("#review-preview-neighbours button.thumbnail-item")).not_to_have_count(0)
        expect(page.locator("#review-preview-image img")).to_be_visible()

        # → the next image of the page; its export path in the title
        page.keyboard.press("ArrowRight")
        expect(title).to_contain_text("image 4 of 12")
        second = title.inner_text().splitlines()[0].strip()
        assert second in paths.values() and second != first
        expect(details).to_contain_text(second)

        # a label key labels the image shown (not the selection), and the gallery's n does nothing meanwhile
        page.keyboard.press("2")
        expect(details).to_contain_text("dog · your label")
        page.keyboard.press("n")
        page.keyboard.press("ArrowLeft")
        expect(title).to_contain_text("image 3 of 12")
        image_id = next(i for i, p in paths.items() if p == second)
        assert _final(proj, image_id) == ("human", "dog")
        shot(page, "ui-preview-review")
        page.screenshot(path="/tmp/preview-review.png")

        # Esc closes; the gallery shows the new label (redrawn after the label key)
        page.keyboard.press("Escape")
        expect(panel).to_be_hidden()
        expect(page.locator("#review-gallery")).to_contain_text("dog ·you")
        expect(page.locator("#review-selection")).to_contain_text("1 selected")  # the selection kept

        # Explore: search, double-click a thumbnail opens it, Esc closes
        page.click("#step-7-button")
        page.locator("#explore-query input, #explore-query textarea").first.fill("a cat")
        page.click("#explore-search")
        ethumbs = page.locator("#explore-gallery button.thumbnail-item")
        expect(ethumbs).to_have_count(12)
        ethumbs.nth(1).dblclick()
        expect(page.locator("#explore-preview")).to_be_visible()
        expect(page.locator("#explore-preview-title")).to_contain_text("image 2 of 12")
        page.keyboard.press("ArrowRight")
        expect(page.locator("#explore-preview-title")).to_contain_text("image 3 of 12")
        page.screenshot(path="/tmp/preview-explore.png")
        shot(page, "ui-preview-explore")
        page.keyboard.press("Escape")
        expect(page.locator("#explore-preview")).to_be_hidden()
        # the label key went to the preview only: the image selected in Review kept its pseudo-label
        assert _final(proj, next(i for i, p in paths.items() if p == first))[0] == "pseudo"
        assert not errors, errors


def test_images_step_captions_are_the_export_paths(made):
    """Three roots each with 0000.jpg…0003.jpg: the Images step's captions are the unique paths of the CSV."""
    from labeler.ui.steps import images

    view = images.refresh(make_ctx(made.parent), str(made))
    captions = [caption for _, caption in view.gallery]
    assert sorted(captions) == sorted(_export_paths(made).values()) and len(set(captions)) == 12
    assert "cat/0000.jpg" in captions
