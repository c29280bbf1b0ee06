"""The Review step in a multi-label project (issue 15): one image's labels as checkboxes with scores, a class's
threshold slider with its live count, add/remove a class for the selection, the near-threshold view, undo — the
handlers called by name, then the same in a real browser.

The project — 16 generated images, 4 classes, multi-label — gets a labeling run with planted per-class scores
written through the library (no model). The browser test runs ``python app.py`` on a free 127.0.0.1 port
(Debian's chromium driven by Playwright, never ``playwright install``), waits on conditions, never on time, and
checks every change in the database. Screenshot: ``tests/artifacts/ui-5-review-multilabel.png`` (and
``/tmp/mlreview.png``).
"""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from .browser import chromium, needs_chromium, new_page, open_project, pick, shot
from .conftest import class_folders, make_ctx, wait_until

CLASSES = ["cat", "dog", "ship", "bird"]


@pytest.fixture
def made(tmp_path):
    """A multi-label project of 16 images with a done run of planted scores (top-1 plus every score ≥ 0.5)."""
    from labeler.cli import main
    from labeler.jobs import Job
    from labeler.labels import write_predictions
    from labeler.project import Project

    src = class_folders(tmp_path / "imgs", per_class=4, classes=CLASSES)
    proj = tmp_path / "data" / "tags"
    assert main(["init", str(proj), "--classes", ",".join(CLASSES), "--multi-label"]) == 0
    assert main(["import", str(proj), str(src), "--quiet"]) == 0
    p = Project(proj)
    ids = [im["id"] for im in p.images()]
    rng = np.random.default_rng(3)
    probs = rng.uniform(0.05, 0.95, size=(len(ids), len(CLASSES))).round(2).astype(np.float32)
    sets = [sorted({int(np.argmax(r))} | {int(i) for i in np.flatnonzero(r >= 0.5)}) for r in probs]
    job = Job.start(p, "label", method="zeroshot", params={"classes": CLASSES, "multi_label": True})
    write_predictions(p, job.id, ids, probs, sets)
    job.finish("done")
    p.close()
    return proj


def _open(proj: Path):
    from labeler.project import Project

    return Project(proj)


def _final(proj: Path) -> dict[int, tuple[str | None, set[str]]]:
    from labeler.labels import final_labels

    p = _open(proj)
    try:
        return {it.image_id: (it.source, set(it.classes)) for it in final_labels(p)}
    finally:
        p.close()


def _thresholds(proj: Path) -> dict[str, float]:
    p = _open(proj)
    try:
        return p.thresholds()
    finally:
        p.close()


def _count(proj: Path, cls: str, t: float) -> int:
    """How many images carry ``cls`` at threshold ``t``, image by image (a stored label wins)."""
    from labeler.labels import read_predictions

    p = _open(proj)
    try:
        stored = {i: set(__import__("json").loads(c)) for i, c in p.db.execute("select image_id, classes from labels")}
        run = p.db.execute("select max(id) from runs where kind = 'label'").fetchone()[0]
        ids, probs, names = read_predictions(p, run)
        k = names.index(cls)
        # compared in float64 like the app (float32 scores widened): 0.29 as float32 is just under the float 0.29
        return sum(
            (cls in stored[int(i)]) if int(i) in stored else bool(float(probs[n, k]) >= t) for n, i in enumerate(ids)
        )
    finally:
        p.close()


