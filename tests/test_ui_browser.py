"""The whole wizard in a real browser: Debian's chromium driven by Playwright, tiny models, 50 generated images.

Create a project, import a folder, take the classes from the folder names, generate template
descriptions, compute features, run zero-shot, select five thumbnails and accept them, relabel one
image, export the CSV, download it and check its rows. A screenshot of every step goes to
``tests/artifacts/`` (git-ignored). Skips where /usr/bin/chromium is missing;
never runs ``playwright install``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from .browser import chromium, load_app, needs_chromium, new_page, pick, shot
from .conftest import CIFAR_CLASSES, class_folders
from .test_ui_api import AppServer

pytestmark = needs_chromium


def test_wizard_in_the_browser(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    images = class_folders(tmp_path / "cifar", 5)
    server = AppServer(tmp_path / "data", tmp_path)
    try:
        with chromium() as browser:
            page, errors = new_page(browser, accept_downloads=True)
            _drive(page, sync_api.expect, server, images, tmp_path)
            assert not errors, errors
    except Exception:
        print(server.logs())
        raise
    finally:
        server.stop()


def _shot(page, name: str) -> None:
    shot(page, f"ui-{name}")


def _fill(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id}").locator("textarea, input").first.fill(text)


def _selected(page) -> int:
    return page.locator("#review-gallery .caption-label", has_text=re.compile("^✓")).count()


def _drive(page, expect, server: AppServer, images: Path, tmp_path: Path) -> None:
    slow = 90_000
    load_app(page, server.url)
    expect(page.locator("#project-status")).to_contain_text("No project open")

    # 1 · Project
    _fill(page, "project-name", "cifar")
    _shot(page, "1-project")
    page.click("#project-create")
    expect(page.locator("#images-folder")).to_be_visible()
    expect(page.locator("#lb-project")).to_contain_text("cifar", timeout=30_000)  # behind 12 refreshes, busy CPUs

    # 2 · Images (a folder on this machine)
    expect(page.locator("#images-counts")).to_contain_text("No images yet")
    _fill(page, "images-folder", str(images))
    page.click("#images-import-folder")
    expect(page.locator("#images-status")).to_contain_text("Import finished", timeout=slow)
    expect(page.locator("#images-status")).to_contain_text("50 added")
    expect(page.locator("#images-counts")).to_contain_text("50 images")
    expect(page.locator("#images-gallery button.thumbnail-item").first).to_be_visible()
    src = page.locator("#images-gallery img").first.get_attribute("src")
    assert src.endswith(".jpg")  # the cached 128 px thumbnail, not the PNG original
    _shot(page, "2-images")

    # 3 · Classes from the folder names
    page.click("#next-1")
    page.click("#classes-folders")
    expect(page.locator("#classes-text textarea")).to_have_value("\n".join(CIFAR_CLASSES))
    page.click("#classes-save")
    expect(page.locator("#classes-status")).to_contain_text("10 classes")
    # the numbers are text, not list markers (those clipped "10." to "0." at the box's edge)
    expect(page.locator("#classes-status")).to_contain_text("10. truck")
    _shot(page, "3-classes")

    # 4 · Descriptions (template backend)
    page.click("#step-3-button")
    expect(page.locator("#desc-summary")).to_contain_text("No descriptions yet")
    page.click("#desc-generate")
    expect(page.locator("#desc-status")).to_contain_text("Done:", timeout=slow)
    expect(page.locator("#desc-summary")).to_contain_text("descriptions")
    expect(page.locator("#desc-table")).to_contain_text("airplane")
    _shot(page, "4-descriptions")

    # 5 · Pseudo-labels: features, zero-shot, review
    page.click("#step-4-button")
    expect(page.locator("#pl-features-status")).to_contain_text("No features yet")
    pick(page, "pl-clip", "tiny-random")
    page.click("#pl-features")
    expect(page.locator("#pl-features-status")).to_contain_text("50 of 50 images", timeout=slow)
    page.click("#pl-zeroshot")
    expect(page.locator("#pl-zeroshot-status")).to_contain_text("Pseudo-labels from run", timeout=slow)
    thumbs = page.locator("#review-gallery button.thumbnail-item")
    expect(thumbs.first).to_be_visible()
    expect(page.locator("#review-accuracy")).to_contain_text("Accuracy")
    _shot(page, "5-pseudolabels")

    for k in range(5):  # select five thumbnails: each click toggles one (captions get a ✓)
        thumbs.nth(k).click()
        expect(page.locator("#review-selection")).to_contain_text(f"{k + 1} selected")
    assert _selected(page) == 5
    _shot(page, "5-review-selection")
    page.click("#review-accept")
    expect(page.locator("#review-selection")).not_to_contain_text("selected", timeout=slow)
    expect(page.locator("#review-view input")).to_have_value("needs review (45)")  # the accepted ones left

    thumbs.first.click()  # relabel one image
    expect(page.locator("#review-selection")).to_contain_text("1 selected")
    pick(page, "review-target", "ship", shown="9 · ship")  # the first nine classes show their digit key
    page.click("#review-relabel")
    expect(page.locator("#review-selection")).not_to_contain_text("selected", timeout=slow)
    _shot(page, "5-review-done")

    # 6 · Train, 7 · Explore: shown, not run here
    page.click("#step-6-button")
    expect(page.locator("#train-methods")).to_contain_text("zeroshot")
    _shot(page, "6-train")
    page.click("#step-7-button")
    expect(page.locator("#explore-status")).to_contain_text("luster")
    _shot(page, "7-explore")

    # 8 · Export the CSV and download it
    page.click("#step-8-button")
    page.click("#export-run")
    download_btn = page.locator("#export-download")
    expect(download_btn).to_be_visible(timeout=slow)
    expect(page.locator("#export-preview")).to_contain_text("sha256")
    _shot(page, "8-export")
    with page.expect_download() as info:
        download_btn.click()
    target = tmp_path / "labels.csv"
    info.value.save_as(target)
    with open(target, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 50
    sources = [r["source"] for r in rows]
    assert sources.count("accepted") == 5
    human = [r for r in rows if r["source"] == "human"]
    assert [r["label"] for r in human] == ["ship"]
    assert sources.count("pseudo") == 44
    assert all(r["label"] in CIFAR_CLASSES for r in rows)
