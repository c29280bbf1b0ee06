"""The app as a Space (uploads only): every browser gets its own projects; a project travels as one archive.

``python app.py`` with ``LABELER_LOCAL_MODE=0`` (what ``SPACE_ID`` or ``--uploads-only`` turn on), driven by two
separate chromium contexts (two visitors, each with its own browser storage). Visitor A creates a project and
exports it as a .zip; visitor B does not see it, imports the archive, and gets a copy in B's own folder.
Skips without /usr/bin/chromium.
"""

from __future__ import annotations

import re

import pytest

from labeler.ui.steps.project import CreateOut

from .browser import chromium, header_shows, load_app, needs_chromium, shot
from .conftest import shown, wait_until
from .test_ui_api import CREATED_HIDDEN, AppServer

pytestmark = needs_chromium


@pytest.fixture
def space(tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_LOCAL_MODE", "0")
    server = AppServer(tmp_path / "data", tmp_path)
    yield server
    server.stop()


def test_visitors_are_isolated_and_a_project_travels_as_an_archive(space, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    visitors = space.data_dir / "visitors"
    with chromium() as browser:
        a = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True).new_page()
        load_app(a, space.url)
        expect(a.locator("#project-status")).to_contain_text("No project open")
        expect(a.locator("#images-folder")).to_have_count(0)  # uploads only
        a.locator("#project-name").locator("textarea, input").first.fill("alpha")
        a.locator("#project-classes").locator("textarea, input").first.fill("cat, dog")
        a.click("#project-create")
        header_shows(a, "alpha")
        (folder_a,) = [p for p in visitors.iterdir() if (p / "alpha").is_dir()]
        assert len(folder_a.name) == 32

        # B, another browser: its page load gives it a visitor id and its own (empty) folder of projects. That
        # happens in the background after the page shows: wait for the folder, never for a fixed time.
        b = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        load_app(b, space.url)
        expect(b.locator("#project-status")).to_contain_text("No project open")
        others = wait_until(lambda: [p for p in visitors.iterdir() if p != folder_a], "B's visitor folder", 60)
        assert len(others) == 1 and list(others[0].iterdir()) == []
        folder_b = others[0]
        expect(b.locator("#project-table")).not_to_contain_text("alpha")

        # A exports the project as one .zip and downloads it
        a.click("#step-0-button")
        a.click("#project-export")
        link = a.locator("#project-archive-file a").first
        expect(link).to_be_visible(timeout=30_000)
        shot(a, "ui-1-project-space")
        with a.expect_download() as info:
            link.click()
        archive = tmp_path / "alpha.zip"
        info.value.save_as(archive)

        # B imports it: a copy in B's own folder, opened
        b.locator("#project-archive-upload input[type=file]").set_input_files(str(archive))
        # uploaded: the file's row (name, size) replaces the progress bar; gradio splits "alpha" and ".zip"
        uploaded = b.locator("#project-archive-upload .file-preview")
        expect(uploaded).to_contain_text(re.compile(r"alpha\s*\.zip"), timeout=30_000)
        b.click("#project-import")
        header_shows(b, "alpha")
        header_shows(b, "2 classes")
        assert (folder_b / "alpha" / "labeler.db").exists()
        expect(b.locator("#project-table")).to_contain_text("alpha", timeout=30_000)

        # A reloads: still A's project, reopened; B's copy is not listed twice
        load_app(a)
        header_shows(a, "alpha")
        expect(a.locator("#project-table")).to_contain_text("alpha")
        expect(a.locator("#project-table")).not_to_contain_text("alpha-2")

    # an API client (it never loads the page) gets a folder of its own on its first project
    gradio_client = pytest.importorskip("gradio_client")
    client = gradio_client.Client(space.url, verbose=False, analytics_enabled=False)
    before = set(visitors.iterdir())
    out = shown(CreateOut, client.predict("gamma", False, "x, y", api_name="/project_create"), CREATED_HIDDEN)
    assert [row[0] for row in out.table["data"]] == ["gamma"] and "Open: gamma" in out.status
    (folder_c,) = set(visitors.iterdir()) - before
    assert [p.name for p in folder_c.iterdir()] == ["gamma"]
    with pytest.raises(Exception, match="another visitor|not in the list of choices"):  # refused either way
        client.predict(str(folder_a / "alpha"), api_name="/project_open")
