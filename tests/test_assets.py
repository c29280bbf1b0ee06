"""The app's static files in assets/: one loader (labeler.ui.assets) for CSS, JS, the logo and example class lists.

(That the wheel and sdist carry them, and an installed copy reads them: tests/test_packaging.py.)
"""

from __future__ import annotations

import pytest

gr = pytest.importorskip("gradio")

from labeler.project import validate_class_names  # noqa: E402
from labeler.ui import assets  # noqa: E402

from .conftest import REPO  # noqa: E402


def test_the_loader_reads_the_checkouts_assets_folder():
    assert assets.folder() == REPO / "assets"
    for name in ("app.css", "audit.css", "audit.js", "shortcuts.js", "scatter.js", "scatter.css", "scatter.html"):
        assert assets.read(name).strip(), name
    assert assets.read("logo.svg").lstrip().startswith("<svg")
    with pytest.raises(FileNotFoundError, match="'nope.css' is missing"):
        assets.read("nope.css")
    with pytest.raises(ValueError, match="relative"):
        assets.read("../README.md")


def test_the_app_takes_its_css_and_js_from_the_files():
    from labeler.ui import CSS, scatter
    from labeler.ui.steps import audit, pseudolabels

    assert CSS == assets.read("app.css") and "#lb-brand" in CSS
    assert audit.CSS == assets.read("audit.css")
    assert pseudolabels.SHORTCUTS_JS == f"<script>\n{assets.read('shortcuts.js')}</script>\n"
    assert audit.SHORTCUTS_JS == f"<script>\n{assets.read('audit.js')}</script>\n"
    assert "review-accept" in pseudolabels.SHORTCUTS_JS and "audit-confirm" in audit.SHORTCUTS_JS
    assert scatter.TEMPLATE == assets.read("scatter.html") and scatter.CSS == assets.read("scatter.css")
    assert "__PAD__" not in scatter.SCATTER_JS and '{"l": 46' in scatter.SCATTER_JS  # the constants filled in


def test_the_header_shows_the_logo(tmp_path):
    from labeler.ui import build_demo

    demo = build_demo(tmp_path / "data")
    (title,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "lb-title"]
    assert "<svg" in title.value and "<h1>Labeler</h1>" in title.value


def test_the_example_class_lists_are_real_and_valid():
    examples = assets.examples()
    assert set(examples.values()) >= {"cifar10.txt", "cifar100.txt", "stl10.txt", "imagenette.txt", "oxford-pets.txt"}
    sizes = {name: len(assets.example_classes(name)) for name in examples.values()}
    assert sizes["cifar10.txt"] == 10 and sizes["cifar100.txt"] == 100 and sizes["oxford-pets.txt"] == 37
    assert assets.example_classes("cifar10.txt")[:3] == ["airplane", "automobile", "bird"]
    assert any(title.startswith("CIFAR-10 ") for title in examples)  # titled by the file's first comment
    for name in examples.values():
        names = assets.example_classes(name)
        assert validate_class_names(names) == names, name  # each list saves as it is


def test_the_classes_step_fills_the_box_with_an_example(app_ctx):
    from labeler.project import Project
    from labeler.ui.steps import classes

    text = classes.use_example("stl10.txt")
    assert text.splitlines() == assets.example_classes("stl10.txt") and "monkey" in text
    assert classes.use_example("") == gr.skip()  # nothing picked: the box is left alone
    with pytest.raises(gr.Error, match="no example class list"):
        classes.use_example("../../README.md")
    key = str(Project.create(app_ctx.data_dir / "p", ["a", "b"]).root)
    out = classes.save(app_ctx, key, text, classes.MODES[0])  # an example saves like typed classes
    assert "**10 classes**" in out.status


def test_the_logo_and_an_example_list_in_the_browser(tmp_path):
    """The header shows the logo beside the title; picking an example list fills the Classes box; the Train
    step's device line (filled on page load, not at build) still says the device."""
    from .browser import ARTIFACTS, chromium, load_app, needs_chromium, new_page, pick
    from .test_ui_api import AppServer

    if needs_chromium.args[0]:
        pytest.skip(needs_chromium.kwargs["reason"])
    from playwright.sync_api import expect

    server = AppServer(tmp_path / "data", tmp_path)
    try:
        with chromium() as browser:
            page, errors = new_page(browser)
            load_app(page, server.url)
            logo = page.locator("#lb-brand svg")
            expect(logo).to_be_visible()
            box = logo.bounding_box()
            assert 24 <= box["width"] <= 40 and 24 <= box["height"] <= 40, box  # a small logo, not a banner
            expect(page.locator("#lb-brand h1")).to_have_text("Labeler")
            page.locator("#lb-header").screenshot(path=str(ARTIFACTS / "ui-header-logo.png"))
            page.click("#step-6-button")
            expect(page.locator("#train-device")).to_contain_text("Device: cpu")
            page.click("#step-2-button")
            title = next(t for t in assets.examples() if t.startswith("CIFAR-10 "))
            pick(page, "classes-example", title)
            cifar10 = "\n".join(assets.example_classes("cifar10.txt"))
            expect(page.locator("#classes-text textarea")).to_have_value(cifar10)
            assert not errors, errors
    except Exception:
        print(server.logs())
        raise
    finally:
        server.stop()