def test_handlers_by_name(made):
    from labeler.review import VIEW_ALL, VIEW_NEAR
    from labeler.ui.steps import pseudolabels as pl

    ctx, key = make_ctx(made.parent), str(made)
    out = pl.refresh(ctx, key)
    assert out.ml_class["visible"] and out.ml_class["value"] == "cat" and out.ml_threshold["value"] == 0.5
    assert any(v == VIEW_NEAR for _, v in out.view.choices)
    assert "not set yet" in out.ml_count and out.ml_labels["visible"] and out.ml_labels["choices"] == []
    first = pl.reload(ctx, key, VIEW_ALL, 0.5, 0, [])
    ids = first.page_ids
    focus = ids[0]
    shown = pl.reload(ctx, key, VIEW_ALL, 0.5, 0, [], focus, "dog")
    before = _final(made)[focus][1]
    assert set(shown.ml_labels["value"]) == before and shown.ml_class["value"] == "dog"
    assert all(re.fullmatch(r"\w+ 0\.\d\d", label) for label, _ in shown.ml_labels["choices"])  # scores shown
    # a toggle: the ticked classes become the image's human label
    extra = next(c for c in CLASSES if c not in before)
    out = pl.ml_toggle(ctx, key, VIEW_ALL, 0.5, 0, [], focus, "dog", sorted(before | {extra}))
    assert _final(made)[focus] == ("human", before | {extra}) and extra in out.ml_labels["value"]
    # every box unticked: the image holds none of the classes (a person's decision, not "unlabeled"); undo
    none = pl.ml_toggle(ctx, key, VIEW_ALL, 0.5, 0, [], focus, "dog", [])
    assert _final(made)[focus] == ("human", set()) and none.ml_labels["value"] == []
    assert "none of the classes" in none.ml_labels["label"]
    captions = dict(zip(none.page_ids, [c for _, c in none.gallery["value"]], strict=True))
    assert captions[focus].startswith("none") and "·you" in captions[focus]
    pl.undo(ctx, key, VIEW_ALL, 0.5, 0, focus, "dog")
    assert _final(made)[focus] == ("human", before | {extra})
    # the live count follows the slider without saving; release saves and the pseudo-labels follow
    for t in (0.1, 0.5, 0.9):
        text = pl.ml_live(ctx, key, "ship", t)
        assert f"<span id='review-ml-n'>{_count(made, 'ship', t)}</span>" in text
    assert _thresholds(made) == {}
    saved = pl.ml_save(ctx, key, VIEW_ALL, 0.5, 0, [], focus, "ship", 0.9)
    assert _thresholds(made) == {"ship": 0.9} and "saved 0.90" in saved.ml_count
    want = _count(made, "ship", 0.9)
    assert next(r[1] for r in saved.counts if r[0] == "ship") == want
    # add/remove a class for the selection, as one undoable action each
    sel = ids[1:4]
    kept = {i: _final(made)[i] for i in sel}
    added = pl.ml_add(ctx, key, VIEW_ALL, 0.5, 0, sel, focus, "bird")
    assert all("bird" in _final(made)[i][1] for i in sel) and added.selection == []
    with pytest.raises(gr.Error, match="Select images first"):
        pl.ml_remove(ctx, key, VIEW_ALL, 0.5, 0, [], focus, "bird")
    pl.undo(ctx, key, VIEW_ALL, 0.5, 0, focus, "bird")
    assert {i: _final(made)[i] for i in sel} == kept
    undone = pl.undo(ctx, key, VIEW_ALL, 0.5, 0, focus, "ship")  # the threshold back
    assert _thresholds(made) == {} and undone.ml_threshold["value"] == 0.5
    pl.undo(ctx, key, VIEW_ALL, 0.5, 0, focus, "ship")  # the toggle back
    assert _final(made)[focus] == ("pseudo", before)
    near = pl.reload(ctx, key, VIEW_NEAR, 0.5, 0, [])
    assert near.view.value == VIEW_NEAR and near.page_info.startswith(f"{len(near.page_ids)} images")


def test_single_label_projects_show_none_of_it(tmp_path):
    from labeler.cli import main
    from labeler.ui.steps import pseudolabels as pl

    src = class_folders(tmp_path / "imgs", per_class=2, classes=CLASSES)
    proj = tmp_path / "data" / "single"
    assert main(["init", str(proj), "--classes", ",".join(CLASSES)]) == 0
    assert main(["import", str(proj), str(src), "--quiet"]) == 0
    out = pl.refresh(make_ctx(tmp_path / "data"), str(proj))
    for name in ("ml_labels", "ml_class", "ml_threshold", "ml_add", "ml_remove"):
        assert getattr(out, name)["visible"] is False, name
    assert out.ml_count == ""


@pytest.fixture
def setup(made, tmp_path):
    from .test_ui_api import AppServer

    server = AppServer(tmp_path / "data", tmp_path)
    yield server, made
    server.stop()


def _order(proj: Path) -> list[int]:
    """The "all images" view's ids in gallery order (lowest top-1 confidence first)."""
    from labeler.review import VIEW_ALL, review_queue

    p = _open(proj)
    try:
        q = review_queue(p, by="confidence", view=VIEW_ALL, limit=100, include_labeled=True)
        return [it["image_id"] for it in q.items]
    finally:
        p.close()


