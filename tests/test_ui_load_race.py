"""A click that beats the page's load handlers on a Space keeps its project.

On a busy server the page's load handler (which gives the browser its visitor id, then lists its projects and
reopens the one it had open) can still be running when the visitor clicks "Create project". The app runs here
in-process, on a free port of 127.0.0.1, with the load handler held at a gate: it has read the session's (still
empty) visitor id and waits until the click's project exists. A new browser, then a returning one (its kept
id), must both end up with the project in their own folder, shown in the header and listed — the CI failure
this reproduces had the header fall back to "No project open".
"""

from __future__ import annotations

import threading

import gradio as gr
import pytest

from .browser import chromium, header_shows, load_app, needs_chromium, new_page
from .conftest import wait_until
from .test_ui_api import free_port

pytestmark = needs_chromium


class Gate:
    """Holds the load handler: ``entered`` is set when it runs, and it waits for ``opened``."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def reset(self) -> None:
        self.entered.clear()
        self.opened.clear()


@pytest.fixture
def held_space(tmp_path, monkeypatch):
    """The app as a Space (visitors isolated) whose visitor-id load handler waits at a :class:`Gate`."""
    import labeler.ui as ui

    gate = Gate()
    real = ui._visitor_id

    def held(saved: str, current: str = "", request: gr.Request | None = None):
        gate.entered.set()
        assert gate.opened.wait(60), "the test never opened the gate"
        return real(saved, current, request)

    monkeypatch.setattr(ui, "_visitor_id", held)
    data = tmp_path / "data"
    monkeypatch.setenv("LABELER_DATA_DIR", str(data))  # build_demo sets it; monkeypatch puts it back
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    port = free_port()
    demo = ui.launch(host="127.0.0.1", port=port, data_dir=data, local_mode=False, prevent_thread_lock=True)
    try:
        yield f"http://127.0.0.1:{port}/", data / "visitors", gate
    finally:
        gate.opened.set()
        demo.close()


def _create_while_held(page, url: str, gate: Gate, name: str, visitors, before: set) -> None:
    """Load the page, wait until its load handler is held, create ``name``, wait for its folder; then let the
    load handler go on and wait until the page's load is done."""
    gate.reset()
    page.goto(url)
    page.wait_for_selector("#lb-wizard")
    assert gate.entered.wait(60), "the page's load handler never ran"
    page.locator("#project-name").locator("textarea, input").first.fill(name)
    page.locator("#project-classes").locator("textarea, input").first.fill("cat, dog")
    page.click("#project-create")
    wait_until(lambda: [p for p in visitors.glob(f"*/{name}") if p not in before], f"{name}'s folder", 60)
    header_shows(page, name)
    gate.opened.set()
    page.wait_for_selector("body[data-lb-loaded='1']", state="attached", timeout=60_000)


def test_a_create_that_beats_the_load_handler_keeps_its_project(held_space):
    from playwright.sync_api import expect

    url, visitors, gate = held_space
    with chromium() as browser:
        page, errors = new_page(browser)

        # a new browser: the click and the load handler agree on one visitor id (the session's)
        _create_while_held(page, url, gate, "alpha", visitors, set())
        header_shows(page, "alpha")
        (folder,) = list(visitors.iterdir())
        assert [p.name for p in folder.iterdir()] == ["alpha"]
        page.click("#step-0-button")
        expect(page.locator("#project-table")).to_contain_text("alpha")

        # a returning browser (its id kept): the click uses the kept id, not a new one
        _create_while_held(page, url, gate, "beta", visitors, set(visitors.glob("*/*")))
        header_shows(page, "beta")
        assert list(visitors.iterdir()) == [folder]
        assert sorted(p.name for p in folder.iterdir()) == ["alpha", "beta"]
        page.click("#step-0-button")  # a hidden table draws only its first row
        expect(page.locator("#project-table")).to_contain_text("alpha")
        expect(page.locator("#project-table")).to_contain_text("beta")

        # and a plain reload reopens it, with the load handler let through at once
        gate.reset()
        gate.opened.set()
        load_app(page)
        header_shows(page, "beta")
        assert errors == []
