"""Shared helpers of the real-browser tests: Debian's chromium driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
#: The closed network refuses Chromium's background calls; these keep it from trying.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long expect() waits for a condition (ms).
EXPECT_TIMEOUT_MS = 30_000
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)"
)


@contextlib.contextmanager
def chromium() -> Iterator:
    """A launched headless chromium (closed on exit); skips the test when Playwright is missing."""
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # expect() retries until its condition holds; 5 s (Playwright's default) is too short for a busy 2-core
    # machine opening a project, and a longer wait costs nothing when the condition comes true early.
    sync_api.expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, **kwargs) -> tuple:
    """A 1280×800 page and the list its uncaught page errors are appended to."""
    page = browser.new_page(viewport={"width": 1280, "height": 800}, **kwargs)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"{exc} at {(getattr(exc, 'stack', '') or '').splitlines()[1:3]}"))
    return page, errors


def pick(page, elem_id: str, value: str, shown: str | None = None) -> None:
    """Choose ``value`` in the gr.Dropdown ``#elem_id``: type it, take the option shown as ``shown`` (default:
    the value) and check that the box now shows it."""
    shown = shown or value
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(value)
    page.locator(f'li[role="option"][aria-label="{shown}"]').first.click()
    from playwright.sync_api import expect

    expect(box).to_have_value(shown)  # retried: the box takes the option's text a frame after the click


def load_app(page, url: str | None = None) -> None:
    """Load the app at ``url`` (reload the page when None) and wait until its load handlers are done (the
    page marks ``<body data-lb-loaded>``): a click before that races them (the test that does, on purpose, is
    tests/test_ui_load_race.py)."""
    if url is None:
        page.reload()
    else:
        page.goto(url)
    page.wait_for_selector("#lb-wizard")
    page.wait_for_selector("body[data-lb-loaded='1']", state="attached", timeout=90_000)  # a busy machine


def toasts(page) -> list[str]:
    """The texts of the toasts on the page now (gradio's gr.Info / gr.Warning / gr.Error)."""
    return [t.strip() for t in page.locator('[data-testid="toast-body"]').all_inner_texts()]


def header_shows(page, text: str, timeout: float = 30_000) -> None:
    """Wait until the header (``#lb-project``) contains ``text``; a failure names the toasts on the page."""
    from playwright.sync_api import expect

    try:
        expect(page.locator("#lb-project")).to_contain_text(text, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ntoasts on the page: {toasts(page)}") from None


def open_project(page, name: str, url: str | None = None) -> None:
    """Pick ``name`` in the Project step's list and open it (first loading the app at ``url``, when given),
    then wait until the header shows it."""
    if url is not None:
        load_app(page, url)
    pick(page, "project-pick", name)
    page.click("#project-open")
    header_shows(page, name)


def shot(page, name: str) -> None:
    """Full-page screenshot ``tests/artifacts/<name>.png`` once gradio's spinners (``.wrap.pending``) are gone."""
    with contextlib.suppress(Exception):  # a slow spinner must not fail the test; the picture shows it
        page.wait_for_function("() => !document.querySelector('.wrap.pending')", timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def settled_box(locator, timeout: float = 30.0) -> dict:
    """``locator``'s bounding box, scrolled into view, once it is laid out and has stopped moving (two equal
    reads 0.2 s apart).

    A chart that re-renders is briefly detached or zero-sized: a single ``bounding_box()`` read can be None.
    """
    import time

    locator.scroll_into_view_if_needed()  # a mouse outside the viewport sends the page nothing
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        box = locator.bounding_box()
        if box and box["width"] > 0 and box["height"] > 0:
            if box == last:
                return box
            last = box
        else:
            last = None
        time.sleep(0.2)
    raise AssertionError(f"{locator} never settled on screen within {timeout:.0f} s (last box: {last})")


def drag(page, box: dict, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Press at ``start`` and release at ``end``, both as fractions (x, y) of ``box``, moving in small steps."""
    page.mouse.move(box["x"] + box["width"] * start[0], box["y"] + box["height"] * start[1])
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * end[0], box["y"] + box["height"] * end[1], steps=8)
    page.mouse.up()