@needs_chromium
def test_toggle_threshold_bulk_add_and_undo_in_a_browser(setup):
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    server, proj = setup
    order = _order(proj)
    start = _final(proj)
    with chromium() as browser:
        page, errors = new_page(browser)
        open_project(page, "tags", server.url)
        page.click("#step-4-button")
        info = page.locator("#review-page")
        thumbs = page.locator("#review-gallery button.thumbnail-item")
        expect(page.locator("#review-ml-class")).to_be_visible()
        pick(page, "review-view", "all images")
        expect(info).to_contain_text("16 images")
        expect(thumbs).to_have_count(16)

        # click a thumbnail: its labels show as checkboxes with scores; tick one more class
        thumbs.nth(0).click()
        boxes = page.locator("#review-ml-labels")
        expect(boxes).to_contain_text(f"Labels of image {order[0]}")
        source, have = start[order[0]]
        extra = next(c for c in CLASSES if c not in have)
        box = boxes.locator("label", has_text=re.compile(rf"\b{extra} 0\.\d\d"))
        box.click()
        assert wait_until(lambda: _final(proj)[order[0]] == ("human", have | {extra}), "the toggle") is True
        expect(box.locator("input")).to_be_checked()

        # the threshold slider of a class: the count follows it live, release saves it
        pick(page, "review-ml-class", "ship")
        count = page.locator("#review-ml-n")
        expect(count).to_have_text(str(_count(proj, "ship", 0.5)))
        number = page.locator("#review-ml-threshold input[type=number]")
        number.fill("0.2")  # typed: the count follows, nothing is saved
        number.press("Enter")
        expect(count).to_have_text(str(_count(proj, "ship", 0.2)))
        assert _thresholds(proj) == {} and _count(proj, "ship", 0.2) != _count(proj, "ship", 0.5)
        # dragged and released near 0.25: saved, and the pseudo-labels follow
        track = page.locator("#review-ml-threshold input[type=range]")
        box = track.bounding_box()
        track.click(position={"x": box["width"] * 0.25, "y": box["height"] / 2})
        saved = wait_until(lambda: _thresholds(proj) or None, "the saved threshold")
        value = float(number.input_value())
        assert saved == {"ship": value} and 0.15 < value < 0.35
        expect(count).to_have_text(str(_count(proj, "ship", value)))
        after_t = _final(proj)
        ship = {i for i, (_, s) in after_t.items() if "ship" in s}
        assert ship != {i for i, (_, s) in start.items() if "ship" in s}

        # select two more images, add "bird" to both; `z` takes it back
        thumbs.nth(2).click()
        thumbs.nth(3).click()
        expect(page.locator("#review-selection")).to_contain_text("3 selected")
        pick(page, "review-ml-class", "bird")
        page.click("#review-ml-add")
        chosen = order[:1] + order[2:4]
        assert wait_until(lambda: all("bird" in _final(proj)[i][1] for i in chosen), "bird added") is True
        expect(page.locator("#review-selection")).not_to_contain_text("selected")
        assert {i: s for i, s in _final(proj).items() if i not in chosen} == {
            i: s for i, s in after_t.items() if i not in chosen
        }
        shot(page, "ui-5-review-multilabel")
        page.screenshot(path="/tmp/mlreview.png", full_page=True)
        page.locator("#review-page").click()
        page.keyboard.press("z")
        assert wait_until(lambda: _final(proj) == after_t, "the undo of the bulk add") is True
        # a click on a busy button is dropped (gradio's trigger mode "once"): the next z once the page is idle
        page.wait_for_function("() => !document.querySelector('.wrap.pending')")
        page.click("#review-undo")  # the button: the threshold back (the run's own sets again); the toggle stays
        assert wait_until(lambda: _thresholds(proj) == {}, "the undo of the threshold") is True
        expect(count).to_have_text(str(_count(proj, "bird", 0.5)))
        assert _final(proj) == {**start, order[0]: ("human", have | {extra})}
        assert not errors, errors


def test_explore_adds_and_removes_a_class_for_a_cluster(made):
    """Explore's add/remove act on the selection, else the whole view (here a cluster's images): one undo each."""
    from labeler.ui.steps import explore as ex

    ctx, key = make_ctx(made.parent), str(made)
    start = _final(made)
    members = sorted(start)[:6]
    view = {"kind": "cluster", "title": "Cluster 1", "ids": members, "params": {}}
    shown = ex.render(_open(made), view, [], 0, None)
    assert shown.add_btn.visible is True and shown.add_btn.value == "Add class to all 6"
    out = ex.add_label(ctx, key, view, [], 0, ["ship"])
    assert isinstance(out, ex.Acted)
    assert {i: s for i, (_, s) in _final(made).items() if i in members} == {i: start[i][1] | {"ship"} for i in members}
    ex.undo(ctx, key, view, [], 0)
    assert _final(made) == start
    some = [i for i in members if "dog" in start[i][1] and len(start[i][1]) > 1][:2]
    ex.remove_label(ctx, key, view, some, 0, "dog")  # the selection only
    assert all("dog" not in _final(made)[i][1] for i in some)
    assert all(_final(made)[i] == start[i] for i in members if i not in some)
    with pytest.raises(gr.Error, match="exactly one class"):
        ex.add_label(ctx, key, view, [], 0, ["ship", "dog"])


def test_the_preview_says_none_of_the_classes_not_unlabeled(made):
    from labeler.labels import set_human_labels
    from labeler.preview import image_details
    from labeler.ui.preview import details_text

    p = _open(made)
    try:
        first, second = [im["id"] for im in p.images()][:2]
        set_human_labels(p, first, [])
        none = details_text(image_details(p, first))
        assert "<b>none of the classes</b> · your label" in none and "unlabeled" not in none
        assert "unlabeled" not in details_text(image_details(p, second))  # a pseudo-label
    finally:
        p.close()
