"""The Captions step (step 6) in a real browser: Debian's chromium driven by Playwright against ``python app.py``,
captions from a fake OpenAI-compatible server on 127.0.0.1 (tests/test_describe_openai.py).

Count the calls, caption with per-image groups, see the captions on the thumbnails, edit one caption and disable
one group text, and read both changes back from the project's database. Waits on conditions, never sleeps.
Screenshots: tests/artifacts/ui-6-captions*.png and /tmp/captions_step.png.
"""

from __future__ import annotations

import pytest

from labeler.describe import captions_by_image, list_backends, list_captions
from labeler.project import Project

from .browser import chromium, needs_chromium, new_page, open_project, pick, shot
from .conftest import class_folders, tiny_project
from .test_describe_openai import server  # noqa: F401  (fixture: the fake OpenAI server)
from .test_ui_api import AppServer, api_client

pytestmark = needs_chromium


def test_captions_step_in_the_browser(tmp_path, server):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    proj = tiny_project(
        tmp_path / "data" / "pets", class_folders(tmp_path / "imgs", 3, ["cat", "dog"]), ["cat", "dog"], True
    )
    app = AppServer(tmp_path / "data", tmp_path)
    try:
        names = set(
            api_client(app, tmp_path / "dl").view_api(return_format="dict", print_info=False)["named_endpoints"]
        )
        for name in (
            "captions_view",
            "captions_run",
            "captions_count",
            "captions_edit",
            "captions_toggle",
            "captions_show",
        ):
            assert f"/{name}" in names, name
        with chromium() as browser:
            page, errors = new_page(browser)
            _drive(page, expect, app, server, proj)
            assert not errors, errors
    except Exception:
        print(app.logs())
        raise
    finally:
        app.stop()


def _fill(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id}").locator("textarea, input").first.fill(text)


def _drive(page, expect, app: AppServer, llm, proj) -> None:
    slow = 90_000
    open_project(page, "pets", app.url)
    page.click("#step-5-button")  # 6 · Captions
    expect(page.locator("#cap-summary")).to_contain_text("No captions yet")
    expect(page.locator("#cap-prompt textarea")).to_have_value(
        "Describe the {c} in the photo concisely, less than 20 words."
    )
    summary = next(b["summary"] for b in list_backends() if b["name"] == "openai")
    pick(page, "cap-backend", "openai", shown=f"openai — {summary}")
    expect(page.locator("#cap-base-url")).to_be_visible()
    _fill(page, "cap-model", "vlm")
    _fill(page, "cap-base-url", llm.url)
    page.locator("#cap-groups label", has_text="per-image (official LatteCLIP)").click()
    page.click("#cap-count")
    status = page.locator("#cap-status")
    expect(status).to_contain_text("12 new LMM calls")
    expect(status).to_contain_text("2 calls per image")
    assert llm.requests == 0  # counting sends nothing

    page.click("#cap-run")
    expect(status).to_contain_text("Done: 6 captions and 6 group descriptions written", timeout=slow)
    assert llm.requests == 12
    expect(page.locator("#cap-summary")).to_contain_text("12 texts")
    labels = page.locator("#cap-gallery .caption-label")
    expect(labels).to_have_count(6)
    expect(labels.first).to_contain_text("Saw 1 image(s) of 32x32")
    shot(page, "ui-6-captions")

    page.locator("#cap-gallery button.thumbnail-item").nth(1).click()
    detail = page.locator("#cap-detail")
    expect(detail).to_contain_text("group (own)")
    edit = page.locator("#cap-edit textarea")
    expect(edit).to_have_value(
        "Saw 1 image(s) of 32x32 for: Describe the dog in the photo concisely, less than 20 words."
    )
    edit.fill("a grey tabby cat on a sofa")
    page.click("#cap-save")
    expect(detail).to_contain_text("a grey tabby cat on a sofa")
    expect(detail).to_contain_text("edited")
    expect(labels.nth(1)).to_contain_text("✎ dog · a grey tabby cat")

    page.locator("#cap-kind label", has_text="group (own)").click()
    expect(edit).to_have_value(
        "Saw 1 image(s) of 672x672 for: Describe the common visual attributes of the dog in all the photos concisely, "
        "less than 20 words."
    )
    page.click("#cap-toggle")
    expect(detail).to_contain_text("left out of LatteCLIP's fusion")
    expect(page.locator("#cap-summary")).to_contain_text("1 disabled, 1 edited")
    shot(page, "ui-6-captions-edited")
    page.screenshot(path="/tmp/captions_step.png", full_page=True)

    p = Project(proj)
    try:
        edited = [r for r in list_captions(p) if r["edited"]]
        off = [r for r in list_captions(p) if not r["enabled"]]
        assert [(r["kind"], r["text"]) for r in edited] == [("image", "a grey tabby cat on a sofa")]
        assert [r["kind"] for r in off] == ["group-own"] and off[0]["image_id"] == edited[0]["image_id"]
        assert edited[0]["original"].startswith("Saw 1 image(s) of 32x32")
        assert captions_by_image(p)[edited[0]["image_id"]] == {"image": "a grey tabby cat on a sofa"}
    finally:
        p.close()
