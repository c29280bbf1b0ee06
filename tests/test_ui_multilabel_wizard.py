"""A multi-label project through the whole wizard in a real browser: Debian's chromium driven by Playwright.

``python app.py`` on a free 127.0.0.1 port (own data dir and gradio cache), tiny-random CLIP. Every step is done
with the app's own controls: create a multi-label project, import a folder of generated 2×2 mosaics (1–3 classes
each, :func:`tests.test_cdul_train.mosaics`), type the classes, compute features, run CDUL (its snippet features
and the aggregated pseudo-labels, ``cdul-init``), tick one more class of an image and untick every class of
another ("none of the classes"), train ``cdul`` for a few epochs (its relabel run becomes the pseudo-labels) and
export a CSV whose ``;``-joined label column is checked against the database. Waits on conditions, never on time.
Screenshots: ``tests/artifacts/ui-ml-wizard-*.png``.
"""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import pytest

from .browser import chromium, load_app, needs_chromium, new_page, pick, shot
from .conftest import wait_until
from .test_cdul_train import CLASSES, mosaics
from .test_ui_api import AppServer

pytestmark = needs_chromium

N_IMAGES = 24
SLOW = 120_000  # ms: a condition on a busy 2-core machine (it returns as soon as it holds)


def _project(path: Path):
    from labeler.project import Project

    return Project(path)


def _final(proj: Path) -> dict[int, tuple[str | None, list[str]]]:
    from labeler.labels import final_labels

    p = _project(proj)
    try:
        return {it.image_id: (it.source, list(it.classes)) for it in final_labels(p)}
    finally:
        p.close()


def _active(proj: Path) -> dict | None:
    from labeler.labels import active_run

    p = _project(proj)
    try:
        return active_run(p)
    finally:
        p.close()


def _order(proj: Path) -> list[int]:
    """The "all images" view's ids in gallery order."""
    from labeler.review import VIEW_ALL, review_queue

    p = _project(proj)
    try:
        q = review_queue(p, by="confidence", view=VIEW_ALL, limit=100, include_labeled=True)
        return [it["image_id"] for it in q.items]
    finally:
        p.close()


def _idle(page) -> None:
    """Gradio's spinners gone: the last event finished (a click on a busy component would be dropped)."""
    page.wait_for_function("() => !document.querySelector('.wrap.pending')", timeout=SLOW)


def _box(boxes, cls: str):
    """The checkbox of class ``cls`` (shown as "cls 0.42")."""
    return boxes.locator("label", has_text=re.compile(rf"^\s*{cls} \d\.\d\d"))


@pytest.mark.timeout(300)
def test_a_multi_label_project_through_the_whole_wizard(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    mosaics(tmp_path / "mosaics", N_IMAGES)
    started = time.monotonic()
    server = AppServer(tmp_path / "data", tmp_path)
    proj = tmp_path / "data" / "tags"

    def wait(cond, what: str, timeout: float = 120.0):
        return wait_until(cond, what, timeout, logs=server.logs)

    laps: list[str] = []  # where the time goes, printed at the end (pytest -s)

    def lap(name: str) -> None:
        laps.append(f"{name} {time.monotonic() - started:.0f}s")

    lap("app up")

    try:
        with chromium() as browser:
            page, errors = new_page(browser, accept_downloads=True)
            load_app(page, server.url)

            # 1 · a multi-label project
            page.locator("#project-name").locator("textarea, input").first.fill("tags")
            page.get_by_label("Multi-label (an image may have several classes)").check()
            page.locator("#project-classes textarea").fill(", ".join(CLASSES))
            page.click("#project-create")
            expect(page.locator("#lb-project")).to_contain_text("tags", timeout=SLOW)
            assert _project(proj).multi_label

            lap("project")
            # 2 · the mosaics, imported from a folder on this machine
            page.locator("#images-folder").locator("textarea, input").first.fill(str(tmp_path / "mosaics"))
            page.click("#images-import-folder")
            expect(page.locator("#images-status")).to_contain_text("Import finished", timeout=SLOW)
            expect(page.locator("#images-status")).to_contain_text(f"{N_IMAGES} added")

            lap("import")
            # 3 · the classes typed at creation show in their step, multi-label; saved again as they are
            # (typing here raced the step's refresh, which empties the box of a project without classes)
            page.click("#next-1")
            text = page.locator("#classes-text textarea")
            expect(text).to_have_value("\n".join(CLASSES), timeout=SLOW)  # the step's refresh came
            expect(page.locator("#classes-mode input[type=radio]").nth(1)).to_be_checked()
            _idle(page)
            page.click("#classes-save")
            expect(page.locator("#classes-status")).to_contain_text(f"{len(CLASSES)} classes", timeout=SLOW)
            expect(page.locator("#classes-status")).to_contain_text("multi-label")
            assert _project(proj).classes == CLASSES

            lap("classes")
            # 5 · features, then CDUL: snippet features and the aggregated pseudo-labels in one job
            page.click("#step-4-button")
            expect(page.locator("#pl-features-status")).to_contain_text("No features yet", timeout=SLOW)
            _idle(page)
            pick(page, "pl-clip", "tiny-random")
            page.click("#pl-features")
            expect(page.locator("#pl-features-status")).to_contain_text(
                f"{N_IMAGES} of {N_IMAGES} images", timeout=SLOW
            )
            _idle(page)
            page.click("#pl-cdul")
            expect(page.locator("#pl-cdul-status")).to_contain_text("Running CDUL", timeout=SLOW)
            init = wait(lambda: (r := _active(proj)) and r["method"] == "cdul-init" and r, "the cdul-init run")
            assert init["params"]["multi_label"] is True
            expect(page.locator("#pl-zeroshot-status")).to_contain_text("(cdul-init)", timeout=SLOW)
            start = _final(proj)
            assert all(src == "pseudo" and classes for src, classes in start.values())

            lap("cdul")
            # review: one more class for one image; every class off for another ("none of the classes")
            pick(page, "review-view", "all images")
            thumbs = page.locator("#review-gallery button.thumbnail-item")
            expect(thumbs).to_have_count(N_IMAGES, timeout=SLOW)
            order = _order(proj)
            boxes = page.locator("#review-ml-labels")
            first, second = order[0], order[1]
            thumbs.nth(0).click()
            expect(boxes).to_contain_text(f"Labels of image {first}", timeout=SLOW)
            _idle(page)
            have = start[first][1]
            extra = next(c for c in CLASSES if c not in have)
            _box(boxes, extra).click()
            wait(lambda: _final(proj)[first] == ("human", [*have, extra]), "the toggle")
            expect(_box(boxes, extra).locator("input")).to_be_checked()
            _idle(page)
            thumbs.nth(1).click()
            expect(boxes).to_contain_text(f"Labels of image {second}", timeout=SLOW)
            _idle(page)
            left = list(start[second][1])
            while left:
                cls = left.pop()
                _box(boxes, cls).click()
                wait(lambda want=list(left): _final(proj)[second] == ("human", want), f"{cls} unticked")
                expect(_box(boxes, cls).locator("input")).not_to_be_checked()
                _idle(page)
            expect(boxes).to_contain_text("none of the classes")
            caption = page.locator("#review-gallery .caption-label", has_text=re.compile(r"^(✓ )?none ·you"))
            expect(caption).to_have_count(1)
            shot(page, "ui-ml-wizard-5-review")

            lap("review")
            # 7 · train cdul (picked first in a multi-label project) for a few epochs; it relabels the images
            page.click("#step-6-button")
            expect(page.locator("#train-method input").first).to_have_value("cdul", timeout=SLOW)
            for name, value in {"epochs": 3, "batch_size": 8}.items():
                page.locator(f"#train-opt-{name}").locator("input, textarea").first.fill(str(value))
            _idle(page)
            page.click("#train-start")
            status = page.locator("#train-status")
            expect(status).to_contain_text(re.compile(r"\(cdul\) done 100%"), timeout=SLOW)
            relabel = wait(lambda: (r := _active(proj)) and r["method"] == "cdul" and r, "the cdul relabel run")
            assert relabel["params"]["multi_label"] is True and relabel["id"] > init["id"]
            shot(page, "ui-ml-wizard-7-train")

            lap("train")
            # 8 · export the CSV, download it, and check it against the database
            page.click("#step-8-button")
            _idle(page)
            page.click("#export-run")
            download = page.locator("#export-download")
            expect(download).to_be_visible(timeout=SLOW)
            expect(page.locator("#export-status")).to_contain_text("1 labeled none of the classes")
            shot(page, "ui-ml-wizard-8-export")
            with page.expect_download() as info:
                download.click()
            target = tmp_path / "labels.csv"
            info.value.save_as(target)
            assert not errors, errors
    except Exception:
        print(server.logs())
        raise
    finally:
        server.stop()

    from labeler.export import export_paths, read_csv

    rows = read_csv(target)
    p = _project(proj)
    try:
        paths = export_paths(p).paths
    finally:
        p.close()
    final = _final(proj)
    by_path = {paths[i]: i for i in final}
    assert len(rows) == N_IMAGES and {r["path"] for r in rows} == set(by_path)
    for r in rows:
        source, classes = final[by_path[r["path"]]]
        assert (r["source"], r["label"]) == (source, ";".join(classes)), r
        assert r["run_id"] == ("" if source == "human" else str(relabel["id"]))
    assert final[first] == ("human", [*have, extra]) and final[second] == ("human", [])
    assert sum(r["source"] == "human" for r in rows) == 2
    assert any(";" in r["label"] for r in rows)  # label sets, joined
    with open(target, newline="", encoding="utf-8-sig") as fh:
        assert next(csv.reader(fh))[:3] == ["path", "sha256", "label"]
    lap("export")
    print(f"wizard test wall time: {time.monotonic() - started:.1f} s ({', '.join(laps)})")
